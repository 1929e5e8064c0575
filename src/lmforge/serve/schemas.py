"""The OpenAI-style wire format: request bodies (validated by pydantic) and response objects.

Shapes follow OpenAI's `/v1/completions` and `/v1/chat/completions` so existing client libraries work
unchanged: a completion is `{"id", "object", "created", "model", "choices": [...], "usage": {...}}`; a
streamed one is a series of chunk objects of the same kind, sent as server-sent events.

No field is silently ignored: every field of OpenAI's two request bodies is declared here, either
implemented or refused with a 400 that names it (`UNSUPPORTED`), and a field OpenAI does not define
is refused the same way (`extra="forbid"`), so a client never believes a setting took effect when it
did not. A few fields that only label a request for OpenAI's own bookkeeping (`user`, `metadata`,
`store`, `service_tier`, `safety_identifier`, `prompt_cache_key`) are accepted and have no effect.
`ignore_eos` is an extension (as in vLLM) for benchmarks: generate exactly `max_tokens` tokens.

Strings are checked for lone surrogates (valid JSON, not valid Unicode): they cannot be tokenized or
written back, so they are a 400 here rather than a 500 deep inside.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

MAX_N = 4  # choices per request (each one is a full generation)
MAX_PROMPTS = 32  # prompts in one completions request (lm-eval batches its scoring requests)
MAX_TOP_LOGPROBS = 20  # alternatives per position, as OpenAI allows
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts

# Fields of OpenAI's request bodies this server does not implement, and why the client should know.
UNSUPPORTED = {
    "suffix": "insertion (fill-in-the-middle) is not supported",
    "tools": "tool calling is not supported",
    "tool_choice": "tool calling is not supported",
    "functions": "function calling is not supported",
    "function_call": "function calling is not supported",
    "parallel_tool_calls": "tool calling is not supported",
    "response_format": "structured output (JSON mode, schemas) is not supported",
    "audio": "audio output is not supported",
    "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported",
    "reasoning_effort": "this model has no reasoning settings",
    "web_search_options": "web search is not supported",
    "verbosity": "this model has no verbosity setting",
    "moderation": "moderation is not run on requests or answers",
    "prompt_cache_options": "there is no prompt cache to configure",
    "prompt_cache_retention": "there is no prompt cache to configure",
}


def _valid_unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains a lone surrogate (\\ud800-\\udfff), which is not valid Unicode") from None
    return value


Text = Annotated[str, AfterValidator(_valid_unicode)]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Text | None = None  # the run's name; None = the served run
    max_tokens: int | None = Field(None, ge=0)  # new tokens at most (capped by the server); 0 = score only
    temperature: float = Field(1.0, ge=0.0, le=2.0)  # 0 = greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: Text | list[Text] | None = None  # up to 4 stop strings
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stream: bool = False
    stream_options: dict[str, bool] | None = None  # {"include_usage": true} adds a final usage chunk
    n: int = Field(1, ge=1, le=MAX_N)  # choices, generated one after another
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None  # token id (as a string) -> bias in [-100, 100]
    user: Text | None = None  # no effect (OpenAI's abuse monitoring label)
    ignore_eos: bool = False
    # Declared so that a client setting them gets a 400 naming the field (see UNSUPPORTED).
    suffix: Any = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None
    response_format: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    web_search_options: Any = None
    verbosity: Any = None
    moderation: Any = None
    prompt_cache_options: Any = None
    prompt_cache_retention: Any = None

    @field_validator(*UNSUPPORTED)
    @classmethod
    def _refuse(cls, value, info: ValidationInfo):
        if value is not None:
            raise ValueError(UNSUPPORTED[info.field_name])
        return value

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, value):
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop strings")
        return [s for s in stops if s]

    @field_validator("stream_options")
    @classmethod
    def _known_options(cls, value):
        for key in value or {}:
            if key != "include_usage":
                raise ValueError(f"unknown option '{key}' (only include_usage is supported)")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value):
        for key, bias in (value or {}).items():
            if not key.isdigit() or not -100 <= bias <= 100:
                raise ValueError("maps token ids (strings of digits) to biases in [-100, 100]")
        return value

    def wanted_tokens(self) -> int | None:
        return self.max_tokens


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: Text


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart]
    name: Text | None = None  # no effect: the template has no speaker names

    def as_turn(self) -> dict:
        """The template's view: developer messages are system messages; text parts are joined."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatRequest(Params):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # newer clients' name for max_tokens
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    metadata: dict[str, Text] | None = None  # no effect
    store: bool | None = None  # no effect: nothing is stored
    service_tier: Text | None = None  # no effect
    safety_identifier: Text | None = None  # no effect (OpenAI's abuse monitoring label, after `user`)
    prompt_cache_key: Text | None = None  # no effect (a label OpenAI routes its cache by)

    def wanted_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


# A prompt: text, token ids, or a batch of either (each prompt answered by its own choices).
Prompt = Text | list[int] | list[Text] | list[list[int]]


class CompletionRequest(Params):
    prompt: Prompt
    echo: bool = False  # return the prompt before the completion (with its log-probs if asked)
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)  # top alternatives per token
    best_of: int | None = Field(None, ge=1, le=MAX_N)  # only best_of == n: no ranking of candidates

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value):
        """Always a list of prompts, each a str or a list of ids."""
        if isinstance(value, str) or (value and isinstance(value[0], int)) or value == []:
            value = [value]
        if not 1 <= len(value) <= MAX_PROMPTS:
            raise ValueError(f"give 1 to {MAX_PROMPTS} prompts")
        return value

    @field_validator("best_of")
    @classmethod
    def _best_of_is_n(cls, value, info: ValidationInfo):
        if value is not None and value != info.data.get("n", 1):
            raise ValueError("only best_of == n is supported (candidates are not ranked)")
        return value


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def choice_object(
    index: int, text: str, finish: str | None, chat: bool, logprobs: dict | None = None
) -> dict:
    """One entry of a whole response's `choices`."""
    if chat:
        message = {"role": "assistant", "content": text, "refusal": None}
        return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish}
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}


def completion_object(rid: str, model: str, choices: list[dict], use: dict | None, chat: bool) -> dict:
    """A whole (non-streamed) response."""
    kind = "chat.completion" if chat else "text_completion"
    body = {"id": rid, "object": kind, "created": int(time.time()), "model": model, "choices": choices}
    if use is not None:
        body["usage"] = use
    return body


def chunk_object(
    rid: str, model: str, piece: str | None, finish: str | None, chat: bool, first=False, index: int = 0
) -> dict:
    """One streamed chunk: a piece of text, or (piece None) the end with its finish_reason."""
    if chat:
        delta = {"role": "assistant", "content": ""} if first else ({"content": piece} if piece else {})
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
    else:
        choice = {"index": index, "text": piece or "", "logprobs": None, "finish_reason": finish}
    kind = "chat.completion.chunk" if chat else "text_completion"
    return {"id": rid, "object": kind, "created": int(time.time()), "model": model, "choices": [choice]}


def error_object(message: str, kind: str = "invalid_request_error", param: str | None = None) -> dict:
    # A message may quote the client's input: make sure it can be written as UTF-8 whatever was sent.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}
