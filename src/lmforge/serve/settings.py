"""The server's settings: limits on bodies, tokens, concurrency and time, checked when made."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.errors import UserError


@dataclass
class ServeConfig:
    max_body_bytes: int = 65536  # larger request bodies are refused with 413
    max_tokens_cap: int = 512  # a request's max_tokens is lowered to this
    default_max_tokens: int = 128  # when a request gives none
    max_concurrent: int = 2  # generations running at once
    max_queue: int = 4  # requests waiting for a slot; beyond it 429 at once
    queue_timeout: float = 30.0  # seconds a queued request waits before 503
    header_timeout: float = 10.0  # seconds a connection may take to send its request headers
    body_timeout: float = 10.0  # seconds a request may take to send its whole body (then 408)
    api_key: str | None = None  # when set, /v1/* needs "Authorization: Bearer KEY"
    cors_origins: list[str] = field(default_factory=list)  # allowed browser origins; [] = no CORS headers
    allowed_hosts: list[str] = field(default_factory=list)  # Host header values accepted; [] = any
    stream_interval: float = 0.05  # seconds between streamed events (the first piece goes at once)

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_tokens_cap", "default_max_tokens", "max_concurrent"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} ({getattr(self, name)}) must be >= 1")
        if self.max_queue < 0 or self.queue_timeout <= 0:
            raise UserError("--max-queue must be >= 0 and the queue timeout > 0")
        if not (self.header_timeout > 0 and self.body_timeout > 0):
            raise UserError("--header-timeout and --body-timeout must be > 0 seconds")
        if not 0 <= self.stream_interval <= 10:
            raise UserError(f"--stream-interval ({self.stream_interval:g}) must be between 0 and 10 seconds")
