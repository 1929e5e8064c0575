"""One writer per folder, and a folder of one kind never written as another.

Why a lock: two processes writing one run folder overwrite each other's config, checkpoints and
log (and two `data prepare` one data folder's shards). A writer (`train`, `finetune`, `sweep`,
`data prepare`) takes `lock_folder` -- an OS file lock (`flock`) on `FOLDER/.lock`, held until the
process ends and released by the kernel even after kill -9, so a crash never leaves a stale lock --
and a second writer is refused at once with the holder's PID and command. Readers (`eval`,
`generate`, `report`, `serve`) take no lock and never wait (runs.find_latest_good explains why
they need none).

Why kinds: `train --out DATA_DIR` would overwrite a data folder's tokenizer and `data prepare --out
RUN_DIR` a run's; `folder_kind` tells them apart by what lmforge writes into each, so the verb can
refuse before touching anything.

Free of torch, so the CLI can check a folder before paying for `import torch`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from lmforge import io
from lmforge.errors import UserError

LOCK_FILE = ".lock"
# folder -> (open lock file descriptor, whether taking the lock created the folder), for the process's life
_held: dict[Path, tuple[int, bool]] = {}


def lock_folder(folder: str | Path, flag: str, command: str) -> None:
    """Take `folder`'s writer lock for the rest of this process (or refuse, naming the holder).

    `flag`: the option that names the folder (for the message); `command`: this process's command
    line, recorded in the lock file so that a refused writer can say who holds it.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} '{folder}' is a file, not a folder; choose another {flag}")
    key = folder.resolve()
    if key in _held:
        return
    path = folder / LOCK_FILE
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise io.write_error(path, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "a process that is starting"
        os.close(fd)
        raise UserError(
            f"'{folder}' is in use by another lmforge process ({holder}); wait for it to end, "
            f"or choose another {flag}"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}: {command}\n".encode())
    _held[key] = (fd, created)


def unlock_folder(folder: str | Path) -> None:
    """Release a lock taken by `lock_folder` before the process ends (a verb called in-process).

    A folder that taking the lock created and that still holds nothing else is removed: a command
    that failed before writing leaves --out as it found it.
    """
    key = Path(folder).resolve()
    fd, created = _held.pop(key, (None, False))
    if fd is None:
        return
    if created:
        with contextlib.suppress(OSError):
            if [p.name for p in key.iterdir()] == [LOCK_FILE]:
                (key / LOCK_FILE).unlink()
                key.rmdir()
    os.close(fd)


@contextlib.contextmanager
def holding(folder: str | Path, flag: str, command: str) -> Iterator[None]:
    """`lock_folder` for the length of a `with` block (a CLI verb); kill -9 releases it too."""
    already = Path(folder).resolve() in _held
    lock_folder(folder, flag, command)
    try:
        yield
    finally:
        if not already:
            unlock_folder(folder)


def folder_kind(folder: str | Path) -> str | None:
    """ "run", "sweep", "data" or None (missing, empty, or not made by lmforge) -- so that a folder
    of one kind is never written as another (`train --out DATA_DIR`, `data prepare --out RUN_DIR`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    if (folder / "sweep.json").is_file():
        return "sweep"
    if any((folder / name).exists() for name in ("config.json", "run.json", "ckpt")):
        return "run"
    if any((folder / name).exists() for name in ("shards", "raw", "clean", "sources.json")):
        return "data"
    return None


def release_all() -> None:
    """Release every lock this process holds (the CLI, when a verb called in-process returns)."""
    for folder in list(_held):
        unlock_folder(folder)


def claim_folder(folder: str | Path, kind: str, flag: str, command: str, does: str) -> None:
    """Refuse `folder` if it is a folder of another kind, then take its lock for this process.

    `does`: what the verb would do to a folder of the wrong kind, for the message.
    """
    found = folder_kind(folder)
    if found is not None and found != kind:
        raise UserError(
            f"{flag} '{folder}' is a {found} folder; {does} -- choose a new {kind} folder for {flag}"
        )
    lock_folder(folder, flag, command)
