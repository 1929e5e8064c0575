"""`lmforge sweep`: trials as run folders, results and best.toml, resume, pruning, and every bad input."""

from __future__ import annotations

import csv

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

import lmforge.tune.sweep as sweep_module
from lmforge.cli import main
from lmforge.config import load_config

BASE = """
[budget]
steps = 20

[base]
"model.n_layer" = 1
"model.n_head" = 2
"model.n_embd" = 16
"model.seq_len" = 32
"train.batch_size" = 4
"train.eval_every" = 5
"train.eval_tokens" = 256
"train.log_every" = 5
"schedule.warmup_steps" = 2
"""


def write_sweep(tmp_path, data, body: str, name: str = "sweep.toml", base: str = "", steps: int = 20):
    path = tmp_path / name
    text = f'data = "{data}"\n{body}\n{BASE}{base}'.replace("steps = 20", f"steps = {steps}", 1)
    path.write_text(text, encoding="utf-8")
    return str(path)


def rows(out) -> list[dict]:
    with open(out / "results.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_two_trial_grid_sweep_resumes_without_redoing_a_finished_trial(char_data, tmp_path, monkeypatch):
    body = 'method = "grid"\nprune = false\nn_trials = 2\n[space]\n"optim.lr" = { choices = [3e-3, 1e-2] }'
    config, out = write_sweep(tmp_path, char_data, body), tmp_path / "sw"
    calls = []
    real_train = sweep_module.train

    def interrupted_after_one(config, data, run_dir, **kw):  # Ctrl-C during the second trial
        calls.append(run_dir.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(config, data, run_dir, **kw)

    monkeypatch.setattr(sweep_module, "train", interrupted_after_one)
    assert main(["sweep", "--config", config, "--out", str(out)]) == 130
    assert [r["state"] for r in rows(out)] == ["complete", "interrupted"]
    assert main(["sweep", "--config", config, "--out", str(out)]) == 2  # needs --resume

    calls.clear()
    monkeypatch.setattr(
        sweep_module, "train", lambda *a, **kw: calls.append(a[2].name) or real_train(*a, **kw)
    )
    assert main(["sweep", "--config", config, "--out", str(out), "--resume"]) == 0
    assert calls == ["002"]  # trial 000 is not redone; the interrupted 001 runs again as 002
    results = rows(out)
    assert [r["state"] for r in results] == ["complete", "complete", "interrupted"]
    assert sorted(float(r["optim.lr"]) for r in results[:2]) == [3e-3, 1e-2]
    assert float(results[0]["val_bpb"]) <= float(results[1]["val_bpb"])  # sorted by bpb
    for name in ("results.md", "params.png", "history.png", "best.toml"):
        assert (out / name).is_file()
    best = load_config(out / "best.toml", ["train.max_steps=3"], vocab_size=None)  # ready to train
    assert best.optim.lr == float(results[0]["optim.lr"]) and best.model.n_embd == 16
    assert main(["sweep", "--config", config, "--out", str(out), "--resume"]) == 0  # nothing left to do
    assert calls == ["002"]


def test_a_bad_trial_is_pruned_at_its_first_evaluation(char_data, tmp_path):
    body = (
        'method = "random"\nn_trials = 2\nprune_startup_trials = 1\n'
        'enqueue = [{ "optim.lr" = 1e-2 }, { "optim.lr" = 1e-6 }]\n'
        '[space]\n"optim.lr" = { low = 1e-6, high = 1e-2, log = true }'
    )
    out = tmp_path / "sw"
    assert main(["sweep", "--config", write_sweep(tmp_path, char_data, body), "--out", str(out)]) == 0
    by_lr = {float(r["optim.lr"]): r for r in rows(out)}
    assert by_lr[1e-2]["state"] == "complete" and by_lr[1e-2]["steps"] == "20"
    assert by_lr[1e-6]["state"] == "pruned" and by_lr[1e-6]["steps"] == "5"


def test_crashing_and_diverging_trials_are_recorded_as_failed(char_data, tmp_path, monkeypatch):
    body = 'method = "grid"\nprune = false\n[space]\n"optim.lr" = { choices = [3e-3, 1e-2, 2e-2] }'
    out = tmp_path / "sw"
    real_train = sweep_module.train

    def flaky(config, data, run_dir, **kw):
        if config.optim.lr == 1e-2:
            raise RuntimeError("simulated crash")
        result = real_train(config, data, run_dir, **kw)
        if config.optim.lr == 2e-2:
            result.final_val["bpb"] = float("nan")  # as a diverged run would end
        return result

    monkeypatch.setattr(sweep_module, "train", flaky)
    assert main(["sweep", "--config", write_sweep(tmp_path, char_data, body), "--out", str(out)]) == 0
    by_lr = {float(r["optim.lr"]): r for r in rows(out)}
    assert by_lr[3e-3]["state"] == "complete"
    assert by_lr[1e-2]["state"] == "failed" and "simulated crash" in by_lr[1e-2]["error"]
    assert by_lr[2e-2]["state"] == "failed" and "diverged" in by_lr[2e-2]["error"]


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ('"optim.lrr" = { choices = [1e-3] }', "did you mean 'optim.lr'"),
        ('"model.n_layer" = { choices = [] }', "choices is empty"),
        ('"optim.lr" = { low = 1e-2, high = 1e-3 }', "is empty; low must be < high"),
        ('"optim.lr" = { low = 0.0, high = 1e-3, log = true }', "log range needs low > 0"),
        ('"optim.lr" = { low = 1e-3, high = 20.0 }', "optim.lr"),
        ('"model.n_layer" = { choices = ["two"] }', "must be int"),
        ('"data.weights.nope" = { choices = [1.0] }', "no source 'nope'"),
        ('"optim.lr" = { low = 1e-3, hihg = 1e-2 }', "unknown field"),
        ("", "no [space]"),
    ],
)
def test_bad_search_spaces_fail_before_any_trial(char_data, tmp_path, capsys, space, message):
    out = tmp_path / "sw"
    config = write_sweep(tmp_path, char_data, f"[space]\n{space}")
    assert main(["sweep", "--config", config, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "trials").exists()


def test_bad_sweep_settings(char_data, tmp_path, capsys):
    space = '[space]\n"optim.lr" = { choices = [1e-3] }'
    for body, message in [
        (f'method = "bayes"\n{space}', "method 'bayes'"),
        (f"n_trials = 0\n{space}", "n_trials"),
        (f"colour = 1\n{space}", "unknown sweep setting"),
    ]:
        config = write_sweep(tmp_path, char_data, body)
        assert main(["sweep", "--config", config, "--out", str(tmp_path / "sw")]) == 2
        assert message in capsys.readouterr().err
    missing = write_sweep(tmp_path, tmp_path / "no-data", space)
    assert main(["sweep", "--config", missing, "--out", str(tmp_path / "sw")]) == 2
    assert main(["sweep", "--config", str(tmp_path / "absent.toml"), "--out", str(tmp_path / "sw")]) == 2


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """Data from two sources that share no letters: lowercase 'verse' and uppercase-and-digit 'codes'."""
    import random

    folder = tmp_path_factory.mktemp("mix")
    rng = random.Random(1)
    for name, letters in (("verse", "abcdefgh"), ("codes", "XYZ0123")):
        src = folder / name
        src.mkdir()
        for i in range(10):
            lines = ["".join(rng.choice(letters + "  ") for _ in range(60)) for _ in range(30)]
            (src / f"{name}_{i:02d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = folder / "data"
    args = ["data", "prepare", "--source", str(folder / "verse"), "--source", str(folder / "codes")]
    assert main([*args, "--out", str(out), "--tokenizer", "char", "--split", "tail", "--json"]) == 0
    return out


def test_a_mix_sweep_picks_the_weights_for_one_sources_text(two_sources, tmp_path):
    # The target is the verse's validation text alone: the trial that trains on verse must win,
    # though the mixture's own val/bpb (both sources) could rank the trials either way.
    body = (
        'method = "grid"\nmetric = "val/bpb@verse"\nn_trials = 2\n'
        '[space]\n"data.weights.verse" = { choices = [0.0, 1.0] }'
    )
    extra = '"data.weights.codes" = 1.0\n"optim.lr" = 1e-2\n'
    config = write_sweep(tmp_path, two_sources, body, base=extra, steps=150)
    out = tmp_path / "sw"
    assert main(["sweep", "--config", config, "--out", str(out)]) == 0
    results = rows(out)
    assert list(results[0])[2:6] == ["val_bpb@verse", "val_bpb", "val_loss", "val_bpb@codes"]
    assert [float(r["data.weights.verse"]) for r in results] == [1.0, 0.0]
    verse = [float(r["val_bpb@verse"]) for r in results]
    assert verse[0] < verse[1] - 0.5  # never having seen a verse letter costs bits on every one
    for r in results:
        mean = (float(r["val_bpb@verse"]) + float(r["val_bpb@codes"])) / 2
        assert float(r["val_bpb@mean"]) == pytest.approx(mean)
    best = load_config(out / "best.toml", [], vocab_size=None)
    assert best.data.weights == {"codes": 1.0, "verse": 1.0}
    assert "val_bpb@verse" in (out / "results.md").read_text()

    # For the codes' text the winner is the mix without verse, which the mixture's val/bpb ranks last.
    config = write_sweep(tmp_path, two_sources, body.replace("@verse", "@codes"), base=extra, steps=150)
    assert main(["sweep", "--config", config, "--out", str(tmp_path / "sw2")]) == 0
    results = rows(tmp_path / "sw2")
    assert [float(r["data.weights.verse"]) for r in results] == [0.0, 1.0]
    assert float(results[0]["val_bpb"]) > float(results[1]["val_bpb"])
    journal = JournalStorage(JournalFileBackend(str(tmp_path / "sw2" / "optuna.journal")))
    study = optuna.load_study(study_name=sweep_module.STUDY, storage=journal)
    for trial in study.trials:  # what Optuna searches on is the target, not the mixture's val/bpb
        assert trial.value == pytest.approx(trial.user_attrs["val_bpb@codes"])


@pytest.mark.parametrize(
    ("metric", "data", "message"),
    [
        ("val/bpb@nope", "two", "no source 'nope'"),
        ("val/bpb@mean", "one", "needs data with several sources"),
        ("val/bpb@", "two", "use one of val/bpb, val/loss, val/bpb@SOURCE, val/bpb@mean"),
    ],
)
def test_a_per_source_metric_must_name_a_source_of_the_data(
    two_sources, char_data, tmp_path, capsys, metric, data, message
):
    body = f'metric = "{metric}"\n[space]\n"optim.lr" = {{ choices = [1e-3] }}'
    config = write_sweep(tmp_path, two_sources if data == "two" else char_data, body)
    assert main(["sweep", "--config", config, "--out", str(tmp_path / "sw")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "sw" / "trials").exists()
