"""`lmforge finetune RUN_DIR --task TASK ...`: fine-tune a trained run into a new run folder.

One verb, one task table: each task is a function of the parsed arguments (``TASKS``), so a new task
(classification, NER, translation) is one more entry and its options, not another verb.
"""

from __future__ import annotations

import argparse
import json
import sys

from lmforge.errors import UserError


def run_sft(args: argparse.Namespace):
    from lmforge.finetune.sft import finetune_sft

    if not args.train:
        raise UserError("--task sft needs --train FILE.jsonl (or hf:NAME) with conversations")
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    return finetune_sft(
        args.run_dir,
        args.train,
        args.out,
        val_spec=args.val,
        max_steps=args.max_steps,
        overrides=args.overrides,
        resume=args.resume,
        progress=not args.no_progress and not args.json,
        log=log,
    )


TASKS = {"sft": run_sft}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a trained run (chat SFT) into a new run",
        description="Fine-tune RUN_DIR into a new run folder. --task sft: chat fine-tuning on JSONL "
        'conversations {"messages": [{"role": "system"|"user"|"assistant", "content": ...}]}.',
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the pretrained run to start from")
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="what to fine-tune for")
    p.add_argument("--train", help="training data: a .jsonl file or hf:NAME[:SPLIT]")
    p.add_argument("--val", help="validation data (default: every 20th training conversation)")
    p.add_argument("--out", required=True, help="NEW_RUN_DIR to write")
    p.add_argument("--max-steps", type=int, help="optimizer steps (train.max_steps)")
    p.add_argument("--resume", action="store_true", help="continue NEW_RUN_DIR from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the final summary as one JSON object")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=3e-4")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = TASKS[args.task](args)
    val = result.final_val
    summary = {
        "task": args.task,
        "run_dir": str(result.run_dir),
        "steps": result.steps,
        "wall_seconds": round(result.wall_seconds, 2),
        "val_loss": val.get("loss"),
        "val_bpb": val.get("bpb"),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        loss = f"; val loss {val['loss']:.4f}" if val else ""
        print(
            f"fine-tuned ({args.task}) {result.steps} steps in {result.wall_seconds:.1f}s "
            f"-> {result.run_dir}{loss}"
        )
    return 0
