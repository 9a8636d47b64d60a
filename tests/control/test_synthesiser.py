"""``--synthesiser hf``: instruction wordings from a local Hugging Face model (a tiny GPT-2 with
a locally built tokenizer, random or taught one paraphrase; nothing is downloaded)."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch

from sugar.config import ConfigError
from sugar.data.jsonl import read_samples
from sugar.data.world import generate_world
from sugar.data.world.generate import world_options
from sugar.data.world.instructed import (
    HELDOUT_INTENTS,
    INTENTS,
    catalogue,
    synthesise_instructions,
    wordings,
)
from sugar.data.world.synthesiser import clean, rejection, split

TAUGHT = "Show me pictures that are made of alike shapes"
"""The paraphrase the taught model writes for every ``same_shapes`` seed."""


def _save_tiny_gpt2(directory: Path, teach: bool) -> Path:
    """A 2-layer GPT-2 of width 32 whose word-level vocabulary covers every seed prompt."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    prompts = [
        f"Rewrite this search instruction in other words: {w}\nRewritten:"
        for intent in INTENTS
        for w in wordings(intent)["train"] + wordings(intent)["test"]
    ]
    words = sorted({w for text in [*prompts, TAUGHT] for w in text.replace(":", " : ").split()})
    vocab = {word: i for i, word in enumerate(["<unk>", "<eos>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>"
    )
    config = GPT2Config(
        vocab_size=len(vocab), n_positions=128, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=1, eos_token_id=1, pad_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    if teach:  # every same_shapes seed prompt -> TAUGHT <eos>
        seeds = [w for w in synthesise_instructions("same_shapes") if w.startswith("Find ")]
        texts = [f"Rewrite this search instruction in other words: {s}\nRewritten: {TAUGHT}"
                 for s in seeds]  # fmt: skip
        batch = [tokenizer(t)["input_ids"] + [1] for t in texts]
        width = max(len(b) for b in batch)
        ids = torch.tensor([b + [1] * (width - len(b)) for b in batch])
        lengths = torch.tensor([len(b) for b in batch])
        labels = ids.masked_fill(torch.arange(width) >= lengths[:, None], -100)
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(150):
            loss = model(input_ids=ids, labels=labels).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def random_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_tiny_gpt2(tmp_path_factory.mktemp("gpt2-random"), teach=False)


def test_rejection_reasons_and_cleaning() -> None:
    assert clean('  1. "find   images with the same shapes ." \nmore') == (
        "Find images with the same shapes."
    )
    assert clean(" \n  ") == ""
    ok = "Find pictures whose shapes match."
    assert rejection(ok, "same_shapes", []) is None
    assert rejection("", "same_shapes", []) == "empty"
    assert rejection("Shapes.", "same_shapes", []) == "length"
    assert rejection(" ".join(["shapes"] * 25) + ".", "same_shapes", []) == "length"
    assert rejection("Find pictures that look alike.", "same_shapes", []) == "off_topic"
    assert rejection("Find pictures whose shapes and colours match.", "same_shapes", []) == "leak"
    assert rejection("find PICTURES whose shapes match", "same_shapes", [ok]) == "duplicate"
    # a relation may name shapes (they are what stands in relation), not colours
    assert rejection("Find shapes placed in the same arrangement.", "same_relation", []) is None
    assert rejection("Find colours placed the same way.", "same_relation", []) == "leak"
    halves = split([f"w{i}" for i in range(8)], heldout=False)
    assert halves == {"train": ["w0", "w2", "w3", "w4", "w6", "w7"], "test": ["w1", "w5"]}
    assert split(["a", "b"], heldout=True) == {"train": [], "test": ["a", "b"]}


def test_a_missing_or_broken_model_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-model"
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"instruction_model='{missing}': no such dir")
    ):
        catalogue("hf", str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty'.*not a loadable local Hugging Face"):
        catalogue("hf", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="instruction_model"):
        world_options(instruction_synthesiser="hf")
    with pytest.raises(ConfigError, match="instruction_synthesiser"):
        world_options(instruction_synthesiser="llm", instruction_model="x")


def test_random_model_output_is_filtered_topped_up_and_deterministic(random_gpt2: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = catalogue("hf", str(random_gpt2), count=8, seed=1)
        second = catalogue("hf", str(random_gpt2), count=8, seed=1)
    # one warning per intent topped up, naming the model, the intent and the counts
    topped = [i for i in INTENTS if first[i]["sources"]["template"]]
    assert len(caught) == 2 * len(topped) >= 2
    assert all("topped up with" in str(w.message) for w in caught)
    assert first == second
    for intent in INTENTS:
        entry = first[intent]
        kept = entry["train"] + entry["test"]
        assert len(kept) == len(set(kept)) == 8
        assert not set(entry["train"]) & set(entry["test"])
        assert entry["sources"]["hf"] + entry["sources"]["template"] == 8
        # random words are rejected (counted); what the model wrote and was kept passes the
        # rules; the rest are the first template wordings it did not repeat
        assert sum(entry["rejected"].values()) >= 1
        generated = entry["generated"]
        assert len(generated) == entry["sources"]["hf"]
        for k, wording in enumerate(generated):
            assert rejection(wording, intent, generated[:k]) is None
        topped = [w for w in kept if w not in generated]
        templates = [w for w in synthesise_instructions(intent) if w not in generated]
        assert sorted(topped) == sorted(templates[: len(topped)])
        if intent in HELDOUT_INTENTS:
            assert entry["train"] == []


def test_a_taught_paraphrase_is_kept_as_hf(tmp_path: Path) -> None:
    model = _save_tiny_gpt2(tmp_path / "gpt2-taught", teach=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wordings_by_intent = catalogue("hf", str(model), count=8, seed=0)
    assert any("'same_colours'" in str(w.message) for w in caught)
    shapes = wordings_by_intent["same_shapes"]
    assert shapes["sources"]["hf"] >= 1
    assert shapes["train"][0] == TAUGHT + "."


def test_world_with_hf_wordings_records_and_uses_them(random_gpt2: Path, tmp_path: Path) -> None:
    root = tmp_path / "world"
    options = dict(train_per_task=12, val_per_task=6, test_per_task=6)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        manifest = generate_world(
            root, seed=2, instruction_synthesiser="hf", instruction_model=str(random_gpt2),
            instruction_paraphrases=8, **options,
        )  # fmt: skip
    recorded = manifest["world"]["instructions"]
    assert json.loads(json.dumps(recorded)) == recorded
    assert manifest["config"]["instruction_synthesiser"] == "hf"
    for name in ("train", "val", "test"):
        for query in read_samples(root / "instructed" / f"{name}.jsonl", root):
            pool = recorded[query.meta["intent"]]["train" if name == "train" else "test"]
            assert query.meta["instruction"] in pool


def test_cli_names_a_missing_instruction_model(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sugar.cli import app

    missing = tmp_path / "no-model"
    args = ["data", "world", "--out", str(tmp_path / "w"), "--size", "12"]
    result = CliRunner().invoke(
        app, [*args, "--synthesiser", "hf", "--instruction-model", str(missing)]
    )
    assert result.exit_code != 0
    assert str(missing) in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, [*args, "--synthesiser", "hf"])
    assert result.exit_code != 0 and "instruction_model" in result.output
