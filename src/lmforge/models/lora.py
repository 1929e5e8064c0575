"""LoRA: low-rank adapters on a frozen model's linear layers, and the merge that folds them back in.

Hu et al. 2021 ("LoRA: Low-Rank Adaptation of Large Language Models"): a frozen weight W is used as
W + (alpha / r) * B A, with A (r, in) and B (out, r) the only trained tensors. B starts at zero, so
the adapted model starts *exactly* as the pretrained one; A starts like a Linear layer (Kaiming
uniform), as in Microsoft's reference code and PEFT. Training touches r * (in + out) numbers per layer
instead of in * out.

`add_lora` wraps every matrix layer of a module in place -- our `Linear` (an `nn.Linear`) and Hugging
Face GPT-2's `Conv1D` (the same product with the weight stored (in, out)) -- except the names given
(the output head: adapting a vocabulary-sized matrix is what LoRA avoids). `merge_lora` writes
W + (alpha / r) B A into each base weight and puts the plain layer back, so a merged model has the
pretrained model's structure and tensor names, and costs nothing extra at inference.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"  # transformers.pytorch_utils.Conv1D: weight (in, out)


def _shape(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a Linear or Conv1D."""
    w = module.weight
    return (w.shape[0], w.shape[1]) if _is_conv1d(module) else (w.shape[1], w.shape[0])


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * x A^T B^T``, with ``base`` frozen."""

    def __init__(self, base: nn.Module, rank: int, alpha: float) -> None:
        super().__init__()
        fan_in, fan_out = _shape(base)
        self.base = base
        self.rank, self.scale = rank, alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, fan_in))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(fan_out, rank))  # (out, r)
        self.reset_lora()
        for p in base.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def reset_lora(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scale  # (..., out)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """The base layer with the adapter folded into its weight."""
        delta = (self.lora_B @ self.lora_A) * self.scale  # (out, in)
        weight = self.base.weight
        weight.add_((delta.t() if _is_conv1d(self.base) else delta).to(weight.dtype))
        return self.base


def lora_targets(module: nn.Module, exclude: tuple[str, ...] = ("lm_head",)) -> list[str]:
    """Names of the matrix layers `add_lora` adapts: Linear / Conv1D, none named in `exclude`."""
    names = []
    for name, child in module.named_modules():
        if isinstance(child, LoRALinear) or any(part in exclude for part in name.split(".")):
            continue
        if isinstance(child, nn.Linear) or _is_conv1d(child):
            names.append(name)
    return names


def _set(module: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, leaf, new)


def add_lora(
    module: nn.Module, rank: int, alpha: float, exclude: tuple[str, ...] = ("lm_head",)
) -> list[str]:
    """Freeze every parameter of `module` and wrap its matrix layers with adapters; returns their names."""
    for p in module.parameters():
        p.requires_grad_(False)
    names = lora_targets(module, exclude)
    for name in names:
        _set(module, name, LoRALinear(module.get_submodule(name), rank, alpha))
    return names


def merge_lora(module: nn.Module) -> int:
    """Fold every adapter inside `module` into its base weight (in place); returns how many."""
    names = [n for n, m in module.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        _set(module, name, module.get_submodule(name).merged())
    return len(names)


def base_name(key: str, lora_modules: list[str]) -> str | None:
    """The pretrained tensor name for a key of an adapted model (``x.base.weight`` -> ``x.weight``),
    None for the adapter's own tensors."""
    for name in lora_modules:
        prefix = f"{name}."
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            return prefix + rest[len("base.") :] if rest.startswith("base.") else None
    return key
