"""Instruction wordings written by a local Hugging Face model (``--synthesiser hf``, issue 22).

:func:`hf_catalogue` asks a causal or sequence-to-sequence language model, loaded from a local
directory only (``local_files_only=True``; nothing is ever downloaded), to paraphrase each
intent's seed instructions (the template wordings of :mod:`sugar.data.world.instructed`, one
seed per template phrase). Sampling is seeded (``torch.Generator``-free: the global RNG is
forked and seeded per seed instruction), so the same model, seed and settings give the same
wordings. Every generated wording is cleaned (first line, quotes and numbering stripped,
whitespace normalised, a final full stop) and kept only if it passes :func:`rejection`:

- ``empty``: nothing left after cleaning;
- ``length``: fewer than :data:`MIN_WORDS` or more than :data:`MAX_WORDS` words;
- ``off_topic``: none of the intent's own key words (:data:`KEY_WORDS`);
- ``leak``: a key word of another intent (a "same colours" wording that says "shape");
- ``duplicate``: the same words (case and punctuation aside) as a wording already kept, a
  template wording included.

When fewer than ``count`` wordings pass, the list is **topped up from the templates** (in their
fixed order, skipping duplicates) and the catalogue records how many came from each source
and why the others were rejected; :func:`hf_catalogue` warns when it tops up. Kept wordings
are split by position as the templates are (every fourth, from the second, is a test wording;
every wording of a held-out intent is a test wording), so train and test never share a string.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ALLOWED",
    "KEY_WORDS",
    "MAX_WORDS",
    "MIN_WORDS",
    "clean",
    "hf_catalogue",
    "rejection",
    "split",
]

MIN_WORDS = 3
"""Fewest words in a kept wording."""
MAX_WORDS = 24
"""Most words in a kept wording."""
KEY_WORDS: dict[str, frozenset[str]] = {
    "caption": frozenset(
        {"caption", "captions", "description", "describe", "describes", "describing",
         "sentence", "text", "written", "words"}
    ),
    "same_shapes": frozenset({"shape", "shapes", "shaped", "forms"}),
    "same_colours": frozenset(
        {"colour", "colours", "coloured", "color", "colors", "colored", "painted", "hues"}
    ),
    "same_relation": frozenset(
        {"relation", "relations", "arrangement", "arranged", "layout", "placed", "position",
         "positions", "positioned", "left", "right", "above", "below"}
    ),
    "same_count": frozenset({"number", "count", "many", "counts", "quantity", "amount"}),
}  # fmt: skip
"""Words that name an intent: a wording must hold one of its own and none of another's."""
ALLOWED: dict[str, frozenset[str]] = {"same_relation": KEY_WORDS["same_shapes"]}
"""Other intents' key words an intent may use: a relation holds between shapes."""


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def clean(text: str) -> str:
    """A generated text as a wording: its first non-empty line without list numbering, quotes
    or a leading label, whitespace normalised, capitalised, ending with a full stop ("" when
    nothing is left)."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    line = re.sub(r"^(\d+[.)]|[-*•]|(paraphrase|rewrite|instruction)\s*:)\s*", "", line, flags=re.I)
    line = line.strip().strip("\"'“”‘’` ").strip()
    line = re.sub(r"\s+([.,!?;:])", r"\1", re.sub(r"\s+", " ", line))
    line = line.rstrip(" .!?;:,")
    if not line:
        return ""
    return line[0].upper() + line[1:] + "."


def rejection(wording: str, intent: str, kept: Sequence[str]) -> str | None:
    """Why ``wording`` is not a valid instruction of ``intent`` given the wordings ``kept`` so
    far (module docstring), or ``None`` when it is."""
    words = _words(wording)
    if not words:
        return "empty"
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return "length"
    if not set(words) & KEY_WORDS[intent]:
        return "off_topic"
    foreign = set().union(*(keys for other, keys in KEY_WORDS.items() if other != intent))
    if set(words) & (foreign - KEY_WORDS[intent] - ALLOWED.get(intent, frozenset())):
        return "leak"
    if words in [_words(k) for k in kept]:
        return "duplicate"
    return None


def split(wordings: Sequence[str], heldout: bool) -> dict[str, list[str]]:
    """``{"train", "test"}`` by position: index ``i % 4 == 1`` (or every index when ``heldout``)
    is a test wording. Disjoint when ``wordings`` holds no repeat."""
    out: dict[str, list[str]] = {"train": [], "test": []}
    for i, wording in enumerate(wordings):
        out["test" if heldout or i % 4 == 1 else "train"].append(wording)
    return out


def _load(model_path: str) -> tuple[Any, Any, bool]:
    """``(tokenizer, model, is_encoder_decoder)`` from a local directory only."""
    path = Path(model_path)
    if not model_path or not path.is_dir():
        raise FileNotFoundError(
            f"instruction_model={model_path!r}: no such directory (--synthesiser hf needs a "
            "local Hugging Face model directory; nothing is downloaded)"
        )
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
    )

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        loader = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
        model = loader.from_pretrained(path, local_files_only=True).eval()
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"instruction_model={model_path!r}: not a loadable local Hugging Face model "
            f"({type(error).__name__}: {error})"
        ) from error
    return tokenizer, model, seq2seq


def _prompt(tokenizer: Any, seed_instruction: str) -> str:
    ask = f"Rewrite this search instruction in other words: {seed_instruction}"
    if getattr(tokenizer, "chat_template", None):
        return str(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": ask}], tokenize=False, add_generation_prompt=True
            )
        )
    return f"{ask}\nRewritten:"


def _generate(
    loaded: tuple[Any, Any, bool], seed_instruction: str, samples: int, seed: int, tokens: int
) -> list[str]:
    import torch

    tokenizer, model, seq2seq = loaded
    inputs = tokenizer(_prompt(tokenizer, seed_instruction), return_tensors="pt")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        out = model.generate(
            **inputs, do_sample=True, top_p=0.95, temperature=0.9, max_new_tokens=tokens,
            num_return_sequences=samples, pad_token_id=pad,
        )  # fmt: skip
    new = out if seq2seq else out[:, inputs["input_ids"].shape[1] :]
    return [str(t) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def hf_catalogue(
    model_path: str,
    seeds: dict[str, list[str]],
    templates: dict[str, list[str]],
    heldout: Sequence[str],
    count: int,
    seed: int,
    max_new_tokens: int = 32,
) -> dict[str, dict[str, Any]]:
    """Per intent: ``{"train", "test", "generated", "sources": {"hf", "template"}, "rejected":
    {reason: n}}``: ``generated`` the kept model wordings, in order.

    ``seeds[intent]`` are the instructions paraphrased (each sampled ``ceil(2 * count /
    len(seeds))`` times, seed ``seed * 1000 + k`` for the k-th seed instruction over all
    intents); ``templates[intent]`` the top-up wordings, in order. ``FileNotFoundError`` naming
    the path when the model is missing or does not load."""
    loaded = _load(model_path)
    out: dict[str, dict[str, Any]] = {}
    k = 0
    for intent, intent_seeds in seeds.items():
        kept: list[str] = []
        rejected: dict[str, int] = {}
        samples = math.ceil(2 * count / max(1, len(intent_seeds)))
        for instruction in intent_seeds:
            for text in _generate(loaded, instruction, samples, seed * 1000 + k, max_new_tokens):
                wording = clean(text)
                why = rejection(wording, intent, kept + templates[intent])
                if why is None and len(kept) < count:
                    kept.append(wording)
                elif why is not None:
                    rejected[why] = rejected.get(why, 0) + 1
            k += 1
        generated = len(kept)
        for template in templates[intent]:
            if len(kept) >= count:
                break
            if template not in kept:
                kept.append(template)
        if generated < count:
            warnings.warn(
                f"instruction model {model_path}: {generated} valid paraphrases of {intent!r} "
                f"(wanted {count}); topped up with {len(kept) - generated} template wordings "
                f"(rejected: {rejected})",
                stacklevel=3,
            )
        out[intent] = {
            **split(kept, intent in heldout),
            "generated": kept[:generated],
            "sources": {"hf": generated, "template": len(kept) - generated},
            "rejected": rejected,
        }
    return out
