"""train.compile: a machine where torch.compile cannot work trains eagerly, with one warning line.

Inductor writes C++ for CPU graphs and needs a compiler ($CXX, else g++). Without one, or with one
that fails, the run must not end in a compiler traceback: it says so once and trains eagerly.
"""

from __future__ import annotations

import logging

import pytest
import torch

from conftest import TINY
from lmforge import runs
from lmforge.cli import main
from lmforge.train.engine import CompiledOrEager

FAKE_GXX = """#!/bin/sh
# answers inductor's `--version` like g++, then refuses to build anything
if [ "$1" = "--version" ]; then echo "g++ (fake) 12.2.0"; exit 0; fi
echo "fake g++: refusing to compile" >&2
exit 1
"""


@pytest.fixture
def inductor(tmp_path, monkeypatch):
    """Inductor's config, with a cache of this test's own (no graph compiled earlier is reused).
    Its compiler is set on the config: $CXX is read once, when inductor is first imported."""
    from torch._inductor import config

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor-cache"))
    with config.patch(force_disable_caches=True, compile_threads=1):  # no pool of worker processes
        yield config


def _train(char_data, out, *extra):
    args = ["train", "--data", str(char_data), "--out", str(out), "--no-progress", "--max-steps", "3"]
    return main([*args, *TINY, "train.eval_every=3", "train.ckpt_every=3", *extra])


def _val_losses(run):
    return [m["val/loss"] for m in runs.read_metrics(run) if "val/loss" in m]


def _compile_warnings(caplog):
    return [
        r.getMessage() for r in caplog.records if r.name.startswith("lmforge") and "compile" in r.getMessage()
    ]


def test_no_compiler_warns_at_once_and_trains_eagerly(char_data, tmp_path, monkeypatch, inductor, caplog):
    with inductor.patch({"cpp.cxx": (None, str(tmp_path / "no-such-g++"))}), caplog.at_level(logging.WARNING):
        assert _train(char_data, tmp_path / "run", "train.compile=true") == 0
    warnings = _compile_warnings(caplog)
    assert (
        len(warnings) == 1 and "needs a working C++ compiler" in warnings[0] and "no-such-g++" in warnings[0]
    )
    assert len(_val_losses(tmp_path / "run")) == 1


def test_a_compiler_that_fails_falls_back_to_the_eager_step(
    char_data, tmp_path, monkeypatch, inductor, caplog
):
    assert _train(char_data, tmp_path / "eager", "train.compile=false") == 0
    fake = tmp_path / "fake-g++"
    fake.write_text(FAKE_GXX)
    fake.chmod(0o755)
    with inductor.patch({"cpp.cxx": (None, str(fake))}), caplog.at_level(logging.WARNING):
        assert _train(char_data, tmp_path / "broken", "train.compile=true") == 0
    warnings = _compile_warnings(caplog)
    assert len(warnings) == 1 and "torch.compile failed" in warnings[0], warnings  # once, not per step
    # the failed compiled call computed nothing: the run is the eager run, step for step
    assert _val_losses(tmp_path / "broken") == _val_losses(tmp_path / "eager")


def test_unwrap_finds_the_model_under_any_order_of_wrappers():
    model = torch.nn.Linear(2, 2)
    wrapped = CompiledOrEager(model, main=False)
    assert runs.unwrap(wrapped) is model

    class Outer(torch.nn.Module):  # as DistributedDataParallel holds its module
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    assert runs.unwrap(Outer(wrapped)) is model
    assert runs.unwrap(model) is model


@pytest.mark.slow
def test_a_compiled_run_trains_as_the_eager_one_does(char_data, tmp_path, inductor, caplog):
    """With the machine's own compiler: the compiled graphs are the model's arithmetic, reordered."""
    if _missing_compiler_here():
        pytest.skip("no C++ compiler on this machine for inductor")
    assert _train(char_data, tmp_path / "eager", "train.compile=false") == 0
    with caplog.at_level(logging.WARNING):
        assert _train(char_data, tmp_path / "compiled", "train.compile=true") == 0
    assert _compile_warnings(caplog) == []  # no fallback was taken,
    assert any((tmp_path / "inductor-cache").rglob("*.so"))  # and inductor built the step's kernels
    eager, compiled = _val_losses(tmp_path / "eager"), _val_losses(tmp_path / "compiled")
    assert compiled == pytest.approx(eager, abs=2e-3)


def _missing_compiler_here():
    from lmforge.train.engine import _missing_cpp_compiler

    return _missing_cpp_compiler()
