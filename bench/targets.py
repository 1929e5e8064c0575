"""Issue 15's targets on this machine, each with the figure the benchmarks last measured here.

The benchmark scripts leave their results in bench/.work/: train.json (bench_train.py), e2e.json
(bench_e2e.py), speedrun.json (bench_speedrun.py), fastpaths.json (bench_fastpaths.py) and
generate.json (bench_generate.py), each with the CPU it ran on. This reads them and prints one line per
target: the figure, the goal, and met / NOT met -- or, where a file is missing or was written on another
CPU (our machines change CPU between sessions), which script to run here. `make bench` runs it last.

    python bench/targets.py [--work bench/.work] [--json]

Nothing here measures anything: every figure comes from the script named beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lmforge.hardware import cpu_description  # noqa: E402

UTILISATION_AMX = 0.60  # of the bf16 matmul ceiling at the large shape, where AMX makes bf16 ~6x fp32
UTILISATION_OTHER = 0.70  # the same on CPUs without AMX (Zen 4: bf16 ~2.3x fp32)
UTILISATION_FP32 = 0.85
E2E_RATIO = 1.3  # whole `lmforge train` processes with their defaults over the best plain loop
STEP_RATIO = 1.3  # lmforge's step over the reference GPT-2 and GPT2LMHeadModel, each at its best
GENERATION_RATIO = 2.0  # lmforge's decoding over transformers' generate()
SERVER_OVERHEAD = 0.10  # of the direct decoding speed, at the demo shape
FAST_PATH_TIE = 1.05  # a chosen path within this factor of ATen's time counts as a tie (the probe's TIE)


@dataclass
class Target:
    name: str
    goal: str
    figure: str  # what was measured, or what is missing
    status: str  # "met" | "NOT met" | "not measured here"
    script: str  # the command that measures it

    def line(self) -> str:
        return f"{self.status:>17}  {self.name}: {self.figure} (target: {self.goal}; {self.script})"


def load(work: Path, name: str, cpu: str) -> tuple[dict | None, str]:
    """A results file if it was written on this CPU, else None and why."""
    path = work / name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"no {name} yet"
    except (OSError, ValueError) as e:
        return None, f"{name} unreadable ({e.__class__.__name__})"
    if data.get("cpu") != cpu:
        return None, f"{name} was measured on {data.get('cpu') or 'an unrecorded CPU'}"
    return data, ""


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def missing(name: str, goal: str, why: str, script: str) -> Target:
    return Target(name, goal, why, "not measured here", script)


def step_targets(train: dict | None, why: str, cpu: str) -> list[Target]:
    """Utilisation of the matmul ceilings and the step against the reference models (bench_train.py)."""
    script = "bench/bench_train.py"
    amx = "amx_bf16" in cpu
    bf16_goal = UTILISATION_AMX if amx else UTILISATION_OTHER
    family = "with AMX" if amx else "without AMX"
    goals = {
        "bf16 utilisation, large shape": f">= {bf16_goal:.0%} of the bf16 ceiling on a CPU {family}",
        "fp32 utilisation, large shape": f">= {UTILISATION_FP32:.0%} of the fp32 ceiling",
    }
    out = []
    for shape in ("small", "large"):
        goals[f"step vs reference models, {shape} shape"] = (
            f">= {STEP_RATIO}x the reference GPT-2 and GPT2LMHeadModel, each at its best"
        )
    if train is None:
        return [missing(name, goal, why, script) for name, goal in goals.items()]
    for dtype, goal in (("bf16", bf16_goal), ("fp32", UTILISATION_FP32)):
        name = f"{dtype} utilisation, large shape"
        mfus = [train.get(f"large/{n}/{dtype}", {}).get("mfu") for n in ("lmforge", "lmforge-math")]
        mfus = [m for m in mfus if m is not None]
        if not mfus:
            out.append(missing(name, goals[name], "train.json has no large shape", script))
            continue
        best = max(mfus)
        out.append(Target(name, goals[name], f"{best:.0%}", verdict(best >= goal), script))
    for shape in ("small", "large"):
        name = f"step vs reference models, {shape} shape"
        ref, hf = train.get(f"{shape}/ratio_vs_reference"), train.get(f"{shape}/ratio_vs_hf")
        if ref is None or hf is None:
            out.append(missing(name, goals[name], f"train.json has no {shape} shape", script))
            continue
        figure = f"{ref:.2f}x the reference, {hf:.2f}x GPT2LMHeadModel"
        out.append(Target(name, goals[name], figure, verdict(min(ref, hf) >= STEP_RATIO), script))
    return out


def e2e_targets(e2e: dict | None, why: str) -> list[Target]:
    """Whole `lmforge train` processes with their defaults against the best plain loop (bench_e2e.py)."""
    script = "bench/bench_e2e.py"
    out = []
    for shape in ("small", "large"):
        name = f"whole processes, {shape} shape"
        goal = f">= {E2E_RATIO}x the best plain loop, lmforge's defaults"
        ratio = e2e.get(f"{shape}/ratio_defaults") if e2e is not None else None
        if ratio is None:
            out.append(missing(name, goal, why or f"e2e.json has no {shape} shape", script))
            continue
        best = e2e.get(f"{shape}/ratio_best")
        figure = f"{ratio:.2f}x" + (f" (best lmforge setting {best:.2f}x)" if best is not None else "")
        out.append(Target(name, goal, figure, verdict(ratio >= E2E_RATIO), script))
    return out


def speedrun_targets(speedrun: dict | None, why: str) -> list[Target]:
    """The speedrun, quality and memory verdicts bench_speedrun.py judged in its own invocation."""
    script = "bench/bench_speedrun.py"
    if speedrun is None:
        return [
            missing(n, "see bench_speedrun.py", why, script) for n in ("speedrun", "quality", "demo-memory")
        ]
    return [
        Target(t["name"], t["goal"], t["figure"], verdict(t["met"]), script)
        for t in speedrun.get("targets", [])
    ]


def fast_path_targets(fast: dict | None, why: str) -> list[Target]:
    """No path the probe picks is slower than plain ATen at bench_fastpaths.py's full-size timings."""
    script = "bench/bench_fastpaths.py"
    name, goal = "fast paths", f"every probe pick within {FAST_PATH_TIE}x of plain ATen's time or faster"
    if fast is None:
        return [missing(name, goal, why, script)]
    worst, where = 0.0, ""
    for row in fast.get("rows", []):
        times = row["times_ms"]
        plain = next(p for p in times if p in ("aten", "sdpa"))
        picked = row["probe"]
        median = {p: sorted(f + b for f, b in runs)[len(runs) // 2] for p, runs in times.items()}
        ratio = median[picked] / median[plain]
        if ratio > worst:
            worst, where = ratio, f"{row['op']} {row['dtype']} {row['shape']}: {picked}"
    figure = f"worst pick {worst:.2f}x plain ATen's time ({where})" if where else "no rows"
    return [Target(name, goal, figure, verdict(bool(where) and worst <= FAST_PATH_TIE), script)]


def generation_targets(gen: dict | None, why: str) -> list[Target]:
    """Decoding against transformers' generate(), and what the HTTP server costs (bench_generate.py)."""
    script = "bench/bench_generate.py"
    out = []
    shapes = gen.get("shapes", {}) if gen is not None else {}
    for shape in ("demo", "large"):
        name, goal = f"generation, {shape} shape", f">= {GENERATION_RATIO}x transformers' generate()"
        r = shapes.get(shape)
        if r is None:
            out.append(missing(name, goal, why or f"generate.json has no {shape} shape", script))
            continue
        ratio = r["direct_tps"] / r["hf_tps"]
        out.append(Target(name, goal, f"{ratio:.2f}x", verdict(ratio >= GENERATION_RATIO), script))
    name, goal = "server overhead, demo shape", f"< {SERVER_OVERHEAD:.0%} of direct decoding speed"
    r = shapes.get("demo")
    if r is None:
        out.append(missing(name, goal, why or "generate.json has no demo shape", script))
    else:
        overhead = 1 - r["server_tps"] / r["direct_tps"]
        out.append(Target(name, goal, f"{overhead:.1%}", verdict(overhead < SERVER_OVERHEAD), script))
    return out


def collect(work: Path, cpu: str) -> list[Target]:
    def read(name: str) -> tuple[dict | None, str]:
        return load(work, name, cpu)

    return [
        *fast_path_targets(*read("fastpaths.json")),
        *step_targets(*read("train.json"), cpu),
        *e2e_targets(*read("e2e.json")),
        *speedrun_targets(*read("speedrun.json")),
        *generation_targets(*read("generate.json")),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=str(ROOT / "bench" / ".work"), help="where the scripts left their JSON")
    ap.add_argument("--json", action="store_true", help="print the targets as JSON instead")
    args = ap.parse_args()
    cpu = cpu_description()
    targets = collect(Path(args.work), cpu)
    if args.json:
        print(json.dumps({"cpu": cpu, "targets": [asdict(t) for t in targets]}, indent=2))
        return
    print(f"Targets of issue 15 on {cpu}:")
    for t in targets:
        print(t.line())


if __name__ == "__main__":
    main()
