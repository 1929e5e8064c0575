"""Test helpers: a real uvicorn server on 127.0.0.1 in a thread, and a small HTTP client (stdlib only)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time


class Knobs:
    """Wraps a model's forward: counts calls and can slow each one down (to test disconnects, bursts)."""

    def __init__(self, model) -> None:
        self.delay, self.calls = 0.0, 0
        original = model.forward

        def forward(*args, **kwargs):
            self.calls += 1
            if self.delay:
                time.sleep(self.delay)
            return original(*args, **kwargs)

        model.forward = forward


class ThreadServer:
    """uvicorn serving `app` on a free port of 127.0.0.1, in a daemon thread, with the settings
    `lmforge serve` uses (`config`: the app's ServeConfig, for its timeouts)."""

    def __init__(self, app, config=None) -> None:
        import uvicorn

        from lmforge.serve.app import ServeConfig
        from lmforge.serve.door import uvicorn_config

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        settings = uvicorn_config(
            app, config or ServeConfig(), log_level="warning", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(settings)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def call(port: int, method: str, path: str, body=None, headers=None, timeout: float = 60):
    """(status, headers dict, parsed JSON or text). `body`: dict -> JSON, str/bytes sent as is."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = json.dumps(body) if isinstance(body, dict) else body
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read().decode()
        found = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    try:
        return resp.status, found, json.loads(raw)
    except ValueError:
        return resp.status, found, raw


def stream(port: int, path: str, body: dict, timeout: float = 60) -> tuple[int, list]:
    """POST with stream=true; (status, list of decoded `data:` events, "[DONE]" kept as a string)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps({**body, "stream": True}),
                     headers={"Content-Type": "application/json"})  # fmt: skip
        resp = conn.getresponse()
        assert resp.getheader("content-type", "").startswith("text/event-stream")
        events = []
        for line in resp:
            line = line.decode().rstrip("\n")
            if line.startswith("data: "):
                data = line[6:]
                events.append(data if data == "[DONE]" else json.loads(data))
        return resp.status, events
    finally:
        conn.close()


def wait_idle(port: int, seconds: float) -> dict:
    """Poll /health until no generation runs or waits; the last health object."""
    deadline = time.monotonic() + seconds
    while True:
        _, _, health = call(port, "GET", "/health")
        if (health["running"] == 0 and health["waiting"] == 0) or time.monotonic() > deadline:
            return health
        time.sleep(0.02)
