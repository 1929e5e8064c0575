"""Beam search (and greedy / sampled decoding) over any next-token function, without a cache.

Translation decodes short outputs from short prompts, one text at a time: the beams are the batch
(they always have the same length), and each step recomputes the whole prefix -- no KV cache, so the
same code drives an lmforge GPT or GRU and a Hugging Face model alike. At beam size 1 it is greedy.

Scores are summed log-probabilities; a finished hypothesis (one that produced ``end_id``) is ranked by
score / length^alpha (Wu et al. 2016's length normalisation in its simplest form, alpha = 1 by
default), since raw sums favour short outputs. The search stops when ``beam_size`` hypotheses have
finished or the token budget is spent (then the live beams count as finished).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from lmforge.generate.sampling import sample_next

NextLogits = Callable[[torch.Tensor], torch.Tensor]  # idx (B, T) -> logits of the next token (B, V)


@torch.no_grad()
def beam_search(
    next_logits: NextLogits,
    prompt: list[int],
    max_new_tokens: int,
    end_id: int,
    beam_size: int = 4,
    length_alpha: float = 1.0,
) -> list[int]:
    """The best continuation of `prompt` (without the end id)."""
    beams: list[tuple[list[int], float]] = [(list(prompt), 0.0)]
    finished: list[tuple[list[int], float]] = []

    def normalised(seq: list[int], score: float) -> float:
        return score / max(1, len(seq) - len(prompt)) ** length_alpha

    for _ in range(max_new_tokens):
        idx = torch.tensor([seq for seq, _ in beams], dtype=torch.long)  # (beams, T)
        logp = F.log_softmax(next_logits(idx).float(), dim=-1)  # (beams, V)
        scores = torch.tensor([s for _, s in beams]).unsqueeze(1) + logp  # (beams, V)
        vocab = scores.size(1)
        top = scores.view(-1).topk(min(2 * beam_size, scores.numel()))
        alive = []
        for score, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            row, token = divmod(flat, vocab)
            seq = beams[row][0] + [token]
            if token == end_id:
                finished.append((seq, normalised(seq, score)))
            else:
                alive.append((seq, score))
            if len(alive) == beam_size:
                break
        beams = alive
        if not beams or len(finished) >= beam_size:
            break
    finished += [(seq, normalised(seq, score)) for seq, score in beams]
    best = max(finished, key=lambda item: item[1])[0][len(prompt) :]
    return best[:-1] if best and best[-1] == end_id else best


@torch.no_grad()
def sample_decode(
    next_logits: NextLogits,
    prompt: list[int],
    max_new_tokens: int,
    end_id: int,
    temperature: float,
    top_p: float | None = None,
    seed: int | None = None,
) -> list[int]:
    """One sampled continuation (temperature 0 = greedy), stopping at `end_id`."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    seq = list(prompt)
    for _ in range(max_new_tokens):
        logits = next_logits(torch.tensor([seq], dtype=torch.long))  # (1, V)
        token = int(sample_next(logits, temperature, None, top_p, generator)[0])
        if token == end_id:
            break
        seq.append(token)
    return seq[len(prompt) :]
