"""The language-model families (gpt, gru) and the one way a model config is built from a table.

Below `registry.py` on purpose: a task model (models/heads.py) builds its backbone from these, and the
registry lists the task model too, so heads.py importing the registry would close a cycle.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from lmforge.errors import UserError
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.models.gru import GRULM, GRUConfig

LM_FAMILIES: dict[str, tuple[type, type[nn.Module]]] = {
    "gpt": (GPTConfig, GPT),
    "gru": (GRUConfig, GRULM),
}


def config_from_table(values: dict[str, Any], families: dict[str, tuple[type, type[nn.Module]]]) -> Any:
    """A model config from a ``[model]`` table / config.json section (``family`` picks the class).

    Unknown keys are a UserError naming them, not silently dropped.
    """
    family = values.get("family", "gpt")
    if family not in families:
        raise UserError(f"model.family ({family!r}) must be one of {', '.join(families)}")
    config_cls = families[family][0]
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(
            f"unknown key(s) model.{', model.'.join(unknown)} for family {family!r}; "
            f"known: {', '.join(sorted(known))}"
        )
    return config_cls(**{**values, "family": family})
