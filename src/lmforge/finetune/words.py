"""Word-by-word translation (`finetune --task translate --unit word`): for rewrites that keep the words.

Spelling normalisation (First Folio -> modern) changes a minority of words and keeps the rest, so
copying the source line already scores high (BLEU about 40 on the demonstration set). A small model
that writes the whole line itself loses that: one wrong character anywhere costs more than the few
fixes it makes. Here the model sees one word at a time instead (``selfe <sep> self <end>``): short
sequences that a character-level model learns to copy within a few hundred steps, many more training
examples (every aligned word of every pair), and the line is rebuilt by replacing each word of the
source in place -- spacing and punctuation are the source's, exactly as in the copy baseline. A
word stays as it is when the model scores it at least as high as its rewrite, or when the rewrite
is too far from it to be a respelling (``plausible``). What is lost: edits that merge or split
words ("your selfe" -> "yourself") and punctuation changes.

The word pairs come from aligning each training pair's words with difflib: equal runs and
one-for-one replacements of equal length give pairs (a word and its new spelling); other edits are
skipped rather than guessed.
"""

from __future__ import annotations

import difflib
import re

WORD_RE = re.compile(r"\w+(?:['-]\w+)*")
# A rewrite may change at most this share of a word's characters (and always at least one): the word
# unit is for rewrites that keep the words, and a small model's failures are scrambled long words
# ("Balthasar" -> "Bathartath"), which this rejects in favour of the word as it was.
MAX_EDIT_SHARE = 0.25


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions of one character each)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def plausible(word: str, rewrite: str) -> bool:
    """Whether `rewrite` is close enough to `word` to be a respelling of it (MAX_EDIT_SHARE)."""
    return edit_distance(word, rewrite) <= max(1, int(MAX_EDIT_SHARE * len(word)))


def aligned_words(source: str, target: str) -> list[tuple[str, str]]:
    """(source word, target word) pairs of one translation pair, in order."""
    a, b = WORD_RE.findall(source), WORD_RE.findall(target)
    matcher = difflib.SequenceMatcher(None, [w.lower() for w in a], [w.lower() for w in b], autojunk=False)
    pairs = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal" or (op == "replace" and i2 - i1 == j2 - j1):
            pairs += zip(a[i1:i2], b[j1:j2], strict=True)
    return pairs


def word_examples(examples: list[dict]) -> list[dict]:
    """Every aligned word of `examples` as a {"source", "target"} example (repeats kept: frequency counts)."""
    return [{"source": s, "target": t} for e in examples for s, t in aligned_words(e["source"], e["target"])]


def unique_words(lines: list[str]) -> list[str]:
    """The distinct words of `lines`, in first-seen order."""
    return list(dict.fromkeys(w for line in lines for w in WORD_RE.findall(line)))


def rewrite(line: str, mapping: dict[str, str]) -> str:
    """`line` with each word replaced by its mapping (unmapped or empty translations keep the word)."""
    return WORD_RE.sub(lambda m: mapping.get(m.group(0)) or m.group(0), line)
