"""Replay `lmforge train --auto`'s choice on the speeds an earlier run measured, with another ladder.

After the ladder is refit (bench/auto_ladder.py), this shows whether the runs of BENCHMARKS.md would
have chosen otherwise -- without training anything: each candidate's measured tokens/s (an untimed
candidate's upper bound, marked) from the run's `run.json`, the loop's seconds (or --seconds), and
the prediction of auto_rule for the ladder given.

    python bench/auto_replay.py build/bench_auto/runs/bpe_300s/auto             # the shipped ladder
    python bench/auto_replay.py RUN --ladder OLD.json                            # an older ladder
    python bench/auto_replay.py RUN --seconds 1195 --speed "6x256 ctx128 b16=5342"   # another budget
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lmforge.tune import auto_rule  # noqa: E402
from lmforge.tune.auto_rule import Measured, predict  # noqa: E402


def replay(run_dir: Path, ladder: Path | None, seconds: float | None, speeds: dict[str, float]) -> str:
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["auto"]
    model = auto_rule.load_model(record["fit"]["name"], ladder)
    loop = seconds or record["train_seconds"]
    unique, eval_tokens = record["unique_tokens"], record["chosen"]["train.eval_tokens"]
    rows = [(c["name"], c["n_params"], c["tokens_per_second"], "timed") for c in record["candidates"]]
    rows += [
        (c["name"], c["n_params"], c["tokens_per_second_bound"], "bound") for c in record.get("not_timed", [])
    ]
    rows = [
        (name, n, speeds.get(name, speed), "given" if name in speeds else how) for name, n, speed, how in rows
    ]
    predictions = [(predict(Measured(name, {}, n, speed), model, loop, unique, eval_tokens), how)
                   for name, n, speed, how in sorted(rows)]  # fmt: skip
    timed = [p.measured for p, how in predictions if how != "bound"]
    best, _ = auto_rule.choose(timed, model, loop, unique, eval_tokens)
    # an untimed candidate's bound is not its speed: one that could beat the choice at any speed up to
    # its bound gets timed, as --auto decides (auto_rule.best_case_loss)
    to_time = [
        p.measured.name
        for p, how in predictions
        if how == "bound"
        and auto_rule.best_case_loss(
            p.measured.name,
            p.measured.n_params,
            p.measured.tokens_per_second,
            model,
            loop,
            unique,
            eval_tokens,
        )
        < best.predicted_loss
    ]
    lines = [
        f"{run_dir}: {loop:.0f} s of loop, {model.name} ladder, R* {model.repeat_half_life:g}; "
        f"the run chose {record['chosen']['name']}, this ladder chooses {best.measured.name}"
        + (f", stopping after {best.credited / unique:.1f} passes" if best.credited < best.tokens else "")
        + (
            f" unless {', '.join(to_time)} (at its bound: give its speed with --speed) wins"
            if to_time
            else ""
        )
    ]
    for p, how in predictions:
        passes = p.tokens / unique
        lines.append(
            f"  {p.measured.name:<18} {p.measured.tokens_per_second:>9,.0f} tok/s ({how})  "
            f"{p.tokens / 1e6:6.2f}M tokens, {passes:5.1f} passes  predicted {p.predicted_loss:.4f}"
            + (f" (credited {p.credited / unique:.1f} passes)" if p.credited < p.tokens else "")
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="--auto run folders (their run.json)")
    parser.add_argument("--ladder", type=Path, help="an auto_ladder.json (default: the shipped one)")
    parser.add_argument("--seconds", type=float, help="seconds of loop instead of the run's own")
    parser.add_argument("--speed", action="append", default=[], help="'SHAPE=tokens/s' instead of the run's")
    args = parser.parse_args(argv)
    speeds = {}
    for item in args.speed:
        name, _, value = item.rpartition("=")
        try:
            speeds[name] = float(value)
        except ValueError:
            parser.error(f"--speed {item!r}: give SHAPE=tokens/s, e.g. '6x256 ctx128 b16=5342'")
    for run_dir in args.runs:
        record = run_dir / "run.json"
        if not record.is_file() or "auto" not in json.loads(record.read_text(encoding="utf-8")):
            parser.error(f'{run_dir} is not a `lmforge train --auto` run folder (no run.json with "auto")')
        print(replay(run_dir, args.ladder, args.seconds, speeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
