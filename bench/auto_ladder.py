"""The ladder of runs behind `lmforge train --auto`, and the scaling fit it ships with.

Each ladder point is one real `train()` of an --auto candidate shape (tune/auto.py `CANDIDATES`, the
--auto recipe and learning-rate rule) for a fixed number of tokens D, stopped by train.max_tokens (so
the schedule follows steps and the point does not depend on this machine's speed), evaluated once at
the end on the whole validation split -- the loss `bench/bench_auto.py` compares (a 65,536-token
slice ranked shapes 0.08 apart on the whole split as level). From the points (N non-embedding parameters,
effective tokens D' for the repeats -- see tune/auto_rule.py -- and the loss) it fits
L(N, D') = E + A/N^alpha + B/D'^beta with tune/scaling.py's `fit_scaling`, and the repeats' R* that fits
best (auto_rule.fit_with_repeats), one fit per corpus kind
(character-level Tiny Shakespeare for `char` tokenizers, the built-in corpus in BPE 4096 for `bpe`),
and writes src/lmforge/presets/auto_ladder.json (points and fits).

    python bench/auto_ladder.py --char-data DATA_CHAR --bpe-data DATA_BPE     # run the ladder, refit
    python bench/auto_ladder.py --refit                                      # refit the stored points
    python bench/auto_ladder.py --bpe-data DATA_BPE --jobs 2     # new points two at a time, 1 thread each

The data folders: `lmforge data prepare --source ../shared/data/tinyshakespeare.txt --out DATA_CHAR
--tokenizer char --split tail` and `lmforge data prepare --source shakespeare --out DATA_BPE`.
Finished points are cached under --work and reused when the script runs again.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import time
from pathlib import Path

print = functools.partial(print, flush=True)  # noqa: A001 -- progress of a long script
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lmforge import io, logs  # noqa: E402
from lmforge.hardware import cpu_model  # noqa: E402
from lmforge.tune.auto_rule import CANDIDATES, RECIPE, effective_tokens, fit_with_repeats  # noqa: E402

OUT = ROOT / "src" / "lmforge" / "presets" / "auto_ladder.json"
EVAL = "whole split"  # what a point's loss is over; a stored point measured otherwise is run again
THREADS = 1  # one thread: the loss does not depend on it, and a shared machine runs it steadier
FAST_PATH = {"train.dtype": "bfloat16", "model.attn_impl": "math"}  # the loss barely depends on it
# (candidate index in CANDIDATES, training tokens): small shapes far along D, large ones short. The BPE
# ladder is shorter: its 4096-row head makes every step several times dearer than with characters.
POINTS = {
    "char": [
        (0, 500_000), (0, 1_000_000), (0, 2_000_000), (0, 4_000_000),
        (1, 1_000_000), (1, 2_000_000), (1, 4_000_000),
        (2, 250_000), (2, 500_000), (2, 1_000_000),
        (3, 1_000_000), (3, 2_000_000),
        (4, 250_000), (4, 500_000),
        (5, 250_000),
        (1, 8_000_000), (1, 16_000_000), (2, 2_000_000), (2, 4_000_000), (2, 8_000_000),
        (3, 4_000_000), (3, 8_000_000), (4, 1_000_000), (4, 2_000_000), (4, 4_000_000),
        (5, 1_000_000), (5, 2_000_000),
        (4, 8_000_000), (5, 4_000_000), (5, 8_000_000), (6, 2_000_000), (6, 7_000_000),
    ],
    "bpe": [
        (0, 250_000), (0, 500_000), (0, 1_000_000), (0, 2_000_000),
        (1, 1_000_000), (1, 2_000_000), (1, 4_000_000),
        (2, 125_000), (2, 250_000), (2, 1_000_000), (2, 2_000_000), (2, 4_000_000),
        (3, 1_000_000), (3, 2_000_000),
        (4, 250_000), (4, 1_000_000), (4, 2_000_000),
        (5, 1_000_000), (5, 2_000_000),
        (0, 8_000_000), (1, 12_000_000), (2, 8_000_000), (4, 4_000_000),
        (3, 4_000_000), (3, 8_000_000),
        (4, 20_000_000), (5, 12_000_000), (6, 2_000_000), (6, 7_000_000),
    ],
}  # fmt: skip
# --auto predicts a shape from its own runs where the ladder has them (auto_rule.LossModel), so the
# shapes a minute or a few can afford (1-3 x 64, 2 x 128) run at the 1-2M tokens such budgets reach;
# on BPE the 4 x 128 and 4 x 192 points at 1-2M tokens and the small shapes' at 4M are for budgets
# of 5 minutes (without them the BPE fit, made of small models, saw little gain in N: at 5 minutes
# --auto chose 2 x 64 and the demo preset's 4 x 192 beat it by 0.10). The last BPE row reaches the
# tokens 5 minutes give each shape (2 x 64: ~13M, 5+ passes over the corpus): past its last run a
# shape's correction is held, and 2 x 64's held 4M-token ratio predicted 3.98 at 5 minutes where it
# reached 4.11, which chose it over 4 x 128 (4.04) on 2026-12-04 (BENCHMARKS.md). The 2 x 128 rows:
# held from its 2M-token run, its ratio predicted 4.025 for 5 minutes (7.2M tokens), it reached 4.119.
# The last character rows do the same for 5 minutes on characters (2 x 64 trains ~28M tokens there;
# the ladder stopped at 4M). The last BPE row reaches what 20 minutes give the three largest shapes
# (4 x 128: ~20M tokens, 13.8 passes over the 1.48M-token corpus; 4 x 192: ~12.7M; 6 x 256: ~6.7M):
# without it 4 x 128's 4M-token ratio was held to 20M, predicted 3.75 where it reached 4.01, and --auto
# chose it over 6 x 256 (3.92) on 2026-12-05 (BENCHMARKS.md). The last character row: since --auto
# credits no shape with more passes than its longest ladder run (auto_rule.LossModel.credited), 4 x 128
# and 4 x 192 to 8 passes (4 x 128 reached 1.505 after 6 in 5 minutes, more than its 4-pass run), and
# 6 x 256 at what 5 and 20 minutes give it (its fit-alone prediction was 0.12 under the 1.509 it reached).


def _shown(path: Path) -> str:
    """`path` relative to the checkout where it lies inside it: the shipped file names no machine."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def _run_dir(work: Path, index: int, tokens: int) -> Path:
    return work / f"{CANDIDATES[index].name.replace(' ', '_')}_{tokens}"


def known_point(work: Path, index: int, tokens: int, stored: list[dict]) -> dict | None:
    """The point of this shape at this token count from the stored ladder (`stored`: the JSON's points
    of this corpus) or from a finished run under `work`; None when it has to run."""
    shape = CANDIDATES[index]

    def finished(point: dict) -> bool:  # D is what the run trained: max_tokens rounded down to steps;
        # a run stopped early (Ctrl-C, SIGTERM) trained fewer tokens and runs again
        return tokens * 0.95 <= point["D"] <= tokens and point.get("eval") == EVAL

    for point in stored:
        if point["shape"] == shape.name and finished(point):
            return point
    cached = _run_dir(work, index, tokens) / "point.json"
    point = json.loads(cached.read_text()) if cached.is_file() else None
    return point if point and finished(point) else None


def run_point(
    data_dir: Path, work: Path, index: int, tokens: int, stored: list[dict], threads: int = THREADS
) -> dict:
    """One ladder point: run here, or known already (`known_point`) -- a longer ladder runs only what
    is new."""
    from lmforge.config import apply_updates, build_run_config
    from lmforge.data.tokenizer import load_tokenizer
    from lmforge.train.loop import train

    known = known_point(work, index, tokens, stored)
    if known:
        return known
    shape = CANDIDATES[index]
    run_dir = _run_dir(work, index, tokens)
    cached = run_dir / "point.json"
    tree: dict = {}
    apply_updates(tree, RECIPE)
    apply_updates(tree, {**shape.updates(), **FAST_PATH, "train.max_tokens": tokens})
    apply_updates(
        tree,
        {
            "train.eval_every": 10**6,
            "train.ckpt_every": 10**6,
            "train.eval_tokens": split_tokens(data_dir, "val"),
        },
    )
    apply_updates(tree, {"train.log_every": 100, "train.keep_last": 1, "train.threads": threads})
    config = build_run_config(tree, load_tokenizer(data_dir / "tokenizer").vocab_size)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    with logs.silenced("lmforge.train"):
        result = train(config, data_dir, run_dir, progress=False)
    if result.tokens < tokens * 0.95:
        raise SystemExit(
            f"{run_dir}: stopped after {result.tokens:,} of {tokens:,} tokens; run the ladder again"
        )
    point = {
        "shape": shape.name,
        "N": _non_embedding(config),
        "D": result.tokens,
        "loss": result.final_val["loss"],
        "eval": EVAL,
        "seconds": round(time.perf_counter() - start, 1),
        "tokens_per_second": round(result.tokens_per_second, 1),
    }
    io.write_text(cached, json.dumps(point))
    return point


def run_new_points(kind: str, data_dir: Path, work: Path, stored: list[dict], threads: int, jobs: int):
    """Run the points of POINTS[kind] that are neither stored nor cached, `jobs` at a time in their own
    processes (each with `threads` threads), the costliest first; each leaves its point.json for the
    sequential pass that follows. A point's loss does not depend on what runs beside it (the token
    count stops it, not the clock); its recorded speed does."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    todo = []
    for index, tokens in POINTS[kind]:
        if known_point(work, index, tokens, stored) is None:
            shape = CANDIDATES[index]
            todo.append((shape.n_layer * shape.n_embd**2 * tokens, index, tokens))
    if not todo:
        return
    print(f"{kind}: {len(todo)} new point(s), {jobs} at a time")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(run_point, data_dir, work, index, tokens, stored, threads)
            for _, index, tokens in sorted(todo, reverse=True)
        ]
        for future in futures:
            future.result()


def _non_embedding(config) -> int:
    from lmforge.models.registry import build_model

    return build_model(config.model, init=False).num_params(exclude_embeddings=True)


def split_tokens(data_dir: Path, split: str) -> int:
    manifest = json.loads((data_dir / "shards" / "manifest.json").read_text())
    return manifest["splits"][split]["tokens"]


def refit(ladders: dict) -> dict:
    fits = {}
    for kind, ladder in ladders.items():
        u = ladder["unique_tokens"]
        pts = ladder["points"]
        fit, half_life, tried = fit_with_repeats(
            [p["N"] for p in pts], [p["D"] for p in pts], [p["loss"] for p in pts], u
        )
        shown = ", ".join(f"{r:g} {e:.4f}" for r, e in tried.items())
        print(f"{kind}: R* tried (RMS log residual): {shown}")
        fits[kind] = {"fit": {**fit.__dict__, "repeat_half_life": half_life}, **ladder}
        print(f"{kind}: L = {fit.E:.3f} + {fit.A:.4g}/N^{fit.alpha:.3f} + {fit.B:.4g}/D'^{fit.beta:.3f}, "
              f"R* {half_life:g} (RMS log residual {fit.rmse_log:.4f}, {len(pts)} points)")  # fmt: skip
        for p in pts:
            pred = float(fit.loss(p["N"], effective_tokens(p["D"], u, half_life)))
            print(f"  {p['shape']:<22} N {p['N']:>9,} D {p['D']:>10,}  loss {p['loss']:.4f}  fit {pred:.4f}")
    return fits


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--char-data", type=Path, help="char-level Tiny Shakespeare data folder")
    parser.add_argument("--bpe-data", type=Path, help="built-in corpus, BPE, data folder")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "auto_ladder", help="ladder runs")
    parser.add_argument("--refit", action="store_true", help="only refit the points stored in the JSON")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch threads (a quiet machine: all)")
    parser.add_argument("--jobs", type=int, default=1, help="new points run at once, each in its own process")
    args = parser.parse_args(argv)
    stored = json.loads(OUT.read_text()) if OUT.is_file() else {"fits": {}}
    ladders = {
        kind: {key: value for key, value in entry.items() if key != "fit"}
        for kind, entry in stored["fits"].items()
        if entry.get("points")  # a stored ladder: refit from its points
    }
    if not args.refit:
        for kind, data_dir in (("char", args.char_data), ("bpe", args.bpe_data)):
            if data_dir is None:
                continue
            stored_points = ladders.get(kind, {}).get("points", [])
            if args.jobs > 1:
                run_new_points(kind, data_dir, args.work / kind, stored_points, args.threads, args.jobs)
            points = []
            for index, tokens in POINTS[kind]:
                point = run_point(data_dir, args.work / kind, index, tokens, stored_points, args.threads)
                speed = f"{point['seconds']}s, {point['tokens_per_second']:,.0f} tok/s"
                print(f"{kind} {point['shape']:<22} D {point['D']:>10,}: loss {point['loss']:.4f} ({speed})")
                points.append(point)
            ladders[kind] = {
                "data": _shown(data_dir),
                "unique_tokens": split_tokens(data_dir, "train"),
                "eval": EVAL,
                "points": points,
            }
    out = {
        "about": "scaling fits behind `lmforge train --auto`; made by bench/auto_ladder.py",
        "machine": cpu_model(),
        "default": "bpe",
        "fits": refit(ladders),
    }
    io.write_text(OUT, json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
