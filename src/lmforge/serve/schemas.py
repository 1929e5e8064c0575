"""The OpenAI-style wire format: request bodies (validated by pydantic) and response objects.

Shapes follow OpenAI's `/v1/completions` and `/v1/chat/completions` so existing client libraries work
unchanged: a completion is `{"id", "object", "created", "model", "choices": [...], "usage": {...}}`; a
streamed one is a series of chunk objects of the same kind, sent as server-sent events. Unknown
request fields are ignored (clients send many we do not use, e.g. `user`, `logit_bias`); the ones we
read are type-checked, and a wrong one is a 400 naming the field. `ignore_eos` is an extension (as in
vLLM) for benchmarks: generate exactly `max_tokens` tokens.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Params(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None  # the run's name; None = the served run
    max_tokens: int | None = Field(None, ge=1)  # new tokens at most (capped by the server)
    max_completion_tokens: int | None = Field(None, ge=1)  # newer clients' name for max_tokens
    temperature: float = Field(1.0, ge=0.0, le=2.0)  # 0 = greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None  # up to 4 stop strings
    seed: int | None = None
    stream: bool = False
    stream_options: dict | None = None  # {"include_usage": true} adds a final usage chunk
    n: int = Field(1, ge=1, le=1)  # one choice per request
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, value):
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop strings")
        return [s for s in stops if s]

    def wanted_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(Params):
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(Params):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value):
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError("exactly one prompt per request")
            return value[0]
        return value


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_object(rid: str, model: str, text: str, finish: str, use: dict | None, chat: bool) -> dict:
    """A whole (non-streamed) response."""
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    kind = "chat.completion" if chat else "text_completion"
    body = {"id": rid, "object": kind, "created": int(time.time()), "model": model, "choices": [choice]}
    if use is not None:
        body["usage"] = use
    return body


def chunk_object(
    rid: str, model: str, piece: str | None, finish: str | None, chat: bool, first=False
) -> dict:
    """One streamed chunk: a piece of text, or (piece None) the end with its finish_reason."""
    if chat:
        delta = {"role": "assistant", "content": ""} if first else ({"content": piece} if piece else {})
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
    else:
        choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
    kind = "chat.completion.chunk" if chat else "text_completion"
    return {"id": rid, "object": kind, "created": int(time.time()), "model": model, "choices": [choice]}


def error_object(message: str, kind: str = "invalid_request_error", param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}
