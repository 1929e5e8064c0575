"""train.dtype=auto (train/precision.py): the rules that need no timing, the probe's decision and its
cache on made-up speeds, a real probe of a small model, and a run that records what it chose."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from conftest import TINY
from lmforge import hardware, runs
from lmforge.cli import main
from lmforge.config import load_config
from lmforge.dist import DistInfo
from lmforge.models import layers
from lmforge.train import precision
from lmforge.train.data import open_data

CPU = torch.device("cpu")
WIDE = ["model.n_layer=1", "model.n_head=2", "model.n_embd=128", "model.seq_len=32", "train.batch_size=4"]


def _config(char_data, *overrides):
    data = open_data(char_data, {})
    return load_config(None, list(overrides), data.tokenizer.vocab_size), data


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU with bf16 instructions, whatever this one has."""
    monkeypatch.setattr(hardware, "cpu_flags", lambda: ["avx512f", "avx512_bf16", "amx_bf16"])


def test_auto_is_the_default_and_a_named_dtype_is_kept(char_data, tmp_path):
    config, data = _config(char_data, *WIDE)
    assert config.train.dtype == "auto"
    named, _ = _config(char_data, *WIDE, "train.dtype=bfloat16")
    same, choice = precision.resolve(named, data, CPU, DistInfo(), tmp_path, resume=False)
    assert same is named and (choice.dtype, choice.source) == ("bfloat16", "config")
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        hardware.autocast(CPU, "auto")  # "auto" never reaches a model


def test_what_is_decided_without_timing(char_data, tmp_path, monkeypatch, bf16_cpu):
    monkeypatch.setattr(precision, "probe", lambda *a: pytest.fail("nothing should be timed"))
    narrow, data = _config(char_data, *TINY)  # width 32
    assert precision.choose(narrow, data, CPU, cache=tmp_path / "c.json").source == "narrow"
    gru, _ = _config(char_data, "model.family=gru")
    assert precision.choose(gru, data, CPU, cache=tmp_path / "c.json").source == "family"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: ["avx2", "fma", "avx512f"])
    wide, _ = _config(char_data, *WIDE)
    choice = precision.choose(wide, data, CPU, cache=tmp_path / "c.json")
    assert (choice.dtype, choice.source) == ("float32", "no bf16")
    assert "no bf16 instructions" in choice.line()


@pytest.mark.parametrize(("bf16_speed", "chosen"), [(12_000.0, "bfloat16"), (10_500.0, "float32")])
def test_the_probe_takes_bf16_only_when_clearly_faster_and_is_cached(
    char_data, tmp_path, monkeypatch, bf16_cpu, bf16_speed, chosen
):
    calls = []

    def fake_probe(config, data, device):
        calls.append(config.train.dtype)
        return {"float32": 10_000.0, "bfloat16": bf16_speed}

    monkeypatch.setattr(precision, "probe", fake_probe)
    monkeypatch.setattr(precision.fastpaths, "machine_load", lambda: 0.1)
    config, data = _config(char_data, *WIDE)
    cache = tmp_path / "cache.json"
    first = precision.choose(config, data, CPU, cache=cache)
    assert (first.dtype, first.source) == (chosen, "probe") and len(calls) == 1
    assert first.tok_per_s == {"float32": 10_000.0, "bfloat16": bf16_speed}
    again = precision.choose(config, data, CPU, cache=cache)
    assert (again.dtype, again.source) == (chosen, "cache") and len(calls) == 1
    other, _ = _config(char_data, *WIDE, "train.batch_size=8")  # another shape: its own probe
    precision.choose(other, data, CPU, cache=cache)
    assert len(calls) == 2
    unwritten = precision.choose(config, data, CPU, write=False, cache=tmp_path / "other.json")
    assert unwritten.source == "probe" and not (tmp_path / "other.json").exists()


def test_a_real_probe_times_both_and_leaves_the_process_as_it_was(char_data):
    config, data = _config(char_data, *WIDE)
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    speeds = precision.probe(config, data, CPU)
    assert set(speeds) == {"float32", "bfloat16"} and all(s > 0 for s in speeds.values())
    assert torch.equal(torch.get_rng_state(), rng)  # the run's initialisation is not moved
    assert layers.FastPaths() == layers.FAST  # the run sets its own paths


def test_a_run_records_its_choice_and_a_resume_keeps_it(char_data, tmp_path, monkeypatch, caplog, bf16_cpu):
    monkeypatch.setattr(precision, "probe", lambda *a: {"float32": 1_000.0, "bfloat16": 2_000.0})
    monkeypatch.setattr(precision.fastpaths, "machine_load", lambda: 0.1)
    out = tmp_path / "run"
    args = ["train", "--data", str(char_data), "--out", str(out), "--no-progress", *TINY, *WIDE]
    with caplog.at_level(logging.INFO):
        assert main([*args, "--max-steps", "2"]) == 0
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("precision:")]
    assert len(said) == 1 and said[0].startswith("precision: bfloat16 (auto: tokens/s float32 1,000")
    assert runs.read_run_config(out).train.dtype == "bfloat16"  # config.json: what ran
    record = json.loads((out / "run.json").read_text())["fast_paths"]["precision"]
    speeds = {"float32": 1000.0, "bfloat16": 2000.0}
    assert record == {"dtype": "bfloat16", "source": "probe", "tok_per_s": speeds}
    # a probe now would choose float32; the resume continues in bfloat16, bit-exactly
    monkeypatch.setattr(precision, "probe", lambda *a: {"float32": 2_000.0, "bfloat16": 1_000.0})
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "empty-cache"))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main([*args, "--max-steps", "4", "--resume"]) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "not be bit-identical" in m]
    assert runs.read_run_config(out).train.dtype == "bfloat16"
    assert "steps on cpu (bfloat16)" in " ".join(messages)
