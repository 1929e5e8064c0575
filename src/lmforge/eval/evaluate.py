"""`lmforge eval`: a trained run measured on its validation split or on any text file.

Reports mean loss (nats/token), perplexity, bits-per-byte and next-token accuracy over *every*
target token of the chosen text (non-overlapping windows of the model's context), plus a few samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmforge import runs
from lmforge.errors import UserError
from lmforge.eval.loss import evaluate_tokens


def read_text_file(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"text file '{path}' does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"'{path}' is not UTF-8 text (byte {exc.start}); convert it with iconv first"
        ) from None
    if not text.strip():
        raise UserError(f"text file '{path}' is empty; pass a file with some text in it")
    return text


def evaluation_tokens(run: runs.LoadedRun, text_file: str | None, split: str) -> tuple[list[np.ndarray], str]:
    """Token arrays to evaluate on, and a label naming them."""
    tokenizer = run.tokenizer
    if text_file:
        ids = [tokenizer.eot_id, *tokenizer.encode(read_text_file(Path(text_file)))]
        return [np.asarray(ids, dtype=np.int64)], str(text_file)
    from lmforge.data.shards import open_split, read_manifest

    data_dir = Path(run.info.get("data_dir", ""))
    shards_dir = data_dir / "shards"
    if not shards_dir.is_dir():
        raise UserError(f"the run's data folder '{data_dir}' is gone; pass --text FILE to evaluate on a file")
    manifest = read_manifest(shards_dir)
    if manifest.get("tokenizer_hash") != tokenizer.hash:
        raise UserError(
            f"the shards in '{shards_dir}' were made with another tokenizer than this run's; "
            "pass --text FILE or re-encode the data with the run's tokenizer"
        )
    return open_split(shards_dir, split, expected_tokenizer_hash=tokenizer.hash), f"{data_dir.name}/{split}"


def evaluate_run(
    run_dir: str | Path,
    text_file: str | None = None,
    split: str = "val",
    max_tokens: int | None = None,
    samples: int = 0,
    sample_tokens: int = 64,
    seed: int = 0,
    step: int | str | None = None,
) -> dict:
    run = runs.load_run(run_dir, step=step)
    arrays, label = evaluation_tokens(run, text_file, split)
    metrics = evaluate_tokens(
        run.model, arrays, run.tokenizer.token_bytes, run.config.model.seq_len, max_tokens
    )
    # Say exactly what was measured: training and `report` use the first train.eval_tokens of the split
    scope = f"first {metrics['tokens']:,} tokens" if max_tokens else f"all {metrics['tokens']:,} tokens"
    result = {
        "run": str(run_dir),
        "checkpoint": run.checkpoint.name,
        "on": f"{label}, {scope}",
        "val_loss": metrics["loss"],
        "perplexity": metrics["perplexity"],
        "bpb": metrics["bpb"],
        "accuracy": metrics.get("accuracy"),
        "tokens": metrics["tokens"],
        "bytes": metrics.get("bytes"),
    }
    if samples:
        from lmforge.generate.engine import generate_tokens

        texts = []
        for i in range(samples):
            ids = generate_tokens(
                run.model,
                [run.tokenizer.eot_id],
                sample_tokens,
                temperature=0.8,
                top_k=50,
                seed=seed + i,
                eot_id=run.tokenizer.eot_id,
            )
            texts.append(run.tokenizer.decode(list(ids)))
        result["samples"] = texts
    return result


def format_table(result: dict) -> str:
    rows = [
        ("evaluated on", result["on"]),
        ("checkpoint", result["checkpoint"]),
        ("tokens", f"{result['tokens']:,}"),
        ("loss (nats/token)", f"{result['val_loss']:.4f}"),
        ("perplexity", f"{result['perplexity']:.3f}"),
        ("bits per byte", f"{result['bpb']:.4f}"),
        ("next-token accuracy", f"{result['accuracy']:.2%}" if result.get("accuracy") is not None else "-"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    for i, text in enumerate(result.get("samples", [])):
        lines.append(f"--- sample {i + 1} ---\n{text}")
    return "\n".join(lines)


def to_json(result: dict) -> str:
    return json.dumps(result)
