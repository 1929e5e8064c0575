"""Default fine-tuning settings per task kind and method (full / LoRA / probe), chosen by a sweep.

Why a table: the right learning rate and length differ by method far more than by anything else --
a frozen backbone (probe) or rank-limited adapters (LoRA) move the output much less per step than
full fine-tuning, so they want a larger step and more passes over the data. One `TaskRecipe` per
(kind, method) holds what `lmforge finetune` uses when the command names nothing; flags and
`key=value` overrides always win. The values come from `lmforge sweep` runs over fine-tuning (the
sweep files and the script that runs them are in bench/, the table of points in the README); they
are starting points for small backbones on small sets, not universal constants.

Length is in epochs (passes over the training examples), not steps: the same setting then suits a
set of 2000 examples and one of 20000 -- with a floor of `min_steps`, because a small set still
needs a number of updates to move at all (in the sweeps the 370-example speaker set wanted about
4 epochs, 93 steps, where the 1600-example genre set wanted 2, 202 steps). An explicit --epochs is
taken as given. `epochs = None` leaves `train.max_steps` (from TASK_DEFAULTS) in charge, as for
translation, whose demo recipe sets its own steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

METHODS = ("full", "lora", "probe")


@dataclass(frozen=True)
class TaskRecipe:
    lr: float = 1e-3  # AdamW peak learning rate (optim.lr)
    epochs: float | None = None  # passes over the training examples; None: train.max_steps decides
    min_steps: int = 100  # optimizer steps at least, whatever `epochs` gives on a small set
    pooling: str = "last"  # classify, causal backbones: the hidden state the head reads (encoders: first)
    subtoken: str = (
        "first"  # ner, causal backbones: the sub-token that carries a word's tag (encoders: first)
    )


# Chosen by bench/sweep_tasks.py (README, "Default recipes"): on a small GPT backbone, the genre and
# speaker sets for classify, the names set for ner. LoRA's rank is the flag's (--lora-rank R): the
# classify sweep ran rank 8 only; for ner rank 16 beat 4 with these settings.
RECIPES: dict[tuple[str, str], TaskRecipe] = {
    ("classify", "full"): TaskRecipe(lr=3e-3, epochs=2, pooling="last"),
    ("classify", "lora"): TaskRecipe(lr=3e-3, epochs=3, pooling="mean"),
    ("classify", "probe"): TaskRecipe(lr=3e-2, epochs=3, pooling="last"),
    ("ner", "full"): TaskRecipe(lr=3e-3, epochs=4, subtoken="last"),
    ("ner", "lora"): TaskRecipe(lr=3e-3, epochs=4, subtoken="last"),
    ("ner", "probe"): TaskRecipe(lr=3e-2, epochs=3, subtoken="last"),
}


def method_of(lora_rank: int, freeze_backbone: bool) -> str:
    return "lora" if lora_rank else "probe" if freeze_backbone else "full"


def recipe(kind: str, method: str) -> TaskRecipe:
    """The defaults for a task kind ("classify", "ner", "translate") fine-tuned by `method`."""
    return RECIPES.get((kind, method), TaskRecipe())


def steps_for(epochs: float, n_examples: int, batch_size: int, min_steps: int = 1) -> int:
    """Optimizer steps for `epochs` passes over `n_examples` in batches of `batch_size` rows."""
    return max(1, min_steps, math.ceil(epochs * n_examples / batch_size))
