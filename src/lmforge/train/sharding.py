"""FSDP2: parameters, gradients and optimizer state sharded across ranks (`train.parallel=fsdp`).

For models that do not fit one device, `torch.distributed.fsdp.fully_shard` splits every Transformer
block (and then the rest of the model) across the ranks; each rank holds 1/N of each tensor and the
pieces are gathered just in time for each block's forward and backward.

Checkpoints stay in the one format every run uses: the shards are gathered into full tensors
(`torch.distributed.checkpoint.state_dict` with full_state_dict=True) and rank 0 writes them, so a
checkpoint made under FSDP on N processes resumes under DDP, FSDP or a single process alike. The
optimizer state dict is converted between torch's two layouts -- keyed by parameter name (what the
distributed helpers speak) and keyed by position (what `Optimizer.state_dict()` and our files use).
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


def _names_by_position(model: nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in opt.param_groups for p in group["params"]]


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def gather_state(model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> tuple[dict, list[dict]]:
    """Full model and optimizer state dicts on rank 0 (collective: every rank must call it)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    model_state = get_model_state_dict(model, options=_options())
    optim_states = []
    for opt in optimizers:
        by_name = get_optimizer_state_dict(model, opt, options=_options())
        if "param_groups" not in by_name:  # with cpu_offload only rank 0 receives the full state
            optim_states.append({})
            continue
        position = {name: i for i, name in enumerate(_names_by_position(model, opt))}
        groups = [{**g, "params": [position[n] for n in g["params"]]} for g in by_name["param_groups"]]
        state = {position[name]: entries for name, entries in by_name["state"].items()}
        optim_states.append({"state": state, "param_groups": groups})
    return model_state, optim_states


def load_optimizer(model: nn.Module):
    """A `load(index, optimizer, state_dict)` for runs.load_training_state under FSDP."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    def load(index: int, opt: torch.optim.Optimizer, state_dict: dict) -> None:
        names = _names_by_position(model, opt)
        groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state_dict["param_groups"]]
        state = {names[i]: entries for i, entries in state_dict["state"].items()}
        set_optimizer_state_dict(model, opt, {"state": state, "param_groups": groups}, options=_options())

    return load


def full_norm(norm: torch.Tensor) -> float:
    """clip_grad_norm_ over sharded (DTensor) gradients returns a DTensor: its global value."""
    full = getattr(norm, "full_tensor", None)
    return float(full() if full else norm)
