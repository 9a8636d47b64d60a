"""What a training batch holds (METHOD.md section 1, the paper's undefined "data_d").

Every batch carries both losses. An image-caption sample ``[image, caption(target)]`` enters
as one of four views, drawn per sample with the ``view_weights`` of the config:

- ``as_is``: ``[image, caption(target)]``: L_g on the caption, L_d on [image] and [image, caption];
- ``caption_first``: ``[caption(context), image]``: L_d on [caption] and [caption, image];
- ``image_only``: ``[image]``; ``caption_only``: ``[caption(context)]``: single-slice prefixes.

Without caption-first and caption-alone views, text-only embeddings would never be trained.
Every other sample (stories, VQA, needles, documents) enters as it is. The draw is a pure
function of (seed, step, position in the batch), so a resumed run sees the same views.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from sugar.data.schema import Sample, Segment

__all__ = ["VIEWS", "apply_views", "caption_view", "is_caption_pair"]

VIEWS = ("as_is", "caption_first", "image_only", "caption_only")


def is_caption_pair(sample: Sample) -> bool:
    """True for ``[image, text(target)]``: the samples that get views."""
    segments = sample.segments
    return (
        len(segments) == 2
        and segments[0].kind == "image"
        and segments[1].kind == "text"
        and segments[1].role == "target"
    )


def caption_view(sample: Sample, view: str) -> Sample:
    """The ``view`` of a caption pair (module docstring); the id gets a ``#view`` suffix."""
    if view not in VIEWS:
        raise ValueError(f"view={view!r}: must be one of {list(VIEWS)}")
    if view == "as_is":
        return sample
    image, caption = sample.segments
    assert caption.text is not None
    text = Segment.text_(caption.text, role="context")
    segments = {"caption_first": [text, image], "image_only": [image], "caption_only": [text]}
    return Sample(f"{sample.id}#{view}", segments[view], sample.task, sample.meta)


def apply_views(
    samples: Sequence[Sample], weights: Mapping[str, float], seed: int, step: int
) -> list[Sample]:
    """Each caption pair replaced by a view drawn with ``weights``; other samples unchanged.

    >>> s = Sample("c", [Segment.image_("a.png"), Segment.text_("A cat.", "target")])
    >>> [x.id for x in apply_views([s, s], {"as_is": 0, "image_only": 1}, seed=0, step=0)]
    ['c#image_only', 'c#image_only']
    """
    unknown = set(weights) - set(VIEWS)
    if unknown:
        raise ValueError(f"unknown views {sorted(unknown)}; known: {list(VIEWS)}")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"view weights {dict(weights)} must be >= 0 with a positive sum")
    names = [name for name in VIEWS if weights.get(name, 0) > 0]
    rng = random.Random(f"{seed}:{step}")
    out = []
    for sample in samples:
        view = rng.choices(names, [weights[n] for n in names])[0]
        out.append(caption_view(sample, view) if is_caption_pair(sample) else sample)
    return out
