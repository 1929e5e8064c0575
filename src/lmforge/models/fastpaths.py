"""Which hand-written kernels beat plain ATen on this CPU: a quick probe, cached per machine.

The hand-written autograd functions in layers.py (tanh-GELU, RMSNorm, ReLU²) and the plain
matmul-softmax attention were each faster than ATen on the CPU they were written on and slower on
another: on a Zen 4 ATen's tanh was slow, on a Xeon with AMX ATen's GELU is twice as fast as ours and
plain attention beats SDPA under bf16 (BENCHMARKS.md, "Fast paths on each CPU"). So no path is
assumed: before training, `probe` times each one the model uses against the plain ATen op, forward
and backward, at the run's own shape, dtype and thread count, and takes ours only when it is clearly
faster (a tie goes to ATen, so a path is never slower than ATen by more than the timing noise).

The verdicts are cached in `fastpaths.json` under lmforge's cache folder (`$LMFORGE_CACHE`, else
`$XDG_CACHE_HOME/lmforge`, else `~/.cache/lmforge`, as for the built-in corpus), one entry per key:
CPU model + its speed-relevant ISA flags + torch version + threads + dtype + op + shape bucket. An
entry for another key is never used; a damaged or foreign-format file is ignored and rewritten
atomically, and a cache that cannot be written costs a probe next time, never the run.
`train.fast_paths=off` or `LMFORGE_FAST_PATHS=off` turns every fast path off (plain ATen).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from lmforge import hardware, io
from lmforge.data.builtin import default_cache_dir
from lmforge.models import layers

logger = logging.getLogger(__name__)

CACHE_NAME = "fastpaths.json"
FORMAT = 2  # bump when an entry's meaning changes: older files are then ignored and rewritten (2: timed
#             at the run's own size up to MAX_ELEMENTS / MAX_TOKENS, where 1 timed a cache-sized slice)
MAX_ENTRIES = 256  # the oldest go first (a home folder shared by many machines stays small)
TIE = 0.05  # ours must be this much faster (fwd + bwd of the best rounds) to be chosen over ATen
# An elementwise op's input timed at most: 64 MB in fp32, past the last-level cache of the CPUs we
# meet, where the cost grows in proportion. A smaller cap misjudged: on a Zen 4 our fp32 GELU won the
# probe on 1M elements and lost to ATen's on the large shape's 6.3M (BENCHMARKS.md, bench/probe_cap.py).
MAX_ELEMENTS = 1 << 24
MAX_TOKENS = 4096  # attention: B * T timed at most (512 chose math where SDPA was as fast: probe_cap.py)
ROUNDS = 15  # timed rounds per contender at most, alternating, after one warm-up each
OP_SECONDS = 0.15  # stop an op's rounds after this long (at least 2 rounds were timed)
MATH_BYTES = 256 << 20  # plain attention keeps (B, n_head, T, T) scores: above this, SDPA without asking
PLAIN = {"gelu": "aten", "rms_norm": "aten", "relu2": "aten", "attention": "sdpa"}
OURS = {"gelu": "ours", "rms_norm": "ours", "relu2": "ours", "attention": "math"}


@dataclass(frozen=True)
class ProbeShape:
    """What one micro-step of the run feeds each op (tokens = batch_size * seq_len)."""

    batch_size: int
    seq_len: int
    n_embd: int
    hidden: int  # MLP hidden channels
    n_head: int
    n_kv_head: int
    dtype: str  # the training dtype: bfloat16 means activations and attention in bf16
    threads: int

    @property
    def act_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.dtype == "bfloat16" else torch.float32


@dataclass
class Verdict:
    """One op's choice, with the timings it rests on (ms, fwd and bwd of the best round; empty if not
    timed)."""

    op: str
    path: str
    source: str  # "probe" | "cache" | "off" | "config" (attn_impl given) | "too big" (attention)
    ours_ms: list[float] = field(default_factory=list)
    plain_ms: list[float] = field(default_factory=list)


@dataclass
class Choice:
    verdicts: list[Verdict]
    cache_file: Path | None
    probe_seconds: float = 0.0
    machine: str = ""  # machine_key() of the choice: a checkpoint's pin holds only where it matches

    def pin(self) -> dict:
        """What a checkpoint keeps so that a resume on this machine runs the same kernels (and so
        continues bit-identically) even if a probe now would choose otherwise."""
        return {"machine": self.machine, "paths": {v.op: v.path for v in self.verdicts}}

    def fast_paths(self) -> layers.FastPaths:
        chosen = {v.op: v.path for v in self.verdicts}
        return layers.FastPaths(
            gelu=chosen.get("gelu") == "ours",
            rms_norm=chosen.get("rms_norm") == "ours",
            relu2=chosen.get("relu2") == "ours",
            attention=chosen.get("attention", "sdpa"),  # consulted only where attn_impl is "auto"
        )

    def line(self) -> str:
        """The training log's line: each choice and where it came from."""
        if not self.verdicts:
            return "fast paths: none to choose for this model (plain ATen)"
        parts = [f"{v.op} {v.path} ({v.source})" for v in self.verdicts]
        probed = any(v.source == "probe" for v in self.verdicts)
        where = f"; probed in {self.probe_seconds:.2f}s" if probed else ""
        cache = f", cache {self.cache_file}" if self.cache_file and probed else ""
        return f"fast paths: {', '.join(parts)}{where}{cache}"

    def record(self) -> dict:
        """For run.json."""
        return {
            "cpu": hardware.cpu_model(),
            "flags": hardware.cpu_flags(),
            "choices": {v.op: {"path": v.path, "source": v.source} for v in self.verdicts},
            "timings_ms": {v.op: {"ours": v.ours_ms, "aten": v.plain_ms} for v in self.verdicts if v.ours_ms},
        }


def cache_file(environ: Mapping[str, str]) -> Path:
    return default_cache_dir(environ) / CACHE_NAME


def shape_of(model_cfg, batch_size: int, dtype: str, threads: int) -> ProbeShape:
    """The ProbeShape of a model config (any family: missing fields get neutral values)."""
    width = getattr(model_cfg, "n_embd", 1)
    hidden = getattr(model_cfg, "hidden_dim", 4 * width)
    heads = getattr(model_cfg, "n_head", 1)
    kv = getattr(model_cfg, "kv_heads", heads)
    return ProbeShape(batch_size, getattr(model_cfg, "seq_len", 1), width, hidden, heads, kv, dtype, threads)


def ops_of(model_cfg) -> dict[str, str]:
    """The choosable ops this model runs: op -> "probe", or the attention impl its config names."""
    ops: dict[str, str] = {}
    if getattr(model_cfg, "family", "") != "gpt":
        return ops
    if model_cfg.mlp in ("gelu", "relu2"):
        ops[model_cfg.mlp] = "probe"
    if model_cfg.style == "modern":
        ops["rms_norm"] = "probe"
    ops["attention"] = "probe" if model_cfg.attn_impl == "auto" else model_cfg.attn_impl
    return ops


def choose(
    model_cfg,
    shape: ProbeShape,
    mode: str = "auto",
    cache: Path | None = None,
    write: bool = True,
    runner: Callable[[str, ProbeShape, str], Callable[[], tuple[float, float]]] | None = None,
    load: float | None = None,
) -> Choice:
    """Each op's path for this model on this machine: cached, else probed (and cached if `write`).

    `mode` "off": plain ATen everywhere, nothing timed. `cache` None: no cache (always probe).
    `runner(op, shape, path)` -> a function that runs one forward + backward and returns their
    milliseconds; `make_runner` (the real op) by default. `load`: runnable processes per CPU now
    (default: the 1-minute load average / CPUs). A verdict probed on a busy machine (load > 1.5: the
    rounds were sliced by other processes) is used only until a probe can run on a quiet one.
    """
    runner = runner or make_runner
    load = machine_load() if load is None else load
    start = time.perf_counter()
    entries = read_cache(cache) if cache is not None and mode != "off" else {}
    verdicts, new = [], {}
    for op, how in ops_of(model_cfg).items():
        if how != "probe":
            verdicts.append(Verdict(op, how, "config"))
        elif mode == "off":
            verdicts.append(Verdict(op, PLAIN[op], "off"))
        elif op == "attention" and _scores_bytes(shape) > MATH_BYTES:
            verdicts.append(Verdict(op, "sdpa", "too big"))
        else:
            key = cache_key(op, shape)
            hit = entries.get(key)
            if isinstance(hit, dict) and hit.get("path") in (PLAIN[op], OURS[op]) and not stale(hit, load):
                verdicts.append(
                    Verdict(op, hit["path"], "cache", hit.get("ours_ms", []), hit.get("aten_ms", []))
                )
                continue
            verdict = probe_op(op, shape, runner)
            verdicts.append(verdict)
            new[key] = {"path": verdict.path, "ours_ms": verdict.ours_ms, "aten_ms": verdict.plain_ms,
                        "when": time.time(), "load": round(load, 2)}  # fmt: skip
    if new and cache is not None and write:
        write_cache(cache, {**entries, **new})
    return Choice(verdicts, cache, time.perf_counter() - start, machine_key(shape))


def machine_load() -> float:
    """The 1-minute load average per CPU (0 where the platform has none)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return 0.0


def stale(entry: dict, load: float) -> bool:
    """A verdict taken on a busy machine, now that it is quiet: worth measuring again. The two
    thresholds lie far apart, so two runs a minute apart do not choose differently (the load
    average moves slowly)."""
    then = entry.get("load", 0.0)
    return isinstance(then, (int, float)) and then > 1.5 and load < 0.5


def probe_op(op: str, shape: ProbeShape, runner) -> Verdict:
    """Time ours and ATen's (alternating rounds, so both see the same load); the faster, ties to ATen."""
    ours, plain = runner(op, shape, OURS[op]), runner(op, shape, PLAIN[op])
    ours(), plain()  # warm-up: first-call allocations and kernel selection
    times: dict[str, list[tuple[float, float]]] = {"ours": [], "plain": []}
    start = time.perf_counter()
    for i in range(ROUNDS):
        times["ours"].append(ours())
        times["plain"].append(plain())
        if i >= 1 and time.perf_counter() - start > OP_SECONDS:
            break
    ours_ms, plain_ms = best(times["ours"]), best(times["plain"])
    faster = sum(ours_ms) < (1 - TIE) * sum(plain_ms)
    return Verdict(op, OURS[op] if faster else PLAIN[op], "probe", ours_ms, plain_ms)


def best(rounds: list[tuple[float, float]]) -> list[float]:
    """[forward ms, backward ms] of the fastest round: other processes on the machine only ever add
    time, so the best round is the steadiest estimate of an op's own cost on a shared machine."""
    fwd, bwd = min(rounds, key=sum)
    return [round(fwd, 3), round(bwd, 3)]


def cache_key(op: str, shape: ProbeShape) -> str:
    """Machine (CPU model, ISA flags), torch, threads, dtype, op and the op's shape bucket."""
    b = _bucket
    tokens = shape.batch_size * shape.seq_len
    if op == "attention":
        gqa = "" if shape.n_kv_head == shape.n_head else f" kv{shape.n_kv_head}"
        size = f"B*H {b(_attn_batch(shape) * shape.n_head)} T {b(shape.seq_len)} hd {_head_dim(shape)}{gqa}"
    else:
        size = f"{b(tokens)}x{b(shape.n_embd if op == 'rms_norm' else shape.hidden)}"
    return f"{machine_key(shape)} | {op} {size}"


def machine_key(shape: ProbeShape) -> str:
    """CPU model, its speed-relevant ISA flags, torch version, threads and dtype."""
    machine = f"{hardware.cpu_model()} [{' '.join(hardware.cpu_flags())}]"
    return f"{machine} | torch {torch.__version__} | {shape.threads} threads | {shape.dtype}"


def read_cache(path: Path) -> dict:
    """The cache's entries; {} for a missing, damaged or other-format file (it is rewritten later)."""
    return io.read_cache_entries(path, FORMAT, "the fast-path cache")


def write_cache(path: Path, entries: dict) -> None:
    """Atomically; a failed write is a warning (the next run probes again), never an error."""
    newest = sorted(entries.items(), key=lambda kv: _when(kv[1]))[-MAX_ENTRIES:]
    io.write_cache_entries(path, FORMAT, dict(newest), "the fast-path choice")


def setup(
    model_cfg,
    train_cfg,
    device: torch.device,
    write: bool = True,
    pinned: dict | None = None,
    environ: Mapping[str, str] | None = None,
) -> Choice:
    """Choose for a training run and make the layers use the choice. `train_cfg`: its batch_size,
    dtype and fast_paths ("auto" | "off"); `write`: update the cache (one process of several does).
    `pinned`: a resumed checkpoint's Choice.pin(), kept where it was made on this machine.
    `environ` (default os.environ) gives the cache folder and LMFORGE_FAST_PATHS=off. Off the CPU
    nothing is probed (plain ATen)."""
    environ = os.environ if environ is None else environ
    mode = train_cfg.fast_paths
    if environ.get("LMFORGE_FAST_PATHS", "").lower() in ("off", "0", "false"):
        mode = "off"
    shape = shape_of(model_cfg, train_cfg.batch_size, train_cfg.dtype, torch.get_num_threads())
    if device.type != "cpu":
        mode = "off"
    choice = _from_pin(model_cfg, shape, pinned) if mode != "off" else None
    choice = choice or choose(model_cfg, shape, mode, cache_file(environ), write)
    layers.use_fast_paths(choice.fast_paths())
    return choice


def _from_pin(model_cfg, shape: ProbeShape, pinned: dict | None) -> Choice | None:
    """The pinned choice, if it was made on this machine and names a valid path for every op."""
    if not isinstance(pinned, dict) or pinned.get("machine") != machine_key(shape):
        return None
    paths = pinned.get("paths") if isinstance(pinned.get("paths"), dict) else {}
    verdicts = []
    for op, how in ops_of(model_cfg).items():
        path = paths.get(op)
        if how == "probe" and path not in (PLAIN[op], OURS[op]):
            return None
        verdicts.append(
            Verdict(op, path if how == "probe" else how, "checkpoint" if how == "probe" else "config")
        )
    return Choice(verdicts, None, machine=machine_key(shape))


# --- timing ---------------------------------------------------------------------------------------


def make_runner(op: str, shape: ProbeShape, path: str, cap: bool = True) -> Callable[[], tuple[float, float]]:
    """A function running `op` by `path` forward and backward once at `shape`: (fwd ms, bwd ms).
    `cap`: at most MAX_ELEMENTS / MAX_TOKENS of it (the probe); False: the whole micro-step (bench)."""
    fn, inputs, grad = _case(op, shape, path, cap)

    def run() -> tuple[float, float]:
        leaves = [t.detach().requires_grad_() for t in inputs]
        t0 = time.perf_counter()
        y = fn(*leaves)
        t1 = time.perf_counter()
        y.backward(grad)
        t2 = time.perf_counter()
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3

    return run


def _case(op: str, shape: ProbeShape, path: str, cap: bool = True):
    """(function, input tensors, output gradient) for one op at the run's shape (`cap`: make_runner)."""
    gen = torch.Generator().manual_seed(0)  # never the global RNG: a resume stays bit-exact
    dt = shape.act_dtype
    tokens = shape.batch_size * shape.seq_len
    elements = MAX_ELEMENTS if cap else tokens * max(shape.hidden, shape.n_embd)
    if op in ("gelu", "relu2"):
        rows = max(1, min(tokens, elements // shape.hidden))
        x = torch.randn(rows, shape.hidden, generator=gen).to(dt)
        if op == "gelu":
            fn = layers._GELUTanhFn.apply if path == "ours" else lambda t: F.gelu(t, approximate="tanh")
        else:
            fn = layers._ReLU2Fn.apply if path == "ours" else lambda t: F.relu(t).square()
        return fn, [x], torch.randn(x.shape, generator=gen).to(dt)
    if op == "rms_norm":  # the residual stream is fp32 under autocast too
        rows = max(1, min(tokens, elements // shape.n_embd))
        x = torch.randn(rows, shape.n_embd, generator=gen)
        w = torch.rand(shape.n_embd, generator=gen) + 0.5  # a trained scale, not the identity
        if path == "ours":
            fn = lambda t, weight: layers._RMSNormFn.apply(t, weight, 1e-6)  # noqa: E731
        else:
            fn = lambda t, weight: F.rms_norm(t, (t.size(-1),), weight, 1e-6)  # noqa: E731
        return fn, [x, w], torch.randn(x.shape, generator=gen)
    B, T, hd = _attn_batch(shape) if cap else shape.batch_size, shape.seq_len, _head_dim(shape)
    q = torch.randn(B, shape.n_head, T, hd, generator=gen).to(dt)
    k = torch.randn(B, shape.n_kv_head, T, hd, generator=gen).to(dt)
    v = torch.randn(B, shape.n_kv_head, T, hd, generator=gen).to(dt)
    blocked = torch.ones(T, T, dtype=torch.bool).triu(1)

    def fn(q, k, v):
        return layers.attend(q, k, v, path, blocked, 0, 0.0)

    return fn, [q, k, v], torch.randn(q.shape, generator=gen).to(dt)


def _attn_batch(shape: ProbeShape) -> int:
    return max(1, min(shape.batch_size, MAX_TOKENS // shape.seq_len))


def _head_dim(shape: ProbeShape) -> int:
    return shape.n_embd // shape.n_head


def _scores_bytes(shape: ProbeShape) -> int:
    return 4 * shape.batch_size * shape.n_head * shape.seq_len**2


def _bucket(n: int) -> int:
    """n rounded to the nearest power of two (timings scale smoothly in between)."""
    return 1 << max(0, round(math.log2(max(n, 1))))


def _when(entry) -> float:
    return (
        entry.get("when", 0.0)
        if isinstance(entry, dict) and isinstance(entry.get("when"), (int, float))
        else 0.0
    )
