"""Scoring given tokens: the log-probability the model gives each token of a sequence, and the best
alternatives at each position, from the model's own forward pass.

What the API's `logprobs` / `echo` and lm-evaluation-harness's `loglikelihood` need is the same number:
log p(token_i | tokens_<i). It comes from one ordinary (uncached) forward over the sequence -- the
network that training and evaluation run -- so a score here is exactly the one a `model(ids)` call
gives, whatever fast path decoding uses. Log-softmax is taken in float32 even when the model runs in
bf16, so sums over long continuations do not drift.

Past the context: a sequence longer than the model's window is scored in windows of `max_context`
tokens, each new window starting half a window later, so every token is scored with at least half a
window of history (the GRU has no window and is scored in one pass).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def next_token_logprobs(model: torch.nn.Module, ids: Sequence[int]) -> torch.Tensor:
    """(len(ids) - 1, vocab_size) float32: row i is log p(. | ids[: i + 1]), the distribution ids[i + 1]
    was drawn from. One forward when the sequence fits the context; overlapping windows when not."""
    n = len(ids)
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    if n < 2:
        return torch.zeros(0, vocab, device=device)
    limit = model.max_context or n
    x = torch.tensor(list(ids), dtype=torch.long, device=device).unsqueeze(0)  # (1, n)
    rows = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            end = min(n - 1, limit)  # inputs [0, end) predict tokens 1..end
            rows.append(F.log_softmax(model(x[:, :end])[0].float(), dim=-1))  # (end, V)
            stride = max(1, limit // 2)
            while end < n - 1:
                new_end = min(n - 1, end + stride)
                start = new_end - limit
                logits = model(x[:, start:new_end])[0]  # (limit, V)
                rows.append(F.log_softmax(logits[end - start :].float(), dim=-1))  # rows for end..new_end-1
                end = new_end
    finally:
        model.train(was_training)
    return torch.cat(rows)


def token_logprobs(
    model: torch.nn.Module, ids: Sequence[int], top: int = 0
) -> tuple[list[float], list[list[tuple[int, float]]]]:
    """For ids[1:]: each token's log-probability, and (with `top` > 0) the `top` most likely tokens at
    its position as (id, log-probability), best first."""
    table = next_token_logprobs(model, ids)  # (n - 1, V)
    if table.shape[0] == 0:
        return [], []
    targets = torch.tensor(list(ids[1:]), dtype=torch.long, device=table.device)
    chosen = table.gather(1, targets.unsqueeze(1)).squeeze(1).tolist()
    if top <= 0:
        return chosen, [[] for _ in chosen]
    values, indices = table.topk(min(top, table.shape[1]), dim=-1)  # (n - 1, top)
    best = [list(zip(i, v, strict=True)) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]
    return chosen, best


def continuation_scores(
    model: torch.nn.Module, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int = 8
) -> list[tuple[float, bool]]:
    """lm-eval's `loglikelihood` on token ids: for each (context, continuation), the summed log-prob of
    the continuation after the context, and whether greedy decoding would have produced it.

    Sequences are scored right-padded in batches of similar length (padding after a causal model's
    last real token changes nothing before it); identical inputs are run once. A pair longer than the
    context keeps its newest `max_context + 1` tokens, as lm-eval's `hf` model does.
    """
    limit = model.max_context
    device = next(model.parameters()).device
    jobs: dict[tuple[int, ...], list[int]] = {}  # model input -> indices of the pairs it serves
    prepared = []
    for index, (context, continuation) in enumerate(pairs):
        if not continuation:
            raise ValueError("a continuation must have at least one token")
        whole = [*context, *continuation]
        if limit is not None:
            whole = whole[-(limit + 1) :]
        inputs = tuple(whole[:-1])
        prepared.append((inputs, list(continuation)[-len(inputs) :]))  # a cut continuation keeps its end
        jobs.setdefault(inputs, []).append(index)
    results: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
    order = sorted(jobs, key=len, reverse=True)
    was_training = model.training
    model.eval()
    try:
        for first in range(0, len(order), batch_size):
            batch = order[first : first + batch_size]
            width = len(batch[0])
            x = torch.zeros(len(batch), width, dtype=torch.long, device=device)  # (B, T), right-padded
            for row, inputs in enumerate(batch):
                x[row, : len(inputs)] = torch.tensor(inputs, dtype=torch.long)
            with torch.inference_mode():
                table = F.log_softmax(model(x).float(), dim=-1)  # (B, T, V)
            for row, inputs in enumerate(batch):
                for index in jobs[inputs]:
                    continuation = prepared[index][1]
                    k = len(continuation)
                    rows = table[row, len(inputs) - k : len(inputs)]  # (k, V)
                    target = torch.tensor(continuation, dtype=torch.long, device=device)
                    total = float(rows.gather(1, target.unsqueeze(1)).sum())
                    greedy = bool((rows.argmax(dim=-1) == target).all())
                    results[index] = (total, greedy)
    finally:
        model.train(was_training)
    return results
