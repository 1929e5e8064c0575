"""What `train.dtype=auto` would choose for each preset on this machine, and the timings behind it.

For every preset (its own model, batch and threads; the data it trains on: Tiny Shakespeare characters
for the shakespeare-char and gpt2-shakespeare presets, the built-in corpus in BPE for the others) it
runs train/precision.py's probe -- the run's own training step in float32 and under bf16 autocast,
alternating rounds -- --repeats times, and prints tokens/s of each (median, min-max), the ratio and the
choice `auto` makes (bfloat16 at >= precision.GAIN; the presets its rules decide without timing --
narrow models -- are timed too, to show whether the rule holds here). Nothing is cached: every repeat
is a fresh probe.

    python bench/bench_precision.py [--repeats 3] [--presets demo,gpt2-shakespeare]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lmforge import hardware  # noqa: E402
from lmforge.config import load_config  # noqa: E402
from lmforge.presets import path as preset_path  # noqa: E402
from lmforge.train import precision  # noqa: E402
from lmforge.train.data import open_data  # noqa: E402

WORK = ROOT / "bench" / ".work"
CHAR = ("shakespeare-char", "shakespeare-char-speedrun", "shakespeare-char-quality", "gpt2-shakespeare")
PRESETS = (
    "gpt-tiny",
    "shakespeare-char-speedrun",
    "shakespeare-char-quality",
    "gpt2-shakespeare",
    "gpt-small",
    "demo",
)


def data_for(preset: str) -> Path:
    """bench_levers.py's Tiny Shakespeare characters, or the built-in corpus in BPE (made if missing)."""
    if preset in CHAR:
        folder = WORK / "tsc"
        source = ["--source", str(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"), "--tokenizer",
                  "char", "--split", "tail"]  # fmt: skip
    else:
        folder, source = WORK / "shk", ["--source", "shakespeare"]
    if not (folder / "shards" / "manifest.json").is_file():
        command = [sys.executable, "-m", "lmforge", "data", "prepare", *source, "--out", str(folder)]
        subprocess.run(command, check=True, capture_output=True)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"CPU: {hardware.cpu_description()}; torch {torch.__version__}\n")
    print("| preset | model | batch | float32 tok/s | bfloat16 tok/s | bf16 / fp32 | auto chooses |")
    print("|---|---|---|---|---|---|---|")
    cpu = torch.device("cpu")
    for preset in args.presets.split(","):
        data = open_data(data_for(preset), {})
        config = load_config(preset_path(preset), ["train.dtype=auto"], data.tokenizer.vocab_size)
        m = config.model
        shape = f"{m.n_layer} x {m.n_embd}, context {m.seq_len}"
        ruled = precision.without_timing(config, cpu)  # timed anyway: does the rule hold here?
        runs = [precision.probe(config, data, cpu) for _ in range(args.repeats)]
        fp32 = [r["float32"] for r in runs]
        bf16 = [r["bfloat16"] for r in runs]
        ratio = statistics.median(b / f for b, f in zip(bf16, fp32, strict=True))

        def cell(values: list[float]) -> str:
            return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"

        choice = (
            f"{ruled.dtype} ({ruled.source})"
            if ruled
            else "bfloat16"
            if ratio >= precision.GAIN
            else "float32"
        )
        print(f"| {preset} | {shape} | {config.train.batch_size} | {cell(fp32)} | {cell(bf16)} | "
              f"{ratio:.2f}x | {choice} |")  # fmt: skip


if __name__ == "__main__":
    main()
