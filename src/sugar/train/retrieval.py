"""The retrieval micro-batch: query/document pairs that L_d and InfoNCE train on (METHOD.md
section 1, "a step carries a generative micro-batch for L_g **and** a retrieval micro-batch").

Measured (issue 17): drawn inside one mixed batch, image-caption views left 0.57 split pairs
per batch of 16 over the demo's six files, so InfoNCE ran in 11 % of steps and L_d saw about one
positive among a thousand entries. So each step also draws ``train.retrieval_batch`` sources
from the ``data.retrieval`` files (their own seeded stream, a pure function of (seed, step)),
each turned into **two samples of one group** (``meta["view_of"]``), a query and a document:

- an image-caption pair ``[image, caption]`` -> ``[caption]`` (query) and ``[image]``
  (document): the ``caption_only`` / ``image_only`` views of :mod:`sugar.data.views`;
- a sample whose ``meta["target_image"]`` names an image (the world's stories: five captions and
  four images) -> the sample's own segments (query) and ``[that image]`` (document);
- a sample whose ``meta["retrieval_key"]`` holds a list of segments (a knowledge key, as the
  world's ``kb`` samples carry) -> the sample's segments from its first image or question
  (``meta["query_from"]``, default 0) on, targets dropped (query), and the key (document).

A source with none of these shapes is refused by :func:`check_pool` when the run starts (never
dropped silently). L_d sees every prefix of both samples (the same-sample rule makes a pair's
target 1); InfoNCE pairs the two (query = text side, document = image side), so the two losses
see exactly the same pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from sugar.data.schema import Sample, Segment
from sugar.data.views import caption_view, group_of, is_caption_pair, view_of
from sugar.train.run import batch_indices

__all__ = [
    "check_pool",
    "is_retrieval_source",
    "pair_roles",
    "retrieval_batch",
    "retrieval_pair",
    "split_pool",
]

QUERY, DOCUMENT = "query", "document"


def _kind(sample: Sample) -> str | None:
    if is_caption_pair(sample):
        return "caption"
    if isinstance(sample.meta.get("target_image"), str):
        return "target_image"
    if isinstance(sample.meta.get("retrieval_key"), list):
        return "key"
    return None


def is_retrieval_source(sample: Sample) -> bool:
    """True when ``sample`` makes a query/document pair (module docstring)."""
    return _kind(sample) is not None


def check_pool(samples: Sequence[Sample], source: str) -> None:
    """Refuse a retrieval pool with a sample that makes no query/document pair."""
    for sample in samples:
        if _kind(sample) is None:
            raise ValueError(
                f"{source}: sample {sample.id!r} (task {sample.task!r}) is not a retrieval "
                "source: an [image, caption(target)] pair, a sample with meta.target_image, or "
                "one with meta.retrieval_key (sugar.train.retrieval)"
            )


def _tagged(sample: Sample, segments: list[Segment], role: str) -> Sample:
    meta = {**sample.meta, "view_of": sample.id, "retrieval_role": role}
    return Sample(f"{sample.id}#{role}", segments, sample.task, meta)


def retrieval_pair(sample: Sample) -> tuple[Sample, Sample]:
    """(query, document) of one source (module docstring), each tagged with its group
    (``meta["view_of"]``) and role (``meta["retrieval_role"]``)."""
    kind = _kind(sample)
    if kind == "caption":  # the caption-alone and image-alone views, with their roles
        query, document = (caption_view(sample, v) for v in ("caption_only", "image_only"))
        return (
            replace(query, meta={**query.meta, "retrieval_role": QUERY}),
            replace(document, meta={**document.meta, "retrieval_role": DOCUMENT}),
        )
    if kind == "target_image":
        context = [replace(s, role="context") for s in sample.segments]
        image = Segment.image_(str(sample.meta["target_image"]))
        return _tagged(sample, context, QUERY), _tagged(sample, [image], DOCUMENT)
    if kind == "key":
        start = int(sample.meta.get("query_from", 0))
        asked = [s for s in sample.segments[start:] if s.role == "context"]
        key = [Segment.from_dict(item) for item in sample.meta["retrieval_key"]]
        return _tagged(sample, asked, QUERY), _tagged(sample, key, DOCUMENT)
    raise ValueError(f"sample {sample.id!r} is not a retrieval source")


def pair_roles(samples: Sequence[Sample]) -> list[tuple[int, int]]:
    """(query row, document row) of every group that has both in ``samples``."""
    queries: dict[str, int] = {}
    documents: dict[str, int] = {}
    for row, sample in enumerate(samples):
        role = sample.meta.get("retrieval_role")
        if role is None:  # the mixed batch's split views
            role = {"caption_only": QUERY, "image_only": DOCUMENT}.get(view_of(sample) or "")
        group = group_of(sample)
        if role == QUERY:
            queries[group] = row
        elif role == DOCUMENT:
            documents[group] = row
    return [(queries[g], documents[g]) for g in queries if g in documents]


def split_pool(pool: Sequence[Sample]) -> tuple[list[Sample], list[Sample]]:
    """(image-caption pairs, other sources) of a retrieval pool, in order."""
    captions = [sample for sample in pool if is_caption_pair(sample)]
    return captions, [sample for sample in pool if not is_caption_pair(sample)]


def retrieval_batch(
    pools: tuple[Sequence[Sample], Sequence[Sample]],
    sizes: tuple[int, int],
    seed: int,
    micro_step: int,
) -> list[Sample]:
    """The retrieval micro-batch of micro-step ``micro_step``: ``sizes[0]`` caption pairs and
    ``sizes[1]`` other pairs (all from the other pool when there are no caption pairs), each as
    (query, document), every pool read as its own endless stream of seeded per-epoch
    permutations (a pure function of (seed, micro_step): resume sees the same batches)."""
    captions, others = pools
    plan = [(captions, sizes[0], 1), (others, sizes[1], 2)]
    if not captions:
        plan = [(others, sizes[0] + sizes[1], 2)]
    out: list[Sample] = []
    for pool, size, stream in plan:
        if not pool or size == 0:
            continue
        for index in batch_indices(len(pool), size, seed + stream, micro_step * size):
            out += retrieval_pair(pool[index])
    return out
