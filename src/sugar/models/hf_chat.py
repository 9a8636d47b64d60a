"""Span-exact sequences for Hugging Face chat MLLMs: a sample laid out in the model's chat template.

Shapes: T tokens of one sample, N images of one sample.

How a :class:`~sugar.data.schema.Sample` maps onto the chat template:

- consecutive segments of one role form one turn: ``context`` -> ``user``, ``target`` ->
  ``assistant`` (a caption pair ``[image, caption(target)]`` is one user turn holding the image
  and one assistant turn holding the caption; a context-only sample is one user turn);
- the template is rendered **once per turn pattern** with a sentinel as each turn's content,
  and cut at the sentinels: the pieces between are the template's text (system prompt, role
  headers, turn ends, the generation prompt), tokenised alone and never supervised;
- a turn's content is its segments in order, with no separator (as in
  :mod:`sugar.data.collate`): a text segment is tokenised alone, once, with character offsets
  (slice spans come from them, :func:`sugar.data.collate.assign_tokens`); an image segment is
  the template's image block with its one image token repeated ``count`` times, where ``count``
  is the processor's expansion of that image (:class:`ChatLayout` derives the block from the
  template: LLaVA ``<image>\\n``, Qwen2-VL ``<|vision_start|><|image_pad|><|vision_end|>``);
- after each assistant turn's content comes the end token (``eos``), supervised; when the
  template's assistant turn end starts with the ``eos`` text (Qwen's ``<|im_end|>``) it is
  that token, not a second;
- the tokenizer's own leading special tokens (Llama's ``<s>``) open the sequence unless the
  rendered template already starts with them.

Spans: a text slice covers its sentence's tokens; an image slice covers exactly that image's
image-token run (the positions its features fill), never the block's markers
(``<|vision_start|>``, ``\\n``), which are template tokens. Labels: the tokens of target texts
and their end token; everything else is ``IGNORE_INDEX``.

Known difference from tokenising the rendered string whole: each piece is tokenised alone, so a
tokenizer that merges across a piece boundary (a SentencePiece ``▁`` before a segment that
follows ``": "``) gives other ids at that boundary than ``processor(text=rendered)``. Tests
check equality with the processor on a tokenizer whose merges stop at whitespace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from sugar.data.collate import IGNORE_INDEX, EncodedSample, Span, append_text_segment
from sugar.data.schema import Sample
from sugar.data.slices import slices

__all__ = ["ChatLayout", "chat_text", "encode_chat_sample", "turns_of"]

_SENTINEL = "<<sugar-turn-{}>>"
Render = Callable[[list[dict[str, Any]], bool], str]
"""``render(messages, add_generation_prompt) -> str``: the chat template as text."""


def turns_of(sample: Sample) -> list[tuple[str, list[int]]]:
    """``(chat role, segment indices)`` of each turn: runs of one sample role.

    >>> from sugar.data.schema import Segment
    >>> segments = [Segment.image_("a.png"), Segment.text_("Q?"), Segment.text_("A.", "target")]
    >>> turns_of(Sample("s", segments))
    [('user', [0, 1]), ('assistant', [2])]
    """
    turns: list[tuple[str, list[int]]] = []
    for index, segment in enumerate(sample.segments):
        role = "assistant" if segment.role == "target" else "user"
        if turns and turns[-1][0] == role:
            turns[-1][1].append(index)
        else:
            turns.append((role, [index]))
    return turns


def _message(role: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": role, "content": content}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


class ChatLayout:
    """The template pieces of a chat MLLM, derived from its chat template (module docstring).

    Args:
        tokenizer: a Hugging Face fast tokenizer (``__call__`` with offsets).
        render: the chat template as a function (None: no template, segments back to back).
        image_token: the processor's image placeholder text (``<image>``, ``<|image_pad|>``).
        source: the checkpoint's name, for error messages.
    """

    def __init__(
        self, tokenizer: Any, render: Render | None, image_token: str, source: str
    ) -> None:
        self.tokenizer = tokenizer
        self.render = render
        self.image_token = image_token
        self.source = source
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(image_token))
        self.eos_token: str = tokenizer.eos_token
        self.eos_id = int(tokenizer.eos_token_id)
        self.leading = self._leading_special_ids()
        self.image_before, self.image_after = self._image_block()
        self._pieces: dict[tuple[tuple[str, ...], bool], list[str]] = {}

    def ids(self, text: str) -> list[int]:
        """``text``'s token ids, no special tokens added."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def _leading_special_ids(self) -> list[int]:
        """The ids the tokenizer puts before any text on its own (``<s>``), possibly none."""
        plain = self.ids("a")
        full = list(self.tokenizer("a", add_special_tokens=True)["input_ids"])
        for start in range(len(full) - len(plain) + 1):
            if full[start : start + len(plain)] == plain:
                return full[:start]
        return []

    def _image_block(self) -> tuple[str, str]:
        """The template text around one image's token: ``(before, after)``."""
        if self.render is None:
            return "", ""
        sentinel = _SENTINEL.format(0)
        plain = self.render([_message("user", [_text(sentinel)])], False)
        with_image = self.render([_message("user", [{"type": "image"}, _text(sentinel)])], False)
        head, head_image = plain.split(sentinel)[0], with_image.split(sentinel)[0]
        block = head_image[len(head) :]
        if not head_image.startswith(head) or block.count(self.image_token) != 1:
            raise ValueError(
                f"{self.source}: the chat template does not render an image as one "
                f"{self.image_token!r} block before the text (got {block!r})"
            )
        before, _, after = block.partition(self.image_token)
        return before, after

    def pieces(self, roles: Sequence[str], generation_prompt: bool) -> list[str]:
        """The template text before, between and after the turns (``len(roles) + 1`` pieces)."""
        key = (tuple(roles), generation_prompt)
        if key not in self._pieces:
            if self.render is None:
                self._pieces[key] = [""] * (len(roles) + 1)
            else:
                messages = [
                    _message(role, [_text(_SENTINEL.format(k))]) for k, role in enumerate(roles)
                ]
                text = self.render(messages, generation_prompt)
                pieces = []
                for k in range(len(roles)):
                    head, sep, text = text.partition(_SENTINEL.format(k))
                    if not sep:
                        raise ValueError(
                            f"{self.source}: the chat template dropped turn {k} ({roles[k]!r}) "
                            "of a conversation; cannot lay the sample out in it"
                        )
                    pieces.append(head)
                self._pieces[key] = [*pieces, text]
        return self._pieces[key]


def encode_chat_sample(
    sample: Sample,
    layout: ChatLayout,
    image_counts: Sequence[int],
    *,
    slice_text_by: Literal["sentence", "segment"] = "sentence",
    add_eos_to_targets: bool = True,
    generation_prompt: bool = False,
) -> EncodedSample:
    """Ids, labels and slice spans of ``sample`` in ``layout`` (module docstring).

    ``image_counts``: the image-token count of each of the sample's images, in order (what the
    processor expands each image to). Raises ``ValueError`` naming the sample when a text or a
    template piece encodes to the image token (it would shift every image after it) or the
    counts do not match the sample's images.
    """
    images = [k for k, segment in enumerate(sample.segments) if segment.image is not None]
    if len(image_counts) != len(images):
        raise ValueError(
            f"sample {sample.id!r}: {len(images)} image segments but {len(image_counts)} "
            "image-token counts"
        )
    turns = turns_of(sample)
    pieces = layout.pieces([role for role, _ in turns], generation_prompt)
    sample_slices = slices(sample, by=slice_text_by)
    ids: list[int] = []
    labels: list[int] = []
    spans: list[Span] = []

    def template(text: str) -> None:
        tokens = layout.ids(text)
        if layout.image_token_id in tokens:
            raise ValueError(
                f"sample {sample.id!r}: template text {text!r} encodes to the image token"
            )
        ids.extend(tokens)
        labels.extend([IGNORE_INDEX] * len(tokens))

    first = layout.ids(pieces[0])
    if layout.leading and first[: len(layout.leading)] != layout.leading:
        ids.extend(layout.leading)
        labels.extend([IGNORE_INDEX] * len(layout.leading))
    counts = iter(image_counts)
    for turn, (role, members) in enumerate(turns):
        piece = pieces[turn]
        if turn > 0 and turns[turn - 1][0] == "assistant" and add_eos_to_targets:
            # the end token was placed (and supervised) after the target text
            piece = piece.removeprefix(layout.eos_token)
        template(piece)
        for index in members:
            segment = sample.segments[index]
            mine = [k for k, piece_ in enumerate(sample_slices) if piece_.segment == index]
            if segment.image is not None:
                template(layout.image_before)
                start, count = len(ids), next(counts)
                ids.extend([layout.image_token_id] * count)
                labels.extend([IGNORE_INDEX] * count)
                spans.append(Span(start, len(ids), "image", "context", index, mine[0]))
                template(layout.image_after)
                continue
            assert segment.text is not None  # the schema guarantees text segments have text
            encoded = layout.tokenizer(
                segment.text, add_special_tokens=False, return_offsets_mapping=True
            )
            tokens, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
            if layout.image_token_id in tokens:
                extra = tokens.count(layout.image_token_id)
                raise ValueError(
                    f"sample {sample.id!r} segment {index}: its text encodes to the image token "
                    f"{layout.image_token!r}: {len(images) + extra} image placeholders for "
                    f"{len(images)} images"
                )
            append_text_segment(sample, index, tokens, offsets, ids, labels, spans, sample_slices)
        if role == "assistant" and add_eos_to_targets:
            ids.append(layout.eos_id)
            labels.append(layout.eos_id)
    last = pieces[-1]
    if turns and turns[-1][0] == "assistant" and add_eos_to_targets:
        last = last.removeprefix(layout.eos_token)
    template(last)
    assert [span.slice for span in spans] == list(range(len(sample_slices)))
    return EncodedSample(sample.id, ids, labels, spans, sample.images)


def chat_text(sample: Sample, layout: ChatLayout, generation_prompt: bool = False) -> str:
    """The text :func:`encode_chat_sample` lays out, with one image token per image: what
    ``processor(text=..., images=...)`` expands and tokenises (tests compare the two)."""
    turns = turns_of(sample)
    pieces = layout.pieces([role for role, _ in turns], generation_prompt)
    out = []
    for turn, (role, members) in enumerate(turns):
        piece = pieces[turn]
        if turn > 0 and turns[turn - 1][0] == "assistant":
            piece = piece.removeprefix(layout.eos_token)
        out.append(piece)
        for index in members:
            segment = sample.segments[index]
            if segment.image is not None:
                out.append(layout.image_before + layout.image_token + layout.image_after)
            else:
                out.append(segment.text or "")
        if role == "assistant":
            out.append(layout.eos_token)
    last = pieces[-1]
    if turns and turns[-1][0] == "assistant":
        last = last.removeprefix(layout.eos_token)
    return "".join([*out, last])
