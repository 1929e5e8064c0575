"""Tokenizers: round trips, tiktoken == tokenizers identity, char tokenizer, metadata, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmforge.data.tokenizer import ADVERSARIAL, EOT, check_identity, load_tokenizer, train_tokenizer
from lmforge.errors import UserError

CORPUS = [
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 20,
    "The quick brown fox jumps over the lazy dog. 1234567890 3.14159 -- they're, we'll, I'd.\n" * 20,
    "Unicode: naïve café, Ελληνικά, русский, 中文, 日本語, emoji 🎉👨‍👩‍👧 and\r\nCRLF\ttabs   spaces\n" * 20,
]


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    return train_tokenizer(iter(CORPUS), "bpe", 400, tmp_path_factory.mktemp("tok") / "tokenizer")


def test_bpe_round_trip_and_meta(bpe, tmp_path):
    assert bpe.kind == "bpe" and bpe.engine == "tiktoken" and bpe.vocab_size <= 400
    assert bpe.special_tokens == {EOT: bpe.eot_id} and bpe.token_bytes[bpe.eot_id] == 0
    for text in CORPUS + ADVERSARIAL + ["", "never seen: ζωή ☃ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢"]:
        ids = bpe.encode(text)
        assert bpe.decode(ids) == text
        assert int(bpe.token_bytes[ids].sum()) == len(text.encode())  # bits-per-byte relies on it
        assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.encode_batch(CORPUS) == [bpe.encode(t) for t in CORPUS]
    assert bpe.decode_bytes(bpe.encode("é")) == "é".encode()


def test_tiktoken_identical_to_tokenizers(bpe):
    real = [c[: 200 + 37 * i] for i, c in enumerate(CORPUS)]
    assert check_identity(bpe, CORPUS + ADVERSARIAL + real) == []
    assert bpe.encode_batch(ADVERSARIAL) == bpe.encode_with_tokenizers(ADVERSARIAL)


def test_load_checks_hash(bpe, tmp_path):
    folder = tmp_path / "t"
    tok = train_tokenizer(iter(CORPUS), "bpe", 300, folder)
    again = load_tokenizer(folder)
    assert again.hash == tok.hash and again.encode(CORPUS[0]) == tok.encode(CORPUS[0])
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["kind"] == "bpe" and len(meta["token_bytes"]) == meta["vocab_size"] == tok.vocab_size
    content = (folder / "tokenizer.json").read_text()
    (folder / "tokenizer.json").write_text(content.replace('"merges"', '"merges" ', 1))
    with pytest.raises(UserError, match="does not match its hash"):
        load_tokenizer(folder)
    with pytest.raises(UserError, match="no readable tokenizer"):
        load_tokenizer(tmp_path / "missing")


def test_char_tokenizer(tmp_path):
    tok = train_tokenizer(iter(["hello world\n", "hello there"]), "char", None, tmp_path / "c")
    assert tok.kind == "char" and tok.vocab_size == len(set("hello world\nhello there")) + 2
    ids = tok.encode("hello\n")
    assert tok.decode(ids) == "hello\n" and len(ids) == 6
    assert int(tok.token_bytes[ids].sum()) == len(b"hello\n")
    unk = tok.special_tokens["<|unk|>"]
    assert tok.encode("hxz") == [tok.encode("h")[0], unk, unk]  # unseen characters of an ASCII alphabet
    np.testing.assert_array_equal(tok.encode_array("hello"), tok.encode("hello"))
    loaded = load_tokenizer(tmp_path / "c")
    assert loaded.encode("hello") == tok.encode("hello") and loaded.hf.encode("hello").ids == tok.encode(
        "hello"
    )


def test_char_tokenizer_beyond_ascii_falls_back_to_bytes(tmp_path):
    """A non-ASCII alphabet: unseen or capped-off characters become UTF-8 byte tokens, so every id stands
    for a fixed number of bytes and bits-per-byte stays exact."""
    chars = [chr(0x4E00 + i) for i in range(600)]
    texts = ["".join(chars[: 600 - i]) + "héllo" for i in range(0, 600, 50)]  # frequency falls with i
    tok = train_tokenizer(iter(texts), "char", 400, tmp_path / "c")
    assert tok.vocab_size == 400 and "<|unk|>" not in tok.special_tokens
    text = "héllo 🎉 " + "".join(chars) + "\n"  # 🎉 unseen, the rarest CJK characters capped off
    for t in (tok, load_tokenizer(tmp_path / "c")):
        ids = t.encode(text)
        assert t.decode(ids) == text and len(ids) > len(text)
        assert int(t.token_bytes[ids].sum()) == len(text.encode())
        assert t.hf.encode(text, add_special_tokens=False).ids == ids  # the Hugging Face file agrees
    default = train_tokenizer(iter(texts), "char", None, tmp_path / "d")
    assert default.vocab_size == 1 + 256 + len(set("".join(texts)))  # under the cap: every character kept


def test_vocab_size_too_small(tmp_path):
    with pytest.raises(UserError, match="smaller than the alphabet"):
        train_tokenizer(iter(["abcdef"]), "char", 5, tmp_path / "c")
    with pytest.raises(UserError, match="below 257"):
        train_tokenizer(iter(["abcdef"]), "bpe", 256, tmp_path / "b")
    with pytest.raises(UserError, match="not one of bpe, char"):
        train_tokenizer(iter(["abcdef"]), "wordpiece", 300, tmp_path / "w")
    assert not (tmp_path / "c").exists() and not (tmp_path / "b").exists()
