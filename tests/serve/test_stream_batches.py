"""Streamed text goes out in batches: the first piece at once, then what accumulated at most every
`stream_interval` seconds, so a fast model is not slowed by one HTTP event per token."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time

import pytest
from serving import Knobs, ThreadServer, call

from lmforge import runs
from lmforge.cli import main
from lmforge.serve.app import Generation, ServeConfig, Slots, create_app


def slow_pieces(texts: list[str], pause: float, made: list[str]):
    """A stand-in for a Completion: yields `texts` one every `pause` seconds, noting each in `made`."""
    for text in texts:
        time.sleep(pause)
        made.append(text)
        yield text


def events_of(completions: list, interval: float) -> list[tuple]:
    """Every event a Generation yields for `completions` (one choice per prompt)."""

    async def run() -> list[tuple]:
        slots = Slots(ServeConfig())
        assert await slots.acquire()
        generation = Generation(completions, 1, slots, threading.Event(), None, interval)
        return [event async for event in generation.events()]

    return asyncio.run(run())


def test_first_piece_at_once_then_what_accumulated():
    made: list[str] = []
    first, second = slow_pieces(list("abcd"), 0.1, made), slow_pieces(list("ef"), 0.1, made)
    assert events_of([first, second], interval=5.0) == [
        ("piece", 0, "a"),  # at once: the reader sees the answer begin
        ("piece", 0, "bcd"),  # held, then sent when the completion ended
        ("end", 0, None),
        ("piece", 1, "e"),  # each choice's first piece goes at once too
        ("piece", 1, "f"),
        ("end", 1, None),
    ]
    assert made == list("abcdef")


def test_interval_zero_sends_every_piece_alone():
    events = events_of([slow_pieces(list("abc"), 0.1, [])], interval=0.0)
    assert events == [("piece", 0, "a"), ("piece", 0, "b"), ("piece", 0, "c"), ("end", 0, None)]


@pytest.fixture(scope="module")
def slow_server(tiny_run):
    """A server that sends streamed text at most every 5 s, over a model slowed to ~10 tokens/s."""
    loaded = runs.load_run(tiny_run)
    knobs = Knobs(loaded.model)
    config = ServeConfig(max_tokens_cap=16, stream_interval=5.0)
    srv = ThreadServer(create_app(loaded, config), config)
    srv.knobs = knobs
    yield srv
    srv.stop()


def timed_stream(port: int, body: dict) -> list[tuple[float, dict]]:
    """(seconds since the request, event) for each `data:` event of a streamed completion but [DONE]."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        start = time.monotonic()
        conn.request("POST", "/v1/completions", body=json.dumps({**body, "stream": True}),
                     headers={"Content-Type": "application/json"})  # fmt: skip
        out = []
        for line in conn.getresponse():
            if line.startswith(b"data: {"):
                out.append((time.monotonic() - start, json.loads(line[6:])))
        return out
    finally:
        conn.close()


def test_a_stream_begins_at_once_and_its_pieces_join_to_the_answer(slow_server):
    slow_server.knobs.delay = 0.1  # 12 tokens: over a second
    body = {"prompt": "to be", "max_tokens": 12, "temperature": 0, "ignore_eos": True}
    events = timed_stream(slow_server.port, body)
    texts = [(t, e["choices"][0]["text"]) for t, e in events if e["choices"][0]["text"]]
    assert len(texts) == 2  # the first piece, then the rest when the answer ended (before 5 s)
    (first_at, _), (last_at, _) = texts
    assert last_at - first_at > 0.6  # the first piece did not wait for the others
    whole = call(slow_server.port, "POST", "/v1/completions", body)[2]["choices"][0]["text"]
    assert "".join(text for _, text in texts) == whole
    assert events[-1][1]["choices"][0]["finish_reason"] == "length"


def test_stream_interval_is_checked(tmp_path, capsys):
    # Checked before the run is loaded: the missing folder is never reached (and nothing is served).
    assert main(["serve", str(tmp_path / "no-run"), "--stream-interval", "-1"]) == 2
    assert "error: --stream-interval (-1) must be" in capsys.readouterr().err
