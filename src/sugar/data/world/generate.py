"""Planning and writing a whole world: every task, every split, images and a manifest.

On-disk layout of ``out_dir`` (image paths in samples are relative to ``out_dir``, so readers
pass ``root=out_dir``)::

    manifest.json                      sugar.io manifest; extra: "world" (counts), "config"
    images/<task>/<split>/<name>.png   caption (the pool), winoground, story, needle images
    caption/<split>.jsonl              captions + hard negatives        (captions.py)
    winoground/<split>.jsonl           Winoground pairs                 (captions.py)
    vqa/<split>.jsonl                  colour/shape/count/relation VQA  (probes.py)
    pope/<split>.jsonl                 POPE presence probes             (probes.py)
                                       train: yes/no pairs; val, test: yes + 3 settings' no
    pope/stats.json                    training frequencies and co-occurrences behind POPE
    story/<split>.jsonl                five-scene stories               (story.py)
    needle/<split>.jsonl               needle probes                    (needle.py)
    kb/<split>.jsonl                   knowledge-base questions         (kb.py)
                                       train: the fact shown before the question
    kb_items/<split>.jsonl             knowledge-base items (key, payload)
    instructed/<split>.jsonl           caption images as queries, one per intent (instructed.py)
    instructed_corpus/<split>.jsonl    their shared candidate corpus: the images and captions
                                       (manifest world.instructions: every wording used)

``<split>`` is ``train``, ``val`` and ``test``. The directory is built under a temporary name
and swapped in by :func:`sugar.io.atomic_directory` (replacing an older ``out_dir``), so an
interrupted run never leaves a half world that looks complete. Everything but the manifest's
run record (``created``, ``command``, ``git_commit``, ``host``, ...) is a pure function of the
options and the seed.

>>> plan_counts(train_per_task=24, val_per_task=6, test_per_task=6)["tasks"]["story"]
{'train': 24, 'val': 6, 'test': 6}
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sugar.config import WorldConfig, config_from_dict, to_dict
from sugar.data.schema import Sample
from sugar.data.world.captions import NEGATIVE_KINDS, build_captions, build_winoground
from sugar.data.world.context import ImageWriter, SplitContext
from sugar.data.world.instructed import build_instructed, catalogue
from sugar.data.world.kb import build_kb
from sugar.data.world.needle import build_needle
from sugar.data.world.probes import (
    POPE_SETTINGS,
    build_pope,
    build_vqa,
    combo_name,
    pope_negative_kind,
    pope_stats,
)
from sugar.data.world.scene import SceneSampler
from sugar.data.world.story import build_stories
from sugar.data.world.vocab import SPLITS, Vocabulary
from sugar.io import atomic_directory, atomic_write_json, atomic_write_text, write_manifest

__all__ = ["TASKS", "generate_world", "plan_counts", "world_options"]

TASKS = ("caption", "winoground", "vqa", "pope", "story", "needle", "kb", "kb_items")
"""Task files, in the order they are built."""
DERIVED = ("instructed", "instructed_corpus")
"""Files derived from the caption files (no images of their own): instructed retrieval."""


def world_options(**options: Any) -> WorldConfig:
    """Validate keyword options against :class:`sugar.config.WorldConfig` (strict, typed)."""
    return config_from_dict(dict(options), WorldConfig)


def _per_split(cfg: WorldConfig) -> dict[str, int]:
    return {"train": cfg.train_per_task, "val": cfg.val_per_task, "test": cfg.test_per_task}


def _probes_per_split(cfg: WorldConfig, task: str) -> dict[str, int]:
    """``task``'s (VQA or POPE) samples per split: ``train_probes_per_image`` times more in
    train (``train_vqa_per_image`` for VQA when set)."""
    per = _per_split(cfg)
    times = cfg.train_probes_per_image
    if task == "vqa" and cfg.train_vqa_per_image is not None:
        times = cfg.train_vqa_per_image
    return per | {"train": per["train"] * times}


def plan_counts(**options: Any) -> dict[str, Any]:
    """What :func:`generate_world` will write, without generating anything.

    Returns ``{"tasks": {task: {split: n}}, "negatives_min": {split: {kind: n}},
    "pope_negatives": {split: {kind: n}}}``. Sample counts are exact; hard-negative counts are
    lower bounds (every caption has attribute_swap, relation_swap and wrong_colour; wrong_count
    is certain for the captions with three or more objects and possible for two). POPE
    ``no`` counts per setting are exact (:func:`~sugar.data.world.probes.pope_negative_kind`:
    a quarter of ``n`` each in val/test, a sixth in train); the rest of ``n`` is ``yes``.

    >>> plan_counts(train_per_task=12, val_per_task=8, test_per_task=8)["pope_negatives"]["train"]
    {'random': 2, 'popular': 2, 'adversarial': 2}
    """
    cfg = world_options(**options)
    per = _per_split(cfg)
    probes = _probes_per_split(cfg, "pope")
    g = cfg.story_group_size
    tasks = {t: dict(per) for t in TASKS}
    tasks["story"] = {s: -(-n // g) * g for s, n in per.items()}
    tasks["vqa"] = _probes_per_split(cfg, "vqa")
    tasks["pope"] = dict(probes)
    span = cfg.max_objects - cfg.min_objects + 1
    negatives = {}
    pope = {}
    for split, n in per.items():
        counted = sum(cfg.min_objects + i % span >= 3 for i in range(n))
        negatives[split] = {k: n for k in NEGATIVE_KINDS} | {"wrong_count": counted}
        kinds = [pope_negative_kind(split, i) for i in range(probes[split])]
        pope[split] = {k: kinds.count(k) for k in POPE_SETTINGS}
    return {"tasks": tasks, "negatives_min": negatives, "pope_negatives": pope}


def _jsonl(samples: list[Sample]) -> str:
    return "".join(s.to_json() + "\n" for s in samples)


def generate_world(
    out_dir: str | Path,
    seed: int = 0,
    *,
    progress: bool = False,
    replace: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Write the world to ``out_dir`` (layout in the module doc); returns the manifest.

    ``progress`` shows a bar over the (split, task family) parts on stderr. ``replace``: an
    existing world sugar wrote may be replaced (a directory sugar did not write never is,
    :mod:`sugar.owned`).

    ``options`` are :class:`sugar.config.WorldConfig` fields (``ConfigError`` names a bad one;
    ``ValueError`` an unknown colour or shape). Same options and seed -> byte-identical files
    (the manifest's run record aside).
    """
    cfg = world_options(**options)
    vocab = Vocabulary(
        cfg.colours, cfg.shapes, cfg.relations, cfg.heldout_fraction, cfg.popularity, seed
    )
    sampler = SceneSampler(
        vocab, cfg.small_size, cfg.large_size, cfg.relation_margin, cfg.cooccurrence
    )
    per = _per_split(cfg)
    questions, probes = _probes_per_split(cfg, "vqa"), _probes_per_split(cfg, "pope")
    files: dict[str, dict[str, list[Sample]]] = {t: {} for t in TASKS + DERIVED}
    instructions = catalogue(
        cfg.instruction_synthesiser, cfg.instruction_model, cfg.instruction_paraphrases, seed
    )
    with atomic_directory(out_dir, replace=replace, kind="world") as tmp:
        images = ImageWriter(tmp, cfg.image_size, cfg.small_size, cfg.large_size, cfg.noise)
        ctxs = {
            s: SplitContext(s, seed, vocab, sampler, images, cfg.min_objects, cfg.max_objects)
            for s in SPLITS
        }
        bar = tqdm(total=7 * len(SPLITS), desc="world", unit="part", disable=not progress)
        for split, ctx in ctxs.items():
            files["caption"][split] = build_captions(ctx, per[split], cfg.heldout_scene_fraction)
            queries, corpus = build_instructed(files["caption"][split], split, seed, instructions)
            files["instructed"][split], files["instructed_corpus"][split] = queries, corpus
            bar.update()
        stats = pope_stats(ctxs["train"].pool, vocab)
        codes = random.Random(f"sugar-world/{seed}/kb-codes").sample(
            range(100_000, 1_000_000), sum(per.values())
        )
        start = 0
        for split, ctx in ctxs.items():
            n = per[split]
            bar.set_postfix_str(split)
            files["winoground"][split] = build_winoground(ctx, n)
            files["vqa"][split] = build_vqa(ctx, questions[split])
            files["pope"][split] = build_pope(ctx, probes[split], stats, cfg.pope_top_k)
            bar.update(3)
            files["story"][split] = build_stories(ctx, n, cfg.story_group_size)
            files["needle"][split] = build_needle(ctx, n, cfg.needle_pairs)
            kb, items = build_kb(ctx, n, codes[start : start + n])
            files["kb"][split], files["kb_items"][split] = kb, items
            bar.update(3)
            start += n
        bar.close()
        for task, by_split in files.items():
            for split, samples in by_split.items():
                atomic_write_text(tmp / task / f"{split}.jsonl", _jsonl(samples))
        atomic_write_json(tmp / "pope" / "stats.json", stats)
        world = {
            "tasks": {t: {s: len(files[t][s]) for s in SPLITS} for t in TASKS},
            # instructed queries exist only where a relevant candidate does: counted, not planned
            "derived": {t: {s: len(files[t][s]) for s in SPLITS} for t in DERIVED},
            "negatives": {
                s: {
                    k: sum(n["kind"] == k for x in files["caption"][s] for n in x.meta["negatives"])
                    for k in NEGATIVE_KINDS
                }
                for s in SPLITS
            },
            "pope_negatives": {
                s: {
                    k: sum(x.meta["negative_kind"] == k for x in files["pope"][s])
                    for k in POPE_SETTINGS
                }
                for s in SPLITS
            },
            "heldout_combos": [combo_name(c) for c in vocab.heldout],
            # the instructed task's wordings per intent and their sources (template / hf)
            "instructions": instructions,
            "images": images.count,
            "samples": sum(len(v) for by in files.values() for v in by.values()),
        }
        manifest = write_manifest(tmp, seed, extra={"world": world, "config": to_dict(cfg)})
    return manifest
