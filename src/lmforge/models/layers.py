"""Building blocks shared by the GPT styles: RMSNorm, RoPE, activations, attention, parameter table.

Each is written to match its Hugging Face counterpart formula for formula (see ``gpt.py``), because
export must reproduce our logits to 1e-4, and kept free of branches that cost per-token time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MLP_KINDS = ("swiglu", "relu2", "gelu", "relu")


@dataclass
class FastPaths:
    """Which hand-written training kernels the layers use instead of plain ATen, and what
    ``attn_impl="auto"`` means. Whether each pays depends on the CPU and dtype (BENCHMARKS.md, "Fast
    paths on this CPU"), so the defaults are the plain ATen ops and ``models/fastpaths.py`` switches a
    path on only where its probe measured it faster on the machine that trains."""

    gelu: bool = False  # _GELUTanhFn instead of F.gelu(approximate="tanh") under autograd
    rms_norm: bool = False  # _RMSNormFn instead of F.rms_norm under autograd
    relu2: bool = False  # _ReLU2Fn instead of relu().square() under autograd
    attention: str = "sdpa"  # what attn_impl="auto" runs: "sdpa" | "math"


FAST = FastPaths()  # read at every forward, so a probe can set it after the model is built


def use_fast_paths(paths: FastPaths) -> None:
    """Make `paths` the process-wide choice (the training start's probe calls this)."""
    FAST.gelu, FAST.rms_norm, FAST.relu2, FAST.attention = (
        paths.gelu, paths.rms_norm, paths.relu2, paths.attention,
    )  # fmt: skip


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """fp32 for half-precision tensors, the tensor itself otherwise (fp64 stays fp64)."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


class _RMSNormFn(torch.autograd.Function):
    """RMSNorm with a hand-written backward: ~10 tensor ops for forward + backward instead of ~25.

    Where ``F.rms_norm`` has no fused CPU kernel autograd records every op of its composite and
    replays each one's backward; at width 128 on a Zen 4 the norms were ~10% of a training step.
    Used where the probe (fastpaths.py) measured it faster. Arithmetic in fp32 (inputs are upcast),
    result in the input's dtype.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        xf = _upcast(x)
        rstd = torch.rsqrt(xf.square().mean(-1, keepdim=True).add_(eps))  # (..., 1)
        xhat = xf * rstd
        ctx.save_for_backward(xhat, rstd, weight)
        return (xhat * weight.to(xhat.dtype)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        xhat, rstd, weight = ctx.saved_tensors
        g = _upcast(grad_y)
        grad_w = (g * xhat).reshape(-1, xhat.size(-1)).sum(0).to(weight.dtype)
        g = g * weight.to(g.dtype)
        # d/dx of x * rstd: rstd * (g - xhat * mean(g * xhat)) over the normalised dim.
        grad_x = (g - xhat * (g * xhat).mean(-1, keepdim=True)).mul_(rstd)
        return grad_x.to(grad_y.dtype), grad_w, None


class RMSNorm(nn.Module):
    """``(x * rsqrt(mean(x²) + eps)) * weight`` over the last dim, as LlamaRMSNorm / Qwen3RMSNorm.

    Normalises in fp32 whatever the input dtype (under autocast q/k arrive in bf16 while the weight
    is fp32, as in HF) and hands back the input's dtype, so what follows stays in bf16.
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if FAST.rms_norm and torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _RMSNormFn.apply(x, self.weight, self.eps)
        if x.dtype == self.weight.dtype:
            return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)
        return F.rms_norm(x.float(), (x.size(-1),), self.weight.float(), self.eps).to(x.dtype)


class _ReLU2Fn(torch.autograd.Function):
    """relu(x)²: two ops forward, two backward (autograd's version records relu and pow)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        r = torch.relu(x)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return (r + r).mul_(grad_y)  # 2 relu(x) g; zero wherever x <= 0


class ReLU2(nn.Module):
    """ReLU squared (So et al. 2021, "Primer"): cheap and about as good as SwiGLU at small scale."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if FAST.relu2 and torch.is_grad_enabled() and x.requires_grad:
            return _ReLU2Fn.apply(x)
        return F.relu(x).square()


_GELU_K = 2.0 * math.sqrt(2.0 / math.pi)  # gelu_tanh(x) = x * sigmoid(K * (x + 0.044715 x³))
_GELU_C = 0.044715


class _GELUTanhFn(torch.autograd.Function):
    """GPT-2's tanh GELU through the identity 0.5 * (1 + tanh(z)) = sigmoid(2z).

    On a 2-core Zen 4 ATen's tanh-GELU kernels took 7 ms forward and 6 ms backward on a (4096, 1536)
    bf16 tensor -- its tanh was slow there -- while these 4 + 6 ops cost ~4.4 + 5.2 ms. On a Xeon with
    AMX it is the other way round (BENCHMARKS.md, "Fast paths on each CPU"), so it runs only where
    the probe (fastpaths.py) measured it faster.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        one = torch.ones((), dtype=x.dtype, device=x.device)
        s = torch.addcmul(one * _GELU_K, x, x, value=_GELU_K * _GELU_C).mul_(x).sigmoid_()
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor) -> torch.Tensor:
        x, s = ctx.saved_tensors
        one = torch.ones((), dtype=x.dtype, device=x.device)
        # d/dx x*sigmoid(z) = s + x * s * (1 - s) * z',  z' = K + 3 K C x²
        dz = torch.addcmul(one * _GELU_K, x, x, value=3 * _GELU_K * _GELU_C).mul_(x)
        dz.mul_(torch.addcmul(s, s, s, value=-1)).add_(s)
        return dz.mul_(grad_y)


class GELUTanh(nn.Module):
    """``nn.GELU(approximate="tanh")`` (GPT-2's "gelu_new") with a training path that is cheaper on
    some CPUs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if FAST.gelu and torch.is_grad_enabled() and x.requires_grad:
            return _GELUTanhFn.apply(x)
        return F.gelu(x, approximate="tanh")


def activation(kind: str) -> nn.Module:
    """The non-gated MLP activations. "gelu" is the tanh approximation (GPT-2's "gelu_new")."""
    if kind == "relu2":
        return ReLU2()
    if kind == "gelu":
        return GELUTanh()
    if kind == "relu":
        return nn.ReLU()
    raise ValueError(f"no plain activation {kind!r}")


def activation_(kind: str, x: torch.Tensor) -> torch.Tensor:
    """The non-gated activation of ``kind`` for inference, in place where the op allows (decoding)."""
    if kind == "relu2":
        return F.relu(x, inplace=True).square_()
    if kind == "gelu":
        return F.gelu(x, approximate="tanh")
    if kind == "relu":
        return F.relu(x, inplace=True)
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
    an explicit mask. ``impl`` "auto" is FAST.attention. Returns (B, n_head, T, head_dim).
    """
    if impl == "auto":
        impl = FAST.attention
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
    B, H, _, hd = q.shape
    keys_t = k.reshape(B * H, S, hd).transpose(1, 2)  # (B * n_head, head_dim, S)
    if T > 1:
        # Scale, mask and QK^T in one baddbmm: the additive 0 / -inf bias replaces a masked_fill
        # copy of the (T, S) scores and a separate scaling pass over q.
        bias = torch.zeros(T, S, dtype=q.dtype, device=q.device).masked_fill_(
            blocked[pos : pos + T, :S], float("-inf")
        )
        att = torch.baddbmm(bias, q.reshape(B * H, T, hd), keys_t, alpha=hd**-0.5)
    else:
        att = torch.bmm(q.reshape(B * H, T, hd), keys_t).mul_(hd**-0.5)
    att = att.softmax(dim=-1)  # (B * n_head, T, S)
    if p:
        att = F.dropout(att, p)
    return torch.bmm(att, v.reshape(B * H, S, hd)).view(B, H, T, hd)  # (B, n_head, T, head_dim)


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
