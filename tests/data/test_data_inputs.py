"""The inputs people actually have, each through prepare -> train a few steps -> eval with the defaults
(only --source and --out, plus --ext / --text-field where the format needs them). The text is made by
each test, shaped like the real thing: a play, an API-doc dump, Markdown notes, Python source, records
with a named text column, Chinese, Windows line endings."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from conftest import TINY
from lmforge.cli import main
from lmforge.data.shards import open_split, read_manifest
from lmforge.data.tokenizer import load_tokenizer

pytestmark = pytest.mark.slow  # each test trains a model: a few seconds apiece

NAMES = ["HAMLET", "OPHELIA", "HORATIO", "POLONIUS", "LAERTES", "GERTRUDE"]
_COMMON = (
    "the a to of and in that is it for with as was on be at by this had not are but from or have an they "
    "which one you were her all she there would their we him been has when who will more no if out so said "
    "what up its about into than them can only other new some could time these two may then do first any"
)
WORDS = _COMMON.split()


def sentence(rng: random.Random, n: int = 12) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + rng.choice([".", ",", ";", "?", "!"])


def play(n_speeches: int = 600, seed: int = 0) -> str:
    """A book-sized play: short speaker names repeated hundreds of times, blank lines between speeches."""
    rng = random.Random(seed)
    speeches = [
        f"{rng.choice(NAMES)}:\n"
        + "\n".join(sentence(rng, rng.randint(5, 10)) for _ in range(rng.randint(1, 4)))
        for _ in range(n_speeches)
    ]
    return "\n\n".join(speeches) + "\n"


def api_docs(n: int = 150, seed: int = 1) -> str:
    """A documentation dump: the same section headings in every entry (repeated lines), code examples."""
    rng = random.Random(seed)
    entries = []
    for i in range(n):
        entries.append(
            f"{rng.choice(WORDS)}_{i}(x, y=None)\n\n{sentence(rng, 16)} {sentence(rng)}\n\n"
            f"Parameters\n----------\nx : int\n    {sentence(rng, 8)}\n"
            f"y : str, optional\n    {sentence(rng, 8)}\n\n"
            f"Returns\n-------\nbool\n    {sentence(rng, 6)}\n\nExamples\n--------\n>>> f_{i}(1, 'a')\nTrue"
        )
    return "\n\n\n".join(entries) + "\n"


def python_module(seed: int) -> str:
    rng = random.Random(seed)
    out = ['"""' + sentence(rng) + '"""', "", "import os", ""]
    for i in range(rng.randint(6, 12)):
        out += [
            f"def {rng.choice(WORDS)}_{i}(x, y):",
            f'    """{sentence(rng, 8)}"""',
            "    if x is None:",
            "        return {}",
            f"    return {{'{rng.choice(WORDS)}': x + y, 'n': [i for i in range({i + 2})]}}",
            "",
            "",
        ]
    return "\n".join(out)


def chinese(n_chars: int = 30_000, alphabet: int = 8000, seed: int = 2) -> str:
    """Chinese-like text over thousands of distinct characters (Zipf frequencies), punctuated."""
    rng = random.Random(seed)
    chars = [chr(0x4E00 + i * 2) for i in range(alphabet)]  # CJK Unified Ideographs
    weights = [1 / (i + 1) for i in range(alphabet)]
    out = []
    while len(out) < n_chars:
        out += rng.choices(chars, weights, k=rng.randint(8, 30)) + [rng.choice("，。；！？")]
        if rng.random() < 0.1:
            out.append("\n\n")
    return "".join(out)


def prepare_train_eval(tmp_path, capsys, *source_args: str) -> dict:
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["data", "prepare", *source_args, "--out", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tokens"]["train"] > 0 and report["tokens"]["val"] > 0
    args = ["train", "--data", str(data), "--out", str(run), "--no-progress", "--max-steps", "4", *TINY]
    assert main([*args, "train.eval_every=4", "train.ckpt_every=4"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert math.isfinite(result["bpb"]) and result["bpb"] > 0
    return report


def test_book_sized_txt_is_split_into_paragraph_documents(tmp_path, capsys):
    (tmp_path / "play.txt").write_text(play())
    r = prepare_train_eval(tmp_path, capsys, "--source", str(tmp_path / "play.txt"))
    s = r["sources"]["play"]
    assert s["doc_split"] == {"paragraphs": 1} and s["n_docs"] > 5
    assert r["split"]["mode"] in ("hash", "tail") and r["split"]["reason"]
    assert r["steps"]["clean"]["docs_out"] == s["n_docs"]  # no filter ate the book


def test_api_doc_dump_keeps_its_repeated_headings(tmp_path, capsys):
    (tmp_path / "api.txt").write_text(api_docs())
    r = prepare_train_eval(tmp_path, capsys, "--source", str(tmp_path / "api.txt"))
    assert r["steps"]["clean"]["docs_out"] == r["sources"]["api"]["n_docs"]


def test_folder_of_markdown(tmp_path, capsys):
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    rng = random.Random(3)
    for i in range(30):
        body = f"# Note {i}\n\n{sentence(rng, 20)}\n\n- {sentence(rng)}\n- {sentence(rng)}\n"
        body += f"\n```\nx = {i}\n```\n"
        (notes / ("sub" if i % 2 else "") / f"note{i}.md").write_text(body)
    (notes / "logo.png").write_bytes(bytes(range(256)) * 4)
    r = prepare_train_eval(tmp_path, capsys, "--source", str(notes))
    s = r["sources"]["notes"]
    assert s["files"] == 30 and s["skipped"] == ["logo.png: binary content"]


def test_tree_of_python_with_ext(tmp_path, capsys):
    tree = tmp_path / "pkg"
    for i in range(24):
        path = tree / f"mod{i % 3}" / f"file{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(python_module(i))
    (tree / "README.rst").write_text("Title\n=====\n\n" + sentence(random.Random(0), 30))
    r = prepare_train_eval(tmp_path, capsys, "--source", str(tree), "--ext", "py")
    s = r["sources"]["pkg"]
    assert s["code_files"] == 24 and s["skipped"] == ["README.rst: extension .rst not read; add --ext rst"]
    assert r["steps"]["clean"]["code_sources"] == ["pkg"]
    assert r["steps"]["clean"]["docs_out"] == s["n_docs"]
    steps = json.loads((tmp_path / "data" / "clean" / "clean_report.json").read_text())["steps"]
    web = {st["name"]: st["docs_in"] for st in steps if st["name"] in ("symbol_ratio", "repeated_lines")}
    assert web == {"symbol_ratio": 0, "repeated_lines": 0}  # no web-page filter ever saw the code


def test_jsonl_and_csv_each_with_its_own_text_field(tmp_path, capsys):
    rng = random.Random(4)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(json.dumps({"body": " ".join(sentence(rng) for _ in range(5))}) + "\n" for _ in range(80))
    )
    docs = tmp_path / "docs.csv"
    docs.write_text("name,docstring\n" + "".join(f'f{i},"{sentence(rng, 30)}"\n' for i in range(80)))
    r = prepare_train_eval(
        tmp_path, capsys, "--source", str(rows), "--text-field", "body", "--source", f"{docs}::docstring"
    )
    assert r["sources"]["rows"]["n_docs"] == 80 and r["sources"]["docs"]["n_docs"] == 80


@pytest.mark.parametrize("tokenizer", ["bpe", "char"])
def test_chinese_text(tmp_path, capsys, tokenizer):
    (tmp_path / "zh.txt").write_text(chinese(), encoding="utf-8")
    data, run = tmp_path / "data", tmp_path / "run"
    argv = ["data", "prepare", "--source", str(tmp_path / "zh.txt"), "--out", str(data), "--json"]
    assert main([*argv, "--tokenizer", tokenizer]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["tokens"]["val"] > 0
    if tokenizer == "char":  # thousands of characters: capped, the rest as UTF-8 bytes
        assert r["steps"]["tokenizer"]["vocab_size"] == 4096
    tok, manifest = load_tokenizer(data / "tokenizer"), read_manifest(data / "shards")
    for split in ("train", "val"):  # every token stands for its exact bytes: bits-per-byte is exact
        tokens = np.concatenate([np.asarray(a) for a in open_split(data / "shards", split)])
        assert int(tok.token_bytes[tokens].sum()) == manifest["splits"][split]["bytes"]
    args = ["train", "--data", str(data), "--out", str(run), "--no-progress", "--max-steps", "4", *TINY]
    assert main([*args, "train.eval_every=4", "train.ckpt_every=4"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert math.isfinite(result["bpb"]) and result["bpb"] > 0


def test_windows_line_endings(tmp_path, capsys):
    (tmp_path / "crlf.txt").write_bytes(play(seed=5).replace("\n", "\r\n").encode())
    r = prepare_train_eval(tmp_path, capsys, "--source", str(tmp_path / "crlf.txt"))
    assert r["sources"]["crlf"]["doc_split"] == {"paragraphs": 1} and r["sources"]["crlf"]["n_docs"] > 5
