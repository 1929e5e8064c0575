"""`lmforge scaling`: a ladder of model sizes at several compute budgets, and a scaling-law fit.

    L(N, D) = E + A / N^alpha + B / D^beta          (Hoffmann et al. 2022, "Chinchilla", approach 3)

N is the model's non-embedding parameter count (the lm head included), D the training tokens, L the
validation loss in nats per token. Each budget C is spent as C = 6 N D (Kaplan et al. 2020: 6 FLOPs
per parameter per token), so at a fixed C a smaller model sees more tokens: an IsoFLOP ladder.

The fit minimises a Huber loss (delta 1e-3) on the residuals of log L, from a grid of starting
points, with scipy's least_squares -- as in Chinchilla's appendix D.2. For C = 6 N D the loss-optimal
size has a closed form: N_opt = G (C/6)^(beta/(alpha+beta)), G = (alpha A / (beta B))^(1/(alpha+beta)).

Plainly: the fit is only as good as the ladder. A few tiny models trained for a minute on a CPU
give five numbers that describe *these* points; extrapolating far beyond the largest N or C is a
guess. The report shows every point's residual so a reader can judge.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lmforge import io
from lmforge.errors import UserError

logger = logging.getLogger(__name__)

DEFAULT_WIDTHS = (16, 32, 64)  # n_embd of the ladder (n_head = n_embd / 16, n_layer from the preset)
DEFAULT_BUDGETS = (1e10, 3e10, 1e11)  # training FLOPs per run: minutes in all on two cores
LADDER_BASE = {  # small, fast and evaluated once at the end; overrides may change any of it
    "model.n_layer": 2,
    "model.seq_len": 64,
    "train.batch_size": 8,
    "optim.lr": 3e-3,
    "schedule.warmup_steps": 10,
    "train.max_steps": 1_000_000,  # the token budget decides the length
    "train.eval_every": 1_000_000,  # one validation pass, at the end
    "train.ckpt_every": 1_000_000,
    "train.eval_tokens": 16384,
    "train.log_every": 50,
    "train.keep_last": 1,
}


@dataclass
class ScalingFit:
    E: float
    A: float
    alpha: float
    B: float
    beta: float
    rmse_log: float  # root-mean-square residual of log L over the points

    def loss(self, n, d):
        return self.E + self.A / np.power(n, self.alpha) + self.B / np.power(d, self.beta)

    def optimal(self, flops: float) -> tuple[float, float, float]:
        """(N_opt, D_opt, L) minimising L(N, D) subject to 6 N D = flops."""
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        n = g * (flops / 6) ** (self.beta / (self.alpha + self.beta))
        d = flops / (6 * n)
        return n, d, float(self.loss(n, d))


def fit_scaling(n, d, loss) -> ScalingFit:
    """Fit E, A, alpha, B, beta to points (N, D, L) by Huber-robust least squares in log space."""
    from scipy.optimize import least_squares

    log_n, log_d, log_l = (np.log(np.asarray(v, dtype=np.float64)) for v in (n, d, loss))
    if len(log_l) < 6:
        raise UserError(
            f"a scaling fit needs at least 6 points (5 unknowns), got {len(log_l)}; add sizes or budgets"
        )

    def residuals(theta):  # theta = (log E, log A, alpha, log B, beta)
        e, a, alpha, b, beta = theta
        terms = np.stack([np.full_like(log_n, e), a - alpha * log_n, b - beta * log_d])
        return np.logaddexp.reduce(terms, axis=0) - log_l

    best = None
    starts = itertools.product((-1.0, 0.5), (3.0, 8.0), (0.3, 0.8), (3.0, 8.0), (0.3, 0.8))  # 32 starts
    lower, upper = [-10, -10, 0.0, -10, 0.0], [10, 30, 3.0, 30, 3.0]
    for start in starts:
        result = least_squares(residuals, start, loss="huber", f_scale=1e-3, bounds=(lower, upper))
        if best is None or result.cost < best.cost:
            best = result
    e, a, alpha, b, beta = best.x
    rmse = float(np.sqrt(np.mean(residuals(best.x) ** 2)))
    return ScalingFit(math.exp(e), math.exp(a), float(alpha), math.exp(b), float(beta), rmse)


def ladder_config(width: int, budget: float, preset_path: Path | None, overrides: dict, vocab_size: int):
    """The run config of one ladder point, its N, and the tokens the budget buys (D = C / 6N)."""
    from lmforge.config import apply_updates, build_run_config, flatten, read_toml
    from lmforge.models.registry import build_unfilled

    tree: dict = {}
    if preset_path:
        apply_updates(tree, flatten(read_toml(preset_path)))
    apply_updates(tree, LADDER_BASE)
    apply_updates(tree, overrides)
    apply_updates(tree, {"model.n_embd": width, "model.n_head": max(1, width // 16)})
    config = build_run_config(tree, vocab_size)
    n = build_unfilled(config.model).num_params(exclude_embeddings=True)
    tokens = int(budget / (6 * n))
    tokens_per_step = config.train.batch_size * config.model.seq_len
    if tokens < 4 * tokens_per_step:
        raise UserError(
            f"budget {budget:.3g} FLOPs buys width {width} ({n:,} parameters) only {tokens:,} tokens, "
            f"under 4 steps of {tokens_per_step}; raise --budget or use smaller widths"
        )
    apply_updates(tree, {"train.max_tokens": tokens})
    return build_run_config(tree, vocab_size), n, tokens


def run_ladder(data_dir: Path, out_dir: Path, widths, budgets, preset_path, overrides) -> list[dict]:
    """Train (or reuse) every (width, budget) run under OUT/runs/; returns one point per run."""
    from lmforge import logs, runs
    from lmforge.data.tokenizer import load_tokenizer
    from lmforge.train.loop import train

    if not Path(data_dir).is_dir():
        raise UserError(f"data folder '{data_dir}' does not exist; make it with `lmforge data prepare`")
    vocab = load_tokenizer(Path(data_dir) / "tokenizer").vocab_size
    plan = [(w, c, *ladder_config(w, c, preset_path, overrides, vocab)) for c in budgets for w in widths]
    points = []
    for i, (width, budget, config, n, _tokens) in enumerate(plan):
        run_dir = out_dir / "runs" / f"w{width}_c{budget:.0e}".replace("+", "")
        ckpt = runs.find_latest_good(run_dir, quiet=True) if run_dir.is_dir() else None
        if ckpt and ckpt.meta.get("val") and runs.read_run_config(run_dir).to_dict() == config.to_dict():
            val, seconds, trained = ckpt.meta["val"], ckpt.meta["wall_seconds"], ckpt.meta["tokens"]
            logger.info(f"[{i + 1}/{len(plan)}] width {width}, C {budget:.2g}: reusing {run_dir}")
        else:
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)  # an unfinished or different run: start it again
            with logs.silenced("lmforge.train"):
                result = train(config, data_dir, run_dir, progress=False)
            val, seconds, trained = result.final_val, result.wall_seconds, result.tokens
        logger.info(
            f"[{i + 1}/{len(plan)}] width {width}, N {n:,}, D {trained:,}, C {budget:.2g}: "
            f"val loss {val['loss']:.4f} ({seconds:.1f}s)"
        )
        points.append(
            {
                "width": width,
                "N": n,
                "D": trained,
                "C": budget,
                "loss": val["loss"],
                "bpb": val["bpb"],
                "seconds": round(seconds, 2),
                "run_dir": str(run_dir),
            }
        )
    return points


def run_scaling(
    data_dir,
    out_dir,
    budgets=DEFAULT_BUDGETS,
    widths=DEFAULT_WIDTHS,
    target=None,
    preset_path=None,
    overrides=None,
) -> dict:
    """Ladder -> fit -> compute-optimal size for `target` FLOPs; writes scaling.{json,md,png} in OUT."""
    if len(set(widths)) < 2 or len(set(budgets)) < 2:
        raise UserError("a scaling ladder needs at least 2 widths and 2 budgets")
    if any(b <= 0 for b in budgets) or any(w <= 0 for w in widths):
        raise UserError("--budget and --widths values must be positive")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    points = run_ladder(
        Path(data_dir), out_dir, sorted(set(widths)), sorted(set(budgets)), preset_path, overrides or {}
    )
    fit = fit_scaling([p["N"] for p in points], [p["D"] for p in points], [p["loss"] for p in points])
    for p in points:
        p["predicted"] = float(fit.loss(p["N"], p["D"]))
        p["residual_log"] = math.log(p["predicted"]) - math.log(p["loss"])
    target = float(target or max(budgets))
    n_opt, d_opt, l_opt = fit.optimal(target)
    summary = {
        "fit": asdict(fit),
        "target_flops": target,
        "optimal_N": n_opt,
        "optimal_D": d_opt,
        "optimal_loss": l_opt,
        "points": points,
    }
    io.write_text(out_dir / "scaling.json", json.dumps(summary, indent=2))
    plot_scaling(points, fit, target, out_dir / "scaling.png")
    io.write_text(out_dir / "scaling.md", scaling_markdown(summary))
    return summary


def scaling_markdown(s: dict) -> str:
    f = s["fit"]
    md = [
        "# Scaling fit",
        "",
        f"L(N, D) = {f['E']:.3f} + {f['A']:.4g} / N^{f['alpha']:.3f} + {f['B']:.4g} / D^{f['beta']:.3f}"
        f"  (RMS residual of log L: {f['rmse_log']:.4f})",
        "",
        f"Compute-optimal for C = {s['target_flops']:.3g} FLOPs (C = 6 N D): N = {s['optimal_N']:,.0f} "
        f"non-embedding parameters, D = {s['optimal_D']:,.0f} tokens, "
        f"predicted loss {s['optimal_loss']:.4f}.",
        "",
        "**The fit is only as good as the ladder**: these are a few tiny models, each trained once, and "
        "five fitted numbers describe these points, not models far beyond the largest N or C. Read the "
        "residuals before trusting an extrapolation.",
        "",
        "![scaling](scaling.png)",
        "",
        "| width | N | D | C (FLOPs) | val loss | predicted | residual (log) | val bpb |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in s["points"]:
        md.append(
            f"| {p['width']} | {p['N']:,} | {p['D']:,} | {p['C']:.2g} | {p['loss']:.4f} | "
            f"{p['predicted']:.4f} | {p['residual_log']:+.4f} | {p['bpb']:.4f} |"
        )
    return "\n".join(md) + "\n"


def plot_scaling(points: list[dict], fit: ScalingFit, target: float, path: Path) -> None:
    """Left: loss against N per budget, with the fitted IsoFLOP curves and their optima. Right: residuals."""
    from lmforge.eval.plots import pyplot

    plt = pyplot()
    fig, (ax, ax_res) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=90)
    budgets = sorted({p["C"] for p in points})
    n_all = np.array([p["N"] for p in points], dtype=float)
    grid = np.geomspace(n_all.min() / 3, n_all.max() * 3, 100)
    for i, c in enumerate([*budgets, target] if target not in budgets else budgets):
        colour = f"C{i}"
        mine = [p for p in points if p["C"] == c]
        if mine:
            ax.scatter([p["N"] for p in mine], [p["loss"] for p in mine], color=colour, label=f"C = {c:.2g}")
        ax.plot(grid, fit.loss(grid, c / (6 * grid)), color=colour, lw=1, ls="-" if mine else ":")
        n_opt, _, l_opt = fit.optimal(c)
        ax.scatter([n_opt], [l_opt], marker="*", s=120, color=colour, edgecolor="black", zorder=3)
    ax.set(
        xscale="log",
        xlabel="N (non-embedding parameters)",
        ylabel="val loss (nats/token)",
        title="IsoFLOP curves of the fit; stars: compute-optimal N",
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax_res.axhline(0, color="grey", lw=0.8)
    for i, c in enumerate(budgets):
        mine = [p for p in points if p["C"] == c]
        ax_res.scatter([p["N"] for p in mine], [p["residual_log"] for p in mine], color=f"C{i}")
    ax_res.set(xscale="log", xlabel="N", ylabel="log(predicted) - log(observed)", title="residuals")
    ax_res.grid(alpha=0.3)
    fig.tight_layout()
    with io.writing(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
