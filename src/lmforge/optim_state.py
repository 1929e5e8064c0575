"""Optimizer state in one layout for every topology: flat, keyed by parameter name.

The layout is the one `torch.distributed.checkpoint.state_dict.get_optimizer_state_dict` produces with
`StateDictOptions(full_state_dict=True, flatten_optimizer_state_dict=True)`:

    state.<parameter name>.<entry>          -> a tensor (exp_avg, momentum_buffer, ...) or a number
    param_groups.<parameter name>.<option>  -> lr, betas, weight_decay, ... of the parameter's group

All of a run's optimizers (AdamW, or AdamW and Muon) share one dict: each parameter belongs to exactly
one of them. Keyed by name, not by position, the state does not depend on how the optimizers order
their parameters, so one file resumes under one process, DDP or FSDP alike.

Why by hand for one process: importing `torch.distributed.checkpoint` costs seconds of start-up, and
a single process needs none of what it does (gathering shards). tests/train/test_optim_state.py holds
the hand-written layout equal, key for key and tensor for tensor, to torch's for AdamW and Muon. With
more than one process (DDP, FSDP) torch's functions do the work, since only they know about shards:
`get_optimizer_state_dict` writes this layout, and `set_optimizer_state_dict` reads it back in its
nested by-name form (its reader of the flattened form fails on a full state dict).

Checkpoints written before this layout (state keyed `<optimizer>.<position>.<entry>`) are converted
on read (`from_position_layout`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

STATE, GROUPS = "state", "param_groups"


def distributed() -> bool:
    """True when this process is one of several (torchrun: DDP or FSDP)."""
    import torch.distributed as torch_dist

    return torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # cpu_offload: rank 0 alone receives the full state (the one that writes it), in host memory
    return StateDictOptions(full_state_dict=True, cpu_offload=True, flatten_optimizer_state_dict=True)


def _names(model: nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    """The name of each of `opt`'s parameters, in the order its state_dict() numbers them."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in opt.param_groups for p in group["params"]]


def gather(model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> dict[str, Any]:
    """The flat state of `optimizers` (collective under FSDP: every rank calls it; rank 0 gets it)."""
    if distributed():
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizers, options=_options())
    flat: dict[str, Any] = {}
    for opt in optimizers:
        names = _names(model, opt)
        saved = opt.state_dict()
        for position, entries in saved[STATE].items():
            for entry, value in entries.items():
                flat[f"{STATE}.{names[position]}.{entry}"] = value
        _flatten_groups(flat, saved[GROUPS], names)
    return flat


def restore(model: nn.Module, optimizers: list[torch.optim.Optimizer], flat: dict[str, Any]) -> None:
    """Load a flat state into `optimizers` (every rank calls it with the whole state)."""
    by_name: dict[str, dict[str, dict[str, Any]]] = {STATE: {}, GROUPS: {}}
    for key, value in flat.items():
        section, _, rest = key.partition(".")
        name, _, entry = rest.rpartition(".")  # entry and option names hold no dot; parameter names do
        by_name[section].setdefault(name, {})[entry] = value
    for opt in optimizers:
        names = _names(model, opt)
        groups, position = [], 0
        for group in opt.param_groups:
            members = names[position : position + len(group["params"])]
            options = by_name[GROUPS].get(members[0], {}) if members else {}
            groups.append({**options, "params": members})
            position += len(members)
        if distributed():
            # torch's nested by-name form: its loader of the flattened form mixes the two layouts up
            # when the state is full (torch 2.13), so the flattening is undone here.
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            nested = {STATE: {n: by_name[STATE][n] for n in names if n in by_name[STATE]}, GROUPS: groups}
            full = StateDictOptions(full_state_dict=True, cpu_offload=True)
            set_optimizer_state_dict(model, opt, nested, options=full)
            continue
        index = {name: i for i, name in enumerate(names)}
        state = {index[n]: by_name[STATE][n] for n in names if n in by_name[STATE]}
        positions = [{**g, "params": [index[n] for n in g["params"]]} for g in groups]
        opt.load_state_dict({STATE: state, GROUPS: positions})


def from_position_layout(
    model: nn.Module, optimizers: list[torch.optim.Optimizer], tensors: dict[str, torch.Tensor], rest: dict
) -> dict[str, Any]:
    """The flat state held by a checkpoint of the earlier layout: tensors keyed
    `<optimizer>.<position>.<entry>`, and per optimizer its param_groups and non-tensor entries."""
    flat: dict[str, Any] = {}
    for index, (opt, saved) in enumerate(zip(optimizers, rest["optimizers"], strict=True)):
        names = _names(model, opt)
        for key, value in tensors.items():
            opt_index, position, entry = key.split(".", 2)
            if int(opt_index) == index:
                flat[f"{STATE}.{names[int(position)]}.{entry}"] = value
        for position, entries in saved["scalars"].items():
            for entry, value in entries.items():
                flat[f"{STATE}.{names[int(position)]}.{entry}"] = value
        _flatten_groups(flat, saved[GROUPS], names)
    return flat


def _flatten_groups(flat: dict[str, Any], groups: list[dict], names: list[str]) -> None:
    """Each param group's options under every member's name: `param_groups.<name>.<option>`."""
    for group in groups:
        options = {k: v for k, v in group.items() if k != "params"}
        for position in group["params"]:
            for option, value in options.items():
                flat[f"{GROUPS}.{names[int(position)]}.{option}"] = value
