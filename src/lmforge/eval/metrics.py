"""The metrics of language modelling, as small pure functions.

Loss is the mean cross-entropy in nats per *token*, so it depends on the tokenizer: a tokenizer
with longer tokens has fewer, harder predictions. Bits-per-byte divides the total nats by the number
of UTF-8 bytes those target tokens stand for (and by ln 2): it measures how well the model compresses
the *text*, so a char-level and a BPE model on the same text can be compared fairly.
"""

from __future__ import annotations

import math


def perplexity(mean_loss_nats: float) -> float:
    """exp(loss): the effective number of equally likely choices per token."""
    return math.exp(min(mean_loss_nats, 700.0))  # avoid OverflowError for a diverged model


def bits_per_byte(total_nats: float, total_bytes: int) -> float:
    """Total cross-entropy (nats) over the targets' UTF-8 byte count, in bits."""
    if total_bytes <= 0:
        raise ValueError("bits_per_byte needs a positive byte count")
    return total_nats / (math.log(2) * total_bytes)


def cross_entropy(probs: list[float], target: int) -> float:
    """L = -sum_i y_i log p_i with one-hot y: just -log p[target] (in nats). For teaching and tests."""
    return -math.log(probs[target])


def softmax(logits: list[float]) -> list[float]:
    """Numerically stable softmax of a list of floats."""
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    total = sum(exps)
    return [e / total for e in exps]


def model_flops_utilization(flops_per_token: float, tokens_per_second: float, peak_flops: float) -> float:
    """Fraction of the hardware's peak FLOP/s spent on the model's own arithmetic (MFU)."""
    if peak_flops <= 0:
        return 0.0
    return flops_per_token * tokens_per_second / peak_flops
