"""`lmforge sweep`: hyperparameter search over any config key, one normal run folder per trial.

    SWEEP_DIR/
      sweep.json            the parsed sweep (a resume must use the same one)
      optuna.journal        Optuna's journal storage: every trial, its parameters, state and values
      trials/NNN/           a run folder per trial (config.json, metrics.jsonl, ckpt/, ...)
      results.csv  results.md   trials sorted by the metric (validation bits-per-byte by default)
      best.toml             the best trial's full config, ready for `lmforge train --config`
                            (a sweep over fine-tuning: best.txt, the `lmforge finetune` command instead)
      params.png  history.png   the metric against each swept parameter; per trial, best so far

`verb = "finetune"` sweeps `lmforge finetune` runs instead (task_trials.py): the objective is the
task's validation metric, maximised, with the trivial baseline recorded beside every trial.

The search is Optuna's (grid, random, or TPE) -- a maintained library, not a search algorithm written
here. Pruning: after every validation pass the loop calls `on_eval`, which reports the metric to
Optuna; Optuna's MedianPruner stops a trial whose value is worse than the median of earlier trials
at the same step, so a bad learning rate costs one evaluation interval, not a whole budget.

Trials run one after another (the machine has two cores and each trial uses both). The journal is
written as each trial finishes, so `--resume` continues where an interruption left off: finished
trials (complete, pruned or failed) are not redone; a trial that was cut short (Ctrl-C, a kill) is
run again with the same parameters. A trial that crashes or diverges is recorded as failed with its
error, and the sweep goes on.
"""

from __future__ import annotations

import json
import logging
import math
import time
import traceback
from pathlib import Path
from typing import Any

from lmforge import io, logs
from lmforge.config import build_run_config
from lmforge.errors import UserError
from lmforge.train.loop import train
from lmforge.tune.results import write_results
from lmforge.tune.space import SweepSpec, base_tree, check_space, grid_size, trial_tree
from lmforge.tune.task_trials import check_task_space, metric_names, run_task_trial

logger = logging.getLogger(__name__)

STUDY = "sweep"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("sweeps need optuna; pip install 'lmforge[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # we print one line per trial ourselves
    return optuna


def _sampler(optuna, spec: SweepSpec):
    if spec.method == "grid":
        values = {p.name: p.grid() for p in spec.space}
        return optuna.samplers.GridSampler(values, seed=spec.seed)
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=min(5, max(1, spec.n_trials // 3)))


def _open_study(optuna, spec: SweepSpec, out_dir: Path, resume: bool):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    saved = out_dir / "sweep.json"
    if saved.is_file() and not resume:
        raise UserError(
            f"'{out_dir}' already holds a sweep; pass --resume to continue it or choose another --out"
        )
    if saved.is_file() and _differs_beyond_n_trials(saved, spec):
        raise UserError(
            f"the sweep file differs from the one '{out_dir}' was started with; resume with the same file "
            "(only n_trials may grow) or choose another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    io.write_text(saved, spec.to_json())
    journal = _checked_journal(out_dir / "optuna.journal")
    storage = JournalStorage(JournalFileBackend(str(journal)))
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=spec.prune_startup_trials, n_warmup_steps=0)
        if spec.prune
        else optuna.pruners.NopPruner()
    )
    return optuna.create_study(
        study_name=STUDY,
        storage=storage,
        sampler=_sampler(optuna, spec),
        pruner=pruner,
        direction="maximize" if spec.maximize else "minimize",
        load_if_exists=True,
    )


def _checked_journal(path: Path) -> Path:
    """The study journal, with a last record cut short by a kill removed (kept aside as a copy).

    Optuna appends one JSON line per event. A kill in the middle of an append leaves a partial last
    line; Optuna skips it when reading, but its next append would be glued onto it, damaging the
    journal for good. Everything before it is intact, so the partial line is dropped here. A bad
    line anywhere else means the file was edited or the disk damaged: that is refused, by name.
    """
    if not path.is_file():
        return path
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, else the unfinished last record

    def is_record(line: bytes) -> bool:
        try:
            return isinstance(json.loads(line), dict)
        except ValueError:
            return False

    bad = [number for number, line in enumerate(lines) if not is_record(line)]
    if tail and is_record(tail):  # complete but for its newline
        lines.append(tail)
    elif not tail and bad and bad[-1] == len(lines) - 1:
        lines.pop()  # a cut record that happens to end with a newline
        bad.pop()
    elif not tail:
        tail = None
    if bad:
        raise UserError(
            f"{path} is damaged at line {bad[0] + 1} (not a JSON record); restore it, or start the "
            "sweep again in another --out"
        )
    if tail is None:
        return path
    io.write_bytes(path.with_name(path.name + ".damaged"), data)
    io.write_bytes(path, b"".join(line + b"\n" for line in lines))
    logger.warning(
        f"warning: dropped a half-written last record from {path} (the old file is {path.name}.damaged)"
    )
    return path


def _differs_beyond_n_trials(saved: Path, spec: SweepSpec) -> bool:
    old = io.read_json_object(saved, "start the sweep again in another --out")
    new = json.loads(spec.to_json())
    old.pop("n_trials", None)
    new.pop("n_trials", None)
    return old != new


def _finished(trial, optuna) -> bool:
    """Complete, pruned, or failed for a reason of its own (not cut short by an interruption)."""
    states = optuna.trial.TrialState
    if trial.state in (states.COMPLETE, states.PRUNED):
        return True
    return trial.state == states.FAIL and not trial.user_attrs.get("interrupted")


def _requeue_interrupted(study, optuna) -> None:
    """Trials left running by a kill, or cut short by Ctrl-C, are run again with the same parameters."""
    states = optuna.trial.TrialState
    storage = study._storage  # Optuna has no public call to close a trial left RUNNING by a dead process
    for t in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
        storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        storage.set_trial_state_values(t._trial_id, states.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if t.state == states.FAIL and t.user_attrs.get("interrupted") and t.number not in retried:
            logger.info(f"trial {t.number:03d} was interrupted; it runs again")
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            if "grid_id" in t.system_attrs:  # the retry takes the grid point's place in GridSampler
                retry = study.get_trials(deepcopy=False, states=(states.WAITING,))[-1]
                for key in ("grid_id", "search_space"):
                    storage.set_trial_system_attr(retry._trial_id, key, t.system_attrs[key])


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    resume: bool = False,
    preset_path: Path | None = None,
) -> dict:
    """Run the sweep's remaining trials into OUT_DIR; returns a summary (best trial, counts)."""
    optuna = _optuna()
    out_dir = Path(out_dir)
    sources: list[str] = []
    if spec.verb == "finetune":
        task_data = check_task_space(spec)  # before any trial runs
    else:
        from lmforge.data.shards import read_manifest
        from lmforge.data.tokenizer import load_tokenizer

        data_dir = Path(spec.data)
        if not data_dir.is_dir():
            raise UserError(f"data folder '{data_dir}' does not exist; make it with `lmforge data prepare`")
        tokenizer = load_tokenizer(data_dir / "tokenizer")
        sources = sorted(read_manifest(data_dir / "shards")["splits"]["train"].get("sources", {}))
        check_space(spec, preset_path, tokenizer.vocab_size, sources)  # before any trial runs
        base = base_tree(spec, preset_path)
    n_trials = min(spec.n_trials, grid_size(spec)) if spec.method == "grid" else spec.n_trials
    study = _open_study(optuna, spec, out_dir, resume)
    if not study.trials:
        for params in spec.enqueue:
            study.enqueue_trial(params)
    _requeue_interrupted(study, optuna)
    done = sum(_finished(t, optuna) for t in study.trials)
    remaining = max(0, n_trials - done)
    logger.info(f"sweep: {spec.method}, {done} of {n_trials} trials done, {remaining} to run -> {out_dir}")

    def objective(trial) -> float:
        if spec.method == "grid":
            params = {p.name: trial.suggest_categorical(p.name, p.grid()) for p in spec.space}
        else:
            params = {p.name: p.suggest(trial) for p in spec.space}
        run_dir = out_dir / "trials" / f"{trial.number:03d}"
        trial.set_user_attr("run_dir", str(run_dir))
        shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())

        def on_eval(step: int, record: dict) -> bool:
            if spec.per_source is not None:  # the mixture's val/bpb is not the objective: no pruning
                return False
            if spec.verb == "finetune":  # the loss, in the objective's direction (see task_trials.py)
                trial.report(-record["val/loss"] if spec.maximize else record["val/loss"], step)
            else:
                trial.report(record[spec.metric], step)
            return trial.should_prune()

        start = time.perf_counter()
        metrics: dict = {}
        try:
            if spec.verb == "finetune":
                result, metrics, _ = run_task_trial(spec, task_data, params, run_dir, on_eval)
            else:
                config = build_run_config(trial_tree(spec, base, params), tokenizer.vocab_size)
                with logs.silenced("lmforge.train"):
                    result = train(config, data_dir, run_dir, progress=False, on_eval=on_eval)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as exc:  # noqa: BLE001 -- any trial failure is recorded and the sweep goes on
            message = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("error", message.splitlines()[0] if message else type(exc).__name__)
            if not isinstance(exc, UserError):
                trial.set_user_attr("traceback", traceback.format_exc()[-2000:])
            logger.info(f"trial {trial.number:03d}: {shown} -> failed: {message}")
            return math.nan  # Optuna records a NaN objective as a failed trial
        seconds = time.perf_counter() - start
        if result.stopped_by in ("SIGINT", "SIGTERM"):
            trial.set_user_attr("interrupted", True)
            raise KeyboardInterrupt
        val = result.final_val
        trial.set_user_attr("steps", result.steps)
        trial.set_user_attr("tokens", result.tokens)
        trial.set_user_attr("seconds", round(seconds, 2))
        trial.set_user_attr("val_loss", val.get("loss"))
        if spec.verb == "finetune":
            _record_task_metrics(trial, spec, metrics, run_dir)
        else:
            trial.set_user_attr("val_bpb", val.get("bpb"))
            if len(sources) > 1 and result.stopped_by != "on_eval":
                for name, bpb in _bpb_by_source(run_dir, data_dir, config.train.eval_tokens).items():
                    trial.set_user_attr(f"val_bpb@{name}", bpb)
                    metrics[f"bpb@{name}"] = bpb
        if result.stopped_by == "on_eval":
            logger.info(
                f"trial {trial.number:03d}: {shown} -> pruned at step {result.steps} ({seconds:.1f}s)"
            )
            raise optuna.TrialPruned()
        name = spec.metric.removeprefix("val/")
        value = val.get(name) if name in ("loss", "bpb") else metrics.get(name)
        if value is None and spec.per_source is not None:
            trial.set_user_attr("error", f"no validation text of source '{spec.per_source}' to score")
            logger.info(f"trial {trial.number:03d}: {shown} -> failed: no validation text of that source")
            return math.nan
        value = math.nan if value is None else value
        if not math.isfinite(value):
            trial.set_user_attr("error", "diverged: the final validation metric is not finite")
            logger.info(f"trial {trial.number:03d}: {shown} -> failed: diverged")
            return math.nan
        baseline = (metrics.get("baseline") or {}).get(name)
        against = f" (baseline {baseline:.4f})" if baseline is not None else ""
        logger.info(
            f"trial {trial.number:03d}: {shown} -> {spec.metric} {value:.4f}{against} ({seconds:.1f}s)"
        )
        return value

    try:
        if remaining:
            study.optimize(objective, n_trials=remaining, catch=())
    finally:  # results on disk even after Ctrl-C: they show what finished
        summary = write_results(study, spec, out_dir, optuna)
    return summary


def _bpb_by_source(run_dir: Path, data_dir: Path, eval_tokens: int) -> dict[str, float]:
    """Each source's validation bits-per-byte under the trial's final model, and their plain mean."""
    from lmforge import runs
    from lmforge.eval.report import per_source_bpb

    with logs.silenced("lmforge"):
        loaded = runs.load_run(run_dir, quiet=True)
    by_source = {name: m["bpb"] for name, m in per_source_bpb(loaded, data_dir, eval_tokens or None).items()}
    if by_source:
        by_source["mean"] = sum(by_source.values()) / len(by_source)
    return by_source


def _record_task_metrics(trial, spec: SweepSpec, metrics: dict, run_dir: Path) -> None:
    """A finetune trial's task metrics, its baseline's, and the epochs it trained, as user attributes."""
    for name in metric_names(spec):
        trial.set_user_attr(f"val_{name}", metrics.get(name))
    name = spec.metric.removeprefix("val/")
    baseline = metrics.get("baseline") or {}
    trial.set_user_attr("baseline", baseline.get(name))
    trial.set_user_attr("baseline_is", baseline.get("name"))
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    task = json.loads((run_dir / "task.json").read_text(encoding="utf-8"))
    seen = config["train"]["max_steps"] * config["train"]["batch_size"] / max(1, task["examples"]["train"])
    trial.set_user_attr("epochs", round(seen, 2))
    trial.set_user_attr("lr", config["optim"]["lr"])
