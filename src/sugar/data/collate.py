"""Span-exact batching: samples -> token ids, labels and slice spans (METHOD.md sections 1-2).

Shapes: B batch, T tokens (the longest sample). One sample's sequence is::

    [<bos>], then per segment in order:
      image:  image_tokens x <image>              (features replace them: models.splice)
      text:   its tokens, tokenised alone, once   (+ <eos> after a target text)

No separator between segments: a template (a space, "Answer:") is part of the data. While the
sequence is built, one :class:`Span` is recorded per slice of :func:`sugar.data.slices.slices`
(1:1, same order): an image's placeholder positions, or the tokens of one sentence (or segment).

Token -> sentence (:func:`assign_tokens`): a token belongs to the first sentence its character
span overlaps (where it starts). A byte-level token carries its leading space (``" Bye"``) and
whitespace between sentences is separate tokens, so ``decode(span)`` is the sentence preceded
by at most its first token's whitespace. Whitespace tokens between sentences belong to no slice
(they stay in the sequence and, in a target, are supervised). A sentence that gets no token
(only possible if a token straddled two sentences) raises.

Labels are aligned with input positions: ``labels[b, t] = input_ids[b, t]`` at every token of a
target text segment and its ``<eos>``, ``IGNORE_INDEX`` (-100) at context text, images,
``<bos>`` and padding. The causal shift (predict t+1 from <= t) is the loss's job.

Tokenizers are seen through :class:`TokenizerLike` only (``data`` never imports ``models``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

import torch
from torch import Tensor

from sugar.data.schema import Sample
from sugar.data.slices import Slice, slices

__all__ = [
    "IGNORE_INDEX",
    "Batch",
    "EncodedSample",
    "Span",
    "TokenizerLike",
    "append_text_segment",
    "assign_tokens",
    "batches_by_token_budget",
    "collate",
    "encode_sample",
]

IGNORE_INDEX = -100
"""Label of every position the next-token loss ignores (PyTorch's cross-entropy default)."""


class TokenizerLike(Protocol):
    """What collation needs from a tokenizer (:class:`sugar.models.tokenizer.Tokenizer`)."""

    @property
    def pad_id(self) -> int: ...
    @property
    def bos_id(self) -> int: ...
    @property
    def eos_id(self) -> int: ...
    @property
    def image_id(self) -> int: ...
    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]: ...


@dataclass(frozen=True)
class Span:
    """The token positions ``[start, end)`` of one slice in its sample's sequence."""

    start: int
    """First position (``<bos>`` is position 0 when present)."""
    end: int
    """One past the last position; the slice's embedding reads position ``end - 1`` (text)."""
    kind: Literal["image", "text"]
    role: Literal["context", "target"]
    segment: int
    """Index of the segment in ``sample.segments``."""
    slice: int
    """Index of the slice in ``slices(sample, by=...)``."""


@dataclass
class EncodedSample:
    """One sample's sequence before padding."""

    id: str  # the sample's id
    input_ids: list[int]
    labels: list[int]
    spans: list[Span]
    images: list[str]


def assign_tokens(
    offsets: Sequence[tuple[int, int]], sentences: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Token index ranges ``[first, last + 1)`` of each sentence, by character overlap.

    ``offsets``: each token's character span (non-decreasing); ``sentences``: ordered disjoint
    character spans. A token goes to the first sentence it overlaps (where it starts); tokens
    overlapping none are in no range. Raises ``ValueError`` when a sentence gets no token or
    its tokens are not contiguous.

    "Hi. Bye." as tokens ``Hi . ␣Bye .`` and sentences "Hi." (0, 3) and "Bye." (4, 8):

    >>> assign_tokens([(0, 2), (2, 3), (3, 7), (7, 8)], [(0, 3), (4, 8)])
    [(0, 2), (2, 4)]
    """
    owned: list[list[int]] = [[] for _ in sentences]
    k = 0
    for index, (start, end) in enumerate(offsets):
        while k < len(sentences) and sentences[k][1] <= start:
            k += 1
        if k < len(sentences) and sentences[k][0] < end:
            owned[k].append(index)
    ranges = []
    for (start, end), tokens in zip(sentences, owned, strict=True):
        if not tokens:
            raise ValueError(f"characters [{start}, {end}) get no token of their own")
        if tokens[-1] - tokens[0] + 1 != len(tokens):
            raise ValueError(f"characters [{start}, {end}) get non-contiguous tokens {tokens}")
        ranges.append((tokens[0], tokens[-1] + 1))
    return ranges


def append_text_segment(
    sample: Sample,
    index: int,
    tokens: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    ids: list[int],
    labels: list[int],
    spans: list[Span],
    sample_slices: Sequence[Slice],
) -> None:
    """Append text segment ``index`` of ``sample`` (its ``tokens``, tokenised alone, with their
    character ``offsets``) to ``ids`` and ``labels`` (supervised when the segment is a target)
    and one :class:`Span` per slice of the segment (``sample_slices``: the sample's
    :func:`~sugar.data.slices.slices`), placed by :func:`assign_tokens`. Shared by this
    module's layout and the Hugging Face chat layout (:mod:`sugar.models.hf_chat`)."""
    segment = sample.segments[index]
    mine = [k for k, piece in enumerate(sample_slices) if piece.segment == index]
    try:
        ranges = assign_tokens(
            offsets, [(sample_slices[k].start, sample_slices[k].end) for k in mine]
        )
    except ValueError as exc:
        text = segment.text or ""
        raise ValueError(f"sample {sample.id!r} segment {index} ({text[:120]!r}): {exc}") from None
    base, target = len(ids), segment.role == "target"
    ids += tokens
    labels += tokens if target else [IGNORE_INDEX] * len(tokens)
    for k, (first, stop) in zip(mine, ranges, strict=True):
        spans.append(Span(base + first, base + stop, "text", segment.role, index, k))


def encode_sample(
    sample: Sample,
    tokenizer: TokenizerLike,
    image_tokens: int,
    *,
    slice_text_by: Literal["sentence", "segment"] = "sentence",
    add_bos: bool = True,
    add_eos_to_targets: bool = True,
) -> EncodedSample:
    """Build one sample's ids, labels and slice spans (layout in the module docstring)."""
    if image_tokens < 1:
        raise ValueError(f"image_tokens={image_tokens}: must be >= 1")
    ids: list[int] = [tokenizer.bos_id] if add_bos else []
    labels: list[int] = [IGNORE_INDEX] * len(ids)
    spans: list[Span] = []
    sample_slices = slices(sample, by=slice_text_by)
    for index, segment in enumerate(sample.segments):
        mine = [k for k, piece in enumerate(sample_slices) if piece.segment == index]
        if segment.image is not None:
            start = len(ids)
            ids += [tokenizer.image_id] * image_tokens
            labels += [IGNORE_INDEX] * image_tokens
            spans.append(Span(start, len(ids), "image", "context", index, mine[0]))
            continue
        assert segment.text is not None  # the schema guarantees text segments have text
        tokens, offsets = tokenizer.encode_with_offsets(segment.text)
        if tokenizer.image_id in tokens:  # would shift every image after it (models.splice)
            raise ValueError(f"sample {sample.id!r} segment {index}: text encodes to <image>")
        append_text_segment(sample, index, tokens, offsets, ids, labels, spans, sample_slices)
        if segment.role == "target" and add_eos_to_targets:
            ids.append(tokenizer.eos_id)
            labels.append(tokenizer.eos_id)
    assert [span.slice for span in spans] == list(range(len(sample_slices)))
    return EncodedSample(sample.id, ids, labels, spans, sample.images)


@dataclass
class Batch:
    """Padded model inputs for B samples (right padding with ``pad_id``)."""

    input_ids: Tensor  # (B, T) long
    attention_mask: Tensor  # (B, T) bool, True at the first lengths[b] positions
    labels: Tensor  # (B, T) long, aligned with input_ids; IGNORE_INDEX where not supervised
    images: list[str]  # N paths, sample by sample, in sequence order (= placeholder order)
    image_counts: Tensor  # (B,) long, images per sample; sums to N
    spans: list[list[Span]]  # per sample, 1:1 with slices(sample)
    sample_ids: list[str]
    lengths: Tensor  # (B,) long, unpadded sequence lengths
    model_inputs: dict[str, Tensor] = field(default_factory=dict)
    """Extra backbone inputs by keyword (Hugging Face backbones: ``pixel_values``,
    ``image_grid_thw``, ``image_sizes``, ...); empty for the built-in model."""

    def to(self, device: torch.device | str) -> Batch:
        """A copy with every tensor (``model_inputs`` included) on ``device``."""
        names = ("input_ids", "attention_mask", "labels", "image_counts", "lengths")
        moved = {name: tensor.to(device) for name, tensor in self.model_inputs.items()}
        return replace(
            self, **{name: getattr(self, name).to(device) for name in names}, model_inputs=moved
        )


def collate(
    samples: Sequence[Sample],
    tokenizer: TokenizerLike,
    image_tokens: int,
    *,
    slice_text_by: Literal["sentence", "segment"] = "sentence",
    add_bos: bool = True,
    add_eos_to_targets: bool = True,
    max_tokens: int | None = None,
) -> Batch:
    """Encode and right-pad ``samples`` into a :class:`Batch`.

    ``max_tokens`` caps each sample's length: a longer sample raises ``ValueError`` naming its
    id and length (never truncated).
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    encoded = [
        encode_sample(
            sample,
            tokenizer,
            image_tokens,
            slice_text_by=slice_text_by,
            add_bos=add_bos,
            add_eos_to_targets=add_eos_to_targets,
        )
        for sample in samples
    ]
    for item in encoded:
        if max_tokens is not None and len(item.input_ids) > max_tokens:
            raise ValueError(
                f"sample {item.id!r} has {len(item.input_ids)} tokens > max_tokens={max_tokens} "
                "(never truncated: shorten or drop it upstream)"
            )
    lengths = torch.tensor([len(item.input_ids) for item in encoded], dtype=torch.long)  # (B,)
    size, longest = len(encoded), int(lengths.max())
    input_ids = torch.full((size, longest), tokenizer.pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((size, longest), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    for row, item in enumerate(encoded):
        input_ids[row, : len(item.input_ids)] = torch.tensor(item.input_ids, dtype=torch.long)
        labels[row, : len(item.labels)] = torch.tensor(item.labels, dtype=torch.long)
    attention_mask = torch.arange(longest)[None, :] < lengths[:, None]  # (B, T)
    return Batch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels,
        images=[path for item in encoded for path in item.images],
        image_counts=torch.tensor([len(item.images) for item in encoded], dtype=torch.long),
        spans=[item.spans for item in encoded],
        sample_ids=[item.id for item in encoded],
        lengths=lengths,
    )


def batches_by_token_budget(
    samples: Iterable[Sample],
    tokenizer: TokenizerLike,
    image_tokens: int,
    max_batch_tokens: int,
    *,
    add_bos: bool = True,
    add_eos_to_targets: bool = True,
    sort_window: int | None = None,
) -> Iterator[list[Sample]]:
    """Group samples so that (batch size x longest length) <= ``max_batch_tokens``.

    Greedy, deterministic, order-preserving by default (the batches concatenated give
    ``samples`` back). ``sort_window=W`` orders each run of W samples by length, longest first
    (stable), before grouping: less padding, and the largest batch comes first so a memory
    limit shows at once; order changes only within a window. Lazy: a sample over the budget
    raises ``ValueError`` naming it when reached (``list(...)`` to check a dataset up front).
    """
    if max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens={max_batch_tokens}: must be >= 1")
    if sort_window is not None and sort_window < 1:
        raise ValueError(f"sort_window={sort_window}: must be >= 1 or None")

    def measured() -> Iterator[tuple[Sample, int]]:
        window: list[tuple[Sample, int]] = []  # a window of 1 (the default) keeps the order
        for sample in samples:
            encoded = encode_sample(
                sample,
                tokenizer,
                image_tokens,
                slice_text_by="segment",  # the length does not depend on the slicing
                add_bos=add_bos,
                add_eos_to_targets=add_eos_to_targets,
            )
            window.append((sample, len(encoded.input_ids)))
            if len(window) == (sort_window or 1):
                yield from sorted(window, key=lambda pair: -pair[1])
                window = []
        yield from sorted(window, key=lambda pair: -pair[1])

    batch: list[Sample] = []
    longest = 0
    for sample, size in measured():
        if size > max_batch_tokens:
            raise ValueError(
                f"sample {sample.id!r} has {size} tokens > max_batch_tokens={max_batch_tokens}"
            )
        if batch and (len(batch) + 1) * max(longest, size) > max_batch_tokens:
            yield batch
            batch, longest = [], 0
        batch.append(sample)
        longest = max(longest, size)
    if batch:
        yield batch
