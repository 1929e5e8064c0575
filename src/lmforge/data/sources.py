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

import gzip
import re
import zlib
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

from lmforge.data import builtin
from lmforge.data.readers import (
    SUFFIXES,
    TEXT_SUFFIXES,
    checked_encoding,
    csv_records,
    file_kind,
    invalid_bytes,
    jsonl_records,
    list_files,
    parquet_records,
    records_to_docs,
    text_docs,
)
from lmforge.data.source_spec import DOC_SPLITS, CollectConfig, SourceSpec, SourceStats, parse_ext
from lmforge.errors import UserError

__all__ = ["DOC_SPLITS", "CollectConfig", "SourceSpec", "SourceStats", "parse_ext"]


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
    kind = file_kind(path, src.ext)
    if kind in (*TEXT_SUFFIXES, "code"):
        stats.code_files += kind == "code"
        for doc in text_docs(path, cfg, stats):
            if doc.strip():
                yield doc
            else:
                stats.empty_docs += 1
        return
    invalid_before = invalid_bytes[0]
    if kind == ".jsonl":
        records = jsonl_records(path, src, cfg, stats)
    elif kind == ".csv":
        records = csv_records(path, src, cfg, stats)
    else:
        records = parquet_records(path, src)
    yield from checked_encoding(path, cfg, invalid_before, records_to_docs(records, cfg, stats))


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
        yield from records_to_docs(batch[src.text_field], cfg, stats)


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
    start = invalid_bytes[0]
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
            stats.invalid_utf8_bytes = invalid_bytes[0] - start
            yield doc
    finally:
        stats.invalid_utf8_bytes = invalid_bytes[0] - start


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
