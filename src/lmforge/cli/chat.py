"""`lmforge chat RUN_DIR`: talk to a run in the terminal, answers streamed as they are generated.

Commands: /reset (forget the conversation), /temp X (sampling temperature; 0 = greedy), /quit.
Ctrl-C during an answer stops that answer (what was said so far stays in the history) and returns to
the prompt; at the prompt it only reminds you of /quit. End of input (Ctrl-D, or the end of a pipe)
leaves. Works with stdin from a pipe: then no prompt is printed, only the answers, one per line.
A run fine-tuned with `lmforge finetune --task sft` uses its chat tokens; any other run a plain
"User: / Assistant:" transcript.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from lmforge.cli.options import add_sampling_args, add_step_option, sampling_config

HELP = "commands: /reset  /temp X  /quit   (Ctrl-C stops an answer)"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "chat",
        help="chat with a run in the terminal",
        description="An interactive chat with a trained (ideally chat fine-tuned) run. " + HELP,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder (lmforge train / finetune --task sft)")
    p.add_argument("--system", default=None, help="a system message that starts the conversation")
    add_sampling_args(p)  # --max-new-tokens (per answer) --temperature --top-k --top-p --seed
    add_step_option(p, "chat with")
    p.set_defaults(func=run)


def repl(session, read: Callable[[], str], write: Callable[[str], None], interactive: bool) -> int:
    """The loop: `read()` returns a line (EOFError at the end, KeyboardInterrupt on Ctrl-C)."""
    while True:
        try:
            line = read().strip()
        except EOFError:
            return 0
        except KeyboardInterrupt:
            write("\n(type /quit to leave)\n")
            continue
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            session.reset()
            write("[conversation reset]\n")
            continue
        if line.startswith("/temp"):
            try:
                value = float(line.split(maxsplit=1)[1])
                if value < 0:
                    raise ValueError
            except (IndexError, ValueError):
                write("[usage: /temp X with X >= 0, e.g. /temp 0.7]\n")
                continue
            session.sampling["temperature"] = value
            write(f"[temperature {value}]\n")
            continue
        if line.startswith("/"):
            write(f"[unknown command {line.split()[0]}; {HELP}]\n")
            continue
        _answer(session, line, write, interactive)


def _answer(session, line: str, write, interactive: bool) -> None:
    from lmforge.errors import UserError

    try:
        completion, dropped = session.send(line)
    except UserError as exc:
        write(f"[{exc}]\n")
        return
    if dropped:
        write(f"[the context is full: dropped the {dropped} oldest message(s)]\n")
    if interactive:
        write("assistant> ")
    try:
        for piece in completion:
            write(piece)
    except KeyboardInterrupt:
        write(" [stopped]")
    session.record(completion.text)
    write("\n")


def run(args: argparse.Namespace) -> int:
    from lmforge import hardware
    from lmforge.errors import UserError
    from lmforge.generate.chat import ChatSession
    from lmforge.runs import load_run

    sampling = sampling_config(args)
    if sampling.max_new_tokens < 1:
        raise UserError("--max-new-tokens must be >= 1 (tokens per answer)")
    hardware.setup_threads(0)
    loaded = load_run(args.run_dir, step=args.step)
    session = ChatSession(
        loaded.model,
        loaded.tokenizer,
        system=args.system,
        max_new_tokens=sampling.max_new_tokens,
        **sampling.engine_kwargs(),
    )
    interactive = sys.stdin.isatty()
    kind = "chat tokens" if session.template.end_id is not None else "plain transcript: not chat fine-tuned"
    banner = [f"lmforge chat: {loaded.run_dir.name} ({kind}); {HELP}"]

    def read() -> str:
        if banner:  # printed inside repl's Ctrl-C handling: a Ctrl-C right after it is a reminder too
            print(banner.pop(), file=sys.stderr, flush=True)
        return input("you> " if interactive else "")

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    return repl(session, read, write, interactive)
