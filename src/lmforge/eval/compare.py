"""`lmforge report RUN RUN ...`: several runs side by side -- one table and overlaid curves.

Each run is summarised exactly as its own report summarises it (report.summarize), so the two
never disagree; runs are sorted by final validation bits per byte, which compares across tokenizers.
"""

from __future__ import annotations

import math
from pathlib import Path

from lmforge import io
from lmforge.eval.plots import plot_curves
from lmforge.eval.report import markdown_table, summarize


def compare_report(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """Several runs: one table and overlaid curves in OUT (report.md + compare_*.png)."""
    summaries = [summarize(Path(r)) for r in run_dirs]
    names = [s["name"] for s in summaries]
    for s in summaries:  # same folder name under different parents: tell them apart
        if names.count(s["name"]) > 1:
            s["name"] = f"{s['run_dir'].parent.name}/{s['name']}"
    out_dir = Path(out_dir)
    plots = plot_curves(
        [(s["name"], s["records"], s["bytes_per_token"]) for s in summaries], out_dir, "compare"
    )
    rows = [
        [
            s["name"],
            s["config"].model.family,
            s["steps"],
            s["tokens"],
            s["wall_seconds"],
            s["tokens_per_second"],
            s["final_train_loss"],
            s["val_loss"],
            s["val_bpb"],
            s["best_val_bpb"],
        ]
        for s in sorted(summaries, key=lambda s: s["val_bpb"] if s["val_bpb"] is not None else math.inf)
    ]
    md = ["# Run comparison", "", "Sorted by final validation bits per byte.", ""]
    md.append(
        markdown_table(
            [
                "run",
                "family",
                "steps",
                "tokens",
                "wall (s)",
                "tokens/s",
                "train loss",
                "val loss",
                "val bpb",
                "best val bpb",
            ],
            rows,
        )
    )
    md += ["", "## Curves", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    path = out_dir / "report.md"
    io.write_text(path, "\n".join(md) + "\n")
    return path
