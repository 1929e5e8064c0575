"""Duplicate removal: exact (hash of normalised text) and near (MinHash LSH from `datasketch`).

Why both: exact hashing is nearly free and catches copied files; near-duplicate detection catches the
lightly edited copy (a fixed typo, a different header), which exact hashing misses and which makes a
validation set leak into training. The first document seen is kept; later copies are dropped.

Near-duplicates are documents whose *word 5-gram shingle sets* have a Jaccard similarity of at least
`threshold` (default 0.8), estimated with MinHash (`num_perm` = 128 permutations) and found with
locality-sensitive hashing, so each new document is compared against the index, not against every
other document. 5-grams of lowercased words (the choice of Broder 1997 and of most LLM data pipelines
since, e.g. Gopher, Rae et al. 2021) make the measure insensitive to whitespace and case but sensitive
to real rewording. The editions of Shakespeare (modern vs First Folio spelling) overlap only ~15% in
5-grams and are correctly kept as different texts.

Memory: the LSH index holds one signature per kept document (about 1 KB), plus a short preview used
in the report; documents themselves are never held.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
_BATCH = 8192  # shingles per MinHash update: bounds the (batch, num_perm) temporary


def normalised_hash(text: str) -> bytes:
    """16-byte digest of the text with case folded and whitespace runs collapsed."""
    norm = _SPACE.sub(" ", text.casefold()).strip()
    return hashlib.blake2b(norm.encode("utf-8"), digest_size=16).digest()


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """32-bit hashes (crc32, stable across runs) of the distinct word n-grams of `text`."""
    words = _WORD.findall(text.casefold())
    if len(words) < n:
        grams = [" ".join(words)] if words else []
    else:
        grams = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    return np.unique(
        np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), dtype=np.uint64, count=len(grams))
    )


@dataclass
class Duplicate:
    of: str  # preview of the kept document this one duplicates
    similarity: float  # estimated Jaccard similarity (1.0 for exact duplicates)


class ExactDedup:
    def __init__(self) -> None:
        self.seen: dict[bytes, str] = {}

    def check(self, text: str, preview: str) -> Duplicate | None:
        key = normalised_hash(text)
        if key in self.seen:
            return Duplicate(self.seen[key], 1.0)
        self.seen[key] = preview
        return None


class NearDedup:
    """`check(text, preview)` -> Duplicate if a near-copy was seen before; otherwise index it."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, shingle_words: int = 5, seed: int = 1):
        from datasketch import MinHash, MinHashLSH

        self._minhash = lambda: MinHash(num_perm=num_perm, seed=seed, hashfunc=int)
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.threshold = threshold
        self.shingle_words = shingle_words
        self.signatures: list[np.ndarray] = []  # (num_perm,) MinHash values of each kept document
        self.previews: list[str] = []

    def signature(self, text: str):
        sig = self._minhash()
        hashes = shingle_hashes(text, self.shingle_words)
        for start in range(0, len(hashes), _BATCH):
            sig.update_batch(hashes[start : start + _BATCH].tolist())
        return sig

    def check(self, text: str, preview: str) -> Duplicate | None:
        sig = self.signature(text)
        best: Duplicate | None = None
        values = np.array(sig.hashvalues)
        for key in self.lsh.query(sig):  # candidates; LSH has false positives, so check the estimate
            sim = float(np.mean(values == self.signatures[key]))
            if sim >= self.threshold and (best is None or sim > best.similarity):
                best = Duplicate(self.previews[key], sim)
        if best is not None:
            return best
        key = len(self.signatures)
        self.lsh.insert(key, sig, check_duplication=False)
        self.signatures.append(values)
        self.previews.append(preview)
        return None
