"""EleutherAI's lm-evaluation-harness on an lmforge run, in process (`lmforge eval RUN --harness TASK`).

The field compares language models with lm-eval's tasks; rather than re-implementing them, lmforge
implements lm-eval's model interface (`TemplateLM`) on a loaded run and lets lm-eval do the rest
(prompts, few-shot examples, metrics). lm-eval is an optional extra (`pip install 'lmforge[eval]'`),
imported only here, inside functions.

The three requests a task can make:
- `loglikelihood(context, continuation)`: the continuation's summed log-prob, scored by
  `generate.scoring.continuation_scores` -- right-padded batches of the model's ordinary forward,
  with requests whose input is identical (the usual case for multiple-choice answers of one token
  after a shared question) run once;
- `loglikelihood_rolling(text)`: a whole text scored in disjoint windows of the model's context, cut
  by lm-eval's own `get_rolling_token_windows`, so the windows are the ones its `hf` model uses;
- `generate_until(context, until)`: the KV-cached decoding engine (`generate.chat.Completion`),
  stopping at any of the `until` strings or the end-of-text token.

Tokenization follows lm-eval's conventions for a causal model (trailing spaces of the context move to
the continuation; an empty context becomes the end-of-text token), so the per-example log-likelihoods
equal those of `lm_eval --model hf` on the exported folder and of `--model local-completions` against
`lmforge serve` (a test checks both).

Tasks given as a path (a YAML file, or a folder of them) are loaded from there alone, without lm-eval's
built-in task index, so local tasks -- a YAML beside a JSON file -- work offline.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from lmforge.errors import UserError

RESULT_FILE = "harness.json"  # in the run folder: the latest harness run, one entry per task


def require_lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise UserError("--harness needs lm-evaluation-harness: pip install 'lmforge[eval]'") from None


def make_lm(model, tokenizer, batch_size: int = 8, max_gen_toks: int = 256, progress: bool = True):
    """An lm-eval `LM` over an lmforge model and tokenizer (the class is built here: lm-eval is optional)."""
    from lm_eval.api.model import TemplateLM
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
    from tqdm import tqdm

    from lmforge.generate.chat import Completion
    from lmforge.generate.scoring import continuation_scores

    class LmforgeLM(TemplateLM):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.lmforge_tokenizer = model, tokenizer
            self.batch_size, self.max_gen_toks = batch_size, max_gen_toks

        @property
        def eot_token_id(self) -> int:
            return tokenizer.eot_id

        @property
        def max_length(self) -> int:
            return model.max_context or 2048

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
            return tokenizer.encode(string)

        def tok_decode(self, tokens) -> str:
            return tokenizer.decode(tokens)

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
            pairs = [(context, continuation) for _, context, continuation in requests]
            out = []
            step = max(1, self.batch_size * 4)
            bar = tqdm(total=len(pairs), desc="loglikelihood", disable=disable_tqdm or not progress)
            for start in range(0, len(pairs), step):
                chunk = continuation_scores(model, pairs[start : start + step], self.batch_size)
                for (cache_key, _, _), score in zip(requests[start : start + step], chunk, strict=True):
                    self.cache_hook.add_partial("loglikelihood", cache_key, score)
                out += chunk
                bar.update(len(chunk))
            bar.close()
            return out

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
            out = []
            for request in tqdm(requests, desc="loglikelihood_rolling", disable=disable_tqdm or not progress):
                (text,) = request.args
                windows = get_rolling_token_windows(
                    self.tok_encode(text), self.prefix_token_id, self.max_length, context_len=1
                )
                pairs = [make_disjoint_window(w) for w in windows]
                total = sum(score for score, _ in continuation_scores(model, pairs, self.batch_size))
                self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
                out.append(total)
            return out

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            out = []
            for request in tqdm(requests, desc="generate_until", disable=disable_tqdm or not progress):
                context, kwargs = request.args
                kwargs = dict(kwargs or {})
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                max_new = int(kwargs.get("max_gen_toks", self.max_gen_toks))
                ids = self.tok_encode(context) or [self.eot_token_id]
                room = self.max_length - max_new if model.max_context else None
                if room is not None:
                    ids = ids[-max(1, room) :]  # the newest context that leaves room, as lm-eval's hf does
                temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
                eot = [self.eot_token_id]
                completion = Completion(model, tokenizer, ids, max_new, stop=until, stop_ids=eot,
                                        temperature=temperature, seed=0)  # fmt: skip
                text = "".join(completion)
                self.cache_hook.add_partial("generate_until", (context, request.args[1]), text)
                out.append(text)
            return out

    return LmforgeLM()


def task_manager_for(names: list[str]):
    """(lm-eval TaskManager, task names): paths load alone (offline); plain names use lm-eval's index."""
    from lm_eval.tasks import TaskManager

    include, tasks = [], []
    for name in names:
        path = Path(name)
        if path.suffix in (".yaml", ".yml") or path.is_dir():
            if not path.exists():
                raise UserError(f"--harness: task file '{name}' does not exist")
            files = [path] if path.is_file() else sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            include.append(str(path.parent if path.is_file() else path))
            tasks += [_task_name(f) for f in files]
        else:
            tasks.append(name)
    local_only = all(Path(n).suffix in (".yaml", ".yml") or Path(n).is_dir() for n in names)
    manager = TaskManager(include_path=include or None, include_defaults=not local_only)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"--harness: unknown task(s) {', '.join(unknown)}; give a task name lm-eval knows "
                        "or the path of a task YAML")  # fmt: skip
    return manager, list(dict.fromkeys(tasks))


def _task_name(path: Path) -> str:
    import yaml

    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"--harness: cannot read task file '{path}': {exc}") from None
    if not isinstance(spec, dict) or not spec.get("task"):
        raise UserError(f"--harness: '{path}' has no 'task:' name")
    return str(spec["task"])


def run_harness(
    loaded,
    names: list[str],
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    """Evaluate `loaded` (runs.LoadedRun) on lm-eval tasks; the result dict that `harness.json` holds:
    per task its metrics, and per example the log-likelihoods / generations lm-eval logged."""
    require_lm_eval()
    import lm_eval
    from lm_eval.evaluator import simple_evaluate

    manager, tasks = task_manager_for(names)
    lm = make_lm(loaded.model, loaded.tokenizer, batch_size=batch_size, progress=progress)
    start = time.perf_counter()
    try:
        output = simple_evaluate(
            model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit, task_manager=manager,
            log_samples=True, bootstrap_iters=0, verbosity="ERROR",
        )  # fmt: skip
    except (FileNotFoundError, ConnectionError, OSError) as exc:
        raise UserError(f"--harness: a task's data could not be loaded ({exc}); offline, use local tasks "
                        "(a YAML naming a JSON file)") from None  # fmt: skip
    seconds = time.perf_counter() - start
    results = {}
    for task in tasks:
        metrics = output["results"].get(task, {})
        samples = output.get("samples", {}).get(task, [])
        results[task] = {
            "metrics": {k: _clean(v) for k, v in metrics.items() if _is_metric(k, v)},
            "n_examples": metrics.get("sample_len", len(samples)),
            "n_shot": output.get("n-shot", {}).get(task),
            "examples": [_example(sample) for sample in samples],
        }
    return {
        "run": str(loaded.run_dir),
        "checkpoint": loaded.checkpoint.name,
        "lm_eval_version": getattr(lm_eval, "__version__", "?"),
        "limit": limit,
        "num_fewshot": num_fewshot,
        "seconds": round(seconds, 3),
        "tasks": results,
    }


def _is_metric(name: str, value) -> bool:
    """lm-eval's result rows also carry the task's name, alias and sample count, and stderr figures."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return numeric and name != "sample_len" and "stderr" not in name


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _example(sample: dict) -> dict:
    """One logged example: its index, target, the model's answers (log-likelihood, greedy) or text."""
    answers = []
    for response in sample.get("filtered_resps") or sample.get("resps") or []:
        item = response[0] if isinstance(response, list) and len(response) == 1 else response
        answers.append(list(item) if isinstance(item, tuple) else item)
    return {"doc_id": sample.get("doc_id"), "target": str(sample.get("target")), "responses": answers}


def save(run_dir: Path, result: dict) -> Path:
    from lmforge.runs import write_json_atomic

    path = Path(run_dir) / RESULT_FILE
    write_json_atomic(path, result)
    return path


def load(run_dir: Path) -> dict | None:
    path = Path(run_dir) / RESULT_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def format_table(result: dict) -> str:
    """Task | metric | value, one row per metric."""
    rows = ["task                 metric                value"]
    for task, entry in result["tasks"].items():
        for metric, value in entry["metrics"].items():
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            rows.append(f"{task:<20} {metric:<21} {shown}")
    return "\n".join(rows)
