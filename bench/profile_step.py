"""Where a training step's time goes: the optimizer step of lmforge's GPT-2-style model, profiled.

Issue 15 asks why the large shape's bf16 step reaches only a quarter of the bf16 matmul ceiling. This
runs bench_train.py's model and shape (default: large, 6 x 384, context 256, batch 16) under
torch.profiler for --steps steps after a warm-up, with lmforge's kernels as its fast-path probe
chose them and the allocator as training sets it, and sorts every ATen op's own time into:

  matmul       mm, addmm, bmm, baddbmm (the work the ceiling measures)
  attention    softmax and its backward, SDPA's own kernels
  casts        _to_copy / copy_ (bf16 autocast's conversions, and layout copies)
  elementwise  everything else per element: GELU, LayerNorm/RMSNorm, adds, muls, masks, cross-entropy
  optimizer    the AdamW step's foreach ops and the gradient clipping

then prints ms per step and share of each, the matmul FLOP/s actually reached inside the matmul
calls, and what the whole step's utilisation would be if everything but the matmuls took no time.

    python bench/profile_step.py [--shape large] [--dtype bf16] [--attn math] [--steps 5] [--threads 0]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_train import SHAPES, build  # noqa: E402
from lmforge import hardware  # noqa: E402
from lmforge.config import TrainConfig  # noqa: E402
from lmforge.models import fastpaths  # noqa: E402

MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear"}
ATTENTION = ("softmax", "scaled_dot_product", "flash_attention")
CASTS = {"aten::_to_copy", "aten::copy_", "aten::to", "aten::clone", "aten::contiguous"}


def category(name: str, in_optimizer: bool) -> str:
    if in_optimizer:
        return "optimizer"
    if name in MATMUL:
        return "matmul"
    if any(a in name for a in ATTENTION):
        return "attention"
    if name in CASTS:
        return "casts"
    return "elementwise"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="large", choices=list(SHAPES))
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument(
        "--attn", default="math", choices=["math", "sdpa"], help="math: the bf16 probe's pick here"
    )
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="0 = physical cores")
    args = ap.parse_args()
    hardware.setup_threads(args.threads)
    hardware.reuse_freed_memory()
    s = SHAPES[args.shape]
    dtype = "bfloat16" if args.dtype == "bf16" else "float32"
    model, step_fn, flops_per_token = build("lmforge-math" if args.attn == "math" else "lmforge", s)
    train_cfg = TrainConfig(batch_size=s["batch"], dtype=dtype, threads=torch.get_num_threads())
    choice = fastpaths.setup(model.config, train_cfg, torch.device("cpu"))  # the kernels training would run
    print(choice.line())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16" else contextlib.nullcontext()
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, s["vocab"], (s["batch"], s["seq_len"]), generator=gen)
    y = torch.randint(0, s["vocab"], (s["batch"], s["seq_len"]), generator=gen)

    def step() -> None:
        with amp:
            loss = step_fn(x, y)
        loss.backward()
        with torch.profiler.record_function("## optimizer ##"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    ceiling = hardware.measure_peak_flops(torch.device("cpu"), dtype, size=2048)  # the ceiling
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    events = prof.events()
    optimizer_spans = [(e.time_range.start, e.time_range.end) for e in events if e.name == "## optimizer ##"]

    def in_optimizer(e) -> bool:
        return any(a <= e.time_range.start and e.time_range.end <= b for a, b in optimizer_spans)

    totals: dict[str, float] = {}
    for e in events:
        if e.name.startswith("aten::") or e.name.startswith("Optimizer"):
            key = category(e.name, in_optimizer(e))
            totals[key] = totals.get(key, 0.0) + e.self_cpu_time_total / 1e3  # ms
    total = sum(totals.values())
    tokens = s["batch"] * s["seq_len"]
    step_flops = flops_per_token * tokens  # flops_per_token counts forward and backward (6N + attention)
    per_step = {k: v / args.steps for k, v in totals.items()}
    print(f"\nmachine: {hardware.cpu_description()}; torch {torch.__version__}; "
          f"{torch.get_num_threads()} threads; load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"shape {args.shape} {s}, {args.dtype}; {args.steps} profiled steps; "
          f"{dtype} matmul ceiling {ceiling / 1e9:.0f} GFLOP/s\n")  # fmt: skip
    print("| where | ms per step | share |")
    print("|---|---|---|")
    for key in ("matmul", "attention", "elementwise", "casts", "optimizer"):
        ms = per_step.get(key, 0.0)
        print(f"| {key} | {ms:.1f} | {ms / (total / args.steps):.0%} |")
    step_ms = total / args.steps
    print(f"| all ATen ops | {step_ms:.1f} | 100% |")
    matmul_rate = step_flops / (per_step.get("matmul", 1e-9) / 1e3)
    print(f"\nmodel FLOPs per step {step_flops / 1e9:.1f} G: the step reaches "
          f"{step_flops / (step_ms / 1e3) / ceiling:.0%} of the {dtype} ceiling; inside the matmul calls "
          f"{matmul_rate / ceiling:.0%} (the step's FLOPs are nearly all matmul FLOPs)")  # fmt: skip


if __name__ == "__main__":
    main()
