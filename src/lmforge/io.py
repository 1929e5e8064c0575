"""One way to write a file and one way to read it back, for every file lmforge keeps.

Why one path: a file is written to a temporary sibling (`.tmp-NAME`), fsynced, and renamed over
its final name, so a crash, a kill or a full disk leaves either the old file or the new one, never a
half-written one that a later stage would trust. Every operating-system failure on the way (disk
full, read-only folder, a file-size limit) becomes one `UserError` that names the file and what to
do, not a traceback.

Reads are checked the same way: `read_json` names the file and says it is missing or damaged;
`iter_jsonl` reads a log line by line in bounded memory and skips (with a warning) the lines a
crash cut short or a disk damaged, because one bad line must not block a resume from an intact
checkpoint.

Append-only logs (`metrics.jsonl`) cannot be renamed into place at every line; `append_line`
writes the whole line in one call and, if the write fails midway, cuts the file back to where it
was, so the log never ends in half a line written by this process.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge.errors import UserError

logger = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
# The prefix of files and folders being written inside a run folder; a start removes any left by a
# process that was killed before it could clean up.
TMP_PREFIXES = (".tmp-",)
MAX_LINE_BYTES = 16 << 20  # longest log line read back; longer ones are skipped, not held in memory

# The errors of a write the machine refused (not a bug): disk full, file-size limit, read-only.
WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS})


def write_error(path: str | Path, exc: BaseException) -> UserError:
    """The one-line error for a failed write of `path`."""
    code = getattr(exc, "errno", None)
    reason = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    io_error = re.search(r"I/O error: (.+?) \(os error \d+\)", reason)  # safetensors' wording
    reason = io_error.group(1) if io_error else reason
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = "make the folder writable or choose another output folder"
    else:
        hint = "free disk space (or raise the file-size limit) and run the command again"
    return UserError(f"could not write {path} ({reason}); {hint}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s content to; on success it is fsynced and renamed into
    place. For writers that want a file name (safetensors, matplotlib, csv)."""
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise write_error(path, exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary + fsync + rename)."""
    with writing(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")


def append_line(path: str | Path, line: str) -> None:
    """Append one line to a log; a failed write leaves the file as it was before the call."""
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        start = os.fstat(fd).st_size
        written = 0
        while written < len(data):  # unbuffered: a short write is retried, a failed one undone
            written += os.write(fd, data[written:])
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise write_error(path, exc) from None
    finally:
        os.close(fd)


def read_json(path: str | Path, fix: str = "") -> Any:
    """Parse a JSON file lmforge wrote; missing or damaged -> a UserError naming the file.

    `fix`: what the user can do about it, appended to the message.
    """
    path = Path(path)
    hint = f"; {fix}" if fix else ""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{path} is missing{hint}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a file{hint}") from None
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({exc.strerror}){hint}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is damaged (not UTF-8 text){hint}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UserError(f"{path} is damaged (not valid JSON: {exc}){hint}") from None


def read_cache_entries(path: Path | None, fmt: int, what: str) -> dict:
    """The `entries` object of a cache file `write_cache_entries` wrote in format `fmt`; {} for none, a
    missing or other-format file, or a damaged one (with a warning naming `what`: it is rewritten)."""
    if path is None or not path.is_file():
        return {}
    try:
        data = read_json_object(path)
    except UserError as exc:
        logger.warning(f"warning: ignoring {what} ({exc}); it will be rewritten")
        return {}
    entries = data.get("entries")
    return entries if data.get("format") == fmt and isinstance(entries, dict) else {}


def write_cache_entries(path: Path, fmt: int, entries: dict, what: str) -> None:
    """Atomically; a failed write is a warning naming `what` (the next run measures again), never an
    error: a cache that cannot be written costs time, not the run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"format": fmt, "entries": entries})
    except (OSError, UserError) as exc:
        logger.warning(f"warning: could not cache {what} in {path} ({exc})")


def read_json_object(path: str | Path, fix: str = "") -> dict:
    """`read_json` for files that must hold one JSON object."""
    value = read_json(path, fix)
    if not isinstance(value, dict):
        hint = f"; {fix}" if fix else ""
        raise UserError(f"{path} is damaged (a JSON {type(value).__name__}, not an object){hint}")
    return value


def iter_jsonl(path: str | Path, quiet: bool = False) -> Iterator[dict]:
    """The JSON objects of a JSONL log, one line at a time (memory bounded by MAX_LINE_BYTES).

    A line that is cut short, not UTF-8, not JSON or not an object is skipped with one warning
    (`quiet`: silently), so a crash in the middle of a write never blocks reading the rest.
    """
    path = Path(path)
    bad = 0
    with open(path, "rb") as handle:
        while True:
            raw = handle.readline(MAX_LINE_BYTES)
            if not raw:
                break
            if not raw.endswith(b"\n") and len(raw) == MAX_LINE_BYTES:
                while raw and not raw.endswith(b"\n"):  # drop the rest of an over-long line
                    raw = handle.readline(MAX_LINE_BYTES)
                bad += 1
                continue
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                bad += 1
                continue
            if not isinstance(record, dict):
                bad += 1
                continue
            yield record
    if bad and not quiet:
        logger.warning(f"warning: skipped {bad} damaged or half-written line(s) in {path}")


def remove_temporaries(folder: str | Path, recursive_into: tuple[str, ...] = ("ckpt",)) -> list[str]:
    """Delete temporary files and folders a killed process left in `folder` (and its `ckpt/`).

    Only call this while holding the folder's lock (runs.lock_folder): then no live writer owns them.
    Returns the paths removed, relative to `folder`.
    """
    folder = Path(folder)
    removed = []
    for parent in [folder, *(folder / name for name in recursive_into)]:
        if not parent.is_dir():
            continue
        for child in parent.iterdir():
            if child.name.startswith(TMP_PREFIXES):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        child.unlink()
                removed.append(child.relative_to(folder).as_posix())
    return sorted(removed)
