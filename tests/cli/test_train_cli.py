"""The core loop end to end through the CLI: train -> eval -> generate, resume, and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY
from lmforge import runs
from lmforge.cli import main


def train_args(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), "--no-progress", *TINY, *extra]


@pytest.fixture(scope="module")
def trained(char_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "gpt"
    assert main(train_args(char_data, out, "--max-steps", "30")) == 0
    return out


def test_run_folder_has_config_metrics_and_checkpoints(trained):
    assert (trained / "config.json").is_file() and (trained / "tokenizer" / "tokenizer.json").is_file()
    steps = [s for s, _ in runs.list_checkpoints(trained)]
    assert steps[0] == 30 and len(steps) <= 2  # keep_last=2, newest first
    records = runs.read_metrics(trained)
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert any("val/bpb" in r for r in records)
    assert runs.verify_checkpoint(trained / "ckpt" / "step_000030") is None


def test_eval_json_has_the_contract_keys(trained, capsys):
    assert main(["eval", str(trained), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("val_loss", "perplexity", "bpb", "accuracy"):
        assert key in result
    assert result["perplexity"] == pytest.approx(torch.tensor(result["val_loss"]).exp().item(), rel=1e-6)


def test_eval_on_a_text_file(trained, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("To be or not to be that is the question\n", encoding="utf-8")  # only known chars
    assert main(["eval", str(trained), "--text", str(text), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tokens"] == len(text.read_text()) and result["bytes"] == result["tokens"]


def test_generate_streams_text(trained, capsys):
    assert main(["generate", str(trained), "--prompt", "To be", "--max-new-tokens", "20", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("To be")


def test_save_load_same_logits(trained):
    run = runs.load_run(trained)
    x = torch.randint(0, run.config.model.vocab_size, (2, 16))
    again = runs.load_run(trained)
    torch.testing.assert_close(run.model(x), again.model(x), rtol=0, atol=0)


def test_resume_continues_bit_exactly(char_data, trained, tmp_path):
    # 20 steps then resume to 30 gives the same weights as the uninterrupted 30-step run.
    out = tmp_path / "resumed"
    assert main(train_args(char_data, out, "--max-steps", "30", "train.ckpt_every=20")) == 0
    # Throw away the step-30 checkpoint to force a resume from step 20.
    for step, path in runs.list_checkpoints(out):
        if step == 30:
            import shutil

            shutil.rmtree(path)
    assert main(train_args(char_data, out, "--max-steps", "30", "train.ckpt_every=20", "--resume")) == 0
    a = runs.load_run(trained).model.state_dict()
    b = runs.load_run(out).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gru_trains_through_the_same_loop(char_data, tmp_path):
    out = tmp_path / "gru"
    args = [
        "train",
        "--data",
        str(char_data),
        "--out",
        str(out),
        "--no-progress",
        "--model",
        "gru",
        "model.n_layer=1",
        "model.n_embd=16",
        "model.hidden=32",
        "model.seq_len=32",
        "train.batch_size=4",
        "train.eval_tokens=256",
        "--max-steps",
        "5",
    ]
    assert main(args) == 0
    assert runs.load_run(out).config.model.family == "gru"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "/nonexistent/run"], "does not exist"),
        (["generate", "/nonexistent/run", "--prompt", "x"], "does not exist"),
        (["train", "--data", "/nonexistent/data", "--out", "x"], "does not exist"),
    ],
)
def test_missing_folders_are_one_line_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err


def test_bad_config_key_and_type(char_data, tmp_path, capsys):
    assert main(train_args(char_data, tmp_path / "a", "optim.lrr=1")) == 2
    assert "unknown config key 'optim.lrr'" in capsys.readouterr().err
    assert main(train_args(char_data, tmp_path / "b", "train.batch_size=big")) == 2
    assert "train.batch_size must be int" in capsys.readouterr().err


def test_existing_run_needs_resume(trained, char_data, capsys):
    assert main(train_args(char_data, trained, "--max-steps", "5")) == 2
    assert "--resume" in capsys.readouterr().err


def test_prompt_longer_than_context(trained, capsys):
    assert main(["generate", str(trained), "--prompt", "x" * 100]) == 2
    assert "error:" in capsys.readouterr().err


def test_shards_from_another_tokenizer_are_refused(trained, char_data, tmp_path, capsys):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(char_data, other)
    meta = json.loads((other / "tokenizer" / "meta.json").read_text())
    meta["hash"] = "0" * 64
    (other / "tokenizer" / "meta.json").write_text(json.dumps(meta))
    assert main(train_args(other, tmp_path / "r", "--max-steps", "2")) == 2
    assert "error:" in capsys.readouterr().err


def test_speed_options_keep_the_losses(char_data, tmp_path):
    # Each speed lever changes how the arithmetic is done, not what is computed: plain attention gives
    # SDPA's losses to float precision, and bf16 autocast stays within bf16's tolerance.
    def losses(name, *extra):
        out = tmp_path / name
        assert main(train_args(char_data, out, "--max-steps", "8", "train.log_every=1", *extra)) == 0
        return torch.tensor([r["train/loss"] for r in runs.read_metrics(out) if "train/loss" in r])

    base = losses("sdpa")
    torch.testing.assert_close(losses("math", "model.attn_impl=math"), base, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(losses("again"), base, rtol=0, atol=0)  # fp32 is exactly repeatable
    bf16 = losses("bf16", "train.dtype=bfloat16", "model.attn_impl=math")
    torch.testing.assert_close(bf16, base, rtol=0.02, atol=0.02)
