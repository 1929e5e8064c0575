"""The training speeds `train --auto` measured on this machine, kept for its next run.

Measuring every candidate took 4-5 s of a 60 s budget on 2 cores (BENCHMARKS.md, "--auto"), about
0.03 nats at that budget on BPE. A shape's speed on one machine (CPU model and flags, torch, threads,
the whole model config, batch, precision) changes little from one run to the next except by how busy
the machine is, so the next --auto run times one shape afresh, scales the cached speeds of the others
by what that shape measured now against its cached figure, and times again only the shapes close
enough to the winner for a slowed figure to matter (tune/auto.py). The cache is a JSON file beside the
fast-path verdicts (`auto_speeds.json` under `$LMFORGE_CACHE`, else `$XDG_CACHE_HOME/lmforge`, else
`~/.cache/lmforge`); a damaged or unwritable one costs a full measurement, never the run, and
`LMFORGE_AUTO_SPEEDS=off` measures everything every time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from lmforge import io
from lmforge.data.builtin import default_cache_dir

FILE_NAME = "auto_speeds.json"
FORMAT = 1
MAX_ENTRIES = 400  # the newest kept: a few corpora x 7 shapes x precisions x thread counts


def cache_file(environ: Mapping[str, str] | None = None) -> Path | None:
    """The cache's path; None when switched off (LMFORGE_AUTO_SPEEDS=off)."""
    environ = os.environ if environ is None else environ
    if environ.get("LMFORGE_AUTO_SPEEDS", "").lower() == "off":
        return None
    return default_cache_dir(environ) / FILE_NAME


def key(config) -> str:
    """What a training step's speed depends on: the machine, threads, model, batch (train/precision.py
    `cache_key`) and accumulation."""
    from lmforge.train.precision import cache_key

    return f"{cache_key(config)} | batch_tokens {config.train.batch_tokens} | auto speed"


def read(path: Path | None) -> dict[str, dict[str, float]]:
    """{key: {dtype: tokens/s}}; {} for a missing, damaged or other-format file."""
    out = {}
    for name, entry in io.read_cache_entries(path, FORMAT, "--auto's speed cache").items():
        speeds = entry.get("speeds") if isinstance(entry, dict) else None
        if isinstance(speeds, dict) and all(isinstance(v, int | float) and v > 0 for v in speeds.values()):
            out[name] = {str(d): float(v) for d, v in speeds.items()}
    return out


def write(path: Path | None, fresh: dict[str, dict[str, float]]) -> None:
    """Merge `fresh` ({key: {dtype: tokens/s}} measured now) into the cache, atomically; a failed write
    is a warning (the next run measures again), never an error."""
    if path is None or not fresh:
        return
    entries = io.read_cache_entries(path, FORMAT, "--auto's speed cache")
    now = time.time()
    for name, speeds in fresh.items():
        old = entries.get(name, {}).get("speeds", {}) if isinstance(entries.get(name), dict) else {}
        entries[name] = {"speeds": {**old, **{d: round(v, 1) for d, v in speeds.items()}}, "when": now}
    newest = sorted(entries.items(), key=lambda kv: kv[1].get("when", 0) if isinstance(kv[1], dict) else 0)
    io.write_cache_entries(path, FORMAT, dict(newest[-MAX_ENTRIES:]), "--auto's speeds")
