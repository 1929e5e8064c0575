"""The trials of a sweep over fine-tuning (`verb = "finetune"`): each one an `lmforge finetune` run.

Why its own module: a training trial is `train(config)` on a data folder and is judged by validation
bits-per-byte; a fine-tuning trial is `finetune_task(backbone, task, examples, ...)` -- some settings
are its arguments (LoRA rank, pooling, epochs), the rest dotted overrides -- and is judged by the
task's final validation metric, beside the trivial baseline on the same examples (majority class,
all-O, the source copied), so the sweep's table says whether any point learned anything at all.

Pruning compares the validation loss at each evaluation (the task metrics are only computed once,
at the end): reported negated when the objective is maximised, so "higher is better" holds for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge import logs
from lmforge.config import apply_updates, build_run_config, flatten, to_toml
from lmforge.errors import UserError
from lmforge.tune.space import TASK_KINDS, TASK_METRICS, SweepSpec, split_finetune


@dataclass
class TaskData:
    """Where a finetune sweep's examples are: `data` is a file, or a folder with train.jsonl (+ val.jsonl)."""

    train: str
    val: str | None

    @classmethod
    def of(cls, spec: SweepSpec) -> TaskData:
        path = Path(spec.data)
        val = spec.finetune.get("val")
        if path.is_dir():
            if not (path / "train.jsonl").is_file():
                raise UserError(
                    f"task data folder '{path}' has no train.jsonl; make it with `lmforge data tasks`, "
                    "or pass --data FILE.jsonl"
                )
            held = path / "val.jsonl"
            return cls(str(path / "train.jsonl"), val or (str(held) if held.is_file() else None))
        return cls(str(path), val)


def metric_names(spec: SweepSpec) -> list[str]:
    """The task's metrics without the `val/` prefix (the loss left out): the columns of results.csv."""
    kind = TASK_KINDS[spec.finetune["task"]]
    return [m.removeprefix("val/") for m in TASK_METRICS[kind] if m != "val/loss"]


def check_task_space(spec: SweepSpec) -> TaskData:
    """Before any trial: the backbone and examples exist and parse, and each searched value fits."""
    from lmforge import runs
    from lmforge.finetune.backbones import is_hf_folder
    from lmforge.finetune.task_data import read_examples
    from lmforge.finetune.tasks import TASK_DEFAULTS

    backbone = Path(spec.finetune["backbone"])
    if not backbone.is_dir():
        raise UserError(
            f"backbone '{backbone}' does not exist; pass an lmforge run folder or a Hugging Face folder "
            "(--backbone)"
        )
    data = TaskData.of(spec)
    for path in (data.train, data.val):
        if path is not None:
            read_examples(path, spec.finetune["task"])
    base: dict = {}
    if not is_hf_folder(backbone):
        tree = runs.read_run_config(backbone).to_dict()
        apply_updates(base, flatten({k: v for k, v in tree.items() if k in ("optim", "schedule", "train")}))
    apply_updates(base, TASK_DEFAULTS)

    def check(params: dict[str, Any]) -> None:
        tree = {"model": {}, **_copy(base)}
        apply_updates(tree, split_finetune(spec, params)[1])
        build_run_config(tree)

    check({})
    for param in spec.space:
        if param.name.startswith("finetune."):
            continue  # checked by the sweep file's parser
        for value in param.extremes():
            try:
                check({param.name: value})
            except (UserError, TypeError) as exc:
                raise UserError(f"[space] '{param.name}' = {value!r}: {exc}") from None
    return data


def _copy(tree: dict) -> dict:
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in tree.items()}


def run_task_trial(spec: SweepSpec, data: TaskData, params: dict[str, Any], run_dir: Path, on_eval):
    """One fine-tuning run; returns (TrainResult, metrics with "baseline", the options it ran with)."""
    from lmforge.finetune.tasks import finetune_task

    options, overrides = split_finetune(spec, params)
    with logs.silenced("lmforge.finetune"), logs.silenced("lmforge.train"):
        result, metrics = finetune_task(
            spec.finetune["backbone"],
            spec.finetune["task"],
            data.train,
            run_dir,
            val_spec=data.val,
            overrides=[f"{key}={_literal(value)}" for key, value in overrides.items()],
            progress=False,
            on_eval=on_eval,
            **options,
        )
    return result, metrics, options


def _literal(value: Any) -> str:
    """A value as the TOML literal `key=value` parsing reads back (parse_override)."""
    text = to_toml({"s": {"v": value}})
    return text.split("=", 1)[1].strip()


def finetune_command(spec: SweepSpec, data: TaskData, params: dict[str, Any], out: str = "runs/best") -> str:
    """The `lmforge finetune` command line that repeats one trial."""
    options, overrides = split_finetune(spec, params)
    words = ["lmforge finetune", spec.finetune["backbone"], "--task", spec.finetune["task"]]
    words += ["--train", data.train] + (["--val", data.val] if data.val else []) + ["--out", out]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            words += [flag] if value else []
        else:
            words += [flag, str(value)]
    words += [f"{key}={_literal(value)}" for key, value in overrides.items()]
    return " ".join(words)
