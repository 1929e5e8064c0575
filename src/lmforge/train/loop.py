"""The training loop, readable top to bottom.

`train()` prepares everything (device, data, model, optimisers, resume) and then runs one loop:

    for each optimizer step:
        evaluate      (every eval_every steps, and at the end)
        checkpoint    (every ckpt_every steps, at the end, and when asked to stop)
        stop?         (max_steps, max_tokens, time budget, Ctrl-C / SIGTERM)
        micro-steps   (forward + backward, accumulating gradients to batch_tokens)
        guard         (a non-finite loss or gradient, or a huge spike: skip the update;
                       3 in a row: roll back to the last good checkpoint at half the learning rate)
        update        (clip, learning rate from the schedule, optimizer step)
        log           (metrics.jsonl, progress bar with loss, tokens/s, MFU, ETA)

Occasional work is a guarded block in this one function, not a callback system: a new feature is
another `if step % every == 0` block. The batches of a step are a pure function of
(seed, step, rank, micro_step), so resuming needs only the step number -- see data/batches.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmforge import dist, hardware, runs
from lmforge.config import RunConfig
from lmforge.data.batches import BatchSampler, Pool
from lmforge.dist import DistInfo
from lmforge.errors import UserError
from lmforge.eval.loss import evaluate_tokens
from lmforge.eval.metrics import model_flops_utilization
from lmforge.models.registry import MODELS
from lmforge.train import sharding
from lmforge.train.optim import build_optimizers, set_lr
from lmforge.train.schedule import lr_factor


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
    compile_seconds: float = 0.0


# The guard against bad numbers. A skipped step leaves weights and optimizer state untouched; this
# many in a row roll the run back to its last good checkpoint with half the learning rate (the
# recovery of the PaLM and OPT logbooks, automated), at most MAX_ROLLBACKS times before giving up.
SPIKE_WINDOW = 20  # good steps of history before a loss spike is judged
ROLLBACK_AFTER = 3  # bad steps in a row that trigger a rollback
MAX_ROLLBACKS = 3  # rollbacks before the run stops with an error


def bad_step(loss: float, grad_norm: float, recent: Sequence[float]) -> str | None:
    """Why this step's update must be skipped, or None when it is fine.

    A spike is a loss above 4x the recent average plus 2 nats: far outside the step-to-step noise of
    a healthy run (so a clean run never trips it), yet well below what a blow-up looks like.
    """
    if not math.isfinite(loss):
        return "non-finite loss"
    if not math.isfinite(grad_norm):
        return "non-finite gradient norm"
    if len(recent) >= SPIKE_WINDOW and loss > 4 * (sum(recent) / len(recent)) + 2:
        return "loss spike"
    return None


class StopFlag:
    """SIGINT / SIGTERM set a flag checked at step boundaries; a second signal stops at once."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._old: dict = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.reason is not None:  # a second signal: leave now, even mid-step (checkpoints are atomic)
            raise KeyboardInterrupt
        self.reason = "SIGINT" if signum == signal.SIGINT else "SIGTERM"

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class TrainData:
    """What the loop trains on: a batch source, a validation measure, and the tokenizer.

    `open_data(DATA_DIR)` builds it from token shards; fine-tuning builds its own (masked targets,
    conversation packing) and hands it to the same `train()`.
    """

    tokenizer: Any
    tokenizer_dir: Path  # copied into the run folder
    fingerprint: str  # sha256 of what the batches are drawn from; a change is refused on resume
    source: str  # a description for run.json (the data folder)
    make_sampler: Callable[
        [int, int, int, int], Any
    ]  # (batch_size, seq_len, seed, rank) -> .batch(step, micro)
    evaluate: Callable[..., dict]  # (model, max_tokens, batch_size, device, autocast) -> metrics


def open_data(data_dir: Path, weights: dict[str, float]) -> TrainData:
    """Token shards of a DATA_DIR as TrainData: one pool per source, the val split for evaluation.

    Mixture weights: `data.weights` from the run config when given, else the weights the sources
    were collected with (sources.json); a source without a weight gets none of the batches.
    """
    from lmforge.data.shards import open_split, open_split_by_source, read_manifest
    from lmforge.data.tokenizer import load_tokenizer

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(
            f"data folder '{data_dir}' does not exist; make it with `lmforge data prepare --out {data_dir}`"
        )
    tokenizer = load_tokenizer(data_dir / "tokenizer")
    shards_dir = data_dir / "shards"
    manifest = read_manifest(shards_dir)
    if manifest.get("tokenizer_hash") != tokenizer.hash:
        raise UserError(
            f"shards in '{shards_dir}' were made with another tokenizer than '{data_dir / 'tokenizer'}'; "
            "re-run `lmforge data encode`"
        )
    by_source = open_split_by_source(shards_dir, "train", expected_tokenizer_hash=tokenizer.hash)
    val = open_split(shards_dir, "val", expected_tokenizer_hash=tokenizer.hash)
    if weights:
        unknown = set(weights) - set(by_source)
        if unknown:
            raise UserError(
                f"data.weights names unknown source(s) {sorted(unknown)}; known: {sorted(by_source)}"
            )
    else:
        sources_path = data_dir / "sources.json"
        saved = json.loads(sources_path.read_text(encoding="utf-8")) if sources_path.is_file() else {}
        weights = {name: float(saved.get(name, {}).get("weight", 1.0)) for name in by_source}
    pools = [Pool(name, arrays, float(weights.get(name, 0.0))) for name, arrays in by_source.items()]
    if not any(p.weight > 0 for p in pools):
        raise UserError("every data.weights entry is 0; give at least one source a positive weight")

    def make_sampler(
        batch_size: int, seq_len: int, seed: int, rank: int, world_size: int = 1
    ) -> BatchSampler:
        return BatchSampler(pools, batch_size, seq_len, seed, rank=rank, world_size=world_size)

    def evaluate(model, max_tokens, batch_size, device, autocast) -> dict:
        seq_len = runs.unwrap(model).config.seq_len
        return evaluate_tokens(
            model, val, tokenizer.token_bytes, seq_len, max_tokens, batch_size, device, autocast
        )

    return TrainData(
        tokenizer=tokenizer,
        tokenizer_dir=data_dir / "tokenizer",
        fingerprint=runs.sha256_file(shards_dir / "manifest.json"),
        source=str(data_dir.resolve()),
        make_sampler=make_sampler,
        evaluate=evaluate,
    )


def _check_resume(run_dir: Path, config: RunConfig, tokenizer, manifest_hash: str, allow_data_change: bool):
    saved = runs.read_run_config(run_dir)
    if saved.model != config.model:
        raise UserError(
            f"the model config differs from the one '{run_dir}' was started with; resume without "
            "changing model.* settings, or train into a new --out folder"
        )
    info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    if info.get("tokenizer_hash") != tokenizer.hash:
        raise UserError(f"the tokenizer changed since '{run_dir}' was started; resume with the original data")
    if info.get("manifest_hash") != manifest_hash and not allow_data_change:
        raise UserError(
            f"the training shards changed since '{run_dir}' was started; pass --allow-data-change to "
            "resume anyway (the batches will differ from the original run's)"
        )


def train(
    config: RunConfig,
    data: TrainData | str | Path,
    run_dir: str | Path,
    resume: bool = False,
    allow_data_change: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    sample_fn: Callable[[torch.nn.Module, int], str] | None = None,
    fault_hook: Callable[[str, int], float | None] | None = None,
    init_from: Path | None = None,
    on_eval: Callable[[int, dict], bool] | None = None,
    dist_info: DistInfo | None = None,
) -> TrainResult:
    """Train `config` on `data` (a DATA_DIR or TrainData) into RUN_DIR (or continue it with `resume`).

    `init_from`: a checkpoint folder whose weights start a fresh run (fine-tuning) instead of init.
    `on_eval(step, record)`: called after each validation pass with its metrics.jsonl record; True
    stops the run there (checkpoint, then return with stopped_by="on_eval") -- a sweep's pruning.
    `dist_info`: this process's rank under torchrun (DDP); only rank 0 writes logs and checkpoints.
    """
    run_dir = Path(run_dir)
    tcfg = config.train
    dinfo = dist_info or DistInfo()
    main = dinfo.is_main
    if not main:  # other ranks train in silence; rank 0 speaks for the run
        progress, log = False, (lambda message: None)
    device = hardware.resolve_device(tcfg.device)
    if dinfo.enabled:
        dist.init(dinfo, device.type)
        if device.type == "cuda":
            device = torch.device("cuda", dinfo.local_rank)
    if device.type == "cpu":
        # processes on one machine share its cores rather than oversubscribing them
        hardware.setup_threads(tcfg.threads or max(1, hardware.physical_cores() // dinfo.world_size))
    if not isinstance(data, TrainData):
        data = open_data(Path(data), config.data.weights)
    tokenizer, manifest_hash = data.tokenizer, data.fingerprint
    mcfg = config.model
    if mcfg.vocab_size != tokenizer.vocab_size:
        raise UserError(f"model.vocab_size {mcfg.vocab_size} != tokenizer vocab {tokenizer.vocab_size}")

    # --- the run folder: fresh, or resumed from its newest good checkpoint ---
    checkpoint = None
    if resume and (run_dir / "config.json").is_file():
        _check_resume(run_dir, config, tokenizer, manifest_hash, allow_data_change)
        for name in runs.remove_temporaries(run_dir) if main else []:
            log(f"removed unfinished checkpoint {name}")
        checkpoint = runs.find_latest_good(run_dir, log=log)
        if checkpoint is None and runs.list_checkpoints(run_dir):
            raise UserError(
                f"no checkpoint in '{run_dir / 'ckpt'}' is intact (see the warnings above), so there is "
                "nothing safe to resume from; train into a new --out folder"
            )
    elif (run_dir / "ckpt").is_dir() and runs.list_checkpoints(run_dir):
        raise UserError(
            f"'{run_dir}' already holds a run; pass --resume to continue it or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint is None and main:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        runs.write_json_atomic(run_dir / "config.json", config.to_dict())
        runs.write_json_atomic(
            run_dir / "run.json",
            {
                "data_dir": data.source,
                "tokenizer_hash": tokenizer.hash,
                "tokenizer_files_hash": runs.tokenizer_files_hash(data.tokenizer_dir),
                "manifest_hash": manifest_hash,
                "lmforge_version": runs.__version__,
                "torch_version": torch.__version__,
            },
        )
        tok_copy = run_dir / "tokenizer"
        if tok_copy.exists():
            shutil.rmtree(tok_copy)
        shutil.copytree(data.tokenizer_dir, tok_copy)

    # --- model and optimisers ---
    torch.manual_seed(tcfg.seed)
    model = MODELS[mcfg.family][1](mcfg)
    model.init_weights()
    if init_from is not None and checkpoint is None:
        runs.load_model_weights(model, Path(init_from))
    if checkpoint is not None:  # weights before sharding: FSDP shards what the model holds
        runs.load_model_weights(model, checkpoint.path)
    model.to(device)
    fsdp = dinfo.enabled and tcfg.parallel == "fsdp"
    if fsdp:
        if config.optim.name == "muon":
            raise UserError("optim.name=muon is not supported with train.parallel=fsdp; use adamw or ddp")
        sharding.shard_model(model)
    optimizers = build_optimizers(config.optim, model, mcfg.vocab_size, device.type, sharded=fsdp)
    start_step, tokens_seen, wall_before, max_steps = 0, 0, 0.0, tcfg.max_steps
    best_val, best_step, skipped = math.inf, None, 0
    lr_scale, rollbacks, bad_in_a_row, resumed_losses = 1.0, 0, 0, []
    if checkpoint is not None:
        runs.load_training_state(
            checkpoint.path, optimizers, sharding.load_optimizer(model) if fsdp else None
        )
        meta = checkpoint.meta
        start_step, tokens_seen, wall_before = meta["step"], meta["tokens"], meta["wall_seconds"]
        # A time-budget run keeps the horizon it planned; otherwise --max-steps on the resume
        # command may extend (or shorten) the run.
        max_steps = meta["max_steps"] if tcfg.time_budget > 0 else tcfg.max_steps
        skipped = meta.get("skipped_steps", 0)
        best_val, best_step = meta.get("best_val", math.inf), meta.get("best_step")
        # the guard's state, so a resumed run judges (and rolls back) exactly as the original would
        lr_scale, rollbacks = meta.get("lr_scale", 1.0), meta.get("rollbacks", 0)
        bad_in_a_row, resumed_losses = meta.get("bad_in_a_row", 0), meta.get("recent_losses", [])
        if main:
            runs.truncate_metrics(run_dir, start_step)
        log(f"resuming from {checkpoint.path.name} (step {start_step}, {tokens_seen:,} tokens)")

    dist.barrier(dinfo)  # the run folder is ready before any rank goes on
    forward = model
    compile_seconds = 0.0
    if tcfg.compile:
        forward, compile_seconds = _compile(model, log)
    eval_model = forward  # evaluation never goes through DDP's gradient hooks
    if dinfo.enabled and not fsdp:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(
            forward, device_ids=[device.index] if device.type == "cuda" else None
        )

    amp = hardware.autocast(device, tcfg.dtype)
    # batch_tokens is the global batch: ranks x micro-steps x batch_size x seq_len
    tokens_per_micro = tcfg.batch_size * mcfg.seq_len * dinfo.world_size
    accum = max(1, math.ceil(tcfg.batch_tokens / tokens_per_micro)) if tcfg.batch_tokens else 1
    tokens_per_step = tokens_per_micro * accum
    if dinfo.enabled:
        sampler = data.make_sampler(tcfg.batch_size, mcfg.seq_len, tcfg.seed, dinfo.rank, dinfo.world_size)
    else:
        sampler = data.make_sampler(tcfg.batch_size, mcfg.seq_len, tcfg.seed, 0)
    flops_per_token = model.flops_per_token()
    peak = hardware.measure_peak_flops(device, tcfg.dtype)
    t_start = time.perf_counter()

    if tcfg.time_budget > 0 and checkpoint is None:
        max_steps = _steps_for_budget(eval_model, sampler, amp, accum, tcfg, device, t_start, log)
        max_steps = dist.broadcast_int(max_steps, dinfo)
    if tcfg.max_tokens:
        max_steps = min(max_steps, max(1, tcfg.max_tokens // tokens_per_step))

    log(
        f"model {mcfg.family}: {model.num_params():,} parameters, {flops_per_token:,} FLOPs/token; "
        f"{tokens_per_step:,} tokens/step ({tcfg.batch_size} x {mcfg.seq_len} x {accum} micro-steps); "
        f"{max_steps} steps on {device.type} ({tcfg.dtype})"
    )

    def evaluate(max_tokens: int | None) -> dict:
        return data.evaluate(eval_model, max_tokens, max(1, tcfg.batch_size), device, amp)

    def save(step: int, val: dict | None) -> None:
        nonlocal best_val, best_step
        if val and val["loss"] < best_val:
            best_val, best_step = val["loss"], step
        gathered = sharding.gather_state(model, optimizers) if fsdp else None  # all ranks take part
        if not main:
            return
        meta = {
            "tokens": tokens_seen,
            "wall_seconds": wall_before + time.perf_counter() - t_start,
            "max_steps": max_steps,
            "skipped_steps": skipped,
            "rollbacks": rollbacks,
            "lr_scale": lr_scale,
            "bad_in_a_row": bad_in_a_row,
            "recent_losses": list(recent_losses),
            "best_val": best_val,
            "best_step": best_step,
            "tokenizer_hash": tokenizer.hash,
            "manifest_hash": manifest_hash,
            "val": val or {},
        }
        runs.save_checkpoint(
            run_dir,
            step,
            model,
            optimizers,
            meta,
            fault_hook=(lambda point: fault_hook(point, step)) if fault_hook else None,
            gathered=gathered,
        )
        runs.prune_checkpoints(run_dir, tcfg.keep_last, best_step)

    # metrics.jsonl always; TensorBoard too when train.tensorboard (same names, x axis = step)
    log_metrics, close_metrics = _metrics_sink(run_dir, tcfg.tensorboard) if main else (_ignore, _ignore)
    bar = _progress_bar(max_steps, start_step, progress)
    say = bar.write if progress else log  # (--json: stdout holds only the summary)
    recent_losses: deque[float] = deque(resumed_losses, maxlen=50)
    window_tokens, window_start = 0, time.perf_counter()
    tokens_per_second = mfu = 0.0
    last_val: dict = {}
    last_val_step = -1
    eval_seconds = 0.0
    stopped_by = "max_steps"
    step = start_step
    model.train()
    with StopFlag() as stop:
        while True:
            elapsed = wall_before + time.perf_counter() - t_start
            if stop.reason:
                stopped_by = stop.reason
            elif tcfg.time_budget > 0 and elapsed >= tcfg.time_budget and step > start_step:
                stopped_by = "time_budget"
            last = step >= max_steps or stopped_by != "max_steps"
            if dinfo.enabled and dist.any_rank(last, dinfo) and not last:
                last, stopped_by = True, "another rank stopped"  # e.g. SIGTERM reached one rank

            # --- evaluate on a fixed validation slice ---
            if step > start_step and (step % tcfg.eval_every == 0 or last):
                eval_start = time.perf_counter()
                last_val, last_val_step = evaluate(tcfg.eval_tokens), step
                eval_seconds = time.perf_counter() - eval_start
                window_start += eval_seconds  # tokens/s counts training time only
                record = {
                    "step": step,
                    "tokens": tokens_seen,
                    "time": round(elapsed, 3),
                    "val/loss": last_val["loss"],
                    "val/bpb": last_val["bpb"],
                    "val/ppl": last_val["perplexity"],
                }
                log_metrics(record)
                say(f"step {step}: val loss {last_val['loss']:.4f}, bpb {last_val['bpb']:.4f}")
                model.train()
                if on_eval is not None and on_eval(step, record) and not last:
                    stopped_by, last = "on_eval", True  # e.g. a sweep pruned this trial

            # --- a sample now and then ---
            if (
                main
                and sample_fn
                and tcfg.sample_every
                and step > start_step
                and step % tcfg.sample_every == 0
            ):
                say(f"sample at step {step}: {sample_fn(model, step)!r}")
                model.train()

            # --- checkpoint ---
            if step > start_step and (step % tcfg.ckpt_every == 0 or last):
                save(step, last_val if last_val_step == step else None)
            if last:
                if stopped_by in ("SIGINT", "SIGTERM"):
                    log(
                        f"{stopped_by}: stopped at step {step} with its checkpoint on disk; "
                        f"continue with `lmforge train --out {run_dir} --resume`"
                    )
                break
            if fault_hook:
                fault_hook("step", step)

            # --- one optimizer step: accumulate gradients over micro-steps ---
            factor = lr_factor(step, max_steps, config.schedule)
            set_lr(optimizers, factor * lr_scale)
            batch_crc = 0  # a fingerprint of the step's batches in metrics.jsonl: resumes replay none
            loss_sum = torch.zeros((), device=device)
            for micro_step in range(accum):
                x, y = sampler.batch(step, micro_step)
                batch_crc = zlib.crc32(x.cpu().numpy().tobytes(), batch_crc)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                # DDP averages gradients across ranks once per step, on the last micro-step
                sync = not dinfo.enabled or fsdp or micro_step == accum - 1
                with contextlib.nullcontext() if sync else forward.no_sync():
                    with amp:
                        loss = forward(x, y)
                    (loss / accum).backward()
                loss_sum += loss.detach()
            loss_value = float(dist.all_reduce_mean(loss_sum, dinfo)) / accum  # every rank judges alike
            if fault_hook:  # tests only: LMFORGE_FAULT="nan:STEP" / "spike:STEP" poison the loss
                loss_value *= fault_hook("loss", step) or 1.0
            max_norm = config.optim.grad_clip if config.optim.grad_clip > 0 else float("inf")
            grad_norm = sharding.full_norm(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))

            # --- guard: bad numbers never reach the weights ---
            bad = bad_step(loss_value, grad_norm, recent_losses)
            if bad:
                skipped, bad_in_a_row = skipped + 1, bad_in_a_row + 1
                say(f"step {step}: skipped update, {bad} (loss {loss_value:.4g}, grad norm {grad_norm:.4g})")
                if skipped > max(10, max_steps // 20):
                    raise UserError(
                        f"training diverged: {skipped} bad steps; lower optim.lr (now "
                        f"{config.optim.lr * lr_scale:g}) and start a new run"
                    )
            else:
                for opt in optimizers:
                    opt.step()
                recent_losses.append(loss_value)
                bad_in_a_row = 0
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)

            # --- rollback: repeated bad steps go back to the last good checkpoint at half the lr ---
            if bad_in_a_row >= ROLLBACK_AFTER:
                good = runs.find_latest_good(run_dir, log=log)
                if good is None or rollbacks >= MAX_ROLLBACKS:
                    where = f"after {rollbacks} rollbacks" if good else "before the first checkpoint"
                    raise UserError(
                        f"training diverged: {bad_in_a_row} bad steps in a row at step {step} {where}; "
                        f"lower optim.lr (now {config.optim.lr * lr_scale:g}) and start a new run"
                    )
                if fsdp:
                    raise UserError(
                        f"training diverged: {bad_in_a_row} bad steps in a row at step {step}; rollback "
                        "is not supported under train.parallel=fsdp: lower optim.lr and resume with --resume"
                    )
                runs.load_model_weights(model, good.path)
                runs.load_training_state(good.path, optimizers)  # optimizer and RNG state
                step, tokens_seen = good.meta["step"], good.meta["tokens"]
                recent_losses.clear()
                recent_losses.extend(good.meta.get("recent_losses", []))
                rollbacks, lr_scale, bad_in_a_row = rollbacks + 1, lr_scale * 0.5, 0
                start_step = step  # the checkpoint we came back to is not evaluated or saved again
                runs.truncate_metrics(run_dir, step)
                log_metrics({"step": step, "event": "rollback", "lr_scale": lr_scale, "skipped": skipped})
                say(
                    f"{ROLLBACK_AFTER} bad steps in a row: rolled back to {good.path.name}, "
                    f"learning rate x{lr_scale:g} (rollback {rollbacks} of at most {MAX_ROLLBACKS})"
                )
                bar.n = step
                continue
            step += 1
            tokens_seen += tokens_per_step
            window_tokens += tokens_per_step

            # --- log ---
            now = time.perf_counter()
            if step % tcfg.log_every == 0 or step == max_steps:
                tokens_per_second = window_tokens / max(1e-9, now - window_start)
                mfu = model_flops_utilization(flops_per_token, tokens_per_second, peak)
                window_tokens, window_start = 0, now
                # A time budget re-plans the horizon from the measured pace (the machine may be
                # busier or freer than at the start), so the schedule's decay still fits the budget;
                # the last 15% of the steps keep their plan so the warm-down is not cut short.
                if tcfg.time_budget > 0 and step < 0.85 * max_steps and tokens_per_second > 0:
                    left = tcfg.time_budget - (wall_before + now - t_start)
                    step_seconds = tokens_per_step / tokens_per_second
                    # each remaining step also carries 1/eval_every of an evaluation
                    step_seconds += eval_seconds / tcfg.eval_every
                    max_steps = dist.broadcast_int(max(step + 1, step + int(left / step_seconds)), dinfo)
                    bar.total = max_steps
                log_metrics(
                    {
                        "step": step,
                        "tokens": tokens_seen,
                        "time": round(wall_before + now - t_start, 3),
                        "train/loss": loss_value,
                        "lr_factor": factor * lr_scale,
                        "batch_crc": batch_crc,
                        "grad_norm": grad_norm,
                        "tok_per_s": round(tokens_per_second, 1),
                        "mfu": round(mfu, 4),
                    },
                )
            bar.set_postfix_str(
                f"loss {loss_value:.3f} | {tokens_per_second / 1e3:.1f}k tok/s | MFU {mfu:.0%}"
            )
            bar.update(1)
    bar.close()
    close_metrics()
    wall = wall_before + time.perf_counter() - t_start
    return TrainResult(
        run_dir=run_dir,
        steps=step,
        tokens=tokens_seen,
        wall_seconds=wall,
        tokens_per_second=tokens_seen / max(wall, 1e-9) if checkpoint is None else tokens_per_second,
        mfu=mfu,
        final_val=last_val,
        skipped_steps=skipped,
        rollbacks=rollbacks,
        stopped_by=stopped_by,
        num_params=model.num_params(),
        peak_flops=peak,
        compile_seconds=compile_seconds,
    )


def _metrics_sink(run_dir: Path, tensorboard: bool) -> tuple[Callable[[dict], None], Callable[[], None]]:
    """(write(record), close()): every record goes to metrics.jsonl, and to RUN_DIR/tb/ with TensorBoard.

    TensorBoard is optional (the `tune` extra) and imported only when asked for; each scalar keeps
    its metrics.jsonl name (`train/loss`, `val/bpb`, ...) so both views read the same.
    """
    if not tensorboard:
        return (lambda record: runs.append_metrics(run_dir, record)), (lambda: None)
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(
            "train.tensorboard needs the tensorboard package; pip install 'lmforge[tune]'"
        ) from None
    writer = SummaryWriter(log_dir=str(run_dir / "tb"))

    def write(record: dict) -> None:
        runs.append_metrics(run_dir, record)
        for name, value in record.items():
            if name not in ("step", "tokens", "time") and isinstance(value, int | float):
                writer.add_scalar(name, value, global_step=record["step"])
        writer.flush()  # a crash loses nothing already in metrics.jsonl either

    return write, writer.close


def _compile(model: torch.nn.Module, log) -> tuple[torch.nn.Module, float]:
    """torch.compile with an eager fallback; compilation itself happens lazily on first call."""
    try:
        return torch.compile(model, dynamic=False), 0.0
    except Exception as exc:  # noqa: BLE001 -- any compiler failure falls back to eager
        log(f"warning: torch.compile unavailable ({type(exc).__name__}: {exc}); training eagerly")
        return model, 0.0


def _steps_for_budget(forward, sampler, amp, accum, tcfg, device, t_start, log) -> int:
    """Size the schedule to the time budget from a measurement of a few real micro-steps.

    Gradients from the probe are discarded and the RNG restored, so the run itself is unchanged.
    """
    rng = torch.get_rng_state()
    timings = []
    for i in range(4):
        x, y = sampler.batch(0, 0)
        start = time.perf_counter()
        with amp:
            loss = forward(x.to(device), y.to(device))
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:  # the first call pays for allocation / compilation
            timings.append(time.perf_counter() - start)
    for p in forward.parameters():
        p.grad = None
    torch.set_rng_state(rng)
    step_seconds = sorted(timings)[len(timings) // 2] * accum * 1.08  # + optimizer and bookkeeping
    remaining = tcfg.time_budget - (time.perf_counter() - t_start)
    evals = max(1, int(remaining / step_seconds) // tcfg.eval_every)
    eval_seconds = (
        evals * (tcfg.eval_tokens / (tcfg.batch_size * sampler_seq_len(forward))) * step_seconds / accum / 3
    )
    steps = max(1, int((remaining - eval_seconds) / step_seconds))
    log(f"time budget {tcfg.time_budget:.0f}s: {step_seconds * 1e3:.1f} ms/step measured -> {steps} steps")
    return steps


def sampler_seq_len(model: torch.nn.Module) -> int:
    return runs.unwrap(model).config.seq_len


def _ignore(*args) -> None:
    """A metrics sink for ranks other than 0."""


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        unit="step",
        dynamic_ncols=True,
        leave=True,
        mininterval=0.5,
    )
