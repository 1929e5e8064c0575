"""Where a run reports: metrics.jsonl (and TensorBoard when asked), the progress bar, messages, and
the speed (tokens/s, MFU) they show.

Rank 0 speaks for a distributed run; the other ranks get a logbook that writes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from lmforge import runs
from lmforge.errors import UserError
from lmforge.eval.metrics import model_flops_utilization

logger = logging.getLogger(__name__)


class Logbook:
    def __init__(
        self, run_dir: Path, tensorboard: bool, total: int, initial: int, progress: bool, main: bool
    ):
        self.run_dir, self.main = run_dir, main
        self._write, self._close = _metrics_sink(run_dir, tensorboard) if main else (_ignore, _ignore)
        self.bar = _progress_bar(total, initial, progress and main)
        self._progress = progress and main

    def record(self, record: dict) -> None:
        """One line of metrics.jsonl (x axis: record["step"])."""
        self._write(record)

    def say(self, message: str) -> None:
        """A message that does not tear the progress bar (under --json stdout holds only the summary)."""
        if self._progress:
            self.bar.write(message)
        elif self.main:
            logger.info(message)

    def show_step(self, loss: float, speed: Speed) -> None:
        """One step on the progress bar. The postfix is formatted only when a bar is shown, and set
        without its own redraw: `update` redraws at most every `mininterval`, where a redraw per
        step cost about 1 ms of Python at the small shape (bench/bench_loop_overhead.py)."""
        if self.bar.disable:
            return
        self.bar.set_postfix_str(
            f"loss {loss:.3f} | {speed.tokens_per_second / 1e3:.1f}k tok/s | MFU {speed.mfu:.0%}",
            refresh=False,
        )
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        self._close()


class Speed:
    """Tokens/s and MFU over the steps since the last log line, evaluation time left out."""

    def __init__(self, flops_per_token: int, peak: float) -> None:
        self.flops_per_token, self.peak = flops_per_token, peak
        self.tokens, self.start = 0, time.perf_counter()
        self.tokens_per_second = self.mfu = 0.0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def pause(self, seconds: float) -> None:
        self.start += seconds

    def measure(self) -> None:
        now = time.perf_counter()
        self.tokens_per_second = self.tokens / max(1e-9, now - self.start)
        self.mfu = model_flops_utilization(self.flops_per_token, self.tokens_per_second, self.peak)
        self.tokens, self.start = 0, now


def _metrics_sink(run_dir: Path, tensorboard: bool) -> tuple[Callable[[dict], None], Callable[[], None]]:
    """(write(record), close()): every record goes to metrics.jsonl, and to RUN_DIR/tb/ with TensorBoard.

    TensorBoard is optional (the `tune` extra) and imported only when asked for; each scalar keeps
    its metrics.jsonl name (`train/loss`, `val/bpb`, ...) so both views read the same.
    """
    if not tensorboard:
        return (lambda record: runs.append_metrics(run_dir, record)), (lambda: None)
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(
            "train.tensorboard needs the tensorboard package; pip install 'lmforge[tune]'"
        ) from None
    writer = SummaryWriter(log_dir=str(run_dir / "tb"))

    def write(record: dict) -> None:
        runs.append_metrics(run_dir, record)
        for name, value in record.items():
            if name not in ("step", "tokens", "time") and isinstance(value, int | float):
                writer.add_scalar(name, value, global_step=record["step"])
        writer.flush()  # a crash loses nothing already in metrics.jsonl either

    return write, writer.close


def _ignore(*args) -> None:
    """A metrics sink for ranks other than 0."""


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        unit="step",
        dynamic_ncols=True,
        leave=True,
        mininterval=0.5,
    )
