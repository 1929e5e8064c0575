"""Optimisers: SGD, Adam, AdamW, and Muon for hidden matrices with AdamW for the rest.

Weight decay goes to matrices only. Decaying gains of norms and biases pulls them towards zero for no
benefit (they don't grow with width the way weight matrices do), so they form a group with no decay.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers") orthogonalises each hidden
matrix's momentum with a few Newton-Schulz iterations; it is meant for 2-D hidden weights only, so the
embedding, the output head and every vector stay on AdamW. `torch.optim.Muon` does the maths; we use
Keller Jordan's original shape adjustment ("original"), with which the usual Muon rate 0.02 applies.

Every optimiser gets a `base_lr` in each param group; the loop sets `lr = base_lr * lr_factor(step)`.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.config import OptimConfig


def _is_embedding_like(param: torch.Tensor, vocab_size: int) -> bool:
    """Embedding tables and the output head: 2-D with one side as large as the (padded) vocabulary."""
    return param.ndim == 2 and max(param.shape) >= vocab_size


def build_optimizers(cfg: OptimConfig, model: nn.Module, vocab_size: int, device_type: str = "cpu"):
    """A list of optimizers covering every trainable parameter exactly once (one, or two for Muon)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    matrices = [p for _, p in named if p.ndim >= 2]
    vectors = [p for _, p in named if p.ndim < 2]
    fused = device_type == "cuda"

    def groups(decay: list, no_decay: list, lr: float) -> list[dict]:
        out = []
        if decay:
            out.append({"params": decay, "weight_decay": cfg.weight_decay, "base_lr": lr, "lr": lr})
        if no_decay:
            out.append({"params": no_decay, "weight_decay": 0.0, "base_lr": lr, "lr": lr})
        return out

    if cfg.name == "sgd":
        return [
            torch.optim.SGD(
                groups(matrices, vectors, cfg.lr),
                lr=cfg.lr,
                momentum=cfg.momentum,
                nesterov=cfg.nesterov and cfg.momentum > 0,
            )
        ]
    betas = (cfg.beta1, cfg.beta2)
    if cfg.name == "adam":
        # Adam with L2-free updates: plain Adam has no decoupled decay, so decay is simply off.
        return [torch.optim.Adam(groups([], matrices + vectors, cfg.lr), lr=cfg.lr, betas=betas, eps=cfg.eps)]
    if cfg.name == "adamw":
        return [
            torch.optim.AdamW(
                groups(matrices, vectors, cfg.lr), lr=cfg.lr, betas=betas, eps=cfg.eps, fused=fused or None
            )
        ]
    # muon: hidden matrices on Muon, embeddings / head / vectors on AdamW.
    hidden = [p for p in matrices if p.ndim == 2 and not _is_embedding_like(p, vocab_size)]
    hidden_ids = {id(p) for p in hidden}
    rest_matrices = [p for p in matrices if id(p) not in hidden_ids]
    optimizers: list[torch.optim.Optimizer] = [
        torch.optim.AdamW(
            groups(rest_matrices, vectors, cfg.lr), lr=cfg.lr, betas=betas, eps=cfg.eps, fused=fused or None
        )
    ]
    if hidden:
        optimizers.append(
            torch.optim.Muon(
                [
                    {
                        "params": hidden,
                        "base_lr": cfg.muon_lr,
                        "lr": cfg.muon_lr,
                        "weight_decay": cfg.weight_decay,
                    }
                ],
                lr=cfg.muon_lr,
                momentum=cfg.muon_momentum,
                adjust_lr_fn="original",
            )
        )
    return optimizers


def set_lr(optimizers, factor: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * factor
