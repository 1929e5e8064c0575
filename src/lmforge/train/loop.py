"""The training loop, readable top to bottom.

`train()` opens the run folder (fresh, or resumed from its newest good checkpoint), builds the model
and optimizers (train/engine.py), and then runs one loop. At each optimizer step:

    stop?         max_steps, max_tokens, the time budget, Ctrl-C / SIGTERM, another rank
    evaluate      every eval_every steps and at the end (then a sweep's on_eval may stop the run)
    checkpoint    every ckpt_every steps and at the end: TrainState.to_meta() + tensors (checkpoints.py)
    learning rate the schedule at this step -- or, under a time budget, at this share of the budget
    forward/back  micro-steps accumulating gradients to batch_tokens (engine.train_step)
    guard         bad numbers skip the update; ROLLBACK_AFTER in a row roll back (train/guard.py)
    update        the optimizers' step
    log           metrics.jsonl, progress bar with loss, tokens/s, MFU

Occasional work is a guarded block in this one function, not a callback system. Everything carried
from step to step is in `state` (train/state.py), the one thing a checkpoint saves and a resume or
rollback restores. Tests inject faults through `faults` (train/faults.py), the loop's only seam.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmforge import dist, hardware, runs
from lmforge.config import RunConfig
from lmforge.dist import DistInfo
from lmforge.errors import UserError
from lmforge.models import fastpaths
from lmforge.train import guard, precision, sharding
from lmforge.train import resume as run_folder
from lmforge.train.budget import Clock, TimeBudget, first_reserve, probe_step_seconds
from lmforge.train.data import TrainData, open_data
from lmforge.train.engine import Engine, apply_update, build_engine, train_step
from lmforge.train.faults import Faults
from lmforge.train.guard import MAX_ROLLBACKS, ROLLBACK_AFTER, SPIKE_WINDOW, bad_step  # noqa: F401
from lmforge.train.logbook import Logbook, Speed
from lmforge.train.optim import set_lr
from lmforge.train.schedule import lr_factor, lr_factor_by_time
from lmforge.train.state import TrainState
from lmforge.train.stop import StopFlag

logger = logging.getLogger(__name__)

__all__ = ["TrainData", "TrainResult", "open_data", "train"]


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    tokens: int
    wall_seconds: float
    tokens_per_second: float
    mfu: float
    final_val: dict = field(default_factory=dict)
    skipped_steps: int = 0
    rollbacks: int = 0
    stopped_by: str = "max_steps"
    num_params: int = 0
    peak_flops: float = 0.0
    compile_seconds: float = 0.0  # the first step's time beyond the second's (train.compile only)


def train(
    config: RunConfig,
    data: TrainData | str | Path,
    run_dir: str | Path,
    resume: bool = False,
    allow_data_change: bool = False,
    progress: bool = True,
    sample_fn: Callable[[torch.nn.Module, int], str] | None = None,
    faults: Faults | None = None,
    init_from: Path | None = None,
    on_eval: Callable[[int, dict], bool] | None = None,
    dist_info: DistInfo | None = None,
    run_notes: dict | None = None,
) -> TrainResult:
    """Train `config` on `data` (a DATA_DIR or TrainData) into RUN_DIR (or continue it with `resume`).

    `init_from`: a checkpoint folder whose weights start a fresh run (fine-tuning) instead of init.
    `on_eval(step, record)`: called after each validation pass with its metrics.jsonl record; True
    stops the run there (checkpoint, then return with stopped_by="on_eval") -- a sweep's pruning.
    `dist_info`: this process's rank under torchrun (DDP); only rank 0 writes logs and checkpoints.
    `faults`: test-only fault injection (train/faults.py); None injects none.
    `run_notes`: more entries for a fresh run's run.json (how `--auto` chose the model).
    """
    run_dir, tcfg, faults = Path(run_dir), config.train, faults or Faults()
    dinfo = dist_info or DistInfo()
    main = dinfo.is_main
    say_once = logger.info if main else _silent
    device = _setup_device(tcfg.device, dinfo)
    if not isinstance(data, TrainData):
        data = open_data(Path(data), config.data.weights)
    if config.model.vocab_size != data.tokenizer.vocab_size:
        raise UserError(
            f"model.vocab_size {config.model.vocab_size} != tokenizer vocab {data.tokenizer.vocab_size}"
        )

    # --- the precision (train.dtype=auto becomes float32 or bfloat16), before config.json is written ---
    config, precision_choice = precision.resolve(config, data, device, dinfo, run_dir, resume)
    tcfg = config.train

    # --- the run folder, the state it continues from, and what exactness depends on ---
    checkpoint = run_folder.open_run(run_dir, config, data, resume, allow_data_change, main, run_notes)
    state = TrainState.from_meta(checkpoint.meta) if checkpoint else TrainState(max_steps=tcfg.max_steps)
    env = _setup_threads(tcfg, device, dinfo, checkpoint)
    # the allocator first: the fast-path probe times its ops under the memory reuse the steps get
    reuse = device.type == "cpu" and tcfg.allocator == "reuse" and hardware.reuse_freed_memory()
    pinned = (checkpoint.meta.get("environment") or {}).get("fast_paths") if checkpoint else None
    paths = fastpaths.setup(config.model, tcfg, device, write=main, pinned=pinned) if main else None
    if dinfo.enabled:  # one probe (rank 0's), and every rank runs the kernels it chose
        pin = dist.broadcast_object(paths.pin() if main else None, dinfo)
        paths = paths or fastpaths.setup(config.model, tcfg, device, write=False, pinned=pin)
    env["fast_paths"] = paths.pin()  # a resume here runs the same kernels, so it stays bit-exact
    say_once(precision_choice.line())
    say_once(paths.line())
    if reuse:
        say_once("allocator: freed memory kept for reuse (train.allocator=system: the C library's own)")
    if main:
        allocator = "reuse" if reuse else "system"
        record = {**paths.record(), "allocator": allocator, "precision": precision_choice.record()}
        run_folder.record_fast_paths(run_dir, record)
    engine = build_engine(config, data, device, dinfo, checkpoint, init_from)
    if checkpoint is not None:
        if main:
            runs.truncate_metrics(run_dir, state.step)
        say_once(f"resuming from {checkpoint.path.name} (step {state.step}, {state.tokens:,} tokens)")
    dist.barrier(dinfo)  # the run folder is ready before any rank goes on

    # --- the horizon: max_steps and max_tokens, or what fits the time budget ---
    flops_per_token = engine.model.flops_per_token()
    peak = hardware.measure_peak_flops(device, tcfg.dtype)
    clock = Clock(state.wall_seconds)
    budget = _plan(state, config, engine, clock)
    if checkpoint is not None:
        run_folder.check_not_finished(
            state, config, budget is not None and budget.spent(state.wall_seconds), run_dir
        )
        if main:
            run_folder.record_changes(run_dir, config)
    say_once(
        f"model {config.model.family}: {engine.model.num_params():,} parameters, {flops_per_token:,} "
        f"FLOPs/token; {engine.tokens_per_step:,} tokens/step ({tcfg.batch_size} x {config.model.seq_len} "
        f"x {engine.accum} micro-steps); {state.max_steps} steps on {device.type} ({tcfg.dtype})"
    )

    book = Logbook(run_dir, tcfg.tensorboard, state.max_steps, state.step, progress, main)
    start_step = state.step  # the step resumed from (or rolled back to) is not evaluated or saved again
    last_val, last_val_step, stopped_by = {}, -1, None
    speed = Speed(flops_per_token, peak)
    step_times: list[float] = []
    engine.model.train()
    with StopFlag() as stop:
        while True:
            now = _shared_clock(clock(), dinfo) if budget else clock()
            stopped_by = stop.reason or _limit_reached(
                state, tcfg, budget, now, start_step, engine.tokens_per_step
            )
            due = state.step > start_step and state.step % tcfg.eval_every == 0
            if due and stopped_by is None and budget and budget.ends_with(now):
                stopped_by = "time_budget"  # the evaluation due now would be the last but one: make it last
            if dinfo.enabled and dist.any_rank(stopped_by is not None, dinfo) and stopped_by is None:
                stopped_by = "another rank stopped"  # e.g. SIGTERM reached one rank
            last = stopped_by is not None

            # --- evaluate on a fixed validation slice ---
            if due or (last and state.step > start_step):
                seconds = time.perf_counter()
                record = _evaluate(engine, data, tcfg, state, now, book)
                last_val, last_val_step = record["val"], state.step
                seconds = time.perf_counter() - seconds
                speed.pause(seconds)  # tokens/s counts training time only
                if budget:
                    budget.observe_eval(seconds)
                if on_eval is not None and on_eval(state.step, record["line"]) and not last:
                    stopped_by, last = "on_eval", True  # e.g. a sweep pruned this trial

            # --- a sample now and then ---
            every = tcfg.sample_every
            if main and sample_fn and every and state.step > start_step and state.step % every == 0:
                book.say(f"sample at step {state.step}: {sample_fn(engine.model, state.step)!r}")
                engine.model.train()

            # --- checkpoint: TrainState and the tensors, atomically ---
            if state.step > start_step and (state.step % tcfg.ckpt_every == 0 or last):
                seconds = time.perf_counter()
                state.wall_seconds = clock()
                if budget:
                    state.budget_reserve = budget.reserve
                val = last_val if last_val_step == state.step else None
                _save(run_dir, engine, state, val, data, env, tcfg.keep_last, faults, main)
                if budget:
                    budget.observe_save(time.perf_counter() - seconds)
            if last:
                break

            # --- one optimizer step: learning rate, forward/backward, guard, update ---
            step_start = time.perf_counter()
            faults.at("step", state.step)
            if budget:  # the schedule follows the clock, so the warm-down moves with the machine's pace
                factor = lr_factor_by_time(
                    state.step, _spent(budget, now, state.step, tcfg, engine), config.schedule
                )
            else:
                factor = lr_factor(state.step, state.max_steps, config.schedule)
            set_lr(engine.optimizers, factor * state.lr_scale)
            out = train_step(engine, state.step)
            loss = out.loss * faults.loss_factor(state.step)
            bad = guard.judge(state, loss, out.grad_norm, config.optim.lr)
            if bad:
                book.say(
                    f"step {state.step}: skipped update, {bad} "
                    f"(loss {loss:.4g}, grad norm {out.grad_norm:.4g})"
                )
            apply_update(engine, skip=bad is not None)

            if guard.needs_rollback(state):  # back to the last good checkpoint, at half the rate
                state, name = guard.roll_back(state, run_dir, engine, config.optim.lr)
                start_step = state.step
                if main:
                    runs.truncate_metrics(run_dir, state.step)
                book.record({"step": state.step, "event": "rollback", "lr_scale": state.lr_scale,
                             "skipped": state.skipped_steps})  # fmt: skip
                book.say(
                    f"{ROLLBACK_AFTER} bad steps in a row: rolled back to {name}, learning rate "
                    f"x{state.lr_scale:g} (rollback {state.rollbacks} of at most {MAX_ROLLBACKS})"
                )
                book.bar.n = state.step
                continue  # the loop goes on from the checkpoint's step

            state.step += 1
            state.tokens += engine.tokens_per_step
            speed.add(engine.tokens_per_step)
            step_times.append(time.perf_counter() - step_start)
            if budget:
                budget.observe_step(step_times[-1])

            # --- log ---
            if state.step % tcfg.log_every == 0 or state.step == state.max_steps:
                speed.measure()
                if budget:  # re-estimated from the pace, for the progress bar and the guard's limit
                    state.max_steps = book.bar.total = budget.horizon(
                        state.step, _shared_clock(clock(), dinfo)
                    )
                book.record(
                    {
                        "step": state.step,
                        "tokens": state.tokens,
                        "time": round(clock(), 3),
                        "train/loss": loss,
                        "lr_factor": factor * state.lr_scale,
                        "batch_crc": out.batch_crc,
                        "grad_norm": out.grad_norm,
                        "tok_per_s": round(speed.tokens_per_second, 1),
                        "mfu": round(speed.mfu, 4),
                    }
                )
            book.show_step(loss, speed)
    book.close()
    if stopped_by in ("SIGINT", "SIGTERM"):
        say_once(
            f"{stopped_by}: stopped at step {state.step} with its checkpoint on disk; "
            f"continue with `lmforge train --out {run_dir} --resume`"
        )
    wall = clock()
    return TrainResult(
        run_dir=run_dir,
        steps=state.step,
        tokens=state.tokens,
        wall_seconds=wall,
        tokens_per_second=state.tokens / max(wall, 1e-9) if checkpoint is None else speed.tokens_per_second,
        mfu=speed.mfu,
        final_val=last_val,
        skipped_steps=state.skipped_steps,
        rollbacks=state.rollbacks,
        stopped_by=stopped_by or "max_steps",
        num_params=engine.model.num_params(),
        peak_flops=peak,
        compile_seconds=_compile_seconds(step_times) if tcfg.compile else 0.0,
    )


# --- the named pieces the loop calls, in the order it calls them ---------------------------------


def _silent(message: str) -> None:
    """What ranks other than 0 print."""


def _setup_device(name: str, dinfo: DistInfo) -> torch.device:
    device = hardware.resolve_device(name)
    if dinfo.enabled:
        dist.init(dinfo, device.type)
        if device.type == "cuda":
            device = torch.device("cuda", dinfo.local_rank)
    return device


def _setup_threads(tcfg, device: torch.device, dinfo: DistInfo, checkpoint) -> dict:
    """Set torch's thread count (the checkpoint's on a resume, unless the config names one) and say
    why a resume will not continue bit-identically, if it will not; the environment to record."""
    saved = checkpoint.meta.get("environment") if checkpoint else None
    if device.type == "cpu":
        # processes on one machine share its cores rather than oversubscribing them
        default = max(1, hardware.physical_cores() // dinfo.world_size)
        threads = run_folder.threads_for(tcfg.threads, saved, default)
        hardware.setup_threads(threads)
        if saved and not tcfg.threads and threads != default and dinfo.is_main:
            logger.info(
                f"resume: {threads} threads as when the checkpoint was written "
                "(train.threads sets another count)"
            )
    env = run_folder.environment(torch.get_num_threads(), tcfg.dtype, device, dinfo.world_size)
    if checkpoint is not None:
        reasons = run_folder.exactness_warnings(saved, env)
        if reasons and dinfo.is_main:
            logger.warning(
                "warning: this continuation will not be bit-identical to an uninterrupted run, or "
                "cannot be shown to be: " + "; ".join(reasons)
            )
    return env


def _plan(state: TrainState, config: RunConfig, engine: Engine, clock: Clock) -> TimeBudget | None:
    """Set state.max_steps for this process; a TimeBudget when the run has one (else None)."""
    tcfg = config.train
    if tcfg.time_budget <= 0:
        state.max_steps = tcfg.max_steps  # a resume's --max-steps may extend (or shorten) the run
        if tcfg.max_tokens:
            state.max_steps = min(state.max_steps, _token_steps(tcfg.max_tokens, engine.tokens_per_step))
        return None
    step_seconds = tcfg.step_seconds or probe_step_seconds(  # --auto measured it: a few steps saved
        engine.eval_model, engine.sampler, engine.amp, engine.accum, engine.device
    )
    step_seconds = _shared_clock(step_seconds, engine.dinfo)
    reserve = state.budget_reserve or first_reserve(
        step_seconds, engine.accum, tcfg.eval_tokens, tcfg.batch_size, config.model.seq_len
    )
    budget = TimeBudget(tcfg.time_budget, step_seconds, reserve)
    state.max_steps = budget.horizon(state.step, clock())
    if tcfg.max_tokens:
        state.max_steps = min(state.max_steps, _token_steps(tcfg.max_tokens, engine.tokens_per_step))
    if engine.dinfo.is_main:
        logger.info(
            f"time budget {tcfg.time_budget:g}s: {step_seconds * 1e3:.1f} ms/step measured -> "
            f"about {state.max_steps} steps"
        )
    return budget


def _spent(budget: TimeBudget, now: float, step: int, tcfg, engine: Engine) -> float:
    """The share of a time-budget run spent: of its time, or of train.max_tokens where those would end
    it sooner -- whichever limit comes first warms the run down (--auto sets both for a small text)."""
    fraction = budget.fraction(now)
    if tcfg.max_tokens:
        fraction = max(fraction, step / _token_steps(tcfg.max_tokens, engine.tokens_per_step))
    return fraction


def _token_steps(max_tokens: int, tokens_per_step: int) -> int:
    """The optimizer steps train.max_tokens allows (at least one)."""
    return max(1, max_tokens // tokens_per_step)


def _shared_clock(seconds: float, dinfo: DistInfo) -> float:
    """One value of a time for every rank (their mean), so all ranks set the same rate and stop together."""
    if not dinfo.enabled:
        return seconds
    return float(dist.all_reduce_mean(torch.tensor([seconds], dtype=torch.float64), dinfo)[0])


def _limit_reached(
    state: TrainState, tcfg, budget: TimeBudget | None, now: float, start_step: int, tokens_per_step: int
) -> str | None:
    """Which limit ends the run at this step boundary, if one does. Under a time budget the step
    count is an estimate, not a limit; the budget needs at least one step of this process."""
    if tcfg.max_tokens and state.step >= _token_steps(tcfg.max_tokens, tokens_per_step):
        return "max_tokens"
    if budget is not None:
        return "time_budget" if budget.spent(now) and state.step > start_step else None
    return "max_steps" if state.step >= state.max_steps else None


def _evaluate(engine: Engine, data: TrainData, tcfg, state: TrainState, now: float, book: Logbook) -> dict:
    """Validation loss on the fixed slice, logged; {"val": metrics, "line": its metrics.jsonl record}."""
    val = data.evaluate(
        engine.eval_model, tcfg.eval_tokens, max(1, tcfg.batch_size), engine.device, engine.amp
    )
    line = {
        "step": state.step,
        "tokens": state.tokens,
        "time": round(now, 3),
        "val/loss": val["loss"],
        "val/bpb": val["bpb"],
        "val/ppl": val["perplexity"],
    }
    book.record(line)
    book.say(f"step {state.step}: val loss {val['loss']:.4f}, bpb {val['bpb']:.4f}")
    engine.model.train()
    return {"val": val, "line": line}


def _save(
    run_dir: Path,
    engine: Engine,
    state: TrainState,
    val: dict | None,
    data: TrainData,
    env: dict,
    keep_last: int,
    faults: Faults,
    main: bool,
) -> None:
    """Checkpoint this step (every rank takes part under FSDP; rank 0 writes), then prune old ones."""
    if val:
        state.record_val(state.step, val["loss"])
    gathered = None
    if engine.dinfo.enabled:  # collective: every rank takes part, rank 0 writes
        gathered = sharding.gather_state(engine.model, engine.optimizers, engine.sharded)
    if not main:
        return
    meta = {
        **state.to_meta(),
        "tokenizer_hash": data.tokenizer.hash,
        "manifest_hash": data.fingerprint,
        "environment": env,
        "val": val or {},
    }
    step = state.step
    runs.save_checkpoint(
        run_dir, step, engine.model, engine.optimizers, meta,
        fault_hook=lambda point: faults.at(point, step), gathered=gathered,
    )  # fmt: skip
    runs.prune_checkpoints(run_dir, keep_last, state.best_step)


def _compile_seconds(step_times: list[float]) -> float:
    """torch.compile compiles on the first call: the first step's time beyond the second's."""
    return max(0.0, step_times[0] - step_times[1]) if len(step_times) > 1 else 0.0
