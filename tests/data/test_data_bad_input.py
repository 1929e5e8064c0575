"""Bad input to `data prepare`: one line each (`error: ...`, exit 2), naming a flag that really fixes it,
and nothing half-written in --out afterwards."""

from __future__ import annotations

import json

import pytest
from prepare_helpers import fails, prose, song

from lmforge.cli import main


def test_a_filter_that_would_eat_the_corpus_stops_and_names_its_flag(tmp_path, capsys):
    songs = tmp_path / "songs"
    songs.mkdir()
    for i in range(12):
        (songs / f"song{i}.txt").write_text(song(i))
    (songs / "liner_notes.txt").write_text(prose(0, 60))  # kept: the filter would eat most, not all
    out = tmp_path / "d"
    fails(capsys, ["--source", str(songs), "--out", str(out)], "repeated_lines", "--max-dup-line-frac 1")
    assert not out.exists()
    # The flag the error names really fixes it.
    assert (
        main(["data", "prepare", "--source", str(songs), "--out", str(out), "--max-dup-line-frac", "1"]) == 0
    )
    assert (out / "shards" / "manifest.json").is_file()


def test_folder_without_known_files_suggests_ext(tmp_path, capsys):
    code = tmp_path / "code"
    code.mkdir()
    for i in range(5):
        (code / f"m{i}.py").write_text(f"def f{i}(x):\n    return x + {i}\n" * 40)
    fails(capsys, ["--source", str(code), "--out", str(tmp_path / "d")], "5 .py", "--ext py")
    assert main(["data", "prepare", "--source", str(code), "--ext", "py", "--out", str(tmp_path / "d")]) == 0


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: p.mkdir(), "is empty"),
        (lambda p: p.mkdir() or (p / "a.bin").write_bytes(bytes(range(256)) * 8), "only binary files"),
        (lambda p: p.mkdir() or (p / "one.txt").write_text("just one line of text\n"), "at least 1,000"),
        (lambda p: p.mkdir() or (p / "x.txt").write_text("x" * 3000 + "\n"), "--max-line-chars"),
    ],
    ids=["empty-folder", "only-binary", "one-line-file", "all-filtered"],
)
def test_bad_folders_one_line_each(tmp_path, capsys, make, needle):
    make(tmp_path / "src")
    out = tmp_path / "d"
    fails(capsys, ["--source", str(tmp_path / "src"), "--out", str(out), "--max-line-chars", "2000"], needle)
    assert not out.exists()


def test_latin1_file_reads_with_encoding(tmp_path, capsys):
    (tmp_path / "old.txt").write_bytes(prose(1).replace("people", "caf\xe9").encode("latin-1"))
    out = tmp_path / "d"
    assert main(["data", "prepare", "--source", str(tmp_path / "old.txt"), "--out", str(out), "--encoding",
                 "latin-1", "--json"]) == 0  # fmt: skip
    r = json.loads(capsys.readouterr().out)
    assert r["sources"]["old"]["invalid_utf8_bytes"] == 0
    assert "café" in (out / "clean" / "docs_00000.jsonl").read_text(encoding="utf-8")


def test_out_naming_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "a.txt").write_text(prose(2))
    (tmp_path / "rows.jsonl").write_text("{}\n")
    fails(capsys, ["--source", str(tmp_path / "a.txt"), "--out", str(tmp_path / "rows.jsonl")], "is a file")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    fails(
        capsys, ["--source", str(tmp_path / "a.txt"), "--out", str(tmp_path / "notes")], "not an lmforge data"
    )
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_a_source_that_ends_with_no_documents_is_an_error(tmp_path, capsys):
    (tmp_path / "a.txt").write_text(prose(3))
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"body": prose(s, 5)}) + "\n" for s in range(5)))
    argv = ["--source", str(tmp_path / "a.txt"), "--source", str(tmp_path / "rows.jsonl"), "--skip-bad-lines"]
    fails(capsys, [*argv, "--out", str(tmp_path / "d")], "rows.jsonl' gave 0 documents")
    # --text-field binds to the --source before it: the .txt source is unaffected.
    argv = [
        "--source",
        str(tmp_path / "a.txt"),
        "--source",
        str(tmp_path / "rows.jsonl"),
        "--text-field",
        "body",
    ]
    assert main(["data", "prepare", *argv, "--out", str(tmp_path / "d"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["sources"]["rows"]["n_docs"] == 5


def test_a_second_prepare_replaces_the_first_whole(tmp_path, capsys):
    (tmp_path / "a.txt").write_text(prose(4))
    (tmp_path / "b.txt").write_text(prose(5))
    out = tmp_path / "d"
    assert main(["data", "prepare", "--source", str(tmp_path / "a.txt"), "--out", str(out)]) == 0
    first = (out / "shards" / "manifest.json").read_text()
    fails(
        capsys, ["--source", str(tmp_path / "b.txt"), "--out", str(out), "--vocab-size", "100"], "below 257"
    )
    assert (out / "shards" / "manifest.json").read_text() == first  # the failed run left no trace
    assert main(["data", "prepare", "--source", str(tmp_path / "b.txt"), "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sources"].keys() == {"b"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_train_on_a_file_names_a_prepare_command_that_works(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": prose(s, 20)}) + "\n" for s in range(10)))
    assert main(["train", "--data", str(rows), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    command = err.split("`")[1].split()
    assert command[:2] == ["lmforge", "data"] and "--source" in command
    assert main(command[1:]) == 0  # the suggested command itself succeeds
    assert (
        tmp_path / "rows_data" / "shards" / "manifest.json"
    ).is_file() and f"--data {tmp_path / 'rows_data'}" in err


def test_a_file_in_another_encoding_is_one_line_naming_encoding(tmp_path, capsys):
    """A few stray bad bytes are replaced and counted; a file mostly in another encoding is refused."""
    (tmp_path / "old.txt").write_bytes(prose(6).replace("e", "\xe9").encode("latin-1"))
    err = fails(capsys, ["--source", str(tmp_path / "old.txt"), "--out", str(tmp_path / "d")], "--encoding")
    assert "is not utf-8 text" in err
    ok = [
        "data",
        "prepare",
        "--source",
        str(tmp_path / "old.txt"),
        "--out",
        str(tmp_path / "d"),
        "--encoding",
    ]
    assert main([*ok, "latin-1"]) == 0


def test_a_killed_prepare_leaves_out_as_it_was(tmp_path):
    """kill -9 in the middle of prepare: --out keeps the earlier complete data folder, and the next
    prepare starts clean."""
    import os
    import signal
    import subprocess
    import sys
    import time

    big = tmp_path / "big"
    big.mkdir()
    for i in range(40):
        (big / f"part{i}.txt").write_text("\n\n".join(prose(100 * i + k, 30) for k in range(20)))
    (tmp_path / "a.txt").write_text(prose(7))
    out = tmp_path / "d"
    assert main(["data", "prepare", "--source", str(tmp_path / "a.txt"), "--out", str(out)]) == 0

    def snapshot() -> dict:
        # .lock names the process writing the folder (lmforge.locks); it is not part of the data
        return {
            str(p.relative_to(out)): p.read_bytes()
            for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != ".lock"
        }

    before = snapshot()
    cmd = [sys.executable, "-m", "lmforge", "data", "prepare", "--source", str(big), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(tmp_path.glob(".d.tmp-*/clean")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # wait until it is writing its new data folder
    assert proc.poll() is None, "prepare finished before it could be killed; make the corpus bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert snapshot() == before  # the old folder, whole: not one file of the killed run in it
    assert main(["data", "prepare", "--source", str(big), "--out", str(out)]) == 0
    assert json.loads((out / "prepare_report.json").read_text())["sources"].keys() == {"big"}
    assert not list(tmp_path.glob(".d.*"))  # the killed run's temporary folder is gone too
