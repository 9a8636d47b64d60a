"""Knowledge-edit sets over a generated world, in the MMEdit convention (E-VQA / E-IC).

An edit is ``(image?, question, new answer)``. Each one comes with the four probes MMEdit
scores it by (Cheng et al. 2023, "Can we edit multimodal large language models?"):

- ``rephrase``: the same question in other words (text generality, T-Gen);
- ``image_rephrase``: the same question on another rendering of the same scene (image
  generality, I-Gen; image edits only): the scene's objects moved by up to
  ``jitter`` of the side each, with Gaussian pixel noise, rendered into
  ``images/edit/<split>/``;
- ``locality_text``: an unrelated text question (T-Loc): a knowledge-base question about
  another fact, from another split, so no edit touches it;
- ``locality_image``: an unrelated image question (I-Loc): a VQA question of another split.

Edits come from the world's knowledge base (:mod:`sugar.data.world.kb`): ``owner`` facts are
image edits ("Who owns the red square in this image?" -> a new name), ``origin`` facts are text
edits ("Where was object 271828 made?" -> a new city). The new answer is drawn among the
world's names / cities, never the fact's own answer, and the edit's ``payload`` states the new
fact in the knowledge base's wording (what an in-context editor shows).

One edit is one sample of ``edit/<split>.jsonl`` (the layout ``sugar eval --tasks edit``
reads)::

    {"id": "edit-test-000001", "task": "edit",
     "segments": [{"kind": "text", "text": "Where was object 583552 made?", "role": "context"},
                  {"kind": "text", "text": "Lima", "role": "target"}],
     "meta": {"kind": "origin", "fact_id": "kb-test-000001", "old_answer": "Ghent",
              "payload": "Object 583552 was made in Lima.",
              "rephrase": "In which city was object 583552 made?",
              "image_rephrase": null,
              "locality_text": {"question": "Where was object 112358 made?", "image": null},
              "locality_image": {"question": "What colour is the star?",
                                 "image": "images/caption/val/000007.png"}}}

A user edit set has the same shape (``rephrase``, ``image_rephrase``, ``locality_*`` optional;
:func:`sugar.edit.records.read_edits` checks it and names file, line and field); MMEdit's own
JSON converts with :func:`sugar.edit.records.from_mmedit`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from sugar.data.jsonl import read_samples, write_samples
from sugar.data.schema import Sample, Segment
from sugar.data.world.kb import CITIES, NAMES, ORIGIN_QUESTIONS, OWNER_QUESTIONS
from sugar.data.world.render import encode_png, render_scene
from sugar.data.world.scene import Scene
from sugar.io import atomic_write_bytes

__all__ = ["build_edit_set", "rephrase_question"]


def rephrase_question(question: str) -> str:
    """The knowledge-base question in its other template (``ValueError`` when ``question``
    follows none of :data:`~sugar.data.world.kb.OWNER_QUESTIONS` /
    :data:`~sugar.data.world.kb.ORIGIN_QUESTIONS`).

    >>> rephrase_question("Where was object 271828 made?")
    'In which city was object 271828 made?'
    """
    for templates in (OWNER_QUESTIONS, ORIGIN_QUESTIONS):
        for index, template in enumerate(templates):
            head, _, tail = template.partition("{")
            tail = tail.partition("}")[2]
            if question.startswith(head) and question.endswith(tail):
                slot = question[len(head) : len(question) - len(tail)]
                other = templates[(index + 1) % len(templates)]
                field = "object" if templates is OWNER_QUESTIONS else "code"
                return other.format(**{field: slot})
    raise ValueError(f"question {question!r} follows no knowledge-base template")


def _question_of(sample: Sample) -> tuple[str | None, str]:
    """(image, question text) of a knowledge-base question; the shown fact of a training
    sample (segments before ``meta.query_from``) is dropped."""
    segments = sample.segments[int(sample.meta.get("query_from", 0)) :]
    image = next((g.image for g in segments if g.kind == "image"), None)
    text = next(g.text for g in segments if g.kind == "text" and g.role == "context")
    assert text is not None
    return image, text


def _rerender(
    scene: Scene, rng: random.Random, world: dict[str, Any], jitter: float, noise: float
) -> bytes:
    """PNG bytes of ``scene`` with every object moved by up to ``jitter`` (kept inside the
    image) and pixel noise: another rendering of the same scene."""
    data = scene.to_dict()
    for o in data["objects"]:
        o["x"] = min(0.85, max(0.15, o["x"] + rng.uniform(-jitter, jitter)))
        o["y"] = min(0.85, max(0.15, o["y"] + rng.uniform(-jitter, jitter)))
    image = render_scene(
        Scene.from_dict(data), int(world["image_size"]), float(world["small_size"]),
        float(world["large_size"]), noise=noise, noise_seed=rng.randrange(1 << 30),
    )  # fmt: skip
    return encode_png(image)


def build_edit_set(
    root: str | Path,
    split: str = "test",
    count: int = 100,
    *,
    locality_split: str = "val",
    seed: int = 0,
    jitter: float = 0.04,
    noise: float = 0.03,
) -> Path:
    """Write ``root/edit/<split>.jsonl`` (``count`` edits, module docstring) from the world at
    ``root`` and return its path; re-rendered images go to ``root/images/edit/<split>/``.

    Edits alternate between image (owner) and text (origin) facts of ``split``; locality probes
    come from ``locality_split`` (the same split: its facts that no edit touches). Deterministic
    in ``seed``. ``ValueError`` when the world holds fewer facts than ``count``.
    """
    root = Path(root)
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    world = manifest["config"]
    facts = read_samples(root / "kb" / f"{split}.jsonl", root)
    items = {s.meta["fact_id"]: s for s in read_samples(root / "kb_items" / f"{split}.jsonl", root)}
    scenes = {
        g.image: Scene.from_dict(s.meta["scene"])
        for s in read_samples(root / "caption" / f"{split}.jsonl", root)
        for g in s.segments
        if g.kind == "image"
    }
    text_locality = [
        s for s in read_samples(root / "kb" / f"{locality_split}.jsonl", root)
        if s.meta["kind"] == "origin"
    ]  # fmt: skip
    image_locality = read_samples(root / "vqa" / f"{locality_split}.jsonl", root)
    owners = [s for s in facts if s.meta["kind"] == "owner"]
    origins = [s for s in facts if s.meta["kind"] == "origin"]
    if min(len(owners), len(origins)) < (count + 1) // 2:
        raise ValueError(
            f"{root / 'kb' / f'{split}.jsonl'}: {len(owners)} owner and {len(origins)} origin "
            f"facts, {count} edits need {(count + 1) // 2} of each"
        )
    edited = {s.meta["fact_id"] for s in owners[: (count + 1) // 2] + origins[: count // 2]}
    text_locality = [s for s in text_locality if s.meta["fact_id"] not in edited]
    if not text_locality or not image_locality:
        raise ValueError(f"{root}: no {locality_split} questions for the locality probes")
    rng = random.Random(f"sugar-edits/{seed}/{split}")
    edits: list[Sample] = []
    for i in range(count):
        fact = (owners if i % 2 == 0 else origins)[i // 2]
        image, question = _question_of(fact)
        old = str(fact.meta["answer"])
        new = rng.choice([a for a in (NAMES if image else CITIES) if a != old])
        payload = str(items[fact.meta["fact_id"]].meta["payload"])
        if not payload.endswith(f"{old}."):
            raise ValueError(
                f"fact {fact.meta['fact_id']}: payload {payload!r} ends not in {old!r}"
            )
        image_rephrase = None
        if image is not None:
            if image not in scenes:
                raise ValueError(f"{image}: no caption scene in {split} to re-render")
            image_rephrase = f"images/edit/{split}/{i:06d}.png"
            png = _rerender(scenes[image], rng, world, jitter, noise)
            atomic_write_bytes(root / image_rephrase, png)
        loc_text, loc_image = rng.choice(text_locality), rng.choice(image_locality)
        meta = {
            "kind": fact.meta["kind"],
            "fact_id": fact.meta["fact_id"],
            "old_answer": old,
            "payload": payload[: -len(old) - 1] + f"{new}.",
            "rephrase": rephrase_question(question),
            "image_rephrase": image_rephrase,
            "locality_text": {"question": _question_of(loc_text)[1], "image": None},
            "locality_image": dict(
                zip(("image", "question"), _question_of(loc_image), strict=True)
            ),
        }
        segments = [Segment.image_(image)] if image is not None else []
        segments += [Segment.text_(question), Segment.text_(new, role="target")]
        edits.append(Sample(f"edit-{split}-{i:06d}", segments, "edit", meta))
    return write_samples(root / "edit" / f"{split}.jsonl", edits)
