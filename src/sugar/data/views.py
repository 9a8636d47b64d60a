"""What a training batch holds (METHOD.md section 1, the paper's undefined "data_d").

Every batch carries both losses. An image-caption sample ``[image, caption(target)]`` enters
as one of four views, drawn per sample with the ``view_weights`` of the config:

- ``as_is``: ``[image, caption(target)]``: L_g on the caption, L_d on [image] and [image, caption];
- ``caption_first``: ``[caption(context), image]``: L_d on [caption] and [caption, image];
- ``image_only``: ``[image]``; ``caption_only``: ``[caption(context)]``: single-slice prefixes;
- ``split``: both ``[image]`` and ``[caption(context)]``, as two samples of one *group*.

Without caption-first and caption-alone views, text-only embeddings would never be trained.
A view is tagged in ``meta``: ``meta["view"]`` names it (what L_c pairs by) and
``meta["view_of"]`` its source; its id gets a ``#view`` suffix only to stay unique.
Decision (measured, see the README): a view records its source in ``meta["view_of"]``, and
the same-sample rule of L_d (``same_sample_target``) applies to every prefix of one source.
Without ``split`` an image and its own caption never meet in a batch as separate inputs, so
nothing but the teacher's kernel ties them (validation text->image R@1 was 0.05 among 100).
``split`` adds a sample, so the batch is cut back to its size (the dropped tail samples are
seen again in later epochs). Every other sample (stories, VQA, needles, documents) enters as it
is. The draw is a pure function of (seed, step), so a resumed run sees the same views.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from sugar.data.schema import Sample, Segment

__all__ = ["VIEWS", "apply_views", "caption_view", "group_of", "is_caption_pair", "view_of"]

VIEWS = ("as_is", "caption_first", "image_only", "caption_only", "split")


def is_caption_pair(sample: Sample) -> bool:
    """True for ``[image, text(target)]``: the samples that get views."""
    segments = sample.segments
    return (
        len(segments) == 2
        and segments[0].kind == "image"
        and segments[1].kind == "text"
        and segments[1].role == "target"
    )


def group_of(sample: Sample) -> str:
    """The source a sample was made from (its own id unless it is a view)."""
    return str(sample.meta.get("view_of", sample.id))


def view_of(sample: Sample) -> str | None:
    """The view a sample is (``meta["view"]``), None for a sample that is not a view."""
    view = sample.meta.get("view")
    return None if view is None else str(view)


def caption_view(sample: Sample, view: str) -> Sample:
    """One view of a caption pair (module docstring; not ``split``, which is two views):
    ``meta["view"]`` names the view, ``meta["view_of"]`` the source, the id gets ``#view``."""
    if view not in VIEWS or view == "split":
        raise ValueError(f"view={view!r}: must be one of {[v for v in VIEWS if v != 'split']}")
    if view == "as_is":
        return sample
    image, caption = sample.segments
    assert caption.text is not None
    text = Segment.text_(caption.text, role="context")
    segments = {"caption_first": [text, image], "image_only": [image], "caption_only": [text]}
    meta = {**sample.meta, "view_of": group_of(sample), "view": view}
    return Sample(f"{sample.id}#{view}", segments[view], sample.task, meta)


def apply_views(
    samples: Sequence[Sample], weights: Mapping[str, float], seed: int, step: int
) -> list[Sample]:
    """Each caption pair replaced by a view drawn with ``weights`` (``split``: two samples);
    other samples unchanged; cut back to ``len(samples)``.

    >>> s = Sample("c", [Segment.image_("a.png"), Segment.text_("A cat.", "target")])
    >>> [x.id for x in apply_views([s, s], {"as_is": 0, "image_only": 1}, seed=0, step=0)]
    ['c#image_only', 'c#image_only']
    >>> [x.id for x in apply_views([s, s], {"split": 1}, seed=0, step=0)]
    ['c#image_only', 'c#caption_only']
    """
    unknown = set(weights) - set(VIEWS)
    if unknown:
        raise ValueError(f"unknown views {sorted(unknown)}; known: {list(VIEWS)}")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"view weights {dict(weights)} must be >= 0 with a positive sum")
    names = [name for name in VIEWS if weights.get(name, 0) > 0]
    rng = random.Random(f"{seed}:{step}")
    out: list[Sample] = []
    for sample in samples:
        view = rng.choices(names, [weights[n] for n in names])[0]
        if not is_caption_pair(sample):
            out.append(sample)
        elif view == "split":
            out += [caption_view(sample, "image_only"), caption_view(sample, "caption_only")]
        else:
            out.append(caption_view(sample, view))
    return out[: len(samples)]
