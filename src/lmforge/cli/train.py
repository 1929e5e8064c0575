"""`lmforge train`: train a model on a prepared data folder into a run folder (or resume one)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from lmforge.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"
# Test-only fault injection at exact points (the spec's grammar: lmforge/train/faults.py).
FAULT_ENV = "LMFORGE_FAULT"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model on token shards",
        description="Train a GPT or GRU language model on DATA_DIR's shards, writing RUN_DIR. "
        "Settings come from a preset (--config) plus dotted overrides such as optim.lr=3e-4.",
    )
    p.add_argument("--data", required=True, help="DATA_DIR made by `lmforge data prepare`")
    p.add_argument("--out", required=True, help="RUN_DIR to write (config, metrics, checkpoints)")
    p.add_argument("--config", help="preset TOML file, or a name from configs/ (e.g. gpt-small)")
    p.add_argument("--model", choices=["gpt", "gru"], help="model family (sets model.family)")
    p.add_argument("--max-steps", type=int, help="optimizer steps (train.max_steps)")
    p.add_argument("--max-tokens", type=int, help="stop after this many training tokens (train.max_tokens)")
    p.add_argument(
        "--time-budget", type=float, help="wall seconds; sizes the schedule to fit (train.time_budget)"
    )
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR from its newest good checkpoint")
    p.add_argument("--allow-data-change", action="store_true", help="resume even if the shards changed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, help="train on N processes of this machine (launches torchrun, DDP)")
    p.add_argument(
        "--tensorboard", action="store_true", help="also log to RUN_DIR/tb/ (train.tensorboard=true)"
    )
    p.add_argument("--json", action="store_true", help="print the final summary as one JSON object")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=3e-4")
    p.set_defaults(func=run)


def resolve_preset(name: str | None) -> Path | None:
    if not name:
        return None
    path = Path(name)
    if path.is_file():
        return path
    candidate = CONFIG_DIR / (name if name.endswith(".toml") else f"{name}.toml")
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.toml")) if CONFIG_DIR.is_dir() else []
    raise UserError(f"config '{name}' is neither a file nor a preset; presets: {', '.join(known) or 'none'}")


def strip_nproc(argv: list[str]) -> list[str]:
    """The command line without `--nproc N` (the launched ranks must not launch again)."""
    out, skip = [], False
    for i, item in enumerate(argv):
        if skip:
            skip = False
            continue
        if item == "--nproc":
            skip = i + 1 < len(argv)
            continue
        if item.startswith("--nproc="):
            continue
        out.append(item)
    return out


def faults_from_env():
    """The faults LMFORGE_FAULT asks for (tests only); none when it is unset."""
    from lmforge.train.faults import parse_faults

    return parse_faults(os.environ.get(FAULT_ENV), rank=int(os.environ.get("RANK", "0")))


def build_config(args, vocab_size: int):
    from lmforge.config import apply_updates, build_run_config, flatten, parse_override, read_toml

    tree: dict = {}
    run_config = Path(args.out) / "config.json"
    if args.resume and run_config.is_file():
        apply_updates(tree, flatten(json.loads(run_config.read_text(encoding="utf-8"))))
    preset = resolve_preset(args.config)
    if preset:
        apply_updates(tree, flatten(read_toml(preset)))
    updates = {}
    if args.model:
        updates["model.family"] = args.model
    if args.max_steps is not None:
        updates["train.max_steps"] = args.max_steps
    if args.max_tokens is not None:
        updates["train.max_tokens"] = args.max_tokens
    if args.time_budget is not None:
        updates["train.time_budget"] = args.time_budget
    if getattr(args, "tensorboard", False):
        updates["train.tensorboard"] = True
    updates.update(dict(parse_override(o) for o in args.overrides))
    apply_updates(tree, updates)
    tree.setdefault("data", {})["path"] = str(args.data)
    return build_run_config(tree, vocab_size)


def make_sampler(tokenizer, max_new_tokens: int, seed: int):
    """A sample_fn for the loop: a short continuation of the start-of-document token."""

    def sample(model, step: int) -> str:
        from lmforge.generate.engine import generate_tokens

        ids = list(
            generate_tokens(
                model,
                [tokenizer.eot_id],
                max_new_tokens,
                temperature=0.8,
                top_k=50,
                seed=seed + step,
                eot_id=tokenizer.eot_id,
            )
        )
        return tokenizer.decode(ids)

    return sample


def launch(args, argv: list[str]) -> int:
    """Re-run this very command under torchrun on `args.nproc` local processes."""
    import subprocess

    from lmforge import dist

    command = dist.torchrun_command(args.nproc, argv)
    result = subprocess.run(command)
    if result.returncode != 0:
        raise UserError(
            f"a training process failed (exit {result.returncode}); torchrun stopped all {args.nproc} "
            "ranks -- see the first rank's message above"
        )
    return 0


def run(args) -> int:
    from lmforge import dist
    from lmforge.data.tokenizer import load_tokenizer
    from lmforge.train.loop import train

    dist_info = dist.from_env()
    if args.nproc and args.nproc > 1 and not dist_info.enabled:
        return launch(args, strip_nproc(sys.argv[1:] if args.argv is None else list(args.argv)))
    data_dir = Path(args.data)
    if not data_dir.is_dir():
        raise UserError(
            f"data folder '{data_dir}' does not exist; make it with `lmforge data prepare --out {data_dir}`"
        )
    tokenizer = load_tokenizer(data_dir / "tokenizer")
    config = build_config(args, tokenizer.vocab_size)
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    try:
        result = train(
            config,
            data_dir,
            args.out,
            resume=args.resume,
            allow_data_change=args.allow_data_change,
            progress=not args.no_progress and not args.json,
            log=log,
            sample_fn=make_sampler(tokenizer, config.train.sample_tokens, config.train.seed),
            faults=faults_from_env(),
            dist_info=dist_info,
        )
    except (MemoryError, RuntimeError) as exc:
        text = str(exc).lower()
        if isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text:
            raise UserError(
                "out of memory: the batch does not fit; lower train.batch_size or model.seq_len"
            ) from None
        raise
    finally:
        dist.shutdown(dist_info)
    if not dist_info.is_main:
        return 0
    val = result.final_val
    summary = {
        "run_dir": str(result.run_dir),
        "steps": result.steps,
        "tokens": result.tokens,
        "wall_seconds": round(result.wall_seconds, 2),
        "tokens_per_second": round(result.tokens_per_second, 1),
        "mfu": round(result.mfu, 4),
        "num_params": result.num_params,
        "stopped_by": result.stopped_by,
        "skipped_steps": result.skipped_steps,
        "rollbacks": result.rollbacks,
        "val_loss": val.get("loss"),
        "val_bpb": val.get("bpb"),
        "val_perplexity": val.get("perplexity"),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"trained {result.steps} steps ({result.tokens:,} tokens) in {result.wall_seconds:.1f}s, "
            f"{result.tokens_per_second / 1e3:.1f}k tok/s; stopped by {result.stopped_by}"
        )
        if val:
            print(f"val loss {val['loss']:.4f} | perplexity {val['perplexity']:.2f} | bpb {val['bpb']:.4f}")
        if result.skipped_steps or result.rollbacks:
            print(
                f"guard: {result.skipped_steps} steps skipped for bad numbers, "
                f"{result.rollbacks} rollbacks to a good checkpoint"
            )
    return 0
