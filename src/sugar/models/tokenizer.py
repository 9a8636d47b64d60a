"""A byte-level BPE tokenizer with four fixed special tokens, built on Hugging Face ``tokenizers``.

Byte-level (the GPT-2 scheme): text is split by GPT-2's regex into words, punctuation runs and
whitespace runs, each piece's UTF-8 bytes are mapped to printable characters and BPE merges
them. Hence every Python string round-trips exactly (``decode(encode(s)) == s``: leading
spaces, newlines, accents, emoji) and there is no unknown token. No prefix space is added and
there is no normaliser, so offsets index the original string.

Special tokens, at fixed ids: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<image>`` 3. They are
never produced by encoding text: a literal ``"<image>"`` in user text is ordinary text (the
backend's added-token matching is switched off with ``encode_special_tokens``, and the
pre-tokeniser splits ``<``, ``image``, ``>`` apart so no merge can rebuild the string). Callers
insert special ids directly (:mod:`sugar.data.collate`).

>>> tokenizer = Tokenizer.train(["A red square. A blue circle."] * 20, vocab_size=300)
>>> ids = tokenizer.encode("A red <image>!")
>>> tokenizer.decode(ids), tokenizer.image_id in ids
('A red <image>!', False)
>>> (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.image_id)
(0, 1, 2, 3)

A library, not hand-written BPE, on purpose (CONTRIBUTING rule 15): ``tokenizers`` is fast,
deterministic for the same corpus, and serialises to one JSON file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from sugar.io import atomic_write_text, sha256_bytes

__all__ = ["FILENAME", "SPECIAL_TOKENS", "Tokenizer"]

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<image>")
"""The special tokens; the token at position i has id i."""
FILENAME = "tokenizer.json"
"""The one file :meth:`Tokenizer.save` writes in its directory."""

_BYTE_ALPHABET = 256
_PROBE = "  Héllo,\n\twörld <image> 🎉 "  # round-trip check run on every tokenizer built or loaded


class Tokenizer:
    """Byte-level BPE with fixed special ids; wraps a ``tokenizers.Tokenizer``.

    Build one with :meth:`train` or :meth:`load`; the constructor checks that ``backend`` has
    the four special tokens at ids 0..3 and round-trips text exactly, and raises ``ValueError``
    otherwise.
    """

    pad_id: Final = SPECIAL_TOKENS.index("<pad>")
    """Id of ``<pad>`` (0): right padding; never supervised."""
    bos_id: Final = SPECIAL_TOKENS.index("<bos>")
    """Id of ``<bos>`` (1)."""
    eos_id: Final = SPECIAL_TOKENS.index("<eos>")
    """Id of ``<eos>`` (2): ends each target text, so generation learns to stop."""
    image_id: Final = SPECIAL_TOKENS.index("<image>")
    """Id of ``<image>`` (3): one image feature position."""

    def __init__(self, backend: tokenizers.Tokenizer, source: str = "<memory>") -> None:
        for expected_id, token in enumerate(SPECIAL_TOKENS):
            actual = backend.token_to_id(token)
            if actual != expected_id:
                raise ValueError(
                    f"{source}: special token {token!r} has id {actual}, expected {expected_id}"
                )
        # Text never turns into special tokens, even when it spells one out (user text may).
        backend.encode_special_tokens = True
        self._backend = backend
        self._serialized = backend.to_str()
        if self.decode(self.encode(_PROBE)) != _PROBE:
            raise ValueError(
                f"{source}: tokenizer does not round-trip text exactly; a byte-level "
                "pre-tokenizer and decoder without prefix space are required"
            )

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int = 512, min_frequency: int = 2
    ) -> Tokenizer:
        """Learn BPE merges from ``texts``; deterministic for the same texts and arguments.

        ``vocab_size`` counts the 4 special tokens and the 256 byte symbols, so it must be at
        least 260; a pair must occur ``min_frequency`` times to be merged. The vocabulary can
        come out smaller than ``vocab_size`` when the corpus runs out of frequent pairs.
        """
        minimum = len(SPECIAL_TOKENS) + _BYTE_ALPHABET
        if vocab_size < minimum:
            raise ValueError(
                f"vocab_size={vocab_size}: must be >= {minimum} (4 special + 256 byte tokens)"
            )
        if min_frequency < 1:
            raise ValueError(f"min_frequency={min_frequency}: must be >= 1")
        backend = tokenizers.Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        backend.train_from_iterator(texts, trainer)
        return cls(backend)

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/tokenizer.json`` atomically; returns its path.

        The file's SHA-256 equals :attr:`identity`.
        """
        return atomic_write_text(Path(directory) / FILENAME, self._serialized)

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        """Read ``directory/tokenizer.json`` written by :meth:`save`.

        Raises ``FileNotFoundError`` naming the path when it is missing and ``ValueError``
        naming it when it is not a valid tokenizer of this kind.
        """
        path = Path(directory) / FILENAME
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        try:
            backend = tokenizers.Tokenizer.from_str(path.read_text(encoding="utf-8"))
        except Exception as exc:  # the Rust side raises plain Exception on bad JSON
            raise ValueError(f"{path}: not a valid tokenizer file ({exc})") from None
        return cls(backend, source=str(path))

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (ids are ``0 .. vocab_size - 1``)."""
        return int(self._backend.get_vocab_size(with_added_tokens=True))

    @property
    def identity(self) -> str:
        """Hex SHA-256 of the serialised tokenizer (the bytes :meth:`save` writes)."""
        return sha256_bytes(self._serialized.encode("utf-8"))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added or produced)."""
        return self.encode_with_offsets(text)[0]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of ``text`` and each token's ``(start, end)`` character span in ``text``.

        Offsets index the Python string (code points, not bytes) and are non-decreasing. A
        token's span includes the leading space byte-level BPE attaches to words
        (``" red"``). When one character is split over several tokens (an emoji's four UTF-8
        bytes), each of them carries that character's whole span, so neighbouring spans can
        overlap (``" 🎉"`` as ``(0, 2), (1, 2)``); they never leave a gap.

        >>> tokenizer = Tokenizer.train(["a b"], vocab_size=260)
        >>> tokenizer.encode_with_offsets("é b")[1]
        [(0, 1), (0, 1), (1, 2), (2, 3)]
        """
        encoding = self._backend.encode(text, add_special_tokens=False)
        ids = list(encoding.ids)
        assert min(ids, default=len(SPECIAL_TOKENS)) >= len(SPECIAL_TOKENS), "special id"
        return ids, [(int(start), int(end)) for start, end in encoding.offsets]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; ``<pad>`` is skipped, other special tokens appear literally.

        ``<bos>``, ``<eos>`` and ``<image>`` are rendered as their strings, so a decoded
        sequence shows where they were; strip them yourself when you want only the text. Ids
        that cut a multi-byte character decode to U+FFFD.
        """
        kept = [int(i) for i in ids if int(i) != self.pad_id]
        return str(self._backend.decode(kept, skip_special_tokens=False))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, identity={self.identity[:12]})"
