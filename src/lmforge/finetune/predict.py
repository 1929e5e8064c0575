"""Using a task run: load it, label / tag / translate texts in batches, and measure it on labelled data.

`load_task_run` reads a run folder written by ``finetune_task``: its ``task.json``, its config, its
newest good checkpoint and its tokenizer (checked against the hash recorded at fine-tuning, so a
swapped tokenizer is refused rather than producing garbage). LoRA adapters are merged into the
weights on load: inference then costs what the plain backbone costs.

Predictions run in batches of right-padded rows. NER reads each word's tag at the sub-token it was
trained on (first or last, ``task.json`` ``subtoken``); words past the context get "O". Translation
decodes each source with beam search (``generate/beam.py``; beam 1 = greedy) or by sampling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge import runs
from lmforge.errors import UserError
from lmforge.eval import task_metrics as M
from lmforge.finetune import encode as E
from lmforge.finetune.backbones import TaskTokenizer, load_task_tokenizer
from lmforge.finetune.task_data import check_labels, read_examples, task_kind
from lmforge.finetune.words import plausible, rewrite, unique_words
from lmforge.generate.beam import beam_search, sample_decode
from lmforge.models.heads import TaskModel


@dataclass
class TaskRun:
    run_dir: Path
    task: str
    kind: str  # classify | ner | translate
    labels: list[str]
    model: TaskModel
    tokenizer: TaskTokenizer
    info: dict  # task.json
    checkpoint: str
    seq_len: int


def read_task_info(run_dir: Path) -> dict:
    path = Path(run_dir) / "task.json"
    if not path.is_file():
        raise UserError(
            f"'{run_dir}' is not a fine-tuned task run (no task.json); make one with "
            "`lmforge finetune BACKBONE --task classify|sentiment|ner|translate --train FILE --out DIR`"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def load_task_run(run_dir: str | Path, device: str = "cpu") -> TaskRun:
    run_dir = Path(run_dir)
    info = read_task_info(run_dir)
    config = runs.read_run_config(run_dir)
    ckpt = runs.find_latest_good(run_dir)
    if ckpt is None:
        raise UserError(f"run '{run_dir}' has no usable checkpoint yet; fine-tune it (or --resume) first")
    tok = load_task_tokenizer(run_dir / "tokenizer", info["backbone"]["kind"])
    if tok.hash != info["tokenizer_hash"]:
        raise UserError(
            f"tokenizer/backbone mismatch: the tokenizer in '{run_dir / 'tokenizer'}' is not the one the run "
            "was fine-tuned with; restore the run's own tokenizer"
        )
    model = TaskModel(config.model)
    runs.load_model_weights(model, ckpt.path)
    if model.lora_modules:
        model.merge_lora()
    model.to(device).eval()
    return TaskRun(
        run_dir,
        info["task"],
        info["kind"],
        info["labels"],
        model,
        tok,
        info,
        ckpt.path.name,
        config.model.seq_len,
    )


def _batches(items: list, batch_size: int):
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


@torch.no_grad()
def classify_texts(run: TaskRun, texts: list[str], batch_size: int = 32) -> tuple[list[int], list[float]]:
    """Predicted label index and its probability, per text."""
    preds, probs = [], []
    device = next(run.model.parameters()).device
    for chunk in _batches(texts, batch_size):
        rows = [(E.encode_classify(run.tokenizer, t, run.seq_len), 0) for t in chunk]
        x, _ = E.collate(rows, run.tokenizer.pad_id)
        p = run.model(x.to(device)).float().softmax(-1).cpu()  # (B, n_labels)
        best = p.max(-1)
        preds += best.indices.tolist()
        probs += best.values.tolist()
    return preds, probs


@torch.no_grad()
def tag_words(run: TaskRun, sentences: list[list[str]], batch_size: int = 32) -> list[list[str]]:
    """A BIO tag per word of each sentence."""
    out = []
    device = next(run.model.parameters()).device
    subtoken = run.info.get("subtoken", "first")
    for chunk in _batches(sentences, batch_size):
        encoded = [E.encode_words(run.tokenizer, words, run.seq_len, subtoken) for words in chunk]
        x, owners = E.collate(encoded, run.tokenizer.pad_id)
        pred = run.model(x.to(device)).argmax(-1).cpu()  # (B, T)
        for words, row_pred, row_owner in zip(chunk, pred.tolist(), owners.tolist(), strict=True):
            tags = ["O"] * len(words)
            for label, word in zip(row_pred, row_owner, strict=True):
                if word >= 0:
                    tags[word] = run.labels[label]
            out.append(tags)
    return out


@torch.no_grad()
def translate_texts(
    run: TaskRun,
    sources: list[str],
    beam_size: int = 4,
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
    seed: int | None = None,
) -> list[str]:
    if run.info.get("unit") == "word":
        words = unique_words(sources)
        room = max_new_tokens or min(run.seq_len // 2, 2 * max((len(w) for w in words), default=1) + 8)
        new = translate_lines(run, words, beam_size, room, temperature, seed)
        if temperature <= 0:  # the word unchanged is always a candidate: keep it when the model prefers it
            ours, kept = mean_logprobs(run, words, new), mean_logprobs(run, words, words)
            new = [
                n if o > k and plausible(w, n) else w
                for w, n, o, k in zip(words, new, ours, kept, strict=True)
            ]
        mapping = dict(zip(words, new, strict=True))
        return [rewrite(source, mapping) for source in sources]
    return translate_lines(run, sources, beam_size, max_new_tokens, temperature, seed)


@torch.no_grad()
def mean_logprobs(run: TaskRun, sources: list[str], targets: list[str], batch_size: int = 64) -> list[float]:
    """Mean log-probability per target token (its end included) of each target given its source:
    the score beam search ranks finished candidates by, so the two are comparable."""
    device = next(run.model.parameters()).device
    rows = [
        E.encode_translate(run.tokenizer, s, t, run.seq_len) for s, t in zip(sources, targets, strict=True)
    ]
    out = []
    for chunk in _batches(rows, batch_size):
        x, y = E.collate(chunk, run.tokenizer.pad_id)
        logp = run.model(x.to(device)).float().cpu().log_softmax(-1)  # (B, T, V)
        keep = y >= 0
        picked = logp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep  # (B, T)
        out += (picked.sum(1) / keep.sum(1).clamp(min=1)).tolist()
    return out


def translate_lines(
    run: TaskRun,
    sources: list[str],
    beam_size: int = 4,
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
    seed: int | None = None,
) -> list[str]:
    """Each source decoded as one sequence (a line, or a word for word-unit runs)."""
    tok, model = run.tokenizer, run.model
    device = next(model.parameters()).device
    room = max_new_tokens or run.seq_len // 2

    def next_logits(idx: torch.Tensor) -> torch.Tensor:
        return model(idx.to(device))[:, -1].float().cpu()  # (B, V)

    out = []
    for i, source in enumerate(sources):
        prompt = E.encode_prompt(tok, source, run.seq_len, room)
        budget = min(room, run.seq_len - len(prompt))
        if temperature > 0:
            seed_i = None if seed is None else seed + i
            ids = sample_decode(next_logits, prompt, budget, tok.eos_id, temperature, seed=seed_i)
        else:
            ids = beam_search(next_logits, prompt, budget, tok.eos_id, beam_size=beam_size)
        out.append(tok.decode(ids).strip())
    return out


def evaluate_examples(run: TaskRun, examples: list[dict], beam_size: int = 4, where: str = "data") -> dict:
    """The task's metrics on labelled examples, with the trivial baseline's under "baseline"."""
    if run.kind == "classify":
        check_labels(examples, run.labels, "classify", where)
        index = {label: i for i, label in enumerate(run.labels)}
        true = [index[e["label"]] for e in examples]
        preds, _ = classify_texts(run, [e["text"] for e in examples])
        report = M.classification_report(true, preds, run.labels)
        return {**report, "baseline": M.majority_baseline(true, run.labels)}
    if run.kind == "ner":
        check_labels(examples, run.labels, "ner", where)
        true = [e["tags"] for e in examples]
        predicted = tag_words(run, [e["tokens"] for e in examples])
        return {**M.entity_scores(true, predicted), "baseline": M.all_o_baseline(true)}
    sources, references = [e["source"] for e in examples], [e["target"] for e in examples]
    hyps = translate_texts(run, sources, beam_size=beam_size)
    return {**M.translation_scores(hyps, references), "baseline": M.copy_baseline(sources, references)}


def evaluate_task_file(
    run_dir: str | Path, data_spec: str, task: str | None = None, beam_size: int = 4
) -> dict:
    """`lmforge eval RUN --task T --data FILE`: the run's task metrics on a labelled file."""
    run = load_task_run(run_dir)
    if task is not None and task_kind(task) != run.kind:
        raise UserError(f"'{run_dir}' was fine-tuned for {run.task}, not {task}; pass --task {run.task}")
    examples = read_examples(data_spec, run.task)
    metrics = evaluate_examples(run, examples, beam_size, where=str(data_spec))
    return {
        "task": run.task,
        "run": str(run_dir),
        "checkpoint": run.checkpoint,
        "on": str(data_spec),
        **metrics,
    }


METRIC_KEYS = ("accuracy", "macro_f1", "precision", "recall", "f1", "token_accuracy", "bleu", "chrf")


def format_metrics(result: dict) -> str:
    keys = [k for k in METRIC_KEYS if k in result]
    baseline = result.get("baseline") or {}
    rows = [
        ("task", result["task"]),
        ("evaluated on", result["on"]),
        ("checkpoint", result["checkpoint"]),
        ("examples", str(result["n"])),
    ]
    if baseline:
        rows.append(("baseline", baseline["name"]))
    for k in keys:
        value = f"{result[k]:.4f}"
        if k in baseline:
            value += f"   baseline {baseline[k]:.4f}   ({result[k] - baseline[k]:+.4f})"
        rows.append((k, value))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    if "confusion" in result:
        labels = result["labels"]
        cell = max(5, *(len(lb) for lb in labels))
        lines.append("confusion (rows = true, columns = predicted):")
        lines.append(" " * cell + " " + " ".join(lb.rjust(cell) for lb in labels))
        for label, row in zip(labels, result["confusion"], strict=True):
            lines.append(label.rjust(cell) + " " + " ".join(str(c).rjust(cell) for c in row))
    return "\n".join(lines)
