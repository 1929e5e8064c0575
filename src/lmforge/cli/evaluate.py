"""`lmforge eval`: loss, perplexity, bits-per-byte and samples of a trained run; with `--task`, the
task metrics of a fine-tuned run on a labelled file."""

from __future__ import annotations

import json

from lmforge.cli.options import add_step_option


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
    add_step_option(p, "evaluate")
    p.add_argument("--harness", metavar="TASK[,TASK]",
                   help="lm-evaluation-harness tasks (names, or paths of task YAML files / folders); "
                   "results go to RUN_DIR/harness.json (the `eval` extra)")  # fmt: skip
    p.add_argument(
        "--limit", type=float, help="--harness: at most N examples per task (a float < 1: a fraction)"
    )
    p.add_argument(
        "--num-fewshot", type=int, help="--harness: few-shot examples per prompt (default: the task's)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="--harness: sequences per forward pass")
    p.add_argument("--no-progress", action="store_true", help="--harness: no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from lmforge.errors import UserError
    from lmforge.eval.evaluate import evaluate_run, format_table, to_json

    if args.harness:
        return run_harness(args)
    if args.task or args.data or (Path(args.run_dir) / "task.json").is_file():
        if args.step is not None:
            raise UserError("--step is for language-model runs; a task run keeps its newest checkpoint")
        return run_task(args)
    if args.max_tokens is not None and args.max_tokens <= 0:
        raise UserError("--max-tokens must be > 0")
    result = evaluate_run(
        args.run_dir, args.text, args.split, args.max_tokens, args.samples, args.sample_tokens, args.seed,
        step=args.step,
    )  # fmt: skip
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


def run_harness(args) -> int:
    import os

    from lmforge import runs
    from lmforge.errors import UserError
    from lmforge.eval import harness

    names = [n.strip() for n in args.harness.split(",") if n.strip()]
    if not names:
        raise UserError("--harness needs at least one task name or task YAML path")
    if args.limit is not None and args.limit <= 0:
        raise UserError(f"--limit ({args.limit:g}) must be > 0")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise UserError(f"--num-fewshot ({args.num_fewshot}) must be >= 0")
    if args.batch_size < 1:
        raise UserError(f"--batch-size ({args.batch_size}) must be >= 1")
    harness.require_lm_eval()
    if all(os.path.exists(n) for n in names):  # local tasks: never reach for the network
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    loaded = runs.load_run(args.run_dir, step=args.step)
    result = harness.run_harness(
        loaded, names, limit, args.num_fewshot, args.batch_size, not args.no_progress
    )
    path = harness.save(loaded.run_dir, result)
    if args.json:
        print(json.dumps(result))
    else:
        print(harness.format_table(result))
        print(f"(per-example results in {path})")
    return 0
