"""`lmforge demo` names its seven steps, runs each as its own verb, and points to the guide."""

from __future__ import annotations

import pytest

from lmforge.cli import main

STEPS = ["collect", "clean", "tokenize", "encode", "train", "evaluate", "sample"]


@pytest.mark.slow
def test_demo_names_each_step_and_points_to_the_guide(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--source", str(tiny_corpus), "--out", str(out), "--config", "gpt-tiny",
            "--time-budget", "2", "--prompt", "To be"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    headers = [line for line in text.splitlines() if line.startswith("=== step ")]
    assert headers == [f"=== step {i}/7: {name} ===" for i, name in enumerate(STEPS, 1)]
    for verb in ("data collect", "data clean", "data tokenizer", "data encode", "train", "eval", "generate"):
        assert f"$ lmforge {verb} " in text
    assert (out / "data" / "raw").is_dir() and (out / "data" / "clean" / "clean_report.json").is_file()
    assert "=== summary ===" in text and "train /" in text and "bytes/token" in text
    assert text.rstrip().splitlines()[-1].endswith("docs/guide/README.md")

    # a second demo reuses the prepared data and says so
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "steps 1-4/7: collect, clean, tokenize, encode: already done" in again
    assert "=== step 5/7: train ===" in again
