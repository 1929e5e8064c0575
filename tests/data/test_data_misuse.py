"""`data prepare` used the wrong way round, as a new user does: --out naming a run or the source itself,
a data folder given as --source, leftovers of a killed prepare, a mostly-ASCII file in Latin-1."""

from __future__ import annotations

import json
import os

import pytest
from prepare_helpers import fails, prose, song

from lmforge.cli import main


def _fake_run(path):
    """What `lmforge train --out` leaves: checkpoints, config, and a tokenizer/ like a data folder's."""
    (path / "ckpt" / "step_000010").mkdir(parents=True)
    (path / "ckpt" / "step_000010" / "model.pt").write_bytes(b"weights")
    (path / "tokenizer").mkdir()
    (path / "tokenizer" / "meta.json").write_text("{}")
    (path / "config.json").write_text("{}")
    (path / "run.json").write_text("{}")


def _snapshot(root) -> dict:
    # .lock names the process writing the folder (lmforge.locks); it is not part of the data
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_out_naming_a_run_folder_is_refused_and_the_run_kept(tmp_path, capsys):
    (tmp_path / "a.txt").write_text(prose(1))
    run = tmp_path / "run"
    _fake_run(run)
    before = _snapshot(run)
    err = fails(capsys, ["--source", str(tmp_path / "a.txt"), "--out", str(run)], "run folder")
    assert "run_data" in err  # the hint names a folder that would work
    assert _snapshot(run) == before


def test_source_inside_out_or_a_data_folder_is_refused(tmp_path, capsys):
    (tmp_path / "a.txt").write_text(prose(2))
    data = tmp_path / "d"
    assert main(["data", "prepare", "--source", str(tmp_path / "a.txt"), "--out", str(data)]) == 0
    before = _snapshot(data)
    fails(capsys, ["--source", str(data), "--out", str(data)], "inside --out")
    fails(capsys, ["--source", str(data), "--out", str(tmp_path / "d2")], "lmforge data or run folder")
    assert _snapshot(data) == before and not (tmp_path / "d2").exists()


def test_a_data_folder_inside_the_source_folder_is_not_read_back(tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(3):
        (notes / f"n{i}.md").write_text(prose(10 + i))
    argv = ["data", "prepare", "--source", str(notes), "--out", str(notes / "data"), "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(argv) == 0  # the same command again: notes/data/ now exists inside the source
    second = json.loads(capsys.readouterr().out)
    assert second["sources"]["notes"]["n_chars"] == first["sources"]["notes"]["n_chars"]
    assert any(s.startswith("data/:") for s in second["sources"]["notes"]["skipped"])


def test_leftovers_of_a_killed_prepare_are_removed_at_the_next(tmp_path):
    (tmp_path / "a.txt").write_text(prose(3))
    dead = 2**22 + 12345  # above the usual pid_max: no such process
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
        except PermissionError:
            dead += 1
    stale = [tmp_path / f".d.tmp-{dead}-abcd1234", tmp_path / f".d.old-{dead}"]
    live = tmp_path / f".d.tmp-{os.getppid()}-efgh5678"  # a prepare still running: not touched
    for folder in (*stale, live):
        (folder / "clean").mkdir(parents=True)
    (tmp_path / ".dx.tmp-1-keep").mkdir()  # another folder's name that merely starts the same way
    assert main(["data", "prepare", "--source", str(tmp_path / "a.txt"), "--out", str(tmp_path / "d")]) == 0
    assert not any(p.exists() for p in stale)
    assert live.is_dir() and (tmp_path / ".dx.tmp-1-keep").is_dir()


def test_data_folder_gets_the_usual_permissions(tmp_path):
    (tmp_path / "a.txt").write_text(prose(4))
    assert main(["data", "prepare", "--source", str(tmp_path / "a.txt"), "--out", str(tmp_path / "d")]) == 0
    umask = os.umask(0)
    os.umask(umask)
    for folder in (tmp_path / "d", tmp_path / "d" / "shards", tmp_path / "d" / "tokenizer"):
        assert folder.stat().st_mode & 0o777 == 0o777 & ~umask, folder


def test_mostly_ascii_file_in_latin1_is_refused_naming_encoding(tmp_path, capsys):
    """English with a few accented words in Latin-1: under 10% bad bytes, yet every accent is lost."""
    text = prose(5, 400).replace("people", "caf\xe9 na\xefve")
    (tmp_path / "old.txt").write_bytes(text.encode("latin-1"))
    fails(capsys, ["--source", str(tmp_path / "old.txt"), "--out", str(tmp_path / "d")], "--encoding latin-1")
    # The same text in UTF-8 with a handful of stray bytes is still read, the bytes counted.
    (tmp_path / "new.txt").write_bytes(text.encode("utf-8") + b"\n\xff\xfe stray\n")
    assert main(["data", "prepare", "--source", str(tmp_path / "new.txt"), "--out", str(tmp_path / "d")]) == 0


def test_summary_says_how_much_text_each_filter_took(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("\n\n".join([prose(6, 300), *[song(s) for s in range(3)]]))
    assert main(["data", "prepare", "--source", str(tmp_path / "a.txt"), "--out", str(tmp_path / "d")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("clean "))
    assert "of the text" in line and "kept " in line, line


def test_a_source_whose_lines_all_lack_the_field_names_text_field(tmp_path, capsys):
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"body": prose(s, 5)}) + "\n" for s in range(5)))
    argv = ["--source", str(tmp_path / "rows.jsonl"), "--skip-bad-lines", "--out", str(tmp_path / "d")]
    fails(capsys, argv, "gave 0 documents", "--text-field FIELD after this --source")


def test_links_in_a_source_folder_are_read_or_listed_as_skipped(tmp_path, capsys):
    (tmp_path / "a.txt").write_text(prose(7))
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "b.txt").write_text(prose(8))
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").symlink_to(tmp_path / "a.txt")  # a link to a file: read
    (src / "more").symlink_to(tmp_path / "more")  # a link to a folder: not followed, but said
    (src / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    (src / "loop").symlink_to(src)
    argv = ["data", "prepare", "--source", str(src), "--out", str(tmp_path / "d"), "--json"]
    assert main(argv) == 0
    s = json.loads(capsys.readouterr().out)["sources"]["src"]
    assert s["files"] == 1
    reasons = dict(item.split(": ", 1) for item in s["skipped"])
    assert reasons["gone.txt"] == "broken link" and "not followed" in reasons["more"] and "loop" in reasons


def test_out_naming_the_current_folder_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "a.txt").write_text(prose(9))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    fails(capsys, ["--source", str(tmp_path / "a.txt"), "--out", "."], "current folder", "--out data")
    fails(capsys, ["--source", str(tmp_path / "a.txt"), "--out", ".."], "current folder")
    assert not list(work.iterdir()) and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "work"]


def test_a_damaged_gz_is_one_line_naming_the_file(tmp_path, capsys):
    import gzip

    packed = gzip.compress(prose(10, 2000).encode())
    (tmp_path / "cut.txt.gz").write_bytes(packed[: len(packed) // 2])  # a download cut off
    (tmp_path / "bad.txt.gz").write_bytes(packed[:10] + bytes(range(256)) * 4)  # damaged inside
    for name in ("cut.txt.gz", "bad.txt.gz"):
        fails(
            capsys, ["--source", str(tmp_path / name), "--out", str(tmp_path / "d")], f"{name}' is a damaged"
        )


def test_a_spreadsheet_csv_in_cp1252_is_refused_then_read_with_encoding(tmp_path, capsys):
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["text", "id"])
    for i in range(60):
        writer.writerow([prose(20 + i, 6).replace("people", "caf\xe9"), i])
    (tmp_path / "sheet.csv").write_bytes(buf.getvalue().encode("cp1252"))
    (tmp_path / "bom.csv").write_bytes(buf.getvalue().encode("utf-8-sig"))  # Excel's "CSV UTF-8"
    argv = ["--source", str(tmp_path / "sheet.csv"), "--out", str(tmp_path / "d")]
    fails(capsys, argv, "sheet.csv' is not utf-8", "--encoding")
    assert main(["data", "prepare", *argv, "--encoding", "cp1252"]) == 0
    assert "café" in (tmp_path / "d" / "clean" / "docs_00000.jsonl").read_text(encoding="utf-8")
    capsys.readouterr()
    argv = ["data", "prepare", "--source", str(tmp_path / "bom.csv"), "--out", str(tmp_path / "d2"), "--json"]
    assert main(argv) == 0  # the BOM is not part of the first column's name
    assert json.loads(capsys.readouterr().out)["sources"]["bom"]["n_docs"] == 60


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--weight", "inf", "--weight (inf)"),
        ("--max-symbol-ratio", "nan", "--max-symbol-ratio (nan)"),
        ("--max-dup-line-frac", "-1", "--max-dup-line-frac (-1.0)"),
        ("--max-line-chars", "0", "--max-line-chars (0)"),
        ("--encoding", "rot13", "not a known text encoding"),
        ("--encoding", "base64", "not a known text encoding"),
        ("--encoding", "utf-16", "cannot be read as utf-16"),
    ],
)
def test_hostile_option_values_are_one_line(tmp_path, capsys, flag, value, needle):
    (tmp_path / "a.txt").write_text(prose(30))
    fails(capsys, ["--source", str(tmp_path / "a.txt"), flag, value, "--out", str(tmp_path / "d")], needle)
    assert not (tmp_path / "d").exists()


def test_a_rerun_keeps_hidden_files_it_did_not_write(tmp_path, capsys):
    (tmp_path / "a.txt").write_text(prose(5))
    out = tmp_path / "d"
    argv = ["--source", str(tmp_path / "a.txt"), "--out", str(out)]
    assert main(["data", "prepare", *argv]) == 0
    assert main(["data", "prepare", *argv]) == 0  # its own .lock does not block a rerun
    capsys.readouterr()
    (out / ".git").mkdir()
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    before = _snapshot(out)
    fails(capsys, argv, ".git", "new or empty folder")
    assert _snapshot(out) == before
