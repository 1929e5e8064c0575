"""The GRU language model: Embedding -> GRU (n_layer) -> Linear, the classic recurrent baseline.

It shares the GPT's interface (forward with targets or a cache, num_params, flops_per_token) so the
same loop trains, evaluates and samples both and the families compare on the same data. Its
generation state is the hidden state (``GRUState``): each new token costs one recurrent step and
history is never recomputed, so it has no context limit at generation time; ``seq_len`` is only the
training window. The vocabulary is padded to a multiple of 64 as in the GPT, logits sliced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import UserError
from lmforge.models.cache import GRUState
from lmforge.models.layers import param_groups


@dataclass
class GRUConfig:
    family: str = "gru"  # registry key; always "gru"
    vocab_size: int = 0  # tokens in the tokenizer, specials included; 0 = not yet known (filled from it)
    seq_len: int = 128  # tokens per training window (truncated back-propagation length)
    n_layer: int = 2  # stacked GRU layers
    n_embd: int = 128  # token-embedding channels (GRU input size)
    hidden: int = 256  # GRU hidden-state channels
    dropout: float = 0.0  # probability, on embeddings, between GRU layers and before the head
    tie: bool = False  # share the embedding matrix with the head (needs hidden == n_embd)

    def __post_init__(self) -> None:
        if self.family != "gru":
            raise UserError(f"model.family ({self.family!r}) must be 'gru' for GRUConfig")
        if self.vocab_size < 0:
            raise UserError(f"model.vocab_size ({self.vocab_size}) must be positive (or 0 = from tokenizer)")
        for name in ("seq_len", "n_layer", "n_embd", "hidden"):
            if getattr(self, name) < 1:
                raise UserError(f"model.{name} ({getattr(self, name)}) must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model.dropout ({self.dropout}) must be in [0, 1)")
        if self.tie and self.hidden != self.n_embd:
            raise UserError(f"model.tie needs model.hidden ({self.hidden}) == model.n_embd ({self.n_embd})")

    @property
    def padded_vocab_size(self) -> int:
        return 64 * math.ceil(self.vocab_size / 64)


class GRULM(nn.Module):
    def __init__(self, config: GRUConfig) -> None:
        super().__init__()
        if config.vocab_size < 1:
            raise UserError("model.vocab_size is not set; it must come from the tokenizer")
        self.config = cfg = config
        self.wte = nn.Embedding(cfg.padded_vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        inter = cfg.dropout if cfg.n_layer > 1 else 0.0  # nn.GRU warns about dropout with one layer
        self.gru = nn.GRU(cfg.n_embd, cfg.hidden, cfg.n_layer, batch_first=True, dropout=inter)
        self.lm_head = None if cfg.tie else nn.Linear(cfg.hidden, cfg.padded_vocab_size, bias=False)

    @property
    def max_context(self) -> int | None:
        return None  # the hidden state carries any history

    @torch.no_grad()
    def init_weights(self) -> None:
        """Embedding ~ N(0, 1) (the GRU's inputs then have unit scale, like its hidden state);
        GRU weights U(-1/sqrt(hidden), 1/sqrt(hidden)) and zero biases (PyTorch's and Cho et al.'s
        choice, which keeps gates near 0.5 at start); head ~ N(0, 0.02²) so the loss at init is
        ≈ ln(vocab). With a tied head the embedding must stay small too, so it uses 0.02."""
        cfg = self.config
        self.wte.weight.normal_(0.0, 0.02 if cfg.tie else 1.0)
        bound = 1.0 / math.sqrt(cfg.hidden)
        for name, p in self.gru.named_parameters():
            if name.startswith("bias"):
                p.zero_()
            else:
                p.uniform_(-bound, bound)
        if self.lm_head is not None:
            self.lm_head.weight.normal_(0.0, 0.02)
            self.lm_head.weight[cfg.vocab_size :].zero_()
        self.wte.weight[cfg.vocab_size :].zero_()

    def new_cache(self, batch_size: int, max_len: int | None = None, device=None, dtype=torch.float32):
        """The hidden state, zeros; ``max_len`` is accepted for the common interface and ignored."""
        return GRUState(self.config.n_layer, batch_size, self.config.hidden, device=device, dtype=dtype)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: GRUState | None = None):
        cfg = self.config
        B, T = idx.shape
        out = self.hidden_states(idx, cache)  # (B, T, hidden)
        head = self.wte.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(self.drop(out), head[: cfg.vocab_size])  # (B, T, vocab_size)
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(B * T, -1), targets.reshape(B * T), ignore_index=-1)

    def hidden_states(self, idx: torch.Tensor, cache: GRUState | None = None) -> torch.Tensor:
        """The last GRU layer's output (B, T, hidden) that the head reads; fine-tuning heads read it too."""
        x = self.drop(self.wte(idx))  # (B, T, n_embd)
        if cache is None:
            out, _ = self.gru(x)  # (B, T, hidden)
        else:
            out, h = self.gru(x, cache.h.to(x.dtype))  # h: (n_layer, B, hidden)
            cache.h = h
            cache.pos += idx.shape[1]
        return out

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameters (padding rows included); ``exclude_embeddings`` drops the embedding table."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() if exclude_embeddings else n

    def flops_per_token(self) -> int:
        """Training FLOPs per token ≈ 6 per weight that multiplies each token: the GRU's input and
        recurrent matrices (3 gates each, one multiply-add per weight per step, so 2 FLOPs forward and
        about twice that backward) and the head's ``vocab_size`` rows. Biases and the elementwise gate
        arithmetic (~ a dozen FLOPs per hidden unit) are left out; they are < 1% at our sizes."""
        cfg = self.config
        matrices = sum(p.numel() for name, p in self.gru.named_parameters() if name.startswith("weight"))
        return 6 * (matrices + cfg.vocab_size * cfg.hidden)

    def param_table(self) -> list[tuple[str, tuple[int, ...], int]]:
        """(name, shape, count) per tensor; sums to num_params()."""
        return param_groups(self)
