"""The model registry: a plain dict from family name to (config class, model class).

Adding a family is one line here and one module beside it; nothing else dispatches on the name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from lmforge.errors import UserError
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.models.gru import GRULM, GRUConfig
from lmforge.models.heads import TaskConfig, TaskModel

MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "gpt": (GPTConfig, GPT),
    "gru": (GRUConfig, GRULM),
    "task": (TaskConfig, TaskModel),  # a fine-tuned backbone + head (finetune/tasks.py)
}


def model_config_from_dict(values: dict[str, Any]) -> GPTConfig | GRUConfig:
    """A model config from a ``[model]`` table / config.json section (``family`` picks the class).

    Unknown keys are a UserError naming them, not silently dropped.
    """
    family = values.get("family", "gpt")
    if family not in MODELS:
        raise UserError(f"model.family ({family!r}) must be one of {', '.join(MODELS)}")
    config_cls = MODELS[family][0]
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(
            f"unknown key(s) model.{', model.'.join(unknown)} for family {family!r}; "
            f"known: {', '.join(sorted(known))}"
        )
    return config_cls(**{**values, "family": family})


def build_model(cfg: GPTConfig | GRUConfig, init: bool = True) -> nn.Module:
    """The model for ``cfg`` (on CPU, float32), weights initialised unless ``init=False``."""
    model = MODELS[cfg.family][1](cfg)
    if init:
        model.init_weights()
    return model
