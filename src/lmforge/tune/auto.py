"""`lmforge train --auto`: the model size, context, batch and learning rate for this machine and budget.

The best shape for a minute differs from the best for twenty, and from one CPU to the next (bf16
matmuls are a little faster than fp32 on one chip, several times faster on another). So the choice is
made where the run happens, in three measured steps and one prediction:

1. **threads** -- on a machine other work shares, a mid-sized candidate is timed with each thread
   count training could use; the fastest is kept for every candidate (`train.threads`). On an idle
   one (a quarter-second look at /proc/stat over --auto's set-up: hardware.busy_cpus) all cores win
   and are not timed.
   The attention implementation and the hand-written kernels are not a knob here:
   `model.attn_impl="auto"` lets models/fastpaths.py's cached per-CPU probe choose them, for each
   candidate as it is timed and again (from its cache) when the run starts.
2. **speed** -- each candidate shape (`CANDIDATES`, the presets and shapes between them) runs a few
   real training steps (`train/engine.py`'s own step, optimizer included), warm-up excluded: tokens/s,
   in float32 and under bf16 autocast where train.dtype=auto would time both, alternating; it trains
   in bfloat16 only if that was train/precision.py's GAIN faster *for that shape* (the gain grows
   with width and batch: a verdict carries only to shapes whose every matmul is at least as large).
   Smallest first; a shape that could not win even at an upper bound on its speed (from the smaller
   shapes' speeds and its FLOPs per token, auto_rule.THROUGHPUT_GROWTH) is not timed at all. Speeds
   measured by earlier --auto runs on this machine are kept (tune/auto_speeds.py): a later run times
   the first shape afresh and scales the others' cached speeds by its ratio to its cached one.
3. **tokens** -- what each would see in the budget: D = tokens/s x (budget - start-up - probe - the
   evaluations it will make).
4. **loss** -- the project's scaling fit L(N, D) = E + A/N^alpha + B/D^beta (tune/scaling.py; the
   constants come from a committed ladder of runs, `presets/auto_ladder.json`, refit by
   bench/auto_ladder.py), times the candidate's own measured ratio to the fit where the ladder ran
   that shape (auto_rule.LossModel: the fit alone misses saturation and context), predicts each
   candidate's validation loss; the lowest wins. D is counted as
   *effective* tokens when the run would see its corpus more than once (Muennighoff et al. 2023,
   "Scaling Data-Constrained Language Models": repeated tokens are worth less and less, with a
   half-life of about R* = 15 repetitions), so a small corpus pushes the choice towards larger models
   rather than more epochs of a tiny one.

The learning rate is not searched: it follows the width (`lr_for`), a rule read off the sweeps that
made the presets (BENCHMARKS.md, "Time to quality"; the demo preset): 5e-3 at width 64, 3e-3 at
128, 2e-3 at 192 -- about 5e-3 x (64 / n_embd)^0.8, the shrinking step size a wider model needs
(as muP prescribes for Adam, 1/width, softened by what the sweeps measured).

Explicit settings win: any of the chosen knobs given on the command line is fixed for every
candidate, and the choice is made over the rest (`left_to_auto` says which).

`choose` is the pure decision (speeds in, choice out), tested on made-up speeds; `plan` does the
measuring around it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import UserError
from lmforge.tune import auto_speeds
from lmforge.tune.auto_rule import (
    CANDIDATES,
    EVALS,
    FAST_PATH_SHAPE,
    MARGIN_SECONDS,
    MIN_TRAIN_SECONDS,
    PROBE_SHARE,
    PROBE_SLICE,
    RECIPE,
    SPEED_SLACK,
    THROUGHPUT_GROWTH,
    Measured,
    Prediction,
    best_case_loss,
    choose,
    eval_tokens_for,
    heads_for,
    load_model,
    lr_for,
    predict,
)

logger = logging.getLogger(__name__)


# The knobs --auto chooses: any one given explicitly (key=value, or the preset) is kept as given.
KNOBS = ("model.n_layer", "model.n_embd", "model.n_head", "model.seq_len", "train.batch_size", "optim.lr")
FAST_PATH_KNOBS = ("train.threads", "train.dtype", "model.attn_impl")
KNOB_GAIN = 1.10  # another value of a fast-path knob must beat the default by this much (the precision
#   probe's rule, train/precision.py GAIN)
IDLE_CPUS = 0.25  # other work using fewer CPUs than this (hardware.busy_cpus): threads are not timed

# What every --auto run shares (the recipe of the presets' sweeps): a modern GPT that exports to
# Hugging Face (SwiGLU + QK-norm = Qwen3), AdamW, a warm-up / stable / linear warm-down schedule
# that ends at zero. A preset (--config) or key=value overrides change any of it.
# --- time ----------------------------------------------------------------------------------------------


def process_seconds() -> float:
    """Seconds since this process started (interpreter and imports included; Linux), else 0."""
    try:
        with open("/proc/self/stat") as handle:
            start_ticks = float(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        import os

        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def probe_slice(budget: float, count: int) -> float:
    """Timed seconds per configuration: PROBE_SHARE of the budget over `count`, within PROBE_SLICE."""
    low, high = PROBE_SLICE
    return min(high, max(low, PROBE_SHARE * budget / max(1, count)))


def minimum_budget(elapsed: float, count: int) -> float:
    """The shortest budget --auto accepts: start-up so far, the shortest probe (each configuration's
    slice plus about as much again for warm-up), the shortest useful training, and the margins."""
    return elapsed + count * 2 * PROBE_SLICE[0] + MIN_TRAIN_SECONDS + MARGIN_SECONDS


# --- measuring -----------------------------------------------------------------------------------------


def measure_speed(config, data, device, seconds: float, dtypes: tuple[str, ...] | None = None):
    """Tokens/s of `config`'s real training step (forward, backward, clip, AdamW) on `device` in each
    of `dtypes` (default: the config's own), timed over about `seconds` in all after a warm-up step
    each, in two alternating rounds; and the model's non-embedding parameter count. The threads,
    allocator and fast paths are those its run would use (train/precision.py `time_steps`)."""
    from lmforge.train import precision

    dtypes = dtypes or (config.train.dtype,)
    slice_s = seconds / (2 * len(dtypes))
    return precision.time_steps(config, data, device, dtypes, slice_s, rounds=2, slow_warm_up_stands=True)


def dtypes_to_time(config, device, fixed: dict) -> tuple[str, ...]:
    """The precisions a candidate is timed in: the one given, the one train.dtype=auto would take
    without timing (narrow models, CPUs without bf16 units, GPUs), or both."""
    from lmforge.train import precision

    if "train.dtype" in fixed:
        return (str(fixed["train.dtype"]),)
    ruled = precision.without_timing(config, device)
    return (ruled.dtype,) if ruled is not None else precision.DTYPES


@dataclass
class Plan:
    updates: dict  # dotted keys to apply under the user's own settings
    record: dict  # for the log, run.json and the report


def plan(
    base_tree: dict,
    fixed: dict,
    data_dir: Path,
    vocab_size: int,
    tokenizer_kind: str,
    budget: float,
    unique_tokens: int,
    elapsed: Callable[[], float] = process_seconds,
) -> Plan:
    """Measure the candidates here and now and choose one for `budget` seconds of the whole run.

    `base_tree`: the config tree under --auto's choice (recipe, preset); `fixed`: dotted keys the user
    set explicitly, which every candidate keeps.
    """
    from lmforge import hardware
    from lmforge.config import apply_updates, build_run_config
    from lmforge.train.data import open_data

    look = hardware.cpu_look()  # other work, seen over the set-up below (our own taken out)
    model = load_model(tokenizer_kind)
    fit = model.fit
    if fixed.get("train.dtype") == "auto":  # the precision is one of the knobs --auto times
        fixed = {k: v for k, v in fixed.items() if k != "train.dtype"}

    def config_of(updates: dict):
        tree = json.loads(json.dumps(base_tree))  # a deep copy
        apply_updates(tree, updates)
        apply_updates(tree, fixed)
        return build_run_config(tree, vocab_size)

    first = config_of({})
    device = hardware.resolve_device(first.train.device)
    left_to_auto = [k for k in (*KNOBS, *FAST_PATH_KNOBS) if k not in fixed]
    shapes = _candidate_updates(fixed)
    options = _fast_path_options(fixed, device.type, hardware.physical_cores())
    timed = {name: dtypes_to_time(config_of(updates), device, fixed) for name, updates in shapes}
    count = sum(len(t) for t in timed.values()) + (1 + sum(len(o) - 1 for _, o in options) if options else 0)
    minimum = minimum_budget(elapsed(), count)
    if budget < minimum:
        raise UserError(
            f"--time-budget {budget:g} is too short for --auto: start-up, measuring {count} "
            f"configurations and {MIN_TRAIN_SECONDS:.0f}s of training need about {math.ceil(minimum)}s; "
            f"pass --time-budget {math.ceil(minimum)} or more, or drop --auto and pass --config"
        )
    data = open_data(Path(data_dir), first.data.weights)
    shapes = _feasible(shapes, data, unique_tokens, first.train.seed)
    if device.type == "cpu":  # a candidate that would not fit in memory is not measured either
        shapes = _fitting(shapes, config_of)
    slice_s = probe_slice(budget, count)
    probe_start = elapsed()
    # a loaded machine makes every step slow: past this, measuring stops with what it has
    probe_end = probe_start + max(PROBE_SHARE * budget, count * 2 * PROBE_SLICE[0])

    # the threads, on a mid-sized shape in float32 (the precision is each candidate's own, below) --
    # unless nothing else is running: fewer threads win only on cores shared with other work, and
    # timing both took ~1 s of a 60 s budget where a look at the machine takes a quarter of one,
    # most of it spent on the set-up above
    chosen_path = {knob: values[0] for knob, values in options}
    path_rows: list[dict] = []
    idle = None
    if any(knob == "train.threads" for knob, _ in options):
        busy = hardware.busy_cpus(since=look)
        if busy is not None and busy < IDLE_CPUS:
            idle = {"busy_cpus": round(busy, 2), "train.threads": chosen_path["train.threads"]}
            options = [(knob, values) for knob, values in options if knob != "train.threads"]
            logger.info(
                f"auto: threads {idle['train.threads']} (all cores), not timed: other work kept "
                f"{busy:.2f} CPUs busy"
            )
    mid = {
        **FAST_PATH_SHAPE.updates(),
        "train.dtype": "float32",
        **{k: v for k, v in fixed.items() if k in KNOBS},
    }
    for knob, values in options:
        speeds = {}
        for value in values:
            path = {**chosen_path, knob: value}
            row = next((r for r in path_rows if all(r[k] == v for k, v in path.items())), None)
            if row is None:
                by_dtype, _ = measure_speed(config_of({**mid, **path}), data, device, slice_s)
                speed = next(iter(by_dtype.values()))
                row = {**path, "tokens_per_second": round(speed, 1)}
                path_rows.append(row)
                logger.info(f"auto: fast path {_path_name(path)}: {speed / 1e3:.1f}k tok/s")
            speeds[value] = row["tokens_per_second"]
        chosen_path[knob] = _faster(values, speeds)

    # each candidate's speed in the precision(s) its run could take; bfloat16 only where it pays for
    # that shape (the rule of train.dtype=auto: at 2 x 128 bf16 was 1.09x float32 at batch 8 and
    # 1.5x at batch 16 on the Intel Xeon of BENCHMARKS.md, so one shape cannot decide for all -- but a
    # shape whose every matmul is at least as large as a winner's gains at least as much). Smallest
    # first, and a candidate that could not win even at a bound on its speed is not timed at all:
    # at a 60 s budget, timing all of them took a sixth of it (BENCHMARKS.md, "--auto").
    eval_tokens = first.train.eval_tokens
    measured: list[Measured] = []
    costs: dict[str, Cost] = {}
    dtype_from: dict[str, str] = {}
    not_timed: list[dict] = []
    # speeds this machine measured in earlier --auto runs (tune/auto_speeds.py): once the first shape
    # has been timed afresh, a cached shape's speed is its cached figure x (that shape's speed now /
    # its cached one), untimed; the close contenders are still timed again below
    speed_file = auto_speeds.cache_file()
    cached = auto_speeds.read(speed_file)
    fresh: dict[str, dict[str, float]] = {}
    scale: dict = {}  # {"by": the shape timed afresh, "factor": its speed now over its cached speed}
    from_cache: dict[str, float] = {}
    for name, updates in shapes:
        config = config_of({**updates, **chosen_path})
        cost, n_params = _cost(config)
        dtypes = timed[name]
        winner = _bf16_winner(cost, dtypes, measured, costs)
        if winner is not None:
            dtypes, dtype_from[name] = ("bfloat16",), winner
        speed_key = auto_speeds.key(config)
        hit = cached.get(speed_key, {})
        if scale and set(dtypes) <= set(hit):
            by_dtype = {d: hit[d] * scale["factor"] for d in dtypes}
            from_cache[name] = scale["factor"]
            _add(measured, costs, name, updates, chosen_path, fixed, n_params, cost, by_dtype)
            logger.info(
                f"auto: {name}: {n_params:,} parameters, tok/s "
                + ", ".join(f"{d} {s / 1e3:.1f}k" for d, s in by_dtype.items())
                + f" from this machine's cache (x{scale['factor']:.3f}, as {scale['by']} measured now)"
            )
            continue
        bound = _speed_bound(cost, dtypes, measured, costs)
        seconds = budget - elapsed() - MARGIN_SECONDS
        if bound is not None and seconds > 0:
            predictions = [predict(m, model, seconds, unique_tokens, eval_tokens) for m in measured]
            leader = min(predictions, key=lambda p: p.predicted_loss)
            at_best = best_case_loss(name, n_params, bound, model, seconds, unique_tokens, eval_tokens)
            if at_best >= leader.predicted_loss:
                not_timed.append(
                    {"name": name, "n_params": n_params, "tokens_per_second_bound": round(bound, 1),
                     "best_case_loss": round(at_best, 4), "leader": leader.measured.name}
                )  # fmt: skip
                logger.info(
                    f"auto: {name}: {n_params:,} parameters, not timed: even at {bound / 1e3:.1f}k tok/s "
                    f"its predicted loss {at_best:.4f} is above {leader.measured.name}'s "
                    f"{leader.predicted_loss:.4f}"
                )
                continue
        by_dtype, n_params = measure_speed(config, data, device, len(dtypes) * slice_s, dtypes)
        fresh[speed_key] = by_dtype
        common = [d for d in by_dtype if d in hit]
        if not scale and common:  # the first shape timed afresh that the cache also holds
            d = max(common, key=by_dtype.get)
            scale = {"by": name, "factor": by_dtype[d] / hit[d]}
        dtype = _add(measured, costs, name, updates, chosen_path, fixed, n_params, cost, by_dtype)
        speeds = ", ".join(f"{d} {s / 1e3:.1f}k" for d, s in by_dtype.items())
        why = f" (bf16 won at {dtype_from[name]}, whose matmuls are no larger)" if name in dtype_from else ""
        logger.info(f"auto: {name}: {n_params:,} parameters, tok/s {speeds} -> {dtype}{why}")
        step_tokens = config.train.batch_size * config.model.seq_len
        if by_dtype[dtype] * (budget - elapsed() - MARGIN_SECONDS) / step_tokens < 100:
            break  # under 100 steps in the budget: the larger shapes after it are slower still
        if elapsed() > probe_end:
            left = len(shapes) - len(measured) - len(not_timed)
            logger.info(
                f"auto: measuring took its share of the budget; the {left} larger candidates are left out"
            )
            break
    timed_again = _time_again_where_it_could_matter(
        measured, model, budget - elapsed() - MARGIN_SECONDS, unique_tokens, eval_tokens,
        lambda m: measure_speed(config_of(m.updates), data, device, slice_s)[0],
    ) if elapsed() <= probe_end else []  # fmt: skip
    auto_speeds.write(speed_file, fresh)
    probe_seconds = elapsed() - probe_start
    available = budget - elapsed() - MARGIN_SECONDS
    if available < MIN_TRAIN_SECONDS:
        raise UserError(
            f"--time-budget {budget:g} leaves {available:.0f}s of training after measuring the "
            f"candidates; pass --time-budget {math.ceil(budget - available + MIN_TRAIN_SECONDS)} or more"
        )
    best, predictions = choose(measured, model, available, unique_tokens, eval_tokens)
    updates = dict(best.measured.updates)
    step_tokens = _tokens_per_step(config_of(updates))
    # A choice credited with fewer tokens than the budget would give it trains only those: past its
    # shape's longest ladder run another pass over a small text can only hurt (4 x 192 on 1.0M
    # characters: 1.497 after 8 passes, 1.606 after 18), so the run warms down and ends early.
    stop_early = best.credited < best.tokens and "train.max_tokens" not in fixed
    trained = best.credited if stop_early else best.tokens
    every = max(25, int(trained / step_tokens / EVALS))
    tokens = eval_tokens_for(best.measured.tokens_per_second, available, eval_tokens)
    for key, value in (
        *((("train.max_tokens", int(trained)),) if stop_early else ()),
        ("train.eval_every", every),
        ("train.ckpt_every", every),
        ("train.eval_tokens", tokens),
        ("train.step_seconds", round(step_tokens / best.measured.tokens_per_second, 6)),
    ):
        if key not in fixed:
            updates[key] = value
    for p in predictions:
        logger.info(
            f"auto: {p.measured.name:<22} N {p.measured.n_params:>10,}  "
            f"{p.measured.tokens_per_second / 1e3:6.1f}k tok/s  D {p.tokens / 1e6:7.2f}M  "
            f"predicted val loss {p.predicted_loss:.4f} (fit {p.fit_loss:.4f}"
            f"{', ladder runs of this shape' if p.measured.name in model.corrections else ''}"
            f"{_credited_note(p, unique_tokens)})"
            f"{'  <- chosen' if p is best else ''}"
        )
    # many passes over a small corpus, where the user's train.max_tokens keeps the choice from
    # stopping early: its shape's ladder runs never went there (on BPE at 20 minutes the repetition
    # rule once ranked a small model seeing the corpus 13x above a large one seeing it 4.5x, 0.09
    # worse: BENCHMARKS.md, "20 minutes on BPE: the first long row")
    passes = trained / unique_tokens if unique_tokens > 0 else 0.0
    ladder_passes = model.shape_passes.get(best.measured.name, model.max_passes)
    beyond = best.credited < trained
    if beyond:
        logger.warning(
            f"warning: --auto's choice would see the corpus {passes:.1f} times, more than its shape's "
            f"ladder runs ({ladder_passes:.1f}): its prediction is an extrapolation, and with this "
            "many passes it may overfit; more text helps most"
        )
    if stop_early:
        logger.info(
            f"auto: {best.measured.name} would pass over the text {best.tokens / unique_tokens:.1f} times in "
            f"the budget; it stops after {trained / unique_tokens:.1f} (train.max_tokens={int(trained)}, "
            f"about {trained / best.measured.tokens_per_second:.0f}s), the most its ladder runs made: "
            "more passes over a text this small would overfit it"
        )
    kept = [k for k in (*KNOBS, *FAST_PATH_KNOBS) if k in fixed]
    logger.info(
        f"auto: chose {best.measured.name} ({_path_name(updates) or 'given precision'}), lr "
        f"{updates.get('optim.lr', fixed.get('optim.lr'))}: predicted val loss {best.predicted_loss:.4f} "
        f"after {trained / 1e6:.2f}M tokens in {trained / best.tokens * available:.0f}s; left to --auto: "
        f"{', '.join(left_to_auto) or 'nothing'}" + (f"; given: {', '.join(kept)}" if kept else "")
    )
    record = {
        "budget_seconds": budget,
        "startup_seconds": round(probe_start, 2),
        "probe_seconds": round(probe_seconds, 2),
        "train_seconds": round(available, 2),
        "fit": {
            "name": model.name, "E": fit.E, "A": fit.A, "alpha": fit.alpha, "B": fit.B, "beta": fit.beta,
            "repeat_half_life": model.repeat_half_life,
        },  # fmt: skip
        "unique_tokens": unique_tokens,
        "left_to_auto": left_to_auto,
        "given": {k: fixed[k] for k in kept},
        "fast_paths": path_rows,
        **({"threads_idle": idle} if idle else {}),
        **({"cached_speeds": {"by": scale["by"], "factor": round(scale["factor"], 4)}} if from_cache else {}),
        "candidates": [
            {
                "name": p.measured.name,
                "n_params": p.measured.n_params,
                "tokens_per_second": round(p.measured.tokens_per_second, 1),
                "dtype": p.measured.updates.get("train.dtype", fixed.get("train.dtype")),
                "tokens_per_second_by_dtype": {d: round(v, 1) for d, v in p.measured.speeds.items()},
                "tokens": int(p.tokens),
                "predicted_loss": round(p.predicted_loss, 4),
                "fit_loss": round(p.fit_loss, 4),
                "ladder_runs": p.measured.name in model.corrections,
                **({"credited_tokens": int(p.credited)} if p.credited < p.tokens else {}),
                "chosen": p is best,
                **({"dtype_from": dtype_from[p.measured.name]} if p.measured.name in dtype_from else {}),
                **({"timed_again": True} if p.measured.name in timed_again else {}),
                **(
                    {"cached_speed_scale": round(from_cache[p.measured.name], 4)}
                    if p.measured.name in from_cache
                    else {}
                ),  # fmt: skip
            }
            for p in predictions
        ],
        "not_timed": not_timed,
        "chosen": {"name": best.measured.name, **updates},
        **({"stops_early": {"tokens": int(trained), "budget_tokens": int(best.tokens)}}
           if stop_early else {}),
        "predicted_loss": round(best.predicted_loss, 4),
        **({"beyond_ladder": {"passes": round(passes, 1), "ladder_passes": round(ladder_passes, 1)}}
           if beyond else {}),
    }  # fmt: skip
    return Plan(updates, record)


@dataclass(frozen=True)
class Cost:
    """What makes one candidate's training step slower than another's."""

    flops_per_token: int
    n_embd: int
    seq_len: int
    tokens_per_step: int

    def covers(self, other: Cost) -> bool:
        """Every matmul of this step at least as large as `other`'s (width, context, tokens)."""
        return (
            self.n_embd >= other.n_embd
            and self.seq_len >= other.seq_len
            and self.tokens_per_step >= other.tokens_per_step
        )


def _credited_note(p: Prediction, unique_tokens: float) -> str:
    if p.credited >= p.tokens or unique_tokens <= 0:
        return ""
    return f"; credited {p.credited / unique_tokens:.1f} passes, its ladder runs' most"


def _cost(config) -> tuple[Cost, int]:
    """The candidate's Cost and non-embedding parameters, from its model's parameters left unfilled."""
    from lmforge.models.registry import build_unfilled

    model = build_unfilled(config.model)
    tokens = config.train.batch_size * config.model.seq_len
    cost = Cost(model.flops_per_token(), config.model.n_embd, config.model.seq_len, tokens)
    return cost, model.num_params(exclude_embeddings=True)


def _add(measured, costs, name, updates, chosen_path, fixed, n_params, cost, by_dtype) -> str:
    """Append the candidate measured (or taken from the cache) at `by_dtype`; the precision it trains in."""
    from lmforge.train import precision

    costs[name] = cost
    dtype = precision.faster(by_dtype)
    path = {**chosen_path, **({"train.dtype": dtype} if "train.dtype" not in fixed else {})}
    measured.append(Measured(name, {**updates, **path}, n_params, by_dtype[dtype], by_dtype))
    return dtype


def _bf16_winner(cost: Cost, dtypes: tuple[str, ...], measured: list[Measured], costs: dict) -> str | None:
    """A candidate timed in both precisions where bfloat16 won and whose matmuls this one's all cover
    (bf16's gain grows with matmul size: it wins here too), so this one need not time float32."""
    from lmforge.train import precision

    if set(dtypes) != set(precision.DTYPES):
        return None
    for m in measured:
        if len(m.speeds) == 2 and precision.faster(m.speeds) == "bfloat16" and cost.covers(costs[m.name]):
            return m.name
    return None


def _speed_bound(cost: Cost, dtypes: tuple[str, ...], measured: list[Measured], costs: dict) -> float | None:
    """The fastest this candidate could train, from each candidate timed in the same precisions with
    fewer FLOPs per token (auto_rule THROUGHPUT_GROWTH, SPEED_SLACK); None when none was."""
    bounds = [
        SPEED_SLACK
        * max(m.speeds[d] for d in dtypes)
        * (costs[m.name].flops_per_token / cost.flops_per_token) ** (1 - THROUGHPUT_GROWTH)
        for m in measured
        if costs[m.name].flops_per_token <= cost.flops_per_token and set(dtypes) <= set(m.speeds)
    ]
    return min(bounds) if bounds else None


def _time_again_where_it_could_matter(
    measured: list[Measured],
    model,
    seconds: float,
    unique_tokens: float,
    eval_tokens: int,
    time_one: Callable[[Measured], dict[str, float]],  # tokens/s in the precision it would train in
) -> list[str]:
    """Time once more each candidate that SPEED_SLACK more speed would have made the winner, and keep
    its faster figure: another process slows a slice, never speeds one up, and at 60 s one slowed
    slice (2 x 64 at 80k tok/s where its other runs measured 111-118k) had handed the choice to 1 x 64,
    0.06 nats worse (BENCHMARKS.md, "--auto"). The names timed again."""
    if len(measured) < 2 or seconds <= 0:
        return []

    def loss(m: Measured, factor: float = 1.0) -> float:
        faster = dataclasses.replace(m, tokens_per_second=factor * m.tokens_per_second)
        return predict(faster, model, seconds, unique_tokens, eval_tokens).predicted_loss

    leader = min(measured, key=loss)
    again = []
    for m in measured:
        if m is leader or loss(m, SPEED_SLACK) >= loss(leader):
            continue
        ((dtype, speed),) = time_one(m).items()  # in the precision it would train in
        logger.info(
            f"auto: {m.name}: timed again, {speed / 1e3:.1f}k tok/s (first "
            f"{m.tokens_per_second / 1e3:.1f}k): a slowed slice could have cost it the choice"
        )
        if speed > m.tokens_per_second:
            m.tokens_per_second = speed
            m.speeds[dtype] = speed
        again.append(m.name)
    return again


def _candidate_updates(fixed: dict) -> list[tuple[str, dict]]:
    """Each candidate's knobs with the user's fixed ones in; duplicates (after fixing) dropped."""
    out, seen = [], set()
    for shape in CANDIDATES:
        updates = shape.updates()
        if "model.n_embd" in fixed:
            updates["model.n_head"] = heads_for(int(fixed["model.n_embd"]))
            if "optim.lr" not in fixed:
                updates["optim.lr"] = lr_for(int(fixed["model.n_embd"]))
        updates = {k: fixed.get(k, v) for k, v in updates.items()}
        key = tuple(sorted(updates.items()))
        if key in seen:
            continue
        seen.add(key)
        name = (
            f"{updates['model.n_layer']}x{updates['model.n_embd']} ctx{updates['model.seq_len']} "
            f"b{updates['train.batch_size']}"
        )
        out.append((name, updates))
    return out


def _fast_path_options(fixed: dict, device: str, cores: int) -> list[tuple[str, list]]:
    """The fast-path knobs to time and their values, the default first (none the user fixed).

    Threads: all physical cores is fastest on an idle machine, but cores shared with other jobs
    can make several threads wait on each other far more than one thread loses."""
    options: list[tuple[str, list]] = []
    if device == "cpu" and cores > 1:  # precision: each candidate's own; attention: models/fastpaths.py
        options.append(("train.threads", [cores, 1]))
    return [(knob, values) for knob, values in options if knob not in fixed]


def _faster(values: list, speeds: dict) -> object:
    """The knob's default (its first value) unless another was clearly faster: each is timed once over
    a fraction of a second, and on a busy machine one slice can be slowed by chance (one thread won a
    60 s run's measuring that way on 2026-12-03, and every step after ran on one of two cores)."""
    best = max(speeds, key=speeds.get)
    return best if speeds[best] >= KNOB_GAIN * speeds[values[0]] else values[0]


def _tokens_per_step(config) -> int:
    """Training tokens per optimizer step (micro-steps accumulated to train.batch_tokens: engine.py)."""
    from lmforge.train.engine import micro_steps

    micro = config.train.batch_size * config.model.seq_len
    return micro * micro_steps(config.train.batch_tokens, micro)


def _path_name(path: dict) -> str:
    return " + ".join(str(path[k]) for k in FAST_PATH_KNOBS if k in path)


def _fitting(shapes: list[tuple[str, dict]], config_of) -> list[tuple[str, dict]]:
    """The candidates whose training fits in free memory (memory.py's estimate); the smallest's error
    when none does."""
    from lmforge.memory import check_fits

    kept, first_error = [], None
    for name, updates in shapes:
        try:
            check_fits(config_of(updates))
        except UserError as exc:
            first_error = first_error or exc
            continue
        kept.append((name, updates))
    if not kept and first_error is not None:
        raise first_error
    return kept


def _feasible(shapes: list[tuple[str, dict]], data, unique_tokens: int, seed: int) -> list[tuple[str, dict]]:
    """The candidates whose batch the corpus can fill; a clear error when not even the smallest can."""
    kept = []
    for name, updates in shapes:
        batch_tokens = updates["train.batch_size"] * updates["model.seq_len"]
        if unique_tokens < batch_tokens:
            continue
        try:
            data.make_sampler(updates["train.batch_size"], updates["model.seq_len"], seed, 0, 1)
        except UserError:
            continue
        kept.append((name, updates))
    if not kept:
        smallest = min(s[1]["train.batch_size"] * s[1]["model.seq_len"] for s in shapes)
        raise UserError(
            f"the corpus is too small for --auto: {unique_tokens:,} training tokens, and its smallest "
            f"candidate needs at least {smallest:,} (one batch) in shards longer than its context; "
            "prepare more text with `lmforge data prepare`, or drop --auto and pass --config"
        )
    return kept


def auto_config(
    preset_path: Path | None,
    given: dict,
    data_dir: Path,
    tokenizer,
    elapsed: Callable[[], float] = process_seconds,
):
    """The RunConfig --auto trains, and the record of its choice (run.json's "auto").

    Layers, each over the one before: the --auto recipe, the preset, the choice, then `given` (the
    user's flags and key=value overrides, which also fix those knobs for every candidate). The loop's
    own time budget is what is left of the whole run's once the choice is made.
    """
    from lmforge.config import apply_updates, build_run_config, flatten, read_toml

    given = dict(given)
    budget = float(given.pop("train.time_budget", 0) or 0)
    if budget <= 0:
        raise UserError(
            "--auto chooses the model for a time budget; pass --time-budget SECONDS (the whole run)"
        )
    if given.get("model.family", "gpt") != "gpt":
        raise UserError("--auto chooses among GPT shapes; drop model.family / --model, or drop --auto")
    base: dict = {}
    apply_updates(base, RECIPE)
    if preset_path:
        apply_updates(base, flatten(read_toml(preset_path)))
    manifest = json.loads((Path(data_dir) / "shards" / "manifest.json").read_text(encoding="utf-8"))
    unique = int(manifest["splits"]["train"]["tokens"])
    chosen = plan(base, given, Path(data_dir), tokenizer.vocab_size, tokenizer.kind, budget, unique, elapsed)
    left = budget - elapsed() - MARGIN_SECONDS
    tree = json.loads(json.dumps(base))
    apply_updates(tree, chosen.updates)
    apply_updates(tree, given)
    apply_updates(tree, {"train.time_budget": round(max(1.0, left), 2), "data.path": str(data_dir)})
    return build_run_config(tree, tokenizer.vocab_size), chosen.record
