"""Backbones for task fine-tuning: an lmforge run folder or a Hugging Face model folder on disk.

Both arrive as a `Backbone`: the pretrained network, a tokenizer behind one small interface
(`TaskTokenizer`: encode without specials, `wrap` with the model's own specials, decode, pad and end
ids, a hash), the description a `TaskModel` rebuilds it from (``model.backbone`` in config.json) and
the folder of tokenizer files the run keeps. An lmforge run brings its own tokenizer (every text
starts with `<|endoftext|>`, as in pretraining); a Hugging Face folder brings its `AutoTokenizer`
(BERT's [CLS] ... [SEP], Llama's <s>, GPT-2's nothing). A tokenizer that does not fit its model -- ids
past the embedding, or a run whose tokenizer changed since training -- is refused in one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from lmforge import runs
from lmforge.data.files import remove_stale_temps
from lmforge.errors import UserError


class TaskTokenizer:
    """What the task code needs from a tokenizer, for lmforge's and Hugging Face's alike."""

    vocab_size: int
    hash: str
    pad_id: int
    eos_id: int  # ends a generated target; also the separator between source and target
    prefix: list[int]  # specials before a text (a run's eot, [CLS], <s>)
    suffix: list[int]  # specials after it ([SEP])

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def wrap(self, ids: list[int]) -> list[int]:
        return [*self.prefix, *ids, *self.suffix]


class LmforgeTokenizer(TaskTokenizer):
    def __init__(self, tok) -> None:
        self.tok = tok
        self.vocab_size, self.hash = tok.vocab_size, tok.hash
        self.pad_id = self.eos_id = tok.eot_id
        self.prefix, self.suffix = [tok.eot_id], []

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


class HFTokenizer(TaskTokenizer):
    def __init__(self, tok) -> None:
        self.tok = tok
        self.vocab_size = len(tok)
        backend = getattr(tok, "backend_tokenizer", None)
        content = backend.to_str() if backend is not None else json.dumps(tok.get_vocab(), sort_keys=True)
        self.hash = hashlib.sha256(("hf\0" + content).encode()).hexdigest()
        eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        if eos is None:
            raise UserError("the Hugging Face tokenizer has neither an eos nor a sep token")
        self.eos_id = int(eos)
        self.pad_id = int(tok.pad_token_id) if tok.pad_token_id is not None else self.eos_id
        # the model's own specials around a text: encode one with and without them and compare
        inner = tok.encode("a", add_special_tokens=False)
        full = tok.encode("a", add_special_tokens=True)
        cut = next((i for i in range(len(full)) if full[i : i + len(inner)] == inner), 0)
        self.prefix, self.suffix = list(full[:cut]), list(full[cut + len(inner) :])

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)


def load_hf_tokenizer(folder: Path) -> HFTokenizer:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UserError("a Hugging Face backbone needs transformers; pip install 'lmforge[hf]'") from None
    try:
        return HFTokenizer(AutoTokenizer.from_pretrained(str(folder)))
    except (OSError, ValueError, TypeError) as exc:
        why = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(
            f"no usable tokenizer in '{folder}' ({why}); the folder needs its tokenizer files"
        ) from None


def load_task_tokenizer(folder: Path, kind: str) -> TaskTokenizer:
    if kind == "hf":
        return load_hf_tokenizer(folder)
    from lmforge.data.tokenizer import load_tokenizer

    return LmforgeTokenizer(load_tokenizer(folder))


@dataclass
class Backbone:
    kind: str  # "lmforge" | "hf"
    spec: dict  # model.backbone of the task config
    model: nn.Module  # the pretrained network (GPT / GRU, or HFBackbone with its weights)
    tokenizer: TaskTokenizer
    tokenizer_dir: Path  # tokenizer files the run folder keeps
    seq_len: int
    causal: bool
    source: str
    base_tree: dict = field(default_factory=dict)  # an lmforge run's optim/schedule/train settings
    info: dict[str, Any] = field(default_factory=dict)


def is_hf_folder(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return "model_type" in json.loads(config.read_text(encoding="utf-8"))
    except ValueError:
        return False


def load_backbone(spec: str | Path, lm: bool, tmp: Path, seq_len: int | None = None) -> Backbone:
    """The backbone at `spec` (lmforge run or HF folder); `lm` keeps a causal model's LM head."""
    path = Path(spec)
    if not path.is_dir():
        raise UserError(
            f"backbone '{path}' does not exist; pass an lmforge run folder or a Hugging Face folder"
        )
    return _load_hf(path, lm, tmp, seq_len) if is_hf_folder(path) else _load_lmforge(path, seq_len)


def _load_lmforge(path: Path, seq_len: int | None) -> Backbone:
    base = runs.load_run(path)
    info_hash = base.info.get("tokenizer_hash")
    if info_hash and info_hash != base.tokenizer.hash:
        raise UserError(
            f"the tokenizer in '{path / 'tokenizer'}' is not the one the run was trained with "
            "(its hash differs from run.json); restore the run's own tokenizer"
        )
    cfg = base.config.model
    if base.tokenizer.vocab_size != cfg.vocab_size:
        raise UserError(
            f"tokenizer/backbone mismatch: the tokenizer has {base.tokenizer.vocab_size} ids, the model "
            f"{cfg.vocab_size}"
        )
    tree = base.config.to_dict()
    return Backbone(
        kind="lmforge",
        spec={"kind": "lmforge", "model": tree["model"]},
        model=base.model,
        tokenizer=LmforgeTokenizer(base.tokenizer),
        tokenizer_dir=path / "tokenizer",
        seq_len=min(seq_len or cfg.seq_len, cfg.seq_len) if cfg.family == "gpt" else seq_len or cfg.seq_len,
        causal=True,
        source=str(path.resolve()),
        base_tree={k: v for k, v in tree.items() if k in ("optim", "schedule", "train")},
        info={"checkpoint": base.checkpoint.name},
    )


def _load_hf(path: Path, lm: bool, tmp: Path, seq_len: int | None) -> Backbone:
    import torch

    from lmforge.models.hf_backbone import ENCODER_TYPES, HFBackbone, auto_classes

    _, AutoModel, AutoModelForCausalLM = auto_classes()
    tokenizer = load_hf_tokenizer(path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    encoder = config["model_type"] in ENCODER_TYPES
    if lm and encoder:
        raise UserError(f"'{path}' is an encoder ({config['model_type']}); translation needs a causal model")
    try:
        pretrained = (AutoModelForCausalLM if lm else AutoModel).from_pretrained(
            str(path), dtype=torch.float32
        )
    except (OSError, ValueError) as exc:
        why = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(f"could not load the Hugging Face model in '{path}' ({why})") from None
    hf_config = pretrained.config.to_dict()
    rows = pretrained.get_input_embeddings().num_embeddings
    if tokenizer.vocab_size > rows:
        raise UserError(
            f"tokenizer/backbone mismatch in '{path}': the tokenizer has {tokenizer.vocab_size} ids but "
            f"the model's embedding only {rows} rows; use the tokenizer the model was trained with"
        )
    model = HFBackbone(hf_config, encoder, lm, tokenizer.pad_id)
    model.net.load_state_dict(pretrained.state_dict())
    limit = int(getattr(pretrained.config, "max_position_embeddings", 0) or 0) or 1 << 20
    tok_dir = Path(tmp) / "tokenizer"
    tokenizer.tok.save_pretrained(str(tok_dir))
    return Backbone(
        kind="hf",
        spec={"kind": "hf", "config": hf_config, "encoder": encoder},
        model=model,
        tokenizer=tokenizer,
        tokenizer_dir=tok_dir,
        seq_len=min(seq_len or 256, limit),
        causal=not encoder,
        source=str(path.resolve()),
        info={"model_type": config["model_type"]},
    )


def scratch_dir(out_dir: Path):
    """A temporary folder beside `out_dir` (same filesystem), removed afterwards.

    Named like atomic_dir's (`.OUT.tmp-PID-XXXX`), so that one a killed fine-tune left behind (kill -9
    runs no cleanup) is removed by the next start on the same --out -- and only once its PID is gone."""
    out_dir = Path(out_dir)
    parent = out_dir.parent if out_dir.parent.is_dir() else None
    if parent is not None:
        remove_stale_temps(out_dir)
    return tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=parent)
