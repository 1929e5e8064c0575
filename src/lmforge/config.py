"""Typed run configuration: TOML presets plus dotted `key=value` overrides.

A run's configuration is a tree of small dataclasses, one per stage (`data`, `model`, `optim`,
`schedule`, `train`), and each component receives only its own section. Presets are TOML files whose
tables mirror the tree; overrides on the command line use dotted names (`optim.lr=3e-4`,
`model.n_layer=2`). Both paths go through one function, `apply_updates`, which rejects unknown keys
(with a suggestion) and values of the wrong type, naming the key -- a typo must never be silently
ignored, because a silently ignored typo is a wasted training run.

The model section is family-specific (`model.family = "gpt" | "gru"`); its dataclass comes from
`lmforge.models.registry`. The vocabulary size is not a setting: it is read from the tokenizer.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.config_values import MAX_MICRO_STEPS, RANGES, check_value, coerce, parse_override
from lmforge.errors import UserError

__all__ = ["MAX_MICRO_STEPS", "RANGES", "check_value", "parse_override"]


@dataclass
class DataConfig:
    path: str = ""  # DATA_DIR written by `lmforge data prepare`
    weights: dict[str, float] = field(default_factory=dict)  # mixture weight per source; {} = as collected

    def __post_init__(self) -> None:
        for name, weight in self.weights.items():
            if not weight >= 0:
                raise UserError(f"data.weights.{name} ({weight}) must be >= 0")


@dataclass
class OptimConfig:
    name: str = "adamw"  # sgd | adam | adamw | muon (Muon on hidden matrices, AdamW on the rest)
    lr: float = 1e-3  # peak learning rate (AdamW/Adam/SGD; embeddings and head under Muon)
    weight_decay: float = 0.1  # decoupled decay, applied to matrices only (not norms, biases, embeddings)
    beta1: float = 0.9  # Adam first-moment decay
    beta2: float = 0.95  # Adam second-moment decay
    eps: float = 1e-8  # Adam denominator epsilon
    momentum: float = 0.9  # SGD momentum (0 = plain SGD)
    nesterov: bool = False  # SGD Nesterov momentum
    muon_lr: float = 0.02  # Muon learning rate for hidden matrices
    muon_momentum: float = 0.95  # Muon momentum
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping

    def __post_init__(self) -> None:
        if self.name not in ("sgd", "adam", "adamw", "muon"):
            raise UserError(f"optim.name '{self.name}' is not one of sgd, adam, adamw, muon")
        if not (0 < self.lr < 10):
            raise UserError(f"optim.lr ({self.lr}) must be in (0, 10)")
        if self.weight_decay < 0:
            raise UserError(f"optim.weight_decay ({self.weight_decay}) must be >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise UserError("optim.beta1 and optim.beta2 must be in [0, 1)")
        if self.grad_clip < 0:
            raise UserError(f"optim.grad_clip ({self.grad_clip}) must be >= 0")


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # constant | cosine | wsd (warm-up, stable, linear warm-down)
    warmup_steps: int = 100  # optimizer steps of linear warm-up from 0
    warmdown_frac: float = 0.2  # wsd: fraction of all steps spent decaying linearly to min_lr_frac
    min_lr_frac: float = 0.1  # final learning rate as a fraction of the peak (cosine and wsd)

    def __post_init__(self) -> None:
        if self.name not in ("constant", "cosine", "wsd"):
            raise UserError(f"schedule.name '{self.name}' is not one of constant, cosine, wsd")
        if self.warmup_steps < 0:
            raise UserError(f"schedule.warmup_steps ({self.warmup_steps}) must be >= 0")
        if not 0 <= self.warmdown_frac <= 1:
            raise UserError(f"schedule.warmdown_frac ({self.warmdown_frac}) must be in [0, 1]")
        if not 0 <= self.min_lr_frac <= 1:
            raise UserError(f"schedule.min_lr_frac ({self.min_lr_frac}) must be in [0, 1]")


@dataclass
class TrainConfig:
    batch_size: int = 16  # sequences per micro-step
    batch_tokens: int = 0  # tokens per optimizer step (accumulates micro-steps); 0 = one micro-step
    max_steps: int = 1000  # optimizer steps (the schedule's horizon)
    max_tokens: int = 0  # stop after this many training tokens; 0 = no limit
    time_budget: float = 0.0  # wall seconds; > 0 sizes max_steps from measured step time
    step_seconds: float = 0.0  # a step's duration measured before the run (--auto sets it from its
    #   measuring); 0 = a time-budget run times a few steps itself first
    seed: int = 1337  # seeds init, batches (a pure function of seed, step, rank) and sampling
    eval_every: int = 250  # optimizer steps between validation passes (and at the last step)
    eval_tokens: int = 65536  # validation tokens per in-training evaluation (a fixed slice)
    sample_every: int = 0  # steps between printed samples; 0 = only at the end
    sample_tokens: int = 64  # new tokens per sample
    ckpt_every: int = 500  # optimizer steps between checkpoints (and at the last step)
    keep_last: int = 2  # checkpoints kept besides the best one
    log_every: int = 10  # steps between lines in metrics.jsonl
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (bfloat16 where a probe finds it faster: train/precision.py) | float32 |
    #   bfloat16 (autocast; weights, optimizer and loss stay float32)
    compile: bool = False  # torch.compile the model (falls back to eager if compilation fails)
    threads: int = 0  # CPU threads for torch; 0 = physical cores
    fast_paths: str = "auto"  # auto (probed per CPU, cached: models/fastpaths.py) | off (plain ATen ops)
    allocator: str = "reuse"  # reuse (glibc keeps freed memory for the next step: hardware.py) | system
    parallel: str = "ddp"  # with several processes: ddp (replicated model) | fsdp (FSDP2, sharded)
    tensorboard: bool = False  # also log metrics to RUN_DIR/tb/ for TensorBoard (the tune extra)

    def __post_init__(self) -> None:
        positive = ("batch_size", "max_steps", "eval_every", "ckpt_every", "log_every", "eval_tokens")
        for name in positive:
            if getattr(self, name) <= 0:
                raise UserError(f"train.{name} ({getattr(self, name)}) must be > 0")
        for name in ("batch_tokens", "max_tokens", "sample_every", "threads", "keep_last"):
            if getattr(self, name) < 0:
                raise UserError(f"train.{name} ({getattr(self, name)}) must be >= 0")
        if self.time_budget < 0:
            raise UserError(f"train.time_budget ({self.time_budget}) must be >= 0 seconds")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"train.device '{self.device}' is not one of auto, cpu, cuda")
        if self.parallel not in ("ddp", "fsdp"):
            raise UserError(f"train.parallel '{self.parallel}' is not one of ddp, fsdp")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise UserError(f"train.dtype '{self.dtype}' is not one of auto, float32, bfloat16")
        if self.fast_paths not in ("auto", "off"):
            raise UserError(f"train.fast_paths '{self.fast_paths}' is not one of auto, off")
        if self.allocator not in ("reuse", "system"):
            raise UserError(f"train.allocator '{self.allocator}' is not one of reuse, system")
        if self.max_steps > 10_000_000:
            raise UserError(f"train.max_steps ({self.max_steps}) is absurdly large; pass a smaller value")


@dataclass
class RunConfig:
    model: Any  # a family's config dataclass (GPTConfig, GRUConfig) from lmforge.models.registry
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        tokens_per_micro = self.train.batch_size * self.model.seq_len
        micro_steps = math.ceil(self.train.batch_tokens / tokens_per_micro)
        if micro_steps > MAX_MICRO_STEPS:
            raise UserError(
                f"train.batch_tokens ({self.train.batch_tokens}) needs {micro_steps:,} micro-steps of "
                f"train.batch_size x model.seq_len = {tokens_per_micro} tokens per optimizer step; lower "
                f"train.batch_tokens to at most {MAX_MICRO_STEPS * tokens_per_micro}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SamplingConfig:
    """How a trained model picks its next tokens (`generate`, `chat`): one set of defaults for all."""

    max_new_tokens: int = 200  # new tokens at most
    temperature: float = 0.8  # divides the logits; 0 = greedy (argmax)
    top_k: int = 0  # sample among the K most likely tokens; 0 = all
    top_p: float = 1.0  # sample from the smallest set of tokens holding probability P; 1 = all
    seed: int | None = None  # seed for repeatable sampling; None = a fresh draw each time

    def __post_init__(self) -> None:
        if not 0 <= self.max_new_tokens <= 1 << 20:
            raise UserError(f"--max-new-tokens ({self.max_new_tokens}) must be in [0, {1 << 20}]")
        if not (math.isfinite(self.temperature) and 0 <= self.temperature <= 100):
            raise UserError(f"--temperature ({self.temperature}) must be in [0, 100] (0 = greedy)")
        if self.top_k < 0:
            raise UserError(f"--top-k ({self.top_k}) must be >= 0 (0 = all tokens)")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p ({self.top_p}) must be in (0, 1] (1 = all tokens)")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise UserError(f"--seed ({self.seed}) must be in [0, 2**63)")

    def engine_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `generate_tokens` / `ChatSession` (None = filter off)."""
        return {
            "temperature": self.temperature,
            "top_k": self.top_k or None,
            "top_p": self.top_p if self.top_p < 1 else None,
            "seed": self.seed,
        }


SECTIONS = {"data": DataConfig, "optim": OptimConfig, "schedule": ScheduleConfig, "train": TrainConfig}


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown_key(key: str, known: list[str]) -> UserError:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(known))}"
    return UserError(f"unknown config key '{key}'{hint}")


def apply_updates(tree: dict[str, dict[str, Any]], updates: dict[str, Any]) -> None:
    """Merge dotted `updates` into a {section: {key: value}} tree, validating names and types."""
    from lmforge.models.registry import MODELS

    for dotted, value in updates.items():
        section, _, key = dotted.partition(".")
        if section == "data" and key.startswith("weights."):
            weight = coerce(dotted, value, float)
            check_value(dotted, weight, "data.weights")
            tree.setdefault("data", {}).setdefault("weights", {})[key.split(".", 1)[1]] = weight
            continue
        if section == "model":
            default = updates.get("model.family", "gpt")  # keys may come in any order (sorted JSON)
            family = value if key == "family" else tree.get("model", {}).get("family", default)
            if family not in MODELS:
                raise UserError(f"model.family '{family}' is not one of {', '.join(MODELS)}")
            types_ = _field_types(MODELS[family][0])
        elif section in SECTIONS:
            types_ = _field_types(SECTIONS[section])
        else:
            raise _unknown_key(dotted, [*SECTIONS, "model"])
        if key not in types_:
            raise _unknown_key(dotted, [f"{section}.{k}" for k in types_])
        value = coerce(dotted, value, types_[key])
        if dotted == "data.weights":
            for name, weight in value.items():
                check_value(f"data.weights.{name}", weight, "data.weights")
        check_value(dotted, value)
        tree.setdefault(section, {})[key] = value


# Settings whose value is a whole table, kept as one key: mixture weights, and a fine-tuned model's
# backbone description (models/heads.py), which is written by lmforge, not typed by hand.
TABLE_KEYS = ("data.weights", "model.backbone")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1}; `data.weights` stays one table."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in TABLE_KEYS:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"config file '{path}' does not exist; pass --config with a preset name such as gpt-small"
        )
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"config file '{path}' is not valid TOML: {exc}") from None


def build_run_config(tree: dict[str, Any], vocab_size: int | None = None) -> RunConfig:
    """Turn a validated {section: {...}} tree into a RunConfig; `vocab_size` comes from the tokenizer."""
    from lmforge.models.registry import MODELS

    model_tree = dict(tree.get("model", {}))
    family = model_tree.setdefault("family", "gpt")
    if vocab_size is not None:
        given = model_tree.get("vocab_size")
        if given and given != vocab_size:
            raise UserError(
                f"model.vocab_size ({given}) does not match the tokenizer's ({vocab_size}); remove it "
                "from the config, it is read from the tokenizer"
            )
        model_tree["vocab_size"] = vocab_size
    model = MODELS[family][0](**model_tree)
    sections = {name: cls(**tree.get(name, {})) for name, cls in SECTIONS.items()}
    return RunConfig(model=model, **sections)


def load_config(
    preset: str | Path | None,
    overrides: list[str] | dict[str, Any] | None,
    vocab_size: int | None,
    *,
    saved: dict[str, Any] | None = None,
    flags: dict[str, Any] | None = None,
    fixed: dict[str, Any] | None = None,
) -> RunConfig:
    """The one way a RunConfig is built from what a user gives, each layer over the one before:
    a run's saved config.json (`saved`, on resume), the preset file, command-line flags mapped to
    dotted keys (`flags`, see cli/options.py), `key=value` overrides, and what the verb itself sets
    (`fixed`, e.g. data.path from --data). Every layer goes through `apply_updates`, so names, types
    and ranges are checked the same way whichever way a value came in.
    """
    tree: dict[str, Any] = {}
    if saved:
        apply_updates(tree, flatten(saved))
    if preset:
        apply_updates(tree, flatten(read_toml(preset)))
    if flags:
        apply_updates(tree, flags)
    if isinstance(overrides, dict):
        apply_updates(tree, overrides)
    elif overrides:
        apply_updates(tree, dict(parse_override(o) for o in overrides))
    if fixed:
        apply_updates(tree, fixed)
    return build_run_config(tree, vocab_size)


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild the whole RunConfig a run saved with `to_dict` (its config.json), checked like input."""
    tree: dict[str, Any] = {}
    apply_updates(tree, flatten(data))
    return build_run_config(tree)


def dumps(config: RunConfig) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def to_toml(tree: dict[str, dict[str, Any]], header: str = "") -> str:
    """A {section: {key: value | {name: value}}} tree as a preset TOML file (round-trips with tomllib)."""
    lines = [f"# {line}" for line in header.splitlines()]
    for section, values in tree.items():
        if not any(v != {} for v in values.values()):
            continue  # e.g. [data] with no weights
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
        for key, table in values.items():
            if isinstance(table, dict) and table:
                lines += ["", f"[{section}.{key}]"] + [
                    f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items()
                ]
    text = "\n".join(lines).lstrip("\n") + "\n"
    tomllib.loads(text)  # never write a file that does not read back
    return text
