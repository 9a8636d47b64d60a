"""Where supplied references (retrieved or given facts) enter a sample: one layout for all users.

Three places put a fact in front of a question, and they must agree token for token, or a model
trained on one layout is tested on another:

- :func:`sugar.rag.build_prompt` (retrieval-augmented answers, ``sugar ask``);
- :func:`sugar.eval.tasks.kb_qa` (the oracle and retrieved conditions of knowledge-base QA);
- the world's knowledge-base training samples (:func:`sugar.data.world.kb.build_kb`).

All three call :func:`with_references`. It lives here, beside the sample schema, so the world
generator can use it without importing the model stack.

>>> from sugar.data.schema import Sample, Segment
>>> question = Sample("q", [Segment.text_("Who made it?"), Segment.text_("Ada", role="target")])
>>> [(g.text, g.role) for g in with_references(question, "Ada made it.").segments]
[('Ada made it.', 'context'), ('Who made it?', 'context'), ('Ada', 'target')]
"""

from __future__ import annotations

from typing import Literal

from sugar.data.schema import Sample, Segment

__all__ = ["with_references"]


def with_references(
    sample: Sample, references: str, position: Literal["before", "after"] = "before"
) -> Sample:
    """``sample`` with ``references`` added as one context text segment.

    ``before`` (the default): the new segment comes first, ahead of every segment of ``sample``
    (image and question alike). ``after``: it comes right after the context segments that
    precede the first target (at the end when there is no target). Target segments keep their
    place at the end, so the result is a training sample when ``sample`` has a target and a
    prompt when it has none. Id, task and meta are kept (meta copied).
    """
    if position not in ("before", "after"):
        raise ValueError(f"position={position!r}: must be 'before' or 'after'")
    segment = Segment.text_(references)
    segments = list(sample.segments)
    if position == "before":
        segments.insert(0, segment)
    else:
        first_target = next(
            (i for i, g in enumerate(segments) if g.role == "target"), len(segments)
        )
        segments.insert(first_target, segment)
    return Sample(sample.id, segments, sample.task, dict(sample.meta))
