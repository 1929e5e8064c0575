"""The data pipeline: collect -> clean -> tokenizer -> encode, each step a function on DATA_DIR.

`prepare` runs all four in one streaming pass per step; each step also runs alone on the previous
step's output, so a user can re-clean without re-downloading or retrain the tokenizer without
re-cleaning:
  collect    sources        -> raw/docs_NNNNN.jsonl + sources.json
  clean      raw/ (or the collect stream, in prepare) -> clean/docs_NNNNN.jsonl + clean/clean_report.json
  tokenizer  clean/ (train split only, so compression on val is honest) -> tokenizer/
  encode     clean/ + tokenizer/ -> shards/{train,val}_NNNNN.bin + shards/manifest.json

Memory stays bounded: documents stream from disk one at a time (sources cut any document longer than
`max_doc_chars`), encoding works on batches of a few MB, and shards are written as they fill.

The train/validation split (`SplitConfig`: auto, hash or tail) is split.py's.

Sources and mixture weights: every shard holds documents of one source, and the manifest lists, per
split, each source's token count and shard names next to the weights from sources.json. The batch
sampler draws each row from a source with probability proportional to its weight
(`shards.open_split_by_source`). Shard names stay `{split}_NNNNN.bin` as the spec says; the
source is in each manifest entry.

Both cores: BPE encoding uses tiktoken's batch encoder on a thread pool. tiktoken releases the GIL
while encoding, so threads scale across cores without copying the text to worker processes (which
would cost more than the encoding itself at ~15 MB/s per core). The `tokenizers` fallback engine
parallelises internally; the char engine is a vectorised numpy lookup.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lmforge.data.clean import CleanConfig, Cleaner
from lmforge.data.files import DocWriter, atomic_dir, read_docs, read_json, write_json
from lmforge.data.shards import MANIFEST, ShardWriter, dtype_for
from lmforge.data.sources import CollectConfig, Collector, SourceSpec
from lmforge.data.split import (
    MIN_CORPUS_CHARS,
    SplitConfig,
    empty_split_error,
    resolve_split,
    split_docs,
    too_small_error,
)
from lmforge.data.tokenizer import load_tokenizer, train_tokenizer
from lmforge.errors import UserError

BATCH_CHARS = 4_000_000  # characters per encode batch


@dataclass
class TokenizerConfig:
    kind: str = "bpe"  # bpe | char
    vocab_size: int | None = None  # including specials; None: 4096 for bpe, the alphabet for char


@dataclass
class PrepareConfig:
    collect: CollectConfig = field(default_factory=CollectConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    shard_tokens: int = 1 << 26  # tokens per shard before starting the next one


def _timing(seconds: float, n_bytes: int) -> dict:
    return {
        "seconds": round(seconds, 3),
        "mb": round(n_bytes / 1e6, 3),
        "mb_per_s": round(n_bytes / 1e6 / max(seconds, 1e-9), 2),
    }


# --- collect ------------------------------------------------------------------------------------
def collect(sources: list[SourceSpec], cfg: CollectConfig, out_dir: Path) -> dict:
    """Read the sources into DATA_DIR/raw/ and write sources.json."""
    t0, n_bytes = time.perf_counter(), 0
    collector = Collector(sources, cfg)
    with atomic_dir(Path(out_dir) / "raw") as tmp:
        writer = DocWriter(tmp)
        for text, name in collector:
            writer.write(text, name)
            n_bytes += len(text.encode("utf-8", "surrogatepass"))
        writer.close()
    write_json(Path(out_dir) / "sources.json", collector.sources_json())
    return {"sources": collector.sources_json(), **_timing(time.perf_counter() - t0, n_bytes)}


# --- clean --------------------------------------------------------------------------------------
def code_sources(sources: dict[str, dict]) -> set[str]:
    """Names of the sources (from sources.json) that read files with --ext: cleaned as code."""
    return {name for name, s in sources.items() if s.get("code_files")}


def clean(
    out_dir: Path,
    cfg: CleanConfig,
    docs: Iterable[tuple[str, str]] | None = None,
    code: set[str] | None = None,
) -> dict:
    """Clean `docs` (default: DATA_DIR/raw/) into DATA_DIR/clean/; returns clean_report.json.

    `code` names the sources cleaned with the code profile (default: from DATA_DIR/sources.json)."""
    out_dir = Path(out_dir)
    if docs is None:
        docs = read_docs(out_dir / "raw", "`lmforge data collect`")
        sources = out_dir / "sources.json"
        code = code_sources(read_json(sources, "`lmforge data collect`")) if sources.exists() else set()
    cleaner = Cleaner(cfg, code or set())
    t_clean, n_bytes = 0.0, 0
    with atomic_dir(out_dir / "clean") as tmp:
        writer = DocWriter(tmp)
        for text, source in docs:
            t0 = time.perf_counter()
            n_bytes += len(text.encode("utf-8", "surrogatepass"))
            out = cleaner(text, source)
            if out is not None:
                writer.write(out, source)
            t_clean += time.perf_counter() - t0
        writer.close()
        if cleaner.chars_in < MIN_CORPUS_CHARS:
            raise too_small_error(cleaner.chars_in, "")
        cleaner.check_not_empty()
        report = cleaner.report() | _timing(t_clean, n_bytes)
        write_json(tmp / "clean_report.json", report)
    return report


# --- tokenizer ----------------------------------------------------------------------------------
def build_tokenizer(out_dir: Path, cfg: TokenizerConfig, split: SplitConfig) -> dict:
    """Train on the train split of DATA_DIR/clean/; report bytes/token on (up to 2 MB of) val text."""
    out_dir = Path(out_dir)
    split = resolve_split(out_dir, split)
    t0, n_bytes = time.perf_counter(), [0]

    n_docs = {"train": 0, "val": 0}

    def train_texts() -> Iterator[str]:
        for name, text, _ in split_docs(out_dir, split):
            n_docs[name] += 1
            if name == "train":
                n_bytes[0] += len(text.encode("utf-8", "surrogatepass"))
                yield text
        if not n_docs["train"]:
            raise empty_split_error("train", n_docs["val"], split)

    tok = train_tokenizer(train_texts(), cfg.kind, cfg.vocab_size, out_dir / "tokenizer")
    seconds = time.perf_counter() - t0
    sample, sample_bytes = [], 0
    for name, text, _ in split_docs(out_dir, split):
        if name == "val" and sample_bytes < 2_000_000:
            sample.append(text[:500_000])
            sample_bytes += len(sample[-1].encode("utf-8", "surrogatepass"))
    n_tokens = sum(map(len, tok.encode_batch(sample)))
    return {
        "kind": tok.kind,
        "vocab_size": tok.vocab_size,
        "eot_id": tok.eot_id,
        "hash": tok.hash,
        "engine": tok.engine,
        "val_bytes_per_token": round(sample_bytes / n_tokens, 4) if n_tokens else None,
        **_timing(seconds, n_bytes[0]),
    }


# --- encode -------------------------------------------------------------------------------------
def _batches(docs: Iterable[tuple[str, str, str]]) -> Iterator[list[tuple[str, str, str]]]:
    batch, chars = [], 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc[1])
        if chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def encode(out_dir: Path, split: SplitConfig, shard_tokens: int = 1 << 26) -> dict:
    """Encode DATA_DIR/clean/ into DATA_DIR/shards/ (one source per shard) with manifest.json."""
    out_dir = Path(out_dir)
    split = resolve_split(out_dir, split)
    tok = load_tokenizer(out_dir / "tokenizer")
    dtype = dtype_for(tok.vocab_size)
    sources_path = out_dir / "sources.json"
    weights = (
        {n: s["weight"] for n, s in read_json(sources_path, "collect").items()}
        if sources_path.exists()
        else {}
    )
    t0, n_bytes = time.perf_counter(), 0
    splits = {s: {"tokens": 0, "bytes": 0, "docs": 0, "shards": [], "sources": {}} for s in ("train", "val")}
    eot = np.array([tok.eot_id], dtype=np.int64)
    with atomic_dir(out_dir / "shards") as tmp:
        writers: dict[tuple[str, str], ShardWriter] = {}
        counters = {"train": 0, "val": 0}

        def finish(key: tuple[str, str]) -> None:
            entry = writers.pop(key).close() | {"source": key[1]}
            entry.update(shard_stats.pop(key))
            splits[key[0]]["shards"].append(entry)
            splits[key[0]]["sources"][key[1]]["shards"].append(entry["name"])

        shard_stats: dict[tuple[str, str], dict[str, int]] = {}
        for batch in _batches(split_docs(out_dir, split)):
            ids = tok.encode_batch([text for _, text, _ in batch])
            for (name, text, source), doc_ids in zip(batch, ids, strict=True):
                key = (name, source)
                if key not in writers:
                    writers[key] = ShardWriter(tmp / f"{name}_{counters[name]:05d}.bin", dtype)
                    counters[name] += 1
                    shard_stats[key] = {"bytes": 0, "docs": 0}
                n = len(text.encode("utf-8", "surrogatepass"))
                writers[key].write(eot)
                writers[key].write(np.asarray(doc_ids, dtype=dtype))
                per_source = splits[name]["sources"].setdefault(
                    source, {"tokens": 0, "bytes": 0, "docs": 0, "shards": []}
                )
                for stats in (splits[name], per_source):
                    stats["tokens"] += len(doc_ids) + 1
                    stats["bytes"] += n
                    stats["docs"] += 1
                shard_stats[key]["bytes"] += n
                shard_stats[key]["docs"] += 1
                n_bytes += n
                if writers[key].tokens >= shard_tokens:
                    finish(key)
        for key in list(writers):
            finish(key)
        for name, s in splits.items():
            if not s["docs"]:
                raise empty_split_error(name, splits["train"]["docs"] + splits["val"]["docs"], split)
        names = {src for s in splits.values() for src in s["sources"]}
        manifest = {
            "format_version": 1,
            "tokenizer_hash": tok.hash,
            "vocab_size": tok.vocab_size,
            "eot_id": tok.eot_id,
            "dtype": dtype.name,
            "split": asdict(split),
            "sources": {name: {"weight": weights.get(name, 1.0)} for name in sorted(names)},
            "splits": splits,
        }  # fmt: skip
        write_json(tmp / MANIFEST, manifest)
    seconds = time.perf_counter() - t0
    return {
        "engine": tok.engine,
        "dtype": dtype.name,
        "tokens": {s: v["tokens"] for s, v in splits.items()},
        "bytes": {s: v["bytes"] for s, v in splits.items()},
        "bytes_per_token": {
            s: round(v["bytes"] / v["tokens"], 4) if v["tokens"] else None for s, v in splits.items()
        },
        "shards": {s: len(v["shards"]) for s, v in splits.items()},
        "per_source": {s: {src: v["tokens"] for src, v in d["sources"].items()} for s, d in splits.items()},
        **_timing(seconds, n_bytes),
    }


# --- all four -----------------------------------------------------------------------------------
DATA_MARKERS = ("prepare_report.json", "sources.json", "raw", "clean", "tokenizer", "shards")
RUN_MARKERS = ("run.json", "config.json", "ckpt", "metrics.jsonl")  # what a training run folder holds


def _owned_hidden(name: str) -> bool:
    return name in (".lock", ".DS_Store") or name.startswith(".tmp-")


def check_out(out_dir: Path) -> None:
    """--out must be a new folder, an empty one, or an earlier data folder (which prepare replaces)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(
            f"--out '{out_dir}' is a file; pass a folder path for --out (e.g. {out_dir.stem}_data)"
        )
    here = Path.cwd().resolve()
    if out_dir.resolve() == here or out_dir.resolve() in here.parents:
        raise UserError(
            f"--out '{out_dir}' is the current folder (or holds it); prepare replaces --out whole: "
            "pass a new folder as --out (e.g. --out data)"
        )
    if out_dir.is_dir():
        # prepare replaces the whole folder, so every entry in it must be one prepare itself wrote:
        # a run folder also has a tokenizer/, and one shared name must not make it look like data.
        # Hidden entries count too (a `.git/` must not vanish with the old data); only the lock, the
        # temporaries and Finder's litter are prepare's to drop.
        entries = [p.name for p in out_dir.iterdir() if not _owned_hidden(p.name)]
        foreign = sorted(name for name in entries if name not in DATA_MARKERS)
        if any(name in RUN_MARKERS for name in entries):
            raise UserError(
                f"--out '{out_dir}' is a training run folder, not a data folder; prepare would replace "
                f"its checkpoints: pass a new or empty folder as --out (e.g. {out_dir.name}_data)"
            )
        if foreign:
            raise UserError(
                f"--out '{out_dir}' already holds files that are not an lmforge data folder "
                f"({', '.join(foreign[:3])}); pass a new or empty folder as --out"
            )


def check_sources_outside(sources: list[SourceSpec], out_dir: Path) -> None:
    """A source folder that is --out (or inside it) would be read back as its own input."""
    out = out_dir.resolve()
    for src in sources:
        path = Path(src.spec)
        if not path.exists():
            continue
        path = path.resolve()
        if path == out or out in path.parents:
            raise UserError(
                f"--source '{src.spec}' is inside --out '{out_dir}', which prepare replaces; "
                "pass the text the data folder was made from as --source, or another --out"
            )


def prepare(sources: list[SourceSpec], out_dir: Path, cfg: PrepareConfig) -> dict:
    """collect -> clean -> tokenizer -> encode into DATA_DIR; writes and returns prepare_report.json.

    Everything is built in a temporary sibling folder that replaces DATA_DIR only when all four steps
    succeeded: after an error or a kill, DATA_DIR is exactly what it was before (an earlier complete
    data folder, or nothing) -- never a mix of two runs."""
    out_dir = Path(out_dir)
    check_out(out_dir)
    check_sources_outside(sources, out_dir)
    with atomic_dir(out_dir) as tmp:
        report = _prepare_into(sources, tmp, cfg)
        report["out"] = str(out_dir)
        write_json(tmp / "prepare_report.json", report)
    return report


def _prepare_into(sources: list[SourceSpec], out_dir: Path, cfg: PrepareConfig) -> dict:
    t_start = time.perf_counter()
    collector = Collector(sources, cfg.collect)
    collect_bytes = [0]

    def collected() -> Iterator[tuple[str, str]]:
        for text, name in collector:
            collect_bytes[0] += len(text.encode("utf-8", "surrogatepass"))
            yield text, name

    code = {src.name for src in collector.sources if src.ext}
    clean_report = clean(out_dir, cfg.clean, collected(), code)
    write_json(out_dir / "sources.json", collector.sources_json())
    t_collect = time.perf_counter() - t_start - clean_report["seconds"]
    split = resolve_split(out_dir, cfg.split)
    tok_report = build_tokenizer(out_dir, cfg.tokenizer, split)
    enc_report = encode(out_dir, split, cfg.shard_tokens)
    return {
        "out": str(out_dir),
        "sources": collector.sources_json(),
        "split": asdict(split),
        "steps": {
            "collect": {
                "docs": sum(s.n_docs for s in collector.stats.values()),
                **_timing(t_collect, collect_bytes[0]),
            },
            "clean": {
                "docs_in": clean_report["docs_in"],
                "docs_out": clean_report["docs_out"],
                "dropped": {s["name"]: s["dropped"] for s in clean_report["steps"] if s["dropped"]},
                "dropped_chars": {
                    s["name"]: s["chars_removed"] for s in clean_report["steps"] if s["dropped"]
                },
                "chars_in": clean_report["chars_in"],
                "chars_out": clean_report["chars_out"],
                "changed": {s["name"]: s["changed"] for s in clean_report["steps"] if s["changed"]},
                "near_threshold": cfg.clean.near_threshold,
                "code_sources": sorted(code),
                **{k: clean_report[k] for k in ("seconds", "mb", "mb_per_s")},
            },
            "tokenizer": tok_report,
            "encode": enc_report,
        },
        "tokens": enc_report["tokens"],
        "bytes_per_token": enc_report["bytes_per_token"],
        "seconds": round(time.perf_counter() - t_start, 3),
    }
