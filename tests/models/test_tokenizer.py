from __future__ import annotations

from pathlib import Path

import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from sugar.io import sha256_file
from sugar.models.tokenizer import FILENAME, SPECIAL_TOKENS, Tokenizer
from tests.models.helpers import small_tokenizer, synthetic_corpus

TEXTS = [
    "",
    " ",
    "A red cat sits.",
    "  two leading spaces",
    "trailing spaces   ",
    "\n\nnewlines\n first\r\n and windows\n",
    "tabs\tand  double  spaces",
    "Café déjà vu, naïve Zoë in Zürich — «quoted»",
    "emoji 🎉 👍🏽 and a family 👨‍👩‍👧 in a row",
    "中文字符 and العربية and עברית",
    "a literal <image> token and <pad><bos><eos> too",
    "<image>",
    "never seen: ǂ ꙮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "x" * 300,
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return small_tokenizer()


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_is_exact(tokenizer: Tokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.parametrize("text", TEXTS)
def test_offsets_are_character_offsets_into_the_string(tokenizer: Tokenizer, text: str) -> None:
    ids, offsets = tokenizer.encode_with_offsets(text)
    assert len(ids) == len(offsets)
    # A token holding part of a multi-byte character carries that whole character's span, so
    # neighbouring spans may overlap; groups of overlapping tokens tile the text without gaps,
    # and each group decodes to exactly its characters.
    groups: list[tuple[int, int, list[int]]] = []
    for token, (start, end) in zip(ids, offsets, strict=True):
        if groups and start < groups[-1][1]:
            groups[-1] = (groups[-1][0], max(end, groups[-1][1]), [*groups[-1][2], token])
        else:
            assert start == (groups[-1][1] if groups else 0)  # no gap, no going back
            groups.append((start, end, [token]))
    assert (groups[-1][1] if groups else 0) == len(text)
    for start, end, tokens in groups:
        assert tokenizer.decode(tokens) == text[start:end]


def test_non_ascii_offsets_differ_from_byte_offsets(tokenizer: Tokenizer) -> None:
    text = "é 🎉 Zoë."
    _, offsets = tokenizer.encode_with_offsets(text)
    assert offsets[-1] == (len(text) - 1, len(text))  # bytes would say (12, 13)
    assert (2, 3) in offsets  # the emoji is one character, whatever its byte tokens


def test_special_ids_are_fixed(tokenizer: Tokenizer) -> None:
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.image_id) == (
        0,
        1,
        2,
        3,
    )
    assert [tokenizer.decode([i]) for i in (1, 2, 3)] == ["<bos>", "<eos>", "<image>"]
    assert tokenizer.decode([0, 1, 0]) == "<bos>"  # pad is the only id decode skips


def test_text_never_produces_special_tokens(tokenizer: Tokenizer) -> None:
    # A corpus full of the literal strings must not teach BPE to rebuild them either.
    trained = Tokenizer.train(["<image> <pad><bos><eos> x"] * 200, vocab_size=400)
    for tok in (tokenizer, trained):
        ids = tok.encode("see <image> and <pad><bos><eos>!")
        assert min(ids) >= len(SPECIAL_TOKENS)
        assert tok.decode(ids) == "see <image> and <pad><bos><eos>!"


def test_training_is_deterministic() -> None:
    first, second = small_tokenizer(), small_tokenizer()
    assert first.identity == second.identity
    for text in synthetic_corpus(count=50, seed=1) + TEXTS:
        assert first.encode(text) == second.encode(text)
    assert small_tokenizer(seed=3).identity != first.identity  # identity sees the corpus


def test_save_load_keeps_identity_and_encodings(tokenizer: Tokenizer, tmp_path: Path) -> None:
    path = tokenizer.save(tmp_path / "tok")
    assert path == tmp_path / "tok" / FILENAME
    assert sorted(p.name for p in path.parent.iterdir()) == [FILENAME]  # no temporaries left
    assert sha256_file(path) == tokenizer.identity
    loaded = Tokenizer.load(tmp_path / "tok")
    assert loaded.identity == tokenizer.identity
    assert loaded.vocab_size == tokenizer.vocab_size
    for text in synthetic_corpus(count=50, seed=2) + TEXTS:
        assert loaded.encode_with_offsets(text) == tokenizer.encode_with_offsets(text)
    assert min(loaded.encode("<image>")) >= len(SPECIAL_TOKENS)  # the guard survives loading


def test_load_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope" / FILENAME)):
        Tokenizer.load(tmp_path / "nope")
    (tmp_path / FILENAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=str(tmp_path / FILENAME)):
        Tokenizer.load(tmp_path)


def test_wrong_special_ids_are_rejected(tmp_path: Path) -> None:
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(special_tokens=["<bos>", "<pad>", "<eos>", "<image>"])
    backend.train_from_iterator(["a b"], trainer)
    (tmp_path / FILENAME).write_text(backend.to_str(), encoding="utf-8")
    with pytest.raises(ValueError, match=r"'<pad>' has id 1, expected 0"):
        Tokenizer.load(tmp_path)


def test_prefix_space_tokenizer_is_rejected() -> None:
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(["a b"], trainers.BpeTrainer(special_tokens=list(SPECIAL_TOKENS)))
    with pytest.raises(ValueError, match="round-trip"):
        Tokenizer(backend)


def test_vocab_size_too_small_is_rejected() -> None:
    with pytest.raises(ValueError, match="vocab_size=100"):
        Tokenizer.train(["a b"], vocab_size=100)
