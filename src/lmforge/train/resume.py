"""Opening a run folder: a fresh start, or a resume that is exact -- or says why it is not.

A fresh run writes config.json, run.json and a copy of the tokenizer. A resume (`--resume`) checks that
the folder holds a run, that the model, tokenizer and data are the ones it was started with, records
any setting changed on the command line into config.json (and says which), and picks the newest
checkpoint that verifies.

Bit-exact continuation depends on more than the saved state: the thread count (how reductions are
split), the autocast dtype, the torch version and the CPU's kernel family (ATen dispatches on it).
Each checkpoint records them (`environment`); a resume sets the same thread count when the config
leaves it to the machine, and warns, naming the cause, when a continuation cannot be bit-identical.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from lmforge import __version__, io, runs
from lmforge.config import RunConfig, flatten
from lmforge.errors import UserError
from lmforge.train.data import TrainData
from lmforge.train.state import TrainState

logger = logging.getLogger(__name__)


def environment(threads: int, dtype: str, device: torch.device, world_size: int) -> dict:
    """What a run's exact numbers depend on besides its state: saved in every checkpoint."""
    return {
        "threads": threads,
        "dtype": dtype,
        "device": device.type,
        "world_size": world_size,
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def threads_for(configured: int, saved_env: dict | None, default: int) -> int:
    """The thread count to train with: the config's, else the checkpoint's (so a resume on a machine
    with another core count still splits its sums as before), else the machine's."""
    if configured:
        return configured
    if saved_env and saved_env.get("threads"):
        return int(saved_env["threads"])
    return default


def exactness_warnings(saved_env: dict | None, env: dict) -> list[str]:
    """Why this continuation will not (or cannot be shown to) be bit-identical to the uninterrupted
    run; empty when it will be."""
    if not saved_env:
        return ["the checkpoint does not record its environment (an older lmforge or an import wrote it)"]
    names = {
        "threads": "thread count",
        "dtype": "train.dtype",
        "device": "device",
        "world_size": "process count",
        "torch": "torch version",
        "cpu_capability": "CPU kernel family",
    }
    return [
        f"{label} {saved_env.get(key)} -> {env[key]}"
        for key, label in names.items()
        if key in saved_env and saved_env[key] != env[key]
    ]


def open_run(
    run_dir: Path,
    config: RunConfig,
    data: TrainData,
    resume: bool,
    allow_data_change: bool,
    main: bool,
    notes: dict | None = None,
) -> runs.Checkpoint | None:
    """Prepare RUN_DIR; the checkpoint to resume from, or None for a fresh start. `notes`: more
    entries for a fresh run's run.json (e.g. how --auto chose the model)."""
    if resume:
        if not (run_dir / "config.json").is_file():
            raise UserError(
                f"--resume: '{run_dir}' holds no run to continue (no config.json); check --out, or "
                "drop --resume to start a new run there"
            )
        _check_same_run(run_dir, config, data, allow_data_change)
        if main:
            for name in runs.remove_temporaries(run_dir):
                logger.info(f"removed unfinished checkpoint {name}")
        checkpoint = runs.find_latest_good(run_dir, quiet=not main)
        if checkpoint is None and runs.list_checkpoints(run_dir):
            raise UserError(
                f"no checkpoint in '{run_dir / 'ckpt'}' is intact (see the warnings above), so there is "
                "nothing safe to resume from; train into a new --out folder"
            )
        if checkpoint is not None:
            return checkpoint
    elif (run_dir / "ckpt").is_dir() and runs.list_checkpoints(run_dir):
        raise UserError(
            f"'{run_dir}' already holds a run; pass --resume to continue it or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    if main:
        _write_fresh(run_dir, config, data, notes)
    return None


def check_not_finished(state: TrainState, config: RunConfig, budget_spent: bool, run_dir: Path) -> None:
    """A resumed run must have something left to do; say which setting extends it when not."""
    tcfg = config.train
    if tcfg.time_budget > 0:
        if budget_spent:
            raise UserError(
                f"'{run_dir}' has already spent its time budget ({state.wall_seconds:.0f}s of "
                f"train.time_budget {tcfg.time_budget:g}s); pass a larger --time-budget to train it further"
            )
    elif state.step >= tcfg.max_steps:
        raise UserError(
            f"'{run_dir}' already finished at step {state.step} (train.max_steps {tcfg.max_steps}); "
            f"pass --max-steps larger than {state.step} to train it further"
        )
    if tcfg.max_tokens and state.tokens >= tcfg.max_tokens:
        raise UserError(
            f"'{run_dir}' already trained on {state.tokens:,} tokens (train.max_tokens "
            f"{tcfg.max_tokens:,}); pass a larger --max-tokens to train it further"
        )


def run_settings(run_dir: Path) -> dict:
    """A run's own data/optim/schedule/train settings as dotted keys: what a verb that rebuilds its
    config from defaults (fine-tuning) applies on --resume, so the run continues as it was configured."""
    flat = flatten(runs.read_run_config(run_dir).to_dict())
    return {key: value for key, value in flat.items() if not key.startswith("model.")}


def _check_same_run(run_dir: Path, config: RunConfig, data: TrainData, allow_data_change: bool) -> None:
    saved = runs.read_run_config(run_dir)
    if saved.model != config.model:
        raise UserError(
            f"the model config differs from the one '{run_dir}' was started with; resume without "
            "changing model.* settings, or train into a new --out folder"
        )
    info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    if info.get("tokenizer_hash") != data.tokenizer.hash:
        raise UserError(f"the tokenizer changed since '{run_dir}' was started; resume with the original data")
    if info.get("manifest_hash") != data.fingerprint and not allow_data_change:
        raise UserError(
            f"the training shards changed since '{run_dir}' was started; pass --allow-data-change to "
            "resume anyway (the batches will differ from the original run's)"
        )


def record_changes(run_dir: Path, config: RunConfig) -> None:
    """Settings changed on the resume command go into config.json, so the folder says how it was run."""
    before = flatten(json.loads((run_dir / "config.json").read_text(encoding="utf-8")))
    after = flatten(config.to_dict())
    changed = [f"{k} {before.get(k)!r} -> {after[k]!r}" for k in sorted(after) if before.get(k) != after[k]]
    if changed:
        runs.write_json_atomic(run_dir / "config.json", config.to_dict())
        logger.info(
            f"resume: settings changed since the last start (recorded in config.json): {'; '.join(changed)}"
        )


def record_fast_paths(run_dir: Path, record: dict) -> None:
    """This start's fast-path choices (models/fastpaths.py) into run.json: a resume on another
    machine may choose differently, and the folder says what the latest start ran."""
    path = run_dir / "run.json"
    info = io.read_json_object(path) if path.is_file() else {}
    runs.write_json_atomic(path, {**info, "fast_paths": record})


def _write_fresh(run_dir: Path, config: RunConfig, data: TrainData, notes: dict | None = None) -> None:
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    runs.write_json_atomic(run_dir / "config.json", config.to_dict())
    runs.write_json_atomic(
        run_dir / "run.json",
        {
            "data_dir": data.source,
            "tokenizer_hash": data.tokenizer.hash,
            "tokenizer_files_hash": runs.tokenizer_files_hash(data.tokenizer_dir),
            "manifest_hash": data.fingerprint,
            "lmforge_version": __version__,
            "torch_version": torch.__version__,
            **(notes or {}),
        },
    )
    tok_copy = run_dir / "tokenizer"
    if tok_copy.exists():
        shutil.rmtree(tok_copy)
    shutil.copytree(data.tokenizer_dir, tok_copy)
