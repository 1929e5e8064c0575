"""Shared fixtures: a tiny corpus and a prepared data folder, made once per test session."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

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


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Training writes its fast-path verdicts (models/fastpaths.py) under $LMFORGE_CACHE: a folder of
    this session's, not the user's ~/.cache (a test that needs another sets its own)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("LMFORGE_CACHE", str(tmp_path_factory.mktemp("lmforge-cache")))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _fresh_fast_paths():
    """A training run sets the process-wide fast paths (models/layers.py FAST); each test starts
    from the plain defaults, so no test depends on which ran before it."""
    from lmforge.models import layers

    layers.use_fast_paths(layers.FastPaths())
    yield
    layers.use_fast_paths(layers.FastPaths())


def load_bench_script(name: str):
    """A script of bench/ as a module (benchmarks are not part of the package), for its tests."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


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
    code = main(
        [
            "data",
            "prepare",
            "--source",
            str(tiny_corpus),
            "--out",
            str(out),
            "--tokenizer",
            "char",
            "--split",
            "tail",
            "--json",
        ]
    )
    assert code == 0
    return out


TINY = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=32",
    "model.seq_len=32",
    "train.batch_size=4",
    "train.eval_every=10",
    "train.eval_tokens=512",
    "train.ckpt_every=10",
    "train.log_every=5",
    "optim.lr=3e-3",
    "schedule.warmup_steps=2",
]


# --- a tiny base run and its chat fine-tuned child (test_chat.py, test_serve.py, test_web.py) ---

CHAT_WORDS = ["to", "be", "or", "not", "the", "question", "sleep", "die"]


def write_conversations(path, n=24):
    """`n` tiny conversations ("say X" -> "X X") made of characters the char tokenizer knows."""
    import json

    with open(path, "w", encoding="utf-8") as handle:
        for i in range(n):
            word = CHAT_WORDS[i % len(CHAT_WORDS)]
            messages = [
                {"role": "user", "content": f"say {word}"},
                {"role": "assistant", "content": f"{word} {word}"},
            ]
            if i % 3 == 0:
                messages.insert(0, {"role": "system", "content": "be brief"})
            handle.write(json.dumps({"messages": messages}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_run(char_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("chatbase") / "base"
    args = ["train", "--data", str(char_data), "--out", str(out), "--no-progress", *TINY, "model.seq_len=64"]
    assert main([*args, "--max-steps", "20"]) == 0
    return out


@pytest.fixture(scope="session")
def chat_run(tiny_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("chatsft")
    train = write_conversations(folder / "chat.jsonl")
    out = folder / "tiny-chat"
    args = ["finetune", str(tiny_run), "--task", "sft", "--train", str(train), "--out", str(out)]
    args += ["--max-steps", "12", "--no-progress", "train.eval_every=6", "train.eval_tokens=256"]
    assert main(args) == 0
    return out
