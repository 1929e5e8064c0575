"""Examples -> token ids and targets, and batches of them, for the three task shapes.

- classify: ``wrap(encode(text))`` cut to the context, target = the label's index.
- ner: each word encoded on its own (a space before every word but the first, as in running text),
  concatenated and wrapped. A word's tag goes on ONE of its sub-tokens and the others get -1, which
  the loss ignores: the first sub-token (the usual convention, and right for encoders, which see the
  whole word from there) or, with ``subtoken="last"``, the last -- the only one at which a *causal*
  model has read the whole word. A sub-token that is only the joining space never carries the tag.
- translate: ``prefix + source + <sep> + target + <end>``, where <sep> and <end> are the tokenizer's
  end-of-text id; targets are the next tokens, -1 up to and including the separator, so the loss is
  on the target text (and its end) only. An over-long source is cut from its start.

A batch is right-padded with the pad id to its longest row (targets with -1), so causal models never
attend to padding and no compute is spent on a fixed-size window. Which rows form the batch of a
step is a pure function of (seed, step, rank, micro_step), as in pretraining.
"""

from __future__ import annotations

import numpy as np
import torch

from lmforge.finetune.backbones import TaskTokenizer


def encode_classify(tok: TaskTokenizer, text: str, seq_len: int) -> list[int]:
    ids = tok.encode(text)[: max(1, seq_len - len(tok.prefix) - len(tok.suffix))]
    return tok.wrap(ids)


def encode_words(
    tok: TaskTokenizer, words: list[str], seq_len: int, subtoken: str = "first"
) -> tuple[list[int], list[int]]:
    """(ids, word index per id, -1 where no word's label sits), cut to `seq_len`."""
    ids: list[int] = list(tok.prefix)
    owner: list[int] = [-1] * len(ids)
    for w, word in enumerate(words):
        pieces = tok.encode((" " if w else "") + word)
        texts = [tok.decode([p]) for p in pieces]
        labelled = [i for i, t in enumerate(texts) if t.strip()] or list(range(len(pieces)))
        at = labelled[0] if subtoken == "first" else labelled[-1]
        ids += pieces
        owner += [w if i == at else -1 for i in range(len(pieces))]
    ids, owner = ids[: seq_len - len(tok.suffix)], owner[: seq_len - len(tok.suffix)]
    return ids + tok.suffix, owner + [-1] * len(tok.suffix)


def encode_ner(tok, tokens, tags, label_ids: dict[str, int], seq_len: int, subtoken: str):
    ids, owner = encode_words(tok, tokens, seq_len, subtoken)
    return ids, [label_ids[tags[w]] if w >= 0 else -1 for w in owner]


def encode_prompt(tok: TaskTokenizer, source: str, seq_len: int, room: int) -> list[int]:
    """prefix + source + <sep>, the source cut from its start so `room` tokens still fit after it."""
    src = tok.encode(source)
    keep = max(1, seq_len - room - len(tok.prefix) - 1)
    return [*tok.prefix, *src[-keep:], tok.eos_id]


def encode_translate(
    tok: TaskTokenizer, source: str, target: str, seq_len: int
) -> tuple[list[int], list[int]]:
    """(x, y) of one pair: y is -1 except on the target tokens and the final end id."""
    tgt = [*tok.encode(target), tok.eos_id][: max(1, seq_len // 2)]
    prompt = encode_prompt(tok, source, seq_len + 1, len(tgt))
    ids = prompt + tgt
    y = [-1] * (len(prompt) - 1) + tgt
    return ids[:-1], y


class TaskSampler:
    """`batch(step, micro_step)` -> (x, y): rows drawn with replacement, right-padded."""

    def __init__(
        self, rows: list[tuple], pad_id: int, batch_size: int, seed: int, rank: int = 0, world: int = 1
    ):
        self.rows, self.pad_id, self.batch_size = rows, pad_id, batch_size
        self.seed, self.rank = seed, rank

    def batch(self, step: int, micro_step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.Generator(np.random.PCG64([self.seed, step, self.rank, micro_step]))
        picked = rng.integers(0, len(self.rows), size=self.batch_size)
        return collate([self.rows[i] for i in picked], self.pad_id)


def collate(rows: list[tuple], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of (ids, target) -> x (B, T) padded with pad_id; y (B,) for int targets, else (B, T) with -1."""
    width = max(len(ids) for ids, _ in rows)
    x = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    for i, (ids, _) in enumerate(rows):
        x[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    if isinstance(rows[0][1], int):
        return x, torch.tensor([t for _, t in rows], dtype=torch.long)  # (B,)
    y = torch.full((len(rows), width), -1, dtype=torch.long)  # (B, T)
    for i, (_, target) in enumerate(rows):
        y[i, : len(target)] = torch.tensor(target, dtype=torch.long)
    return x, y
