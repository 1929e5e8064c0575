"""`lmforge demo`: the whole main job on the built-in corpus, one named step at a time.

collect -> clean -> tokenize -> encode -> train -> evaluate -> sample, each through the same CLI verb a
user would type (printed before it runs, under the step's name), ending with a short summary and a
pointer to docs/guide/, which explains every step with numbers from real runs. `make demo` runs this.
The model is chosen for the machine it runs on (`train --auto`) unless --config names a preset; the
train step takes the same --time-budget either way.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

from lmforge.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole pipeline end to end on the built-in corpus",
        description="Prepare the built-in Shakespeare corpus, train a small GPT within a time budget, "
        "evaluate it and print samples.",
    )
    p.add_argument("--out", default="demo", help="folder for the demo's data/ and run/ (default demo)")
    p.add_argument("--source", default="shakespeare", help="corpus (default: the built-in shakespeare)")
    p.add_argument(
        "--config",
        help="training preset (e.g. demo); default: none, `train --auto` chooses the model size, "
        "context, batch and learning rate for this machine and --time-budget",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=300.0,
        help="training seconds (default 300; with --auto the whole train step, its measuring included)",
    )
    p.add_argument("--prompt", default="ROMEO.\n", help="prompt for the final sample")
    p.add_argument("--fresh", action="store_true", help="redo the data step even if it exists")
    p.set_defaults(func=run)


def _step(number: int, name: str, argv: list[str]) -> None:
    from lmforge.cli import main

    print(f"\n=== step {number}/7: {name} ===", flush=True)
    print("$ lmforge " + shlex.join(argv), flush=True)
    code = main(argv)
    if code:
        raise UserError(f"demo step '{name}' failed (exit {code}); see the message above")


def run(args) -> int:
    out = Path(args.out)
    data_dir, run_dir = out / "data", out / "run"
    t0 = time.perf_counter()
    if args.fresh or not (data_dir / "shards" / "manifest.json").is_file():
        _step(1, "collect", ["data", "collect", "--source", args.source, "--out", str(data_dir)])
        _step(2, "clean", ["data", "clean", "--out", str(data_dir)])
        # the built-in corpus: whole plays in validation (hash split), as the demo's figures were made;
        # any other source: the automatic choice
        split = ["--split", "hash"] if args.source.startswith("shakespeare") else []
        _step(3, "tokenize", ["data", "tokenizer", "--out", str(data_dir), *split])
        _step(4, "encode", ["data", "encode", "--out", str(data_dir), *split])
    else:
        print(f"=== steps 1-4/7: collect, clean, tokenize, encode: already done in {data_dir} "
              "(pass --fresh to redo) ===")  # fmt: skip
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    _step(
        5,
        "train",
        [
            "train",
            "--data",
            str(data_dir),
            "--out",
            str(run_dir),
            *(["--config", args.config] if args.config else ["--auto"]),
            "--time-budget",
            str(args.time_budget),
        ],
    )
    _step(6, "evaluate", ["eval", str(run_dir)])
    _step(
        7,
        "sample",
        [
            "generate",
            str(run_dir),
            "--prompt",
            args.prompt,
            "--max-new-tokens",
            "200",
            "--temperature",
            "0.8",
            "--top-k",
            "50",
            "--seed",
            "1",
        ],
    )
    _summary(data_dir, run_dir, time.perf_counter() - t0)
    return 0


def _summary(data_dir: Path, run_dir: Path, seconds: float) -> None:
    from lmforge import runs
    from lmforge.eval.evaluate import evaluate_run

    splits = json.loads((data_dir / "shards" / "manifest.json").read_text(encoding="utf-8"))["splits"]
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    ckpt = runs.find_latest_good(run_dir)
    meta = ckpt.meta if ckpt else {}
    result = evaluate_run(run_dir, samples=2, sample_tokens=60, seed=7)
    train_logs = [r for r in runs.read_metrics(run_dir) if "tok_per_s" in r]
    tok_s = (
        sorted(r["tok_per_s"] for r in train_logs[1:])[len(train_logs[1:]) // 2] if len(train_logs) > 1 else 0
    )
    model = config["model"]
    print("\n=== summary ===")
    print(
        f"data       {splits['train']['tokens']:,} train / {splits['val']['tokens']:,} val tokens, "
        f"{splits['val']['bytes'] / max(1, splits['val']['tokens']):.2f} bytes/token ({data_dir})"
    )
    print(
        f"model      {model['family']} {model.get('n_layer')} layers x {model.get('n_embd')} wide, "
        f"context {model['seq_len']}, vocab {model['vocab_size']}"
    )
    print(
        f"training   {meta.get('step', 0)} steps, {meta.get('tokens', 0):,} tokens in "
        f"{meta.get('wall_seconds', 0):.0f}s, {tok_s / 1e3:.1f}k tokens/s (median)"
    )
    print(
        f"validation loss {result['val_loss']:.4f} | perplexity {result['perplexity']:.2f} | "
        f"bits/byte {result['bpb']:.4f} | accuracy {result['accuracy']:.1%}"
    )
    for i, text in enumerate(result.get("samples", []), 1):
        print(f"sample {i}: {text!r}")
    print(
        f"total {seconds:.0f}s. Run folder: {run_dir}. Next: `lmforge generate {run_dir} --prompt ...` "
        f"or `lmforge eval {run_dir} --samples 3`."
    )
    print(
        "The guide explains each of these seven steps with numbers and figures from real runs: "
        "docs/guide/README.md"
    )
