"""Cleaning steps one by one, planted exact and near duplicates, and the emptied-corpus error."""

from __future__ import annotations

import json
import random

import pytest

from lmforge.data.clean import CleanConfig, Cleaner
from lmforge.data.dedup import NearDedup, normalised_hash
from lmforge.data.prepare import clean
from lmforge.errors import UserError

WORDS = [f"w{i}" for i in range(500)]


def prose(seed: int, n: int = 400) -> str:
    rng = random.Random(seed)
    words = [rng.choice(WORDS) for _ in range(n)]
    return "\n".join(" ".join(words[i : i + 10]) for i in range(0, n, 10))


def steps(cleaner: Cleaner) -> dict[str, dict]:
    return {s["name"]: s for s in cleaner.report()["steps"]}


def test_edits_normalise_and_count():
    c = Cleaner(CleanConfig(near_dedup=False))
    decomposed = "Cafe\u0301 " + prose(1)
    out = c(decomposed, "s")
    assert out.startswith("Café ") and "\u0301" not in out
    out = c("nul\x00 here\x07 and\r\nCRLF   \n\n\n\n\nmany blanks\u00a0nbsp\t \n" + prose(2), "s")
    assert "\x00" not in out and "\x07" not in out and "\r" not in out
    assert "nul here and\nCRLF\n\nmany blanks nbsp\n" in out
    s = steps(c)
    assert s["nfc"]["changed"] == 1 and s["control_chars"]["counts"]["nul_chars"] == 1
    assert s["control_chars"]["chars_removed"] == 2 and s["whitespace"]["changed"] >= 1
    assert c("bad \ufffd byte " + prose(3), "s") is not None
    assert steps(c)["invalid_utf8"]["counts"]["replacement_chars"] == 1


def test_gutenberg_boilerplate_removed():
    body = prose(4)
    doc = (
        "The Project Gutenberg EBook of Things\nRelease date...\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK THINGS ***\n\n" + body + "\n\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK THINGS ***\nLicence text here, long legal words.\n"
    )
    c = Cleaner(CleanConfig())
    assert c(doc, "s") == body
    assert steps(c)["boilerplate"]["changed"] == 1
    licence = "<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS IS COPYRIGHT\nBLAH>>\n\n"
    assert c(licence + prose(5), "s") == prose(5)


@pytest.mark.parametrize(
    ("doc", "step"),
    [
        ("too short", "too_short"),
        (prose(6) + " " + "x" * 2000, "long_line"),
        ("#$%& @@!! ~~^^ " * 20 + prose(7, 30), "symbol_ratio"),
        ("the same line again and again\n" * 30 + prose(8, 40), "repeated_lines"),
    ],
)
def test_quality_filters_drop_and_report(doc, step):
    c = Cleaner(CleanConfig(max_line_chars=1000))
    assert c(doc, "s") is None
    s = steps(c)[step]
    assert s["dropped"] == 1 and s["examples"]


def test_too_long_filter():
    c = Cleaner(CleanConfig(max_chars=1000))
    assert c(prose(9), "s") is None and steps(c)["too_long"]["dropped"] == 1


def test_planted_exact_and_near_duplicates_found_with_threshold():
    original = prose(10)
    words = original.split(" ")
    for i in (40, 150, 300):  # a lightly edited copy: 3 words changed
        words[i] = "edited"
    edited = " ".join(words)
    c = Cleaner(CleanConfig())
    kept = [
        c(d, "s") for d in (original, prose(11), original.upper().replace("\n", "  \n"), edited, prose(12))
    ]
    assert [k is not None for k in kept] == [True, True, False, False, True]
    s = steps(c)
    assert s["exact_dedup"]["dropped"] == 1 and s["near_dedup"]["dropped"] == 1
    assert "0.8" in s["near_dedup"]["rule"] and "5-grams" in s["near_dedup"]["rule"]
    assert (
        "similarity 0.9" in s["near_dedup"]["examples"][0]
        or "similarity 1.00" in s["near_dedup"]["examples"][0]
    )
    assert c.report()["config"]["near_threshold"] == 0.8


def test_near_dedup_keeps_different_texts():
    near = NearDedup(threshold=0.8)
    assert all(near.check(prose(s), str(s)) is None for s in range(30))
    assert normalised_hash("A  b\nC") == normalised_hash("a b c")


def test_clean_step_on_disk_and_emptied_corpus(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    docs = [prose(20), prose(20), "tiny"]
    (raw / "docs_00000.jsonl").write_text(
        "".join(json.dumps({"text": d, "source": "s"}) + "\n" for d in docs)
    )
    report = clean(tmp_path, CleanConfig())
    assert report["docs_in"] == 3 and report["docs_out"] == 1
    on_disk = json.loads((tmp_path / "clean" / "clean_report.json").read_text())
    assert on_disk["docs_out"] == 1 and on_disk["per_source"]["s"]["docs_out"] == 1
    lines = (tmp_path / "clean" / "docs_00000.jsonl").read_text().splitlines()
    assert [json.loads(x)["text"] for x in lines] == [prose(20)]
    with pytest.raises(UserError, match="removed all 3 documents") as err:
        clean(tmp_path, CleanConfig(min_chars=100_000, max_chars=200_000))
    assert "too_short: 3" in str(err.value)
    assert (tmp_path / "clean" / "docs_00000.jsonl").exists()  # the failed run left the old output alone
