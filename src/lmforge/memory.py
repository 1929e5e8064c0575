"""Will a run fit in memory? An estimate from the config, made before anything is allocated.

Why before: a setting such as `model.n_layer=1000000` or `model.seq_len=1000000000` otherwise
allocates gigabytes for a minute before the operating system (or a C++ check deep in torch) says
no, and by then the machine may be swapping. The estimate is deliberately simple and on the low
side -- parameters counted exactly on torch's `meta` device (no memory), gradients and two optimizer
moments per parameter, and the activations a training step keeps for its backward pass -- so a run
it refuses would certainly not have fitted, and no run that fits is refused.

Activations per Transformer layer: Korthikanti et al., "Reducing Activation Recomputation in Large
Transformer Models" (arXiv:2205.05198), count 34 * s * b * h bytes in 16-bit floats, i.e. 17 values
per token per channel, plus the attention matrix (n_head * s * s per sequence) where the kernel keeps
it (`attn_impl = "math"`). A recurrent layer keeps a few hidden-sized vectors per token. The logits
(tokens x vocab) are kept twice (values and their gradient).
"""

from __future__ import annotations

import os
from pathlib import Path

from lmforge.errors import UserError

FLOAT = 4  # bytes; weights, gradients, optimizer state and the loss stay float32
STATE_COPIES = 4  # weights, gradients, two optimizer moments


def count_params(model_config) -> int:
    """Exact parameter count of the model `model_config` describes, without allocating it."""
    import torch

    from lmforge.models.registry import MODELS

    with torch.device("meta"):
        model = MODELS[model_config.family][1](model_config)
    return sum(p.numel() for p in model.parameters())


def params_upper_bound(model_config) -> int | None:
    """At least the parameter count, from the config's numbers alone (no torch, no model built), or
    None for a family without a formula. Counting on the meta device loads torch's meta kernels and
    symbolic shapes (1-4 s of every `lmforge train` start), so the exact count is left for the runs
    this bound cannot clear."""
    cfg = model_config
    padded_vocab = 64 * -(-max(cfg.vocab_size, 1) // 64)
    if cfg.family == "gpt":
        width, hidden = cfg.n_embd, cfg.hidden_dim
        # per layer: q, k, v <= 3 C^2, output C^2, MLP <= 3 C H (gated), norms and biases <= 8 C + H
        per_layer = 4 * width * width + 3 * width * hidden + 8 * width + hidden
        return cfg.n_layer * per_layer + 2 * padded_vocab * width + cfg.seq_len * width + 2 * width
    if cfg.family == "gru":
        width, hidden = max(cfg.n_embd, cfg.hidden), cfg.hidden
        per_layer = 3 * (width + hidden) * hidden + 6 * hidden  # input and hidden matrices, two biases
        return padded_vocab * cfg.n_embd + cfg.n_layer * per_layer + padded_vocab * hidden
    return None


def activation_bytes(model_config, batch_size: int) -> int:
    """Bytes of activations one micro-step keeps for its backward pass (a lower estimate)."""
    cfg = model_config
    tokens = batch_size * cfg.seq_len
    layers = getattr(cfg, "n_layer", 1)
    width = getattr(cfg, "n_embd", 1)
    per_layer = 17 * tokens * width
    if getattr(cfg, "attn_impl", "sdpa") == "math" and hasattr(cfg, "n_head"):
        per_layer += batch_size * cfg.n_head * cfg.seq_len * cfg.seq_len
    if hasattr(cfg, "hidden"):  # recurrent: gates and states per token
        per_layer += 4 * tokens * cfg.hidden
    logits = 2 * tokens * max(cfg.vocab_size, 1)
    return FLOAT * (layers * per_layer + logits)


def estimate_bytes(config) -> int:
    """Bytes a training step of `config` (a RunConfig) needs at least."""
    return STATE_COPIES * FLOAT * count_params(config.model) + activation_bytes(
        config.model, config.train.batch_size
    )


def available_bytes() -> int | None:
    """Memory the system can give this process now (MemAvailable), None where unknown."""
    meminfo = Path("/proc/meminfo")
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def check_fits(config, available: int | None = None) -> int:
    """Refuse (UserError) a CPU run whose estimate exceeds free memory; returns the estimate (an upper
    one when the config's numbers alone show that the run fits)."""
    available = available_bytes() if available is None else available
    upper = params_upper_bound(config.model)
    if available is not None and upper is not None:
        rough = STATE_COPIES * FLOAT * upper + activation_bytes(config.model, config.train.batch_size)
        if rough <= available:
            return rough
    needed = estimate_bytes(config)
    if available is not None and needed > available:
        raise UserError(
            f"this run needs at least {_gb(needed)} of memory ({count_params(config.model):,} parameters, "
            f"batch {config.train.batch_size} x {config.model.seq_len} tokens) but {_gb(available)} is "
            "free; lower model.n_layer, model.n_embd, model.seq_len or train.batch_size"
        )
    return needed
