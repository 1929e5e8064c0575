"""The HTTP API over real HTTP: a uvicorn server on 127.0.0.1 with a tiny chat fine-tuned run."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serving import Knobs, ThreadServer, call, stream, wait_idle

from lmforge import runs
from lmforge.serve.app import ServeConfig, create_app

CAP = 48
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say to"}]


@pytest.fixture(scope="module")
def server(chat_run):
    loaded = runs.load_run(chat_run)
    knobs = Knobs(loaded.model)
    # stream_interval 0: one event per token (unless pieces pile up); the tests below count events.
    config = ServeConfig(max_body_bytes=4096, max_tokens_cap=CAP, default_max_tokens=16, max_concurrent=1,
                         max_queue=2, queue_timeout=20, stream_interval=0.0)  # fmt: skip
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


def test_health_models_and_page(port):
    assert call(port, "GET", "/health")[2]["status"] == "ok"
    status, _, body = call(port, "GET", "/v1/models")
    assert status == 200 and body["object"] == "list" and body["data"][0]["id"] == "tiny-chat"
    status, headers, page = call(port, "GET", "/")
    assert (
        status == 200 and headers["content-type"].startswith("text/html") and "/v1/chat/completions" in page
    )


def test_completion_shape_and_usage(port):
    status, _, body = call(
        port, "POST", COMPLETIONS, {"model": "tiny-chat", "prompt": "to be", "max_tokens": 8}
    )
    assert status == 200 and body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    choice = body["choices"][0]
    assert isinstance(choice["text"], str) and choice["finish_reason"] in ("stop", "length")
    use = body["usage"]
    assert (
        use["prompt_tokens"] == 6 and use["total_tokens"] == use["prompt_tokens"] + use["completion_tokens"]
    )
    assert use["completion_tokens"] <= 8


def test_chat_completion_shape(port):
    status, _, body = call(port, "POST", CHAT, {"messages": HELLO, "max_tokens": 10, "temperature": 0})
    assert status == 200 and body["object"] == "chat.completion"
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant" and isinstance(message["content"], str)
    assert body["usage"]["completion_tokens"] <= 10


def test_streams_are_server_sent_events(server, port):
    server.knobs.delay = 0.005  # one event per token (pieces that pile up are sent together)
    status, events = stream(port, CHAT, {"messages": HELLO, "max_tokens": 12, "ignore_eos": True, "seed": 1})
    assert status == 200 and events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    pieces = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    # The same request without streaming gives the same text (same seed).
    _, _, whole = call(
        port, "POST", CHAT, {"messages": HELLO, "max_tokens": 12, "ignore_eos": True, "seed": 1}
    )
    assert pieces == whole["choices"][0]["message"]["content"] and len(chunks) > 3

    body = {"prompt": "to be", "max_tokens": 5, "ignore_eos": True, "stream_options": {"include_usage": True}}
    status, events = stream(port, COMPLETIONS, body)
    assert status == 200 and events[-1] == "[DONE]"
    assert events[-2]["choices"] == [] and events[-2]["usage"]["completion_tokens"] == 5
    assert events[-3]["choices"][0]["finish_reason"] == "length"


def test_seed_repeats_and_stop_strings_cut(port):
    body = {"prompt": "to be", "max_tokens": 30, "temperature": 1.0, "seed": 7, "ignore_eos": True}
    first = call(port, "POST", COMPLETIONS, body)[2]["choices"][0]["text"]
    assert call(port, "POST", COMPLETIONS, body)[2]["choices"][0]["text"] == first
    stop = first[6:8]
    cut = call(port, "POST", COMPLETIONS, {**body, "stop": [stop]})[2]["choices"][0]
    assert cut["text"] == first[: first.index(stop)] and cut["finish_reason"] == "stop"


def test_max_tokens_is_capped(port):
    status, _, body = call(
        port, "POST", COMPLETIONS, {"prompt": "to", "max_tokens": 100000, "ignore_eos": True}
    )
    assert status == 200 and body["usage"]["completion_tokens"] == CAP
    assert body["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        (COMPLETIONS, '{"prompt": "to", "max_tokens": ', 400, None),  # malformed JSON
        (COMPLETIONS, {"prompt": "to", "max_tokens": "many"}, 400, "max_tokens"),
        (COMPLETIONS, {"prompt": "to", "temperature": 7}, 400, "temperature"),
        (COMPLETIONS, {"prompt": ["a"] * 33}, 400, "prompt"),  # at most 32 prompts in a batch
        (COMPLETIONS, {"prompt": [[1, 2], [999999]]}, 400, "prompt"),  # an id outside the vocabulary
        (COMPLETIONS, {"prompt": "to", "seed": 2**64}, 400, "seed"),
        (COMPLETIONS, {"prompt": "to", "seed": -(2**63) - 1}, 400, "seed"),
        (COMPLETIONS, {"prompt": "to", "model": "\ud800"}, 400, "model"),
        (COMPLETIONS, {"prompt": "to\udfff"}, 400, "prompt"),
        (COMPLETIONS, {"prompt": "to", "suffix": "end"}, 400, "suffix"),
        (COMPLETIONS, {"prompt": "to", "best_of": 2}, 400, "best_of"),
        (COMPLETIONS, {"prompt": "to", "logprobs": 21}, 400, "logprobs"),
        (COMPLETIONS, {"prompt": "to", "logprobs": 1, "stream": True}, 400, "logprobs"),
        (COMPLETIONS, {"prompt": "to", "frobnicate": 1}, 400, "frobnicate"),
        (CHAT, {"messages": HELLO, "n": 5}, 400, "n"),
        (CHAT, {"messages": HELLO, "tools": [{"type": "function"}]}, 400, "tools"),
        (CHAT, {"messages": HELLO, "response_format": {"type": "json_object"}}, 400, "response_format"),
        (CHAT, {"messages": HELLO, "top_logprobs": 2}, 400, "top_logprobs"),
        (CHAT, {"messages": HELLO, "presence_penalty": 2.5}, 400, "presence_penalty"),
        (CHAT, {"messages": HELLO, "logit_bias": {"99999": 3}}, 400, "logit_bias"),
        (CHAT, {"messages": HELLO, "logit_bias": {"a": 3}}, 400, "logit_bias"),
        (CHAT, {"messages": [{"role": "tool", "content": "42"}]}, 400, "messages.0.role"),
        (COMPLETIONS, {"max_tokens": 3}, 400, "prompt"),
        (CHAT, {"messages": []}, 400, "messages"),
        (CHAT, {"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages.0.role"),
        (CHAT, {"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        (COMPLETIONS, {"prompt": "to " * 40}, 400, "prompt"),  # 121 tokens > context of 64
        (CHAT, {"messages": [{"role": "user", "content": "be " * 40}]}, 400, "messages"),
        (COMPLETIONS, {"prompt": "to", "model": "gpt-4"}, 404, "model"),
        ("/v1/nothing", {"prompt": "to"}, 404, None),
    ],
)
def test_bad_requests_say_which_field(port, path, body, status, param):
    got, _, answer = call(port, "POST", path, body)
    assert got == status, answer
    error = answer["error"]
    assert error["message"] and error["param"] == param
    if param and status == 400 and param != "prompt" and param != "messages":
        assert param in error["message"]
    if param in ("prompt", "messages") and "context" in str(body):
        assert "context" in error["message"]


def test_prompt_longer_than_the_context_is_a_400_not_a_crash(port):
    got, _, answer = call(port, "POST", COMPLETIONS, {"prompt": "to " * 40})
    assert got == 400 and "context is 64" in answer["error"]["message"]
    assert call(port, "GET", "/health")[0] == 200


def test_body_size_limit(port):
    big = {"prompt": "x" * 5000}
    status, _, answer = call(port, "POST", COMPLETIONS, big)
    assert status == 413 and "4096 bytes" in answer["error"]["message"]
    # Without a Content-Length (a chunked upload) the limit holds too.
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        with contextlib.suppress(OSError):  # the server may answer and close before we finish
            sock.sendall(_head(COMPLETIONS, "Transfer-Encoding: chunked"))
            for _ in range(6):
                sock.sendall(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")
    finally:
        sock.close()


def _head(path: str, length_header: str) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{length_header}\r\n\r\n"
    return head.encode()


def test_no_wildcard_cors_by_default(port):
    _, headers, _ = call(port, "GET", "/v1/models", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in headers
    status, headers, _ = call(port, "OPTIONS", CHAT, headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})  # fmt: skip
    assert status >= 400 and "access-control-allow-origin" not in headers


def test_a_burst_is_answered_quickly_and_boundedly(server, port):
    server.knobs.delay = 0.004  # ~0.2 s per answer, so a burst really overlaps
    body = {"prompt": "to be", "max_tokens": CAP, "ignore_eos": True}

    def one(_):
        start = time.monotonic()
        status, _, answer = call(port, "POST", COMPLETIONS, body, timeout=60)
        return status, time.monotonic() - start, answer

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(one, range(12)))
    assert time.monotonic() - start < 45
    statuses = [s for s, _, _ in results]
    assert set(statuses) <= {200, 429, 503}, results
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1
    assert statuses.count(200) <= 3 + 6  # 1 running + 2 queued at any moment (and slots recycle)
    assert all(seconds < 2.0 for s, seconds, _ in results if s == 429)  # refused at once, not queued
    assert all(a["error"]["type"] == "rate_limit_exceeded" for s, _, a in results if s == 429)
    health = wait_idle(port, 10)
    assert health == {"status": "ok", "model": "tiny-chat", "running": 0, "waiting": 0}


def _start_stream(port: int, body: dict) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", CHAT, body=json.dumps(body), headers={"Content-Type": "application/json"})
    return conn, conn.getresponse()


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server, port):
    server.knobs.delay = 0.05  # CAP tokens would take > 2.4 s
    conn, resp = _start_stream(
        port, {"messages": HELLO, "max_tokens": CAP, "ignore_eos": True, "stream": True}
    )
    got = 0
    while got < 3:  # a few content chunks
        if resp.fp.readline().startswith(b"data: "):
            got += 1
    assert call(port, "GET", "/health")[2]["running"] == 1
    resp.close()
    conn.close()
    closed_at, calls_at_close = time.monotonic(), server.knobs.calls
    assert wait_idle(port, 5)["running"] == 0
    assert time.monotonic() - closed_at < 1.0
    time.sleep(0.3)
    assert server.knobs.calls - calls_at_close <= 4  # the generation stopped, not just the stream


def test_a_waiting_non_streamed_client_that_leaves_frees_its_slot(server, port):
    server.knobs.delay = 0.05
    sock = socket.create_connection(("127.0.0.1", port))
    payload = json.dumps({"messages": HELLO, "max_tokens": CAP, "ignore_eos": True}).encode()
    sock.sendall(_head(CHAT, f"Content-Length: {len(payload)}") + payload)
    time.sleep(0.4)
    assert call(port, "GET", "/health")[2]["running"] == 1
    sock.close()
    closed_at = time.monotonic()
    assert wait_idle(port, 5)["running"] == 0 and time.monotonic() - closed_at < 1.5


def test_a_plain_run_answers_chat_through_the_default_template(tiny_run):
    srv = ThreadServer(create_app(runs.load_run(tiny_run), ServeConfig(max_tokens_cap=16)))
    try:
        status, _, body = call(srv.port, "POST", CHAT, {"messages": HELLO, "max_tokens": 16})
        assert status == 200 and body["model"] == "base"
        assert "\nUser:" not in body["choices"][0]["message"]["content"]
    finally:
        srv.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_cli_with_an_api_key(chat_run):
    port = _free_port()
    env = {**os.environ, "LMFORGE_API_KEY": "s3cret"}
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", "serve", str(chat_run), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if call(port, "GET", "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stdout.read() if proc.poll() else ""
            )
            time.sleep(0.2)
        assert call(port, "GET", "/v1/models")[0] == 401
        assert call(port, "GET", "/v1/models", headers={"Authorization": "Bearer wrong"})[0] == 401
        status, _, body = call(port, "GET", "/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert status == 200 and body["data"][0]["id"] == "tiny-chat"
        assert call(port, "POST", COMPLETIONS, {"prompt": "to"})[2]["error"]["type"] == "auth_error"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
