"""torch.distributed set-up from torchrun's environment, and the `--nproc` launcher.

`torchrun` starts one process per rank and tells each who it is through environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). This module reads them once and returns a
`DistInfo` that is passed explicitly to whoever needs it -- nothing else reads the environment.

gloo on CPU, NCCL on GPU. Several machines use torchrun's usual rendezvous options
(`--nnodes`, `--node-rank`, `--rdzv-endpoint`), documented in the README; `lmforge train --nproc N`
launches torchrun on this one machine for the user.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from lmforge.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    """The process's place in a torchrun job (a single process when not under torchrun)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    return DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def init(info: DistInfo, device_type: str, timeout_s: float = 300.0) -> None:
    """Join the process group (no-op for a single process)."""
    if not info.enabled or torch_dist.is_initialized():
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    # A bounded timeout: if a peer dies, the others fail instead of hanging forever.
    torch_dist.init_process_group(
        backend=backend,
        rank=info.rank,
        world_size=info.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def shutdown(info: DistInfo) -> None:
    if info.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Average a tensor over ranks (identity for one process)."""
    if info.enabled:
        torch_dist.all_reduce(value, op=torch_dist.ReduceOp.SUM)
        value /= info.world_size
    return value


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if `flag` is true on any (e.g. one rank got SIGTERM: all stop together)."""
    if not info.enabled:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0])
    torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        torch_dist.barrier()


def torchrun_command(nproc: int, module_args: list[str]) -> list[str]:
    """The command that runs `python -m lmforge <module_args>` on `nproc` local processes."""
    if nproc < 1:
        raise UserError(f"--nproc ({nproc}) must be at least 1")
    available = torch.cuda.device_count() or os.cpu_count() or 1
    if nproc > available:
        kind = "GPUs" if torch.cuda.device_count() else "CPU cores"
        raise UserError(
            f"--nproc {nproc} is more than this machine's {available} {kind}; "
            f"pass --nproc {available} or fewer"
        )
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "--max-restarts=0",
        "-m",
        "lmforge",
        *module_args,
    ]


def broadcast_int(value: int, info: DistInfo) -> int:
    """Rank 0's value on every rank (e.g. a horizon planned from rank 0's clock)."""
    if not info.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.int64)
    torch_dist.broadcast(tensor, src=0)
    return int(tensor.item())


def broadcast_object(value, info: DistInfo):
    """Rank 0's small picklable value on every rank (e.g. the kernels rank 0's probe chose). Only
    between this run's own processes, so unpickling trusts nothing from outside."""
    if not info.enabled:
        return value
    box = [value]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]
