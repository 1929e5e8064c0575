"""`train.dtype=auto` (the default): float32, or bfloat16 autocast where it trains this model faster here.

Whether bf16 pays depends on the CPU and on the model: on a Xeon with AMX bf16 matmuls run ~6x
float32 and a 4 x 192 GPT trains 1.54x faster under bf16 autocast, a 1 x 64 one 1.09x and a 2 x 32
one 0.93x: in a small model the casts eat the gain (BENCHMARKS.md, "Precision",
bench/bench_precision.py); on a CPU without bf16 units autocast emulates it and is slower. So
nothing is assumed. Before a fresh run, `resolve`:

- keeps a dtype the config names (float32 | bfloat16), and a resumed run's own;
- on CUDA takes bfloat16 where the GPU supports it;
- takes float32 without timing anything for models narrower than `PROBE_MIN_WIDTH`, for other model
  families, and on CPUs without bf16 instructions (avx512_bf16 / amx_bf16);
- otherwise times the run's own training step (this model, batch, threads and the fast paths each
  dtype would get) in both, alternating, and takes bfloat16 only when it is at least `GAIN` faster:
  bf16 rounds activations, so a marginal speed-up is not worth it.

A probe's verdict is cached with the fast paths' (models/fastpaths.py: the same file, machine key and
load rule), so it runs once per machine and shape. The chosen dtype goes into the run's config.json
(a resume continues in it), the log and run.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmforge import dist, hardware, logs, runs
from lmforge.config import RunConfig
from lmforge.dist import DistInfo
from lmforge.models import fastpaths, layers

logger = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16")
PROBE_MIN_WIDTH = 64  # narrower GPTs train in float32 unprobed: at width 32 bf16 was 0.93x float32
GAIN = 1.10  # bfloat16 must train at least this much faster than float32 to be chosen
SLICE_SECONDS = 0.3  # each dtype's timed slice per round (at least one step)
ROUNDS = 2  # alternating rounds; each dtype's best counts (other processes only ever slow a round)


@dataclass
class Precision:
    dtype: str
    source: str  # config | resume | device | narrow | family | no bf16 | probe | cache
    tok_per_s: dict[str, float] = field(default_factory=dict)  # the timings it rests on, if any
    seconds: float = 0.0  # the probe's own time

    def line(self) -> str:
        """The training log's line."""
        why = {
            "config": "train.dtype",
            "resume": "the run's own, on resume",
            "device": f"auto: {'a' if self.dtype == 'bfloat16' else 'no'} bf16-capable GPU",
            "narrow": f"auto: models narrower than {PROBE_MIN_WIDTH} are not probed",
            "family": "auto: only GPT models are probed",
            "no bf16": "auto: this CPU has no bf16 instructions",
        }.get(self.source)
        if why is None:  # probe or cache
            speeds = ", ".join(f"{d} {self.tok_per_s.get(d, 0):,.0f}" for d in DTYPES)
            how = f"probed in {self.seconds:.1f}s" if self.source == "probe" else "cached probe"
            why = f"auto: tokens/s {speeds} ({how}); bfloat16 needs {GAIN:.2f}x"
        hint = "" if self.source in ("config", "resume") else "; train.dtype=float32|bfloat16 fixes it"
        return f"precision: {self.dtype} ({why}{hint})"

    def record(self) -> dict:
        """For run.json."""
        return {"dtype": self.dtype, "source": self.source, "tok_per_s": self.tok_per_s}


def resolve(
    config: RunConfig, data, device: torch.device, dinfo: DistInfo, run_dir: Path, resume: bool
) -> tuple[RunConfig, Precision]:
    """`config` with a concrete train.dtype, and how it was chosen. Under torchrun rank 0 chooses
    (its probe runs while the other ranks wait) and every rank trains in its choice."""
    wanted = config.train.dtype
    if wanted != "auto":
        return config, Precision(wanted, "config")
    saved = _saved_dtype(run_dir) if resume else None
    if saved is not None:
        return _with_dtype(config, saved), Precision(saved, "resume")
    choice = choose(config, data, device, write=dinfo.is_main) if dinfo.is_main else None
    if dinfo.enabled:
        choice = dist.broadcast_object(choice, dinfo)
    return _with_dtype(config, choice.dtype), choice


def choose(
    config: RunConfig, data, device: torch.device, write: bool = True, cache: Path | None = None
) -> Precision:
    """The dtype for a fresh run of `config` on this machine (module docstring)."""
    ruled = without_timing(config, device)
    if ruled is not None:
        return ruled
    cache = fastpaths.cache_file(os.environ) if cache is None else cache
    key = cache_key(config)
    entries = fastpaths.read_cache(cache)
    hit = entries.get(key)
    load = fastpaths.machine_load()
    if isinstance(hit, dict) and hit.get("dtype") in DTYPES and not fastpaths.stale(hit, load):
        return Precision(hit["dtype"], "cache", dict(hit.get("tok_per_s") or {}))
    start = time.perf_counter()
    speeds = probe(config, data, device)
    dtype = faster(speeds)
    measured = {d: round(s, 1) for d, s in speeds.items()}
    choice = Precision(dtype, "probe", measured, time.perf_counter() - start)
    if write:
        entry = {"dtype": dtype, "tok_per_s": choice.tok_per_s, "when": time.time(), "load": round(load, 2)}
        fastpaths.write_cache(cache, {**entries, key: entry})
    return choice


def faster(speeds: dict[str, float]) -> str:
    """float32, unless bfloat16 (when timed) trained at least GAIN times as fast."""
    if len(speeds) == 1:
        return next(iter(speeds))
    return "bfloat16" if speeds["bfloat16"] >= GAIN * speeds["float32"] else "float32"


def without_timing(config: RunConfig, device: torch.device) -> Precision | None:
    """The choice where nothing needs timing (GPU, other families, narrow models, no bf16 units)."""
    if device.type == "cuda":
        return Precision("bfloat16" if torch.cuda.is_bf16_supported() else "float32", "device")
    model = config.model
    if getattr(model, "family", "") != "gpt":
        return Precision("float32", "family")
    if model.n_embd < PROBE_MIN_WIDTH:
        return Precision("float32", "narrow")
    if not {"avx512_bf16", "amx_bf16"} & set(hardware.cpu_flags()):
        return Precision("float32", "no bf16")
    return None


def probe(config: RunConfig, data, device: torch.device) -> dict[str, float]:
    """Tokens/s of the run's training step in each dtype (`time_steps` over both)."""
    return time_steps(config, data, device, DTYPES, SLICE_SECONDS, ROUNDS)[0]


def time_steps(
    config: RunConfig,
    data,
    device: torch.device,
    dtypes,
    slice_seconds: float,
    rounds: int,
    slow_warm_up_stands: bool = False,
) -> tuple[dict[str, float], int]:
    """Tokens/s of `config`'s training step (forward, backward, clip, optimizer) in each of `dtypes`,
    and the model's non-embedding parameter count. One model, with the threads, allocator and fast
    paths its run would use; its autocast and fast paths are switched between alternating rounds of
    `slice_seconds` each (at least one step), and each dtype's best round counts: other processes only
    ever slow a round. Warm-up steps are not timed; with `slow_warm_up_stands`, one that takes over
    three slices (a busy machine, a large model) stands for its dtype instead of more steps. The
    global RNG is left as it was
    (a run's own initialisation comes after). Used by this module's probe and by `train --auto`."""
    from lmforge.train.engine import apply_update, build_engine, train_step

    tcfg = config.train
    if device.type == "cpu":  # without freed memory kept, a step with large logits page-faults
        hardware.setup_like_training(tcfg)
    paths = {d: fastpaths.setup(config.model, dataclasses.replace(tcfg, dtype=d), device) for d in dtypes}
    amps = {d: hardware.autocast(device, d) for d in dtypes}
    rng = torch.get_rng_state()
    with logs.silenced("lmforge.train"):  # the probe's engine is not the run's: no messages
        engine = build_engine(_with_dtype(config, "float32"), data, device, DistInfo(), None, None)
    n_params = engine.model.num_params(exclude_embeddings=True)
    best = dict.fromkeys(dtypes, 0.0)
    done: set[str] = set()  # dtypes measured by their warm-up step alone (a busy machine)
    step = 0

    def one_step() -> None:
        nonlocal step
        train_step(engine, step)
        apply_update(engine, skip=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        step += 1

    try:
        for round_ in range(rounds):
            for dtype in dtypes:
                if dtype in done:
                    continue
                layers.use_fast_paths(paths[dtype].fast_paths())
                engine.amp = amps[dtype]
                if round_ == 0:  # warm-up: allocations and first-call kernel selection
                    start = time.perf_counter()
                    one_step()
                    warm_up = time.perf_counter() - start
                    if slow_warm_up_stands and warm_up > 3 * slice_seconds:
                        best[dtype] = engine.tokens_per_step / warm_up
                        done.add(dtype)
                        continue
                steps, start = 0, time.perf_counter()
                while True:
                    one_step()
                    steps += 1
                    elapsed = time.perf_counter() - start
                    if elapsed >= slice_seconds:
                        break
                best[dtype] = max(best[dtype], steps * engine.tokens_per_step / elapsed)
    finally:
        torch.set_rng_state(rng)
        layers.use_fast_paths(layers.FastPaths())  # the run sets its own
    return best, n_params


def cache_key(config: RunConfig) -> str:
    """Machine (CPU model, ISA flags, torch), threads, the whole model config and the batch."""
    threads = config.train.threads or hardware.physical_cores()
    machine = f"{hardware.cpu_model()} [{' '.join(hardware.cpu_flags())}] | torch {torch.__version__}"
    model = " ".join(f"{k}={v}" for k, v in sorted(dataclasses.asdict(config.model).items()))
    return f"{machine} | {threads} threads | precision | {model} | batch {config.train.batch_size}"


def _saved_dtype(run_dir: Path) -> str | None:
    """The dtype a run folder was started with (None if it holds no readable config)."""
    with contextlib.suppress(Exception):
        saved = runs.read_run_config(run_dir).train.dtype
        return saved if saved in DTYPES else None
    return None


def _with_dtype(config: RunConfig, dtype: str) -> RunConfig:
    return dataclasses.replace(config, train=dataclasses.replace(config.train, dtype=dtype))
