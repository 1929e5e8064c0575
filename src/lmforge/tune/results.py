"""A sweep's results on disk: the trials sorted by their metric (results.csv, results.md), the winner
ready to rerun (best.toml, or best.txt for a fine-tuning sweep) and the plots (params.png, history.png)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from lmforge import io
from lmforge.config import to_toml
from lmforge.tune.space import SweepSpec
from lmforge.tune.task_trials import TaskData, finetune_command, metric_names


def column(metric: str) -> str:
    """results.csv's column of a metric: val/bpb -> val_bpb, val/macro_f1 -> val_macro_f1,
    val/bpb@poems -> val_bpb@poems."""
    return metric.replace("/", "_")


def trial_rows(study, spec: SweepSpec, optuna) -> list[dict]:
    """One dict per trial, sorted: complete by the metric, then pruned (by their value when stopped),
    then failed and interrupted. `val_bpb` / `val_loss` of a pruned trial are from its last evaluation.
    A finetune sweep's rows have the task's metrics, the baseline of the objective, epochs and lr."""
    states = optuna.trial.TrialState
    rows = []
    # a sweep over data with several sources: each source's bits-per-byte (the objective's first)
    per_source = {k for t in study.trials for k in t.user_attrs if k.startswith("val_bpb@")}
    per_source |= {column(spec.metric)} if spec.per_source is not None else set()
    per_source = sorted(per_source, key=lambda k: (k == "val_bpb@mean", k))  # the mean last
    for t in study.trials:
        if t.state == states.WAITING:
            continue
        state = {states.COMPLETE: "complete", states.PRUNED: "pruned", states.RUNNING: "running"}.get(
            t.state, "failed"
        )
        if t.user_attrs.get("interrupted"):
            state = "interrupted"
        if spec.verb == "finetune":
            names = [column(spec.metric)] + [f"val_{n}" for n in metric_names(spec)] + ["val_loss"]
            metrics = {n: t.user_attrs.get(n) for n in dict.fromkeys(names)}
            metrics["baseline"] = t.user_attrs.get("baseline")
            extra = {"epochs": t.user_attrs.get("epochs"), "lr": t.user_attrs.get("lr")}
        else:
            objective = [k for k in per_source if k == column(spec.metric)]
            metrics = {k: t.user_attrs.get(k) for k in [*objective, "val_bpb", "val_loss", *per_source]}
            extra = {}
        rows.append(
            {
                "trial": t.number,
                "state": state,
                **metrics,
                **{p.name: t.params.get(p.name) for p in spec.space},
                **extra,
                "steps": t.user_attrs.get("steps"),
                "tokens": t.user_attrs.get("tokens"),
                "seconds": t.user_attrs.get("seconds"),
                "error": t.user_attrs.get("error", ""),
                "run_dir": t.user_attrs.get("run_dir"),
            }
        )
    order = {"complete": 0, "pruned": 1, "failed": 2, "interrupted": 3, "running": 4}
    key = column(spec.metric)
    sign = -1 if spec.maximize else 1

    def sort_key(row: dict):
        value = row[key]
        return (
            order[row["state"]],
            sign * value if value is not None and math.isfinite(value) else math.inf,
            row["trial"],
        )

    return sorted(rows, key=sort_key)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_results(study, spec: SweepSpec, out_dir: Path, optuna) -> dict:
    rows = trial_rows(study, spec, optuna)
    if not rows:
        return {"trials": 0, "best": None}
    columns = list(rows[0])
    with io.writing(out_dir / "results.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    shown = [c for c in columns if c != "run_dir"]
    md = [f"# Sweep results ({spec.method}, sorted by {spec.metric})", ""]
    md += ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    md += ["| " + " | ".join(_cell(r[c]).replace("|", "/") for c in shown) + " |" for r in rows]
    best = rows[0] if rows[0]["state"] == "complete" else None
    if best and spec.verb == "finetune":
        params = {p.name: best[p.name] for p in spec.space}
        command = finetune_command(spec, TaskData.of(spec), params)
        value = best[column(spec.metric)]
        header = f"# Best trial {best['trial']:03d} of sweep '{out_dir}': {spec.metric} {value:.4f}"
        if best["baseline"] is not None:
            what = study.trials[best["trial"]].user_attrs.get("baseline_is")
            header += f" (baseline {best['baseline']:.4f}: {what})"
        io.write_text(out_dir / "best.txt", f"{header}\n{command}\n")
        md += ["", f"Best: trial {best['trial']:03d} -> `best.txt`:", "", f"    {command}"]
    elif best:
        config = io.read_json_object(Path(best["run_dir"]) / "config.json")
        config["model"].pop("vocab_size", None)  # read from the tokenizer
        config["data"].pop("path", None)  # given by --data
        header = (
            f"Best trial {best['trial']:03d} of sweep '{out_dir}': "
            f"{spec.metric} {best[column(spec.metric)]:.4f}\n"
            f"lmforge train --data {spec.data} --out runs/best --config {out_dir / 'best.toml'}\n"
            "The budget below is the trial's; raise train.max_steps for a full run."
        )
        io.write_text(out_dir / "best.toml", to_toml(config, header))
        md += ["", f"Best: trial {best['trial']:03d} -> `best.toml`."]
    md += ["", "![metric against each parameter](params.png)", "", "![trials](history.png)"]
    io.write_text(out_dir / "results.md", "\n".join(md) + "\n")
    plot_sweep(rows, spec, out_dir)
    counts = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "failed", "interrupted")}
    return {"trials": len(rows), **counts, "best": best}


def plot_sweep(rows: list[dict], spec: SweepSpec, out_dir: Path) -> None:
    """params.png: the metric of complete trials against each parameter; history.png: per trial."""
    from lmforge.eval.plots import pyplot

    plt = pyplot()
    key = column(spec.metric)
    done = [r for r in rows if r["state"] == "complete"]
    n = len(spec.space)
    fig, axes = plt.subplots(1, n, figsize=(min(4 * n, 14), 3.2), dpi=90, squeeze=False)
    for ax, param in zip(axes[0], spec.space, strict=True):
        values = [r[param.name] for r in done]
        if param.choices is not None and not all(isinstance(v, int | float) for v in param.choices):
            labels = [str(c) for c in param.choices]
            values = [labels.index(str(v)) for v in values]
            ax.set_xticks(range(len(labels)), labels)
        elif param.log:
            ax.set_xscale("log")
            ax.tick_params(axis="x", which="minor", labelbottom=False)  # they overlap on short ranges
        ax.scatter(values, [r[key] for r in done], s=18)
        ax.set(xlabel=param.name, ylabel=spec.metric)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with io.writing(out_dir / "params.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=90)
    for state, marker in (("complete", "o"), ("pruned", "x")):
        points = [(r["trial"], r[key]) for r in rows if r["state"] == state and r[key] is not None]
        if points:
            ax.scatter(*zip(*points, strict=True), marker=marker, label=state)
    ordered = sorted(done, key=lambda r: r["trial"])
    if ordered:
        pick = max if spec.maximize else min
        best = [pick(r[key] for r in ordered[: i + 1]) for i in range(len(ordered))]
        ax.step([r["trial"] for r in ordered], best, where="post", color="grey", label="best so far")
    ax.set(xlabel="trial", ylabel=spec.metric, title="trials (pruned: value when stopped)")
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend(fontsize=7)
    fig.tight_layout()
    with io.writing(out_dir / "history.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
