"""The server's door: what a connection must do, and how fast, before the app spends anything on it.

- **Header and body timeouts.** uvicorn closes a keep-alive connection that stays idle, but not a new
  one that never sends its request, nor one that sends its headers or body a byte at a time; and its
  `limit_concurrency` counts such sockets, so a few dozen of them turn every client away with 503.
  Here the h11 protocol closes a connection whose headers are not complete within `header_timeout`
  seconds, `BodyLimit` answers 408 to a body not received within `body_timeout`, and no connection
  cap is set: work is bounded by the app's own slots, and an idle socket costs a file descriptor for
  a few seconds.
- **Body size before parsing** (413, declared or streamed) in the same pass that reads the body.
- **Host check** (`--allowed-host`): against DNS rebinding, where a page on another name reaches a
  server bound to localhost through the visitor's browser.
"""

from __future__ import annotations

import asyncio

from fastapi.responses import JSONResponse

from lmforge.serve import schemas

CLOSE = {"Connection": "close"}


class BodyLimit:
    """ASGI middleware: read the whole body up front within `timeout` seconds, answering 413 past
    `max_bytes` (declared or not) and 408 to a body that trickles in too slowly."""

    def __init__(self, app, max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = declared is not None and declared.isdigit() and int(declared) > self.max_bytes
        body, more = b"", not too_large
        deadline = asyncio.get_running_loop().time() + self.timeout
        while more:
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except TimeoutError:
                text = f"request body not received within {self.timeout:g} s"
                response = JSONResponse(schemas.error_object(text), status_code=408, headers=CLOSE)
                return await response(scope, receive, send)
            if message["type"] != "http.request":
                return  # the client left before sending its body
            body += message.get("body", b"")
            more = message.get("more_body", False)
            too_large = len(body) > self.max_bytes
            if too_large:
                break
        if too_large:
            text = f"request body exceeds {self.max_bytes} bytes"
            response = JSONResponse(schemas.error_object(text), status_code=413, headers=CLOSE)
            return await response(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class HostCheck:
    """ASGI middleware: refuse a Host header not in `allowed` (a guard against DNS rebinding, where a web
    page on another name reaches a server bound to localhost through the visitor's browser)."""

    def __init__(self, app, allowed: list[str]) -> None:
        self.app, self.allowed = app, {h.lower() for h in allowed}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if host not in self.allowed and name not in self.allowed:
                text = f"host '{host}' is not allowed; add it with --allowed-host"
                response = JSONResponse(schemas.error_object(text, "forbidden"), status_code=403)
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def door_protocol(header_timeout: float):
    """uvicorn's h11 protocol, closing a connection that has not sent its request headers within
    `header_timeout` seconds (after connecting, or after its previous response). Without it a few
    dozen sockets that connect and say nothing hold their places for as long as they like."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class DoorProtocol(H11Protocol):
        _header_timer = None

        def _arm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(header_timeout, self._headers_overdue)

        def _headers_overdue(self) -> None:
            self._header_timer = None
            if self.conn.their_state in (h11.IDLE, h11.DONE) and (
                self.cycle is None or self.cycle.response_complete
            ):
                self.transport.close()  # no request in progress and none begun: an idle or slowloris socket

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

    return DoorProtocol


def uvicorn_config(app, config, **options):
    """The uvicorn settings that hold the door: header timeouts in the protocol, no connection cap.

    There is deliberately no `limit_concurrency`: uvicorn counts idle sockets against it, so a handful
    of silent connections would answer every client 503. Work is bounded by `Slots` instead, and an
    idle socket costs a file descriptor for at most `header_timeout` seconds.
    """
    import uvicorn

    settings = {"timeout_keep_alive": max(1, int(config.header_timeout)), "timeout_graceful_shutdown": 5}
    return uvicorn.Config(app, http=door_protocol(config.header_timeout), **{**settings, **options})
