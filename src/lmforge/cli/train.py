"""`lmforge train`: train a model on a prepared data folder into a run folder (or resume one)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from lmforge import io, locks
from lmforge.cli.options import add_config_flags
from lmforge.errors import UserError
from lmforge.memory import check_fits

logger = logging.getLogger(__name__)

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
    p.add_argument("--config", help="preset TOML file, or a preset name (e.g. gpt-small)")
    add_config_flags(p, ["model", "max_steps", "max_tokens", "time_budget", "tensorboard"])
    p.add_argument(
        "--auto",
        action="store_true",
        help="choose model size, context, batch and learning rate for this machine and --time-budget "
        "(measured speeds + the scaling fit); key=value settings stay as given",
    )
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR from its newest good checkpoint")
    p.add_argument("--allow-data-change", action="store_true", help="resume even if the shards changed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, help="train on N processes of this machine (launches torchrun, DDP)")
    p.add_argument("--json", action="store_true", help="print the final summary as one JSON object")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=3e-4")
    p.set_defaults(func=run)


def resolve_preset(name: str | None) -> Path | None:
    if not name:
        return None
    from lmforge import presets

    path = Path(name)
    if path.is_file():
        return path
    # a preset name, or an old `configs/NAME.toml` path from before the presets moved into the package
    candidate = presets.path(path.name if path.parent.name == "configs" else name)
    if candidate is not None:
        return candidate
    known = ", ".join(presets.names()) or "none"
    raise UserError(f"config '{name}' is neither a file nor a preset; pass --config with one of: {known}")


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
    """The run's config: its saved config.json on --resume, then --config, flags, key=value overrides."""
    from lmforge import runs
    from lmforge.cli.options import config_updates
    from lmforge.config import load_config

    saved = None
    if args.resume and (Path(args.out) / "config.json").is_file():
        saved = runs.read_run_config(Path(args.out)).to_dict()
    return load_config(
        resolve_preset(args.config),
        args.overrides,
        vocab_size,
        saved=saved,
        flags=config_updates(args),
        fixed={"data.path": str(args.data)},
    )


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

    args.started = time.perf_counter()  # --auto's budget counts from here (and the process's start-up)

    dist_info = dist.from_env()
    if args.auto and ((args.nproc or 1) > 1 or dist_info.enabled):
        raise UserError("--auto measures speeds in one process; drop --nproc, or drop --auto")
    if args.nproc and args.nproc > 1 and not dist_info.enabled:
        return launch(args, strip_nproc(sys.argv[1:] if args.argv is None else list(args.argv)))
    data_dir = Path(args.data)
    if data_dir.is_file():  # raw text given where a prepared folder belongs: name the command that makes one
        folder = data_dir.with_name(f"{data_dir.name.split('.')[0]}_data")
        raise UserError(
            f"--data '{data_dir}' is a file, not a data folder; make one with `lmforge data prepare "
            f"--source {data_dir} --out {folder}` and pass --data {folder}"
        )
    if not data_dir.is_dir():
        raise UserError(
            f"data folder '{data_dir}' does not exist; make it with "
            f"`lmforge data prepare --source YOUR_TEXT --out {data_dir}`"
        )
    check_out_folder(data_dir, Path(args.out), args.resume)
    command = " ".join(["lmforge", *(sys.argv[1:] if args.argv is None else args.argv)])
    lock = locks.holding(args.out, "--out", command) if dist_info.is_main else contextlib.nullcontext()
    with lock:
        if dist_info.is_main:
            for name in io.remove_temporaries(args.out):  # left by a process stopped mid-write
                what = "checkpoint" if name.startswith("ckpt/") else "file"
                logger.info(f"removed unfinished {what} {name.rpartition('/')[2]}")
        tokenizer = load_tokenizer(data_dir / "tokenizer")
        notes = None
        if args.auto:
            config, record = auto_config(args, data_dir, tokenizer)
            notes = {"auto": record}
        else:
            config = build_config(args, tokenizer.vocab_size)
        if config.train.device != "cuda":
            check_fits(config)
        return _train(args, config, data_dir, tokenizer, dist_info, notes)


def auto_config(args, data_dir: Path, tokenizer):
    """--auto: the config chosen for this machine and budget (tune/auto.py), and its record."""
    from lmforge.cli.options import config_updates
    from lmforge.config import parse_override
    from lmforge.tune.auto import auto_config as choose_config
    from lmforge.tune.auto import process_seconds

    if args.resume:
        raise UserError(
            "--auto chooses a new run's model; drop --auto to --resume (the run keeps its choice)"
        )
    given = {**config_updates(args), **dict(parse_override(o) for o in args.overrides)}
    # from a shell the budget includes the interpreter's start-up; called in process (the demo), not
    started = args.started
    before = process_seconds() - (time.perf_counter() - started) if args.argv is None else 0.0

    def elapsed() -> float:
        return before + time.perf_counter() - started

    return choose_config(resolve_preset(args.config), given, data_dir, tokenizer, elapsed)


def check_out_folder(data_dir: Path, out: Path, resume: bool) -> None:
    """Refuse an --out that is not a run folder (or, with --resume, not an existing run)."""
    from lmforge import runs

    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file, not a folder; choose another --out")
    kind = locks.folder_kind(out)
    if out.resolve() == data_dir.resolve() or kind == "data":
        raise UserError(
            f"--out '{out}' is a data folder; training into it would overwrite its tokenizer -- "
            "choose a new run folder for --out"
        )
    if kind == "sweep":
        raise UserError(f"--out '{out}' is a sweep folder; choose a new run folder for --out")
    if resume:
        if not (out / "config.json").is_file():
            raise UserError(
                f"--resume: '{out}' holds no run to continue (no config.json); check --out, "
                "or drop --resume to start a new run"
            )
        runs.read_run_config(out)  # a damaged config.json / run.json names itself before training
        runs.read_run_info(out)


def _train(args, config, data_dir: Path, tokenizer, dist_info, notes=None) -> int:
    from lmforge import dist
    from lmforge.train.loop import train

    try:
        result = train(
            config,
            data_dir,
            args.out,
            resume=args.resume,
            allow_data_change=args.allow_data_change,
            progress=not args.no_progress and not args.json,
            sample_fn=make_sampler(tokenizer, config.train.sample_tokens, config.train.seed),
            faults=faults_from_env(),
            dist_info=dist_info,
            run_notes=notes,
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
        "val_tokens": val.get("tokens"),  # the first train.eval_tokens of the split; `eval` reads it all
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"trained {result.steps} steps ({result.tokens:,} tokens) in {result.wall_seconds:.1f}s, "
            f"{result.tokens_per_second / 1e3:.1f}k tok/s; stopped by {result.stopped_by}"
        )
        if val:
            scope = f"first {val['tokens']:,} val tokens" if val.get("tokens") else "val tokens"
            print(
                f"val loss {val['loss']:.4f} | perplexity {val['perplexity']:.2f} | bpb {val['bpb']:.4f} "
                f"({scope}, train.eval_tokens; `lmforge eval RUN` measures the whole split)"
            )
        if result.skipped_steps or result.rollbacks:
            print(
                f"guard: {result.skipped_steps} steps skipped for bad numbers, "
                f"{result.rollbacks} rollbacks to a good checkpoint"
            )
    return 0
