"""Command-line options several verbs share, declared once and mapped onto the typed configs.

Why here: a flag such as `--temperature` or `--max-steps` is a shortcut for a field of a config
dataclass (`SamplingConfig.temperature`, `train.max_steps`). Declaring each once -- its name, type,
default and help -- keeps every verb's flags, defaults and checks the same; the dataclass's
`__post_init__` is the one place a value is validated.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

SAMPLING_HELP = {
    "max_new_tokens": "new tokens at most (default %(default)s)",
    "temperature": "0 = greedy (argmax); default %(default)s",
    "top_k": "sample among the K most likely tokens (0 = all; default %(default)s)",
    "top_p": "sample from the nucleus of probability mass P (1 = all; default %(default)s)",
    "seed": "seed for reproducible sampling",
}

# Flags that are shortcuts for a dotted config key (`--max-steps 100` = `train.max_steps=100`):
# flag -> (key, argparse keywords). Their values go through the same checks as `key=value`.
CONFIG_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "model": ("model.family", {"choices": ["gpt", "gru"], "help": "model family (model.family)"}),
    "max_steps": ("train.max_steps", {"type": int, "help": "optimizer steps (train.max_steps)"}),
    "max_tokens": (
        "train.max_tokens",
        {"type": int, "help": "stop after this many training tokens (train.max_tokens)"},
    ),
    "time_budget": (
        "train.time_budget",
        {"type": float, "help": "wall seconds; sizes the schedule to fit (train.time_budget)"},
    ),
    "tensorboard": (
        "train.tensorboard",
        {"action": "store_true", "help": "also log to RUN_DIR/tb/ (train.tensorboard=true)"},
    ),
}


def add_config_flags(parser: argparse.ArgumentParser, names: list[str]) -> None:
    """Add the CONFIG_FLAGS shortcuts `names` to a verb's parser."""
    for name in names:
        parser.add_argument("--" + name.replace("_", "-"), **CONFIG_FLAGS[name][1])


def add_sampling_args(parser: argparse.ArgumentParser) -> None:
    """--max-new-tokens, --temperature, --top-k, --top-p, --seed, from SamplingConfig's fields."""
    from lmforge.config import SamplingConfig

    hints = typing.get_type_hints(SamplingConfig)
    for field in dataclasses.fields(SamplingConfig):
        kind = hints[field.name]
        kind = int if kind == (int | None) else kind
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=kind,
            default=field.default,
            help=SAMPLING_HELP[field.name],
        )


def sampling_config(args: argparse.Namespace):
    """The SamplingConfig the parsed sampling flags describe (validated: a UserError names the flag)."""
    from lmforge.config import SamplingConfig

    return SamplingConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SamplingConfig)})


def config_updates(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted config updates from the shortcut flags a verb has and the user gave (CONFIG_FLAGS)."""
    updates: dict[str, Any] = {}
    for flag, (key, _) in CONFIG_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None and value is not False:
            updates[key] = value
    return updates


def config_from_flags(cls: type, args: argparse.Namespace, renamed: dict[str, str] | None = None, **values):
    """The config dataclass `cls` built from a verb's parsed flags, in one place for every verb.

    Each field takes `values[field]` when given, else the flag of the same name (or `renamed[field]`,
    the argparse dest of a flag named otherwise, e.g. SplitConfig.mode <- --split), else its default.
    The dataclass's `__post_init__` validates, so a value is checked the same way however it came.
    """
    renamed = renamed or {}
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        dest = renamed.get(field.name, field.name)
        if field.name in values:
            kwargs[field.name] = values[field.name]
        elif hasattr(args, dest):
            kwargs[field.name] = getattr(args, dest)
    return cls(**kwargs)


def checkpoint_step(text: str) -> int | str:
    """`--step`'s value: a checkpoint's step number, or "best"."""
    if text == "best":
        return text
    try:
        step = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is neither a step number nor 'best'") from None
    if step < 0:
        raise argparse.ArgumentTypeError(f"a step number is >= 0, got {step}")
    return step


def add_step_option(parser: argparse.ArgumentParser, verb: str) -> None:
    """`--step STEP|best`: which checkpoint of the run to load, instead of the newest good one."""
    parser.add_argument(
        "--step",
        type=checkpoint_step,
        metavar="STEP|best",
        help=f"{verb} this checkpoint instead of the newest: a step number, or 'best' (the lowest "
        "validation loss measured when a checkpoint was saved; never pruned)",
    )
