"""`evaluate_tokens` against the definitions written out by hand: loss, accuracy and bits-per-byte of a
model over token windows, whether the logits are scored whole or a few rows at a time."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmforge.eval import loss as loss_module
from lmforge.eval.loss import evaluate_tokens


class TableModel(torch.nn.Module):
    """Logits that depend only on the input token: a (vocab, vocab) table, so every figure can be
    computed by hand from the table."""

    def __init__(self, vocab: int, seed: int = 0):
        super().__init__()
        self.table = torch.nn.Parameter(
            torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)) * 3
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x]  # (n, T, vocab)


def by_hand(model: TableModel, tokens: np.ndarray, token_bytes: np.ndarray) -> dict:
    x = torch.from_numpy(tokens[:-1].astype(np.int64))
    y = torch.from_numpy(tokens[1:].astype(np.int64))
    log_probs = torch.log_softmax(model.table.detach()[x].double(), dim=-1)
    nats = -log_probs[torch.arange(len(y)), y]
    text = torch.from_numpy(token_bytes)[y] > 0
    return {
        "loss": float(nats.mean()),
        "accuracy": float((log_probs.argmax(-1) == y).double().mean()),
        "bpb": float(nats[text].sum()) / math.log(2) / int(torch.from_numpy(token_bytes)[y].sum()),
        "tokens": len(y),
    }


@pytest.mark.parametrize("chunk_elements", [1 << 20, 3 * 50, 7])  # whole batches; 3 rows; 1 row
def test_metrics_match_the_definitions(monkeypatch, chunk_elements):
    monkeypatch.setattr(loss_module, "CHUNK_ELEMENTS", chunk_elements)
    vocab = 50
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, vocab, size=1001).astype(np.uint16)
    token_bytes = rng.integers(1, 4, size=vocab)
    token_bytes[[0, 7]] = 0  # special tokens: no text, out of bits-per-byte
    model = TableModel(vocab)
    got = evaluate_tokens(model, [tokens], token_bytes, seq_len=16, batch_size=4)
    want = by_hand(model, tokens, token_bytes)
    assert got["tokens"] == want["tokens"] == 1000  # 62 full windows and a partial one
    for key in ("loss", "accuracy", "bpb"):
        assert got[key] == pytest.approx(want[key], rel=1e-6), key
    assert 0.02 < got["accuracy"] < 0.5  # neither nothing nor everything right: a wrong count would show


def test_accuracy_follows_the_largest_logit():
    vocab = 5
    model = TableModel(vocab)
    with torch.no_grad():
        model.table.zero_()
        model.table[:, 3] = 1.0  # every row predicts token 3
    tokens = np.array([0, 3, 1, 3, 2, 4, 3], dtype=np.uint16)  # targets 3 1 3 2 4 3: 3 of 6 right
    got = evaluate_tokens(model, [tokens], np.ones(vocab, dtype=np.int64), seq_len=3, batch_size=2)
    assert got["accuracy"] == pytest.approx(3 / 6)
