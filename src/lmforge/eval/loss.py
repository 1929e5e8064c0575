"""Loss, perplexity, token accuracy and bits-per-byte of a model over token windows.

This is the one routine both the training loop (a fixed validation slice every `eval_every` steps)
and `lmforge eval` (a whole split or any text file) use, so the numbers they print are the same
computation. It sits on the ground floor (it needs only a model and tokens), below `train/`.

Bits-per-byte counts only targets that stand for text (special tokens such as the document
boundary have 0 bytes and are left out of both sums, as nanochat does), so it measures how well the
model compresses the text itself.

The sums are accumulated in float64: over a million tokens, a float32 running sum of losses loses
digits that matter when two runs differ in the third decimal.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.data.batches import eval_windows
from lmforge.eval.metrics import bits_per_byte, perplexity


@torch.no_grad()
def evaluate_tokens(
    model: torch.nn.Module,
    token_arrays: list[np.ndarray],
    token_bytes: np.ndarray,
    seq_len: int,
    max_tokens: int | None = None,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    autocast=None,
) -> dict[str, float]:
    """Metrics over the first `max_tokens` targets of `token_arrays` (all of them if None)."""
    was_training = model.training
    model.eval()
    byte_table = torch.from_numpy(np.asarray(token_bytes, dtype=np.int64))
    total_nats, text_nats, total_bytes, total_tokens, correct = 0.0, 0.0, 0, 0, 0
    budget = max_tokens
    for tokens in token_arrays:
        if budget is not None and budget <= 0:
            break
        for x, y in eval_windows(tokens, seq_len, budget, batch_size):
            with autocast or contextlib.nullcontext():
                logits = model(x.to(device))  # (n, T, vocab)
            logits = logits.float()
            y_dev = y.to(device)
            nats = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y_dev.reshape(-1), reduction="none")
            nats = nats.double().cpu()  # (n * T,)
            target_bytes = byte_table[y.reshape(-1)]
            total_nats += float(nats.sum())
            text_nats += float(nats[target_bytes > 0].sum())
            correct += int((logits.argmax(-1) == y_dev).sum())
            total_tokens += y.numel()
            total_bytes += int(target_bytes.sum())
        if budget is not None:
            budget -= max(0, len(tokens) - 1)
    if was_training:
        model.train()
    if total_tokens == 0:
        return {"loss": float("nan"), "perplexity": float("nan"), "bpb": float("nan"), "tokens": 0}
    loss = total_nats / total_tokens
    return {
        "loss": loss,
        "perplexity": perplexity(loss),
        "bpb": bits_per_byte(text_nats, total_bytes) if total_bytes else float("nan"),
        "accuracy": correct / total_tokens,
        "tokens": total_tokens,
        "bytes": total_bytes,
    }
