"""Task models: a backbone (an lmforge GPT / GRU, or a Hugging Face network) with a task head.

One module behind the common interface (``TaskModel(config)``, ``init_weights()``,
``forward(idx, targets=None)``), registered as model family ``"task"``, so the ordinary training loop,
checkpoints and ``load_run`` handle fine-tuning runs unchanged:

- ``head="sequence"``: a linear classifier on one pooled hidden state per text. Causal models pool
  the *last* real token -- the only position that has read the whole text; encoders pool the first
  token ([CLS]), which attends to everything; ``"mean"`` averages the real tokens. ``targets`` is
  (B,) label ids.
- ``head="token"``: a linear classifier on every position (NER); ``targets`` is (B, T) tag ids with
  -1 where no label is learned (padding, specials, a word's other sub-tokens).
- ``head="lm"``: the backbone's own language-model head (translation as prompted generation);
  ``targets`` is (B, T) next tokens with -1 outside the target text.

Batches are right-padded with ``pad_id``; "real" tokens are those that are not ``pad_id`` (the first
position always counts, so a sequence starting with a pad-valued bos still pools something). The
backbone is described by ``backbone`` (a dict kept verbatim in config.json): ``{"kind": "lmforge",
"model": {GPTConfig / GRUConfig fields}}`` or ``{"kind": "hf", "config": {HF config.json},
"encoder": bool}``. ``lora_rank > 0`` adapts its matrices with LoRA (``models/lora.py``) and freezes
the rest; ``freeze_backbone`` trains the head alone (a linear probe).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import UserError
from lmforge.models.families import LM_FAMILIES, config_from_table
from lmforge.models.lora import add_lora, merge_lora

HEADS = ("sequence", "token", "lm")
POOLINGS = ("last", "mean", "first")


@dataclass
class TaskConfig:
    family: str = "task"  # registry key; always "task"
    vocab_size: int = 0  # tokens in the tokenizer (the backbone's embedding may have more rows)
    seq_len: int = 128  # tokens: longest input the model reads (the backbone's context)
    task: str = "classify"  # classify | sentiment | ner | translate (what the run was fine-tuned for)
    head: str = "sequence"  # sequence | token | lm
    n_labels: int = 0  # classes of a sequence / token head; 0 for lm
    pooling: str = "last"  # sequence head: last (causal) | first ([CLS], encoders) | mean
    pad_id: int = 0  # token id that pads batches on the right
    freeze_backbone: bool = False  # train the head only (probing)
    lora_rank: int = 0  # LoRA rank r on the backbone's matrices; 0 = full fine-tuning
    lora_alpha: float = 16.0  # LoRA scale numerator: the update is (alpha / r) * B A
    backbone: dict[str, Any] = field(default_factory=dict)  # what to build (see the module docstring)

    def __post_init__(self) -> None:
        if self.family != "task":
            raise UserError(f"model.family ({self.family!r}) must be 'task' for TaskConfig")
        if self.head not in HEADS:
            raise UserError(f"model.head ({self.head!r}) must be one of {', '.join(HEADS)}")
        if self.pooling not in POOLINGS:
            raise UserError(f"model.pooling ({self.pooling!r}) must be one of {', '.join(POOLINGS)}")
        if self.head != "lm" and self.n_labels < 2:
            raise UserError(f"a {self.task} head needs at least 2 labels, the data gives {self.n_labels}")
        if self.lora_rank < 0 or self.lora_alpha <= 0:
            raise UserError("model.lora_rank must be >= 0 and model.lora_alpha > 0")
        if self.backbone.get("kind") not in ("lmforge", "hf"):
            raise UserError("model.backbone.kind must be 'lmforge' or 'hf'")


def build_backbone(cfg: TaskConfig) -> nn.Module:
    spec = cfg.backbone
    if spec["kind"] == "hf":
        from lmforge.models.hf_backbone import HFBackbone

        return HFBackbone(spec["config"], bool(spec.get("encoder")), cfg.head == "lm", cfg.pad_id)
    model_cfg = config_from_table(spec["model"], LM_FAMILIES)  # a backbone is a language model
    return LM_FAMILIES[model_cfg.family][1](model_cfg)


def backbone_width(backbone: nn.Module) -> int:
    if hasattr(backbone, "width"):
        return backbone.width
    cfg = backbone.config
    return cfg.hidden if cfg.family == "gru" else cfg.n_embd


def pool(hidden: torch.Tensor, idx: torch.Tensor, pad_id: int, mode: str) -> torch.Tensor:
    """One vector per sequence: hidden (B, T, C), idx (B, T) -> (B, C)."""
    if mode == "first":
        return hidden[:, 0]
    real = idx != pad_id  # (B, T)
    real[:, 0] = True
    if mode == "mean":
        weights = real.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
        return (hidden * weights).sum(1) / weights.sum(1)
    positions = torch.arange(idx.size(1), device=idx.device).expand_as(idx)  # (B, T)
    last = torch.where(real, positions, 0).amax(dim=1)  # (B,) index of the last real token
    return hidden[torch.arange(idx.size(0), device=idx.device), last]


class TaskModel(nn.Module):
    def __init__(self, config: TaskConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.backbone = build_backbone(cfg)
        self.head = None if cfg.head == "lm" else nn.Linear(backbone_width(self.backbone), cfg.n_labels)
        self.lora_modules: list[str] = []
        if cfg.lora_rank:
            exclude = ("lm_head", "wte", "pooler")
            self.lora_modules = add_lora(self.backbone, cfg.lora_rank, cfg.lora_alpha, exclude)
        elif cfg.freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)

    @property
    def max_context(self) -> int:
        return self.config.seq_len

    @torch.no_grad()
    def init_weights(self) -> None:
        self.backbone.init_weights()
        if self.head is not None:
            self.head.weight.normal_(0.0, 0.02)
            self.head.bias.zero_()
        for name in self.lora_modules:
            self.backbone.get_submodule(name).reset_lora()

    def merge_lora(self) -> None:
        """Fold the adapters into the backbone (inference); the state dict then has plain names."""
        merge_lora(self.backbone)
        self.lora_modules = []

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, n_labels) for a sequence head, (B, T, n_labels) for a token head, (B, T, vocab) for lm."""
        cfg = self.config
        if cfg.head == "lm":
            return self.backbone(idx)[..., : cfg.vocab_size]
        hidden = self.backbone.hidden_states(idx)  # (B, T, C)
        if cfg.head == "sequence":
            hidden = pool(hidden, idx, cfg.pad_id, cfg.pooling)  # (B, C)
        return self.head(hidden)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        if idx.size(1) > self.config.seq_len:
            raise UserError(f"input of {idx.size(1)} tokens exceeds the context of {self.config.seq_len}")
        logits = self.logits(idx)
        if targets is None:
            return logits
        return F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
        )

    def num_params(self, exclude_embeddings: bool = False) -> int:
        return sum(p.numel() for p in self.parameters())

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def flops_per_token(self) -> int:
        head = 0 if self.head is None else 6 * self.head.weight.numel()
        return self.backbone.flops_per_token() + head

    def param_table(self) -> list[tuple[str, tuple[int, ...], int]]:
        return [(n, tuple(p.shape), p.numel()) for n, p in self.named_parameters()]
