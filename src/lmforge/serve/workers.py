"""Generation slots and worker threads: how the server runs at most a few generations at a time.

- **Generation runs in a thread per request** (`Generation`), feeding an asyncio queue, so the event
  loop keeps answering `/health`, new requests and disconnects while the model works. The worker
  checks a cancel event between tokens: a client that goes away stops its generation and frees its slot.
- **Bounded concurrency with a short queue** (`Slots`): at most `max_concurrent` generations run; up
  to `max_queue` more wait (at most `queue_timeout` seconds, then 503); anything beyond is answered
  429 at once. On a 2-core machine an unbounded pile of generations would only make every one slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time

from fastapi import Request

from lmforge.serve.settings import ServeConfig


class APIError(Exception):
    def __init__(
        self, status: int, message: str, param: str | None = None, kind="invalid_request_error", headers=None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind
        self.headers = headers


RETRY_AFTER = {"Retry-After": "1"}


class Slots:
    """`max_concurrent` running generations plus `max_queue` waiting; all state on the event loop."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.running = self.waiting = 0
        self._sem = asyncio.Semaphore(config.max_concurrent)

    async def acquire(self, request: Request | None = None) -> bool:
        """Wait for a slot; False if the client left while waiting (its place is freed at once)."""
        cfg = self.config
        if self.running + self.waiting >= cfg.max_concurrent + cfg.max_queue:
            raise APIError(
                429,
                f"busy: {self.running} generations running, {self.waiting} waiting; retry shortly",
                kind="rate_limit_exceeded",
                headers=RETRY_AFTER,
            )
        self.waiting += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.queue_timeout
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise APIError(503, "no generation slot freed in time; retry later", kind="overloaded",
                                   headers=RETRY_AFTER)  # fmt: skip
                try:
                    await asyncio.wait_for(self._sem.acquire(), min(left, 0.2))
                    break
                except TimeoutError:
                    if request is not None and await request.is_disconnected():
                        return False
        finally:
            self.waiting -= 1
        self.running += 1
        return True

    def release(self) -> None:
        self.running -= 1
        self._sem.release()


class Generation:
    """Completions run one after another in a worker thread; `events()` yields, on the event loop,
    ("piece", index, text) and ("end", index, logprobs) for each.

    The worker posts a completion's first piece at once and then what accumulated at most every
    `interval` seconds (`math.inf`: the rest at the end, for an answer nobody reads until it is whole),
    so a fast model wakes the event loop some 20 times a second instead of once per token."""

    def __init__(
        self,
        completions: list,
        n: int,
        slots: Slots,
        cancel: threading.Event,
        score=None,
        interval: float = 0.0,
    ) -> None:
        self.completions, self.slots, self.cancel, self.score = completions, slots, cancel, score
        self.n = n  # choices per prompt: completion i answers prompt i // n
        self.interval = interval
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        threading.Thread(target=self._work, daemon=True, name="lmforge-generate").start()

    def _post(self, *item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server shutting down)
            self.cancel.set()

    def _work(self) -> None:
        try:
            for index, completion in enumerate(self.completions):
                held, sent = "", -math.inf  # text not posted yet; when the last post went
                for piece in completion:
                    held += piece
                    now = time.monotonic()
                    if now - sent >= self.interval:
                        self._post("piece", index, held)
                        held, sent = "", now
                    if self.cancel.is_set():
                        break
                if self.cancel.is_set():
                    break
                if held:
                    self._post("piece", index, held)
                self._post("end", index, self.score(completion, index // self.n) if self.score else None)
            self._post("done", None, None)
        except Exception as exc:  # reported to the client as an error, not a dead connection
            self._post("error", None, exc)
        finally:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.slots.release)

    async def events(self, request: Request | None = None):
        """Events as they come; with `request`, polls for a disconnect while waiting (non-streamed)."""
        checked = self.loop.time()
        try:
            while True:
                try:
                    items = [await asyncio.wait_for(self.queue.get(), 0.25)]
                except TimeoutError:
                    items = []
                if request is not None and self.loop.time() - checked >= 0.25:
                    checked = self.loop.time()
                    if await request.is_disconnected():
                        return
                while not self.queue.empty():  # coalesce what has piled up: one event instead of many
                    items.append(self.queue.get_nowait())
                merged: list[tuple] = []
                for kind, index, value in items:
                    if kind == "piece" and merged and merged[-1][:2] == ("piece", index):
                        merged[-1] = ("piece", index, merged[-1][2] + value)
                    else:
                        merged.append((kind, index, value))
                for kind, index, value in merged:
                    if kind == "done":
                        return
                    if kind == "error":
                        raise value
                    yield kind, index, value
        finally:
            self.cancel.set()  # stops the worker if we stopped listening (no-op when it finished)
