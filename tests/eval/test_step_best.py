"""`--step STEP|best`: eval, generate, chat, serve and export load the checkpoint asked for -- the one
with the lowest validation loss (kept from pruning), a step number, or the newest -- and refuse a
step the run does not have in one line."""

from __future__ import annotations

import json

import pytest

from conftest import TINY
from lmforge.cli import main
from lmforge.train.state import TrainState


@pytest.fixture(scope="module")
def run_that_got_worse(char_data, tmp_path_factory):
    """A run whose validation loss was lowest at its first checkpoint: every later measurement is
    recorded 100 nats worse, as if the model had overfit from there on (a real overfit takes minutes)."""
    recorded = TrainState.record_val

    def worse_after_the_first(self, step, val_loss):
        recorded(self, step, val_loss if self.best_step is None else val_loss + 100.0)

    out = tmp_path_factory.mktemp("overfit") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TrainState, "record_val", worse_after_the_first)
        args = ["train", "--data", str(char_data), "--out", str(out), "--no-progress", *TINY,
                "train.eval_every=10", "train.ckpt_every=10", "train.keep_last=1",
                "--max-steps", "30"]  # fmt: skip
        assert main(args) == 0
    kept = sorted(p.name for p in (out / "ckpt").iterdir())
    assert kept == ["step_000010", "step_000030"], kept  # the newest, and the best kept from pruning
    return out


def _eval(run, capsys, *extra) -> dict:
    assert main(["eval", str(run), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_loads_the_best_checkpoint_a_step_or_the_newest(run_that_got_worse, capsys):
    newest = _eval(run_that_got_worse, capsys)
    best = _eval(run_that_got_worse, capsys, "--step", "best")
    by_number = _eval(run_that_got_worse, capsys, "--step", "10")
    assert newest["checkpoint"] == "step_000030"
    assert best["checkpoint"] == by_number["checkpoint"] == "step_000010"
    assert best["val_loss"] == by_number["val_loss"] != newest["val_loss"]  # another model's weights


def test_a_step_the_run_does_not_have_is_refused_in_one_line(run_that_got_worse, capsys):
    assert main(["eval", str(run_that_got_worse), "--step", "20"]) != 0
    err = capsys.readouterr().err.strip()
    assert err == f"error: run '{run_that_got_worse}' has no checkpoint of step 20 (kept: 30, 10)"
    with pytest.raises(SystemExit) as exit_:
        main(["generate", str(run_that_got_worse), "--step", "latest"])
    assert exit_.value.code == 2 and "'latest' is neither a step number nor 'best'" in capsys.readouterr().err


def test_generate_and_export_take_the_best_checkpoint(run_that_got_worse, capsys, tmp_path):
    from lmforge.cli.generate import _load
    from lmforge.runs import load_run

    best = load_run(run_that_got_worse, step="best")
    assert best.checkpoint.name == "step_000010" and best.meta["step"] == 10
    model, _ = _load(str(run_that_got_worse), "best")
    for ours, theirs in zip(model.state_dict().values(), best.model.state_dict().values(), strict=True):
        assert ours.equal(theirs)
    args = ["generate", str(run_that_got_worse), "--step", "best", "--prompt", "Th", "--max-new-tokens", "8"]
    assert main([*args, "--seed", "1", "--temperature", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["text"]
    transformers = pytest.importorskip("transformers")  # the `export` extra: in the test install
    from safetensors.torch import load_file

    assert main(["export", str(run_that_got_worse), "--out", str(tmp_path / "hf"), "--step", "best"]) == 0
    exported = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert exported and transformers.AutoConfig.from_pretrained(tmp_path / "hf").model_type
    rows = best.tokenizer.vocab_size  # the token embedding's real rows, exported as Llama's
    theirs = exported["model.embed_tokens.weight"][:rows].float()
    assert theirs.equal(best.model.state_dict()["wte.weight"][:rows].float())
    newest = load_run(run_that_got_worse).model.state_dict()["wte.weight"][:rows].float()
    assert not theirs.equal(newest)


def test_the_report_points_at_the_best_checkpoint_when_it_is_not_the_last(run_that_got_worse, capsys):
    assert main(["report", str(run_that_got_worse), "--samples", "0", "--eval-tokens", "512"]) == 0
    text = (run_that_got_worse / "report.md").read_text(encoding="utf-8")
    assert "The validation loss was lowest at the checkpoint of step 10 (" in text
    assert "`lmforge eval RUN --step best`" in text
