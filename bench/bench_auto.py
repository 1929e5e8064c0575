"""`lmforge train --auto` against a grid of shapes, at several time budgets, on two corpora.

For each corpus (character-level Tiny Shakespeare, and the built-in corpus in BPE 4096) and each
budget S (default 60 s, 5 min, 20 min) it runs, one process at a time:

- `lmforge train --auto --time-budget S`: the whole command -- start-up and --auto's measuring
  included -- is timed from its start to its exit;
- every grid point: the presets' shapes and the shapes between them (tune/auto.py `CANDIDATES`,
  with --auto's recipe, learning-rate rule, the threads and attention --auto measured in the same
  budget, and the precision `train.dtype=auto` gives that shape),
  each `lmforge train --time-budget S` -- the loop's budget, so start-up is not counted against the
  grid: the comparison is generous to the grid;
- the default presets as they ship (`demo`, `gpt-small`), same budget;
- the best grid point once more, its loop shortened by its own start-up and exit so that the whole
  command takes --auto's wall time (the same seconds from the user's side);

then `lmforge eval RUN --json` on the **whole** validation split of each. It prints the table (the
CPU, the loss of every run, --auto's gap to the best grid point) and `--write` puts it in
BENCHMARKS.md. Runs are cached under --work (a finished run is not trained again).

    python bench/bench_auto.py                                    # the whole grid: hours on 2 cores
    python bench/bench_auto.py --budgets 45 --grid 2 --corpora char   # a smoke test: minutes
    # 20 minutes on the shapes that can win there, without the presets or the same-wall run: 80 min
    python bench/bench_auto.py --budgets 1200 --corpora bpe --shapes 4x128 4x192 6x256 \
        --presets --no-same-wall
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lmforge import io  # noqa: E402
from lmforge.hardware import cpu_description  # noqa: E402
from lmforge.tune.auto_rule import CANDIDATES, RECIPE  # noqa: E402

TINY_SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"  # beside the checkout
CORPORA = {  # name -> `lmforge data prepare` arguments (the char source: --char-source)
    "char": ["--tokenizer", "char", "--split", "tail"],
    "bpe": ["--source", "shakespeare"],
}
PRESETS = ("demo", "gpt-small")
SECTION = "## `--auto` against a grid of shapes"


def lmforge(*args: str, env=None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lmforge", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env)


def prepare(work: Path, corpus: str, char_source: Path) -> Path:
    data = work / "data" / corpus
    if not (data / "shards" / "manifest.json").is_file():
        source = ["--source", str(char_source)] if corpus == "char" else []
        done = lmforge("data", "prepare", *source, *CORPORA[corpus], "--out", str(data))
        if done.returncode:
            raise SystemExit(f"data prepare {corpus} failed:\n{done.stderr}")
    return data


def train(data: Path, run: Path, budget: float, args: list[str]) -> dict:
    """Train (unless done before) and evaluate on the whole validation split; the run's figures."""
    result = run / "bench.json"
    if result.is_file():
        return json.loads(result.read_text())
    if run.exists():
        import shutil

        shutil.rmtree(run)
    start = time.perf_counter()
    done = lmforge("train", "--data", str(data), "--out", str(run), "--no-progress", "--json",
                   "--time-budget", str(budget), *args)  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"train {run} failed:\n{done.stderr[-2000:]}")
    evaluated = lmforge("eval", str(run), "--json")
    if evaluated.returncode:
        raise SystemExit(f"eval {run} failed:\n{evaluated.stderr[-2000:]}")
    figures = {"wall": round(wall, 1), "val_loss": json.loads(evaluated.stdout)["val_loss"]}
    info = json.loads((run / "run.json").read_text())
    if "auto" in info:
        figures["auto"] = info["auto"]["chosen"]
    io.write_text(result, json.dumps(figures))
    return figures


def bench(
    work: Path,
    corpora: list[str],
    budgets: list[float],
    grid: list,
    char_source: Path,
    repeats: int = 1,
    same_wall: bool = True,
    presets: tuple[str, ...] = PRESETS,
    point_set: tuple[str, ...] = (),
) -> list[dict]:
    rows = []
    for corpus in corpora:
        data = prepare(work, corpus, char_source)
        for budget in budgets:
            tag = f"{corpus}_{budget:g}s"
            auto = train(data, work / "runs" / tag / "auto", budget, ["--auto"])
            # the attention and threads --auto measured; the precision is each point's own
            # train.dtype=auto (bf16 only where it pays for that shape), as a user's run would get
            fast = {k: auto["auto"][k] for k in ("model.attn_impl", "train.threads") if k in auto["auto"]}
            points, overrides = {}, {}
            for shape in grid:
                keys = {**RECIPE, **shape.updates(), **fast}
                overrides[shape.name] = [f"{k}={_value(v)}" for k, v in keys.items()] + list(point_set)
                name = "_".join([shape.name.replace(" ", "_"), *point_set])
                points[shape.name] = train(data, work / "runs" / tag / name, budget, overrides[shape.name])
            ran = {p: train(data, work / "runs" / tag / p, budget, ["--config", p]) for p in presets}
            best = min(points, key=lambda k: points[k]["val_loss"])
            # the best point again, its loop shortened by its own start-up and exit so that the whole
            # command takes --auto's wall time: the same seconds from the user's side
            outside = points[best]["wall"] - budget
            at_wall = round(max(1.0, auto["wall"] - outside), 1)
            same = (
                train(data, work / "runs" / tag / "best_same_wall", at_wall, overrides[best])
                if same_wall
                else None
            )
            # run-to-run spread on a shared machine: --auto and the best point again, one after the other
            autos, bests = [auto], [points[best]]
            for r in range(2, repeats + 1):
                autos.append(train(data, work / "runs" / tag / f"auto_{r}", budget, ["--auto"]))
                name = "_".join([best.replace(" ", "_"), *point_set, str(r)])
                bests.append(train(data, work / "runs" / tag / name, budget, overrides[best]))
            rows.append(
                {
                    "corpus": corpus,
                    "budget": budget,
                    "auto_choice": ", ".join(dict.fromkeys(a["auto"]["name"] for a in autos)),
                    "auto_loss": statistics.median(a["val_loss"] for a in autos),
                    "auto_losses": [a["val_loss"] for a in autos],
                    "auto_wall": auto["wall"],
                    "best_losses": [b["val_loss"] for b in bests],
                    "grid": {k: v["val_loss"] for k, v in points.items()},
                    "best": best,
                    "best_loss": statistics.median(b["val_loss"] for b in bests),
                    "best_wall": points[best]["wall"],
                    "same_wall_loss": same["val_loss"] if same else math.nan,
                    "same_wall_wall": same["wall"] if same else math.nan,
                    "presets": {k: v["val_loss"] for k, v in ran.items()},
                }
            )
            print(table(rows[-1:], header=False), flush=True)
    return rows


def _grid(first: int, shapes: list[str] | None) -> list:
    """The grid's candidate shapes: the first `first`, or those named by depth x width."""
    if not shapes:
        return list(CANDIDATES[:first])
    by_name = {s.name.split()[0]: s for s in CANDIDATES}
    unknown = [s for s in shapes if s not in by_name]
    if unknown:
        raise SystemExit(f"unknown shape(s) {', '.join(unknown)}; the candidates are {', '.join(by_name)}")
    return [by_name[s] for s in shapes]


def _value(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _spread(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}, " if len(values) > 1 else ""


def table(rows: list[dict], header: bool = True) -> str:
    lines = []
    if header:
        lines += [
            "| corpus | budget | --auto's choice | --auto loss (wall s) | best grid point "
            "| its loss (wall s) | gap | it at --auto's wall: loss (wall s) | gap at the same wall "
            "| demo preset | gpt-small preset | every grid point |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in rows:
        grid = "; ".join(f"{k}: {v:.3f}" for k, v in r["grid"].items())
        gap = r["auto_loss"] - r["best_loss"]
        same = r["auto_loss"] - r["same_wall_loss"]
        at_wall = (
            f"{r['same_wall_loss']:.4f} ({r['same_wall_wall']:.0f}) | {same:+.4f}"
            if math.isfinite(same)
            else "not run | -"
        )
        lines.append(
            f"| {r['corpus']} | {r['budget']:g} s | {r['auto_choice']} | {r['auto_loss']:.4f} "
            f"({_spread(r['auto_losses'])}{r['auto_wall']:.0f}) | {r['best']} | {r['best_loss']:.4f} "
            f"({_spread(r['best_losses'])}{r['best_wall']:.0f}) | "
            f"{gap:+.4f} | "
            f"{at_wall} | "
            + " | ".join(f"{r['presets'][p]:.4f}" if p in r["presets"] else "not run" for p in PRESETS)
            + f" | {grid} |"
        )
    return "\n".join(lines)


def write_benchmarks(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    old = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(SECTION) + r".*?(?=\n## |\Z)", re.S)
    new = (
        pattern.sub(lambda _m: text.rstrip("\n") + "\n", old)
        if SECTION in old
        else old.rstrip() + "\n\n" + text
    )
    io.write_text(path, new)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[60, 300, 1200], help="seconds")
    parser.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    parser.add_argument("--grid", type=int, default=len(CANDIDATES), help="the first N candidate shapes")
    parser.add_argument(
        "--shapes",
        nargs="+",
        metavar="LxC",
        help="the grid's shapes by depth x width (e.g. 4x192 6x256) instead of --grid",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of --auto and of the best point")
    parser.add_argument(
        "--presets", nargs="*", default=list(PRESETS), choices=list(PRESETS), help="none: skip"
    )
    parser.add_argument(
        "--no-same-wall", action="store_true", help="skip the best point's run at --auto's wall time"
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="extra overrides for every grid point (e.g. model.dropout=0.1); their runs are named by them",
    )
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench_auto")
    parser.add_argument("--write", action="store_true", help="put the table in BENCHMARKS.md")
    parser.add_argument("--char-source", type=Path, default=TINY_SHAKESPEARE, help="tinyshakespeare.txt")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONPATH", str(ROOT / "src"))
    cpu = cpu_description()
    print(f"CPU: {cpu}, {os.cpu_count()} logical cores", flush=True)
    grid = _grid(args.grid, args.shapes)
    rows = bench(
        args.work, args.corpora, args.budgets, grid, args.char_source, args.repeats, not args.no_same_wall,
        tuple(args.presets), tuple(args.set),
    )  # fmt: skip
    picked = f"--shapes {' '.join(args.shapes)}" if args.shapes else f"--grid {args.grid}"
    extra = (
        (f" --repeats {args.repeats}" if args.repeats > 1 else "")
        + (" --no-same-wall" if args.no_same_wall else "")
        + (f" --presets {' '.join(args.presets)}" if tuple(args.presets) != PRESETS else "")
        + (f" --set {' '.join(args.set)}" if args.set else "")
    )
    text = "\n".join(
        [
            SECTION,
            "",
            f"Machine: {cpu}, {os.cpu_count()} logical cores. Command: `python bench/bench_auto.py "
            f"--budgets {' '.join(f'{b:g}' for b in args.budgets)} --corpora {' '.join(args.corpora)} "
            f"{picked}{extra}`. Loss: "
            "`lmforge eval` on the whole validation split. --auto's budget is "
            "the whole command (start-up and measuring included); each grid point and preset gets the "
            "same number as its loop's `--time-budget`, start-up not counted, with the threads and "
            "attention --auto measured and its own `train.dtype=auto` precision. Gap: --auto's loss "
            "minus the best grid point's (target: at most +0.03). 'At --auto's wall': the best grid "
            "point trained again with its loop shortened by its own start-up and exit, so that its "
            "whole command takes as long as --auto's did. With --repeats, --auto and the best grid "
            "point run that many times (after the grid): their losses are medians (min-max; the wall "
            "is the first run's).",
            "",
            table(rows),
            "",
        ]
    )
    print("\n" + text)
    if args.write:
        write_benchmarks(text)
        print("wrote BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
