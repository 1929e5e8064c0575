"""What each kind of op in a large-shape training step costs alone, in bf16 and in fp32.

The profiler (bench/profile_step.py) sorts a step's time by kind, but on a CPU whose matrix units make
bf16 matmuls several times faster than fp32 (AMX: 6x on the Intel Xeon of BENCHMARKS.md) the question
is which single ops now outweigh the matmuls they sit between -- and recording shapes under the
profiler slows the step down too much to say. This times each op of bench_train.py's large shape
(GPT-2 style, 6 x 384, context 256, batch 16: 4,096 tokens per micro-step) alone, at its real shape,
forward and backward as plain ATen calls, and prints ms per call, the calls a step makes, ms per step,
and the sum beside one real step timed in the same process (forward, backward, clipping, AdamW).

    python bench/op_costs.py [--rounds 15] [--threads 0]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_train import SHAPES, build, time_steps  # noqa: E402
from lmforge import hardware  # noqa: E402
from lmforge.config import TrainConfig  # noqa: E402
from lmforge.models import fastpaths  # noqa: E402

SHAPE = SHAPES["large"]


def ops(dtype: torch.dtype) -> list[tuple[str, str, int, object]]:
    """(op, shape, calls per step, zero-argument function) for one step of the large shape."""
    s = SHAPE
    m, c, heads, t = s["batch"] * s["seq_len"], s["n_embd"], s["batch"] * s["n_head"], s["seq_len"]
    hd, layers = c // s["n_head"], s["n_layer"]
    r = torch.randn
    x, x4 = r(m, c, dtype=dtype), r(m, 4 * c, dtype=dtype)
    w_fc, w_proj, w_qkv = r(c, 4 * c, dtype=dtype), r(4 * c, c, dtype=dtype), r(c, 3 * c, dtype=dtype)
    scores = r(heads, t, t, dtype=dtype)
    probs = torch.softmax(scores, -1)
    q, kt = r(heads, t, hd, dtype=dtype), r(heads, hd, t, dtype=dtype)
    bmm = torch.bmm
    xf = r(m, c)  # LayerNorm runs in fp32 under autocast
    ln_w, ln_b = torch.ones(c), torch.zeros(c)
    ln_out, mean, rstd = torch.native_layer_norm(xf, (c,), ln_w, ln_b, 1e-5)
    other = torch.float32 if dtype == torch.bfloat16 else torch.bfloat16
    gelu_bwd = torch.ops.aten.gelu_backward
    w_out = r(c, c, dtype=dtype)
    # Each linear layer runs three matmuls a step (forward, input grad, weight grad); a row stands for
    # the calls of its shape: fc's forward and proj's input grad are both (m x c) @ (c x 4c), and so on.
    # qkv's and the attention output's backward matmuls are counted at their forward's time (same FLOPs).
    return [
        ("matmul: fc fwd, proj input grad", f"{m}x{c} @ {c}x{4 * c}", 2 * layers, lambda: x @ w_fc),
        ("matmul: proj fwd, fc input grad", f"{m}x{4 * c} @ {4 * c}x{c}", 2 * layers, lambda: x4 @ w_proj),
        ("matmul: fc and proj weight grads", f"{c}x{m} @ {m}x{4 * c}", 2 * layers, lambda: x.t() @ x4),
        ("matmul: qkv, fwd and bwd", f"{m}x{c} @ {c}x{3 * c}", 3 * layers, lambda: x @ w_qkv),
        ("matmul: attention output, fwd and bwd", f"{m}x{c} @ {c}x{c}", 3 * layers, lambda: x @ w_out),
        ("attention: q k^T and dO v^T", f"{heads}x{t}x{hd} @ {hd}x{t}", 2 * layers, lambda: bmm(q, kt)),
        (
            "attention: p v, dv, dq, dk",
            f"{heads}x{t}x{t} @ {t}x{hd}",
            4 * layers,
            lambda: bmm(probs, q),
        ),
        ("GELU tanh (fwd)", f"{m}x{4 * c}", layers, lambda: F.gelu(x4, approximate="tanh")),
        ("GELU tanh (bwd)", f"{m}x{4 * c}", layers, lambda: gelu_bwd(x4, x4, approximate="tanh")),
        ("GELU erf (fwd), for comparison", f"{m}x{4 * c}", 0, lambda: F.gelu(x4)),
        ("softmax (fwd)", f"{heads}x{t}x{t}", layers, lambda: torch.softmax(scores, -1)),
        (
            "softmax (bwd)",
            f"{heads}x{t}x{t}",
            layers,
            lambda: torch.ops.aten._softmax_backward_data(probs, probs, -1, dtype),
        ),
        ("LayerNorm fp32 (fwd)", f"{m}x{c}", 2 * layers + 1, lambda: F.layer_norm(xf, (c,), ln_w, ln_b)),
        (
            "LayerNorm fp32 (bwd)",
            f"{m}x{c}",
            2 * layers + 1,
            lambda: torch.ops.aten.native_layer_norm_backward(
                ln_out, xf, (c,), mean, rstd, ln_w, ln_b, (True, True, True)
            ),
        ),
        ("cast to the other dtype", f"{m}x{4 * c}", layers, lambda: x4.to(other)),
        ("cast to the other dtype", f"{m}x{c}", 4 * layers, lambda: x.to(other)),
        ("residual add", f"{m}x{c}", 2 * layers, lambda: x + x),
    ]


def step_ms(dtype: str, rounds: int) -> dict[str, float]:
    """One whole optimizer step of the lmforge model at the shape (plain attention, the kernels the
    fast-path probe picks here), median ms of each part and of the whole."""
    model, step_fn, _ = build("lmforge-math", SHAPE)
    train_cfg = TrainConfig(batch_size=SHAPE["batch"], dtype="bfloat16" if dtype == "bf16" else "float32")
    fastpaths.setup(model.config, train_cfg, torch.device("cpu"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, SHAPE["vocab"], (SHAPE["batch"], SHAPE["seq_len"]), generator=gen)
    parts: dict[str, list[float]] = {"forward": [], "backward": [], "clip": [], "AdamW": [], "whole": []}
    for i in range(max(5, rounds // 3) + 2):
        marks = [time.perf_counter()]
        with amp:
            loss = step_fn(x, x.roll(1))
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        marks.append(time.perf_counter())
        opt.step()
        opt.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        if i >= 2:  # two warm-up steps
            for name, a, b in zip(parts, marks, marks[1:], strict=False):
                parts[name].append(b - a)
            parts["whole"].append(marks[-1] - marks[0])
    return {name: statistics.median(v) * 1e3 for name, v in parts.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="0 = physical cores")
    args = ap.parse_args()
    hardware.setup_threads(args.threads)
    hardware.reuse_freed_memory()
    torch.manual_seed(0)
    table = {dt: ops(dt) for dt in (torch.bfloat16, torch.float32)}
    ms = {dt: [time_steps(fn, args.rounds) * 1e3 for _, _, _, fn in table[dt]] for dt in table}
    steps = {"bf16": step_ms("bf16", args.rounds), "fp32": step_ms("fp32", args.rounds)}
    print(
        f"machine: {hardware.cpu_description()}; torch {torch.__version__}; {torch.get_num_threads()} threads"
    )
    print(f"shape large {SHAPE}: each op alone, median of {args.rounds} calls\n")
    print("| op | shape | calls per step | bf16 ms per call | fp32 ms per call | bf16 ms per step |")
    print("|---|---|---|---|---|---|")
    for i, (name, shape, calls, _) in enumerate(table[torch.bfloat16]):
        bf, fp = ms[torch.bfloat16][i], ms[torch.float32][i]
        print(f"| {name} | {shape} | {calls} | {bf:.2f} | {fp:.2f} | {bf * calls:.1f} |")
    total = sum(ms[torch.bfloat16][i] * row[2] for i, row in enumerate(table[torch.bfloat16]))
    print(f"| sum of the rows | | | | | {total:.1f} |")
    print()
    for dt, ms_ in steps.items():
        split = ", ".join(f"{k} {v:.0f}" for k, v in ms_.items() if k != "whole")
        print(f"one whole step in {dt}, same process: {ms_['whole']:.0f} ms ({split})")


if __name__ == "__main__":
    main()
