"""Task builders on a tiny fake corpus: genre, speaker, NER tags from dramatis personae, Folio alignment."""

from __future__ import annotations

import json

from lmforge.cli import main
from lmforge.finetune import builders as B

MODERN = """HAMLET

PERSONS REPRESENTED.

Claudius, King of Denmark.
Hamlet, Son to the former.
Horatio, Friend to Hamlet.
A Gentleman, Courtier.

ACT I.

Scene I. Elsinore.

Ber.
Who's there? Nay, answer me: stand, and unfold yourself.

Fran.
Long live the king! Hamlet and Horatio are coming now.

[Enter Horatio.]

Hor.
Friends to this ground, good Claudius, and liegemen to the Dane.

Ham.
I have of late lost all my mirth, and Horatio knows it well.
"""

FOLIO = """The Tragedie of Hamlet

Actus Primus. Scoena Prima.

Enter Barnardo and Francisco two Centinels.

  Barnardo. Who's there? Nay answer me: Stand & vnfold
your selfe

   Fran. Long liue the King, Hamlet and Horatio are comming now

Enter Horatio.

  Hor. Friends to this ground, good Claudius, and Leige-men to the Dane
"""


def corpus():
    return {
        "modern": {"hamlet": MODERN, "tempest": MODERN.replace("Hamlet", "Prospero")},
        "folio": {"hamlet": FOLIO},
    }


def test_parse_both_editions_and_align_speeches():
    personae, speeches = B.parse_modern(MODERN)
    assert personae[0].startswith("Claudius") and [s for s, _ in speeches] == ["Ber", "Fran", "Hor", "Ham"]
    folio = B.parse_folio(FOLIO)
    assert folio[0] == ("Barnardo", "Who's there? Nay answer me: Stand & vnfold your selfe")
    pairs = B.align([t for _, t in folio], [t for _, t in speeches], 0.7)
    assert [p[1] for p in pairs] == [t for _, t in speeches[:3]]  # Hamlet's speech has no Folio twin
    assert B.normalise("Stand & vnfold your selfe") == "stand unfold your selfe"


def test_names_and_bio_tags():
    names = B.names_from_personae(["Claudius, King of Denmark.", "SIR TOBY BELCH, Uncle.", "A Gentleman."])
    assert ("Claudius",) in names and ("Toby", "Belch") in names and ("Gentleman",) not in names
    assert B.tag_line(["Good", "Toby", "Belch", "and", "Claudius"], names) == [
        "O",
        "B-PER",
        "I-PER",
        "O",
        "B-PER",
    ]


def test_each_task_builds_examples():
    texts = corpus()
    genre = B.build("genre", texts, max_chars=200)
    assert {e["label"] for e in genre} == {"tragedy", "comedy"}  # Hamlet and The Tempest, per the Folio
    speaker = B.build("speaker", texts, max_chars=200, speakers=2)
    assert len({e["label"] for e in speaker}) == 2
    ner = B.build("ner", texts)
    tagged = [e for e in ner if "B-PER" in e["tags"]]
    assert tagged and all(len(e["tokens"]) == len(e["tags"]) for e in ner)
    assert any(
        t == "Horatio" and g == "B-PER" for e in tagged for t, g in zip(e["tokens"], e["tags"], strict=True)
    )
    pairs = B.build("translate", texts)
    assert {
        "source": "Friends to this ground, good Claudius, and Leige-men to the Dane",
        "target": "Friends to this ground, good Claudius, and liegemen to the Dane.",
    } in pairs


def test_write_task_splits_and_documents(tmp_path):
    examples = [{"text": f"line {i}", "label": "a" if i % 2 else "b"} for i in range(100)]
    card = B.write_task(tmp_path, "genre", examples, {"limit": 100})
    train = (tmp_path / "train.jsonl").read_text().splitlines()
    val = (tmp_path / "val.jsonl").read_text().splitlines()
    assert len(train) + len(val) == 100 and 0 < len(val) < 30
    assert card["examples"] == {"train": len(train), "val": len(val)} and "Folio" in card["how"]
    assert json.loads((tmp_path / "card.json").read_text())["finetune_task"] == "classify"


def test_cli_bad_settings_are_one_line(tmp_path, capsys):
    assert main(["data", "tasks", "--task", "genre", "--out", str(tmp_path), "--limit", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: need --limit")
