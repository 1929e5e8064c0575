"""Files under misuse: a full disk (RLIMIT_FSIZE) during a write ends in one `error: could not write
PATH` line and leaves the old file whole; hand-damaged run.json / config.json name themselves in
every verb that reads them; half-written or non-UTF-8 log lines are skipped with a warning on
resume; leftover temporaries are removed at the next start; a second SIGTERM stops a step."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap

import pytest
from test_reliability_support import assert_same_run, copy_until, reference_run, train_args

from lmforge import io, runs
from lmforge.cli import main
from lmforge.errors import UserError
from lmforge.train.loop import StopFlag


@pytest.fixture(scope="module")
def reference(char_data, tmp_path_factory):
    return reference_run(char_data, tmp_path_factory)


def _limited(code: str, limit: int = 1000) -> subprocess.CompletedProcess:
    """Run `code` in a Python whose files may not grow past `limit` bytes (a full disk)."""
    prelude = textwrap.dedent(f"""
        import resource, signal
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    """)
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True
    )


def test_full_disk_during_an_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old\n")
    proc = _limited(f"""
        from lmforge import io
        from lmforge.errors import UserError
        try:
            io.write_text({str(target)!r}, "x" * 5000)
        except UserError as exc:
            print(exc)
    """)
    assert proc.stdout.startswith(f"could not write {target} (File too large); free disk space"), proc
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # no temporary left


def test_full_disk_during_a_log_append_leaves_no_half_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n' * 80)  # 960 bytes: the next line crosses the 1000-byte limit
    proc = _limited(f"""
        from lmforge import io
        from lmforge.errors import UserError
        try:
            io.append_line({str(log)!r}, '{{"step": 2, "train/loss": 1.2345678, "val/bpb": 3.14159}}')
        except UserError as exc:
            print(exc)
    """)
    assert "could not write" in proc.stdout and "free disk space" in proc.stdout, proc
    assert log.read_text() == '{"step": 1}\n' * 80


@pytest.mark.parametrize(
    ("file", "damage"),
    [
        ("config.json", b'{"model": {"family": "gpt", "n_la'),
        ("config.json", b"\xff\xfe\x00garbage"),
        ("config.json", b"[1, 2, 3]"),
        ("config.json", b'{"model": {"family": "gpt"}, "train": 5}'),
        ("config.json", b'{"model": {"family": "gpt"}, "train": {"max_steps": "many"}}'),
        ("config.json", b'{"model": {"family": "lstm"}}'),
        ("run.json", b'{"tokenizer_hash": '),
        ("run.json", b'"just a string"'),
    ],
    ids=["cut", "binary", "list", "section-not-table", "wrong-type", "unknown-family", "run-cut", "run-str"],
)
@pytest.mark.parametrize("verb", ["resume", "eval", "generate", "report"])
def test_a_damaged_run_file_is_a_one_line_error_naming_it(
    verb, file, damage, reference, char_data, tmp_path_factory, capsys
):
    out = copy_until(reference, tmp_path_factory.mktemp(verb) / "run", 30)
    (out / file).write_bytes(damage)
    args = {
        "resume": train_args(char_data, out, "--resume"),
        "eval": ["eval", str(out)],
        "generate": ["generate", str(out), "--prompt", "to be", "--max-new-tokens", "4"],
        "report": ["report", str(out), "--samples", "0", "--out", str(out.parent / "report")],
    }[verb]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and file in err[0], err


def test_half_written_and_non_utf8_log_lines_are_skipped_with_a_warning(
    reference, char_data, tmp_path, capsys
):
    out = copy_until(reference, tmp_path / "run", 20)
    with open(out / "metrics.jsonl", "ab") as handle:
        handle.write(b'{"step": 21, "train/lo\xff\xfe\n{"step": 21, "train/loss"')  # invalid UTF-8, cut
    assert main(train_args(char_data, out, "--resume")) == 0
    assert "warning: skipped 2 damaged or half-written line(s)" in capsys.readouterr().err
    assert_same_run(out, reference)


def test_an_over_long_log_line_is_skipped_in_bounded_memory(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(io, "MAX_LINE_BYTES", 64)
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n' + '{"b": "' + "x" * 1000 + '"}\n' + '{"c": 3}\n')
    assert list(io.iter_jsonl(path)) == [{"a": 1}, {"c": 3}]
    assert [r.getMessage() for r in caplog.records] == [
        f"warning: skipped 1 damaged or half-written line(s) in {path}"
    ]


def test_leftover_temporaries_are_removed_at_the_next_start(reference, char_data, tmp_path, capsys):
    out = copy_until(reference, tmp_path / "run", 25)
    (out / ".tmp-config.json").write_text("{")
    (out / ".tmp-metrics.jsonl").write_text("")
    (out / "ckpt" / ".tmp-old-step_000025").mkdir()
    assert main(train_args(char_data, out, "--resume")) == 0
    said = capsys.readouterr().out
    assert "removed unfinished file .tmp-config.json" in said
    assert not [p for p in [*out.iterdir(), *(out / "ckpt").iterdir()] if p.name.startswith(".tmp-")]


def test_read_json_names_the_file_and_the_damage(tmp_path):
    (tmp_path / "a.json").write_text("{")
    with pytest.raises(UserError, match=r"a.json is damaged \(not valid JSON"):
        io.read_json(tmp_path / "a.json")
    with pytest.raises(UserError, match="b.json is missing"):
        io.read_json(tmp_path / "b.json")


def test_a_second_sigterm_stops_a_step_that_cannot_finish():
    with StopFlag() as stop, pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.reason == "SIGTERM"  # the first asks for a clean stop at the step's end
        os.kill(os.getpid(), signal.SIGTERM)  # the second does not wait for it
        for _ in range(10**8):  # "a step that cannot finish"
            pass
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_train_with_a_damaged_log_line_still_reports(reference, tmp_path):
    out = copy_until(reference, tmp_path / "run", 30)
    with open(out / "metrics.jsonl", "ab") as handle:
        handle.write(b"\x00\x00\x00")
    assert runs.read_metrics(out, quiet=True)[-1]["step"] == 30
    assert json.loads((out / "run.json").read_text())["tokenizer_hash"]


def _tiny_file_size_limit():
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # the weights (~150 kB) cannot fit
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_export_on_a_full_disk_is_one_line(reference, tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "hf"
    proc = subprocess.run(
        [sys.executable, "-m", "lmforge", "export", str(reference), "--out", str(out), "--no-verify"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        preexec_fn=_tiny_file_size_limit, timeout=300,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: could not write "), lines
    assert "model.safetensors (File too large); free disk space" in lines[0]
    assert not out.exists()  # written aside and renamed into place only when complete


def test_finetune_into_a_data_folder_is_refused(reference, char_data, tmp_path, capsys):
    args = ["finetune", str(reference), "--task", "sft", "--train", "x.jsonl", "--out", str(char_data)]
    assert main(args) == 2
    assert "is a data folder" in capsys.readouterr().err


def test_data_prepare_on_a_full_disk_is_one_line(tiny_corpus, tmp_path):
    out = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "lmforge", "data", "prepare", "--source", str(tiny_corpus), "--out", str(out),
         "--tokenizer", "char"],
        capture_output=True, text=True, preexec_fn=_tiny_file_size_limit, timeout=300,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: could not write "), lines
    assert "free disk space" in lines[0]
