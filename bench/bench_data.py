"""Data-stage benchmark: full `prepare` on the built-in corpus, and encoders side by side.

    .venv/bin/python bench/bench_data.py [--reps 3] [--encode-reps 5] [--source shakespeare]

1. `prepare` (collect -> clean -> tokenizer -> encode, BPE vocab 4096) `--reps` times into fresh
   folders: MB/s of each step, median and spread (min..max).
2. Encoding the same cleaned text with the same vocabulary: `tokenizers` encode_batch (its own
   thread pool) vs our engine (tiktoken on a thread pool) vs tiktoken on one thread; the ids must be
   identical, and the speed-up over encode_batch is the target (>= 3x).
Results are printed and written to the "## Data stage" section of BENCHMARKS.md (other sections
are left alone). The built-in corpus comes from the cache ($LMFORGE_CACHE or ~/.cache/lmforge),
downloaded once if missing.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lmforge.data.builtin import default_cache_dir, ensure_cached
from lmforge.data.files import read_docs
from lmforge.data.prepare import PrepareConfig, TokenizerConfig, prepare
from lmforge.data.sources import CollectConfig, SourceSpec
from lmforge.data.tokenizer import load_tokenizer
from lmforge.hardware import cpu_description

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("collect", "clean", "tokenizer", "encode")


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = cpu_description()  # the model and its ISA flags, as every benchmark here prints them
    return f"{cpu}, {cores} cores usable, Python {platform.python_version()}, {platform.system()}"


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}..{max(values):.2f})"


def bench_prepare(source: str, reps: int, cache: Path) -> tuple[list[dict], list[Path]]:
    reports, folders = [], []
    for _ in range(reps):
        folders.append(Path(tempfile.mkdtemp(prefix="lmforge-bench-")))
        cfg = PrepareConfig(collect=CollectConfig(cache_dir=cache), tokenizer=TokenizerConfig("bpe", 4096))
        reports.append(prepare([SourceSpec(source)], folders[-1], cfg))
    return reports, folders


def bench_encode(data_dir: Path, reps: int) -> dict[str, list[float]]:
    tok = load_tokenizer(data_dir / "tokenizer")
    texts = [text for text, _ in read_docs(data_dir / "clean", "prepare")]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    reference = tok.encode_with_tokenizers(texts)
    assert tok.engine == "tiktoken", f"engine fell back to {tok.engine}"
    assert tok.encode_batch(texts) == reference, "ids differ from tokenizers"
    assert [tok._tiktoken.encode_ordinary(t) for t in texts] == reference
    runs = {
        "tokenizers encode_batch": lambda: tok.encode_with_tokenizers(texts),
        f"lmforge ({tok.engine}, {tok.num_threads} threads)": lambda: tok.encode_batch(texts),
        "tiktoken, 1 thread": lambda: [tok._tiktoken.encode_ordinary(t) for t in texts],
    }
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            rates[name].append(mb / (time.perf_counter() - t0))
    return rates


def write_section(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    doc = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Data stage\n.*?(?=^## |\Z)", re.S | re.M)
    doc = pattern.sub(lambda _: text, doc) if pattern.search(doc) else doc.rstrip("\n") + "\n\n" + text
    path.write_text(doc, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="full prepare repetitions")
    parser.add_argument("--encode-reps", type=int, default=5, help="encode comparison repetitions")
    parser.add_argument("--source", default="shakespeare")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()
    cache = default_cache_dir(os.environ)
    if args.source.startswith("shakespeare"):
        ensure_cached(cache)  # download once, outside the timed runs
    reports, folders = bench_prepare(args.source, args.reps, cache)
    try:
        rates = bench_encode(folders[-1], args.encode_reps)
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
    r0 = reports[0]
    command = " ".join([".venv/bin/python", "bench/bench_data.py", *map(shlex.quote, sys.argv[1:])])
    lines = [
        "## Data stage",
        "",
        f"Machine: {machine()}.  ",
        f"Command: `{command}`  ",
        f"Date: {time.strftime('%Y-%m-%d')}. Figures: median (min..max) over the repetitions.",
        "",
        f"### `prepare --source {args.source}` (BPE vocab 4096), {args.reps} runs",
        f"{r0['steps']['collect']['mb']:.2f} MB raw, {r0['steps']['clean']['docs_out']} documents, "
        f"train {r0['tokens']['train']:,} / val {r0['tokens']['val']:,} tokens, "
        f"{r0['bytes_per_token']['val']} bytes/token on val.",
        "",
        "| step | MB/s | seconds |",
        "|---|---|---|",
    ]
    for step in STEPS:
        mbs = [r["steps"][step]["mb_per_s"] for r in reports]
        secs = [r["steps"][step]["seconds"] for r in reports]
        lines.append(f"| {step} | {summary(mbs)} | {summary(secs)} |")
    lines.append(f"| **total** | | {summary([r['seconds'] for r in reports])} |")
    base = statistics.median(rates["tokenizers encode_batch"])
    lines += [
        "",
        f"### Encoding the cleaned corpus, same text and vocabulary, ids identical, {args.encode_reps} runs",
        "",
        "| engine | MB/s | vs tokenizers encode_batch |",
        "|---|---|---|",
    ]
    for name, values in rates.items():
        lines.append(f"| {name} | {summary(values)} | {statistics.median(values) / base:.1f}x |")
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        write_section(section)


if __name__ == "__main__":
    main()
