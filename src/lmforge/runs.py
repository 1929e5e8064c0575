"""The run folder: its config, its metrics log, and `load_run()`, the one way to read a run back.

    RUN_DIR/
      config.json          the resolved RunConfig
      run.json             data folder, tokenizer hash, data manifest hash, lmforge/torch versions
      tokenizer/           a copy of the tokenizer, so a run is usable without its data folder
      metrics.jsonl        one JSON object per logged step / evaluation
      ckpt/step_NNNNNN/    model.safetensors, optim.safetensors + optim.json, rng.safetensors,
                           meta.json, and manifest.json (sha256 of every other file, written last)

The checkpoints themselves (how they are written, verified and found) are checkpoints.py's job;
this module re-exports its names, so `runs.find_latest_good` and friends keep working.

Why a hash over every tokenizer file: the tokenizer's own hash covers its vocabulary and merges, but
not meta.json (`token_bytes`, `eot_id`), and bits-per-byte is computed from `token_bytes`. run.json
records `tokenizer_files_hash`, and `load_run` refuses a run whose tokenizer/ no longer matches it.

Every stage after training (eval, generate, export, ...) reads a run through `load_run`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmforge import io
from lmforge.checkpoints import (  # noqa: F401 -- re-exported: the run folder's checkpoints
    CKPT_FORMAT,
    CKPT_RE,
    REQUIRED_FILES,
    REQUIRED_META,
    Checkpoint,
    ckpt_name,
    find_latest_good,
    list_checkpoints,
    load_model_weights,
    load_training_state,
    optimizer_files,
    optimizer_state_from_files,
    prune_checkpoints,
    remove_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
    sha256_file,
    unwrap,
    verify_checkpoint,
)
from lmforge.config import RunConfig, run_config_from_dict
from lmforge.errors import UserError


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a temporary sibling, fsync, and rename over `path` (io.write_json)."""
    io.write_json(path, obj)


def tokenizer_files_hash(tokenizer_dir: str | Path) -> str:
    """sha256 over every file of a tokenizer folder (names and contents, meta.json included)."""
    tokenizer_dir = Path(tokenizer_dir)
    digest = hashlib.sha256()
    for path in sorted(p for p in tokenizer_dir.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(tokenizer_dir).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


# --- metrics log -----------------------------------------------------------------------------


def append_metrics(run_dir: Path, record: dict) -> None:
    """One line in metrics.jsonl; a failed write (disk full) is a UserError and leaves no half line."""
    io.append_line(Path(run_dir) / "metrics.jsonl", json.dumps(record))


def read_metrics(run_dir: Path, quiet: bool = False) -> list[dict]:
    """The records of metrics.jsonl; lines cut short by a crash or damaged are skipped with a warning."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return list(io.iter_jsonl(path, quiet=quiet))


def truncate_metrics(run_dir: Path, after_step: int) -> None:
    """Drop log lines past `after_step` (written after the checkpoint a resume starts from)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= after_step]
    io.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


# --- loading a run ---------------------------------------------------------------------------


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    model: torch.nn.Module
    tokenizer: Any
    meta: dict  # the checkpoint's meta.json
    checkpoint: Path
    info: dict  # run.json


def read_run_config(run_dir: Path) -> RunConfig:
    """config.json of a run folder, checked: a missing, damaged or hand-broken file names itself."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(
            f"run folder '{run_dir}' does not exist; train one with `lmforge train --out {run_dir}`"
        )
    path = run_dir / "config.json"
    if not path.is_file():
        raise UserError(
            f"'{run_dir}' is not an lmforge run (no config.json); pass a folder made by `lmforge train`"
        )
    data = io.read_json_object(path, "restore it or train into a new folder")
    try:
        return run_config_from_dict(data)
    except UserError as exc:
        raise UserError(f"{path} is damaged: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        raise UserError(f"{path} is damaged ({type(exc).__name__}: {exc}); restore it") from None


def read_run_info(run_dir: Path) -> dict:
    """run.json of a run folder ({} for a folder without one), checked like config.json."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        return {}
    return io.read_json_object(path, "restore it or train into a new folder")


def check_run_tokenizer(run_dir: Path, info: dict, tokenizer, ckpt_meta: dict | None = None) -> None:
    """Refuse a run whose tokenizer/ is not the one it was trained with (by name of what differs)."""
    tok_dir = Path(run_dir) / "tokenizer"
    expected = info.get("tokenizer_files_hash")
    if expected and tokenizer_files_hash(tok_dir) != expected:
        raise UserError(
            f"the tokenizer in '{tok_dir}' is not the one this run was trained with (its files, "
            "meta.json included, do not match tokenizer_files_hash in run.json); copy back the data "
            "folder's tokenizer/ the run was trained on"
        )
    for where, recorded in (
        ("run.json", info.get("tokenizer_hash")),
        ("the checkpoint", (ckpt_meta or {}).get("tokenizer_hash")),
    ):
        if recorded and recorded != tokenizer.hash:
            raise UserError(
                f"the tokenizer in '{tok_dir}' does not match the one {where} was made with "
                "(tokenizer_hash); copy back the data folder's tokenizer/ the run was trained on"
            )


def best_step(run_dir: Path, quiet: bool = False) -> int:
    """The step of the run's checkpoint with the lowest validation loss measured when it was saved, as
    the newest good checkpoint records it (training never prunes that one)."""
    newest = find_latest_good(run_dir, quiet=quiet)
    if newest is None:
        raise UserError(f"run '{run_dir}' has no usable checkpoint yet; train it (or resume) first")
    step = newest.meta.get("best_step")
    if step is None:
        raise UserError(
            f"no checkpoint of run '{run_dir}' was saved with a validation loss (train.eval_every and "
            "train.ckpt_every never met); leave out --step best to use the newest"
        )
    return int(step)


def load_run(
    run_dir: str | Path, step: int | str | None = None, device: str = "cpu", quiet: bool = False
) -> LoadedRun:
    """The run's model (eval mode) from its newest good checkpoint (or `step`: a step number, or
    "best", the lowest validation loss of its checkpoints), with its tokenizer."""
    from lmforge.data.tokenizer import load_tokenizer
    from lmforge.models.registry import MODELS

    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    if config.model.family == "task":  # a model with a task head labels text rather than generating it
        task = config.model.task
        raise UserError(
            f"'{run_dir}' is a {task} run, fine-tuned to label text rather than generate it; use "
            f"`lmforge predict {run_dir}` or `lmforge eval {run_dir} --task {task} --data FILE`"
        )
    info = read_run_info(run_dir)
    if step == "best":
        step = best_step(run_dir, quiet)
    for _ in range(20):  # a checkpoint pruned between finding and reading it: find the newer one
        if step is None:
            ckpt = find_latest_good(run_dir, quiet=quiet)
            if ckpt is None:
                raise UserError(f"run '{run_dir}' has no usable checkpoint yet; train it (or resume) first")
        else:
            path = run_dir / "ckpt" / ckpt_name(step)
            if not path.is_dir():
                kept = ", ".join(str(s) for s, _ in list_checkpoints(run_dir)) or "none"
                raise UserError(f"run '{run_dir}' has no checkpoint of step {step} (kept: {kept})")
            problem = verify_checkpoint(path)
            if problem:
                raise UserError(f"checkpoint {problem}")
            ckpt = Checkpoint(path, step, io.read_json_object(path / "meta.json"))
        tokenizer = load_tokenizer(run_dir / "tokenizer")
        check_run_tokenizer(run_dir, info, tokenizer, ckpt.meta)
        model = MODELS[config.model.family][1](config.model)
        try:
            load_model_weights(model, ckpt.path)
        except UserError:
            if step is None and not ckpt.path.is_dir():
                continue
            raise
        model.to(device).eval()
        return LoadedRun(run_dir, config, model, tokenizer, ckpt.meta, ckpt.path, info)
    raise UserError(f"run '{run_dir}' is saving checkpoints faster than they can be read; try again")
