"""The HTTP API: FastAPI routes, limits, and generation in worker threads.

Why shaped this way:
- **Generation in worker threads, bounded concurrency with a short queue** (`workers.py`): the event
  loop keeps answering while the model works (Starlette cancels a stream when the connection drops;
  a waiting non-streamed request polls for it), and excess requests get 429 / 503 at once.
- **Streamed pieces go out in batches** (`stream_interval`): the first piece at once, then what
  accumulated at most every `stream_interval` seconds. Each event costs the event loop, the HTTP
  stack and the client a wake-up and a JSON chunk, time taken from the decoder (the threads share the
  interpreter lock, and a small machine its cores); a small model makes a token every millisecond or
  two, so one event per token costs it a large share of its speed, while a reader sees no difference
  between 20 updates a second and 500. A model slower than the interval still sends each token alone.
- **Limits before work**: the body size is checked (413) before parsing, fields are validated (400
  naming the field), a prompt longer than the context is a 400, `max_tokens` is capped.
- **No CORS headers unless asked** (`--cors-origin URL`): the page is served from the same origin;
  with `--allowed-host` a request naming another Host is refused (DNS rebinding).
- **A door that holds** (`door.py`): a connection must send its headers within `header_timeout` and
  its body within `body_timeout`, else it is closed (408 for a slow body); no connection cap counts
  idle sockets against everyone else.
- **Every field answered**: `schemas.py` declares each field of OpenAI's request bodies; log-probs come
  from one scoring forward over prompt + answer (`logprobs.py`, `generate/scoring.py`).
"""

from __future__ import annotations

import functools
import hmac
import json
import math
import re
import threading
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from lmforge.data.chat_template import template_for
from lmforge.errors import UserError
from lmforge.generate.chat import Completion
from lmforge.generate.engine import encode_prompt
from lmforge.generate.sampling import openai_penalties
from lmforge.serve import logprobs, schemas
from lmforge.serve.door import BodyLimit, HostCheck, uvicorn_config
from lmforge.serve.settings import ServeConfig
from lmforge.serve.workers import APIError, Generation, Slots

STATIC = Path(__file__).parent / "static"


# Below this, sampling is greedy: it is the limit of ever lower temperatures, and dividing the logits
# by a temperature near 1e-38 overflows float32 into NaN probabilities.
MIN_TEMPERATURE = 1e-6


def create_app(loaded, config: ServeConfig) -> FastAPI:
    """The FastAPI app serving one loaded run (`lmforge.runs.LoadedRun`)."""
    model, tokenizer = loaded.model, loaded.tokenizer
    model_id = Path(loaded.run_dir).name
    template = template_for(tokenizer)
    specials = set(tokenizer.special_tokens.values())
    writer = logprobs.TokenWriter(tokenizer)
    app = FastAPI(title="lmforge", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes, timeout=config.body_timeout)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    if config.allowed_hosts:
        app.add_middleware(HostCheck, allowed=config.allowed_hosts)
    app.state.slots = Slots(config)
    page = (STATIC / "index.html").read_text(encoding="utf-8")

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        body = schemas.error_object(exc.message, exc.kind, exc.param)
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        first = exc.errors()[0]
        # Drop "body" and pydantic's union-member tags ("str", "list[int]", "function-after[...]").
        loc = [str(p) for p in first.get("loc", ()) if p != "body" and not _TYPE_TAG.match(str(p))]
        if first.get("type") == "json_invalid":
            return JSONResponse(
                schemas.error_object(f"malformed JSON body: {first.get('msg')}"), status_code=400
            )
        name = ".".join(loc) or "body"
        if first.get("type") == "extra_forbidden":
            message = f"{name}: not a field of this API; this server does not support it"
        else:
            message = f"{name}: {first.get('msg')}"
        return JSONResponse(schemas.error_object(message, param=name), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request, exc: HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(schemas.error_object(str(exc.detail), kind), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _bug(request, exc: Exception):  # a bug: still JSON for the client; uvicorn logs the traceback
        body = schemas.error_object(f"internal error ({type(exc).__name__})", "server_error")
        return JSONResponse(body, status_code=500)

    def check_key(request: Request) -> None:
        if config.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {config.api_key}".encode()):
            raise APIError(
                401, "missing or wrong API key: send 'Authorization: Bearer KEY'", kind="auth_error"
            )

    def check_model(name: str | None) -> None:
        if name is not None and name != model_id:
            raise APIError(404, f"model {name!r} does not exist; this server has '{model_id}'", "model",
                           kind="not_found_error")  # fmt: skip

    card = {"id": model_id, "object": "model", "created": 0, "owned_by": "lmforge"}

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page, headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    @app.get("/health")
    async def health():
        slots = app.state.slots
        return {"status": "ok", "model": model_id, "running": slots.running, "waiting": slots.waiting}

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    async def models():
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{name:path}", dependencies=[Depends(check_key)])
    async def one_model(name: str):
        check_model(name)
        return card

    def sampling(body: schemas.Params) -> dict:
        temperature = body.temperature if body.temperature >= MIN_TEMPERATURE else 0.0
        options = {"temperature": temperature, "top_p": body.top_p}
        bias = {int(k): v for k, v in (body.logit_bias or {}).items()}
        if any(k >= model.config.vocab_size for k in bias):
            raise APIError(400, f"logit_bias: token ids must be < {model.config.vocab_size}", "logit_bias")
        presence, frequency = body.presence_penalty, body.frequency_penalty
        if presence or frequency or bias:
            options["adjust_logits"] = functools.partial(
                openai_penalties, presence=presence, frequency=frequency, bias=bias
            )
        return options

    def seed_for(body: schemas.Params, j: int) -> int | None:
        if body.seed is None or j == 0:
            return body.seed
        return (body.seed + j) % 2**63  # the other choices: other draws, still repeatable

    async def answer(
        request: Request, body: schemas.Params, prompts: list, stop, stop_ids, score, chat: bool
    ):
        """Generate body.n choices per prompt; prompts: [(ids, echoed text)]."""
        check_model(body.model)
        wanted = body.wanted_tokens()
        max_tokens = min(config.default_max_tokens if wanted is None else wanted, config.max_tokens_cap)
        options = sampling(body)
        cancel = threading.Event()
        completions = []
        stops = [*stop, *(body.stop or [])]
        for ids, _ in prompts:
            for j in range(body.n):
                try:
                    completions.append(Completion(
                        model, tokenizer, ids, max_tokens, stop=stops, stop_ids=stop_ids,
                        ignore_eos=body.ignore_eos, cancel=cancel, seed=seed_for(body, j), **options,
                    ))  # fmt: skip
                except UserError as exc:
                    raise APIError(400, str(exc), "messages" if chat else "prompt") from None
        if not await app.state.slots.acquire(request):
            return JSONResponse(schemas.error_object("client closed the request"), status_code=499)
        interval = config.stream_interval if body.stream else math.inf
        run = Generation(completions, body.n, app.state.slots, cancel, score, interval)
        rid = schemas.new_id("chatcmpl" if chat else "cmpl")
        echoes = [echo for _, echo in prompts for _ in range(body.n)]

        def use() -> dict:
            return schemas.usage(
                sum(len(ids) for ids, _ in prompts), sum(c.completion_tokens for c in completions)
            )

        if not body.stream:
            texts, scores = [*echoes], [None] * len(completions)
            async for kind, index, value in run.events(request):
                if kind == "piece":
                    texts[index] += value
                else:
                    scores[index] = value
            choices = [
                schemas.choice_object(i, texts[i], c.finish_reason, chat, scores[i])
                for i, c in enumerate(completions)
            ]
            return schemas.completion_object(rid, model_id, choices, use(), chat)

        async def events():
            def sse(obj) -> str:
                return f"data: {json.dumps(obj)}\n\n"

            if chat:
                for i in range(len(completions)):
                    yield sse(schemas.chunk_object(rid, model_id, None, None, chat, first=True, index=i))
            try:
                async for kind, index, value in run.events():
                    if kind == "piece":
                        yield sse(schemas.chunk_object(rid, model_id, value, None, chat, index=index))
                    else:
                        finish = completions[index].finish_reason
                        yield sse(schemas.chunk_object(rid, model_id, None, finish, chat, index=index))
            except Exception as exc:  # headers are sent: report in-band, as OpenAI does
                yield sse(schemas.error_object(f"generation failed: {exc}", "server_error"))
                return
            if (body.stream_options or {}).get("include_usage"):
                final = schemas.chunk_object(rid, model_id, None, None, chat)
                final["choices"] = []
                final["usage"] = use()
                yield sse(final)
            yield "data: [DONE]\n\n"

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    def ended(completion: Completion) -> list[int]:
        """Prompt, generated ids and the stop id that ended them (scored, not shown)."""
        end = [] if completion.end_id is None else [completion.end_id]
        return [*completion.prompt_ids, *completion.token_ids, *end]

    @app.post("/v1/completions", dependencies=[Depends(check_key)])
    async def completions(body: schemas.CompletionRequest, request: Request):
        prompts, lengths = [], []  # (ids, echoed text); characters of each prompt's text
        for prompt in body.prompt:
            if isinstance(prompt, str):
                ids, shown = encode_prompt(tokenizer, prompt), prompt  # the eot in front is never echoed
            elif not prompt:  # the engine's own message speaks of its Python API, not of this request
                raise APIError(400, "prompt: an empty list of token ids; give at least one token", "prompt")
            else:
                ids, shown = list(prompt), tokenizer.decode(prompt) if _in_vocab(prompt, tokenizer) else ""
            prompts.append((ids, shown if body.echo else ""))
            lengths.append(len(shown))
        if body.stream and (body.echo or body.logprobs is not None):
            name = "logprobs" if body.logprobs is not None else "echo"
            raise APIError(400, f"{name}: not available with stream=true", name)
        # Text prompts begin with an eot that is context, not text; token prompts are all shown.
        firsts = [1 if isinstance(p, str) else 0 for p in body.prompt]
        score = None
        if body.logprobs is not None:

            def score(completion: Completion, number: int) -> dict:
                ids, top = ended(completion), body.logprobs
                if body.echo:
                    return logprobs.legacy(model, writer, ids, firsts[number], top)
                n = len(completion.prompt_ids)
                return logprobs.legacy(model, writer, ids, n, top, lengths[number])

        return await answer(request, body, prompts, [], specials, score, chat=False)

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    async def chat_completions(body: schemas.ChatRequest, request: Request):
        if body.top_logprobs is not None and not body.logprobs:
            raise APIError(400, "top_logprobs: needs logprobs: true", "top_logprobs")
        if body.stream and body.logprobs:
            raise APIError(400, "logprobs: not available with stream=true", "logprobs")
        ids = template.prompt_ids([m.as_turn() for m in body.messages])
        score = None
        if body.logprobs:
            top = body.top_logprobs or 0

            def score(completion: Completion, number: int) -> dict:
                return logprobs.chat(model, writer, ended(completion), len(completion.prompt_ids), top)

        return await answer(request, body, [(ids, "")], template.stop, template.stop_ids, score, chat=True)

    return app


_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|[a-z-]+\[.*\]|[a-z_]+-[a-z_-]+)$")


def _in_vocab(ids: list[int], tokenizer) -> bool:
    return all(0 <= i < tokenizer.vocab_size for i in ids)


def serve(loaded, host: str, port: int, config: ServeConfig, threads: int, log_level: str = "info") -> None:
    """Run the app on uvicorn until Ctrl-C / SIGTERM."""
    import torch
    import uvicorn

    torch.set_num_threads(max(1, threads))
    app = create_app(loaded, config)
    uvicorn.Server(uvicorn_config(app, config, host=host, port=port, log_level=log_level)).run()
