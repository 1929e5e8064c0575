"""A sweep file: base config, search space, method and per-trial budget -- parsed and checked.

    # sweep.toml
    data = "data/shk"            # DATA_DIR (relative to the current folder)
    preset = "gpt-tiny"          # optional base preset (a file or a preset name)
    method = "tpe"               # grid | random | tpe (Optuna's Tree-structured Parzen Estimator)
    n_trials = 12                # grid: at most the grid's size
    metric = "val/bpb"           # val/bpb | val/loss (minimised); with several sources also
                                 # val/bpb@SOURCE (that source's validation text alone) | val/bpb@mean
    seed = 0                     # sampler seed
    prune = true                 # stop trials whose intermediate validation is below the median
    prune_startup_trials = 2     # trials that always finish before pruning starts
    enqueue = [{ "optim.lr" = 3e-3 }]   # optional: trials to run first, e.g. a known-good config

    [budget]                     # exactly one: steps | tokens | seconds per trial
    steps = 200

    [base]                       # dotted overrides for every trial, as on the command line
    "train.eval_every" = 50

    [space]                      # dotted config keys -> choices, or an int / float range
    "optim.lr" = { low = 1e-4, high = 3e-2, log = true }
    "model.n_embd" = { choices = [32, 64] }
    "model.n_layer" = { low = 1, high = 4 }            # ints: every integer (or `step`)
    "data.weights.poems" = { low = 0.0, high = 1.0, num = 3 }   # `num`: grid points of a float range

A sweep over fine-tuning (`verb = "finetune"`) runs `lmforge finetune` per trial instead; `data` is the
task data (a .jsonl / .csv file, or a folder with train.jsonl and val.jsonl as `lmforge data tasks`
writes), and the objective is the task's validation metric (maximised; the baseline is recorded):

    verb = "finetune"
    data = "tasks/genre"
    metric = "val/macro_f1"      # classify: val/macro_f1 (default) | val/accuracy; ner: val/f1 (default)
                                 # | val/precision | val/recall | val/token_accuracy; translate: val/chrf
                                 # (default) | val/bleu

    [finetune]                   # what `lmforge finetune BACKBONE --task TASK` gets on every trial
    backbone = "runs/base"
    task = "classify"
    lora_rank = 8                # optional: any of FINETUNE_OPTIONS, fixed for every trial

    [space]                      # finetune.OPTION keys, and optim / schedule / train keys
    "optim.lr" = { choices = [1e-3, 3e-3] }
    "finetune.epochs" = { choices = [2, 6] }
    "finetune.pooling" = { choices = ["last", "mean"] }

[budget] is optional there: without it each trial's length is the recipe's (or `finetune.epochs`).

Mixture weights: once any `data.weights.*` is set, a source without a weight gets no batches (see
train/loop.py `open_data`), so a sweep over one source's weight sets the others in [base]. To pick a
mix for a target, sweep the weights with a short budget (a proxy run) and make the target the metric:
`val/bpb@SOURCE` is the bits-per-byte of that source's validation text alone, `val/bpb@mean` the
plain mean over the sources (each kind of text counts once, however much of it there is), where
`val/bpb` weighs them by their validation tokens. Every trial of a sweep over data with several
sources records each source's bits-per-byte (results.md shows them beside the weights).

Everything is checked before the first trial runs: unknown keys (with the same suggestions as
`lmforge train`), wrong types, empty ranges, and each value against the base config -- a typo must
not cost a night of trials that all fail the same way.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.config import apply_updates, build_run_config, flatten, read_toml
from lmforge.errors import UserError

SPEC_KEYS = {"choices", "low", "high", "log", "step", "num"}
TOP_KEYS = {
    "data",
    "preset",
    "method",
    "n_trials",
    "metric",
    "seed",
    "prune",
    "prune_startup_trials",
    "enqueue",
    "budget",
    "base",
    "space",
    "verb",
    "finetune",
}
VERBS = ("train", "finetune")
METHODS = ("grid", "random", "tpe")
METRICS = ("val/bpb", "val/loss")
PER_SOURCE = "val/bpb@"  # + a source's name, or "mean": a training sweep's per-source objective
# finetune sweeps: the metrics of each task kind, the default objective first (all but the loss maximised)
TASK_METRICS = {
    "classify": ("val/macro_f1", "val/accuracy", "val/loss"),
    "ner": ("val/f1", "val/precision", "val/recall", "val/token_accuracy", "val/loss"),
    "translate": ("val/chrf", "val/bleu", "val/loss"),
}
TASK_KINDS = {"classify": "classify", "sentiment": "classify", "ner": "ner", "translate": "translate"}
# [finetune] / "finetune.KEY" options: the arguments of finetune_task a sweep may set, with their type or
# their allowed values
FINETUNE_OPTIONS: dict[str, type | tuple] = {
    "lora_rank": int,
    "lora_alpha": float,
    "freeze_backbone": bool,
    "pooling": ("last", "first", "mean"),
    "subtoken": ("first", "last"),
    "epochs": float,
    "unit": ("line", "word"),
    "seq_len": int,
}
FINETUNE_PATHS = ("backbone", "task", "val")
BUDGETS = {"steps": "train.max_steps", "tokens": "train.max_tokens", "seconds": "train.time_budget"}


@dataclass
class Param:
    """One searched config key: a list of choices, or a [low, high] int / float range."""

    name: str
    choices: list | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False  # sample the range on a log scale
    step: float | int | None = None  # ints: the stride (default 1); floats: a discrete step
    num: int = 3  # grid points for a float range (log- or evenly spaced)

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) for v in (self.low, self.high))

    def grid(self) -> list:
        """The values a grid search tries."""
        if self.choices is not None:
            return list(self.choices)
        if self.is_int:
            return list(range(self.low, self.high + 1, int(self.step or 1)))
        if self.step:
            return [
                self.low + i * self.step for i in range(int((self.high - self.low) / self.step + 1e-9) + 1)
            ]
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            return [math.exp(lo + (hi - lo) * i / (self.num - 1)) for i in range(self.num)]
        return [self.low + (self.high - self.low) * i / (self.num - 1) for i in range(self.num)]

    def extremes(self) -> list:
        """Values to check against the base config before any trial runs."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def suggest(self, trial) -> Any:
        """The value for an Optuna trial (random / TPE; grid uses the categorical form)."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, self.choices)
        if self.is_int:
            return trial.suggest_int(self.name, self.low, self.high, step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log, step=self.step)


@dataclass
class SweepSpec:
    data: str
    space: list[Param]
    budget: tuple[str, float] | None  # ("steps" | "tokens" | "seconds", amount); None: finetune's own
    preset: str | None = None
    base: dict[str, Any] = field(default_factory=dict)  # dotted key -> value
    method: str = "tpe"
    n_trials: int = 10
    metric: str = "val/bpb"
    seed: int = 0
    prune: bool = True
    prune_startup_trials: int = 2
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    verb: str = "train"  # train | finetune: what each trial runs
    finetune: dict[str, Any] = field(default_factory=dict)  # backbone, task, val and fixed options

    @property
    def maximize(self) -> bool:
        """Task metrics (accuracy, F1, BLEU, ...) are maximised; losses and bits-per-byte minimised."""
        return self.metric not in ("val/bpb", "val/loss") and not self.per_source

    @property
    def per_source(self) -> str | None:
        """The source (or "mean") of a val/bpb@SOURCE objective; None for any other metric."""
        if self.verb == "train" and self.metric.startswith(PER_SOURCE):
            return self.metric.removeprefix(PER_SOURCE)
        return None

    def to_json(self) -> str:
        """A stable description, stored in SWEEP_DIR so a resume can refuse a changed sweep."""
        from dataclasses import asdict

        return json.dumps(asdict(self), sort_keys=True, default=str)


def _flatten_space(tree: dict, prefix: str = "") -> dict[str, dict]:
    out: dict[str, dict] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if not isinstance(value, dict):
            raise UserError(
                f"[space] '{name}' must be a table such as {{ choices = [...] }} or {{ low = 1, high = 4 }}"
            )
        if set(value) & SPEC_KEYS:
            if set(value) - SPEC_KEYS:
                raise UserError(
                    f"[space] '{name}' has unknown field(s) {sorted(set(value) - SPEC_KEYS)}; "
                    f"known: {', '.join(sorted(SPEC_KEYS))}"
                )
            out[name] = value
        else:
            out.update(_flatten_space(value, f"{name}."))
    return out


def _param(name: str, raw: dict) -> Param:
    param = Param(name, **raw)
    where = f"[space] '{name}'"
    if param.choices is not None:
        if {"low", "high"} & set(raw):
            raise UserError(f"{where}: give either choices or low/high, not both")
        if not isinstance(param.choices, list) or not param.choices:
            raise UserError(f"{where}: choices is empty; list at least one value")
        return param
    if param.low is None or param.high is None:
        raise UserError(f"{where}: needs choices = [...] or both low and high")
    for bound in (param.low, param.high):
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise UserError(f"{where}: low and high must be numbers, got {bound!r}")
    if not param.low < param.high:
        raise UserError(f"{where}: the range [{param.low}, {param.high}] is empty; low must be < high")
    if param.log and param.low <= 0:
        raise UserError(f"{where}: a log range needs low > 0 (got {param.low})")
    if param.step is not None and not param.step > 0:
        raise UserError(f"{where}: step must be > 0")
    if param.num < 2:
        raise UserError(f"{where}: num (grid points) must be >= 2")
    return param


def parse_sweep(tree: dict) -> SweepSpec:
    unknown = set(tree) - TOP_KEYS
    if unknown:
        raise UserError(f"unknown sweep setting(s) {sorted(unknown)}; known: {', '.join(sorted(TOP_KEYS))}")
    if not tree.get("data"):
        raise UserError('the sweep file needs data = "DATA_DIR" (or pass --data)')
    space = [_param(n, raw) for n, raw in _flatten_space(tree.get("space", {})).items()]
    if not space:
        raise UserError('the sweep file has no [space]; add at least one key, e.g. "optim.lr" = {...}')
    verb = tree.get("verb", "train")
    if verb not in VERBS:
        raise UserError(f"verb '{verb}' is not one of {', '.join(VERBS)}")
    finetune = dict(tree.get("finetune", {}))
    if verb == "train" and finetune:
        raise UserError('[finetune] is for sweeps over fine-tuning; add verb = "finetune" or remove it')
    budget = tree.get("budget", {})
    if verb == "finetune" and not budget:
        kind, amount = None, None
    elif len(budget) != 1 or next(iter(budget)) not in BUDGETS:
        raise UserError("[budget] needs exactly one of steps, tokens or seconds (per trial)")
    else:
        kind, amount = next(iter(budget.items()))
        if isinstance(amount, bool) or not isinstance(amount, int | float) or amount <= 0:
            raise UserError(f"[budget] {kind} must be a positive number, got {amount!r}")
    metrics = METRICS
    if verb == "finetune":
        _check_finetune_table(finetune)
        metrics = TASK_METRICS[TASK_KINDS[finetune["task"]]]
    spec = SweepSpec(
        data=str(tree["data"]),
        space=space,
        budget=(kind, amount) if kind else None,
        preset=tree.get("preset"),
        base=flatten(tree.get("base", {})),
        method=tree.get("method", "tpe"),
        n_trials=tree.get("n_trials", 10),
        metric=tree.get("metric", metrics[0]),
        seed=tree.get("seed", 0),
        prune=bool(tree.get("prune", True)),
        prune_startup_trials=tree.get("prune_startup_trials", 2),
        enqueue=[flatten(e) for e in tree.get("enqueue", [])],
        verb=verb,
        finetune=finetune,
    )
    if spec.method not in METHODS:
        raise UserError(f"method '{spec.method}' is not one of {', '.join(METHODS)}")
    if spec.metric not in metrics and not (spec.per_source and spec.per_source.strip()):
        if verb == "train":
            metrics = (*metrics, f"{PER_SOURCE}SOURCE", f"{PER_SOURCE}mean")
        what = f"--task {finetune['task']}" if verb == "finetune" else "a training sweep"
        raise UserError(f"metric '{spec.metric}' does not fit {what}; use one of {', '.join(metrics)}")
    if verb == "finetune":
        _check_finetune_space(spec)
    if not isinstance(spec.n_trials, int) or spec.n_trials < 1:
        raise UserError(f"n_trials ({spec.n_trials!r}) must be a positive integer")
    names = {p.name for p in space}
    for entry in spec.enqueue:
        if set(entry) - names:
            raise UserError(f"enqueue names key(s) {sorted(set(entry) - names)} that are not in [space]")
    return spec


def _check_finetune_table(table: dict) -> None:
    unknown = set(table) - set(FINETUNE_PATHS) - set(FINETUNE_OPTIONS)
    if unknown:
        known = ", ".join([*FINETUNE_PATHS, *FINETUNE_OPTIONS])
        raise UserError(f"[finetune] has unknown key(s) {sorted(unknown)}; known: {known}")
    for key in ("backbone", "task"):
        if not table.get(key):
            raise UserError(f'[finetune] needs {key} = "..." (the backbone run and the task to fine-tune)')
    if table["task"] not in TASK_KINDS:
        raise UserError(f"[finetune] task '{table['task']}' is not one of {', '.join(TASK_KINDS)}")
    for key, value in table.items():
        if key in FINETUNE_OPTIONS:
            check_option(key, value, "[finetune]")


def check_option(name: str, value: Any, where: str) -> None:
    """A finetune option's value has its type (ints pass for floats) or is one of its allowed values."""
    kind = FINETUNE_OPTIONS[name]
    if isinstance(kind, tuple):
        if value not in kind:
            raise UserError(f"{where} '{name}' = {value!r} is not one of {', '.join(kind)}")
        return
    fits = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        fits = True
    if not fits:
        raise UserError(f"{where} '{name}' must be {kind.__name__}, got {value!r}")
    if kind is not bool and value < (0 if name == "lora_rank" else 1e-12):
        raise UserError(f"{where} '{name}' must be {'>= 0' if name == 'lora_rank' else '> 0'}, got {value!r}")


def split_finetune(spec: SweepSpec, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(finetune_task options, dotted config overrides) of a trial: [finetune], [base], budget, params."""
    options = {k: v for k, v in spec.finetune.items() if k in FINETUNE_OPTIONS}
    overrides: dict[str, Any] = {}
    if spec.budget:
        kind, amount = spec.budget
        overrides[BUDGETS[kind]] = int(amount) if kind != "seconds" else float(amount)
        if kind != "steps":
            overrides["train.max_steps"] = 1_000_000
    for key, value in {**spec.base, **params}.items():
        if key.startswith("finetune."):
            options[key.removeprefix("finetune.")] = value
        else:
            overrides[key] = value
    return options, overrides


def _check_finetune_space(spec: SweepSpec) -> None:
    """Keys a finetune trial can set: finetune.OPTION, or optim / schedule / train settings."""
    for name in [*spec.base, *(p.name for p in spec.space)]:
        section, _, rest = name.partition(".")
        if section == "finetune":
            if rest not in FINETUNE_OPTIONS:
                raise UserError(
                    f"'{name}' is not a finetune option; known: "
                    + ", ".join(f"finetune.{k}" for k in FINETUNE_OPTIONS)
                )
        elif section not in ("optim", "schedule", "train"):
            raise UserError(
                f"'{name}': a finetune sweep takes the model and data from the backbone and the task data; "
                "search finetune.OPTION or optim / schedule / train keys"
            )
    for param in spec.space:
        if param.name.startswith("finetune."):
            for value in param.extremes():
                check_option(param.name.removeprefix("finetune."), value, "[space]")
    given = [*spec.finetune, *spec.base, *(p.name for p in spec.space)]
    lengths = {"epochs", "train.max_steps"} & {name.removeprefix("finetune.") for name in given}
    if spec.budget and lengths:
        raise UserError(f"[budget] and {sorted(lengths)} both set a trial's length; keep one")


def load_sweep(path: str | Path) -> SweepSpec:
    return parse_sweep(read_toml(path))


def base_tree(spec: SweepSpec, preset_path: Path | None) -> dict:
    tree: dict = {}
    if preset_path:
        apply_updates(tree, flatten(read_toml(preset_path)))
    apply_updates(tree, spec.base)
    return tree


def trial_tree(spec: SweepSpec, base: dict, params: dict[str, Any]) -> dict:
    """Base + this trial's values + the per-trial budget, as a {section: {...}} tree."""
    tree = json.loads(json.dumps(base))  # a deep copy of plain data
    apply_updates(tree, params)
    kind, amount = spec.budget
    budget = {BUDGETS[kind]: int(amount) if kind != "seconds" else float(amount)}
    if kind != "steps":  # tokens / seconds decide the length; the step count is only a ceiling
        budget["train.max_steps"] = 1_000_000
    apply_updates(tree, budget)
    tree.setdefault("data", {})["path"] = spec.data
    return tree


def check_space(spec: SweepSpec, preset_path: Path | None, vocab_size: int, sources: list[str]) -> None:
    """Every searched value must name a real key, have the right type and fit the base config."""
    base = base_tree(spec, preset_path)
    build_run_config(trial_tree(spec, base, {}), vocab_size)
    target = spec.per_source
    if target is not None and len(sources) < 2:
        raise UserError(
            f"metric '{spec.metric}' needs data with several sources; this data has "
            f"{len(sources)} (use val/bpb, or prepare the data from several --source)"
        )
    if target is not None and target != "mean" and target not in sources:
        known = ", ".join([*sources, "mean"])
        raise UserError(f"metric '{spec.metric}': no source '{target}' in the data; known: {known}")
    for param in spec.space:
        if param.name.startswith("data.weights."):
            source = param.name.split(".", 2)[2]
            if source not in sources:
                raise UserError(f"[space] '{param.name}': no source '{source}' in the data; known: {sources}")
        for value in param.extremes():
            try:
                build_run_config(trial_tree(spec, base, {param.name: value}), vocab_size)
            except UserError as exc:
                raise UserError(f"[space] '{param.name}' = {value!r}: {exc}") from None
            except TypeError as exc:  # a model config rejecting an argument
                raise UserError(f"[space] '{param.name}' = {value!r}: {exc}") from None


def grid_size(spec: SweepSpec) -> int:
    return math.prod(len(p.grid()) for p in spec.space)


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    names = [p.name for p in spec.space]
    return [
        dict(zip(names, combo, strict=True)) for combo in itertools.product(*(p.grid() for p in spec.space))
    ]
