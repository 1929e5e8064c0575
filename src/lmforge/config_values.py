"""What a config value may be: a dotted override parsed, a value checked against its field's type, and
the allowed range of every numeric setting (used by config.py and by every verb's flags)."""

from __future__ import annotations

import math
import tomllib
import types
import typing
from typing import Any

from lmforge.errors import UserError


def parse_override(text: str) -> tuple[str, Any]:
    """`optim.lr=3e-4` -> ("optim.lr", 0.0003). Values are TOML literals; bare words are strings."""
    if "=" not in text:
        raise UserError(f"override '{text}' is not of the form key=value (e.g. optim.lr=3e-4)")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check `value` against a dataclass field's annotation; ints are accepted for floats."""
    if isinstance(annotation, str):
        annotation = {"int": int, "float": float, "str": str, "bool": bool}.get(annotation, Any)
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool):
        if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
            return value
        raise UserError(f"{key} must be {annotation.__name__}, got {type(value).__name__} {value!r}")
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{key} must be a table of name = value, got {value!r}")
        _, value_type = typing.get_args(annotation)
        return {k: coerce(f"{key}.{k}", v, value_type) for k, v in value.items()}
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(annotation):
            try:
                return coerce(key, value, option)
            except UserError:
                continue
        raise UserError(f"{key} has the wrong type: {value!r}")
    return value


# The allowed range of every numeric setting, checked by `check_value` wherever a value enters a
# config (preset, override, flag, a saved config.json): (low, high, low_is_open). NaN and infinity
# are refused for every key; so are values no 2-core machine could use (they would allocate for a
# minute before failing, or never finish). tests/test_config_values.py requires an entry here for
# every int/float field of every section and model family.
_BIG = 10_000_000  # steps: far beyond any run this toolkit is for
RANGES: dict[str, tuple[float, float, bool]] = {
    "data.weights": (0, 1e6, False),
    "optim.lr": (0, 10, True),
    "optim.weight_decay": (0, 10, False),
    "optim.beta1": (0, 0.999999, False),
    "optim.beta2": (0, 0.999999, False),
    "optim.eps": (0, 1, True),
    "optim.momentum": (0, 0.999999, False),
    "optim.muon_lr": (0, 10, True),
    "optim.muon_momentum": (0, 0.999999, False),
    "optim.grad_clip": (0, 1e6, False),
    "schedule.warmup_steps": (0, _BIG, False),
    "schedule.warmdown_frac": (0, 1, False),
    "schedule.min_lr_frac": (0, 1, False),
    "train.batch_size": (1, 1 << 20, False),
    "train.batch_tokens": (0, 1 << 40, False),
    "train.max_steps": (1, _BIG, False),
    "train.max_tokens": (0, 1 << 50, False),
    "train.time_budget": (0, 1e7, False),  # seconds (about four months)
    "train.step_seconds": (0, 3600, False),  # a measured step (--auto); 0 = time it
    "train.seed": (0, 2**32 - 1, False),
    "train.eval_every": (1, _BIG, False),
    "train.eval_tokens": (1, 1 << 40, False),
    "train.sample_every": (0, _BIG, False),
    "train.sample_tokens": (0, 1 << 20, False),
    "train.ckpt_every": (1, _BIG, False),
    "train.keep_last": (0, 1 << 20, False),
    "train.log_every": (1, _BIG, False),
    "train.threads": (0, 4096, False),
    "model.vocab_size": (0, 1 << 24, False),
    "model.seq_len": (1, 1 << 20, False),
    "model.n_layer": (1, 1024, False),
    "model.n_head": (1, 1024, False),
    "model.n_kv_head": (0, 1024, False),
    "model.n_embd": (1, 1 << 16, False),
    "model.mlp_hidden": (0, 1 << 20, False),
    "model.hidden": (1, 1 << 16, False),
    "model.rope_base": (0, 1e12, True),
    "model.norm_eps": (0, 1, False),
    "model.logit_softcap": (0, 1e6, False),
    "model.dropout": (0, 0.999999, False),
    "model.n_labels": (0, 1 << 20, False),
    "model.pad_id": (0, 1 << 24, False),
    "model.lora_rank": (0, 1 << 16, False),
    "model.lora_alpha": (0, 1e6, False),
}
# batch_tokens beyond this many micro-steps per optimizer step is a typo, not a plan: one step would
# take longer than any run.
MAX_MICRO_STEPS = 65536


def check_value(key: str, value: Any, range_key: str | None = None) -> None:
    """Refuse a NaN, an infinity or an out-of-range number for `key`, naming it and the range
    (`range_key`: the RANGES entry when it is not `key` itself, e.g. data.weights for each source)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{key} ({value}) must be a finite number")
    low, high, low_open = RANGES.get(range_key or key, (-math.inf, math.inf, False))
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise UserError(f"{key} ({value}) must be in {bracket}{low:g}, {high:g}]")
