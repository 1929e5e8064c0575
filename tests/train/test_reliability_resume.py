"""Resume is bit-exact: kill -9 at exact points (between steps, mid-checkpoint), five kills in one run,
gradient accumulation, SIGTERM / SIGINT / a second Ctrl-C -- each compared with an uninterrupted run.

Faults come from LMFORGE_FAULT (cli/train.py) in a real `python -m lmforge train` subprocess: the
process SIGKILLs or signals itself at a named point of a given step, so nothing depends on timing.
"""

from __future__ import annotations

import pytest
from test_reliability_support import (
    STEPS,
    all_checkpoints_verify,
    assert_same_run,
    cli,
    cli_many,
    last_logged_step,
    losses,
    meta,
    reference_run,
    train_args,
)

from lmforge import runs
from lmforge.cli import main

# Five kill -9 in one run (ckpt_every=5): between steps, right after a checkpoint, and twice in the
# middle of writing one. (point, step, checkpoint the next run must resume from, steps it redoes)
KILLS = [
    ("step", 7, 5, 2),  # between steps: steps 6-7 are redone
    ("ckpt_before_rename", 10, 5, 5),  # step_10 complete but not renamed: step_5 is used
    ("ckpt_data_written", 15, 10, 5),  # step_15's data written, no manifest yet: step_10 is used
    ("step", 20, 20, 0),  # right after a checkpoint: nothing is lost
    ("step", 24, 20, 4),
]


@pytest.fixture(scope="module")
def reference(char_data, tmp_path_factory):
    return reference_run(char_data, tmp_path_factory)


@pytest.fixture(scope="module")
def five_kills(char_data, tmp_path_factory):
    """One run killed five times, resumed after each kill; what each stage saw is kept."""
    out = tmp_path_factory.mktemp("five_kills") / "run"
    stages = []
    for point, step, _, _ in KILLS:
        before = sorted(p.name for p in (out / "ckpt").iterdir()) if (out / "ckpt").is_dir() else []
        resume = ["--resume"] if (out / "config.json").is_file() else []  # the first start is fresh
        proc = cli([*train_args(char_data, out, *resume)], fault=f"{point}:{step}")
        after = sorted(p.name for p in (out / "ckpt").iterdir())
        stages.append({"proc": proc, "before": before, "after": after, "last_step": last_logged_step(out)})
    assert main(train_args(char_data, out, "--resume")) == 0
    return out, stages


@pytest.mark.slow
def test_kill9_between_steps_and_mid_checkpoint_then_resume_is_bit_exact(five_kills, reference):
    out, stages = five_kills
    for (_, step, _, _), stage in zip(KILLS, stages, strict=True):
        assert stage["proc"].returncode == -9, stage["proc"].stderr[-2000:]  # really killed
        assert stage["last_step"] == step  # ... at exactly that step
    # each resume used the newest intact checkpoint
    for i in range(1, len(KILLS)):
        assert f"resuming from {runs.ckpt_name(KILLS[i - 1][2])}" in stages[i]["proc"].stdout
    assert_same_run(out, reference)  # identical per-step losses and final weights
    assert meta(out)["skipped_steps"] == 0 and all_checkpoints_verify(out)


@pytest.mark.slow
def test_kill9_while_writing_a_checkpoint_keeps_the_previous_one(five_kills):
    _, stages = five_kills
    for i, (point, step, resume_from, _) in enumerate(KILLS):
        if not point.startswith("ckpt_"):
            continue
        # the kill left the new checkpoint as a temporary folder; the previous one is intact
        assert f".tmp-{runs.ckpt_name(step)}" in stages[i]["after"]
        assert runs.ckpt_name(step) not in stages[i]["after"]
        assert runs.ckpt_name(resume_from) in stages[i]["after"]
        # the next run removed the leftover and resumed from the previous checkpoint
        stdout = stages[i + 1]["proc"].stdout
        assert f"removed unfinished checkpoint .tmp-{runs.ckpt_name(step)}" in stdout
        assert f"resuming from {runs.ckpt_name(resume_from)}" in stdout


@pytest.mark.slow
def test_five_kills_replay_and_skip_no_batch(five_kills, reference):
    out, _ = five_kills
    got = losses(out)
    # one record per step 1..30, each with the uninterrupted run's batch fingerprint and loss
    assert [s for s, _, _ in got] == list(range(1, STEPS + 1))
    assert [crc for _, _, crc in got] == [crc for _, _, crc in losses(reference)]
    assert len({crc for _, _, crc in got}) == STEPS  # the fingerprints do tell batches apart
    assert sum(redone for *_, redone in KILLS) == 16 and max(r for *_, r in KILLS) <= 5  # <= ckpt_every


@pytest.mark.slow
def test_kill9_with_gradient_accumulation_of_4(char_data, tmp_path_factory, tmp_path):
    accum = ["train.batch_tokens=512"]  # 4 sequences x 32 tokens x 4 micro-steps
    reference = reference_run(char_data, tmp_path_factory, *accum)
    assert all(r["tokens"] == 512 * r["step"] for r in runs.read_metrics(reference) if "train/loss" in r)
    out = tmp_path / "run"
    proc = cli(train_args(char_data, out, *accum), fault="step:13")
    assert proc.returncode == -9 and last_logged_step(out) == 13 and "x 4 micro-steps" in proc.stdout
    assert main(train_args(char_data, out, *accum, "--resume")) == 0
    assert_same_run(out, reference)


@pytest.fixture(scope="module")
def signalled(char_data, tmp_path_factory):
    """SIGTERM, SIGINT, and a second Ctrl-C in the middle of the save the first one asked for."""
    root = tmp_path_factory.mktemp("signals")
    faults = {
        "SIGTERM": "sigterm:12",
        "SIGINT": "sigint:12",
        "double": "sigint:12,ckpt_data_written:13:INT",
    }
    results = cli_many([(train_args(char_data, root / name), fault) for name, fault in faults.items()])
    return {name: (root / name, result) for name, result in zip(faults, results, strict=True)}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_signal_saves_at_the_next_step_boundary_and_exits_cleanly(name, signalled, reference, char_data):
    out, (code, stdout, stderr) = signalled[name]
    assert code == 0, stderr[-2000:]
    assert f"{name}: stopped at step 13 with its checkpoint on disk" in stdout
    assert f"stopped by {name}" in stdout
    # no step lost: the signal came during step 13, and step 13 is both logged and saved
    assert last_logged_step(out) == 13 and runs.list_checkpoints(out)[0][0] == 13
    assert all_checkpoints_verify(out)
    assert main(train_args(char_data, out, "--resume")) == 0
    assert_same_run(out, reference)


@pytest.mark.slow
def test_second_ctrl_c_exits_at_once_without_corrupting(signalled, reference, char_data):
    out, (code, stdout, stderr) = signalled["double"]
    assert code == 130 and stderr.strip().endswith("interrupted") and "Traceback" not in stderr
    # the save of step 13 was abandoned half-way; it left nothing behind, step_10 still verifies
    assert all_checkpoints_verify(out) and runs.list_checkpoints(out)[0][0] == 10
    assert main(train_args(char_data, out, "--resume")) == 0
    assert_same_run(out, reference)
