"""A checkpoint folder, ckpt/step_NNNNNN/: written atomically, verified before it is trusted.

    model.safetensors, optim.safetensors + optim.json (optim_state.py's by-name layout),
    rng.safetensors, meta.json, and manifest.json (sha256 of every other file, written last)

Why directories written this way: a checkpoint is first written to `ckpt/.tmp-step_NNNNNN`, every
file fsynced, the manifest last, then the folder is renamed into place and the parent fsynced. A crash
at any moment leaves either the complete new checkpoint or none -- never a half-written one that a
resume would trust. On load, each file is checked against the manifest; a damaged checkpoint is
skipped (with a message) in favour of the previous good one.

Why no pickle: a checkpoint may come from someone else. Weights and optimizer tensors are stored with
`safetensors` and everything else as JSON, so loading a checkpoint can never run code. `safetensors`
itself checks a file's header before touching the data (header length capped at 100 MB, offsets in
bounds, contiguous and matching dtype x shape -- tests/train/test_reliability_safety.py holds it to that),
so a hostile file ends in a clean UserError, not a huge allocation; nothing here calls `torch.load`.

Why a required-piece check on top of the checksums: a manifest only proves the files are the ones
that were written. `verify_checkpoint` also refuses a checkpoint that lacks a piece of state a resume
needs (a file, a meta.json key, an optimizer tensor), naming it, instead of resuming half-restored.

Why readers need no lock: writers hold a folder lock (locks.py), but checkpoints appear and
disappear only by rename, so a reader (`eval`, `generate`, `report`, `serve`) that loses a race with
pruning simply looks again (`find_latest_good`) and never waits for a training process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmforge import __version__, io
from lmforge.errors import UserError

logger = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^step_(\d{6,})$")
CKPT_FORMAT = 1
REQUIRED_FILES = ("model.safetensors", "optim.safetensors", "optim.json", "rng.safetensors", "meta.json")
REQUIRED_META = ("step", "tokens", "wall_seconds", "max_steps")  # what a resume cannot do without


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


_fsync_dir = io.fsync_dir


# --- optimizer state <-> (tensors, JSON) -------------------------------------------------------

OPTIM_LAYOUT = "by-name"  # optim_state.py: flat, keyed by parameter name, whatever the topology


def optimizer_files(optimizers: list[torch.optim.Optimizer], flat: dict[str, Any]) -> tuple[dict, dict]:
    """The flat optimizer state split into tensors (optim.safetensors) and the JSON-able rest (optim.json)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in flat.items() if isinstance(v, torch.Tensor)}
    rest = {
        "layout": OPTIM_LAYOUT,
        "types": [type(opt).__name__ for opt in optimizers],
        "values": {k: v for k, v in flat.items() if not isinstance(v, torch.Tensor)},
        "tensor_keys": sorted(tensors),  # so a load can tell a missing tensor from a fresh optimizer
    }
    return tensors, rest


def optimizer_state_from_files(
    model: torch.nn.Module,
    optimizers: list[torch.optim.Optimizer],
    tensors: dict[str, torch.Tensor],
    rest: dict,
) -> dict[str, Any]:
    """The flat state optim.safetensors + optim.json hold (an earlier checkpoint's layout converted),
    after checking it is for these optimizers and has every tensor it lists."""
    from lmforge import optim_state

    old = rest.get("layout") != OPTIM_LAYOUT  # before the by-name layout: one entry per optimizer
    kinds = [s.get("type") for s in rest.get("optimizers", [])] if old else rest.get("types", [])
    if kinds != [type(o).__name__ for o in optimizers]:
        raise UserError(
            f"checkpoint optimizer state is for {kinds}, not {[type(o).__name__ for o in optimizers]}; "
            "resume with the optimizer the run was started with (optim.name)"
        )
    missing = sorted(set(rest.get("tensor_keys", tensors)) - set(tensors))
    if missing:
        raise UserError(
            f"checkpoint is missing a required piece of state: optimizer tensor '{missing[0]}' "
            f"({len(missing)} missing from optim.safetensors)"
        )
    if old:
        return optim_state.from_position_layout(model, optimizers, tensors, rest)
    return {**rest["values"], **tensors}


# --- checkpoints ---------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    path: Path
    step: int
    meta: dict


def ckpt_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every finished checkpoint folder, newest first (temporary folders excluded)."""
    ckpt_root = Path(run_dir) / "ckpt"
    if not ckpt_root.is_dir():
        return []
    found = []
    for child in ckpt_root.iterdir():
        match = CKPT_RE.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found, reverse=True)


def remove_temporaries(run_dir: Path) -> list[str]:
    """Delete leftover `.tmp-*` folders from a save that was interrupted; returns their names."""
    ckpt_root = Path(run_dir) / "ckpt"
    removed = []
    if ckpt_root.is_dir():
        for child in ckpt_root.iterdir():
            if child.name.startswith(".tmp-"):
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child.name)
    return removed


def verify_checkpoint(path: Path) -> str | None:
    """None if the checkpoint is complete and matches its manifest, else why not (one line)."""
    manifest_path = path / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path.name}: manifest.json missing or unreadable"
    for name in REQUIRED_FILES:
        if name not in files:
            return f"{path.name}: required piece '{name}' is missing from the manifest"
    for name, digest in files.items():
        file = path / name
        if not file.is_file():
            return f"{path.name}: file '{name}' is missing"
        if sha256_file(file) != digest:
            return f"{path.name}: file '{name}' does not match its checksum (truncated or corrupted)"
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{path.name}: meta.json is not valid JSON"
    if not isinstance(meta, dict):
        return f"{path.name}: meta.json is not a JSON object"
    for key in REQUIRED_META:
        if key not in meta:
            return f"{path.name}: required piece '{key}' is missing from meta.json"
    match = CKPT_RE.match(path.name)
    if match and meta["step"] != int(match.group(1)):
        return f"{path.name}: meta.json says step {meta['step']}, the folder name another"
    return None


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizers: list[torch.optim.Optimizer],
    meta: dict,
    fault_hook=None,
    gathered: tuple[dict | None, dict] | None = None,
) -> Path:
    """Write ckpt/step_NNNNNN atomically. `fault_hook(point)` lets tests inject crashes at exact points.

    `gathered`: (the full model state dict, or None for the model's own; the flat optimizer state)
    already assembled by every rank (DDP, FSDP); the files are the same as a single process writes,
    so any process count can resume from them.
    """
    from safetensors.torch import save_model

    from lmforge import optim_state

    ckpt_root = Path(run_dir) / "ckpt"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / ckpt_name(step)
    tmp = ckpt_root / f".tmp-{ckpt_name(step)}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        model_state, flat = gathered or (None, optim_state.gather(unwrap(model), optimizers))
        if model_state is None:
            save_model(unwrap(model), str(tmp / "model.safetensors"))
        else:
            save_file({k: v.contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
        tensors, rest = optimizer_files(optimizers, flat)
        save_file(tensors, str(tmp / "optim.safetensors"))
        (tmp / "optim.json").write_text(json.dumps(rest), encoding="utf-8")
        save_file(rng_state(), str(tmp / "rng.safetensors"))
        full_meta = {
            **meta,
            "step": step,
            "format": CKPT_FORMAT,
            "lmforge_version": __version__,
            "torch_version": torch.__version__,
        }
        (tmp / "meta.json").write_text(json.dumps(full_meta, indent=2, sort_keys=True), encoding="utf-8")
        if fault_hook:
            fault_hook("ckpt_data_written")
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        for p in tmp.iterdir():
            _fsync_file(p)
        with open(tmp / "manifest.json", "w", encoding="utf-8") as handle:
            json.dump({"files": files}, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        if fault_hook:
            fault_hook("ckpt_before_rename")
        aside = ckpt_root / f".tmp-old-{final.name}"
        if final.exists():  # re-saving a step (e.g. over a damaged one): move the old one aside first
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(final, aside)
        os.replace(tmp, final)
        _fsync_dir(ckpt_root)
    except (OSError, SafetensorError) as exc:  # a full disk, a file-size limit, a read-only folder
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        io_error = re.search(r"I/O error: (.+?) \(os error \d+\)", reason)  # safetensors' wording
        reason = io_error.group(1) if io_error else reason
        raise UserError(
            f"could not write checkpoint {final.name} ({reason}); free disk space and "
            "resume with --resume (earlier checkpoints are intact)"
        ) from None
    except BaseException:  # a second Ctrl-C mid-save: leave no half-written folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return final


def prune_checkpoints(run_dir: Path, keep_last: int, best_step: int | None) -> None:
    """Keep the newest `keep_last` checkpoints and the best one; delete the rest."""
    for index, (step, path) in enumerate(list_checkpoints(run_dir)):
        if index < max(1, keep_last) or step == best_step:
            continue
        # Rename first (atomic), then delete: an interrupted delete leaves a `.tmp-` folder that the
        # next resume removes, never a half-deleted `step_N` that looks like a damaged checkpoint.
        doomed = path.with_name(f".tmp-prune-{path.name}")
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def find_latest_good(run_dir: Path, quiet: bool = False) -> Checkpoint | None:
    """Newest checkpoint that verifies; damaged ones are reported (unless `quiet`) and skipped.

    A checkpoint that vanishes while it is read was pruned by a training process that saved a newer
    one meanwhile: look again rather than report it damaged (readers never block the writer).
    """
    for _ in range(20):
        for step, path in list_checkpoints(run_dir):
            problem = verify_checkpoint(path)
            meta = None
            if problem is None:
                try:
                    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    problem = f"{path.name}: meta.json is unreadable"
            if not path.is_dir():
                break  # pruned under us: list again
            if problem:
                if not quiet:
                    logger.warning(f"warning: skipping damaged checkpoint {problem}")
                continue
            return Checkpoint(path=path, step=step, meta=meta)
        else:
            return None
    return None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under torch.compile / DDP wrappers, in whatever order they were put on."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None:
            inner = getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(unwrap(model), str(path / "model.safetensors"), strict=False)
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise UserError(f"checkpoint weights {path / 'model.safetensors'} are unreadable: {exc}") from None
    if missing or unexpected:
        raise UserError(
            f"checkpoint {path.name} does not fit the model: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}; was the config changed since the run started?"
        )


def load_training_state(path: Path, model: torch.nn.Module, optimizers: list[torch.optim.Optimizer]) -> None:
    """Optimizer and RNG state from a verified checkpoint folder (every rank calls it, under DDP and
    FSDP alike)."""
    from lmforge import optim_state

    model = unwrap(model)
    try:
        tensors = load_file(str(path / "optim.safetensors"))
        rest = json.loads((path / "optim.json").read_text(encoding="utf-8"))
        rng = load_file(str(path / "rng.safetensors"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"checkpoint {path.name} state is unreadable: {exc}") from None
    try:
        optim_state.restore(model, optimizers, optimizer_state_from_files(model, optimizers, tensors, rest))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(
            f"checkpoint {path.name} optimizer state (optim.json) is incomplete or malformed: {exc!r}"
        ) from None
    set_rng_state(rng)


def rng_state() -> dict[str, torch.Tensor]:
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"torch_cuda_{i}"] = s
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    if "torch_cpu" not in state:
        raise UserError("checkpoint is missing a required piece of state: 'rng.torch_cpu'")
    torch.set_rng_state(state["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [state[k] for k in sorted(state) if k.startswith("torch_cuda_")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
