"""A resume is exact, or refused, or warned about with its reason: the environment bit-exactness
depends on is recorded in every checkpoint and reproduced (threads) or named (dtype, ...); settings
changed on the resume command are recorded; a folder with no run, or a finished run, is refused with
the flag that would help."""

from __future__ import annotations

import json

from test_reliability_support import STEPS, assert_same_run, copy_until, meta, reference_run, train_args

from lmforge.cli import main


def test_checkpoints_record_what_exactness_depends_on(char_data, tmp_path_factory):
    env = meta(reference_run(char_data, tmp_path_factory))["environment"]
    assert env["threads"] == 1 and env["dtype"] == "float32" and env["world_size"] == 1
    assert env["torch"] and env["cpu_capability"] and env["device"] == "cpu"


def test_resume_reuses_the_recorded_thread_count_and_stays_bit_exact(char_data, tmp_path_factory, tmp_path):
    reference = reference_run(char_data, tmp_path_factory)
    out = copy_until(reference, tmp_path / "run", 15)
    # the machine's default is asked for now; the checkpoint's 1 thread is what keeps it exact
    assert main(train_args(char_data, out, "--resume", "train.threads=0")) == 0
    assert meta(out)["environment"]["threads"] == 1
    assert_same_run(out, reference)
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["threads"] == 0  # the override is recorded


def test_a_changed_dtype_or_thread_count_is_named(char_data, tmp_path_factory, tmp_path, capsys):
    reference = reference_run(char_data, tmp_path_factory)
    out = copy_until(reference, tmp_path / "run", 25)
    capsys.readouterr()
    assert main(train_args(char_data, out, "--resume", "train.dtype=bfloat16", "train.threads=2")) == 0
    printed = capsys.readouterr()
    said = printed.out + printed.err
    assert "will not be bit-identical" in printed.err  # a warning
    assert "thread count 1 -> 2" in said and "train.dtype float32 -> bfloat16" in said
    assert "train.dtype 'float32' -> 'bfloat16'" in said  # ... and recorded in config.json
    assert json.loads((out / "config.json").read_text())["train"]["dtype"] == "bfloat16"


def test_an_unchanged_resume_says_nothing_about_exactness(char_data, tmp_path_factory, tmp_path, capsys):
    out = copy_until(reference_run(char_data, tmp_path_factory), tmp_path / "run", 25)
    capsys.readouterr()
    assert main(train_args(char_data, out, "--resume")) == 0
    said = capsys.readouterr().out
    assert "bit-identical" not in said and "settings changed" not in said


def test_resume_into_a_folder_with_no_run_is_an_error(char_data, tmp_path, capsys):
    assert main(train_args(char_data, tmp_path / "typo", "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --resume:") and "holds no run" in err and "\n" not in err
    assert not (tmp_path / "typo" / "ckpt").exists()


def test_a_finished_run_is_extended_or_refused_by_name(char_data, tmp_path_factory, tmp_path, capsys):
    out = copy_until(reference_run(char_data, tmp_path_factory), tmp_path / "run", STEPS)
    assert main(train_args(char_data, out, "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert f"already finished at step {STEPS}" in err and "--max-steps larger than" in err
    assert main([*train_args(char_data, out, "--resume"), "--max-steps", str(STEPS + 5)]) == 0
    assert meta(out)["step"] == STEPS + 5
    time_run = copy_until(reference_run(char_data, tmp_path_factory), tmp_path / "timed", STEPS)
    assert main([*train_args(char_data, time_run, "--resume"), "--time-budget", "0.01"]) == 2
    assert "already spent its time budget" in capsys.readouterr().err
    assert json.loads((time_run / "config.json").read_text())["train"]["time_budget"] == 0  # unrecorded
