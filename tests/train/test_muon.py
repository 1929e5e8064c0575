"""Muon gets the network's hidden matrices by their role, whatever the vocabulary size, and learns."""

from __future__ import annotations

import pytest
import torch

from lmforge.config import OptimConfig
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.models.gru import GRULM, GRUConfig
from lmforge.train.optim import build_optimizers, param_roles

VOCABS = [27, 65, 4096]  # characters (tiny and Shakespeare's) and a BPE vocabulary


def _expected_role(name: str, param: torch.Tensor) -> str:
    if name.startswith(("wte.", "wpe.")):
        return "embedding"
    if name.startswith("lm_head."):
        return "head"
    return "hidden" if param.ndim == 2 else "vector"


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize(
    "model",
    [
        lambda v: GPT(GPTConfig(vocab_size=v, n_layer=2, n_head=2, n_embd=32, seq_len=16, style="modern")),
        lambda v: GPT(
            GPTConfig(vocab_size=v, n_layer=2, n_head=2, n_embd=32, seq_len=16, style="gpt2", mlp="gelu")
        ),
        lambda v: GPT(
            GPTConfig(vocab_size=v, n_layer=1, n_head=2, n_embd=32, seq_len=16, tie_embeddings=True)
        ),
        lambda v: GRULM(GRUConfig(vocab_size=v, n_layer=2, n_embd=32, hidden=48, seq_len=16)),
    ],
    ids=["gpt-modern", "gpt-gpt2", "gpt-tied", "gru"],
)
def test_muon_gets_the_hidden_matrices_of_every_family_and_vocabulary(model, vocab):
    model = model(vocab)
    roles = param_roles(model)
    named = dict(model.named_parameters())
    assert roles == {name: _expected_role(name, p) for name, p in named.items()}
    hidden = {name for name, role in roles.items() if role == "hidden"}
    assert hidden and all(named[n].ndim == 2 for n in hidden)
    if isinstance(model, GPT):
        assert hidden == {n for n, p in named.items() if n.startswith("blocks.") and p.ndim == 2}
    else:
        assert hidden == {n for n in named if n.startswith("gru.weight_")}
    adamw, muon = build_optimizers(OptimConfig(name="muon"), model)
    assert isinstance(muon, torch.optim.Muon)
    on_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    on_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    assert on_muon == {id(named[n]) for n in hidden}
    assert not on_muon & on_adamw and on_muon | on_adamw == {id(p) for p in named.values()}


def _final_loss(muon_lr: float, steps: int = 60) -> float:
    """A tiny GPT on a character task (predict the next of a repeating pattern), where AdamW's
    rate is too small to move anything: whatever is learnt, Muon learnt."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=27, n_layer=2, n_head=2, n_embd=32, seq_len=16))
    model.init_weights()
    config = OptimConfig(name="muon", lr=1e-7, muon_lr=muon_lr, weight_decay=0.0)
    optimizers = build_optimizers(config, model)
    gen = torch.Generator().manual_seed(1)
    pattern = torch.randperm(27, generator=gen)[:9]
    loss = torch.tensor(0.0)
    for _ in range(steps):
        starts = torch.randint(0, 9, (8, 1), generator=gen)
        idx = pattern[(starts + torch.arange(17)) % 9]  # (8, 17) windows of the cycle
        loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def test_a_short_muon_run_learns_what_a_frozen_one_cannot():
    baseline = _final_loss(muon_lr=1e-7)  # nothing moves: the loss of the initial model
    learnt = _final_loss(muon_lr=0.02)
    assert learnt < baseline - 0.3, (learnt, baseline)  # 0.6 nats below it when Muon works
