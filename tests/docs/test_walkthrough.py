"""docs/walkthrough.py runs end to end on tiny local data (no network, no built-in corpus)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_walkthrough_tiny(tiny_corpus, tmp_path):
    out = tmp_path / "walk"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "walkthrough.py"), "--tiny", "--source", str(tiny_corpus),
         "--out", str(out)],
        capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", **_env(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    headings = [line for line in proc.stdout.splitlines() if line.startswith("=== ")]
    assert [h.split(".")[0] for h in headings] == [f"=== {i}" for i in range(1, 6)]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    data, model, trained = summary["data"], summary["model"], summary["train"]
    assert data["docs_out"] == 12 and data["tokens"]["train"] > data["tokens"]["val"] > 0
    assert data["n_merges"] > 0 and data["bytes_per_token"] > 1
    assert model["param_table_sum"] == model["num_params"] > 0
    assert model["flops_per_token"] > 0
    # at initialisation every token is about equally likely: loss ~ ln(vocab size)
    assert abs(model["init_loss"] - model["ln_vocab"]) < 0.3
    assert trained["steps"] == 30 and trained["val"]["loss"] < model["init_loss"] - 1
    assert summary["eval"]["bpb"] > 0 and summary["eval"]["perplexity"] > 1
    assert set(summary["samples"]) == {"greedy", "temperature 0.8, top-k 50", "temperature 1.0, top-p 0.9"}
    assert all(isinstance(text, str) and text for text in summary["samples"].values())
    assert (out / "run" / "ckpt").is_dir() and (out / "data" / "shards" / "manifest.json").is_file()


def _env(tmp_path: Path) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_")}
    env["LMFORGE_CACHE"] = str(tmp_path / "no-cache")  # the built-in corpus must not be needed
    return env
