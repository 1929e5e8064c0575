"""Building blocks shared by the GPT styles: RMSNorm, RoPE, activations, attention, parameter table.

Each is written to match its Hugging Face counterpart formula for formula (see ``gpt.py``), because
export must reproduce our logits to 1e-4, and kept free of branches that cost per-token time.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

MLP_KINDS = ("swiglu", "relu2", "gelu", "relu")


class Linear(nn.Linear):
    """``nn.Linear`` that can use a transposed weight copy for one-row products (see decode_layout)."""

    _matvec: tuple | None = None  # (weight key, weight.t().contiguous()) while decode_layout is active

    def matvec_weight(self) -> torch.Tensor:
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return project(x, self.weight, self.bias, self)


def _key(weight: torch.Tensor) -> tuple:
    return (weight.data_ptr(), weight._version, weight.dtype, weight.shape)


def project(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, holder: nn.Module
) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; a one-row inference x uses ``holder``'s transposed copy if any."""
    fast = holder._matvec
    if fast is None or x.numel() != x.size(-1) or torch.is_grad_enabled() or fast[0] != _key(weight):
        return F.linear(x, weight, bias)
    y = x @ fast[1]  # (..., out)
    return y if bias is None else y + bias


@contextlib.contextmanager
def decode_layout(model: nn.Module) -> Iterator[None]:
    """While active, one-row inference products read weights stored (in, out) instead of (out, in).

    Batch-1 decoding is bound by streaming the weights from memory, and on this CPU a (1, K) x (K, N)
    product with a K-major matrix ran ~2x faster than ``F.linear``'s layout (≈ 19 vs 9 GB/s; 10-20% of
    a whole decode step at the 10.7 M shape). The copies (one more model's worth of memory) live only
    inside the ``with``; each is checked against its weight's storage and version counter, so a weight
    changed in place meanwhile falls back to the ordinary path instead of using a stale copy.
    """
    holders = [m for m in model.modules() if hasattr(m, "matvec_weight")]
    try:
        with torch.no_grad():
            for m in holders:
                w = m.matvec_weight()
                m._matvec = (_key(w), w.t().contiguous())
        yield
    finally:
        for m in holders:
            m._matvec = None


class RMSNorm(nn.Module):
    """``(x * rsqrt(mean(x²) + eps)) * weight`` over the last dim, as LlamaRMSNorm / Qwen3RMSNorm."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype:
            return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)
        # Under autocast q/k arrive in bf16 while the weight is fp32: normalise in fp32 (as HF does)
        # and hand back the input's dtype, so the attention after it stays in bf16.
        return F.rms_norm(x.float(), (x.size(-1),), self.weight.float(), self.eps).to(x.dtype)


class ReLU2(nn.Module):
    """ReLU squared (So et al. 2021, "Primer"): cheap and about as good as SwiGLU at small scale."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


def activation(kind: str) -> nn.Module:
    """The non-gated MLP activations. "gelu" is the tanh approximation (GPT-2's "gelu_new")."""
    if kind == "relu2":
        return ReLU2()
    if kind == "gelu":
        return nn.GELU(approximate="tanh")
    if kind == "relu":
        return nn.ReLU()
    raise ValueError(f"no plain activation {kind!r}")


def rope_tables(seq_len: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (seq_len, head_dim), laid out [f_0..f_{d/2-1}, f_0..f_{d/2-1}].

    Same arithmetic as HF's LlamaRotaryEmbedding (float32 inverse frequencies, positions times
    frequencies, halves concatenated), so the tables agree to the last bit in fp32.
    """
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    t = torch.arange(seq_len, dtype=torch.int64).float()
    freqs = torch.outer(t, inv_freq)  # (seq_len, head_dim / 2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (seq_len, head_dim)
    return emb.cos(), emb.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, "rotate_half" convention: x*cos + [-x2, x1]*sin (not interleaved pairs).

    x: (B, T, n_heads, head_dim); cos, sin: (T, head_dim), cast to x's dtype as HF does.
    """
    cos = cos.to(x.dtype)[:, None, :]  # (T, 1, head_dim)
    sin = sin.to(x.dtype)[:, None, :]
    x1, x2 = x.chunk(2, dim=-1)  # (B, T, n_heads, head_dim / 2) each
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: str, blocked: torch.Tensor, pos: int, p: float
) -> torch.Tensor:
    """Causal attention of T new queries over S = pos + T keys (pos of them from a KV cache).

    q: (B, n_head, T, head_dim); k, v: (B, n_kv, S, head_dim) with n_kv dividing n_head (GQA: query
    head h reads key head h // (n_head / n_kv), as HF's repeat_kv). ``blocked`` is the (seq_len,
    seq_len) "key is in the future" table; row pos + i of it is query i's mask. ``is_causal`` alone
    would align the triangle to the top-left, wrong once a cache holds a prefix, so that case takes
    an explicit mask. Returns (B, n_head, T, head_dim).
    """
    T, S = q.size(2), k.size(2)
    gqa = k.size(1) != q.size(1)
    if impl == "sdpa":
        if T == S or T == 1:  # no prefix (plain causal), or one query that may see every key
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=T > 1, enable_gqa=gqa)
        allowed = ~blocked[pos : pos + T, :S]  # (T, S), True = may attend
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p, enable_gqa=gqa)
    if gqa:
        rep = q.size(1) // k.size(1)
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (B, n_head, S, hd)
    att = (q * q.size(-1) ** -0.5) @ k.transpose(-2, -1)  # (B, n_head, T, S)
    if T > 1:
        att = att.masked_fill(blocked[pos : pos + T, :S], float("-inf"))
    att = att.softmax(dim=-1)
    if p:
        att = F.dropout(att, p)
    return att @ v  # (B, n_head, T, head_dim)


def param_groups(model: nn.Module) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, shape of one, total count), with per-layer tensors folded into ``blocks.*``.

    named_parameters() yields each tensor once (a tied head is not counted twice), so the counts sum
    to ``sum(p.numel() for p in model.parameters())``.
    """
    rows: dict[str, tuple[tuple[int, ...], int]] = {}
    for name, p in model.named_parameters():
        key = re.sub(r"^blocks\.\d+\.", "blocks.*.", name)
        shape, count = rows.get(key, (tuple(p.shape), 0))
        rows[key] = (shape, count + p.numel())
    return [(name, shape, count) for name, (shape, count) in rows.items()]
