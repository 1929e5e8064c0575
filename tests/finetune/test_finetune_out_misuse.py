"""`finetune --out` misuse is refused in one line before any work, like `train`: --resume on a folder
with no run, and a folder that already holds a run without --resume."""

from __future__ import annotations

from conftest import write_conversations
from lmforge.cli import main


def _finetune(tiny_run, train, out, *extra: str) -> list[str]:
    return ["finetune", str(tiny_run), "--task", "sft", "--train", str(train), "--out", str(out),
            "--no-progress", "--max-steps", "2", *extra]  # fmt: skip


def _one_line_error(capsys, argv: list[str], *needles: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


def test_finetune_resume_on_a_folder_with_no_run_is_an_error(tiny_run, tmp_path, capsys):
    train = write_conversations(tmp_path / "chat.jsonl")
    out = tmp_path / "typo"
    _one_line_error(capsys, _finetune(tiny_run, train, out, "--resume"), "holds no run", "drop --resume")
    assert not out.exists()  # refused before anything was written


def test_finetune_into_an_existing_run_without_resume_is_refused(tiny_run, tmp_path, capsys):
    train = write_conversations(tmp_path / "chat.jsonl")
    out = tmp_path / "sft"
    assert main(_finetune(tiny_run, train, out)) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".lock"}
    _one_line_error(capsys, _finetune(tiny_run, train, out), "already holds a run", "--resume")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".lock"} == before
