"""The train/validation split of a data folder's cleaned documents.

Train/validation split (`SplitConfig`):
  auto  (the default) hash when the corpus has enough documents for it -- at least
        `MIN_VAL_DOCS / val_fraction`, and the hash split's share of the text within half to one and a
        half times val_fraction -- otherwise tail; the report says which and why. Why: a hash split
        over a handful of big documents puts 0% or 46% of the text in validation, never 10%.
  hash  a document goes to val when the stable hash (blake2b) of its text falls below val_fraction,
        so adding documents never moves existing ones between splits;
  tail  the last val_fraction of each source's text (in corpus order) is val, cut at a line break --
        the classic Tiny Shakespeare recipe. Per source, so every source of a mixture is validated.

`resolve_split` is also the one place that refuses a corpus too small to train on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lmforge.data.files import read_docs, read_json
from lmforge.errors import UserError

MIN_CORPUS_CHARS = 1000  # less text than this after cleaning cannot give both a train and a val split
MIN_VAL_DOCS = 20  # auto split: a hash split needs this many expected validation documents


@dataclass
class SplitConfig:
    mode: str = "auto"  # auto | hash | tail (auto resolves to one of the two, see resolve_split)
    val_fraction: float = 0.1  # fraction of documents (hash) or of each source's text (tail) for val
    reason: str = ""  # why auto chose this mode (set by resolve_split; empty when chosen by the user)

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "hash", "tail"):
            raise UserError(f"--split '{self.mode}' is not one of auto, hash, tail")
        if not 0 < self.val_fraction < 1:
            raise UserError(f"--val-fraction ({self.val_fraction}) must be between 0 and 1")


def is_val_by_hash(text: str, val_fraction: float) -> bool:
    """Stable: depends only on the document's text, never on the rest of the corpus."""
    h = int.from_bytes(
        hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little"
    )
    return h < val_fraction * 2**64


def iter_split(
    docs: Iterable[tuple[str, str]], cfg: SplitConfig, source_chars: dict[str, int] | None = None
) -> Iterator[tuple[str, str, str]]:
    """(split, text, source) for each document; tail mode needs each source's total chars."""
    if cfg.mode == "hash":
        for text, source in docs:
            yield ("val" if is_val_by_hash(text, cfg.val_fraction) else "train"), text, source
        return
    seen: dict[str, int] = {}
    for text, source in docs:
        boundary = int(source_chars[source] * (1 - cfg.val_fraction))
        start = seen.get(source, 0)
        seen[source] = start + len(text)
        if start + len(text) <= boundary:
            yield "train", text, source
        elif start >= boundary:
            yield "val", text, source
        else:  # this document straddles the boundary: cut it at the next line break
            cut = boundary - start
            nl = text.find("\n", cut)
            cut = nl + 1 if 0 <= nl < cut + 1000 else cut
            if text[:cut].strip():
                yield "train", text[:cut], source
            if text[cut:].strip():
                yield "val", text[cut:], source


def too_small_error(n_chars: int, when: str) -> UserError:
    return UserError(
        f"the corpus has {n_chars:,} characters{when}; lmforge needs at least {MIN_CORPUS_CHARS:,} to "
        "train and validate on: add text with another --source"
    )


def resolve_split(out_dir: Path, cfg: SplitConfig) -> SplitConfig:
    """The split to use: `cfg` itself for hash/tail, else the auto choice with its reason.

    Also the one place that refuses a corpus too small to train on."""
    report = read_json(Path(out_dir) / "clean" / "clean_report.json", "`lmforge data clean`")
    if report["chars_out"] < MIN_CORPUS_CHARS:
        raise too_small_error(report["chars_out"], " after cleaning")
    if cfg.mode != "auto":
        return cfg
    n_docs = val_docs = val_chars = 0
    for text, _ in read_docs(Path(out_dir) / "clean", "`lmforge data clean`"):
        n_docs += 1
        if is_val_by_hash(text, cfg.val_fraction):
            val_docs += 1
            val_chars += len(text)
    share = val_chars / max(report["chars_out"], 1)
    need = int(MIN_VAL_DOCS / cfg.val_fraction + 0.999)
    if n_docs < need:
        why = f"{n_docs} documents, fewer than the {need} a hash split needs at val fraction"
        why += f" {cfg.val_fraction:g}"
    elif not 0.5 * cfg.val_fraction <= share <= 1.5 * cfg.val_fraction:
        why = f"a hash split would give {share:.1%} of the text to val, not {cfg.val_fraction:.0%}"
    else:
        return SplitConfig("hash", cfg.val_fraction, f"{n_docs} documents, {val_docs} to val by hash")
    return SplitConfig("tail", cfg.val_fraction, why + "; the last part of each source is val")


def empty_split_error(name: str, n_docs: int, split: SplitConfig) -> UserError:
    return UserError(
        f"the {name} split is empty ({n_docs} documents, --split {split.mode}, --val-fraction "
        f"{split.val_fraction}); use --split auto (or tail), or add text"
    )


def source_chars(out_dir: Path) -> dict[str, int]:
    report = read_json(out_dir / "clean" / "clean_report.json", "`lmforge data clean`")
    return {name: s["chars_out"] for name, s in report["per_source"].items()}


def split_docs(out_dir: Path, cfg: SplitConfig) -> Iterator[tuple[str, str, str]]:
    chars = source_chars(out_dir) if cfg.mode == "tail" else None
    return iter_split(read_docs(out_dir / "clean", "`lmforge data clean`"), cfg, chars)
