"""`lmforge report RUN`: a Markdown report with PNG curves for one run (compare.py: several runs).

A report gathers what is already on disk -- the run folder (config.json, run.json, metrics.jsonl,
the checkpoint's meta.json) and, when it still exists, the data folder it was trained on
(prepare_report.json, clean/clean_report.json, shards/manifest.json) -- and measures two things
that are not: validation bits-per-byte *per source* and a couple of samples.

Why per source: a mixture's single validation number hides what the mix does to each kind of text.
Each source's validation shards are evaluated separately with the same `evaluate_tokens` the
training loop uses, so a sweep over `data.weights.*` can be read source by source (the
data-composition view). Bits-per-byte, not loss, because it compares across tokenizers.

Every figure in the report comes from metrics.jsonl or a measurement made here; nothing is typed in.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
from pathlib import Path

from lmforge import io, runs
from lmforge.errors import UserError
from lmforge.eval.auto_report import auto_section
from lmforge.eval.plots import plot_curves, split_records
from lmforge.eval.tables import markdown_table


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def summarize(run_dir: Path) -> dict:
    """Everything about a run that is already on disk, as plain numbers (no model needed)."""
    run_dir = Path(run_dir)
    config = runs.read_run_config(run_dir)  # UserError for a folder that is not a run
    records = runs.read_metrics(run_dir)
    train, val = split_records(records)
    ckpt = runs.find_latest_good(run_dir, quiet=True)
    meta = ckpt.meta if ckpt else {}
    info = runs.read_run_info(run_dir)
    data_dir = Path(info.get("data_dir", config.data.path or ""))
    manifest = _read_json(data_dir / "shards" / "manifest.json") if str(data_dir) else {}
    train_split = manifest.get("splits", {}).get("train", {})
    wall = meta.get("wall_seconds") or (records[-1]["time"] if records else 0.0)
    tokens = meta.get("tokens") or (records[-1]["tokens"] if records else 0)
    mfus = [r["mfu"] for r in train if r.get("mfu")]
    last_val = val[-1] if val else {}
    return {
        "name": run_dir.name,
        "run_dir": run_dir,
        "config": config,
        "info": info,
        "records": records,
        "meta": meta,
        "data_dir": data_dir,
        "manifest": manifest,
        "steps": meta.get("step") or (records[-1]["step"] if records else 0),
        "tokens": tokens,
        "wall_seconds": wall,
        "tokens_per_second": tokens / wall if wall else None,
        "mfu": statistics.median(mfus) if mfus else None,
        "final_train_loss": train[-1]["train/loss"] if train else None,
        "val_loss": last_val.get("val/loss"),
        "val_bpb": last_val.get("val/bpb"),
        "val_ppl": last_val.get("val/ppl"),
        "best_val_bpb": min((r["val/bpb"] for r in val), default=None),
        "bytes_per_token": train_split["bytes"] / train_split["tokens"]
        if train_split.get("tokens") and train_split.get("bytes")
        else None,
    }


def per_source_bpb(loaded: runs.LoadedRun, data_dir: Path, max_tokens: int | None) -> dict[str, dict]:
    """Validation metrics of each source's val shards, evaluated separately ({} if one source)."""
    from lmforge.data.shards import open_split_by_source
    from lmforge.eval.loss import evaluate_tokens

    shards_dir = Path(data_dir) / "shards"
    if not (shards_dir / "manifest.json").is_file():
        return {}
    try:
        by_source = open_split_by_source(shards_dir, "val", expected_tokenizer_hash=loaded.tokenizer.hash)
    except UserError:
        return {}
    if len(by_source) < 2:
        return {}
    seq_len = loaded.config.model.seq_len
    return {
        name: evaluate_tokens(loaded.model, arrays, loaded.tokenizer.token_bytes, seq_len, max_tokens)
        for name, arrays in sorted(by_source.items())
    }


def samples(loaded: runs.LoadedRun, count: int, max_new_tokens: int) -> list[str]:
    from lmforge.generate.engine import generate_tokens

    tok = loaded.tokenizer
    return [
        tok.decode(
            list(
                generate_tokens(
                    loaded.model,
                    [tok.eot_id],
                    max_new_tokens,
                    temperature=0.8,
                    top_k=50,
                    seed=i,
                    eot_id=tok.eot_id,
                )
            )
        )
        for i in range(count)
    ]


def _data_card(s: dict) -> list[str]:
    data_dir, manifest = s["data_dir"], s["manifest"]
    if not manifest:
        return [f"The data folder `{data_dir}` is not available; no data card."]
    prep = _read_json(data_dir / "prepare_report.json")
    clean = _read_json(data_dir / "clean" / "clean_report.json")
    collected = prep.get("sources") or _read_json(data_dir / "sources.json")
    weights = s["config"].data.weights
    splits = manifest.get("splits", {})
    rows = []
    for name in sorted(splits.get("train", {}).get("sources", {})):
        src = collected.get(name, {})
        rows.append(
            [
                name,
                src.get("spec", "-"),
                float(weights.get(name, src.get("weight", 1.0))),
                src.get("n_docs"),
                splits["train"]["sources"][name].get("tokens"),
                splits.get("val", {}).get("sources", {}).get(name, {}).get("tokens"),
            ]
        )
    lines = [f"Data folder `{data_dir}`.", ""]
    lines.append(markdown_table(["source", "from", "weight", "docs", "train tokens", "val tokens"], rows))
    if clean:
        lines += [
            "",
            f"Cleaning: {clean.get('docs_in', 0):,} documents in, {clean.get('docs_out', 0):,} kept.",
        ]
        steps = [st for st in clean.get("steps", []) if st.get("dropped") or st.get("changed")]
        if steps:
            lines += [
                "",
                markdown_table(
                    ["rule", "dropped", "changed"],
                    [[st["name"], st.get("dropped", 0), st.get("changed", 0)] for st in steps],
                ),
            ]
    return lines


def run_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    n_samples: int = 2,
    sample_tokens: int = 64,
    eval_tokens: int | None = 65536,
) -> Path:
    """Write OUT/report.md (+ curves_*.png); OUT defaults to the run folder. Returns report.md."""
    run_dir = Path(run_dir)
    s = summarize(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir
    if (run_dir / "task.json").is_file():
        return task_report(run_dir, s, out_dir)
    loaded = runs.load_run(run_dir, quiet=True)
    plots = plot_curves([(s["name"], s["records"], s["bytes_per_token"])], out_dir)
    config, model = loaded.config, loaded.model
    tok_meta = _read_json(run_dir / "tokenizer" / "meta.json")
    by_source = per_source_bpb(loaded, s["data_dir"], eval_tokens) if s["manifest"] else {}

    md = [
        f"# Run report: {s['name']}",
        "",
        f"Run folder `{run_dir}`, checkpoint `{loaded.checkpoint.name}`.",
        "",
    ]
    md += ["## Final metrics", ""]
    scope = f"first {config.train.eval_tokens:,} val tokens"  # what training measured; `eval` reads the split
    md += [f"Validation figures from training: on the {scope} (`train.eval_tokens`); `lmforge eval RUN` "
           "measures the whole validation split.", ""]  # fmt: skip
    md.append(
        markdown_table(
            ["metric", "value"],
            [
                [f"validation loss (nats/token), {scope}", s["val_loss"]],
                [f"validation bits per byte, {scope}", s["val_bpb"]],
                [f"validation perplexity, {scope}", s["val_ppl"]],
                [f"best validation bits per byte, {scope}", s["best_val_bpb"]],
                ["last training loss", s["final_train_loss"]],
            ],
        )
    )
    best_step, best_val = loaded.meta.get("best_step"), loaded.meta.get("best_val")
    if best_step is not None and best_step != loaded.meta.get("step") and best_val is not None:
        end = f"{s['val_loss']:.4f}" if s["val_loss"] is not None else "not logged"
        md += ["", f"The validation loss was lowest at the checkpoint of step {best_step:,} ({best_val:.4f}, "
               f"{scope}; {end} at the end): the run overfit after it, or its last "
               "steps did not help. `lmforge eval RUN --step best` measures that checkpoint, and "
               "`generate`, `chat`, `serve` and `export` take `--step best` too."]  # fmt: skip
    md += ["", "## Curves", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    md += ["", "## Data", "", *_data_card(s)]
    if by_source:
        md += ["", "### Validation bits per byte per source", ""]
        md.append(
            markdown_table(
                ["source", "val tokens", "loss", "bits per byte"],
                [[n, m["tokens"], m["loss"], m["bpb"]] for n, m in by_source.items()],
            )
        )
    md += _harness_section(run_dir)
    bpt = tok_meta.get("val_bytes_per_token") or s["bytes_per_token"]
    md += ["", "## Tokenizer", ""]
    md.append(
        markdown_table(
            ["", ""],
            [
                ["type", tok_meta.get("kind", loaded.tokenizer.kind)],
                ["vocabulary", loaded.tokenizer.vocab_size],
                ["bytes per token (train split)", bpt],
                ["hash", loaded.tokenizer.hash[:16]],
            ],
        )
    )
    shape = {k: v for k, v in vars(config.model).items() if k != "vocab_size"}
    md += ["", "## Model", ""]
    md.append(
        markdown_table(
            ["", ""],
            [
                ["family", config.model.family],
                ["parameters", model.num_params()],
                ["FLOPs per token (training)", model.flops_per_token()],
                ["shape", ", ".join(f"{k}={v}" for k, v in shape.items() if k != "family")],
            ],
        )
    )
    tcfg = config.train
    md += ["", "## Training", ""]
    md.append(
        markdown_table(
            ["", ""],
            [
                ["steps", s["steps"]],
                ["tokens", s["tokens"]],
                ["wall time (s)", s["wall_seconds"]],
                ["tokens per second", s["tokens_per_second"]],
                ["MFU (median of logged steps)", s["mfu"]],
                ["skipped steps", s["meta"].get("skipped_steps", 0)],
                [
                    "optimizer",
                    f"{config.optim.name}, lr {config.optim.lr:g}, "
                    f"weight decay {config.optim.weight_decay:g}",
                ],
                ["schedule", f"{config.schedule.name}, warm-up {config.schedule.warmup_steps} steps"],
                [
                    "batch",
                    f"{tcfg.batch_size} x {config.model.seq_len} tokens, batch_tokens {tcfg.batch_tokens}",
                ],
                ["device / dtype", f"{tcfg.device} / {tcfg.dtype}"],
            ],
        )
    )
    md += auto_section(s["info"].get("auto"), s["val_loss"])
    if n_samples:
        md += ["", "## Samples", ""]
        for i, text in enumerate(samples(loaded, n_samples, sample_tokens)):
            md += [f"Sample {i + 1} (temperature 0.8, top-k 50, seed {i}):", "", "```text", text, "```", ""]
    md += ["", "## Hardware and versions", ""]
    md.append(
        markdown_table(
            ["", ""],
            [
                [
                    "trained with",
                    f"lmforge {s['info'].get('lmforge_version', '?')}, "
                    f"torch {s['info'].get('torch_version', '?')}",
                ],
                [
                    "report made on",
                    f"{platform.machine()} {platform.system()}, {_cores()} cores, "
                    f"python {sys.version.split()[0]}",
                ],
                ["torch here", _torch_version()],
            ],
        )
    )
    path = out_dir / "report.md"
    io.write_text(path, "\n".join(md) + "\n")
    return path


def _harness_section(run_dir: Path) -> list[str]:
    """The latest `lmforge eval --harness` results (harness.json), if there are any."""
    found = _read_json(run_dir / "harness.json")
    if not found.get("tasks"):
        return []
    rows = [[task, metric, value] for task, entry in found["tasks"].items()
            for metric, value in entry.get("metrics", {}).items()]  # fmt: skip
    note = f"lm-eval {found.get('lm_eval_version', '?')}, limit {found.get('limit')}, checkpoint "
    note += f"`{found.get('checkpoint', '?')}`"
    return ["", "## lm-evaluation-harness", "", note, "", markdown_table(["task", "metric", "value"], rows)]


def task_report(run_dir: Path, s: dict, out_dir: Path) -> Path:
    """A fine-tuned task run: its task metrics beside the trivial baseline, curves, training settings.

    The figures are the validation-set evaluation ``finetune`` recorded at the end (the ``task_eval``
    line of metrics.jsonl); a task run has no language-model bits-per-byte or samples to show.
    """
    from lmforge.finetune.predict import METRIC_KEYS

    info = _read_json(run_dir / "task.json")
    final = next((r for r in reversed(s["records"]) if r.get("event") == "task_eval"), None)
    plots = plot_curves([(s["name"], s["records"], None)], out_dir)
    md = [
        f"# Task run report: {s['name']}",
        "",
        f"Run folder `{run_dir}`: {info.get('task')} fine-tuned from "
        f"{info.get('backbone', {}).get('source')} "
        f"({info.get('examples', {}).get('train')} training, {info.get('examples', {}).get('val')} "
        f"validation examples; validation: {info.get('val')}).",
        "",
        "## Task metrics on the validation set",
        "",
    ]
    if final is None:
        md.append("No final task evaluation recorded (the fine-tuning did not finish); run `lmforge eval`.")
    else:
        keys = [k for k in METRIC_KEYS if f"val/{k}" in final]
        md.append(f"Baseline: {final.get('baseline') or '-'}, on the same examples.")
        md.append("")
        md.append(
            markdown_table(
                ["metric", "model", "baseline", "model - baseline"],
                [
                    [
                        k,
                        final[f"val/{k}"],
                        final.get(f"baseline/{k}"),
                        final[f"val/{k}"] - final[f"baseline/{k}"] if f"baseline/{k}" in final else None,
                    ]
                    for k in keys
                ],
            )
        )
    md += ["", "## Curves", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    config, tcfg = s["config"], s["config"].train
    lora = info.get("lora", {})
    how = (
        f"LoRA rank {lora.get('rank')}"
        if lora.get("rank")
        else "probe (backbone frozen)"
        if info.get("freeze_backbone")
        else "full"
    )
    md += ["", "## Training", ""]
    md.append(
        markdown_table(
            ["", ""],
            [
                ["fine-tuning", how],
                ["trainable parameters", info.get("trainable_params")],
                ["steps", s["steps"]],
                ["wall time (s)", s["wall_seconds"]],
                ["optimizer", f"{config.optim.name}, lr {config.optim.lr:g}"],
                ["batch", f"{tcfg.batch_size} examples"],
            ],
        )
    )
    path = out_dir / "report.md"
    io.write_text(path, "\n".join(md) + "\n")
    return path


def _cores() -> int:
    from lmforge.hardware import physical_cores

    return physical_cores()


def _torch_version() -> str:
    import torch

    return torch.__version__ + (f", CUDA {torch.version.cuda}" if torch.cuda.is_available() else ", CPU")
