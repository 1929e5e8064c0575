"""`lmforge finetune BACKBONE --task TASK ...`: fine-tune a trained model into a new run folder.

One verb, one task table: each task is a function of the parsed arguments (``TASKS``), so a new task
is one more entry and its options, not another verb. ``sft`` (chat) starts from an lmforge run;
classify, sentiment, ner and translate start from an lmforge run or a Hugging Face model folder.
"""

from __future__ import annotations

import argparse
import json
import sys

from lmforge.cli.options import add_config_flags
from lmforge.errors import UserError

# The flags of the classic tasks: each is the finetune_task keyword of the same name and, where one
# exists, a shortcut for a model.* setting -- checked against that setting's range (config.RANGES),
# with the flag named in the error.
TASK_FLAGS: dict[str, str | None] = {
    "lora_rank": "model.lora_rank",
    "lora_alpha": "model.lora_alpha",
    "seq_len": "model.seq_len",
    "freeze_backbone": None,
    "pooling": None,
    "subtoken": None,
    "unit": None,
    "from_scratch": None,
    "epochs": None,
}


def common_settings(args: argparse.Namespace) -> dict:
    """The keywords every task's fine-tuning takes, from the flags every task has."""
    return {
        "val_spec": args.val,
        "max_steps": args.max_steps,
        "overrides": args.overrides,
        "resume": args.resume,
        "progress": not args.no_progress and not args.json,
    }


def task_settings(args: argparse.Namespace) -> dict:
    """finetune_task's keywords from the TASK_FLAGS, each range-checked once (config.check_value)."""
    from lmforge.config import check_value

    settings = {}
    for name, key in TASK_FLAGS.items():
        value = getattr(args, name)
        if key is not None and value is not None:
            check_value("--" + name.replace("_", "-"), value, key)
        settings[name] = value
    return settings


def run_sft(args: argparse.Namespace):
    from lmforge.finetune.sft import finetune_sft

    if not args.train:
        raise UserError("--task sft needs --train FILE.jsonl (or hf:NAME) with conversations")
    return finetune_sft(args.run_dir, args.train, args.out, **common_settings(args)), {}


def run_task(args: argparse.Namespace):
    from lmforge.finetune.tasks import finetune_task

    if not args.train:
        raise UserError(f"--task {args.task} needs --train FILE (.jsonl / .csv) or hf:NAME")
    return finetune_task(
        args.run_dir, args.task, args.train, args.out, **common_settings(args), **task_settings(args)
    )


TASKS = {"sft": run_sft, "classify": run_task, "sentiment": run_task, "ner": run_task, "translate": run_task}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a trained model (chat SFT, classification, NER, translation) into a new run",
        description="Fine-tune BACKBONE (an lmforge run folder; for the classic tasks also a local Hugging "
        'Face model folder) into a new run folder. sft: JSONL conversations {"messages": [...]}; '
        'classify / sentiment: {"text", "label"}; ner: {"tokens", "tags"} (BIO); translate: '
        '{"source", "target"} -- as .jsonl, .csv or hf:NAME.',
    )
    p.add_argument("run_dir", metavar="BACKBONE", help="the pretrained run (or Hugging Face folder)")
    p.add_argument("--task", required=True, choices=list(TASKS), help="what to fine-tune for")
    p.add_argument("--train", help="training data: .jsonl / .csv file or hf:NAME[:SPLIT]")
    p.add_argument("--val", help="validation data (default: 1 in 10 training examples by stable hash)")
    p.add_argument("--out", required=True, help="NEW_RUN_DIR to write")
    add_config_flags(p, ["max_steps"])
    g = p.add_argument_group("classify / sentiment / ner / translate")
    g.add_argument("--lora-rank", type=int, default=0, help="LoRA adapters of rank R (0 = full fine-tuning)")
    g.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA scale: update = alpha/R * B A")
    g.add_argument("--freeze-backbone", action="store_true", help="train the head only (probing)")
    g.add_argument(
        "--pooling",
        choices=["last", "first", "mean"],
        help="classification: which hidden state (default: the recipe's for causal models, first for "
        "encoders)",
    )
    g.add_argument(
        "--subtoken",
        choices=["first", "last"],
        help="ner: the sub-token of a word that carries its tag (default: the recipe's for causal models, "
        "first for encoders)",
    )
    g.add_argument(
        "--epochs",
        type=float,
        help="passes over the training examples (default: the recipe's per task and method; "
        "--max-steps replaces it)",
    )
    g.add_argument(
        "--unit",
        choices=["line", "word"],
        default="line",
        help="translate: learn whole lines, or word by word for rewrites that keep most words (spelling)",
    )
    g.add_argument("--seq-len", type=int, help="longest input in tokens (default: the backbone's context)")
    g.add_argument(
        "--from-scratch",
        action="store_true",
        help="same architecture, random weights (a baseline for the pretrained backbone)",
    )
    p.add_argument("--resume", action="store_true", help="continue NEW_RUN_DIR from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the final summary as one JSON object")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=3e-4")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge import locks

    command = " ".join(["lmforge", *(sys.argv[1:] if args.argv is None else args.argv)])
    locks.claim_folder(args.out, "run", "--out", command, "fine-tuning into it would overwrite its files")
    result, metrics = TASKS[args.task](args)
    val = result.final_val
    summary = {
        "task": args.task,
        "run_dir": str(result.run_dir),
        "steps": result.steps,
        "wall_seconds": round(result.wall_seconds, 2),
        "val_loss": val.get("loss"),
        "val_bpb": val.get("bpb") if val.get("bpb") == val.get("bpb") else None,  # NaN: a task run
    }
    summary.update({k: v for k, v in metrics.items() if isinstance(v, int | float) and k != "n"})
    if args.json:
        print(json.dumps(summary))
    else:
        loss = f"; val loss {val['loss']:.4f}" if val else ""
        print(
            f"fine-tuned ({args.task}) {result.steps} steps in {result.wall_seconds:.1f}s "
            f"-> {result.run_dir}{loss}"
        )
    return 0
