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

# On a CPU the logits are scored a slice of rows at a time, small enough to stay in cache: the float
# copy, the log-softmax and the max each read the (n*T, vocab) logits, and with a 4096-token vocabulary
# doing so for a whole batch at once went to memory and cost several times the model's forward.
CHUNK_ELEMENTS = 1 << 20


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
            target_bytes = byte_table[y.reshape(-1)]
            sums = score_logits(
                logits.reshape(-1, logits.size(-1)), y.to(device).reshape(-1), target_bytes > 0
            )
            total_nats += sums[0]
            text_nats += sums[1]
            correct += int(sums[2])
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


def score_logits(
    logits: torch.Tensor, targets: torch.Tensor, is_text: torch.Tensor
) -> tuple[float, float, int]:
    """(sum of nats, sum of nats over text targets, targets predicted right) of (rows, vocab) logits,
    in float32 whatever their dtype, summed in float64."""
    rows = logits.size(0)
    step = max(1, CHUNK_ELEMENTS // logits.size(-1)) if logits.device.type == "cpu" else rows
    is_text = is_text.to(logits.device)
    sums = torch.zeros(3, dtype=torch.float64, device=logits.device)
    for lo in range(0, rows, step):
        chunk, want = logits[lo : lo + step].float(), targets[lo : lo + step]
        nats = F.cross_entropy(chunk, want, reduction="none").double()
        # Right when the target's logit is the row's largest: a gather and a max, a third of an
        # argmax's cost here. A tie counts as right (argmax took the first index; float logits never tie).
        hit = chunk.gather(-1, want.unsqueeze(-1)).squeeze(-1) >= chunk.amax(-1)
        sums += torch.stack([nats.sum(), nats[is_text[lo : lo + step]].sum(), hit.sum().double()])
    total, text, hits = sums.tolist()
    return total, text, int(hits)
