"""Training curves as PNG files: loss and bits-per-byte against steps, tokens and wall time.

matplotlib is an optional dependency (the `tune` extra), imported lazily with the Agg backend so
plots render on a machine without a display. Every figure is small (about 100 dpi, < 150 KB): the
plots are for reading a run at a glance and for the README, not for print.

Train bits-per-byte is not measured during training (only the loss is); the curve shown is an
estimate, loss / ln 2 / (mean UTF-8 bytes per training token), drawn dashed and labelled as such.
Validation bits-per-byte is measured exactly (special tokens excluded, see eval/loss.py).
"""

from __future__ import annotations

import math
from pathlib import Path

from lmforge import io
from lmforge.errors import UserError

X_AXES = {"step": "optimizer steps", "tokens": "training tokens", "time": "wall time (s)"}


def pyplot():
    """matplotlib.pyplot on the Agg backend, or a UserError naming the extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("plots need matplotlib; pip install 'lmforge[tune]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def split_records(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(train lines, eval lines) of a metrics.jsonl."""
    train = [r for r in records if "train/loss" in r]
    val = [r for r in records if "val/loss" in r]
    return train, val


def plot_curves(
    series: list[tuple[str, list[dict], float | None]], out_dir: Path, prefix: str = "curves"
) -> list[Path]:
    """One PNG per x axis (step, tokens, time), each with a loss panel and a bpb panel.

    `series`: (label, metrics records, mean bytes per training token or None) per run; several runs
    are overlaid in one colour each (train solid, validation dots).
    """
    plt = pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    paths = []
    for x, x_label in X_AXES.items():
        fig, (ax_loss, ax_bpb) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=90)
        for i, (label, records, bytes_per_token) in enumerate(series):
            colour = colours[i % len(colours)]
            name = f"{label} " if len(series) > 1 else ""
            train, val = split_records(records)
            if train:
                xs = [r[x] for r in train]
                ax_loss.plot(xs, [r["train/loss"] for r in train], color=colour, lw=1.2, label=f"{name}train")
                if bytes_per_token:
                    scale = 1 / (math.log(2) * bytes_per_token)
                    ax_bpb.plot(
                        xs,
                        [r["train/loss"] * scale for r in train],
                        color=colour,
                        lw=1,
                        ls="--",
                        alpha=0.7,
                        label=f"{name}train (estimate)",
                    )
            if val:
                xs = [r[x] for r in val]
                ax_loss.plot(
                    xs, [r["val/loss"] for r in val], "o-", color=colour, ms=3, lw=0.8, label=f"{name}val"
                )
                ax_bpb.plot(
                    xs, [r["val/bpb"] for r in val], "o-", color=colour, ms=3, lw=0.8, label=f"{name}val"
                )
        ax_loss.set(xlabel=x_label, ylabel="loss (nats / token)", title="loss")
        ax_bpb.set(xlabel=x_label, ylabel="bits per byte", title="bits per byte")
        for ax in (ax_loss, ax_bpb):
            ax.grid(alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{prefix}_{x}.png"
        with io.writing(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        paths.append(path)
    return paths
