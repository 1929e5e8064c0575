"""The guide's figures (matplotlib, Agg backend), each drawn from numbers docs/build.py measured.

Small on purpose (about 100 dpi, well under 150 KB each): they are read on a web page, not printed.
"""

from __future__ import annotations

import math
from pathlib import Path

from lmforge.eval.plots import pyplot

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str, size: int = 9) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=color, edgecolor="#333", linewidth=1))  # fmt: skip
    ax.text(x, y, text, ha="center", va="center", fontsize=size)


def _arrow(ax, x0: float, y0: float, x1: float, y1: float) -> None:
    ax.annotate(
        "", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "-|>", "color": "#333", "lw": 1.2}
    )


def transformer_block(cfg, path: Path) -> None:
    """The modern GPT of `cfg`, bottom (token ids) to top (next-token probabilities), with shapes."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 8.6))
    ax.set(xlim=(0, 10), ylim=(0, 15.2))
    ax.axis("off")
    C, V, H, hd = cfg.n_embd, cfg.vocab_size, cfg.hidden_dim, cfg.head_dim
    x, w = 4.6, 5.6
    steps = [
        (0.6, "token ids  (B, T)", "#eeeeee"),
        (1.8, f"token embedding  wte: {V} x {C}\n-> x  (B, T, {C})", "#fde2c8"),
        (3.4, "RMSNorm", "#e8e8f8"),
        (
            4.9,
            f"causal self-attention: {cfg.n_head} heads x {hd}\nq, k, v = x W_qkv; QK-norm; RoPE\n"
            f"softmax(q k^T / sqrt({hd})) v, then W_o",
            "#cfe3f7",
        ),  # fmt: skip
        (6.4, "+  (residual)", "#ffffff"),
        (7.6, "RMSNorm", "#e8e8f8"),
        (9.0, f"SwiGLU MLP: {C} -> 2 x {H}\nSiLU(gate) * up -> {C}", "#d4efd4"),
        (10.4, "+  (residual)", "#ffffff"),
        (11.7, "final RMSNorm", "#e8e8f8"),
        (12.9, f"output head  {C} -> {V}:  logits (B, T, {V})", "#fde2c8"),
        (14.3, "softmax -> probability of each next token", "#eeeeee"),
    ]
    heights = {4.9: 1.3, 9.0: 0.95}
    for y, text, color in steps:
        _box(ax, x, y, w, heights.get(y, 0.6), text, color)
    ys = [y for y, _, _ in steps]
    tops = {y: y + heights.get(y, 0.6) / 2 for y in ys}
    bottoms = {y: y - heights.get(y, 0.6) / 2 for y in ys}
    for a, b in zip(ys, ys[1:], strict=False):
        _arrow(ax, x, tops[a], x, bottoms[b])
    # residual connections: around each sub-layer, from before the norm to the "+"
    for start, plus in ((2.6, 6.4), (6.85, 10.4)):
        ax.plot([x + w / 2 + 0.3, x + w / 2 + 0.3], [start, plus], color="#555", lw=1.2)
        ax.plot([x, x + w / 2 + 0.3], [start, start], color="#555", lw=1.2)
        _arrow(ax, x + w / 2 + 0.3, plus, x + w / 2, plus)
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((x - w / 2 - 0.35, 2.75), w + 1.15, 8.05, fill=False, ls="--", ec="#888"))
    ax.text(0.15, 6.8, f"x {cfg.n_layer}\nblocks", fontsize=11, ha="left", va="center", color="#444")
    ax.set_title(f"The {cfg.n_layer}-layer, width-{C} GPT of the demo preset", fontsize=10)
    _save(fig, path)


def activations(path: Path) -> None:
    """ReLU, GELU, ReLU^2 and SiLU (SwiGLU's gate), computed by the very modules the models use."""
    import torch
    import torch.nn.functional as F

    from lmforge.models.layers import activation

    plt = pyplot()
    x = torch.linspace(-3, 3, 301)
    curves = {
        "ReLU  max(0, x)": activation("relu")(x),
        "GELU (tanh approx.)": activation("gelu")(x),
        "ReLU²  max(0, x)²": activation("relu2")(x),
        "SiLU  x·sigmoid(x)  (SwiGLU's gate)": F.silu(x),
    }
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for (label, y), color in zip(curves.items(), COLORS, strict=False):
        ax.plot(x, y, label=label, color=color, lw=1.8)
    ax.axhline(0, color="#999", lw=0.8)
    ax.axvline(0, color="#999", lw=0.8)
    ax.set(xlabel="x (input to the activation)", ylabel="f(x)", ylim=(-1, 4))
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    _save(fig, path)


def _split(metrics: list[dict]):
    train = [(m["step"], m["train/loss"]) for m in metrics if "train/loss" in m]
    val = [(m["step"], m["val/loss"], m["val/bpb"]) for m in metrics if "val/loss" in m]
    return train, val


def optimizer_curves(curves: dict[str, list[dict]], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for (name, metrics), color in zip(curves.items(), COLORS, strict=False):
        train, val = _split(metrics)
        ax.plot(*zip(*train, strict=True), color=color, lw=1.2, label=f"{name} (train)")
        ax.plot([v[0] for v in val], [v[1] for v in val], "o", color=color, ms=3.5)
    ax.set(xlabel="optimizer step", ylabel="loss (nats per token)", ylim=(None, 8.5))
    ax.set_title("Same model, data and batches; dots: validation loss", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


def schedules(configs: dict, max_steps: int, path: Path) -> None:
    from lmforge.train.schedule import lr_factor

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    steps = list(range(max_steps))
    for (name, cfg), color in zip(configs.items(), COLORS, strict=False):
        label = f"{name} (warm-up {cfg.warmup_steps}"
        label += f", floor {cfg.min_lr_frac:g})" if name != "constant" else ")"
        ax.plot(steps, [lr_factor(s, max_steps, cfg) for s in steps], color=color, lw=1.8, label=label)
    ax.set(xlabel=f"optimizer step (of {max_steps})", ylabel="learning rate / peak")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


def main_curve(metrics: list[dict], path: Path) -> None:
    plt = pyplot()
    train, val = _split(metrics)
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.plot(*zip(*train, strict=True), lw=1.2, label="train loss")
    ax.plot([v[0] for v in val], [v[1] for v in val], "o-", ms=4, label="validation loss")
    ax.axhline(math.log(4096), color="#999", ls="--", lw=1, label="ln(4096): a uniform guess")
    ax.set(xlabel="optimizer step", ylabel="loss (nats per token)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


def char_vs_bpe(curves: dict[str, list[dict]], path: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.6, 3.2))
    for (name, metrics), color in zip(curves.items(), COLORS, strict=False):
        _, val = _split(metrics)
        left.plot([v[0] for v in val], [v[1] for v in val], "o-", ms=3, color=color, label=name)
        right.plot([v[0] for v in val], [v[2] for v in val], "o-", ms=3, color=color, label=name)
    left.set(xlabel="optimizer step", ylabel="val loss (nats per token)", title="per token: not comparable")
    right.set(xlabel="optimizer step", ylabel="val bits per byte", title="per byte: comparable")
    for ax in (left, right):
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    _save(fig, path)


def sweep(points: dict, widths: list[int], lrs: list[float], params: dict, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for width, color in zip(widths, COLORS, strict=False):
        ax.plot(lrs, [points[(width, lr)] for lr in lrs], "o-", color=color,
                label=f"width {width} ({params[width] / 1e6:.2f} M parameters)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
    ax.minorticks_off()
    ax.set(xlabel="peak learning rate", ylabel="val bits per byte (lower is better)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


def data_mix(mixes: dict[str, dict[str, float]], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    sources = list(next(iter(mixes.values())))
    labels = {"shakespeare": "modern spelling", "shakespeare_folio": "First Folio spelling"}
    width = 0.8 / len(mixes)
    for i, ((mix, values), color) in enumerate(zip(mixes.items(), COLORS, strict=False)):
        xs = [j + (i - (len(mixes) - 1) / 2) * width for j in range(len(sources))]
        bars = ax.bar(xs, [values[s] for s in sources], width, color=color, label=f"trained on: {mix}")
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(range(len(sources)), [f"validation: {labels.get(s, s)}" for s in sources])
    ax.set(ylabel="val bits per byte")
    ax.set_ylim(0, max(v for m in mixes.values() for v in m.values()) * 1.2)
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, path)


def auto_choice(record: dict, metrics: list[dict], unique_tokens: int, path: Path) -> None:
    """--auto's candidates: the fit's predicted loss along the tokens each could see in the budget
    (a line, ending at its budget), and the chosen run's real validation losses (dots)."""
    import numpy as np

    from lmforge.tune.auto_rule import REPEAT_HALF_LIFE, effective_tokens
    from lmforge.tune.scaling import ScalingFit

    plt = pyplot()
    fit = ScalingFit(**{k: record["fit"][k] for k in ("E", "A", "alpha", "B", "beta")}, rmse_log=0.0)
    half_life = record["fit"].get("repeat_half_life", REPEAT_HALF_LIFE)  # runs from before it was fitted
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for cand, color in zip(record["candidates"], COLORS * 3, strict=False):
        d = np.geomspace(2e4, max(cand["tokens"], 3e4), 60)
        loss = [float(fit.loss(cand["n_params"], effective_tokens(x, unique_tokens, half_life))) for x in d]
        style = {"lw": 2.2} if cand["chosen"] else {"lw": 1, "alpha": 0.7}
        label = f"{cand['name']}: {cand['tokens_per_second'] / 1e3:.1f}k tok/s"
        ax.plot(d, loss, color=color, label=label + (" (chosen)" if cand["chosen"] else ""), **style)
        ax.plot([d[-1]], [loss[-1]], "o", color=color, ms=4)
    val = [(m["tokens"], m["val/loss"]) for m in metrics if "val/loss" in m]
    ax.plot([v[0] for v in val], [v[1] for v in val], "k^", ms=5, label="chosen run: real val loss")
    ax.set_xscale("log")
    ax.set(xlabel="training tokens", ylabel="val loss (nats per token)",
           title="predicted by the scaling fit; each line ends where the budget does")  # fmt: skip
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, path)
