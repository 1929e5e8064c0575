"""The GPT family: a decoder-only Transformer in two styles behind one interface.

- ``style="modern"`` is the recipe of today's small open models: pre-norm RMSNorm, rotary position
  embeddings (RoPE), optional QK-norm, no biases, a selectable MLP (SwiGLU, ReLU², GELU, ReLU) and an
  optional untied head. With ``mlp="swiglu"`` and no soft-cap it is *exactly* Hugging Face's
  ``LlamaForCausalLM`` (``qk_norm=False``) or ``Qwen3ForCausalLM`` (``qk_norm=True``), so export is
  a renaming of tensors, not an approximation: RMSNorm is ``(x * rsqrt(mean(x²) + eps)) * weight``,
  RoPE uses the "rotate_half" (first half / second half) convention, QK-norm is an RMSNorm over
  ``head_dim`` applied to q and k *before* RoPE, as in Qwen3.
- ``style="gpt2"`` is GPT-2 (Radford et al. 2019) for comparison with the classic recipes: learned
  positions, LayerNorm with bias, fused ``c_attn``, tanh-approximated GELU ("gelu_new"), biases on. It
  maps exactly onto ``GPT2LMHeadModel`` (whose ``Conv1D`` weights are our ``Linear`` weights transposed).

Two projections are fused for speed (fewer, larger matmuls and fewer ops per generated token), and
export splits them by rows: modern ``attn.qkv.weight`` = [q (n_head*head_dim) | k (kv*head_dim) |
v (kv*head_dim)]; ``mlp.gate_up.weight`` = [gate (hidden) | up (hidden)] (HF ``gate_proj``/``up_proj``).

The vocabulary is padded to a multiple of 64 in the parameter tensors (friendlier matrix shapes), but
logits are produced with the first ``vocab_size`` rows of the head only, so they come out contiguous,
already sliced, and no FLOPs are spent on padding. The padding rows are zero and never receive a
gradient. Attention runs through ``F.scaled_dot_product_attention`` or, with ``attn_impl="math"``, a
plain matmul-softmax path; which is faster depends on the CPU and dtype (on a Zen 4 bf16 SDPA was 2x
slower than fp32 SDPA while plain attention in bf16 was faster), so the default ``"auto"`` uses the
one ``models/fastpaths.py`` measured on the machine that trains (SDPA until a probe has run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import UserError
from lmforge.models.cache import KVCache
from lmforge.models.layers import (
    MLP_KINDS,
    Linear,
    RMSNorm,
    activation,
    attend,
    param_groups,
    project,
    rope_tables,
    rotate,
)

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


class ModernAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        self.qkv = Linear(cfg.n_embd, (cfg.n_head + 2 * cfg.kv_heads) * cfg.head_dim, bias=False)
        self.o_proj = Linear(cfg.n_head * cfg.head_dim, cfg.n_embd, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.eps) if cfg.qk_norm else None
        self.impl, self.dropout = cfg.attn_impl, cfg.dropout

    def forward(self, x, cos, sin, blocked, layer_cache, pos: int):
        B, T, _ = x.shape
        hd = self.head_dim
        q, k, v = self.qkv(x).split([self.n_head * hd, self.n_kv * hd, self.n_kv * hd], dim=-1)
        q = q.view(B, T, self.n_head, hd)  # (B, T, n_head, head_dim)
        k = k.view(B, T, self.n_kv, hd)  # (B, T, n_kv, head_dim)
        v = v.view(B, T, self.n_kv, hd).transpose(1, 2)  # (B, n_kv, T, head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = rotate(q, cos, sin).transpose(1, 2)  # (B, n_head, T, head_dim)
        k = rotate(k, cos, sin).transpose(1, 2)  # (B, n_kv, T, head_dim)
        if layer_cache is not None:
            k, v = layer_cache.append(k, v, pos)  # (B, n_kv, pos + T, head_dim)
        p = self.dropout if self.training else 0.0
        y = attend(q, k, v, self.impl, blocked, pos, p)  # (B, n_head, T, head_dim)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * hd))  # (B, T, C)


class ModernMLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.gated = cfg.mlp == "swiglu"
        h = cfg.hidden_dim
        if self.gated:
            self.gate_up = Linear(cfg.n_embd, 2 * h, bias=False)
        else:
            self.up_proj = Linear(cfg.n_embd, h, bias=False)
            self.act = activation(cfg.mlp)
        self.down_proj = Linear(h, cfg.n_embd, bias=False)

    def forward(self, x):
        if self.gated:
            gate, up = self.gate_up(x).chunk(2, dim=-1)  # (B, T, hidden) each
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(self.act(self.up_proj(x)))


class ModernBlock(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.eps)
        self.attn = ModernAttention(cfg)
        self.mlp_norm = RMSNorm(cfg.n_embd, cfg.eps)
        self.mlp = ModernMLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, blocked, layer_cache, pos: int):
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin, blocked, layer_cache, pos))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class GPT2Attention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.c_attn = Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.impl, self.dropout = cfg.attn_impl, cfg.dropout

    def forward(self, x, cos, sin, blocked, layer_cache, pos: int):
        B, T, C = x.shape
        # (B, T, 3, n_head, head_dim) -> three of (B, n_head, T, head_dim)
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if layer_cache is not None:
            k, v = layer_cache.append(k, v, pos)  # (B, n_head, pos + T, head_dim)
        p = self.dropout if self.training else 0.0
        y = attend(q, k, v, self.impl, blocked, pos, p)  # (B, n_head, T, head_dim)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class GPT2MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = Linear(cfg.n_embd, cfg.hidden_dim, bias=cfg.bias)
        self.act = activation(cfg.mlp)
        self.c_proj = Linear(cfg.hidden_dim, cfg.n_embd, bias=cfg.bias)

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.eps, bias=cfg.bias)
        self.attn = GPT2Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.eps, bias=cfg.bias)
        self.mlp = GPT2MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, blocked, layer_cache, pos: int):
        x = x + self.drop(self.attn(self.ln_1(x), cos, sin, blocked, layer_cache, pos))
        return x + self.drop(self.mlp(self.ln_2(x)))


class GPT(nn.Module):
    """Decoder-only Transformer. Build with ``GPT(cfg)``, then ``init_weights()`` for a fresh model."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if config.vocab_size < 1:
            raise UserError("model.vocab_size is not set; it must come from the tokenizer")
        self.config = cfg = config
        modern = cfg.style == "modern"
        self.wte = nn.Embedding(cfg.padded_vocab_size, cfg.n_embd)
        self.wpe = None if modern else nn.Embedding(cfg.seq_len, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        block = ModernBlock if modern else GPT2Block
        self.blocks = nn.ModuleList(block(cfg) for _ in range(cfg.n_layer))
        if modern:
            self.norm_f = RMSNorm(cfg.n_embd, cfg.eps)
        else:
            self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.eps, bias=cfg.bias)
        # Tied: the head *is* wte.weight, so the state dict holds one tensor (safetensors-friendly).
        self.lm_head = (
            None if cfg.tie_embeddings else nn.Linear(cfg.n_embd, cfg.padded_vocab_size, bias=False)
        )
        # Precomputed tables, non-persistent: rebuilt from the config, never stored in checkpoints.
        if modern:
            cos, sin = rope_tables(cfg.seq_len, cfg.head_dim, cfg.rope_base)  # (seq_len, head_dim) each
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
            self.rope_cos = self.rope_sin = None
        blocked = torch.ones(cfg.seq_len, cfg.seq_len, dtype=torch.bool).triu(1)  # True = future key
        self.register_buffer("blocked", blocked, persistent=False)

    _matvec: tuple | None = None  # transposed head copy while decode_layout is active

    def matvec_weight(self) -> torch.Tensor:
        """The head's (vocab_size, width) matrix, for ``decode_layout``."""
        return (self.wte.weight if self.lm_head is None else self.lm_head.weight)[: self.config.vocab_size]

    @property
    def max_context(self) -> int:
        """Longest sequence the model can attend over (a KV cache cannot grow past it)."""
        return self.config.seq_len

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2's scheme, the HF ``initializer_range`` convention, so imported and native runs agree.

        Every matrix ~ N(0, 0.02²) (≈ 1/sqrt(fan_in) at width ~2,500, and small enough at our widths for
        a loss at init ≈ ln(vocab)); the two residual output projections per block get 0.02/sqrt(2 *
        n_layer) so the residual stream's variance does not grow with depth (GPT-2 paper, §2.3), or zero
        with ``zero_init_proj`` so each block starts as the identity (modded-nanogpt). Norm weights are
        1, biases 0, and the vocabulary padding rows 0 (they are never used).
        """
        std, n_layer = 0.02, self.config.n_layer
        for name, p in self.named_parameters():
            if p.dim() == 1:  # 1-D tensors are norm scales ("weight") or biases
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith(("o_proj.weight", "down_proj.weight", "c_proj.weight")):
                if self.config.zero_init_proj:
                    p.zero_()
                else:
                    p.normal_(0.0, std / math.sqrt(2 * n_layer))
            else:
                p.normal_(0.0, std)
        self.wte.weight[self.config.vocab_size :].zero_()
        if self.lm_head is not None:
            self.lm_head.weight[self.config.vocab_size :].zero_()

    def new_cache(self, batch_size: int, max_len: int, device=None, dtype=torch.float32) -> KVCache:
        """Preallocated keys/values for ``max_len`` positions (at most ``seq_len``)."""
        cfg = self.config
        if max_len > cfg.seq_len:
            raise UserError(f"cache length ({max_len}) exceeds model.seq_len ({cfg.seq_len})")
        shape = (cfg.n_layer, batch_size, cfg.kv_heads, max_len, cfg.head_dim)
        return KVCache(shape, device=device, dtype=dtype)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None):
        cfg = self.config
        B, T = idx.shape
        x = self.hidden_states(idx, cache)  # (B, T, C)
        head = self.wte.weight if self.lm_head is None else self.lm_head.weight
        logits = project(x, head[: cfg.vocab_size], None, self)  # (B, T, vocab_size), no padding columns
        if cfg.logit_softcap:
            cap = cfg.logit_softcap
            logits = cap * torch.tanh(logits.float() / cap)
        if targets is None:
            return logits
        # Mean cross-entropy in float32 even under bf16 autocast; -1 marks positions to ignore.
        return F.cross_entropy(logits.float().view(B * T, -1), targets.reshape(B * T), ignore_index=-1)

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The final-norm output (B, T, C) that the head reads; fine-tuning heads read it too."""
        cfg = self.config
        B, T = idx.shape
        pos = 0 if cache is None else cache.pos
        if pos + T > cfg.seq_len or (cache is not None and pos + T > cache.max_len):
            limit = cfg.seq_len if cache is None else min(cfg.seq_len, cache.max_len)
            raise UserError(
                f"sequence of {pos + T} tokens exceeds the model's context of {limit}; "
                "shorten the input or slide the window"
            )
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe.weight[pos : pos + T]  # (T, C) broadcast over B
            cos = sin = None
        else:
            cos, sin = self.rope_cos[pos : pos + T], self.rope_sin[pos : pos + T]  # (T, head_dim)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, self.blocked, None if cache is None else cache.layers[i], pos)
        if cache is not None:
            cache.pos = pos + T
        return self.norm_f(x) if self.wpe is None else self.ln_f(x)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameters (vocabulary padding rows included). ``exclude_embeddings`` drops the lookup
        tables (token and position embeddings); an untied head is a matmul and stays counted."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.wte.weight.numel() + (self.wpe.weight.numel() if self.wpe is not None else 0)
        return n

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6 per matmul weight (2 forward + 4 backward; Kaplan et al. 2020)
        plus attention scores and weighted values, 12 * n_layer * n_embd * seq_len (PaLM, appendix B;
        counted for the full square, as nanoGPT's MFU does, not halved for causality). The head counts
        ``vocab_size`` rows, tied or not; norms and embedding lookups are negligible and not counted."""
        cfg = self.config
        matmul = self.num_params(exclude_embeddings=True)
        if self.lm_head is not None:
            matmul -= self.lm_head.weight.numel()
        matmul -= sum(p.numel() for p in self.parameters() if p.dim() == 1)
        matmul += cfg.vocab_size * cfg.n_embd
        return 6 * matmul + 12 * cfg.n_layer * cfg.n_embd * cfg.seq_len

    def param_table(self) -> list[tuple[str, tuple[int, ...], int]]:
        """(name, shape of one, total count) with layers folded into ``blocks.*``; sums to num_params()."""
        return param_groups(self)
