"""The server's door under hostile traffic: idle and slow sockets, clients that leave the queue, retry
hints, the Host guard, and a fuzz over every request field (no input may give a 500)."""

from __future__ import annotations

import json
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serving import Knobs, ThreadServer, call, wait_idle

from lmforge import runs
from lmforge.serve import schemas
from lmforge.serve.app import ServeConfig, create_app

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HELLO = [{"role": "user", "content": "say to"}]


@pytest.fixture(scope="module")
def server(chat_run):
    loaded = runs.load_run(chat_run)
    knobs = Knobs(loaded.model)
    config = ServeConfig(max_tokens_cap=4, default_max_tokens=4, max_concurrent=1, max_queue=1,
                         queue_timeout=20, header_timeout=1.0, body_timeout=1.0)  # fmt: skip
    srv = ThreadServer(create_app(loaded, config), config)
    srv.knobs = knobs
    yield srv
    srv.stop()


@pytest.fixture
def port(server):
    server.knobs.delay = 0.0
    yield server.port
    server.knobs.delay = 0.0
    assert wait_idle(server.port, 10)["running"] == 0


def test_idle_sockets_never_lock_others_out(port):
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
    try:
        start = time.monotonic()
        status, _, body = call(port, "POST", COMPLETIONS, {"prompt": "to", "max_tokens": 2}, timeout=5)
        assert status == 200, body
        assert time.monotonic() - start < 1.0
        assert call(port, "GET", "/health", timeout=5)[0] == 200
    finally:
        for sock in idle:
            sock.close()


def test_a_silent_or_slow_connection_is_closed(port):
    silent = socket.create_connection(("127.0.0.1", port), timeout=5)
    slow = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        slow.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")  # headers that never end
        start = time.monotonic()
        assert silent.recv(1024) == b"" and slow.recv(1024) == b""  # the server closed them
        assert time.monotonic() - start < 3.0
    finally:
        silent.close()
        slow.close()


def test_a_body_that_trickles_in_gets_408(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        payload = json.dumps({"prompt": "to"}).encode()
        head = f"POST {COMPLETIONS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload[:3])
        start = time.monotonic()
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - start < 3.0
    finally:
        sock.close()


def test_a_queued_client_that_leaves_frees_its_place_at_once(server, port):
    server.knobs.delay = 0.3  # the running generation takes > 1 s
    body = json.dumps({"prompt": "to", "max_tokens": 4, "ignore_eos": True}).encode()
    head = f"POST {COMPLETIONS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    request = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
    running, queued = (
        socket.create_connection(("127.0.0.1", port)),
        socket.create_connection(("127.0.0.1", port)),
    )
    try:
        running.sendall(request)
        time.sleep(0.3)
        queued.sendall(request)
        time.sleep(0.3)
        health = call(port, "GET", "/health")[2]
        assert (health["running"], health["waiting"]) == (1, 1)
        # The queue is full: the next one is refused at once, and told when to retry.
        status, headers, answer = call(port, "POST", COMPLETIONS, {"prompt": "to"})
        assert status == 429 and headers["retry-after"] == "1"
        queued.close()
        left = time.monotonic()
        while call(port, "GET", "/health")[2]["waiting"]:
            assert time.monotonic() - left < 0.6
            time.sleep(0.02)
        assert call(port, "GET", "/health")[2]["running"] == 1  # the running one is untouched
    finally:
        running.close()
        queued.close()


def test_allowed_hosts(chat_run):
    config = ServeConfig(allowed_hosts=["localhost", "127.0.0.1"], max_tokens_cap=2)
    srv = ThreadServer(create_app(runs.load_run(chat_run), config), config)
    try:
        assert call(srv.port, "GET", "/health")[0] == 200  # http.client sends Host: 127.0.0.1:PORT
        status, _, answer = call(srv.port, "GET", "/health", headers={"Host": "evil.example:8000"})
        assert status == 403 and "--allowed-host" in answer["error"]["message"]
    finally:
        srv.stop()


# The fuzz: every declared field of both request bodies, and some no body declares.
FIELDS = sorted({*schemas.CompletionRequest.model_fields, *schemas.ChatRequest.model_fields, "frobnicate"})


def random_value(rng: random.Random, depth: int = 0):
    kinds = ["none", "bool", "int", "bigint", "float", "tiny", "huge", "str", "odd", "list", "dict"]
    kind = rng.choice(kinds if depth < 2 else kinds[:9])
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-5, 40)
    if kind == "bigint":
        return rng.choice([2**63, 2**64, -(2**63) - 1, 10**30, -(10**30)])
    if kind == "float":
        return rng.uniform(-3, 3)
    if kind == "tiny":
        return rng.choice([1e-40, 5e-324, -1e-45, 1e-30])
    if kind == "huge":
        return rng.choice([1e308, -1e308, float("inf"), float("nan")])
    if kind == "str":
        return rng.choice(["", "to", "user", "text", "tiny-chat", "\n", "x" * 50])
    if kind == "odd":
        return rng.choice(["\ud800", "a\udfffb", "\x00", "é\u2028", "<|endoftext|>", "🙂"])
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["role", "content", "type", "text", "include_usage", "5"]
    return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def raw_post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return int(data.split(b" ", 2)[1]), data
    finally:
        sock.close()


# Values at the edges of what JSON can carry: each field gets every one of them, streamed and not.
EDGES = [None, True, 0, -1, 1, 3, 2**63, 2**64, -(2**63) - 1, 10**30, 0.5, 1e-40, 5e-324, 1e308,
         float("inf"), float("nan"), "", "to", "\ud800", "a\udfffb", "\x00", "<|endoftext|>", [], [1, 2],
         ["to"], [[3]], [None], {}, {"5": 1}, {"include_usage": True},
         {"type": "text", "text": "hi"}]  # fmt: skip


@pytest.mark.slow
def test_fuzz_no_input_gives_a_500(port):
    rng = random.Random(17)
    bases = {COMPLETIONS: {"prompt": "to"}, CHAT: {"messages": HELLO}}
    sweep = [(path, {name: value, "stream": stream}) for path in bases for name in FIELDS for value in EDGES
             for stream in (False, True)]  # fmt: skip
    for _ in range(300):  # and random mixtures of several fields
        path = rng.choice([COMPLETIONS, CHAT])
        sweep.append((path, {name: random_value(rng) for name in rng.sample(FIELDS, rng.randint(1, 4))}))
    start = time.monotonic()

    def one(case):
        path, fields = case
        body = {**bases[path], **fields}
        data = json.dumps(body, allow_nan=True).encode()
        status, raw = raw_post(port, path, data)
        streamed_ok = b"text/event-stream" not in raw or raw.count(b"data: [DONE]") == 1
        return status, body, streamed_ok and b"server_error" not in raw

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, sweep))
    assert time.monotonic() - start < 240
    seen = set()
    for status, body, clean in results:
        seen.add(status)
        assert status != 500 and clean, body
    assert 200 in seen and 400 in seen
