"""The parts one training step needs (`Engine`), how they are built, and the step itself.

`build_engine` makes the model (fresh, from `init_from`, or from the checkpoint being resumed), shards
or wraps it for several processes, builds the optimizers and restores their state. `train_step` is
one optimizer step's forward and backward passes: micro-steps accumulating gradients to
`train.batch_tokens`, then the global gradient norm (clipped); the update itself is the loop's call,
after the guard has judged the step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmforge import dist, hardware, runs
from lmforge.config import RunConfig
from lmforge.dist import DistInfo
from lmforge.errors import UserError
from lmforge.models.registry import MODELS
from lmforge.train import sharding
from lmforge.train.data import Sampler, TrainData
from lmforge.train.optim import build_optimizers

logger = logging.getLogger(__name__)


@dataclass
class Engine:
    model: torch.nn.Module  # the plain module (weights, checkpoints)
    forward: torch.nn.Module  # what a training micro-step calls (compiled and/or DDP-wrapped)
    eval_model: torch.nn.Module  # what evaluation calls (never through DDP's gradient hooks)
    optimizers: list
    sampler: Sampler
    amp: Any  # the autocast context (or a null one)
    device: torch.device
    dinfo: DistInfo
    sharded: bool  # FSDP
    accum: int  # micro-steps per optimizer step
    tokens_per_step: int  # global: ranks x micro-steps x batch_size x seq_len
    max_grad_norm: float


@dataclass
class StepOutcome:
    loss: float  # mean over micro-steps and ranks
    grad_norm: float  # before clipping
    batch_crc: int  # a fingerprint of the step's batches (metrics.jsonl): resumes replay none


def micro_steps(batch_tokens: int, tokens_per_micro: int) -> int:
    """Micro-steps per optimizer step: enough to reach train.batch_tokens (0: one)."""
    return max(1, math.ceil(batch_tokens / tokens_per_micro)) if batch_tokens else 1


def build_engine(
    config: RunConfig,
    data: TrainData,
    device: torch.device,
    dinfo: DistInfo,
    checkpoint: runs.Checkpoint | None,
    init_from: Path | None,
) -> Engine:
    mcfg, tcfg = config.model, config.train
    torch.manual_seed(tcfg.seed)
    model = MODELS[mcfg.family][1](mcfg)
    model.init_weights()
    if init_from is not None and checkpoint is None:
        runs.load_model_weights(model, Path(init_from))
    if checkpoint is not None:  # weights before sharding: FSDP shards what the model holds
        runs.load_model_weights(model, checkpoint.path)
    model.to(device)
    sharded = dinfo.enabled and tcfg.parallel == "fsdp"
    if sharded:
        if config.optim.name == "muon":
            raise UserError("optim.name=muon is not supported with train.parallel=fsdp; use adamw or ddp")
        sharding.shard_model(model)
    optimizers = build_optimizers(config.optim, model, device.type, sharded=sharded)
    if checkpoint is not None:
        runs.load_training_state(checkpoint.path, model, optimizers)

    forward = _compile(model, device, dinfo.is_main) if tcfg.compile else model
    eval_model = forward
    if dinfo.enabled and not sharded:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(
            forward, device_ids=[device.index] if device.type == "cuda" else None
        )
    tokens_per_micro = tcfg.batch_size * mcfg.seq_len * dinfo.world_size
    accum = micro_steps(tcfg.batch_tokens, tokens_per_micro)
    sampler = data.make_sampler(tcfg.batch_size, mcfg.seq_len, tcfg.seed, dinfo.rank, dinfo.world_size)
    clip = config.optim.grad_clip
    return Engine(
        model=model,
        forward=forward,
        eval_model=eval_model,
        optimizers=optimizers,
        sampler=sampler,
        amp=hardware.autocast(device, tcfg.dtype),
        device=device,
        dinfo=dinfo,
        sharded=sharded,
        accum=accum,
        tokens_per_step=tokens_per_micro * accum,
        max_grad_norm=clip if clip > 0 else math.inf,
    )


def train_step(engine: Engine, step: int) -> StepOutcome:
    """Forward and backward over the step's micro-steps; gradients accumulated, not yet applied."""
    e = engine
    batch_crc = 0
    loss_sum = torch.zeros((), device=e.device)
    for micro_step in range(e.accum):
        x, y = e.sampler.batch(step, micro_step)
        batch_crc = zlib.crc32(x.cpu().numpy().tobytes(), batch_crc)
        x, y = x.to(e.device, non_blocking=True), y.to(e.device, non_blocking=True)
        # DDP averages gradients across ranks once per step, on the last micro-step
        sync = not e.dinfo.enabled or e.sharded or micro_step == e.accum - 1
        with contextlib.nullcontext() if sync else e.forward.no_sync():
            with e.amp:
                loss = e.forward(x, y)
            (loss / e.accum).backward()
        loss_sum += loss.detach()
    loss_value = float(dist.all_reduce_mean(loss_sum, e.dinfo)) / e.accum  # every rank judges alike
    norm = torch.nn.utils.clip_grad_norm_(e.model.parameters(), e.max_grad_norm)
    return StepOutcome(loss_value, sharding.full_norm(norm), batch_crc)


def apply_update(engine: Engine, skip: bool) -> None:
    """The optimizers' step (unless the guard said skip), then the gradients cleared either way."""
    for opt in engine.optimizers:
        if not skip:
            opt.step()
    for opt in engine.optimizers:
        opt.zero_grad(set_to_none=True)


def _compile(model: torch.nn.Module, device: torch.device, main: bool) -> torch.nn.Module:
    """``torch.compile`` where it can work, else the model itself with a one-line warning.

    Inductor turns CPU graphs into C++ and needs a working compiler for it (its config, from $CXX,
    else g++): without one the first step would fail after seconds of tracing, with a compiler
    traceback, so that case is told at once. Any other failure shows on a compiled call;
    `CompiledOrEager` then trains eagerly."""
    missing = _missing_cpp_compiler() if device.type == "cpu" else None
    if missing:
        if main:
            logger.warning(
                f"warning: train.compile needs a working C++ compiler ({missing}; set $CXX to another) "
                "and found none; training eagerly (install one, e.g. `apt install g++`, or leave "
                "train.compile off)"
            )
        return model
    try:
        return CompiledOrEager(model, main)
    except Exception as exc:  # noqa: BLE001 -- any compiler failure falls back to eager
        if main:
            logger.warning(f"warning: torch.compile unavailable ({_first_line(exc)}); training eagerly")
        return model


def _missing_cpp_compiler() -> str | None:
    """The C++ compiler(s) inductor would look for, if none of them runs; None if one does (or if
    this torch's inductor cannot be asked, and the first compiled call must tell)."""
    try:
        from torch._inductor import config as inductor_config
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:
        return None
    try:
        get_cpp_compiler()  # runs `CXX --version` as inductor does before building anything
    except Exception:  # noqa: BLE001 -- InvalidCxxCompiler, or anything else: no compiler to use
        cxx = inductor_config.cpp.cxx
        return ", ".join(str(c) for c in (cxx if isinstance(cxx, (list, tuple)) else (cxx,)) if c) or "g++"
    return None


class CompiledOrEager(torch.nn.Module):
    """``torch.compile(model)`` that falls back to ``model`` for good if a compiled call fails.

    Compilation happens on a call -- the first training step, and again the first evaluation (a
    no-grad forward is another graph) -- so that is where a broken compiler or an op inductor cannot
    lower shows up. The call then runs eagerly, as does every later one: nothing was computed by the
    failed call, so the step is the one eager training would take. Failures of the backward graph,
    which inductor compiles on the first backward, are not caught here."""

    def __init__(self, model: torch.nn.Module, main: bool) -> None:
        super().__init__()
        self.module = model  # the plain model: `.train()`/`.eval()` reach it, `runs.unwrap` finds it
        self.__dict__["compiled"] = torch.compile(model, dynamic=False)  # not a second submodule
        self.main, self.failed = main, False

    def forward(self, *args, **kwargs):
        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 -- the eager call below raises a real error again
                self.failed = True
                if self.main:
                    logger.warning(f"warning: torch.compile failed ({_first_line(exc)}); training eagerly")
        return self.module(*args, **kwargs)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text[:200]}"


def now() -> float:
    return time.perf_counter()
