"""One validation figure: training, `report` and `eval` name what they measured, and on the same tokens
they give the same number."""

from __future__ import annotations

import json

import pytest

from conftest import TINY
from lmforge.cli import main


def test_training_and_eval_agree_on_the_same_tokens(char_data, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", str(char_data), "--out", str(run), "--no-progress", *TINY, "--max-steps", "10"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "first 512 val tokens" in text and "whole split" in text
    last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in last if "val/bpb" in r][-1]
    assert main(["eval", str(run), "--max-tokens", "512", "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["on"].endswith("first 512 tokens")
    assert same["bpb"] == pytest.approx(trained["val/bpb"], rel=1e-4)  # same split, same tokens, same number
    assert main(["eval", str(run), "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert whole["on"].endswith(f"all {whole['tokens']:,} tokens") and whole["tokens"] > 512
