"""Stopping on a signal: SIGINT / SIGTERM set a flag the loop checks at step boundaries, so the run
ends with a checkpoint of the step it finished; a second signal (Ctrl-C or SIGTERM) leaves at once,
even mid-step (checkpoints on disk are atomic, so nothing is half-written)."""

from __future__ import annotations

import contextlib
import signal


class StopFlag:
    """A context manager whose `reason` becomes "SIGINT" / "SIGTERM" when the signal arrives."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._old: dict = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.reason is not None:  # a second signal: leave now, even mid-step (checkpoints are atomic)
            raise KeyboardInterrupt
        self.reason = "SIGINT" if signum == signal.SIGINT else "SIGTERM"

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
