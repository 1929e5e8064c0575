"""The default recipes (recipes.py): what `lmforge finetune` applies when the command names nothing --
per task and method -- and that flags and overrides still win."""

from __future__ import annotations

import json
import random

import pytest

from lmforge.cli import main
from lmforge.finetune.recipes import RECIPES, recipe, steps_for
from lmforge.finetune.tasks import TASK_DEFAULTS

QUIET = ["--no-progress", "train.eval_every=1000", "train.ckpt_every=1000", "train.threads=1"]


def write_rows(path, task: str, n: int = 40):
    rng = random.Random(0)
    rows = []
    for i in range(n):
        words = [rng.choice(["to", "be", "or", "not"]) for _ in range(4)]
        if task == "ner":
            rows.append({"tokens": [*words, "Hamlet"], "tags": ["O"] * 4 + ["B-PER"]})
        else:
            rows.append({"text": " ".join(words), "label": "a" if i % 2 else "b"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def finetune(base, task, train, out, *extra) -> tuple[dict, dict]:
    args = ["finetune", str(base), "--task", task, "--train", str(train), "--out", str(out), *QUIET, *extra]
    assert main(args) == 0, args
    config = json.loads((out / "config.json").read_text())
    return config, json.loads((out / "task.json").read_text())


def test_steps_for_rounds_up_and_never_gives_zero():
    assert steps_for(2, 100, 16) == 13  # 200 rows in batches of 16
    assert steps_for(1, 32, 16) == 2
    assert steps_for(0.01, 10, 16) == 1
    assert steps_for(2, 100, 16, min_steps=20) == 20 and steps_for(2, 1000, 16, min_steps=20) == 125


def test_every_classify_and_ner_method_has_a_tuned_recipe():
    for kind in ("classify", "ner"):
        for method in ("full", "lora", "probe"):
            rec = RECIPES[(kind, method)]
            assert rec.lr > 0 and rec.epochs and rec.epochs > 0, (kind, method, rec)
    assert recipe("translate", "full").epochs is None  # translation keeps train.max_steps


@pytest.mark.slow  # six short runs of the recipe's 100-step floor
@pytest.mark.parametrize(
    "task, method, extra",
    [
        ("classify", "full", []),
        ("sentiment", "lora", ["--lora-rank", "2"]),
        ("classify", "probe", ["--freeze-backbone"]),
        ("ner", "full", []),
        ("ner", "lora", ["--lora-rank", "2"]),
        ("ner", "probe", ["--freeze-backbone"]),
    ],
)
def test_a_command_without_settings_gets_the_recipe(tiny_run, tmp_path, task, method, extra):
    train = write_rows(tmp_path / "train.jsonl", task)
    config, info = finetune(tiny_run, task, train, tmp_path / "run", *extra)
    kind = "ner" if task == "ner" else "classify"
    rec = recipe(kind, method)
    n_train = info["examples"]["train"]
    steps = (
        steps_for(rec.epochs, n_train, 16, rec.min_steps) if rec.epochs else TASK_DEFAULTS["train.max_steps"]
    )
    assert info["method"] == method and info["epochs"] == rec.epochs
    assert config["optim"]["lr"] == rec.lr and config["train"]["max_steps"] == steps
    assert config["train"]["batch_size"] == TASK_DEFAULTS["train.batch_size"]
    if kind == "classify":
        assert info["pooling"] == config["model"]["pooling"] == rec.pooling  # a causal backbone
    else:
        assert info["subtoken"] == rec.subtoken


def test_flags_and_overrides_win_over_the_recipe(tiny_run, tmp_path, capsys):
    train = write_rows(tmp_path / "train.jsonl", "classify")
    other = "mean" if recipe("classify", "full").pooling != "mean" else "last"
    config, info = finetune(tiny_run, "classify", train, tmp_path / "a", "--epochs", "1", "--pooling", other)
    assert config["train"]["max_steps"] == steps_for(1, info["examples"]["train"], 16) and info["epochs"] == 1
    assert info["pooling"] == other
    config, info = finetune(tiny_run, "classify", train, tmp_path / "b", "--max-steps", "3", "optim.lr=5e-4")
    assert config["train"]["max_steps"] == 3 and config["optim"]["lr"] == 5e-4 and info["epochs"] is None
    config, info = finetune(tiny_run, "ner", write_rows(tmp_path / "n.jsonl", "ner"), tmp_path / "c",
                            "train.max_steps=2", "--subtoken", "first")  # fmt: skip
    assert config["train"]["max_steps"] == 2 and info["subtoken"] == "first"
    capsys.readouterr()
    args = [
        "finetune",
        str(tiny_run),
        "--task",
        "classify",
        "--train",
        str(train),
        "--out",
        str(tmp_path / "d"),
    ]
    assert main([*args, *QUIET, "--epochs", "1", "--max-steps", "3"]) == 2
    err = capsys.readouterr().err
    assert "--epochs and --max-steps" in err and "Traceback" not in err
    assert main([*args, *QUIET, "--epochs", "0"]) == 2
    assert "--epochs (0.0) must be > 0" in capsys.readouterr().err


def test_a_resumed_run_keeps_its_own_pooling_not_todays_recipe(tiny_run, tmp_path):
    train = write_rows(tmp_path / "train.jsonl", "classify")
    other = "mean" if recipe("classify", "full").pooling != "mean" else "last"
    out = tmp_path / "run"
    finetune(tiny_run, "classify", train, out, "--pooling", other, "--max-steps", "3")
    config, info = finetune(tiny_run, "classify", train, out, "--resume", "--max-steps", "5")
    assert config["train"]["max_steps"] == 5 and config["model"]["pooling"] == info["pooling"] == other
