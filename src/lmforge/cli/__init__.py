"""The `lmforge` console script: one verb per pipeline stage.

This package is the only place that reads `argv`. Each verb lives in its own module
(`cli/data.py`, `cli/train.py`, ...) exposing `register(subparsers)`, which adds the verb's parser
and sets `func` to a function taking the parsed arguments and returning an exit code.

User mistakes arrive as `UserError` and end in one line on stderr and exit code 2, never a
traceback; so does a write that a full, read-only or size-limited disk refused, wherever it
happened. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import os
import signal
import sys

from lmforge import __version__, io, locks, logs
from lmforge.errors import UserError

# Verb modules, imported lazily so that `lmforge --help` does not pay for `import torch`.
VERB_MODULES = [
    "data", "train", "evaluate", "generate", "demo", "report", "sweep", "scaling",
    "finetune", "predict", "chat", "serve", "export",
]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmforge",
        description="Raw text -> clean data -> tokenizer -> shards -> train -> evaluate -> generate.",
    )
    parser.add_argument("--version", action="version", version=f"lmforge {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in VERB_MODULES:
        module = importlib.import_module(f"lmforge.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may come anywhere on the line, also after options.
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = argv  # the command line as given (a launcher re-runs it under torchrun)
    # A file-size limit (ulimit -f) then fails the write with EFBIG -- one `error: could not write`
    # line from lmforge.io -- instead of killing the process in the middle of it.
    with contextlib.suppress(ValueError):  # called from a thread: signals belong to the main one
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # Under --json stdout holds the one JSON answer, so progress messages go to stderr.
    logs.configure(info_to_stderr=bool(getattr(args, "json", False)))
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in io.WRITE_FAILURES:  # anything but a full / read-only / size-limited disk
            raise
        print(f"error: {io.write_error(exc.filename or 'a file', exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        locks.release_all()  # a verb's folder locks last as long as the verb (the process, from a shell)


def entry() -> None:
    """The console script and `python -m lmforge`: `main()`, then a quick exit.

    Once a verb has returned, everything it wrote is on disk (lmforge writes through closed or
    unbuffered files), yet a plain interpreter exit then spends a second or so tearing torch's modules
    and C++ state down on a 2-core CPU (1.17 s per `lmforge eval`: bench/bench_exit.py, BENCHMARKS.md
    "The allocator and the exit"). So the atexit handlers run (logging, temporary folders), the
    standard streams are flushed, and the process ends there. A bug's traceback takes the ordinary way
    out.
    """
    try:
        code = main()
    except BrokenPipeError:  # whoever read our output left early (`lmforge ... | head`): done
        code = 141  # a shell's code for a process ended by SIGPIPE
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe on the other end changes nothing now
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
