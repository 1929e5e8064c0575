"""`lmforge sweep` over fine-tuning (verb = "finetune"): each trial an `lmforge finetune` run, judged by
the task's validation metric (maximised) beside its baseline; and the sweep file's finetune mistakes."""

from __future__ import annotations

import csv
import json
import random

import pytest

from lmforge.cli import main

WORDS = ["to", "be", "or", "not", "the"]


def classify_rows(n: int, seed: int) -> list[dict]:
    """Filler words and one keyword that decides the label: learnable in a few dozen steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(3)]
        words.insert(rng.randrange(4), "sleep" if i % 2 else "die")
        rows.append({"text": " ".join(words), "label": "sleepy" if i % 2 else "deadly"})
    return rows


@pytest.fixture
def task_folder(tmp_path):
    """A folder as `lmforge data tasks` writes it: train.jsonl and val.jsonl."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    for name, rows in (("train", classify_rows(200, 0)), ("val", classify_rows(40, 1))):
        text = "".join(json.dumps(r) + "\n" for r in rows)
        (folder / f"{name}.jsonl").write_text(text, encoding="utf-8")
    return folder


def write_sweep(tmp_path, body: str) -> str:
    path = tmp_path / "sweep.toml"
    path.write_text(body, encoding="utf-8")
    return str(path)


SWEEP = """
verb = "finetune"
method = "grid"
prune = false

[finetune]
task = "classify"

[budget]
steps = 40

[base]
"train.eval_every" = 20
"train.ckpt_every" = 1000
"train.threads" = 1

[space]
"optim.lr" = { choices = [1e-7, 3e-3] }
"""


@pytest.mark.slow  # fine-tuning trials
def test_a_finetune_sweep_ranks_trials_by_the_task_metric_beside_its_baseline(
    tiny_run, task_folder, tmp_path, capsys
):
    config, out = write_sweep(tmp_path, SWEEP), tmp_path / "sw"
    args = ["sweep", "--config", config, "--out", str(out), "--data", str(task_folder)]
    assert main([*args, "--backbone", str(tiny_run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["complete"] == 2 and summary["best"]["trial"] in (0, 1)
    with open(out / "results.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    # sorted by macro-F1, highest first: the learning rate that learns, then the one that cannot move
    assert [float(r["optim.lr"]) for r in rows] == [3e-3, 1e-7]
    first, last = (float(r["val_macro_f1"]) for r in rows)
    baseline = float(rows[0]["baseline"])
    assert baseline == pytest.approx(1 / 3)  # majority class of a balanced two-class set: F1 2/3 and 0
    assert first >= baseline + 0.3 and first > last, rows
    assert {"val_accuracy", "val_loss", "epochs", "lr"} <= set(rows[0])
    assert float(rows[0]["epochs"]) == pytest.approx(40 * 16 / 200)
    # each trial is an ordinary task run; the best one's command line repeats it
    for row in rows:
        info = json.loads((tmp_path / "sw" / "trials" / f"{int(row['trial']):03d}" / "task.json").read_text())
        assert info["task"] == "classify" and info["examples"] == {"train": 200, "val": 40}
    best = (out / "best.txt").read_text()
    assert f"lmforge finetune {tiny_run} --task classify" in best and "optim.lr=0.003" in best
    assert "train.max_steps=40" in best and "baseline" in best and "majority class" in best


@pytest.mark.slow  # fine-tuning trials
def test_finetune_options_are_searched_as_finetune_keys(tiny_run, task_folder, tmp_path, capsys):
    body = SWEEP.replace(
        '"optim.lr" = { choices = [1e-7, 3e-3] }', '"finetune.pooling" = { choices = ["mean"] }'
    )
    body = body.replace("[budget]\nsteps = 40\n", "").replace(
        'task = "classify"', 'task = "classify"\nepochs = 1'
    )
    config, out = write_sweep(tmp_path, body), tmp_path / "sw"
    args = ["sweep", "--config", config, "--out", str(out), "--data", str(task_folder)]
    assert main([*args, "--backbone", str(tiny_run)]) == 0
    run = out / "trials" / "000"
    assert json.loads((run / "task.json").read_text())["pooling"] == "mean"
    assert json.loads((run / "config.json").read_text())["train"]["max_steps"] == 13  # ceil(200 / 16)
    assert "--epochs 1 --pooling mean" in (out / "best.txt").read_text()


@pytest.mark.parametrize(
    "change, message",
    [
        (('task = "classify"', 'task = "classify"\nrank = 4'), "unknown key(s) ['rank']"),
        (('task = "classify"', 'task = "parse"'), "task 'parse' is not one of"),
        (("[space]", '[space]\n"model.n_embd" = { choices = [8] }'), "takes the model and data from"),
        (
            ("[space]", '[space]\n"finetune.pooling" = { choices = ["max"] }'),
            "'pooling' = 'max' is not one of",
        ),
        (("[space]", '[space]\n"finetune.epochs" = { choices = [1, 2] }'), "both set a trial's length"),
        (("prune = false", 'prune = false\nmetric = "val/f1"'), "does not fit --task classify"),
        (("[space]", '[space]\n"optim.lr" = { choices = [-1.0] }'), "'optim.lr' = -1.0"),
        (('verb = "finetune"', 'verb = "serve"'), "verb 'serve' is not one of"),
    ],
)
def test_finetune_sweep_mistakes_fail_before_any_trial(
    tiny_run, task_folder, tmp_path, capsys, change, message
):
    body = SWEEP.replace(*change)
    if "optim.lr" in change[1]:
        body = body.replace('"optim.lr" = { choices = [1e-7, 3e-3] }\n', "", 1)
    config, out = write_sweep(tmp_path, body), tmp_path / "sw"
    code = main(
        [
            "sweep",
            "--config",
            config,
            "--out",
            str(out),
            "--data",
            str(task_folder),
            "--backbone",
            str(tiny_run),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (out / "trials").exists()


def test_a_missing_backbone_or_task_data_is_one_line(tiny_run, tmp_path, capsys):
    config = write_sweep(tmp_path, SWEEP)
    for extra, message in (
        (["--data", str(tmp_path), "--backbone", str(tiny_run)], "has no train.jsonl"),
        (["--data", str(tmp_path / "x.jsonl"), "--backbone", str(tiny_run)], "does not exist"),
        (["--data", str(tmp_path)], "needs backbone"),
        (["--data", str(tmp_path), "--backbone", str(tmp_path / "nope")], "--backbone"),
    ):
        assert main(["sweep", "--config", config, "--out", str(tmp_path / "sw"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)


def test_a_finetune_table_in_a_training_sweep_is_refused(char_data, tmp_path, capsys):
    body = SWEEP.replace('verb = "finetune"\n', "").replace('task = "classify"', 'task = "classify"')
    config = write_sweep(tmp_path, body)
    assert main(["sweep", "--config", config, "--out", str(tmp_path / "sw"), "--data", str(char_data)]) == 2
    assert 'add verb = "finetune"' in capsys.readouterr().err
