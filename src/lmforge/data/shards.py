"""Token shards: the on-disk format the trainer reads, and its manifest.

A shard is a flat binary file read through `numpy.memmap` (no loading, no unpickling):
  bytes 0..63   header: magic b"LMFSHARD", version u32, dtype code u32 (2 = uint16, 4 = uint32),
                token count u64, zero padding to 64 bytes (little-endian)
  bytes 64..    the tokens; an `<|endoftext|>` id comes BEFORE each document.
uint16 when the vocabulary fits (< 65536 ids), else uint32.

shards/manifest.json pins everything a reader must trust:
  {"format_version": 1, "tokenizer_hash", "vocab_size", "eot_id", "dtype",
   "split": {"mode", "val_fraction"}, "sources": {name: {"weight"}},
   "splits": {"train": {"tokens", "bytes" (UTF-8 bytes of the text), "docs",
                        "shards": [{"name", "tokens", "sha256", "source", "bytes", "docs"}],
                        "sources": {name: {"tokens", "bytes", "docs", "shards": [names]}}},
              "val": {...}}}
Each shard holds documents of ONE source, so the batch sampler can mix sources by weight: group a
split's shards by `source` (`open_split_by_source`) and draw from each group with its weight.

Opening a shard validates magic, version, dtype, size (header count vs file length) and optionally
that every id is < vocab_size; `open_split(verify=True)` also checks each shard's sha256 against the
manifest. Every failure is a UserError naming the shard.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy as np

from lmforge.errors import UserError

MAGIC = b"LMFSHARD"
VERSION = 1
HEADER_BYTES = 64
_HEADER = struct.Struct("<8sIIQ")  # magic, version, dtype code, token count
DTYPE_CODES = {2: np.dtype(np.uint16), 4: np.dtype(np.uint32)}
MANIFEST = "manifest.json"


def dtype_for(vocab_size: int) -> np.dtype:
    return DTYPE_CODES[2] if vocab_size <= 1 << 16 else DTYPE_CODES[4]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


class ShardWriter:
    """Stream token arrays into one shard under a temporary name; `close()` renames it into place."""

    def __init__(self, path: Path, dtype: np.dtype):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.fh = open(self.tmp, "wb")  # noqa: SIM115
        self.fh.write(b"\0" * HEADER_BYTES)
        self.tokens = 0

    def write(self, tokens: np.ndarray) -> None:
        self.fh.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        self.tokens += len(tokens)

    def close(self) -> dict:
        """Finish the header, rename into place; returns {"name", "tokens", "sha256"}."""
        self.fh.seek(0)
        code = self.dtype.itemsize
        self.fh.write(_HEADER.pack(MAGIC, VERSION, code, self.tokens).ljust(HEADER_BYTES, b"\0"))
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.replace(self.tmp, self.path)
        return {"name": self.path.name, "tokens": self.tokens, "sha256": sha256_file(self.path)}


def write_shard(path: Path, tokens: np.ndarray, dtype: np.dtype = np.uint16) -> dict:
    """Write a whole shard at once (tests, small tools)."""
    writer = ShardWriter(path, dtype)
    writer.write(np.asarray(tokens))
    return writer.close()


def open_shard(path: str | Path, vocab_size: int | None = None) -> np.memmap:
    """The shard's tokens as a read-only 1-D memmap; validates header and size (and ids < vocab_size)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(_HEADER.size)
    except OSError:
        raise UserError(
            f"shard {path.name} is missing or unreadable in '{path.parent}'; rerun `lmforge data encode`"
        ) from None
    if len(head) < _HEADER.size or size < HEADER_BYTES:
        raise UserError(f"shard {path.name} is truncated (no full header); rerun `lmforge data encode`")
    magic, version, code, count = _HEADER.unpack(head)
    if magic != MAGIC:
        raise UserError(f"shard {path.name} is not an lmforge shard (bad magic); rerun `lmforge data encode`")
    if version != VERSION:
        raise UserError(f"shard {path.name} has format version {version}, expected {VERSION}; re-encode it")
    if code not in DTYPE_CODES:
        raise UserError(f"shard {path.name} has unknown dtype code {code}; rerun `lmforge data encode`")
    dtype = DTYPE_CODES[code]
    if size != HEADER_BYTES + count * dtype.itemsize:
        raise UserError(
            f"shard {path.name} holds {size - HEADER_BYTES} bytes of tokens but its header says {count} x "
            f"{dtype.itemsize}; it is truncated or corrupt, rerun `lmforge data encode`"
        )
    tokens = np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(count,))
    if vocab_size is not None and count and int(tokens.max()) >= vocab_size:
        raise UserError(
            f"shard {path.name} holds token id {int(tokens.max())} >= vocab_size {vocab_size}; re-encode it"
        )
    return tokens


def read_manifest(shards_dir: str | Path) -> dict:
    """shards/manifest.json as a dict; UserError if missing or malformed."""
    import json

    path = Path(shards_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["splits"]["train"]["shards"]  # noqa: B018 -- the key every reader needs
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"no readable {MANIFEST} in '{path.parent}'; run `lmforge data prepare` (or encode)"
        ) from None
    if manifest.get("format_version") != 1:
        raise UserError(f"{path} has format_version {manifest.get('format_version')}, expected 1; re-encode")
    return manifest


def open_split(
    shards_dir: str | Path, split: str, verify: bool = True, expected_tokenizer_hash: str | None = None
) -> list[np.memmap]:
    """The split's shards in manifest order; verify=True checks each sha256 against the manifest."""
    return [t for _, t in _open_entries(shards_dir, split, verify, expected_tokenizer_hash)]


def open_split_by_source(
    shards_dir: str | Path, split: str, verify: bool = True, expected_tokenizer_hash: str | None = None
) -> dict[str, list[np.memmap]]:
    """{source name: its shards} for mixing sources by weight (weights: manifest["sources"])."""
    out: dict[str, list[np.memmap]] = {}
    for entry, tokens in _open_entries(shards_dir, split, verify, expected_tokenizer_hash):
        out.setdefault(entry.get("source", "all"), []).append(tokens)
    return out


def _open_entries(shards_dir, split, verify, expected_tokenizer_hash):
    shards_dir = Path(shards_dir)
    manifest = read_manifest(shards_dir)
    if expected_tokenizer_hash is not None and manifest.get("tokenizer_hash") != expected_tokenizer_hash:
        raise UserError(
            f"shards in '{shards_dir}' were encoded with another tokenizer (hash "
            f"{str(manifest.get('tokenizer_hash'))[:12]}, expected {expected_tokenizer_hash[:12]}); re-encode"
        )
    if split not in manifest["splits"]:
        raise UserError(
            f"split '{split}' is not in {shards_dir / MANIFEST} (has: {', '.join(manifest['splits'])})"
        )
    out = []
    for entry in manifest["splits"][split]["shards"]:
        path = shards_dir / entry["name"]
        tokens = open_shard(path, manifest.get("vocab_size") if verify else None)
        if len(tokens) != entry["tokens"]:
            raise UserError(
                f"shard {entry['name']} holds {len(tokens)} tokens, the manifest {entry['tokens']}; re-encode"
            )
        if verify and sha256_file(path) != entry["sha256"]:
            raise UserError(
                f"shard {entry['name']} does not match its sha256 in {MANIFEST}; it is corrupt, re-encode"
            )
        out.append((entry, tokens))
    return out
