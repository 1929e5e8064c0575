"""`lmforge sweep --resume` after a kill -9 in the middle of a trial, for every method; a journal whose
last record a kill cut short is repaired, one damaged elsewhere is refused by name; one sweep per
folder at a time."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap

import pytest

from lmforge.cli import main

LOG_LR = '"optim.lr" = { low = 1e-3, high = 2e-2, log = true }'
SPACE = {"grid": '"optim.lr" = { choices = [3e-3, 1e-2, 2e-2] }', "random": LOG_LR, "tpe": LOG_LR}
BASE = """
n_trials = 3
prune = false
[budget]
steps = 4
[base]
"model.n_layer" = 1
"model.n_head" = 2
"model.n_embd" = 16
"model.seq_len" = 32
"train.batch_size" = 4
"train.eval_every" = 4
"train.eval_tokens" = 256
"train.log_every" = 2
"schedule.warmup_steps" = 1
"""

# A sweep that SIGKILLs itself when its N-th trial starts training (mid-trial, journal says RUNNING).
KILLER = textwrap.dedent("""
    import os, signal, sys
    import lmforge.tune.sweep as sweep
    from lmforge.cli import main
    real, calls = sweep.train, []
    def train(*args, **kwargs):
        calls.append(1)
        if len(calls) == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    sweep.train = train
    sys.exit(main(["sweep", "--config", sys.argv[2], "--out", sys.argv[3], *sys.argv[4:]]))
""")


def write_config(tmp_path, data, method: str) -> str:
    path = tmp_path / f"{method}.toml"
    body = f'data = "{data}"\nmethod = "{method}"\n{BASE}\n[space]\n{SPACE[method]}\n'
    path.write_text(body, encoding="utf-8")
    return str(path)


def states(out) -> list[str]:
    with open(out / "results.csv", encoding="utf-8") as handle:
        return sorted(row["state"] for row in csv.DictReader(handle))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["grid", "random", "tpe"])
def test_resume_after_kill_9_mid_trial(method, char_data, tmp_path):
    config, out = write_config(tmp_path, char_data, method), tmp_path / "sw"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweep = [sys.executable, "-c", KILLER]
    killed = subprocess.run([*sweep, "2", config, str(out)], env=env, capture_output=True)
    assert killed.returncode == -9
    resumed = subprocess.run(
        [*sweep, "0", config, str(out), "--resume"], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Traceback" not in resumed.stderr
    assert "trial 001 was interrupted; it runs again" in resumed.stdout
    assert states(out) == ["complete", "complete", "complete", "interrupted"]


def test_a_journal_cut_short_by_a_kill_is_repaired_and_one_damaged_inside_refused(
    char_data, tmp_path, capsys
):
    config, out = write_config(tmp_path, char_data, "random"), tmp_path / "sw"
    assert main(["sweep", "--config", config, "--out", str(out), "--n-trials", "1"]) == 0
    journal = out / "optuna.journal"
    intact = journal.read_bytes()
    journal.write_bytes(intact + b'{"op_code": 5, "worker_id": "x", "trial_id": 1, "par')  # a kill mid-append
    assert main(["sweep", "--config", config, "--out", str(out), "--n-trials", "2", "--resume"]) == 0
    assert "dropped a half-written last record" in capsys.readouterr().err  # a warning
    assert states(out) == ["complete", "complete"]
    lines = journal.read_bytes().split(b"\n")
    journal.write_bytes(b"\n".join([lines[0], b"{garbage", *lines[1:]]))
    assert main(["sweep", "--config", config, "--out", str(out), "--n-trials", "3", "--resume"]) == 2
    assert "optuna.journal is damaged at line 2" in capsys.readouterr().err


def test_a_sweep_into_a_run_folder_is_refused(char_data, tmp_path, capsys):
    config, out = write_config(tmp_path, char_data, "random"), tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    assert main(["sweep", "--config", config, "--out", str(out)]) == 2
    assert "is a run folder" in capsys.readouterr().err
