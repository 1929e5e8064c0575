"""One SIGTERM on a step that cannot finish soon: the process still leaves, STOP_GRACE_SECONDS after
the signal (a scheduler or `timeout` sends one signal, and a hung step must not outlive it by hours),
and the last checkpoint on disk stays whole."""

from __future__ import annotations

import os
import signal
import time

from test_reliability_support import train_args

from lmforge import runs
from lmforge.cli import main
from lmforge.train import stop
from lmforge.train.loop import StopFlag


def test_one_sigterm_stops_a_step_that_cannot_finish_after_the_grace():
    began = time.monotonic()
    try:
        with StopFlag(grace=0.5) as flag:
            os.kill(os.getpid(), signal.SIGTERM)
            assert flag.reason == "SIGTERM"
            time.sleep(12)  # "a step that cannot finish"
    except KeyboardInterrupt:
        pass
    assert time.monotonic() - began < 10
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL  # the deadline's handler is put back


def test_a_clean_stop_within_the_grace_cancels_the_deadline():
    with StopFlag(grace=0.3) as flag:
        os.kill(os.getpid(), signal.SIGTERM)
    assert flag.reason == "SIGTERM"
    time.sleep(0.6)  # no alarm goes off after the block: the process would die of SIGALRM


def test_train_leaves_a_stalled_step_after_one_sigterm(char_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(stop, "STOP_GRACE_SECONDS", 1.0)
    monkeypatch.setenv("LMFORGE_FAULT", "sigterm:7,slow:7:120")  # step 7 stalls after the signal
    out = tmp_path / "run"
    began = time.monotonic()
    assert main(train_args(char_data, out, "train.ckpt_every=5")) == 130
    assert time.monotonic() - began < 60
    assert "interrupted" in capsys.readouterr().err
    checkpoint = runs.find_latest_good(out)
    assert (
        checkpoint is not None and checkpoint.step == 5
    )  # the last save is whole; only the stalled step is lost
