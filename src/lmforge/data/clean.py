"""Cleaning: a declared list of steps, each counting what it kept, changed or dropped, with examples.

Why a declared list rather than one big function: the report *is* the list. Every step has a name, a
one-line rule and its threshold, and reports `kept` / `dropped` (filters) or `changed` (edits) with a
few short examples, so a user can see what cleaning did to their corpus and tune one knob at a time.

The steps, in order (edits first, so the filters and the hashes see normalised text):
  nfc             Unicode NFC normalisation (one code point sequence per visible character)
  invalid_utf8    bytes that were not UTF-8 were replaced with U+FFFD when read (counted per source);
                  here the documents holding U+FFFD are counted
  control_chars   control characters and NUL removed (tab, newline and carriage return kept)
  whitespace      CRLF / CR -> LF, Unicode spaces -> space, trailing spaces cut, 3+ newlines -> 2
  boilerplate     Project Gutenberg headers, footers and licence blocks removed
  too_short       fewer than `min_chars` characters
  too_long        more than `max_chars` characters
  long_line       a line longer than `max_line_chars` (minified code, base64, data dumps)
  symbol_ratio    more than `max_symbol_ratio` of non-space characters neither letters nor digits
  repeated_lines  more than `max_dup_line_frac` of the characters in lines repeated within the document
                  (characters, not lines: a play repeats its short speaker names hundreds of times)
  exact_dedup     same text after case folding and whitespace collapsing (see dedup.py)
  near_dedup      MinHash LSH, Jaccard >= `near_threshold` on word 5-grams (see dedup.py)

Why a guard on the filters: the heuristics (too_short .. repeated_lines) were made for scraped web
pages; on a play, a book, a transcript or source code they can judge most of the corpus "bad". So if
one of them would remove more than `max_filter_frac` of a source's text, cleaning stops with an error
naming that rule and the flag that relaxes it, instead of training on what is left. Sources read with
`--ext` (code, markup) get the `code` profile: the web-page rules symbol_ratio and repeated_lines are
not applied to them (indentation, brackets and repeated `}` lines are what code looks like).

Output: DATA_DIR/clean/docs_NNNNN.jsonl ({"text", "source"} per line; written to a temporary folder
that is renamed into place) and clean/clean_report.json.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from lmforge.data.dedup import ExactDedup, NearDedup
from lmforge.errors import UserError

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_USPACE = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_TRAILING = re.compile(r"[ \t]+\n")
_BLANKS = re.compile(r"\n{3,}")
_SYMBOL_FREE = re.compile(r"[\w\s]+")
_GUT_START = re.compile(
    r"^.*(\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG|\*END\*THE SMALL PRINT).*$", re.I | re.M
)
_GUT_END = re.compile(
    r"^.*(\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|END OF (THE )?PROJECT GUTENBERG).*$", re.I | re.M
)
_LICENCE = re.compile(r"<<THIS ELECTRONIC VERSION OF.*?>>", re.S)


@dataclass
class CleanConfig:
    min_chars: int = 50  # drop documents shorter than this (characters, after the edits)
    max_chars: int = 1_000_000  # drop longer ones (sources already cut documents at --max-doc-chars)
    max_line_chars: int = 100_000  # drop documents holding a longer line
    max_symbol_ratio: float = 0.3  # max fraction of non-space chars that are neither letter nor digit
    max_dup_line_frac: float = 0.3  # max fraction of line characters in lines repeated in the document
    exact_dedup: bool = True  # drop exact duplicates (normalised text)
    near_dedup: bool = True  # drop near duplicates (MinHash LSH)
    near_threshold: float = 0.8  # Jaccard similarity of word 5-gram sets counted as near duplicate
    num_perm: int = 128  # MinHash permutations (more = better estimate, slower)
    shingle_words: int = 5  # words per shingle
    max_filter_frac: float = 0.25  # stop if one heuristic rule would drop more of a source's text

    def __post_init__(self) -> None:
        if not 0 < self.near_threshold <= 1:
            raise UserError(f"--near-threshold ({self.near_threshold}) must be in (0, 1]")
        for flag, value in (
            ("--max-symbol-ratio", self.max_symbol_ratio),
            ("--max-dup-line-frac", self.max_dup_line_frac),
        ):
            if not 0 <= value <= 1:  # nan would switch the filter off without a word
                raise UserError(f"{flag} ({value}) must be in [0, 1] (1 turns the filter off)")
        if self.max_line_chars < 1:
            raise UserError(f"--max-line-chars ({self.max_line_chars}) must be at least 1")
        if not 0 < self.max_filter_frac <= 1:
            raise UserError(f"--max-filter-frac ({self.max_filter_frac}) must be in (0, 1]")
        if self.min_chars < 0 or self.max_chars <= self.min_chars:
            raise UserError(
                f"--min-chars ({self.min_chars}) must be >= 0 and below --max-chars ({self.max_chars})"
            )


# The flag that relaxes each rule, for error hints (a hint must name a flag that really helps).
FLAGS = {
    "too_short": ("--min-chars", "0"),
    "too_long": ("--max-chars", "10000000"),
    "long_line": ("--max-line-chars", "10000000"),
    "symbol_ratio": ("--max-symbol-ratio", "1"),
    "repeated_lines": ("--max-dup-line-frac", "1"),
    "exact_dedup": ("--no-dedup", ""),
    "near_dedup": ("--near-threshold", "1"),
}
GUARDED = ("too_short", "too_long", "long_line", "symbol_ratio", "repeated_lines")
WEB_ONLY = ("symbol_ratio", "repeated_lines")  # not applied to the code profile


def relax_hint(rule: str) -> str:
    flag, value = FLAGS[rule]
    return f"{flag} {value}".strip()


def preview(text: str, n: int = 70) -> str:
    """A short one-line excerpt for reports."""
    flat = " ".join(text[: n * 2].split())
    return flat[:n] + ("..." if len(flat) > n or len(text) > n * 2 else "")


@dataclass
class StepStats:
    name: str
    kind: str  # "edit" (may change a document) | "filter" (may drop it)
    rule: str  # the rule with its threshold, for the report
    docs_in: int = 0
    kept: int = 0
    dropped: int = 0
    changed: int = 0
    chars_removed: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def example(self, text: str) -> None:
        if len(self.examples) < 3:
            self.examples.append(text)


# An edit returns the new text; a filter returns None to keep the document, else a why-string.
Edit = Callable[[str, StepStats], str]
Filter = Callable[[str], "str | None"]


def _nfc(text: str, st: StepStats) -> str:
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def _utf8(text: str, st: StepStats) -> str:
    n = text.count("\ufffd")
    if n:
        st.counts["replacement_chars"] = st.counts.get("replacement_chars", 0) + n
        st.example(f"{n} x U+FFFD in: {preview(text)}")
    return text


def _control(text: str, st: StepStats) -> str:
    nul = text.count("\x00")
    out = _CONTROL.sub("", text)
    if nul:
        st.counts["nul_chars"] = st.counts.get("nul_chars", 0) + nul
    if len(out) != len(text):
        st.example(f"{len(text) - len(out)} control chars ({nul} NUL) in: {preview(out)}")
    return out


def _whitespace(text: str, st: StepStats) -> str:
    out = text.replace("\r\n", "\n").replace("\r", "\n")
    out = _USPACE.sub(" ", out)
    out = _TRAILING.sub("\n", out)
    return _BLANKS.sub("\n\n", out).strip()


def _boilerplate(text: str, st: StepStats) -> str:
    out = _LICENCE.sub("", text)
    start = _GUT_START.search(out)
    if start:
        out = out[start.end() :]
    end = _GUT_END.search(out)
    if end:
        out = out[: end.start()]
    if len(out) != len(text):
        st.example(f"removed {len(text) - len(out)} chars around: {preview(out)}")
        out = out.strip()
    return out


def _repeated_fraction(text: str) -> float:
    lines = [line.strip() for line in text.split("\n")]
    counts = Counter(line for line in lines if line)
    total = sum(len(line) * c for line, c in counts.items())
    dup = sum(len(line) * (c - 1) for line, c in counts.items() if c > 1)
    return dup / total if total else 0.0


def _symbol_ratio(text: str) -> float:
    nonspace = len(text) - sum(text.count(c) for c in " \n\t")
    return len(_SYMBOL_FREE.sub("", text)) / nonspace if nonspace else 0.0


def _longest_line(text: str) -> int:
    return max(map(len, text.split("\n")), default=0)


class Cleaner:
    """Apply the declared steps to one document at a time; `report()` returns the counts."""

    def __init__(self, cfg: CleanConfig, code_sources: set[str] | frozenset[str] = frozenset()):
        c = cfg
        self.cfg = cfg
        self.code_sources = set(code_sources)  # sources cleaned with the code profile
        self.edits: list[tuple[StepStats, Edit]] = [
            (StepStats("nfc", "edit", "Unicode NFC normalisation"), _nfc),
            (StepStats("invalid_utf8", "edit", "invalid UTF-8 bytes replaced by U+FFFD when read"), _utf8),
            (
                StepStats("control_chars", "edit", "control characters and NUL removed (tab, newline kept)"),
                _control,
            ),
            (
                StepStats("whitespace", "edit", "CRLF->LF, unicode spaces, trailing spaces, 3+ newlines->2"),
                _whitespace,
            ),
            (
                StepStats("boilerplate", "edit", "Project Gutenberg header/footer/licence removed"),
                _boilerplate,
            ),
        ]
        self.filters: list[tuple[StepStats, Filter]] = [
            (StepStats("too_short", "filter", f"fewer than {c.min_chars} chars"),
             lambda t: f"{len(t)} chars" if len(t) < c.min_chars else None),
            (StepStats("too_long", "filter", f"more than {c.max_chars} chars"),
             lambda t: f"{len(t)} chars" if len(t) > c.max_chars else None),
            (StepStats("long_line", "filter", f"a line longer than {c.max_line_chars} chars"),
             lambda t: f"line of {n} chars" if (n := _longest_line(t)) > c.max_line_chars else None),
            (StepStats("symbol_ratio", "filter", f"symbol ratio above {c.max_symbol_ratio}"),
             lambda t: f"ratio {r:.2f}" if (r := _symbol_ratio(t)) > c.max_symbol_ratio else None),
            (StepStats("repeated_lines", "filter", f"repeated-line chars above {c.max_dup_line_frac}"),
             lambda t: f"fraction {r:.2f}" if (r := _repeated_fraction(t)) > c.max_dup_line_frac else None),
        ]  # fmt: skip
        if c.exact_dedup:
            exact = ExactDedup()
            rule = "same text after case folding and whitespace collapsing"
            self.filters.append((StepStats("exact_dedup", "filter", rule), self._dedup_filter(exact)))
        if c.near_dedup:
            near = NearDedup(c.near_threshold, c.num_perm, c.shingle_words)
            rule = f"MinHash LSH: Jaccard >= {c.near_threshold} on word {c.shingle_words}-grams"
            rule += f", {c.num_perm} perms"
            self.filters.append((StepStats("near_dedup", "filter", rule), self._dedup_filter(near)))
        self.docs_in = self.docs_out = self.chars_in = self.chars_out = 0
        self.per_source: dict[str, dict[str, int]] = {}

    @staticmethod
    def _dedup_filter(index: ExactDedup | NearDedup) -> Filter:
        def check(text: str) -> str | None:
            dup = index.check(text, preview(text, 50))
            return None if dup is None else f"similarity {dup.similarity:.2f} to '{dup.of}'"

        return check

    def __call__(self, text: str, source: str) -> str | None:
        """The cleaned text, or None if a filter dropped the document."""
        src = self.per_source.setdefault(
            source, {"docs_in": 0, "docs_out": 0, "chars_in": 0, "chars_out": 0, "dropped_chars": {}}
        )
        src["docs_in"] += 1
        src["chars_in"] += len(text)
        self.docs_in += 1
        self.chars_in += len(text)
        for st, edit in self.edits:
            t0 = time.perf_counter()
            st.docs_in += 1
            out = edit(text, st)
            if out != text:
                st.changed += 1
                st.chars_removed += len(text) - len(out)
            text = out
            st.kept += 1
            st.seconds += time.perf_counter() - t0
        code = source in self.code_sources
        for st, keep in self.filters:
            if code and st.name in WEB_ONLY:
                continue
            t0 = time.perf_counter()
            st.docs_in += 1
            why = keep(text)
            st.seconds += time.perf_counter() - t0
            if why is not None:
                st.dropped += 1
                st.chars_removed += len(text)
                src["dropped_chars"][st.name] = src["dropped_chars"].get(st.name, 0) + len(text)
                st.example(f"{why}: {preview(text, 50)}")
                return None
            st.kept += 1
        src["docs_out"] += 1
        src["chars_out"] += len(text)
        self.docs_out += 1
        self.chars_out += len(text)
        return text

    def report(self) -> dict:
        steps = [asdict(st) for st, _ in self.edits] + [asdict(st) for st, _ in self.filters]
        for step in steps:
            step["seconds"] = round(step["seconds"], 4)
        return {
            "config": asdict(self.cfg),
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "chars_in": self.chars_in,
            "chars_out": self.chars_out,
            "steps": steps,
            "per_source": self.per_source,
            "code_sources": sorted(self.code_sources),
            "max_filter_frac": self.cfg.max_filter_frac,
        }

    def check_not_empty(self) -> None:
        """Stop when everything, a whole source, or too much of one source's text was filtered out."""
        if self.docs_in and not self.docs_out:
            why = ", ".join(f"{st.name}: {st.dropped}" for st, _ in self.filters if st.dropped)
            worst = max(self.filters, key=lambda f: f[0].chars_removed)[0].name
            raise UserError(
                f"the cleaning filters removed all {self.docs_in} documents ({why}); "
                f"relax the {worst} filter with {relax_hint(worst)}"
            )
        for name, src in self.per_source.items():
            dropped = src["dropped_chars"]
            if src["docs_in"] and not src["docs_out"]:
                worst = max(dropped, key=dropped.get)
                raise UserError(
                    f"the cleaning filters removed all {src['docs_in']} documents of source '{name}' "
                    f"({', '.join(f'{k}: {v:,} chars' for k, v in dropped.items())}); relax the {worst} "
                    f"filter with {relax_hint(worst)}"
                )
            for rule in GUARDED:
                share = dropped.get(rule, 0) / max(src["chars_in"], 1)
                if share > self.cfg.max_filter_frac:
                    raise UserError(
                        f"the {rule} filter would remove {share:.0%} of the text of source '{name}' "
                        f"(over --max-filter-frac {self.cfg.max_filter_frac:g}); a heuristic for web pages: "
                        f"relax it with {relax_hint(rule)}, or accept the loss with --max-filter-frac 1"
                    )
