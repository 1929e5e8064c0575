"""Small file helpers shared by the data stage: atomic writes and folders of JSONL documents.

Why atomic: every artifact (cleaned documents, tokenizer, shards) is written under a temporary name
and renamed into place, so an interrupted run never leaves a half-written file that a later stage
would trust. A folder is built whole in a sibling temporary folder and swapped in by rename.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmforge.errors import UserError

DOCS_PER_FILE_BYTES = 256 << 20  # start a new docs_NNNNN.jsonl after this many bytes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process: not ours to judge
    return True


def remove_stale_temps(final: Path) -> list[str]:
    """Delete the `.NAME.tmp-PID-*` / `.NAME.old-PID` siblings of `final` left by a killed process.

    Only folders whose PID is no longer running are removed, so a second prepare running at the same
    time into the same folder keeps its own temporary folder. Returns the names removed."""
    final = Path(final)
    removed = []
    if not final.parent.is_dir():
        return removed
    for kind in ("tmp", "old"):
        for path in final.parent.glob(f".{glob.escape(final.name)}.{kind}-*"):
            pid = path.name[len(final.name) + len(kind) + 3 :].split("-")[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
    return removed


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `final`, on error it is removed.

    The temporary name carries the PID (`.NAME.tmp-PID-XXXX`) so that the next run can tell a
    leftover of a killed process from a folder still being written, and remove only the former."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-{os.getpid()}-"))
    # mkdtemp makes the folder private (0700); a data folder gets the usual umask like any mkdir.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
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
