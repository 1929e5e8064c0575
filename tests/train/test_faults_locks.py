"""Folders under misuse: one writer per folder (an OS lock naming its holder), a folder of one kind
never written as another, `--resume` into a folder with no run refused, a swapped tokenizer refused
when the run is loaded, and readers that race checkpoint pruning still find a good checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from test_reliability_support import copy_until, reference_run, train_args

from lmforge import checkpoints, locks, runs
from lmforge.cli import main
from lmforge.errors import UserError


@pytest.fixture(scope="module")
def reference(char_data, tmp_path_factory):
    return reference_run(char_data, tmp_path_factory)


def _hold_lock(folder, seconds=60):
    """A separate process that takes `folder`'s lock and keeps it (until killed)."""
    code = (
        "import sys, time; from lmforge import locks; "
        f"locks.lock_folder(sys.argv[1], '--out', 'lmforge train --out {folder}'); "
        "print('locked', flush=True); time.sleep(float(sys.argv[2]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(char_data, tmp_path, capsys):
    out = tmp_path / "run"
    holder = _hold_lock(out)
    try:
        assert main(train_args(char_data, out)) == 2
        err = capsys.readouterr().err
        assert f"is in use by another lmforge process (pid {holder.pid}: lmforge train --out" in err
        assert "choose another --out" in err
        assert not (out / "config.json").exists()  # refused before anything was written
    finally:
        holder.kill()  # kill -9: the kernel releases the lock
        holder.wait()
    assert main([*train_args(char_data, out), "--max-steps", "2"]) == 0


def test_resume_beside_a_running_job_is_refused_not_a_disk_error(reference, char_data, tmp_path, capsys):
    out = copy_until(reference, tmp_path / "run", 20)
    holder = _hold_lock(out)
    try:
        assert main(train_args(char_data, out, "--resume")) == 2
        err = capsys.readouterr().err
        assert "in use by another lmforge process" in err and "free disk space" not in err
    finally:
        holder.kill()
        holder.wait()


def test_two_trainings_started_together_one_wins(char_data, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "lmforge", *train_args(char_data, out), "--max-steps", "200"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    # the loser finds the folder in use -- or, if the winner was already done, holding its run
    loser = next(err for code, err in results if code == 2)
    assert "in use by another lmforge process" in loser or "already holds a run" in loser
    steps = [r["step"] for r in runs.read_metrics(out) if "train/loss" in r]
    assert steps == sorted(set(steps))  # one run's log, no duplicated steps


def test_train_out_data_folder_is_refused_and_the_data_survives(char_data, tmp_path, capsys):
    before = sorted(p.relative_to(char_data) for p in char_data.rglob("*"))
    assert main(["train", "--data", str(char_data), "--out", str(char_data), "--no-progress"]) == 2
    assert "is a data folder" in capsys.readouterr().err
    assert sorted(p.relative_to(char_data) for p in char_data.rglob("*")) == before


def test_out_naming_a_file_is_a_one_line_error(char_data, tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("x")
    assert main(train_args(char_data, file)) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_resume_into_a_folder_with_no_run_is_an_error(char_data, tmp_path, capsys):
    assert main(train_args(char_data, tmp_path / "typo", "--resume")) == 2
    assert "holds no run to continue" in capsys.readouterr().err
    assert not (tmp_path / "typo" / "ckpt").exists()


def test_a_swapped_tokenizer_meta_is_refused_on_load(reference, tmp_path):
    out = copy_until(reference, tmp_path / "run", 30)
    meta_path = out / "tokenizer" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["token_bytes"] = [b * 4 for b in meta["token_bytes"]]  # bits-per-byte would change silently
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="not the one this run was trained with"):
        runs.load_run(out)


def test_run_json_records_a_hash_of_every_tokenizer_file(reference):
    info = json.loads((reference / "run.json").read_text())
    assert info["tokenizer_files_hash"] == runs.tokenizer_files_hash(reference / "tokenizer")
    assert runs.load_run(reference).checkpoint.name == "step_000030"


def test_a_reader_racing_pruning_finds_the_newer_checkpoint(reference, tmp_path, monkeypatch, caplog):
    """A reader lists step 30, the writer saves 31 and prunes 30 before the reader verifies it."""
    out = copy_until(reference, tmp_path / "run", 30)
    for _, path in runs.list_checkpoints(out)[1:]:
        shutil.rmtree(path)
    verify = runs.verify_checkpoint
    pruned = []

    def racing_verify(path):
        if not pruned:  # the first look: a newer checkpoint arrives and this one is pruned
            newer = path.with_name(runs.ckpt_name(31))
            shutil.copytree(path, newer)
            m = json.loads((newer / "meta.json").read_text())
            m["step"] = 31
            (newer / "meta.json").write_text(json.dumps(m))
            files = {p.name: runs.sha256_file(p) for p in newer.iterdir() if p.name != "manifest.json"}
            (newer / "manifest.json").write_text(json.dumps({"files": files}))
            runs.prune_checkpoints(out, keep_last=1, best_step=None)
            pruned.append(path)
        return verify(path)

    monkeypatch.setattr(checkpoints, "verify_checkpoint", racing_verify)  # what find_latest_good calls
    ckpt = runs.find_latest_good(out)
    assert ckpt is not None and ckpt.step == 31
    assert caplog.records == []  # a pruned checkpoint is not "damaged"


def test_lock_is_released_by_kill_9(tmp_path):
    holder = _hold_lock(tmp_path / "folder")
    with pytest.raises(UserError, match=f"pid {holder.pid}"):
        locks.lock_folder(tmp_path / "folder", "--out", "test")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    time.sleep(0.05)
    with locks.holding(tmp_path / "folder", "--out", "test"):
        pass


def test_prepare_into_a_run_folder_is_refused_and_the_run_survives(reference, tiny_corpus, tmp_path, capsys):
    out = copy_until(reference, tmp_path / "run", 30)
    before = runs.tokenizer_files_hash(out / "tokenizer")
    args = ["data", "prepare", "--source", str(tiny_corpus), "--out", str(out), "--tokenizer", "char"]
    assert main(args) == 2
    assert "is a training run folder, not a data folder" in capsys.readouterr().err
    assert runs.tokenizer_files_hash(out / "tokenizer") == before
    assert runs.load_run(out).checkpoint.name == "step_000030"


def test_two_prepares_of_one_data_folder_are_refused(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "data"
    holder = _hold_lock(out)
    try:
        args = ["data", "prepare", "--source", str(tiny_corpus), "--out", str(out), "--tokenizer", "char"]
        assert main(args) == 2
        assert f"in use by another lmforge process (pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
