"""Task fine-tuning: a backbone + labelled examples -> a new run that classifies, tags or translates.

The same three steps as chat SFT (``sft.py``), then the ordinary ``train()``:

1. **Backbone** (``backbones.py``): an lmforge run or a Hugging Face folder, with its tokenizer.
2. **Model**: a ``TaskModel`` (``models/heads.py``, model family ``task``) -- the backbone with a
   classification head (classify, sentiment), a token-classification head (NER) or its own LM head
   (translate); fully trained by default, with LoRA adapters (``lora_rank``) or as a frozen-backbone
   probe (``freeze_backbone``). Its starting weights (the pretrained backbone, a fresh head, fresh
   adapters) are written as a temporary checkpoint and passed to ``train(init_from=...)``.
3. **Data** (``task_data.py``, ``encode.py``): examples encoded once, drawn per step as a pure
   function of (seed, step, rank, micro_step), so a task run resumes bit-exactly too. Validation
   measures loss and accuracy (of labels, tags or target tokens) during training; the task metrics
   (accuracy / macro-F1, entity F1, BLEU / chrF) are computed on the validation set at the end.

The run folder is a normal run plus ``task.json`` (task, labels, backbone, pooling, LoRA settings,
tokenizer hash), which ``lmforge eval --task``, ``lmforge predict`` and ``predict.load_task_run`` read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from lmforge import io, runs
from lmforge.config import apply_updates, build_run_config, flatten, parse_override
from lmforge.errors import UserError
from lmforge.finetune import encode as E
from lmforge.finetune.backbones import load_backbone, scratch_dir
from lmforge.finetune.recipes import method_of, recipe, steps_for
from lmforge.finetune.task_data import label_list, read_examples, split_examples, task_kind
from lmforge.finetune.words import word_examples
from lmforge.models.heads import TaskModel
from lmforge.models.lora import base_name
from lmforge.train.loop import TrainData, train
from lmforge.train.resume import run_settings

logger = logging.getLogger(__name__)

# Fine-tuning is short: defaults below the user's key=value overrides, above the backbone run's config;
# the learning rate and length per task and method come from recipes.py on top of these.
TASK_DEFAULTS = {
    "train.max_steps": 200,
    "train.time_budget": 0.0,
    "train.max_tokens": 0,
    "train.batch_tokens": 0,  # batches are right-padded rows, not fixed windows: no accumulation
    "train.batch_size": 16,
    "train.eval_every": 50,
    "train.ckpt_every": 100,
    "train.compile": False,
    "optim.lr": 1e-3,
    "optim.name": "adamw",
    "schedule.warmup_steps": 10,
}
HEAD_OF = {"classify": "sequence", "ner": "token", "translate": "lm"}


def encode_rows(kind: str, examples: list[dict], tok, labels: list[str], seq_len: int, subtoken: str):
    """(ids, target) per example for the sampler and the validation pass."""
    index = {label: i for i, label in enumerate(labels)}
    if kind == "classify":
        return [(E.encode_classify(tok, e["text"], seq_len), index[e["label"]]) for e in examples]
    if kind == "ner":
        return [E.encode_ner(tok, e["tokens"], e["tags"], index, seq_len, subtoken) for e in examples]
    return [E.encode_translate(tok, e["source"], e["target"], seq_len) for e in examples]


@torch.no_grad()
def evaluate_rows(model, rows, pad_id, max_tokens, batch_size, device, autocast) -> dict:
    """Mean loss and accuracy over the learned targets of `rows` (labels, tags or target tokens)."""
    was_training = model.training
    model.eval()
    nats, count, correct, tokens = 0.0, 0, 0, 0
    for start in range(0, len(rows), batch_size):
        x, y = E.collate(rows[start : start + batch_size], pad_id)
        with autocast:
            logits = model(x.to(device)).float().cpu()
        flat = logits.reshape(-1, logits.size(-1))  # (targets or positions, classes)
        y = y.reshape(-1)
        keep = y >= 0
        nats += float(F.cross_entropy(flat[keep], y[keep], reduction="sum"))
        correct += int((flat[keep].argmax(-1) == y[keep]).sum())
        count += int(keep.sum())
        tokens += x.numel()
        if max_tokens and tokens >= max_tokens:
            break
    model.train(was_training)
    loss = nats / max(1, count)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50)),
        "bpb": float("nan"),
        "accuracy": correct / max(1, count),
    }


def task_data(tok, tokenizer_dir: Path, rows, val_rows, fingerprint: str, source: str) -> TrainData:
    def make_sampler(batch_size: int, seq_len: int, seed: int, rank: int, world_size: int = 1):
        return E.TaskSampler(rows, tok.pad_id, batch_size, seed, rank, world_size)

    def evaluate(model, max_tokens, batch_size, device, autocast) -> dict:
        return evaluate_rows(model, val_rows, tok.pad_id, max_tokens, batch_size, device, autocast)

    return TrainData(tok, tokenizer_dir, fingerprint, source, make_sampler, evaluate)


def initial_weights(model: TaskModel, backbone_model: torch.nn.Module, from_scratch: bool) -> None:
    """Copy the pretrained backbone into `model` (under LoRA wrappers where present)."""
    if from_scratch:
        return
    pretrained = backbone_model.state_dict()
    target = model.backbone.state_dict()
    with torch.no_grad():
        for key, param in target.items():
            name = base_name(key, model.lora_modules)
            if name is not None:
                param.copy_(pretrained[name])


def finetune_task(
    backbone_spec: str | Path,
    task: str,
    train_spec: str,
    out_dir: str | Path,
    val_spec: str | None = None,
    max_steps: int | None = None,
    overrides: list[str] = (),
    lora_rank: int = 0,
    lora_alpha: float = 16.0,
    freeze_backbone: bool = False,
    pooling: str | None = None,
    subtoken: str | None = None,
    unit: str = "line",
    seq_len: int | None = None,
    from_scratch: bool = False,
    resume: bool = False,
    progress: bool = True,
    epochs: float | None = None,
    on_eval=None,
):
    """Fine-tune BACKBONE for `task` into OUT_DIR; returns (TrainResult, final validation metrics).

    `pooling`, `subtoken`, `epochs` and the learning rate default to the recipe for the task and
    method (recipes.py); `max_steps` or a `train.max_steps=` override replaces the epochs.
    `on_eval` is train()'s hook after each validation pass (a sweep's pruning)."""
    from lmforge.finetune.predict import evaluate_examples, load_task_run

    kind = task_kind(task)
    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(backbone_spec).resolve():
        raise UserError("--out must be a new run folder, not the backbone")
    if lora_rank and freeze_backbone:
        raise UserError(
            "--lora-rank and --freeze-backbone exclude each other: LoRA already freezes the backbone"
        )
    if epochs is not None and not epochs > 0:
        raise UserError(f"--epochs ({epochs}) must be > 0")
    method = method_of(lora_rank, freeze_backbone)
    rec = recipe(kind, method)
    train_ex = read_examples(train_spec, task)
    if val_spec:
        val_ex = read_examples(val_spec, task)
    else:
        train_ex, val_ex = split_examples(train_ex)
    if unit not in ("line", "word"):
        raise UserError(f"--unit must be line or word, not '{unit}'")
    if unit == "word" and kind != "translate":
        raise UserError("--unit word is for --task translate only; drop --unit")
    labels = label_list(train_ex + val_ex, kind) if kind != "translate" else []
    # word unit: the model learns single words; the final metrics still score whole lines (val_ex)
    fit_ex, fit_val = (
        (word_examples(train_ex), word_examples(val_ex)) if unit == "word" else (train_ex, val_ex)
    )
    if not fit_ex or not fit_val:
        raise UserError("--unit word found no aligned words in the data; use --unit line")
    if kind == "classify" and len(labels) < 2:
        raise UserError(f"the training data has only the label {labels}; classification needs at least two")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir(out_dir) as tmp:
        backbone = load_backbone(backbone_spec, kind == "translate", Path(tmp), seq_len)
        tok = backbone.tokenizer
        resuming = resume and (out_dir / "config.json").is_file()
        # a resumed run keeps its own pooling and sub-token, whatever the recipe says today
        info_path = out_dir / "task.json"
        saved = io.read_json_object(info_path) if resuming and info_path.is_file() else {}
        # a causal model has read the whole text (word) only at its last token; an encoder's [CLS] and
        # first sub-token are what it was pretrained to summarise with
        pooling = pooling or saved.get("pooling") or (rec.pooling if backbone.causal else "first")
        subtoken = subtoken or saved.get("subtoken") or (rec.subtoken if backbone.causal else "first")
        model_tree = {
            "family": "task",
            "vocab_size": tok.vocab_size,
            "seq_len": backbone.seq_len,
            "task": task,
            "head": HEAD_OF[kind],
            "n_labels": len(labels),
            "pooling": pooling,
            "pad_id": tok.pad_id,
            "freeze_backbone": freeze_backbone,
            "lora_rank": lora_rank,
            "lora_alpha": float(lora_alpha),
            "backbone": backbone.spec,
        }
        tree: dict = {}
        apply_updates(tree, flatten(backbone.base_tree))
        apply_updates(tree, {**TASK_DEFAULTS, "data.path": str(train_spec), "data.weights": {}})
        apply_updates(tree, {"optim.lr": rec.lr})
        if resuming:  # continue the run as it was configured
            apply_updates(tree, run_settings(out_dir))
        apply_updates(tree, {f"model.{k}": v for k, v in model_tree.items()})
        updates = dict(parse_override(o) for o in overrides)
        if max_steps is not None:
            updates["train.max_steps"] = max_steps
        if epochs is not None and "train.max_steps" in updates:
            raise UserError("--epochs and --max-steps (train.max_steps) both set the length; give one")
        apply_updates(tree, updates)
        passes = epochs if epochs is not None else None if resuming else rec.epochs
        if passes is not None and "train.max_steps" not in updates:
            batch = int(tree["train"]["batch_size"])
            floor = rec.min_steps if epochs is None else 1  # an explicit --epochs is taken as given
            apply_updates(tree, {"train.max_steps": steps_for(passes, len(fit_ex), batch, floor)})
        config = build_run_config(tree)
        if config.train.batch_tokens:
            raise UserError("train.batch_tokens must stay 0 for task fine-tuning (rows are padded per batch)")

        rows = encode_rows(kind, fit_ex, tok, labels, config.model.seq_len, subtoken)
        val_rows = encode_rows(kind, fit_val, tok, labels, config.model.seq_len, subtoken)
        digest = hashlib.sha256(json.dumps([train_ex, val_ex, labels]).encode()).hexdigest()
        data = task_data(tok, backbone.tokenizer_dir, rows, val_rows, digest, f"{task} examples {train_spec}")

        torch.manual_seed(config.train.seed)
        model = TaskModel(config.model)
        model.init_weights()
        initial_weights(model, backbone.model, from_scratch)
        trainable = model.num_trainable()
        how = f"LoRA r={lora_rank}" if lora_rank else method
        steps = config.train.max_steps
        seen = steps * config.train.batch_size / len(fit_ex)
        logger.info(
            f"{task}: {len(train_ex)} train / {len(val_ex)} val examples"
            + (f", {len(labels)} labels" if labels else "")
            + (f" ({len(fit_ex)} / {len(fit_val)} aligned words)" if unit == "word" else "")
            + f"; backbone {backbone.kind} {backbone.source}; {trainable:,} of {model.num_params():,} "
            f"parameters trained ({how}); {steps} steps, {seen:.1f} epochs at lr {config.optim.lr:g}"
        )
        init = Path(tmp) / "init"
        init.mkdir()
        from safetensors.torch import save_model

        save_model(model, str(init / "model.safetensors"))
        del model
        info = {
            "task": task,
            "kind": kind,
            "labels": labels,
            "pooling": pooling,
            "subtoken": subtoken,
            "unit": unit,
            "backbone": {"kind": backbone.kind, "source": backbone.source, **backbone.info},
            "from_scratch": from_scratch,
            "lora": {"rank": lora_rank, "alpha": float(lora_alpha)},
            "freeze_backbone": freeze_backbone,
            "method": method,
            "epochs": passes if passes is not None and "train.max_steps" not in updates else None,
            "tokenizer_hash": tok.hash,
            "train": str(train_spec),
            "val": str(val_spec) if val_spec else "hash split of --train (1 in 10)",
            "examples": {"train": len(train_ex), "val": len(val_ex)},
            "trainable_params": trainable,
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        if not resume or not (out_dir / "task.json").is_file():
            runs.write_json_atomic(out_dir / "task.json", info)
        result = train(
            config, data, out_dir, resume=resume, progress=progress, init_from=init, on_eval=on_eval
        )

    metrics = evaluate_examples(load_task_run(out_dir), val_ex)
    scalar = {f"val/{k}": v for k, v in metrics.items() if isinstance(v, int | float) and k != "n"}
    base = metrics.get("baseline", {})
    scalar |= {f"baseline/{k}": v for k, v in base.items() if isinstance(v, int | float)}
    runs.append_metrics(
        out_dir, {"step": result.steps, "event": "task_eval", "baseline": base.get("name"), **scalar}
    )
    logger.info(
        f"{task}: "
        + ", ".join(
            f"{k[4:]} {v:.4f}" + (f" (baseline {base[k[4:]]:.4f})" if k[4:] in base else "")
            for k, v in scalar.items()
            if k.startswith("val/")
        )
    )
    return result, metrics
