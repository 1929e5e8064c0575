"""`lmforge report`: sections, numbers that match metrics.jsonl, per-source bpb, comparison, bad input."""

from __future__ import annotations

import pytest

from conftest import TINY
from lmforge import runs
from lmforge.cli import main


@pytest.fixture(scope="module")
def two_source_data(tmp_path_factory):
    """Two sources of different text, so the report has a per-source view."""
    root = tmp_path_factory.mktemp("mix")
    lower = "\n".join(f"the quick brown fox {i} jumps over the lazy dog" for i in range(300))
    upper = "\n".join(f"TO BE OR NOT TO BE {i} THAT IS THE QUESTION" for i in range(300))
    (root / "lower.txt").write_text(lower, encoding="utf-8")
    (root / "upper.txt").write_text(upper, encoding="utf-8")
    out = root / "data"
    args = ["data", "prepare", "--source", str(root / "lower.txt"), "--source", str(root / "upper.txt"),
            "--out", str(out), "--tokenizer", "char", "--split", "tail", "--json"]  # fmt: skip
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def run_dir(two_source_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "run"
    args = ["train", "--data", str(two_source_data), "--out", str(out), "--no-progress", *TINY,
            "--max-steps", "20", "--tensorboard"]  # fmt: skip
    assert main(args) == 0
    return out


def test_report_has_every_section_and_the_logged_numbers(run_dir, capsys):
    assert (
        main(["report", str(run_dir), "--samples", "1", "--sample-tokens", "16", "--eval-tokens", "2048"])
        == 0
    )
    text = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "was lowest at the checkpoint" not in text  # still improving: its last checkpoint is its best
    for section in (
        "## Final metrics",
        "## Curves",
        "## Data",
        "### Validation bits per byte per source",
        "## Tokenizer",
        "## Model",
        "## Training",
        "## Samples",
        "## Hardware and versions",
    ):
        assert section in text, section  # fmt: skip
    for name in ("curves_step.png", "curves_tokens.png", "curves_time.png"):
        assert (run_dir / name).stat().st_size > 1000 and f"({name})" in text
    val = [r for r in runs.read_metrics(run_dir) if "val/bpb" in r][-1]
    assert f"| validation bits per byte, first 512 val tokens | {val['val/bpb']:.4f} |" in text
    assert f"| validation loss (nats/token), first 512 val tokens | {val['val/loss']:.4f} |" in text
    assert "| steps | 20 |" in text and "| lower |" in text and "| upper |" in text
    assert "| type | char |" in text


def test_tensorboard_logs_the_same_metric_names(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/bpb"} <= tags
    logged = [r["train/loss"] for r in runs.read_metrics(run_dir) if "train/loss" in r]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(logged, rel=1e-6)


def test_several_runs_make_one_table_and_overlaid_curves(run_dir, char_data, tmp_path):
    other = tmp_path / "other"
    assert main(["train", "--data", str(char_data), "--out", str(other), "--no-progress", *TINY,
                 "--max-steps", "10"]) == 0  # fmt: skip
    out = tmp_path / "cmp"
    assert main(["report", str(run_dir), str(other), "--out", str(out)]) == 0
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "| run | gpt | 20 |" in text and "| other | gpt | 10 |" in text
    assert (out / "compare_step.png").is_file()


def test_report_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "is not an lmforge run" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(tmp_path), str(tmp_path)]) == 2  # several runs need --out
