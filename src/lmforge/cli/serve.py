"""`lmforge serve RUN_DIR`: an OpenAI-style HTTP API and a chat page for one run (the `serve` extra).

Binds 127.0.0.1 unless told otherwise. `--api-key` (or the LMFORGE_API_KEY environment variable, read
here and nowhere else) makes /v1/* require `Authorization: Bearer KEY`. The model id in the API is the
run folder's name.
"""

from __future__ import annotations

import argparse
import os
import sys

from lmforge.cli.options import add_step_option
from lmforge.errors import UserError

API_KEY_ENV = "LMFORGE_API_KEY"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a run over an OpenAI-style HTTP API with a chat page",
        description="Serve RUN_DIR: GET /, /health, /v1/models; POST /v1/completions, /v1/chat/completions.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder to serve")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 = every interface)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--api-key", default=None, help=f"require this bearer token (default: ${API_KEY_ENV})")
    p.add_argument("--max-concurrent", type=int, default=2, help="generations running at once")
    p.add_argument("--max-queue", type=int, default=4, help="requests waiting for a slot (then 429)")
    p.add_argument("--max-tokens-cap", type=int, default=512, help="upper bound on a request's max_tokens")
    p.add_argument("--max-body-bytes", type=int, default=65536, help="larger request bodies get 413")
    p.add_argument("--cors-origin", action="append", default=[], metavar="URL", help="allow this origin")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="accept only requests whose Host header is NAME (repeatable; guards against DNS "
                   "rebinding when no API key is set); default: any")  # fmt: skip
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a client may take to send its request headers (then closed)")  # fmt: skip
    p.add_argument("--body-timeout", type=float, default=10.0,
                   help="seconds a request may take to send its body (then 408)")  # fmt: skip
    p.add_argument("--stream-interval", type=float, default=0.05, metavar="SECONDS",
                   help="streamed text goes out at most this often, the first piece at once (0 = one event "
                   "per token, which costs a small model much of its speed)")  # fmt: skip
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = cores / max-concurrent)")
    add_step_option(p, "serve")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("serving needs FastAPI and uvicorn: pip install 'lmforge[serve]'") from None
    from lmforge import hardware
    from lmforge.runs import load_run
    from lmforge.serve.app import ServeConfig, serve

    if not 0 < args.port < 65536:
        raise UserError(f"--port ({args.port}) must be in 1..65535")
    config = ServeConfig(
        max_body_bytes=args.max_body_bytes,
        max_tokens_cap=args.max_tokens_cap,
        default_max_tokens=min(128, args.max_tokens_cap),
        max_concurrent=args.max_concurrent,
        max_queue=args.max_queue,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        cors_origins=args.cors_origin,
        allowed_hosts=args.allowed_host,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        stream_interval=args.stream_interval,
    )
    threads = args.threads or max(1, hardware.physical_cores() // args.max_concurrent)
    loaded = load_run(args.run_dir, step=args.step)
    key = "on" if config.api_key else "off"
    print(
        f"serving {loaded.run_dir.name} on http://{args.host}:{args.port}/ (API key {key})", file=sys.stderr
    )
    serve(loaded, args.host, args.port, config, threads)
    return 0
