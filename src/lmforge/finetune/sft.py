"""Supervised fine-tuning for chat: a pretrained run + conversations -> a new run that can chat.

Three steps, then the ordinary training loop:

1. **Tokenizer**: the base tokenizer with the chat specials (`<|system|>`, `<|user|>`, `<|assistant|>`,
   `<|end|>`) appended after its vocabulary, so every base id keeps its meaning.
2. **Model**: the base weights in a model whose embedding and head have grown by those rows. A new row
   starts at the *mean* of the existing rows (Hewitt 2021, "Initializing new word embeddings"): the
   new tokens start as an "average" token instead of random noise that would dominate early logits.
   The grown weights are saved as a temporary checkpoint and passed to `train(init_from=...)`.
3. **Data**: each conversation becomes ids + a mask of what the model learns (`data/chat_template.py`:
   only the assistant's tokens and their `<|end|>`). Whole conversations are packed greedily into rows
   of seq_len + 1 tokens (one conversation per row start; a row that cannot fit the next one is padded);
   targets that are not learned, and padding, are -1, which the loss ignores. Packed neighbours can see
   each other, as documents do in pretraining; every conversation begins with `<|endoftext|>`.

Rows per step are drawn as a pure function of (seed, step, rank, micro_step), as in pretraining, so a
fine-tuning run resumes bit-exactly too. The run folder is a normal run (config.json with the grown
vocabulary, checkpoints, metrics) plus `finetune.json` saying where it came from.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lmforge import runs
from lmforge.config import apply_updates, build_run_config, flatten, parse_override
from lmforge.data.chat_template import CHAT_SPECIALS, SpecialTokenTemplate
from lmforge.data.tokenizer import add_special_tokens
from lmforge.errors import UserError
from lmforge.eval.metrics import bits_per_byte, perplexity
from lmforge.finetune.backbones import scratch_dir
from lmforge.finetune.chat_data import read_conversations
from lmforge.models.registry import MODELS
from lmforge.train.loop import TrainData, train
from lmforge.train.resume import run_settings

logger = logging.getLogger(__name__)

# Fine-tuning is short: defaults below the user's key=value overrides, above the base run's config.
SFT_DEFAULTS = {
    "train.max_steps": 200,
    "train.time_budget": 0.0,
    "train.max_tokens": 0,
    "train.eval_every": 50,
    "train.ckpt_every": 100,
    "schedule.warmup_steps": 10,
}


def conversation_targets(ids: list[int], trained: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) for one token sequence: y[t] = ids[t + 1] where that token is learned, else -1."""
    ids_a = np.asarray(ids, dtype=np.int64)
    learn = np.asarray(trained[1:], dtype=bool)
    return ids_a[:-1], np.where(learn, ids_a[1:], -1)


def pack(
    examples: list[tuple[list[int], list[bool]]], seq_len: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Greedy packing of whole conversations into rows of seq_len + 1 tokens.

    Returns x (rows, seq_len), y (rows, seq_len) with -1 for ignored targets, and how many
    conversations were cut to fit one row.
    """
    window, rows, cut = seq_len + 1, [], 0
    ids_row: list[int] = []
    mask_row: list[bool] = []

    def close() -> None:
        pad = window - len(ids_row)
        rows.append((ids_row + [pad_id] * pad, mask_row + [False] * pad))

    for ids, trained in examples:
        if len(ids) > window:
            ids, trained, cut = ids[:window], trained[:window], cut + 1
        if ids_row and len(ids_row) + len(ids) > window:
            close()
            ids_row, mask_row = [], []
        ids_row, mask_row = ids_row + ids, mask_row + trained
    if ids_row:
        close()
    pairs = [conversation_targets(i, m) for i, m in rows]
    x = np.stack([p[0] for p in pairs])  # (rows, seq_len)
    y = np.stack([p[1] for p in pairs])  # (rows, seq_len)
    return x, y, cut


class RowSampler:
    """`batch(step, micro_step)` -> (x, y): rows drawn with replacement, a pure function of
    (seed, step, rank, micro_step)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, rank: int = 0):
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.batch_size, self.seed, self.rank = batch_size, seed, rank

    def batch(self, step: int, micro_step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.Generator(np.random.PCG64([self.seed, step, self.rank, micro_step]))
        idx = torch.from_numpy(rng.integers(0, len(self.x), size=self.batch_size))
        return self.x[idx], self.y[idx]  # (batch_size, seq_len) each


@torch.no_grad()
def evaluate_rows(model, x, y, token_bytes, max_tokens, batch_size, device, autocast) -> dict:
    """Loss / perplexity / bpb over the learned (assistant) targets of packed rows."""
    was_training = model.training
    model.eval()
    byte_table = torch.from_numpy(np.asarray(token_bytes, dtype=np.int64))
    nats_sum, text_nats, n_tokens, n_bytes, correct = 0.0, 0.0, 0, 0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = (
            torch.from_numpy(x[start : start + batch_size]),
            torch.from_numpy(y[start : start + batch_size]),
        )
        with autocast:
            logits = model(xb.to(device)).float()  # (n, T, vocab)
        flat_y = yb.reshape(-1)
        keep = flat_y >= 0
        kept_logits = logits.reshape(-1, logits.size(-1)).cpu()[keep]  # (targets, vocab)
        targets = flat_y[keep]
        nats = F.cross_entropy(kept_logits, targets, reduction="none").double()
        target_bytes = byte_table[targets]
        nats_sum += float(nats.sum())
        text_nats += float(nats[target_bytes > 0].sum())
        correct += int((kept_logits.argmax(-1) == targets).sum())
        n_tokens += int(keep.sum())
        n_bytes += int(target_bytes.sum())
        if max_tokens and n_tokens >= max_tokens:
            break
    model.train(was_training)
    loss = nats_sum / max(1, n_tokens)
    bpb = bits_per_byte(text_nats, n_bytes) if n_bytes else float("nan")
    return {"loss": loss, "perplexity": perplexity(loss), "bpb": bpb, "accuracy": correct / max(1, n_tokens)}


def chat_data(tokenizer, tokenizer_dir: Path, train_convs, val_convs, seq_len: int, seed: int) -> TrainData:
    """Conversations as TrainData for `train()`: packed rows, masked targets, val on assistant tokens."""
    template = SpecialTokenTemplate(tokenizer)
    order = np.random.Generator(np.random.PCG64(seed)).permutation(len(train_convs))
    train_x, train_y, cut = pack(
        [template.conversation(train_convs[i]) for i in order], seq_len, tokenizer.eot_id
    )
    val_x, val_y, _ = pack([template.conversation(c) for c in val_convs], seq_len, tokenizer.eot_id)
    if cut:
        logger.info(f"note: {cut} conversation(s) longer than the context ({seq_len + 1} tokens) were cut")
    if not (train_y >= 0).any():
        raise UserError("no assistant tokens to learn from after packing; check the conversations")
    logger.info(
        f"sft: {len(train_convs)} train / {len(val_convs)} val conversations -> {len(train_x)} rows "
        f"of {seq_len} tokens, {int((train_y >= 0).sum()):,} learned targets"
    )
    digest = hashlib.sha256(json.dumps([train_convs, val_convs]).encode()).hexdigest()

    def make_sampler(batch_size: int, seq_len_: int, seed_: int, rank: int, world_size: int = 1):
        return RowSampler(train_x, train_y, batch_size, seed_, rank)

    def evaluate(model, max_tokens, batch_size, device, autocast) -> dict:
        return evaluate_rows(
            model, val_x, val_y, tokenizer.token_bytes, max_tokens, batch_size, device, autocast
        )

    return TrainData(tokenizer, tokenizer_dir, digest, "sft conversations", make_sampler, evaluate)


def grow_vocab(model: torch.nn.Module, new_config) -> torch.nn.Module:
    """A copy of `model` for `new_config` (a larger vocab_size): old rows copied, new embedding and
    head rows set to the mean of the old ones, vocabulary padding rows zero."""
    old_v, new_v = model.config.vocab_size, new_config.vocab_size
    grown = MODELS[new_config.family][1](new_config)
    grown.init_weights()
    old_state = model.state_dict()
    with torch.no_grad():
        for name, param in grown.state_dict().items():
            old = old_state[name]
            if name in ("wte.weight", "lm_head.weight"):  # (padded_vocab, width)
                param.zero_()
                param[:old_v] = old[:old_v]
                param[old_v:new_v] = old[:old_v].mean(dim=0)
            else:
                param.copy_(old)
    return grown


def finetune_sft(
    base_run: str | Path,
    train_spec: str,
    out_dir: str | Path,
    val_spec: str | None = None,
    max_steps: int | None = None,
    overrides: list[str] = (),
    resume: bool = False,
    progress: bool = True,
):
    """Fine-tune BASE_RUN on conversations into OUT_DIR (a new run); returns the TrainResult."""
    base = runs.load_run(base_run)
    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(base_run).resolve():
        raise UserError("--out must be a new run folder, not the base run")
    train_convs = read_conversations(train_spec)
    if val_spec:
        val_convs = read_conversations(val_spec)
    elif len(train_convs) >= 20:  # hold out every 20th conversation
        val_convs = train_convs[19::20]
        train_convs = [c for i, c in enumerate(train_convs) if i % 20 != 19]
    else:
        logger.info("note: fewer than 20 conversations and no --val: validating on the training set")
        val_convs = train_convs

    tree: dict = {}
    apply_updates(tree, flatten(base.config.to_dict()))
    apply_updates(tree, {**SFT_DEFAULTS, "data.path": str(train_spec), "data.weights": {}})
    if resume and (out_dir / "config.json").is_file():  # continue the run as it was configured
        apply_updates(tree, run_settings(out_dir))
    updates = dict(parse_override(o) for o in overrides)
    if max_steps is not None:
        updates["train.max_steps"] = max_steps
    apply_updates(tree, updates)
    tree["model"].pop("vocab_size", None)

    with scratch_dir(out_dir) as tmp:  # a killed run's is removed at the next start
        tokenizer = add_special_tokens(base.tokenizer, CHAT_SPECIALS, Path(tmp) / "tokenizer")
        config = build_run_config(tree, tokenizer.vocab_size)
        init = Path(tmp) / "init"
        init.mkdir()
        from safetensors.torch import save_model

        save_model(grow_vocab(base.model, config.model), str(init / "model.safetensors"))
        data = chat_data(
            tokenizer,
            Path(tmp) / "tokenizer",
            train_convs,
            val_convs,
            config.model.seq_len,
            config.train.seed,
        )
        result = train(config, data, out_dir, resume=resume, progress=progress, init_from=init)
    runs.write_json_atomic(
        out_dir / "finetune.json",
        {
            "task": "sft",
            "base_run": str(Path(base_run).resolve()),
            "base_checkpoint": base.checkpoint.name,
            "train": str(train_spec),
            "val": str(val_spec) if val_spec else None,
            "conversations": {"train": len(train_convs), "val": len(val_convs)},
            "added_tokens": {n: tokenizer.special_tokens[n] for n in CHAT_SPECIALS},
            "base_vocab_size": base.config.model.vocab_size,
        },
    )
    return result
