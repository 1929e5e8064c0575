"""`lmforge eval`: loss, perplexity, bits-per-byte and samples of a trained run; with `--task`, the
task metrics of a fine-tuned run on a labelled file."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a run: loss, perplexity, bits-per-byte",
        description="Evaluate RUN_DIR's newest good checkpoint on its validation shards or on a text file.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--text", help="evaluate on this UTF-8 text file instead of the validation split")
    p.add_argument("--split", default="val", choices=["val", "train"], help="which shards (default val)")
    p.add_argument("--max-tokens", type=int, help="evaluate only the first N target tokens")
    p.add_argument("--samples", type=int, default=0, help="also generate N samples")
    p.add_argument("--sample-tokens", type=int, default=64, help="new tokens per sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--task",
        choices=["classify", "sentiment", "ner", "translate"],
        help="a fine-tuned task run: its task metrics on --data (default: the run's own task)",
    )
    p.add_argument("--data", help="labelled .jsonl / .csv file (or hf:NAME) for --task")
    p.add_argument("--beam", type=int, default=4, help="translate: beam size (1 = greedy)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from lmforge.errors import UserError
    from lmforge.eval.evaluate import evaluate_run, format_table, to_json

    if args.task or args.data or (Path(args.run_dir) / "task.json").is_file():
        return run_task(args)
    if args.max_tokens is not None and args.max_tokens <= 0:
        raise UserError("--max-tokens must be > 0")
    result = evaluate_run(
        args.run_dir, args.text, args.split, args.max_tokens, args.samples, args.sample_tokens, args.seed
    )
    print(to_json(result) if args.json else format_table(result))
    return 0


def run_task(args) -> int:
    from lmforge.errors import UserError
    from lmforge.finetune.predict import evaluate_task_file, format_metrics

    if not args.data:
        raise UserError("task evaluation needs --data FILE with labelled examples (.jsonl / .csv or hf:NAME)")
    if args.beam < 1:
        raise UserError(f"--beam ({args.beam}) must be >= 1")
    result = evaluate_task_file(args.run_dir, args.data, args.task, args.beam)
    print(json.dumps(result) if args.json else format_metrics(result))
    return 0
