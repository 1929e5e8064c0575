"""Shard format and manifest checks: header, size, ids, sha256 -- each failure names the shard."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmforge.data.files import write_json
from lmforge.data.shards import (
    HEADER_BYTES,
    dtype_for,
    open_shard,
    open_split,
    open_split_by_source,
    read_manifest,
    write_shard,
)
from lmforge.errors import UserError


def make_split(folder, vocab_size=100):
    folder.mkdir()
    a = write_shard(folder / "train_00000.bin", np.arange(50) % vocab_size) | {"source": "a"}
    b = write_shard(folder / "train_00001.bin", np.arange(30) % 7) | {"source": "b"}
    v = write_shard(folder / "val_00000.bin", np.arange(10)) | {"source": "a"}
    manifest = {
        "format_version": 1, "tokenizer_hash": "abc", "vocab_size": vocab_size, "dtype": "uint16",
        "sources": {"a": {"weight": 1.0}, "b": {"weight": 3.0}},
        "splits": {"train": {"tokens": 80, "bytes": 80, "shards": [a, b]},
                   "val": {"tokens": 10, "bytes": 10, "shards": [v]}},
    }  # fmt: skip
    write_json(folder / "manifest.json", manifest)
    return folder


def test_format_round_trip(tmp_path):
    entry = write_shard(tmp_path / "x.bin", np.array([0, 1, 65535]), np.uint16)
    raw = (tmp_path / "x.bin").read_bytes()
    assert raw[:8] == b"LMFSHARD" and len(raw) == HEADER_BYTES + 3 * 2
    assert int.from_bytes(raw[8:12], "little") == 1 and int.from_bytes(raw[12:16], "little") == 2
    assert int.from_bytes(raw[16:24], "little") == 3 and entry["tokens"] == 3
    tokens = open_shard(tmp_path / "x.bin")
    assert isinstance(tokens, np.memmap) and tokens.tolist() == [0, 1, 65535]
    write_shard(tmp_path / "y.bin", np.array([70000]), np.uint32)
    assert open_shard(tmp_path / "y.bin").tolist() == [70000]
    assert dtype_for(4096) == np.uint16 and dtype_for(65536) == np.uint16 and dtype_for(65537) == np.uint32
    assert not list(tmp_path.glob(".*tmp"))


def test_open_split_and_by_source(tmp_path):
    folder = make_split(tmp_path / "shards")
    train = open_split(folder, "train", expected_tokenizer_hash="abc")
    assert [len(s) for s in train] == [50, 30]
    by_source = open_split_by_source(folder, "train")
    assert {k: [len(s) for s in v] for k, v in by_source.items()} == {"a": [50], "b": [30]}
    assert read_manifest(folder)["sources"]["b"]["weight"] == 3.0
    with pytest.raises(UserError, match="another tokenizer"):
        open_split(folder, "train", expected_tokenizer_hash="def")
    with pytest.raises(UserError, match="split 'test'"):
        open_split(folder, "test")


def corrupt_flip(path):
    data = bytearray(path.read_bytes())
    data[-2] ^= 1  # low byte of the last uint16 token: still a valid id
    path.write_bytes(bytes(data))


def corrupt_truncate(path):
    path.write_bytes(path.read_bytes()[:-3])


def corrupt_magic(path):
    path.write_bytes(b"NOTSHARD" + path.read_bytes()[8:])


def corrupt_version(path):
    data = bytearray(path.read_bytes())
    data[8] = 9
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (corrupt_flip, "does not match its sha256"),
        (corrupt_truncate, "truncated or corrupt"),
        (corrupt_magic, "bad magic"),
        (corrupt_version, "format version 9"),
        (lambda p: p.write_bytes(b"LMF"), "truncated"),
        (lambda p: p.unlink(), "missing"),
    ],
    ids=["flipped-byte", "truncated", "magic", "version", "no-header", "missing"],
)
def test_damaged_shard_refused_by_name(tmp_path, corrupt, match):
    folder = make_split(tmp_path / "shards")
    corrupt(folder / "train_00001.bin")
    with pytest.raises(UserError, match=match) as err:
        open_split(folder, "train")
    assert "train_00001.bin" in str(err.value) and "\n" not in str(err.value)
    assert len(open_split(folder, "val")) == 1  # the other split is still fine


def test_token_id_beyond_vocab(tmp_path):
    folder = make_split(tmp_path / "shards", vocab_size=40)  # train_00000 holds ids up to 39 ... fine
    write_shard(folder / "train_00000.bin", np.array([1, 2, 45]))
    with pytest.raises(UserError, match="token id 45 >= vocab_size 40"):
        open_shard(folder / "train_00000.bin", vocab_size=40)


def test_manifest_missing_or_bad(tmp_path):
    with pytest.raises(UserError, match="no readable manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(UserError, match="no readable manifest.json"):
        read_manifest(tmp_path)
