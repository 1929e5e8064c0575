"""The whole recipe in one script, through lmforge's Python API: data, model, training, evaluation, use.

    python docs/walkthrough.py --out walk/                            # the built-in corpus, a few minutes
    python docs/walkthrough.py --source notes/ --out walk/            # your own text (files or a folder)
    python docs/walkthrough.py --tiny --source notes/ --out walk/     # a tiny model, seconds (the tests)

Each step calls the functions the `lmforge` commands call and prints what it made; docs/guide/ explains
every number. OUT/ receives the data folder (OUT/data), the run folder (OUT/run) and summary.json, a
record of the figures printed, which the test suite checks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Model and training settings: the demo preset for a real run, a 2-layer width-32 model for --tiny.
FULL = {"preset": "demo", "steps": 200, "vocab_size": 4096, "overrides": {"train.eval_every": 50}}
TINY = {
    "preset": "gpt-tiny",
    "steps": 30,
    "vocab_size": 320,
    "overrides": {
        "train.batch_size": 4,
        "train.eval_every": 10,
        "train.eval_tokens": 1024,
        "train.log_every": 5,
        "optim.lr": 3e-3,
        "schedule.warmup_steps": 3,
    },
}
SAMPLING = {  # label -> generate_text options
    "greedy": {"temperature": 0.0},
    "temperature 0.8, top-k 50": {"temperature": 0.8, "top_k": 50},
    "temperature 1.0, top-p 0.9": {"temperature": 1.0, "top_p": 0.9},
}


def heading(number: int, name: str) -> None:
    print(f"\n=== {number}. {name} ===", flush=True)


def step_data(source: str, data_dir: Path, vocab_size: int) -> dict:
    """collect -> clean -> tokenizer -> encode, each step alone (as `lmforge data <step>`)."""
    from lmforge.data import prepare as P
    from lmforge.data.builtin import default_cache_dir
    from lmforge.data.sources import CollectConfig, SourceSpec
    from lmforge.data.tokenizer import load_tokenizer

    heading(1, "data: collect -> clean -> tokenize -> encode")
    # tail split: the last 10% of each source is validation, so even a tiny corpus has both splits
    split = P.SplitConfig(mode="tail", val_fraction=0.1)
    collected = P.collect(
        [SourceSpec(source)], CollectConfig(cache_dir=default_cache_dir(os.environ)), data_dir
    )
    for name, s in collected["sources"].items():
        print(f"collect   {name}: {s['n_docs']} documents, {s['n_chars']:,} characters")
    cleaned = P.clean(data_dir, P.CleanConfig())
    print(f"clean     {cleaned['docs_in']} -> {cleaned['docs_out']} documents")
    for step in cleaned["steps"]:
        did = f"dropped {step['dropped']}" if step["kind"] == "filter" else f"changed {step['changed']}"
        print(f"          {step['name']:<15} {did:<12} ({step['rule']})")
    tok_report = P.build_tokenizer(data_dir, P.TokenizerConfig("bpe", vocab_size), split)
    tok = load_tokenizer(data_dir / "tokenizer")
    merges = json.loads((data_dir / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8"))["model"][
        "merges"
    ]
    # merges are stored in byte-level form, where Ġ stands for a space and Ċ for a newline
    first = "  ".join(f"{a}+{b}" for a, b in merges[:6]).replace("Ġ", "␣").replace("Ċ", "↵")
    print(f"tokenizer BPE, {tok.vocab_size} tokens; first merges: {first}")
    print(f"          {tok_report['val_bytes_per_token']} bytes per token on the validation text")
    encoded = P.encode(data_dir, split)
    print(f"encode    {encoded['tokens']['train']:,} train / {encoded['tokens']['val']:,} val tokens "
          f"in {sum(encoded['shards'].values())} shards + shards/manifest.json")  # fmt: skip
    return {
        "docs_in": cleaned["docs_in"],
        "docs_out": cleaned["docs_out"],
        "vocab_size": tok.vocab_size,
        "n_merges": len(merges),
        "bytes_per_token": tok_report["val_bytes_per_token"],
        "tokens": encoded["tokens"],
    }


def step_model(data_dir: Path, settings: dict, steps: int):
    """The model of the preset: its parameter table, FLOPs per token and loss at initialisation."""
    import torch

    from lmforge import presets
    from lmforge.config import load_config
    from lmforge.data.shards import open_split
    from lmforge.data.tokenizer import load_tokenizer
    from lmforge.eval.loss import evaluate_tokens
    from lmforge.models.registry import build_model

    heading(2, f"model: the {settings['preset']} preset")
    tok = load_tokenizer(data_dir / "tokenizer")
    overrides = {**settings["overrides"], "train.max_steps": steps, "train.ckpt_every": steps}
    config = load_config(presets.path(settings["preset"]), overrides, tok.vocab_size)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model)
    table = model.param_table()
    for name, shape, count in table:
        print(f"  {name:<28} {' x '.join(map(str, shape)):>12} {count:>10,}")
    total = sum(count for _, _, count in table)
    print(f"  {'total':<28} {'':>12} {total:>10,} (model.num_params() = {model.num_params():,})")
    print(f"  {model.flops_per_token():,} training FLOPs per token")
    val = open_split(data_dir / "shards", "val")
    init = evaluate_tokens(model, val, tok.token_bytes, config.model.seq_len, 4096)
    print(f"  loss at initialisation {init['loss']:.3f} vs ln(vocab) = {math.log(tok.vocab_size):.3f}")
    info = {
        "num_params": model.num_params(),
        "param_table_sum": total,
        "flops_per_token": model.flops_per_token(),
        "init_loss": init["loss"],
        "ln_vocab": math.log(tok.vocab_size),
    }
    return config, info


def step_train(config, data_dir: Path, run_dir: Path, tiny: bool) -> dict:
    from lmforge import runs
    from lmforge.train.loop import train

    heading(3, f"training: {config.train.max_steps} steps of {config.optim.name}, cross-entropy")
    result = train(config, data_dir, run_dir, progress=not tiny)
    if result.stopped_by in ("SIGINT", "SIGTERM"):
        raise SystemExit(f"training stopped by {result.stopped_by}; run the walkthrough again to redo it")
    losses = [r["train/loss"] for r in runs.read_metrics(run_dir) if "train/loss" in r]
    print(f"  train loss {losses[0]:.3f} (first log) -> {losses[-1]:.3f}; {result.tokens:,} tokens "
          f"in {result.wall_seconds:.0f}s")  # fmt: skip
    return {"steps": result.steps, "first_loss": losses[0], "last_loss": losses[-1], "val": result.final_val}


def step_evaluate(run_dir: Path) -> dict:
    from lmforge.eval.evaluate import evaluate_run

    heading(4, "evaluation: loss -> perplexity -> bits per byte")
    result = evaluate_run(run_dir)
    print(f"  on {result['tokens']:,} validation tokens: loss {result['val_loss']:.3f} nats/token, "
          f"perplexity {result['perplexity']:.1f}, {result['bpb']:.3f} bits per byte, "
          f"accuracy {result['accuracy']:.1%}")  # fmt: skip
    return {k: result[k] for k in ("val_loss", "perplexity", "bpb", "accuracy", "tokens")}


def step_sample(run_dir: Path, prompt: str, max_new_tokens: int) -> dict:
    from lmforge import runs
    from lmforge.generate.engine import generate_text

    heading(5, "using the model: one prompt, three sampling settings")
    run = runs.load_run(run_dir)
    samples = {}
    for label, options in SAMPLING.items():
        text = "".join(generate_text(run.model, run.tokenizer, prompt, max_new_tokens, seed=1, **options))
        samples[label] = text
        print(f"--- {label} ---\n{prompt}{text}")
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="lmforge's recipe, step by step, through its Python API")
    parser.add_argument("--out", required=True, help="folder for data/, run/ and summary.json")
    parser.add_argument("--source", default="shakespeare", help="text file or folder (default: built-in)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and a few steps: seconds")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 200, tiny 30)")
    parser.add_argument("--prompt", default="Ham.\n", help="prompt for the samples")
    args = parser.parse_args(argv)
    from lmforge import logs

    logs.configure()  # the training messages print as the `lmforge train` verb prints them
    settings = TINY if args.tiny else FULL
    out = Path(args.out)
    data_dir, run_dir = out / "data", out / "run"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)  # a walkthrough always trains afresh
    start = time.perf_counter()
    summary = {"source": args.source, "tiny": args.tiny, "preset": settings["preset"]}
    summary["data"] = step_data(args.source, data_dir, settings["vocab_size"])
    config, summary["model"] = step_model(data_dir, settings, args.steps or settings["steps"])
    summary["train"] = step_train(config, data_dir, run_dir, args.tiny)
    summary["eval"] = step_evaluate(run_dir)
    summary["samples"] = step_sample(run_dir, args.prompt, 24 if args.tiny else 60)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"\ndone in {summary['seconds']:.0f}s; summary in {out / 'summary.json'}; the guide: docs/guide/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
