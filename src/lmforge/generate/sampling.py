"""Choosing the next token from logits: pure functions on tensors, each testable with numbers.

Order in ``sample_next`` follows Hugging Face's logits processors so the same settings mean the same
thing here and there: repetition penalty, then temperature, then top-k, then top-p, then a draw.
Filtering sets excluded logits to -inf rather than renormalising by hand; softmax does the rest.
"""

from __future__ import annotations

import torch


def apply_repetition_penalty(logits: torch.Tensor, prev_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019): for every id in ``prev_ids`` a positive logit is divided by
    ``penalty`` and a negative one multiplied, so the token always becomes less likely (> 1) —
    dividing a negative logit would make it *more* likely. logits (B, V), prev_ids (B, L)."""
    if penalty == 1.0 or prev_ids is None or prev_ids.numel() == 0:
        return logits
    seen = logits.gather(1, prev_ids)  # (B, L)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, prev_ids, seen)


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the k largest logits per row (ties with the k-th are kept too), -inf elsewhere."""
    if k is None or k <= 0 or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the smallest set of most likely tokens whose
    probabilities sum to at least p; the most likely token always stays."""
    if p is None or p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
    drop_sorted = mass_before >= p  # once p is reached, everything after goes
    drop_sorted[:, 0] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
    repetition_penalty: float = 1.0,
    prev_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The next token per row: logits (B, V) -> LongTensor (B,). Temperature 0 means greedy (argmax,
    after the repetition penalty); ``generator`` makes draws reproducible."""
    logits = logits.float()
    if repetition_penalty != 1.0 and prev_ids is not None:
        logits = apply_repetition_penalty(logits, prev_ids, repetition_penalty)
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
    probs = logits.softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def openai_penalties(
    logits: torch.Tensor,
    generated: torch.Tensor,
    presence: float = 0.0,
    frequency: float = 0.0,
    bias: dict[int, float] | None = None,
) -> torch.Tensor:
    """OpenAI's presence and frequency penalties and `logit_bias`, on logits (B, V) given the ids
    generated so far (B, k): ``logit[j] -= frequency * count[j] + presence * (count[j] > 0)``, then
    ``logit[j] += bias[j]``. Unlike CTRL's repetition penalty these subtract, whatever the sign, and
    count only the answer, not the prompt (as OpenAI's API reference and vLLM define them)."""
    logits = logits.float()
    if generated.numel() and (presence or frequency):
        counts = torch.zeros_like(logits).scatter_add_(
            1, generated, torch.ones_like(generated, dtype=logits.dtype)
        )
        logits = logits - frequency * counts - presence * (counts > 0).to(logits.dtype)
    if bias:
        ids = torch.tensor(list(bias), dtype=torch.long, device=logits.device)
        values = torch.tensor(list(bias.values()), dtype=logits.dtype, device=logits.device)
        logits = logits.index_add(1, ids, values.expand(logits.shape[0], -1))
    return logits
