"""`finetune --resume` continues the run as it was configured (its config.json), not from the
fine-tuning defaults, and records what the resume command changed."""

from __future__ import annotations

import json

from conftest import write_conversations
from lmforge import runs
from lmforge.cli import main


def test_finetune_resume_keeps_the_runs_own_settings(tiny_run, tmp_path, capsys):
    train = write_conversations(tmp_path / "chat.jsonl")
    out = tmp_path / "sft"
    args = ["finetune", str(tiny_run), "--task", "sft", "--train", str(train), "--out", str(out),
            "--no-progress", "train.eval_every=3", "train.eval_tokens=128", "train.ckpt_every=3"]  # fmt: skip
    assert main([*args, "--max-steps", "3", "optim.lr=5e-4"]) == 0
    # the resume names neither the learning rate nor the checkpoint interval: the run's own stay
    resume = ["finetune", str(tiny_run), "--task", "sft", "--train", str(train), "--out", str(out),
              "--no-progress", "--resume", "--max-steps", "6"]  # fmt: skip
    capsys.readouterr()
    assert main(resume) == 0
    said = capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["optim"]["lr"] == 5e-4 and config["train"]["ckpt_every"] == 3
    assert config["train"]["max_steps"] == 6 and "train.max_steps 3 -> 6" in said
    assert "resuming from step_000003" in said and runs.list_checkpoints(out)[0][0] == 6
