"""FSDP2: parameters, gradients and optimizer state sharded across ranks (`train.parallel=fsdp`).

For models that do not fit one device, `torch.distributed.fsdp.fully_shard` splits every Transformer
block (and then the rest of the model) across the ranks; each rank holds 1/N of each tensor and the
pieces are gathered just in time for each block's forward and backward.

Checkpoints stay in the one format every run uses: the shards are gathered into full tensors
(`torch.distributed.checkpoint.state_dict` with full_state_dict=True) and rank 0 writes them, so a
checkpoint made under FSDP on N processes resumes under DDP, FSDP or a single process alike. The
optimizer state is in the one flat, by-parameter-name layout of lmforge/optim_state.py.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.errors import UserError


def shard_model(model: nn.Module) -> nn.Module:
    """fully_shard each block, then the root (embeddings, final norm, head)."""
    from torch.distributed.fsdp import fully_shard

    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise UserError("train.parallel=fsdp needs a Transformer (model.family=gpt); use ddp for the GRU")
    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def gather_state(
    model: nn.Module, optimizers: list[torch.optim.Optimizer], sharded: bool
) -> tuple[dict | None, dict]:
    """(the full model state dict under FSDP, else None; the flat optimizer state) on rank 0 for
    runs.save_checkpoint -- collective: every rank must call it."""
    from lmforge import optim_state

    model_state = None
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        model_state = get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
    return model_state, optim_state.gather(model, optimizers)


def full_norm(norm: torch.Tensor) -> float:
    """clip_grad_norm_ over sharded (DTensor) gradients returns a DTensor: its global value."""
    full = getattr(norm, "full_tensor", None)
    return float(full() if full else norm)
