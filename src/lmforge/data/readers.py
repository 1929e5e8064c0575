"""Reading a source's files: which files of a folder are read, and each file's documents.

`list_files` walks a folder (skipping, and listing with the reason, lmforge's own output folders,
binary files and unknown extensions); the readers turn one file -- text, JSONL, CSV or Parquet,
each optionally gzipped -- into documents, cut where sources.py's docstring says (`cut_point`,
`chunk_stream`), streaming in bounded memory and counting every decision in the source's stats.

Why a module of its own: sources.py says *what* a source is and walks them; this is the byte-level
work, where the encoding checks and the record-size limits (MAX_RECORD_BYTES) live.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import itertools
import json
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from lmforge.data.source_spec import CollectConfig, SourceSpec, SourceStats
from lmforge.errors import UserError

SUFFIXES = (".txt", ".md", ".jsonl", ".csv", ".parquet")
TEXT_SUFFIXES = (".txt", ".md")
BLOCK_BYTES = 1 << 20  # read text files in 1 MB blocks
# Longest JSONL line / CSV field read: one record is held whole while parsed (about twice its size),
# so a longer one is a bad line (with --skip-bad-lines: skipped and counted), not a memory spike.
MAX_RECORD_BYTES = 64 << 20
MAX_INVALID_FRAC = 0.1  # more invalid bytes per character than this: the file is in another encoding
BREAKS = {  # where a document may end, best first
    "paragraphs": ("\n\n", "\n\r\n", "\n", " "),
    "lines": ("\n", " "),
    "file": ("\n\n", "\n\r\n", "\n", " "),
}
LMFORGE_MARKERS = ("prepare_report.json", "run.json")  # a folder holding one is lmforge's own output
MAX_SKIPPED_LISTED = 1000  # skipped files listed by name in sources.json (all are counted)
# Invalid UTF-8 is replaced with U+FFFD and the bad bytes are counted, via a named codec error handler.
invalid_bytes = [0]


def _count_and_replace(exc: UnicodeDecodeError) -> tuple[str, int]:
    invalid_bytes[0] += exc.end - exc.start
    return "\ufffd", exc.end


codecs.register_error("lmforge.count", _count_and_replace)


def cut_point(
    text: str, limit: int, breaks: tuple[str, ...] = BREAKS["paragraphs"], start: int = 0
) -> tuple[int, bool]:
    """Where to cut `text[start:]` (longer than `limit`): after the last break in its second half."""
    lo, hi = start + limit // 2, start + limit
    for sep in breaks:
        at = text.rfind(sep, lo, hi)
        if at >= 0:
            return at + len(sep), False
    return hi, True


def chunk_stream(
    pieces: Iterable[str], max_chars: int, stats: SourceStats, breaks: tuple[str, ...] = BREAKS["paragraphs"]
) -> Iterator[str]:
    """Join `pieces` into documents of at most `max_chars`, cutting at `breaks`; counts the cuts."""
    buf, cut_any = "", False
    for piece in pieces:
        buf += piece
        pos = 0
        while len(buf) - pos > max_chars:
            at, hard = cut_point(buf, max_chars, breaks, pos)
            stats.hard_cuts += hard
            cut_any = True
            yield buf[pos:at]
            pos = at
        buf = buf[pos:]
    stats.oversized_docs += cut_any
    if buf:
        yield buf


def choose_split(sample: str, doc_chars: int) -> str:
    """auto: paragraphs when blank lines are common enough to group, else lines."""
    blank = sample.count("\n\n") + sample.count("\n\r\n")
    return "paragraphs" if blank >= max(2, len(sample) // doc_chars) else "lines"


def _open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115


def _suffix(path: Path) -> str:
    suffixes = path.suffixes[-2:] if path.suffix == ".gz" else path.suffixes[-1:]
    return suffixes[0].lower() if suffixes else ""


def file_kind(path: Path, ext: tuple[str, ...] = ()) -> str:
    """The reader for `path`: a SUFFIXES entry, "code" for an --ext extension, or "" (not read)."""
    suffix = _suffix(path)
    if suffix in ext and suffix not in SUFFIXES:
        return "code"
    return suffix if suffix in SUFFIXES else ""


_CONTROL_BYTES = bytes(set(range(32)) - {9, 10, 12, 13})


def _is_binary(path: Path) -> bool:
    """Over 10% control bytes in the first 8 KB: an image, an archive, a compiled file -- not text.
    (A stray NUL in a text file is text with a NUL, which cleaning removes and counts.)"""
    try:
        with _open_binary(path) as fh:
            head = fh.read(8192)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise UserError(f"'{path}' is a damaged .gz file ({exc}); unpack it again or remove it") from None
    except OSError:
        return True
    return len(head) - len(head.translate(None, _CONTROL_BYTES)) > 0.1 * len(head)


def _codec(encoding: str) -> str:
    """The codec for --encoding: UTF-8 also drops a byte-order mark (files saved by Windows tools)."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def _text_blocks(path: Path, encoding: str = "utf-8") -> Iterator[str]:
    decoder = codecs.getincrementaldecoder(_codec(encoding))(errors="lmforge.count")
    with _open_binary(path) as fh:
        while block := fh.read(BLOCK_BYTES):
            yield decoder.decode(block)
        yield decoder.decode(b"", final=True)


def text_docs(path: Path, cfg: CollectConfig, stats: SourceStats) -> Iterator[str]:
    """Documents of one text file, cut by the --doc-split rule (auto: chosen on its first block)."""
    invalid_before = invalid_bytes[0]
    blocks = _text_blocks(path, cfg.encoding)
    first = next(blocks, "")
    rule = cfg.doc_split
    if rule == "auto":
        rule = choose_split(first, cfg.doc_chars)
    stats.doc_split[rule] = stats.doc_split.get(rule, 0) + 1
    size = cfg.max_doc_chars if rule == "file" else min(cfg.doc_chars, cfg.max_doc_chars)
    yield from checked_encoding(
        path, cfg, invalid_before, chunk_stream(itertools.chain([first], blocks), size, stats, BREAKS[rule])
    )


def checked_encoding(
    path: Path, cfg: CollectConfig, invalid_before: int, docs: Iterable[str]
) -> Iterator[str]:
    """Pass `docs` (all of one file) through; at the end, refuse the file if it is in another encoding."""
    n_chars = non_ascii = 0
    for doc in docs:
        n_chars += len(doc)
        if not doc.isascii():
            non_ascii += len(doc) - len(doc.encode("ascii", "ignore")) - doc.count("\ufffd")
        yield doc
    invalid = invalid_bytes[0] - invalid_before
    # A few stray bytes are replaced and counted, and so is damage inside real UTF-8 (valid accented
    # characters beside the bad bytes). A file with bad bytes but next to no valid non-ASCII characters
    # is in another encoding even when it is mostly ASCII (English with a few accents in Latin-1, a CSV
    # saved by a spreadsheet in cp1252): there every accented character would become U+FFFD.
    if invalid > 16 and (invalid > MAX_INVALID_FRAC * n_chars or non_ascii * 8 < invalid):
        raise UserError(
            f"'{path}' is not {cfg.encoding} text ({invalid:,} invalid bytes in {n_chars:,} characters); "
            "pass its encoding, e.g. --encoding latin-1 (or cp1252 for a spreadsheet's CSV)"
        )


def _name_it(src: SourceSpec) -> str:
    return f"name it: --source {src.spec} --text-field COLUMN (or --source {src.spec}::COLUMN)"


def _bad_line(stats: SourceStats, skip: bool, where: str, why: str, fix: str = "fix the line") -> None:
    if not skip:
        raise UserError(f"{where}: {why}; {fix} or pass --skip-bad-lines to skip and count such lines")
    stats.bad_lines += 1
    if len(stats.bad_line_examples) < 5:
        stats.bad_line_examples.append(f"{where}: {why}")


def _skip_rest(fh: BinaryIO, size: int) -> int:
    """Read past the rest of an over-long line block by block; returns the whole line's size."""
    while raw := fh.readline(BLOCK_BYTES):
        size += len(raw)
        if raw.endswith(b"\n"):
            break
    return size


def jsonl_records(path: Path, src: SourceSpec, cfg: CollectConfig, stats: SourceStats) -> Iterator[Any]:
    # Memory: a record is held as its bytes, then its text, then the parsed value -- each reference
    # dropped as soon as the next exists, so a long record costs a few times its size, and a line
    # over MAX_RECORD_BYTES is never held whole.
    codec = _codec(cfg.encoding)
    with _open_binary(path) as fh:
        lineno = 0
        while raw := fh.readline(MAX_RECORD_BYTES + 1):
            lineno += 1
            where = f"{path}:{lineno}"
            if len(raw) > MAX_RECORD_BYTES and not raw.endswith(b"\n"):
                size, raw = _skip_rest(fh, len(raw)), b""
                limit = MAX_RECORD_BYTES >> 20
                why = f"a record of {size / 1e6:,.0f} MB, over the {limit} MB one line may hold"
                fix = "split it into smaller records (or save the text as .txt, which is read in blocks)"
                _bad_line(stats, cfg.skip_bad_lines, where, why, fix)
                continue
            if raw.isspace():
                continue
            try:
                line = raw.decode(codec)
            except UnicodeDecodeError:
                line = raw.decode(codec, "lmforge.count")
            raw = b""
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                _bad_line(stats, cfg.skip_bad_lines, where, f"not valid JSON ({exc.msg})")
                continue
            finally:
                line = ""
            if not isinstance(obj, dict) or src.text_field not in obj:
                keys = ", ".join(list(obj)[:8]) if isinstance(obj, dict) else type(obj).__name__
                fix = f"name the field: --source {src.spec} --text-field FIELD (or {src.spec}::FIELD)"
                _bad_line(stats, cfg.skip_bad_lines, where, f"no field '{src.text_field}' (has: {keys})", fix)
                continue
            value, obj = obj[src.text_field], None
            yield value
            value = None


def csv_records(path: Path, src: SourceSpec, cfg: CollectConfig, stats: SourceStats) -> Iterator[Any]:
    csv.field_size_limit(MAX_RECORD_BYTES)  # a longer field is refused before it is held whole
    with (
        _open_binary(path) as raw,
        io.TextIOWrapper(raw, _codec(cfg.encoding), errors="lmforge.count", newline="") as fh,
    ):
        reader = csv.DictReader(fh)
        try:
            if src.text_field not in (reader.fieldnames or []):
                cols = ", ".join((reader.fieldnames or [])[:8]) or "none"
                raise UserError(f"{path}: no column '{src.text_field}' (has: {cols}); {_name_it(src)}")
            for row in reader:
                yield row[src.text_field]
        except csv.Error as exc:
            if "field limit" in str(exc):
                raise UserError(
                    f"{path}:{reader.line_num}: a field over the {MAX_RECORD_BYTES >> 20} MB one record may "
                    "hold; split it into smaller records (or save the text as .txt, which is read in blocks)"
                ) from None
            raise UserError(f"{path}:{reader.line_num}: malformed CSV ({exc}); fix the file") from None


def parquet_records(path: Path, src: SourceSpec) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _open_binary(path) as fh:
        try:
            pf = pq.ParquetFile(fh)
            names = pf.schema_arrow.names
            if src.text_field not in names:
                cols = ", ".join(names[:8]) or "none"
                raise UserError(f"{path}: no column '{src.text_field}' (has: {cols}); {_name_it(src)}")
            for batch in pf.iter_batches(columns=[src.text_field], batch_size=256):
                yield from batch.column(0).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            why = str(exc).splitlines()[0][:120]
            raise UserError(f"{path}: not a readable parquet file ({why}); re-export or remove it") from None


def records_to_docs(records: Iterable[Any], cfg: CollectConfig, stats: SourceStats) -> Iterator[str]:
    for value in records:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "lmforge.count")
        if not isinstance(value, str) or not value.strip():
            stats.empty_docs += 1
            continue
        size = min(cfg.doc_chars, cfg.max_doc_chars)
        if len(value) <= size:
            yield value
        else:  # split at paragraph / line breaks like a text file, never cut off
            yield from chunk_stream([value], size, stats)


def _skip(stats: SourceStats, path: str, why: str) -> None:
    stats.skipped_files += 1
    if len(stats.skipped) < MAX_SKIPPED_LISTED:
        stats.skipped.append(f"{path}: {why}")


def _no_files_error(root: Path, found: Counter, binary: int) -> UserError:
    """What the folder holds instead, and the flag that reads it."""
    if not found and not binary:
        return UserError(f"folder '{root}' is empty; put text files in it or pass another --source")
    if not found:
        return UserError(
            f"folder '{root}' holds only binary files ({binary}); pass --source with a folder of text files"
        )
    listing = ", ".join(f"{n} {ext or '(no extension)'}" for ext, n in found.most_common(4))
    top = next((ext for ext, _ in found.most_common() if ext), "")
    hint = f"add --ext {top[1:]} to read them as text" if top else "rename them to .txt"
    return UserError(f"folder '{root}' has no .txt/.md/.jsonl/.csv/.parquet files (it has {listing}); {hint}")


def list_files(root: Path, stats: SourceStats, ext: tuple[str, ...] = ()) -> list[Path]:
    if root.is_file():
        if not file_kind(root, ext):
            suffix = _suffix(root)[1:] or "txt"
            raise UserError(
                f"source '{root}' is not a {'/'.join(SUFFIXES)} file (optionally .gz); "
                f"add --ext {suffix} to read it as text"
            )
        if _is_binary(root):
            raise UserError(f"source '{root}' is a binary file, not text; pass --source with a text file")
        return [root]
    if any((root / name).is_file() for name in LMFORGE_MARKERS):
        raise UserError(
            f"--source '{root}' is an lmforge data or run folder, not text; pass as --source the "
            "files it was made from"
        )
    files, found, binary = [], Counter(), 0
    # lmforge's own output inside a source folder (a data folder made with --out under it, or a run)
    # holds .jsonl documents and logs: read back, they would feed the corpus its own copy.
    own = sorted(
        {p.parent for name in LMFORGE_MARKERS for p in root.rglob(name) if p.parent != root},
        key=lambda p: len(p.parts),
    )
    for folder in own:
        if not any(done in folder.parents for done in own):
            _skip(
                stats, str(folder.relative_to(root)) + "/", "an lmforge data or run folder, not source text"
            )
    # rglob neither follows links to folders (a loop would never end) nor yields broken links: list
    # both as skipped, so that no file the user can see in the folder disappears without a word.
    for link in sorted(p for p in root.rglob("*") if p.is_symlink() and not p.is_file()):
        rel = link.relative_to(root)
        if not any(part.startswith(".") for part in rel.parts):
            why = (
                "link to a folder, not followed; pass it as its own --source"
                if link.is_dir()
                else "broken link"
            )
            _skip(stats, str(rel), why)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or any(f in path.parents for f in own):
            continue
        kind = file_kind(path, ext)
        if kind in ("", ".txt", ".md", "code") and _is_binary(path):
            binary += 1
            _skip(stats, str(rel), "binary content")
        elif kind:
            files.append(path)
        else:
            found[_suffix(path)] += 1
            why = (
                f"extension {_suffix(path)} not read; add --ext {_suffix(path)[1:]}"
                if _suffix(path)
                else "no extension"
            )
            _skip(stats, str(rel), why)
    if not files:
        raise _no_files_error(root, found, binary)
    return files
