"""`lmforge generate RUN_DIR --prompt TEXT`: sample text from a trained run, streamed as it is made.

The prompt is read as the start of a document (an eot is put before it, as training did), tokens are
printed as soon as they form whole characters, and stop strings end the output before they would be
printed. With ``--json`` nothing is streamed: one JSON object with the text and the timings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from lmforge.cli.options import add_sampling_args, add_step_option, sampling_config


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="sample text from a trained run",
        description="Generate text after a prompt with a trained run (KV cache; greedy at --temperature 0).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by `lmforge train`")
    p.add_argument("--prompt", default="", help='text to continue ("" starts a new document)')
    add_sampling_args(p)  # --max-new-tokens --temperature --top-k --top-p --seed
    p.add_argument("--repetition-penalty", type=float, default=1.0, help=">1 discourages repeats (CTRL)")
    p.add_argument("--stop", nargs="+", default=[], metavar="S", help="stop before any of these strings")
    p.add_argument("--no-cache", action="store_true", help="recompute the window every token (slow)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    add_step_option(p, "generate with")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    from lmforge.errors import UserError

    sampling_config(args)  # the sampling flags' checks live in SamplingConfig
    if args.repetition_penalty <= 0:
        raise UserError(f"--repetition-penalty ({args.repetition_penalty}) must be > 0 (1 = off)")


def _load(run_dir: str, step: int | str | None = None):
    """(model, tokenizer) of the run's newest good checkpoint, through ``lmforge.runs.load_run``
    (a ``LoadedRun`` with .model and .tokenizer; the spec's (config, model, tokenizer, meta) tuple is
    accepted too)."""
    from lmforge.runs import load_run

    loaded = load_run(run_dir, step=step)
    if isinstance(loaded, tuple):
        return loaded[1], loaded[2]
    return loaded.model, loaded.tokenizer


def run(args: argparse.Namespace) -> int:
    _check(args)
    sampling = sampling_config(args)
    from lmforge.generate.engine import TextStreamer, encode_prompt, generate_tokens

    model, tokenizer = _load(args.run_dir, args.step)
    prompt_ids = encode_prompt(tokenizer, args.prompt)
    streamer = TextStreamer(tokenizer, args.stop)
    tokens = generate_tokens(
        model,
        prompt_ids,
        sampling.max_new_tokens,
        **sampling.engine_kwargs(),
        repetition_penalty=args.repetition_penalty,
        use_cache=not args.no_cache,
        eot_id=tokenizer.eot_id,
    )
    out = sys.stdout
    if not args.json:
        out.write(args.prompt)  # echo the prompt, so the stream reads as one text
        out.flush()
    n_tokens, stop_reason = 0, "length"
    t0 = time.perf_counter()
    for token_id in tokens:
        n_tokens += 1
        piece = streamer.put(token_id)
        if piece and not args.json:
            out.write(piece)
            out.flush()
        if streamer.stopped:
            tokens.close()
            stop_reason = "stop"
            break
    else:
        if n_tokens < args.max_new_tokens:
            stop_reason = "eot"
    seconds = time.perf_counter() - t0
    tail = streamer.finish()
    if args.json:
        report = {
            "prompt": args.prompt,
            "text": streamer.text,
            "prompt_tokens": len(prompt_ids),
            "new_tokens": n_tokens,
            "stop_reason": stop_reason,
            "seconds": round(seconds, 4),
            "tokens_per_s": round(n_tokens / seconds, 2) if seconds > 0 else None,
        }
        print(json.dumps(report))
    else:
        out.write(tail + "\n")
        out.flush()
    return 0
