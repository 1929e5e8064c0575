"""The GPT's typed configuration: every knob of the model, checked when it is made (see gpt.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lmforge.errors import UserError
from lmforge.models.layers import MLP_KINDS

STYLES = ("modern", "gpt2")
ATTN_IMPLS = ("auto", "sdpa", "math")


@dataclass
class GPTConfig:
    family: str = "gpt"  # registry key; always "gpt"
    vocab_size: int = 0  # tokens in the tokenizer, specials included; 0 = not yet known (filled from it)
    seq_len: int = 128  # tokens: the longest context the model sees (RoPE / position table size)
    n_layer: int = 4  # Transformer blocks
    n_head: int = 4  # query heads per attention layer
    n_kv_head: int = 0  # key/value heads (grouped-query attention); 0 = n_head (plain multi-head)
    n_embd: int = 128  # width of the residual stream (channels)
    mlp: str = "swiglu"  # "swiglu" | "relu2" | "gelu" (tanh approximation) | "relu"
    mlp_hidden: int = 0  # MLP hidden channels; 0 = auto: 4*n_embd, or 8/3*n_embd rounded up to 64 (swiglu)
    style: str = "modern"  # "modern" (RMSNorm, RoPE, no biases) | "gpt2" (LayerNorm, learned positions)
    tie_embeddings: bool = False  # share the token-embedding matrix with the output head
    qk_norm: bool = False  # RMSNorm over head_dim on queries and keys before RoPE (Qwen3); modern only
    rope_base: float = 10000.0  # RoPE wavelength base (theta); modern only
    norm_eps: float = 0.0  # epsilon in the norms; 0 = style default: 1e-6 modern, 1e-5 gpt2
    logit_softcap: float = 0.0  # logits -> cap * tanh(logits / cap) (Gemma 2); 0 = off
    dropout: float = 0.0  # probability, on embeddings, attention weights and residual branches
    bias: bool = True  # biases in Linear/LayerNorm layers; gpt2 style only (modern never has biases)
    zero_init_proj: bool = False  # start attention/MLP output projections at zero (else scaled normal)
    attn_impl: str = "auto"  # "auto" (probed: fastpaths.py) | "sdpa" (F.sdpa) | "math" (matmul + softmax)

    def __post_init__(self) -> None:
        def positive(name: str) -> None:
            if getattr(self, name) < 1:
                raise UserError(f"model.{name} ({getattr(self, name)}) must be at least 1")

        if self.family != "gpt":
            raise UserError(f"model.family ({self.family!r}) must be 'gpt' for GPTConfig")
        if self.vocab_size < 0:
            raise UserError(f"model.vocab_size ({self.vocab_size}) must be positive (or 0 = from tokenizer)")
        for name in ("seq_len", "n_layer", "n_head", "n_embd"):
            positive(name)
        for name, allowed in (("style", STYLES), ("mlp", MLP_KINDS), ("attn_impl", ATTN_IMPLS)):
            if getattr(self, name) not in allowed:
                raise UserError(f"model.{name} ({getattr(self, name)!r}) must be one of {', '.join(allowed)}")
        if self.n_embd % self.n_head:
            raise UserError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if self.n_kv_head < 0 or self.n_head % self.kv_heads:
            raise UserError(
                f"model.n_kv_head ({self.n_kv_head}) must divide model.n_head ({self.n_head}); 0 = n_head"
            )
        if self.style == "modern" and self.head_dim % 2:
            raise UserError(f"head_dim = model.n_embd / model.n_head ({self.head_dim}) must be even for RoPE")
        if self.mlp_hidden < 0:
            raise UserError(f"model.mlp_hidden ({self.mlp_hidden}) must be positive (or 0 = auto)")
        if self.norm_eps < 0 or self.logit_softcap < 0 or self.rope_base <= 0:
            raise UserError("model.norm_eps and model.logit_softcap must be >= 0, model.rope_base > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model.dropout ({self.dropout}) must be in [0, 1)")
        if self.style == "gpt2":
            if self.mlp == "swiglu":
                raise UserError("model.mlp 'swiglu' does not exist in style 'gpt2'; set model.mlp=gelu")
            if self.qk_norm:
                raise UserError("model.qk_norm is a modern-style feature; set model.qk_norm=false for gpt2")
            if self.kv_heads != self.n_head:
                raise UserError("model.n_kv_head (grouped-query attention) needs model.style=modern")

    # Resolved values of the "0 = auto" fields, so readers never repeat the rules.
    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def hidden_dim(self) -> int:
        if self.mlp_hidden:
            return self.mlp_hidden
        if self.mlp == "swiglu":  # 2/3 of 4x keeps the parameter count of a plain 4x MLP (Shazeer 2020)
            return 64 * math.ceil(8 * self.n_embd / 3 / 64)
        return 4 * self.n_embd

    @property
    def eps(self) -> float:
        return self.norm_eps or (1e-5 if self.style == "gpt2" else 1e-6)

    @property
    def padded_vocab_size(self) -> int:
        return 64 * math.ceil(self.vocab_size / 64)
