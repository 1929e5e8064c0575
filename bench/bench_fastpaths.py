"""Fast paths on the CPU it runs on: each hand-written kernel against plain ATen, and the probe's choice.

For every op models/fastpaths.py chooses (tanh-GELU, ReLU², RMSNorm under autograd, attention
SDPA vs plain matmul-softmax), at the two training shapes of bench_train.py and in fp32 and bf16
(autocast hands the MLP activation and attention bf16; the residual stream, and so the RMSNorm
input, stays fp32), forward and backward are timed both ways on the whole micro-step, the two
interleaved round by round so both see the same load. Then the real probe runs (capped inputs, a
fraction of a second, no cache) and its choice is printed beside the full-size medians, so a probe
that picks the slower path shows.

    python bench/bench_fastpaths.py [--rounds 7] [--threads N] [--shapes small,large] [--write]

`--write` puts the table in BENCHMARKS.md ("## Fast paths on each CPU", under a heading for this CPU
model, so the tables of the CPU families we meet stand side by side); the JSON goes to
bench/.work/fastpaths.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lmforge import io  # noqa: E402
from lmforge.hardware import cpu_description, cpu_model, physical_cores, reuse_freed_memory  # noqa: E402
from lmforge.models import fastpaths  # noqa: E402
from lmforge.models.gpt import GPTConfig  # noqa: E402

PARENT = "## Fast paths on each CPU"
SHAPES = {  # bench_train.py's shapes: (n_layer, n_head, n_embd, seq_len, batch)
    "small": dict(n_head=4, n_embd=128, seq_len=64, batch=12),  # nanoGPT's CPU recipe
    "large": dict(n_head=6, n_embd=384, seq_len=256, batch=16),  # nanoGPT's GPU-sized Shakespeare
}
OPS = ("gelu", "relu2", "rms_norm", "attention")


def measure(shape_name: str, dtype: str, threads: int, rounds: int) -> list[dict]:
    s = SHAPES[shape_name]
    shape = fastpaths.ProbeShape(s["batch"], s["seq_len"], s["n_embd"], 4 * s["n_embd"], s["n_head"],
                                 s["n_head"], dtype, threads)  # fmt: skip
    rows = []
    for op in OPS:
        paths = (fastpaths.OURS[op], fastpaths.PLAIN[op])
        runs = {p: fastpaths.make_runner(op, shape, p, cap=False) for p in paths}
        for run in runs.values():
            run()  # warm-up
        times: dict[str, list[tuple[float, float]]] = {p: [] for p in runs}
        for _ in range(rounds):
            for p, run in runs.items():
                times[p].append(run())
        probe = fastpaths.probe_op(op, shape, fastpaths.make_runner)
        rows.append({"shape": shape_name, "dtype": dtype, "op": op, "times_ms": times, "probe": probe.path,
                     "probe_ms": {"ours": probe.ours_ms, "aten": probe.plain_ms}})  # fmt: skip
    return rows


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def table(rows: list[dict]) -> list[str]:
    head = ["shape", "dtype", "op", "path", "forward ms", "backward ms", "fwd + bwd (median)", "probe picks"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        medians = {p: statistics.median(sum(t) for t in ts) for p, ts in r["times_ms"].items()}
        fastest = min(medians, key=medians.get)
        for p, ts in r["times_ms"].items():
            total = f"**{medians[p]:.2f}**" if p == fastest else f"{medians[p]:.2f}"
            op_dtype = "float32" if r["op"] == "rms_norm" else r["dtype"]  # the residual stream is fp32
            pick = r["probe"] if p == fastpaths.OURS[r["op"]] else ""
            lines.append(f"| {r['shape']} | {op_dtype} | {r['op']} | {p} | {fmt([t[0] for t in ts])} | "
                         f"{fmt([t[1] for t in ts])} | {total} | {pick} |")  # fmt: skip
    return lines


def busy_note(load: float, threads: int) -> list[str]:
    """A warning under the table when other processes shared the cores (their time slices land in
    some rounds: the medians and maxima then say more about the machine than about the op)."""
    cores = os.cpu_count() or 1
    if load <= cores:
        return []
    return [
        f"The machine was busy (load {load:.1f} on {cores} CPUs): rounds that lost a time slice to other "
        "processes inflate the medians and maxima, most at the small shape; the minimum is the closer "
        "estimate of an op's own cost, and the probe decides on its best round for that reason.",
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = physical cores (as training)")
    ap.add_argument("--shapes", default="small,large", help="comma-separated, from: " + ", ".join(SHAPES))
    ap.add_argument("--write", action="store_true", help=f"put the table in BENCHMARKS.md ({PARENT})")
    args = ap.parse_args()
    shapes = args.shapes.split(",")
    if any(s not in SHAPES for s in shapes):
        ap.error(f"--shapes takes names from {', '.join(SHAPES)}")
    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    reuse_freed_memory()  # as `lmforge train` (train.allocator=reuse) runs these ops and its probe
    print(f"CPU: {cpu_description()}; torch {torch.__version__}, {threads} threads", flush=True)
    load_before, start = os.getloadavg()[0], time.perf_counter()
    rows = []
    for shape in shapes:
        for dtype in ("float32", "bfloat16"):
            rows += measure(shape, dtype, threads, args.rounds)
            print("\n".join(table(rows[-len(OPS) :])), flush=True)
    # the probe a training start runs (every op this bench covers, at the large shape's dtype mix)
    dims = {k: v for k, v in SHAPES[shapes[-1]].items() if k != "batch"}
    cfg = GPTConfig(vocab_size=65, **dims, mlp="gelu")
    probe = fastpaths.choose(cfg, fastpaths.shape_of(cfg, SHAPES[shapes[-1]]["batch"], "bfloat16", threads))
    seconds = time.perf_counter() - start
    load_after = os.getloadavg()[0]
    heading = f"### {cpu_model()}"
    section = "\n".join([
        heading,
        "",
        f"Machine: {cpu_description()}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"{threads} torch threads; 1-minute load average {load_before:.1f} at the start and "
        f"{load_after:.1f} at the end.  ",
        f"Command: `.venv/bin/python bench/bench_fastpaths.py --rounds {args.rounds} --threads {threads} "
        f"--shapes {args.shapes} --write` ({seconds:.0f} s).  ",
        "Each op alone, forward and backward, on one whole micro-step of bench_train.py's shapes (small: "
        "12 x 64 tokens, width 128, 4 heads; large: 16 x 256 tokens, width 384, 6 heads; MLP 4 x width); "
        f"median (min-max) over {args.rounds} rounds, ours and ATen's interleaved. `ours` is the "
        "hand-written autograd function in models/layers.py, `aten` the plain op under autograd; for "
        "attention `math` is the plain matmul-softmax path, `sdpa` `F.scaled_dot_product_attention`. "
        "Bold: the faster. `probe picks`: what models/fastpaths.py's probe (capped inputs, ties to "
        "ATen) chose in the same process -- what `lmforge train` will use here.",
        "",
        *table(rows),
        "",
        *busy_note(max(load_before, load_after), threads),
        f"A training start's probe at the {shapes[-1]} shape in bf16 (GELU, RMSNorm, attention): "
        f"{probe.probe_seconds:.2f} s, then cached.",
    ])  # fmt: skip
    print()
    print(section)
    work = ROOT / "bench" / ".work"
    work.mkdir(parents=True, exist_ok=True)
    io.write_json(work / "fastpaths.json", {"cpu": cpu_description(), "threads": threads, "rows": rows,
                                            "load": [load_before, load_after]})  # fmt: skip
    if args.write:
        path = ROOT / "BENCHMARKS.md"
        text = path.read_text(encoding="utf-8")
        top = text.find(PARENT)
        if top < 0:
            sys.exit(f"BENCHMARKS.md has no '{PARENT}' section to write into")
        bottom = text.find("\n## ", top + 1) + 1 or len(text)
        begin = text.find(f"\n{heading}\n", top, bottom) + 1
        if begin > 0:  # replace this CPU's old table, up to the next heading of its level or above
            end = min(i + 1 for i in (text.find("\n### ", begin), bottom - 1, len(text) - 1) if i >= begin)
        else:  # a CPU not seen before: its table goes first, after the section's introduction
            begin = end = text.find("\n### ", top, bottom) + 1 or bottom
        rest = text[end:]
        io.write_text(path, text[:begin] + section + ("\n\n" + rest if rest else "\n"))
        print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
