"""Stopping on a signal: SIGINT / SIGTERM set a flag the loop checks at step boundaries, so the run
ends with a checkpoint of the step it finished. Two ways out when that step cannot finish soon (a
batch far too large, a machine that has stalled): a second signal leaves at once, and so does the
first signal's deadline, STOP_GRACE_SECONDS after it -- `timeout 60 lmforge train` or a scheduler
that sends one SIGTERM must not leave the process running for hours. Leaving mid-step loses only
that step: checkpoints on disk are atomic, so the last one is whole."""

from __future__ import annotations

import contextlib
import signal

# How long the step in progress (plus the final evaluation and save) may take after the first
# signal; the default of container runtimes between SIGTERM and SIGKILL is shorter, so most runs
# that are stopped that way get killed first anyway -- this bounds the ones that are not.
STOP_GRACE_SECONDS = 30.0


class StopFlag:
    """A context manager whose `reason` becomes "SIGINT" / "SIGTERM" when the signal arrives; a second
    signal, or `grace` seconds after the first (default STOP_GRACE_SECONDS), raise KeyboardInterrupt."""

    def __init__(self, grace: float | None = None) -> None:
        self.reason: str | None = None
        self.grace = STOP_GRACE_SECONDS if grace is None else grace
        self._old: dict = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if signum == signal.SIGALRM:  # the first signal's deadline passed with the step still running
            raise KeyboardInterrupt
        if self.reason is not None:  # a second signal: leave now, even mid-step (checkpoints are atomic)
            raise KeyboardInterrupt
        self.reason = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
        if signal.SIGALRM in self._old:
            signal.setitimer(signal.ITIMER_REAL, self.grace)

    def __exit__(self, *exc):
        if signal.SIGALRM in self._old:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, old in self._old.items():
            signal.signal(sig, old)
