"""`lmforge predict RUN_DIR [--input FILE]`: label, tag or translate new text with a fine-tuned run.

One input per line (stdin by default), processed in batches; one output line per input line:
classification prints the label, NER the words as `word/TAG`, translation the translated text.
With `--json`, one JSON object per line instead (with the label's probability for classification).
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="label / tag / translate text with a fine-tuned task run",
        description="Read one text per line (stdin or --input) and print one prediction per line.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run written by `lmforge finetune --task ...`")
    p.add_argument("--input", help="UTF-8 text file, one input per line (default: stdin)")
    p.add_argument("--batch-size", type=int, default=32, help="inputs per forward pass")
    p.add_argument("--beam", type=int, default=4, help="translate: beam size (1 = greedy)")
    p.add_argument(
        "--temperature", type=float, default=0.0, help="translate: > 0 samples instead of beam search"
    )
    p.add_argument("--seed", type=int, default=None, help="translate: seed for sampling")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


def _read_lines(path: str | None) -> list[str]:
    from pathlib import Path

    from lmforge.errors import UserError

    if path is None:
        return [line.rstrip("\n") for line in sys.stdin]
    if not Path(path).is_file():
        raise UserError(f"input file '{path}' does not exist; pass a text file with one input per line")
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"input file '{path}' is not UTF-8 text") from None


def run(args: argparse.Namespace) -> int:
    from lmforge import hardware
    from lmforge.errors import UserError
    from lmforge.finetune import predict as P

    if args.batch_size < 1 or args.beam < 1 or args.temperature < 0:
        raise UserError("need --batch-size >= 1, --beam >= 1 and --temperature >= 0")
    hardware.setup_threads(0)
    run_ = P.load_task_run(args.run_dir)
    lines = _read_lines(args.input)
    records: list[dict]
    if run_.kind == "classify":
        preds, probs = P.classify_texts(run_, lines, args.batch_size)
        records = [
            {"text": t, "label": run_.labels[i], "probability": round(p, 4)}
            for t, i, p in zip(lines, preds, probs, strict=True)
        ]
        plain = [r["label"] for r in records]
    elif run_.kind == "ner":
        sentences = [line.split() for line in lines]
        tags = P.tag_words(run_, sentences, args.batch_size)
        records = [{"tokens": s, "tags": t} for s, t in zip(sentences, tags, strict=True)]
        plain = [
            " ".join(f"{w}/{g}" for w, g in zip(s, t, strict=True))
            for s, t in zip(sentences, tags, strict=True)
        ]
    else:
        outputs = P.translate_texts(run_, lines, args.beam, temperature=args.temperature, seed=args.seed)
        records = [{"source": s, "translation": o} for s, o in zip(lines, outputs, strict=True)]
        plain = outputs
    for record, text in zip(records, plain, strict=True):
        print(json.dumps(record) if args.json else text)
    return 0
