"""Shared fixtures: a tiny corpus and a prepared data folder, made once per test session."""

from __future__ import annotations

import random

import pytest
import torch

from lmforge.cli import main

LINES = [
    "To be, or not to be, that is the question:",
    "Whether 'tis nobler in the mind to suffer",
    "The slings and arrows of outrageous fortune,",
    "Or to take arms against a sea of troubles",
    "And by opposing end them. To die: to sleep;",
    "No more; and by a sleep to say we end",
    "The heart-ache and the thousand natural shocks",
    "That flesh is heir to, 'tis a consummation",
]


def pytest_configure(config):
    torch.set_num_threads(1)  # small tensors: one thread is fastest and avoids oversubscription


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A folder of small plain-text 'plays', different enough that dedup keeps them all."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    words = " ".join(LINES).replace(",", "").replace(";", "").replace(":", "").split()
    for i in range(12):
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 10))) for _ in range(40)]
        (folder / f"play_{i:02d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def char_data(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "char"
    code = main(["data", "prepare", "--source", str(tiny_corpus), "--out", str(out), "--tokenizer", "char",
                 "--split", "tail", "--json"])
    assert code == 0
    return out


TINY = [
    "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.seq_len=32",
    "train.batch_size=4", "train.eval_every=10", "train.eval_tokens=512", "train.ckpt_every=10",
    "train.log_every=5", "optim.lr=3e-3", "schedule.warmup_steps=2",
]
