"""Device, threads, precision and the hardware's peak FLOP/s.

CPU is the default. PyTorch's default thread count can exceed the physical cores (hyper-threads),
and oversubscribed matmuls on a small CPU run slower, so we use the physical core count.

Model-FLOPs utilisation (MFU) needs the hardware's peak. Rather than a table of chips that is always
out of date, we measure it: a few square matmuls in the training dtype (about 50 ms on a 2-core CPU),
which is what a perfect implementation of our model could at best reach through PyTorch.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import time
from typing import NamedTuple

import torch

from lmforge.errors import UserError


def physical_cores() -> int:
    """Physical CPU cores available to this process (falls back to the logical count)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count() or 1
    cores = set()
    try:
        for cpu in os.sched_getaffinity(0):
            path = f"/sys/devices/system/cpu/cpu{cpu}/topology/core_id"
            package = f"/sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id"
            with open(path) as a, open(package) as b:
                cores.add((a.read().strip(), b.read().strip()))
    except (OSError, AttributeError):
        return available
    return max(1, min(available, len(cores) or available))


# ISA features that decide which kernels are fast on a CPU (bf16 matmuls: AMX >> AVX-512 bf16 >> none)
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


class CpuLook(NamedTuple):
    """Counters at one moment: the machine's busy and total clock ticks and this process's CPU time."""

    busy_ticks: int
    total_ticks: int
    own_cpu_seconds: float
    at: float  # time.monotonic()


def cpu_look(stat: str = "/proc/stat") -> CpuLook | None:
    """The start of a look at other work (`busy_cpus(since=...)`), now; None where Linux's /proc/stat
    cannot be read."""
    try:
        with open(stat) as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    except (OSError, ValueError, IndexError):
        return None
    return CpuLook(total - idle, total, time.process_time(), time.monotonic())


def busy_cpus(seconds: float = 0.25, stat: str = "/proc/stat", since: CpuLook | None = None) -> float | None:
    """How many CPUs other work kept busy over at least `seconds`: the machine's busy share times its
    logical CPUs, this process's own CPU time taken out. The look spans from `since` (a `cpu_look()`
    taken earlier, while this process went on with its own work) or from now, sleeping whatever is
    left of `seconds`; None where /proc/stat cannot be read."""
    start = since or cpu_look(stat)
    if start is None:
        return None
    time.sleep(max(0.0, seconds - (time.monotonic() - start.at)))
    end = cpu_look(stat)
    if end is None or end.total_ticks <= start.total_ticks:
        return None
    own_ticks = (end.own_cpu_seconds - start.own_cpu_seconds) * os.sysconf("SC_CLK_TCK")
    share = (end.busy_ticks - start.busy_ticks - own_ticks) / (end.total_ticks - start.total_ticks)
    return max(0.0, share * (os.cpu_count() or 1))


def _cpuinfo(field: str) -> str:
    """The first `field` line's value in /proc/cpuinfo ("" where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    import platform

    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SPEED_FLAGS this CPU has, in SPEED_FLAGS' order."""
    flags = set(_cpuinfo("flags").split())
    return [f for f in SPEED_FLAGS if f in flags]


def cpu_description() -> str:
    """CPU model, the speed-relevant ISA flags it has, and its physical cores -- for benchmark headers."""
    have = cpu_flags()
    return f"{cpu_model()} (ISA: {' '.join(have) or 'unknown'}; {physical_cores()} physical cores)"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is 'cuda' but no CUDA device is available; use train.device=cpu")
    return torch.device(name)


def setup_threads(threads: int) -> int:
    count = threads or physical_cores()
    torch.set_num_threads(count)
    return count


# glibc's mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_KEEP_FREED_BYTES = 2**31 - 1  # mallopt takes an int: keep up to 2 GiB of freed memory for reuse


def setup_like_training(tcfg) -> bool:
    """The threads and allocator a CPU training run with `tcfg` (TrainConfig) sets up, for a probe that
    times its steps before the run (a step timed under other settings is not the run's step); True
    when freed memory is kept for reuse."""
    setup_threads(tcfg.threads or physical_cores())
    return tcfg.allocator == "reuse" and reuse_freed_memory()


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for the next allocation instead of giving it back.

    By default glibc serves every block over ~128 KB-32 MB with its own mmap() and returns it to the
    kernel when freed, so a training step that allocates the same activations every time takes a page
    fault for each 4 KB page of each of them, every step: 1.78 M faults and 5.6 s of system CPU time in
    a 40-step demo-preset run on the Intel Xeon of BENCHMARKS.md, 0.17 M and 1.1 s with this ("The
    allocator and the exit", bench/bench_allocator.py: 1.16x the training speed). With mmap off and
    the heap's top kept, freed blocks are reused; peak memory is what the run needs at once, plus
    fragmentation (tens of MB). The effect is the OS's, not the CPU's: right on every glibc machine.
    Returns False (and changes nothing) where the C library is not glibc (macOS, musl).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED_BYTES))
    except (OSError, AttributeError):
        return False


def autocast(device: torch.device, dtype: str):
    """bf16 autocast for matmuls (weights, optimizer state and loss stay float32), or nothing."""
    if dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if dtype != "float32":  # "auto" is resolved before a model runs (train/precision.py)
        raise ValueError(f"autocast needs float32 or bfloat16, not {dtype!r}")
    return contextlib.nullcontext()


def measure_peak_flops(device: torch.device, dtype: str, size: int = 1024, repeats: int = 3) -> float:
    """Best observed FLOP/s of a square matmul in the training dtype on this device."""
    torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)  # never touch the global RNG: resume is bit-exact
    a = torch.randn(size, size, device=device, dtype=torch_dtype, generator=gen)
    b = torch.randn(size, size, device=device, dtype=torch_dtype, generator=gen)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best
