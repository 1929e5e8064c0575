"""The HTTP API: FastAPI routes, limits, and generation in worker threads.

Why shaped this way:
- **Generation runs in a thread per request**, feeding an asyncio queue, so the event loop keeps
  answering `/health`, new requests and disconnects while the model works. The worker checks a cancel
  event between tokens: a client that goes away (Starlette cancels a stream when the connection
  drops; a waiting non-streamed request polls for it) stops its generation and frees its slot.
- **Bounded concurrency with a short queue**: at most `max_concurrent` generations run; up to
  `max_queue` more wait (at most `queue_timeout` seconds, then 503); anything beyond is answered 429
  at once. On a 2-core machine an unbounded pile of generations would only make every one of them slow.
- **Limits before work**: the body size is checked (413) before parsing, fields are validated (400
  naming the field), a prompt longer than the context is a 400, `max_tokens` is capped.
- **No CORS headers unless asked** (`--cors-origin URL`): the page is served from the same origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from lmforge.data.chat_template import template_for
from lmforge.errors import UserError
from lmforge.generate.chat import Completion
from lmforge.generate.engine import encode_prompt
from lmforge.serve import schemas

STATIC = Path(__file__).parent / "static"


@dataclass
class ServeConfig:
    max_body_bytes: int = 65536  # larger request bodies are refused with 413
    max_tokens_cap: int = 512  # a request's max_tokens is lowered to this
    default_max_tokens: int = 128  # when a request gives none
    max_concurrent: int = 2  # generations running at once
    max_queue: int = 4  # requests waiting for a slot; beyond it 429 at once
    queue_timeout: float = 30.0  # seconds a queued request waits before 503
    api_key: str | None = None  # when set, /v1/* needs "Authorization: Bearer KEY"
    cors_origins: list[str] = field(default_factory=list)  # allowed browser origins; [] = no CORS headers

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_tokens_cap", "default_max_tokens", "max_concurrent"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} ({getattr(self, name)}) must be >= 1")
        if self.max_queue < 0 or self.queue_timeout <= 0:
            raise UserError("--max-queue must be >= 0 and the queue timeout > 0")


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind="invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


class BodyLimit:
    """ASGI middleware: read the whole body up front, answering 413 past `max_bytes` (declared or not)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = declared is not None and declared.isdigit() and int(declared) > self.max_bytes
        body, more = b"", not too_large
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            body += message.get("body", b"")
            more = message.get("more_body", False)
            too_large = len(body) > self.max_bytes
            if too_large:
                break
        if too_large:
            text = f"request body exceeds {self.max_bytes} bytes"
            response = JSONResponse(
                schemas.error_object(text), status_code=413, headers={"Connection": "close"}
            )
            return await response(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class Slots:
    """`max_concurrent` running generations plus `max_queue` waiting; all state on the event loop."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.running = self.waiting = 0
        self._sem = asyncio.Semaphore(config.max_concurrent)

    async def acquire(self) -> None:
        cfg = self.config
        if self.running + self.waiting >= cfg.max_concurrent + cfg.max_queue:
            raise APIError(
                429,
                f"busy: {self.running} generations running, {self.waiting} waiting; retry shortly",
                kind="rate_limit_exceeded",
            )
        self.waiting += 1
        try:
            await asyncio.wait_for(self._sem.acquire(), cfg.queue_timeout)
        except TimeoutError:
            raise APIError(503, "no generation slot freed in time; retry later", kind="overloaded") from None
        finally:
            self.waiting -= 1
        self.running += 1

    def release(self) -> None:
        self.running -= 1
        self._sem.release()


class Generation:
    """A Completion running in a worker thread; `pieces()` yields its text on the event loop."""

    def __init__(self, completion: Completion, slots: Slots, cancel: threading.Event) -> None:
        self.completion, self.slots, self.cancel = completion, slots, cancel
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
            for piece in self.completion:
                self._post("piece", piece)
                if self.cancel.is_set():
                    break
            self._post("done", None)
        except Exception as exc:  # reported to the client as an error, not a dead connection
            self._post("error", exc)
        finally:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.slots.release)

    async def pieces(self, request: Request | None = None):
        """Text pieces; with `request`, polls for a disconnect while waiting (non-streamed answers)."""
        checked = self.loop.time()
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(self.queue.get(), 0.25)
                except TimeoutError:
                    kind = value = None
                if request is not None and self.loop.time() - checked >= 0.25:
                    checked = self.loop.time()
                    if await request.is_disconnected():
                        return
                if kind is None:
                    continue
                pieces = []
                while kind == "piece":  # coalesce what has piled up: one event instead of many
                    pieces.append(value)
                    kind, value = self.queue.get_nowait() if not self.queue.empty() else (None, None)
                if pieces:
                    yield "".join(pieces)
                if kind == "done":
                    return
                if kind == "error":
                    raise value
        finally:
            self.cancel.set()  # stops the worker if we stopped listening (no-op when it finished)


def create_app(loaded, config: ServeConfig) -> FastAPI:
    """The FastAPI app serving one loaded run (`lmforge.runs.LoadedRun`)."""
    model, tokenizer = loaded.model, loaded.tokenizer
    model_id = Path(loaded.run_dir).name
    template = template_for(tokenizer)
    specials = set(tokenizer.special_tokens.values())
    app = FastAPI(title="lmforge", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.state.slots = Slots(config)
    page = (STATIC / "index.html").read_text(encoding="utf-8")

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return JSONResponse(schemas.error_object(exc.message, exc.kind, exc.param), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            return JSONResponse(
                schemas.error_object(f"malformed JSON body: {first.get('msg')}"), status_code=400
            )
        name = ".".join(loc) or "body"
        message = f"{name}: {first.get('msg')}"
        return JSONResponse(schemas.error_object(message, param=name), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request, exc: HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(schemas.error_object(str(exc.detail), kind), status_code=exc.status_code)

    def check_key(request: Request) -> None:
        if config.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {config.api_key}".encode()):
            raise APIError(
                401, "missing or wrong API key: send 'Authorization: Bearer KEY'", kind="auth_error"
            )

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page, headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    @app.get("/health")
    async def health():
        slots = app.state.slots
        return {"status": "ok", "model": model_id, "running": slots.running, "waiting": slots.waiting}

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    async def models():
        card = {"id": model_id, "object": "model", "created": 0, "owned_by": "lmforge"}
        return {"object": "list", "data": [card]}

    async def generate(
        request: Request, body: schemas.Params, prompt_ids: list[int], stop, stop_ids, chat: bool
    ):
        if body.model is not None and body.model != model_id:
            raise APIError(404, f"model '{body.model}' does not exist; this server has '{model_id}'", "model")
        max_tokens = min(body.wanted_tokens() or config.default_max_tokens, config.max_tokens_cap)
        cancel = threading.Event()
        try:
            completion = Completion(
                model, tokenizer, prompt_ids, max_tokens, stop=[*stop, *(body.stop or [])], stop_ids=stop_ids,
                ignore_eos=body.ignore_eos, cancel=cancel, temperature=body.temperature,
                top_p=body.top_p, seed=body.seed,
            )  # fmt: skip
        except UserError as exc:
            raise APIError(400, str(exc), "messages" if chat else "prompt") from None
        await app.state.slots.acquire()
        run = Generation(completion, app.state.slots, cancel)
        rid = schemas.new_id("chatcmpl" if chat else "cmpl")
        if not body.stream:
            text = "".join([piece async for piece in run.pieces(request)])
            use = schemas.usage(completion.prompt_tokens, completion.completion_tokens)
            return schemas.completion_object(rid, model_id, text, completion.finish_reason, use, chat)

        async def events():
            def sse(obj) -> str:
                return f"data: {json.dumps(obj)}\n\n"

            if chat:
                yield sse(schemas.chunk_object(rid, model_id, None, None, chat, first=True))
            try:
                async for piece in run.pieces():
                    yield sse(schemas.chunk_object(rid, model_id, piece, None, chat))
            except Exception as exc:  # headers are sent: report in-band, as OpenAI does
                yield sse(schemas.error_object(f"generation failed: {exc}", "server_error"))
                return
            yield sse(schemas.chunk_object(rid, model_id, None, completion.finish_reason, chat))
            if (body.stream_options or {}).get("include_usage"):
                final = schemas.chunk_object(rid, model_id, None, None, chat)
                final["choices"] = []
                final["usage"] = schemas.usage(completion.prompt_tokens, completion.completion_tokens)
                yield sse(final)
            yield "data: [DONE]\n\n"

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    @app.post("/v1/completions", dependencies=[Depends(check_key)])
    async def completions(body: schemas.CompletionRequest, request: Request):
        ids = encode_prompt(tokenizer, body.prompt)
        return await generate(request, body, ids, [], specials, chat=False)

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    async def chat_completions(body: schemas.ChatRequest, request: Request):
        ids = template.prompt_ids([m.model_dump() for m in body.messages])
        return await generate(request, body, ids, template.stop, template.stop_ids, chat=True)

    return app


def serve(loaded, host: str, port: int, config: ServeConfig, threads: int, log_level: str = "info") -> None:
    """Run the app on uvicorn until Ctrl-C / SIGTERM."""
    import torch
    import uvicorn

    torch.set_num_threads(max(1, threads))
    app = create_app(loaded, config)
    # A backstop above our own queue: uvicorn answers 503 past this many open connections.
    limit = config.max_concurrent + config.max_queue + 64
    uvicorn.run(
        app, host=host, port=port, log_level=log_level, limit_concurrency=limit, timeout_graceful_shutdown=5
    )
