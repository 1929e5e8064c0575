"""The rule behind `lmforge train --auto` (tune/auto.py measures, this decides): the candidate shapes,
the learning rate for a width, the tokens each would see in the budget and the loss the ladder
predicts for them -- its L(N, D) fit, corrected by the shape's own runs where the ladder has them.
Pure: speeds in, choice out (tested on made-up speeds)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import UserError
from lmforge.tune.scaling import ScalingFit, fit_scaling

RECIPE = {
    "model.family": "gpt",
    "model.style": "modern",
    "model.mlp": "swiglu",
    "model.qk_norm": True,
    "model.tie_embeddings": False,
    "optim.name": "adamw",
    "optim.beta2": 0.95,
    "optim.weight_decay": 0.1,
    "optim.grad_clip": 1.0,
    "schedule.name": "wsd",
    "schedule.warmup_steps": 30,
    "schedule.warmdown_frac": 0.5,
    "schedule.min_lr_frac": 0.0,
    "train.max_steps": 10_000_000,  # the time budget decides
}

EVALS = 8  # validation passes in a run (the last one included): a curve, at a few % of the budget
EVAL_SHARE = 0.025  # of the training time, at most, spent evaluating (unless train.eval_tokens is given)
# Validation tokens per second over training tokens per second (forward only, the loss in float32):
# 3.0x for 2 x 64 and 3.7x for 4 x 128 on BPE 4096, 2.9x on characters (`bench/eval_cost.py` on the
# 60 s --auto runs and a 5-minute 4 x 128 run, Zen 4, 2026-12-04, after bcb52a8 scored the logits in
# cache-sized slices; 2.3-2.5x on BPE before). With the share 3% -> 2.5%, as many validation tokens.
EVAL_SPEEDUP = 2.9
MIN_EVAL_TOKENS = 4096  # validation tokens per evaluation, at least
MIN_TRAIN_SECONDS = 10.0  # less than this is not a training run worth choosing a model for
MARGIN_SECONDS = 0.4  # outside the loop's clock: the process's exit. At 1.5 every 60 s and 300 s
#   --auto command of BENCHMARKS.md ended 1.2-1.4 s early (walls 58.6-58.7 s and 298.6-298.8 s)
# R*: how many extra passes over a corpus still add fresh-data worth (Muennighoff et al. 2023 fitted
# 15.4 for their models). The ladder refits it per corpus kind (bench/auto_ladder.py) and a fit in
# auto_ladder.json without one uses this.
REPEAT_HALF_LIFE = 15.4
PROBE_SHARE = 0.06  # of the budget spent measuring speeds (short budgets; PROBE_SLICE bounds it)
PROBE_SLICE = (0.3, 1.5)  # seconds of timed steps per candidate, at least / at most
# A candidate not yet timed trains at most SPEED_SLACK x (F_timed / F)^(1 - THROUGHPUT_GROWTH) times as
# fast as one timed with F_timed <= F FLOPs per token: larger matmuls run at more FLOP/s, but slower
# than F grows. On the Zen 4 (--auto's log, 2026-12-04) FLOP/s grew as F^0.22 from 1x64 to 6x256 and
# as F^0.37 from 4x128 to 4x192; the exponent and the slack (a timed slice slowed by chance) leave room
# for a CPU whose bf16 units gain more with size.
THROUGHPUT_GROWTH = 0.5
SPEED_SLACK = 1.25


@dataclass(frozen=True)
class Shape:
    """A candidate: depth, width, context and sequences per step (heads: width / 32)."""

    n_layer: int
    n_embd: int
    seq_len: int
    batch_size: int

    @property
    def name(self) -> str:
        return f"{self.n_layer}x{self.n_embd} ctx{self.seq_len} b{self.batch_size}"

    @property
    def n_head(self) -> int:
        return heads_for(self.n_embd)

    def updates(self) -> dict:
        return {
            "model.n_layer": self.n_layer,
            "model.n_embd": self.n_embd,
            "model.n_head": self.n_head,
            "model.seq_len": self.seq_len,
            "train.batch_size": self.batch_size,
            "optim.lr": lr_for(self.n_embd),
        }


# From the speedrun preset (1 x 64) through the quality preset (3 x 64, context 128), gpt-small
# (4 x 128) and the demo (4 x 192) to one size beyond: N grows about 2-3x per row.
CANDIDATES = (
    Shape(1, 64, 64, 32),
    Shape(2, 64, 128, 32),
    Shape(3, 64, 128, 32),
    Shape(2, 128, 128, 16),
    Shape(4, 128, 128, 16),
    Shape(4, 192, 128, 16),
    Shape(6, 256, 128, 16),
)
FAST_PATH_SHAPE = Shape(2, 128, 128, 8)  # timed with each thread count: mid width, short


def heads_for(n_embd: int) -> int:
    """Heads of 32 channels (the presets' choice), or the nearest count below that divides n_embd."""
    heads = max(1, n_embd // 32)
    while n_embd % heads:
        heads -= 1
    return heads


def lr_for(n_embd: int) -> float:
    """AdamW's peak learning rate for a width: 5e-3 at 64, falling as width^-0.8 (module docstring)."""
    return float(f"{5e-3 * (64 / n_embd) ** 0.8:.2g}")


def effective_tokens(tokens: float, unique: float, half_life: float = REPEAT_HALF_LIFE) -> float:
    """Tokens worth of fresh data when `tokens` are drawn from a corpus of `unique` (Muennighoff et al.
    2023): the first pass counts fully, each further pass less, saturating at R* = `half_life` extra
    passes."""
    if unique <= 0 or tokens <= unique:
        return float(tokens)
    repeats = tokens / unique - 1
    return unique + unique * half_life * (1 - math.exp(-repeats / half_life))


@dataclass
class Measured:
    """One candidate's measurement: its settings, non-embedding parameters and training speed."""

    name: str
    updates: dict  # dotted keys of the candidate (the user's fixed values already in)
    n_params: int  # N of the scaling fit: non-embedding parameters, the head included
    tokens_per_second: float  # in the precision it trains in
    speeds: dict = field(default_factory=dict)  # tokens/s in each precision timed


@dataclass(frozen=True)
class LossModel:
    """The validation loss a candidate reaches after D effective tokens: the ladder's fit L(N, D),
    times the candidate's own ratio to it where the ladder ran that very shape.

    Why the correction: a sum of two power laws in N and D cannot follow a small model that saturates
    while a larger one keeps learning (the char ladder's 1 x 64 runs go from 4% under the fit at 0.5M
    tokens to 3% over it at 4M), and the context length -- 64 for the smallest candidate, 128 for the
    rest -- is not in it at all. The shape's measured ratio (interpolated in log D between its runs,
    held at the nearest run beyond them) carries both; a shape the ladder never ran gets the fit alone.
    """

    fit: ScalingFit
    name: str = "fit"
    # shape name -> its ladder runs' (log effective D, log(measured loss / fit)), by D
    corrections: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    # the most passes over its corpus any ladder run made (0: not known): a candidate that would see
    # its own corpus more often is predicted from beyond the ladder
    max_passes: float = 0.0
    repeat_half_life: float = REPEAT_HALF_LIFE  # R* of effective_tokens, as the ladder fitted it
    # shape name -> the most passes over the ladder's corpus its runs made: the most it is credited with
    shape_passes: dict[str, float] = field(default_factory=dict)

    def effective(self, tokens: float, unique: float) -> float:
        return effective_tokens(tokens, unique, self.repeat_half_life)

    def credited(self, shape: str, tokens: float, unique: float) -> float:
        """The tokens a run of `shape` is credited with: all of them, unless they pass over a corpus of
        `unique` more often than the shape's longest ladder run did (a shape never run: any run did).
        Past that the ladder has no evidence that another pass helps, and on a small text it can
        hurt: on 1.0M characters 4 x 128 reached 1.505 after ~6 passes and 1.556 after 26, 4 x 192
        1.518 after ~4 and 1.606 after 18 (BENCHMARKS.md, "20 minutes on characters"), while the
        fit's repetition rule lets every pass help a little."""
        limit = self.shape_passes.get(shape, self.max_passes)
        return min(tokens, limit * unique) if unique > 0 and limit > 0 else tokens

    def correction(self, shape: str, tokens: float) -> float:
        """log(loss / fit) for `shape` at `tokens` effective tokens (0 for a shape never run)."""
        points = self.corrections.get(shape)
        if not points:
            return 0.0
        x = math.log(max(tokens, 1.0))
        if x <= points[0][0]:
            return points[0][1]
        for (x0, r0), (x1, r1) in zip(points, points[1:], strict=False):
            if x <= x1:  # (two runs far past R* can count the same effective tokens)
                return r1 if x1 == x0 else r0 + (r1 - r0) * (x - x0) / (x1 - x0)
        return points[-1][1]

    def loss(self, shape: str, n_params: float, tokens: float) -> float:
        return float(self.fit.loss(n_params, tokens)) * math.exp(self.correction(shape, tokens))


@dataclass
class Prediction:
    measured: Measured
    tokens: float  # D: tokens it would train on in the budget
    predicted_loss: float
    fit_loss: float  # the fit's alone, before the shape's own correction
    credited: float = 0.0  # of `tokens`, those the prediction credits (LossModel.credited)


def choose(
    measured: list[Measured],
    model: LossModel,
    seconds: float,
    unique_tokens: float,
    eval_tokens: int,
) -> tuple[Prediction, list[Prediction]]:
    """The candidate with the lowest predicted loss after `seconds` of the run's loop, and all the
    predictions. Each loses to its evaluations (EVALS passes of eval_tokens, forward only: 1 /
    EVAL_SPEEDUP of a training step's cost per token, each at most `eval_tokens_for`) the time they
    take."""
    if not measured:
        raise UserError("--auto has no candidate to choose from; drop --auto and pass --config")
    predictions = [predict(m, model, seconds, unique_tokens, eval_tokens) for m in measured]
    best = min(predictions, key=lambda p: p.predicted_loss)
    if not math.isfinite(best.predicted_loss):
        raise UserError(
            f"no --auto candidate can train in {seconds:.0f}s after its evaluations; raise --time-budget"
        )
    return best, predictions


def predict(
    m: Measured, model: LossModel, seconds: float, unique_tokens: float, eval_tokens: int
) -> Prediction:
    """One candidate's tokens in `seconds` of the loop, less its evaluations, and its predicted loss."""
    speed = m.tokens_per_second
    eval_seconds = EVALS * eval_tokens_for(speed, seconds, eval_tokens) / (EVAL_SPEEDUP * speed)
    tokens = max(0.0, speed * (seconds - eval_seconds))
    credited = model.credited(m.name, tokens, unique_tokens)
    d = model.effective(credited, unique_tokens)
    fit_loss = float(model.fit.loss(m.n_params, d)) if d > 0 else math.inf
    loss = model.loss(m.name, m.n_params, d) if d > 0 else math.inf
    return Prediction(m, tokens, loss, fit_loss, credited)


def best_case_loss(
    name: str,
    n_params: int,
    speed_bound: float,
    model: LossModel,
    seconds: float,
    unique_tokens: float,
    eval_tokens: int,
) -> float:
    """The lowest loss a candidate not yet timed could be predicted at any speed up to `speed_bound`.
    Usually its loss at the bound itself; the minimum over slower speeds too, because a shape's own
    ladder correction can rise with D (a small model saturating) faster than the fit falls."""
    speeds = (speed_bound * share for share in (1.0, 0.8, 0.6, 0.4, 0.2))
    candidates = (Measured(name, {}, n_params, speed) for speed in speeds)
    return min(predict(m, model, seconds, unique_tokens, eval_tokens).predicted_loss for m in candidates)


def eval_tokens_for(tokens_per_second: float, seconds: float, eval_tokens: int) -> int:
    """Validation tokens per evaluation: `eval_tokens`, or fewer when EVALS passes of it would take
    more than EVAL_SHARE of the training time (a slow machine or a short budget), never under
    MIN_EVAL_TOKENS."""
    affordable = EVAL_SHARE * seconds * EVAL_SPEEDUP * tokens_per_second / EVALS
    return int(min(eval_tokens, max(MIN_EVAL_TOKENS, affordable)))


# --- the scaling fit the choice uses -----------------------------------------------------------------

# R* values the ladder's refit tries: half a pass to 60 extra passes, the published 15.4 among them
HALF_LIVES = (
    0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, REPEAT_HALF_LIFE, 20.0, 30.0, 45.0, 60.0,
)  # fmt: skip


def fit_with_repeats(
    n, d, loss, unique: float, half_lives=HALF_LIVES
) -> tuple[ScalingFit, float, dict[float, float]]:
    """L(N, D') fitted to ladder runs of N parameters, D tokens and their losses, with D' the effective
    tokens of D drawn from `unique`, and the R* (of `half_lives`) whose fit leaves the smallest RMS log
    residual; with each R* tried and its residual. Runs that never repeat their corpus say nothing
    about R*: then it stays the published one."""
    if not any(tokens > unique for tokens in d):
        return fit_scaling(n, d, loss), REPEAT_HALF_LIFE, {}
    fits = []
    for half_life in half_lives:
        fit = fit_scaling(n, [effective_tokens(tokens, unique, half_life) for tokens in d], loss)
        fits.append((fit.rmse_log, half_life, fit))
    _, half_life, fit = min(fits, key=lambda row: row[:2])
    return fit, half_life, {r: rmse for rmse, r, _ in fits}


def ladder_path() -> Path:
    from lmforge import presets

    return presets.folder() / "auto_ladder.json"


def load_model(tokenizer_kind: str, path: Path | None = None) -> LossModel:
    """The ladder for this kind of tokenizer (per-token losses of characters and BPE differ): its fit
    and each of its shapes' ratios to the fit, at the effective tokens the fit was made on."""
    data = json.loads((path or ladder_path()).read_text(encoding="utf-8"))
    fits = data["fits"]
    name = tokenizer_kind if tokenizer_kind in fits else data["default"]
    entry = fits[name]
    f = entry["fit"]
    fit = ScalingFit(f["E"], f["A"], f["alpha"], f["B"], f["beta"], f["rmse_log"])
    half_life = f.get("repeat_half_life", REPEAT_HALF_LIFE)
    runs: dict[str, list[tuple[float, float]]] = {}
    for point in entry.get("points", []):
        d = effective_tokens(point["D"], entry.get("unique_tokens", 0), half_life)
        ratio = math.log(point["loss"] / float(fit.loss(point["N"], d)))
        runs.setdefault(point["shape"], []).append((math.log(d), ratio))
    corrections = {shape: tuple(sorted(points)) for shape, points in runs.items()}
    unique = entry.get("unique_tokens", 0)
    passes: dict[str, float] = {}
    for point in entry.get("points", []) if unique else []:
        passes[point["shape"]] = max(passes.get(point["shape"], 0.0), point["D"] / unique)
    return LossModel(fit, name, corrections, max(passes.values(), default=0.0), half_life, passes)
