"""The model registry: a plain dict from family name to (config class, model class).

Adding a family is one line here and one module beside it; nothing else dispatches on the name.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lmforge.models.families import LM_FAMILIES, config_from_table
from lmforge.models.gpt import GPTConfig
from lmforge.models.gru import GRUConfig
from lmforge.models.heads import TaskConfig, TaskModel

MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    **LM_FAMILIES,
    "task": (TaskConfig, TaskModel),  # a fine-tuned backbone + head (finetune/tasks.py)
}


def model_config_from_dict(values: dict[str, Any]) -> GPTConfig | GRUConfig:
    """A model config from a ``[model]`` table / config.json section (``family`` picks the class).

    Unknown keys are a UserError naming them, not silently dropped.
    """
    return config_from_table(values, MODELS)


def build_model(cfg: GPTConfig | GRUConfig, init: bool = True) -> nn.Module:
    """The model for ``cfg`` (on CPU, float32), weights initialised unless ``init=False``."""
    model = MODELS[cfg.family][1](cfg)
    if init:
        model.init_weights()
    return model
