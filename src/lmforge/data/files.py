"""Small file helpers shared by the data stage: atomic writes and folders of JSONL documents.

Why atomic: every artifact (cleaned documents, tokenizer, shards) is written under a temporary name
and renamed into place, so an interrupted run never leaves a half-written file that a later stage
would trust. A folder is built whole in a sibling temporary folder and swapped in by rename.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmforge.errors import UserError

DOCS_PER_FILE_BYTES = 256 << 20  # start a new docs_NNNNN.jsonl after this many bytes


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `final`, on error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, obj: object) -> None:
    """Write JSON to a temporary name in the same folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"no readable {path.name} in '{path.parent}'; run {what} first") from None


class DocWriter:
    """Append {"text", "source"} lines to folder/docs_00000.jsonl, docs_00001.jsonl, ..."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.index = 0
        self.written = 0
        self.fh = None

    def write(self, text: str, source: str) -> None:
        if self.fh is None or self.written >= DOCS_PER_FILE_BYTES:
            self.close()
            self.fh = open(self.folder / f"docs_{self.index:05d}.jsonl", "w", encoding="utf-8")  # noqa: SIM115
            self.index += 1
            self.written = 0
        line = json.dumps({"text": text, "source": source}, ensure_ascii=False) + "\n"
        self.fh.write(line)
        self.written += len(line)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def read_docs(folder: Path, what: str) -> Iterator[tuple[str, str]]:
    """(text, source) of every document in folder/docs_*.jsonl, in order."""
    files = sorted(Path(folder).glob("docs_*.jsonl"))
    if not files:
        raise UserError(f"no documents in '{folder}'; run {what} first")
    for path in files:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                try:
                    doc = json.loads(line)
                    yield doc["text"], doc["source"]
                except (ValueError, KeyError, TypeError):
                    raise UserError(f"{path}:{lineno} is not a document line; rerun {what}") from None
