"""Default fine-tuning settings per task kind and method (full / LoRA / probe), chosen by a sweep.

Why a table: the right learning rate and length differ by method far more than by anything else --
a frozen backbone (probe) or rank-limited adapters (LoRA) move the output much less per step than
full fine-tuning, so they want a larger step and more passes over the data. One `TaskRecipe` per
(kind, method) holds what `lmforge finetune` uses when the command names nothing; flags and
`key=value` overrides always win. The values come from `lmforge sweep` runs over fine-tuning (the
sweep files and the script that runs them are in bench/, the table of points in the README); they
are starting points for small backbones on small sets, not universal constants.

Length is in epochs (passes over the training examples), not steps: the same setting then suits a
set of 400 examples and one of 4000. `epochs = None` leaves `train.max_steps` (from TASK_DEFAULTS)
in charge, as for translation, whose demo recipe sets its own steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

METHODS = ("full", "lora", "probe")


@dataclass(frozen=True)
class TaskRecipe:
    lr: float = 1e-3  # AdamW peak learning rate (optim.lr)
    epochs: float | None = None  # passes over the training examples; None: train.max_steps decides
    pooling: str = "last"  # classify, causal backbones: the hidden state the head reads (encoders: first)
    subtoken: str = (
        "first"  # ner, causal backbones: the sub-token that carries a word's tag (encoders: first)
    )


RECIPES: dict[tuple[str, str], TaskRecipe] = {
    ("classify", "full"): TaskRecipe(lr=1e-3, epochs=None),
    ("classify", "lora"): TaskRecipe(lr=1e-3, epochs=None),
    ("classify", "probe"): TaskRecipe(lr=1e-3, epochs=None),
    ("ner", "full"): TaskRecipe(lr=1e-3, epochs=None),
    ("ner", "lora"): TaskRecipe(lr=1e-3, epochs=None),
    ("ner", "probe"): TaskRecipe(lr=1e-3, epochs=None),
}


def method_of(lora_rank: int, freeze_backbone: bool) -> str:
    return "lora" if lora_rank else "probe" if freeze_backbone else "full"


def recipe(kind: str, method: str) -> TaskRecipe:
    """The defaults for a task kind ("classify", "ner", "translate") fine-tuned by `method`."""
    return RECIPES.get((kind, method), TaskRecipe())


def steps_for(epochs: float, n_examples: int, batch_size: int) -> int:
    """Optimizer steps for `epochs` passes over `n_examples` in batches of `batch_size` rows."""
    return max(1, math.ceil(epochs * n_examples / batch_size))
