"""`lmforge export` and `lmforge import`: a run <-> a Hugging Face model folder (see export/hf.py)."""

from __future__ import annotations

import json

from lmforge.cli.options import add_step_option


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a run as a Hugging Face model folder (verified against lmforge)",
        description="Export RUN_DIR's newest good checkpoint as a folder transformers loads with no "
        "custom code (Qwen3 / Llama / GPT-2), then check logits and greedy tokens against lmforge.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", default="hf", choices=["hf"], help="output format (default hf)")
    p.add_argument("--out", required=True, help="folder to write (must be new or empty)")
    add_step_option(p, "export")
    p.add_argument("--no-verify", action="store_true", help="skip loading it back in transformers")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_export)

    p = subparsers.add_parser(
        "import",
        help="read a Hugging Face model folder into a new run",
        description="Import a Qwen3 / Llama / GPT-2 folder (safetensors, tokenizer.json) into RUN_DIR, "
        "ready for `lmforge generate`, `eval`, `train --resume` or fine-tuning; checked with transformers.",
    )
    p.add_argument("hf_dir", metavar="HF_DIR")
    p.add_argument("--out", required=True, help="RUN_DIR to write (must be new or empty)")
    p.add_argument("--seq-len", type=int, help="cap the context (default: the model's own)")
    p.add_argument(
        "--max-steps", type=int, default=1000, help="train.max_steps of the new run (default 1000)"
    )
    p.add_argument("--no-verify", action="store_true", help="skip the comparison with transformers")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_import)


def _print(report: dict, as_json: bool, verb: str) -> None:
    if as_json:
        print(json.dumps(report))
        return
    print(f"{verb} {report['out']} ({report['architecture']})")
    if "verify" in report:
        v = report["verify"]
        print(
            f"verified: max logit difference {v['max_logit_diff']:.1e} on {v['prompts'] + 1} inputs, "
            f"{v['greedy_tokens_compared']} greedy tokens identical"
        )


def run_export(args) -> int:
    from lmforge.export.hf import export_hf

    _print(
        export_hf(args.run_dir, args.out, verify=not args.no_verify, step=args.step), args.json, "exported"
    )
    return 0


def run_import(args) -> int:
    from lmforge.errors import UserError
    from lmforge.export.hf import import_hf

    for flag, value in (("--seq-len", args.seq_len), ("--max-steps", args.max_steps)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1")
    report = import_hf(
        args.hf_dir, args.out, verify=not args.no_verify, seq_len=args.seq_len, max_steps=args.max_steps
    )
    _print(report, args.json, "imported")
    return 0
