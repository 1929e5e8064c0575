"""What an in-training evaluation and checkpoint cost, against the run's own training speed.

`lmforge train --auto` sizes its evaluations from the training speed it measured (tune/auto_rule.py
EVAL_SPEEDUP: validation tokens/s over training tokens/s, and EVAL_SHARE of the run). For each run
folder given, this loads the newest checkpoint and, with the run's threads, precision and allocator,
times `--repeats` validation passes of the run's own `train.eval_tokens` (the loop's evaluation) and
as many checkpoint saves of the model with an AdamW state (into a scratch folder); the training
speed is the median of the run's logged tokens/s. It prints the CPU and one row per run. Each
evaluation is also timed, alternating, with the logits scored the way they were before bcb52a8 (the
float copy, cross-entropy and an argmax over a whole batch's logits at once: `score_whole_batch`).

    python bench/eval_cost.py build/bench_auto/runs/bpe_60s/auto build/bench_auto/runs/char_60s/auto
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lmforge import hardware, runs  # noqa: E402
from lmforge.checkpoints import save_checkpoint  # noqa: E402
from lmforge.eval import loss  # noqa: E402
from lmforge.train.data import open_data  # noqa: E402


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up: first-call allocations
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def score_whole_batch(logits, targets, is_text):
    """The scoring before bcb52a8, for comparison: eval/loss.py `score_logits`'s sums, computed over
    the whole (rows, vocab) batch at once, with an argmax for the accuracy."""
    logits = logits.float()
    nats = torch.nn.functional.cross_entropy(logits, targets, reduction="none").double().cpu()
    correct = int((logits.argmax(-1) == targets).sum())
    return float(nats.sum()), float(nats[is_text.cpu()].sum()), correct


def measure(run_dir: Path, repeats: int) -> dict:
    run = runs.load_run(run_dir, quiet=True)
    tcfg = run.config.train
    hardware.setup_like_training(tcfg)  # threads and allocator as the run had them
    device = torch.device("cpu")
    amp = hardware.autocast(device, tcfg.dtype)
    data = open_data(Path(run.config.data.path), run.config.data.weights)

    def evaluation(scorer):
        def run_once():
            kept, loss.score_logits = loss.score_logits, scorer
            try:
                return data.evaluate(run.model, tcfg.eval_tokens, max(1, tcfg.batch_size), device, amp)
            finally:
                loss.score_logits = kept

        return run_once

    ours, before = evaluation(loss.score_logits), evaluation(score_whole_batch)
    assert abs(ours()["loss"] - before()["loss"]) < 1e-6  # the same figure, both ways
    evaluate, whole = [], []
    for _ in range(repeats):  # alternating, so a change in the machine's speed hits both (warm: above)
        for fn, seconds in ((ours, evaluate), (before, whole)):
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
    optimizer = torch.optim.AdamW(run.model.parameters())
    for p in run.model.parameters():  # an optimizer state of the run's size
        p.grad = torch.zeros_like(p)
    optimizer.step()
    with tempfile.TemporaryDirectory() as scratch:
        steps = iter(range(1, 10_000))
        save = timed(lambda: save_checkpoint(Path(scratch), next(steps), run.model, [optimizer], {}), repeats)
    train_speed = statistics.median(m["tok_per_s"] for m in runs.read_metrics(run_dir) if "tok_per_s" in m)
    eval_speed = tcfg.eval_tokens / statistics.median(evaluate)
    return {
        "run": str(run_dir),
        "dtype": tcfg.dtype,
        "eval_tokens": tcfg.eval_tokens,
        "eval_s": statistics.median(evaluate),
        "eval_spread": (min(evaluate), max(evaluate)),
        "whole_s": statistics.median(whole),
        "save_s": statistics.median(save),
        "train_tps": train_speed,
        "eval_tps": eval_speed,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders made by `lmforge train`")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"CPU: {hardware.cpu_description()}, torch {torch.__version__}")
    print(
        "| run | precision | eval tokens | evaluation s, median (min-max) | checkpoint s | training tok/s "
        "| validation tok/s | ratio | scored whole, s (before bcb52a8) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for run_dir in args.runs:
        r = measure(run_dir, args.repeats)
        low, high = r["eval_spread"]
        print(
            f"| {r['run']} | {r['dtype']} | {r['eval_tokens']:,} | {r['eval_s']:.3f} ({low:.3f}-{high:.3f}) "
            f"| {r['save_s']:.3f} | {r['train_tps']:,.0f} | {r['eval_tps']:,.0f} "
            f"| {r['eval_tps'] / r['train_tps']:.2f}x | {r['whole_s']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
