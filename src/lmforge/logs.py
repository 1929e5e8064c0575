"""Messages go through the standard `logging` module: the `lmforge` logger tree and the CLI's handler.

Every module logs to `logging.getLogger(__name__)`, a child of `lmforge`, so a library user silences
or redirects lmforge the usual way (`logging.getLogger("lmforge").setLevel(logging.WARNING)`, or a
handler of their own). With no handler configured, Python's last-resort handler still prints
warnings to stderr -- a damaged checkpoint is never skipped in silence -- while progress messages
(INFO) appear only where someone asked for them.

The console script calls `configure()`: each message printed alone, as the verbs always printed it;
INFO to stdout (or to stderr when stdout carries a --json summary), warnings to stderr; and under
torchrun only rank 0 speaks, so N processes do not print every line N times.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

ROOT = "lmforge"


class _Console(logging.Handler):
    """Prints the bare message to the stream `sys` holds *when the message is written*.

    Looking the stream up late keeps messages in order with `print` after anything that swaps
    `sys.stdout` (pytest's capture, a progress bar's redirection).
    """

    def __init__(self, info_to_stderr: bool) -> None:
        super().__init__(logging.INFO)
        self.info_to_stderr = info_to_stderr
        self.addFilter(_rank_zero)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            to_stderr = self.info_to_stderr or record.levelno >= logging.WARNING
            stream = sys.stderr if to_stderr else sys.stdout
            stream.write(record.getMessage() + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def _rank_zero(record: logging.LogRecord) -> bool:
    """False on the ranks other than 0 of a torchrun launch (it sets RANK for each process)."""
    return os.environ.get("RANK", "0") == "0"


def configure(info_to_stderr: bool = False) -> None:
    """Install the console handler on the `lmforge` logger (replacing one installed before)."""
    logger = logging.getLogger(ROOT)
    for handler in list(logger.handlers):
        if isinstance(handler, _Console):
            logger.removeHandler(handler)
    logger.addHandler(_Console(info_to_stderr))
    logger.setLevel(logging.INFO)


@contextlib.contextmanager
def silenced(name: str) -> Iterator[None]:
    """Nothing from logger `name` (and its children) while inside: a sweep's trials or a scaling
    ladder's runs train quietly under the one line each that the caller prints for them."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(before)
