"""The GPT's blocks, both styles: attention, MLP and the pre-norm block around them (see gpt.py).

Each module has its ``forward`` (any batch, any length, training and prefill) and, right below it, its
batch-1 decoding of one new position: ``decode_copy`` lays its tensors out once for one-row products
(the preceding norm's scale folded in), ``decode_scratch`` makes one stream's buffers and ``decode``
runs the same arithmetic as ``forward`` in a few fused calls, adding its output into the residual row
in place (why, and the shared pieces: models/decode.py). A change to a ``forward`` is a change to the
``decode`` below it; tests/models/test_decode.py checks that the two agree for every option.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.models.decode import Row, row_operand, row_product
from lmforge.models.gpt_config import GPTConfig
from lmforge.models.layers import RMSNorm, activation, activation_, attend, rotate


class PreNormBlock(nn.Module):
    """x + attn(norm1(x)), then + mlp(norm2(x)): the block of both styles, which name their parts
    differently (the Hugging Face names export maps onto) and say which norms are theirs (``norms``)."""

    attn: nn.Module
    mlp: nn.Module
    drop: nn.Module

    def norms(self) -> tuple[nn.Module, nn.Module]:
        raise NotImplementedError

    def forward(self, x, cos, sin, blocked, layer_cache, pos: int):
        attn_norm, mlp_norm = self.norms()
        x = x + self.drop(self.attn(attn_norm(x), cos, sin, blocked, layer_cache, pos))
        return x + self.drop(self.mlp(mlp_norm(x)))

    def decode_copy(self) -> tuple:
        attn_norm, mlp_norm = self.norms()
        return self.attn.decode_copy(attn_norm), self.mlp.decode_copy(mlp_norm)

    def decode_scratch(self, row: Row) -> tuple:
        return self.attn.decode_scratch(row), self.mlp.decode_scratch(row)

    def decoder(self, row: Row, scratch: tuple, k_cache, v_cache):
        """This block's step at one new position for one stream, ``step(copy, pos, rope)``: row.x
        updated in place as ``forward`` would (dropout is off in decoding). A closure over the
        modules' bound ``decode`` methods, made once per stream: looking a submodule up through
        ``nn.Module.__getattr__`` on every token cost ~5% of a step at the demo shape."""
        attn_decode, mlp_decode, normed, x = self.attn.decode, self.mlp.decode, row.normed, row.x
        attn_scratch, mlp_scratch = scratch

        def step(copy: tuple, pos: int, rope) -> None:
            attn_decode(normed(), x, copy[0], attn_scratch, k_cache, v_cache, pos, rope)
            mlp_decode(normed(), x, copy[1], mlp_scratch)

        return step


class ModernAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.n_embd, (cfg.n_head + 2 * cfg.kv_heads) * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.n_embd, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.eps) if cfg.qk_norm else None
        self.impl, self.dropout, self.eps = cfg.attn_impl, cfg.dropout, cfg.eps

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

    @torch.no_grad()
    def decode_copy(self, norm: RMSNorm) -> SimpleNamespace:
        w = SimpleNamespace(qkv=row_operand(self.qkv.weight, norm.weight), o=row_operand(self.o_proj.weight))
        w.qk_w = None
        if self.q_norm is not None:  # the QK-norms' weights, one row per q head then per k head
            hd = self.head_dim
            qw, kw = self.q_norm.weight.detach(), self.k_norm.weight.detach()
            w.qk_w = torch.cat((qw.expand(self.n_head, hd), kw.expand(self.n_kv, hd)))  # (nh + n_kv, hd)
        return w

    def decode_scratch(self, row: Row) -> SimpleNamespace:
        nh, nkv, hd = self.n_head, self.n_kv, self.head_dim
        s = SimpleNamespace(qkv_out=row.new(1, (nh + 2 * nkv) * hd), gqa=nkv != nh)
        heads = s.qkv_out.view(nh + 2 * nkv, hd)  # q heads, k heads, v heads
        s.q_rows, s.k_rows, s.v_rows, s.qk_rows = (
            heads[:nh],
            heads[nh : nh + nkv],
            heads[nh + nkv :],
            heads[: nh + nkv],
        )
        s.qk2 = row.new(nh + nkv, 2 * hd)  # q and k heads, then their negations: QK-norm as LayerNorm
        s.qk2_pos, s.qk2_neg, s.qk2_shape = s.qk2[:, :hd], s.qk2[:, hd:], s.qk2.shape[1:]
        s.qk_normed = row.new(nh + nkv, hd)
        s.q_normed, s.k_normed = s.qk_normed[:nh], s.qk_normed[nh:]
        s.q = row.new(1, nh, 1, hd)  # rotated queries, (B, n_head, T, head_dim)
        s.q_rot, s.y_rows = s.q.view(nh, hd), (1, nh * hd)
        return s

    def decode(self, h, x, w, s, k_cache, v_cache, pos: int, rope) -> None:
        """x += attention of the new position. h: the normalised row (1, C), unscaled (the scale is in
        w.qkv); k_cache, v_cache: this layer's (n_kv, max_len, head_dim); rope: (head_dim, head_dim)."""
        torch.mm(h, w.qkv, out=s.qkv_out)
        q, k = s.q_rows, s.k_rows
        if w.qk_w is not None:  # RMSNorm over each head as LayerNorm over [head, -head]
            s.qk2_pos.copy_(s.qk_rows)
            torch.neg(s.qk_rows, out=s.qk2_neg)
            n = F.layer_norm(s.qk2, s.qk2_shape, None, None, self.eps)  # (n_head + n_kv, 2 head_dim)
            torch.mul(n[:, : self.head_dim], w.qk_w, out=s.qk_normed)
            q, k = s.q_normed, s.k_normed
        torch.mm(q, rope, out=s.q_rot)
        torch.mm(k, rope, out=k_cache[:, pos])  # rotated keys go straight into the cache
        v_cache[:, pos].copy_(s.v_rows)
        end = pos + 1
        y = F.scaled_dot_product_attention(
            s.q, k_cache[None, :, :end], v_cache[None, :, :end], enable_gqa=s.gqa
        )
        x.addmm_(y.view(s.y_rows), w.o)


class ModernMLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.gated, self.kind = cfg.mlp == "swiglu", cfg.mlp
        h = cfg.hidden_dim
        if self.gated:
            self.gate_up = nn.Linear(cfg.n_embd, 2 * h, bias=False)
        else:
            self.up_proj = nn.Linear(cfg.n_embd, h, bias=False)
            self.act = activation(cfg.mlp)
        self.down_proj = nn.Linear(h, cfg.n_embd, bias=False)

    def forward(self, x):
        if self.gated:
            gate, up = self.gate_up(x).chunk(2, dim=-1)  # (B, T, hidden) each
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(self.act(self.up_proj(x)))

    @torch.no_grad()
    def decode_copy(self, norm: RMSNorm) -> SimpleNamespace:
        up = self.gate_up if self.gated else self.up_proj
        return SimpleNamespace(
            up=row_operand(up.weight, norm.weight), down=row_operand(self.down_proj.weight)
        )

    def decode_scratch(self, row: Row) -> SimpleNamespace:
        out = self.gate_up.out_features if self.gated else self.up_proj.out_features
        s = SimpleNamespace(up_out=row.new(1, out))  # (1, hidden), or (1, 2 hidden): [gate | up]
        s.gate, s.up_half = s.up_out.chunk(2, dim=-1)
        return s

    def decode(self, h, x, w, s) -> None:
        """x += the MLP of the normalised row h (1, C), unscaled (the scale is in w.up)."""
        torch.mm(h, w.up, out=s.up_out)
        a = F.silu(s.gate, inplace=True).mul_(s.up_half) if self.gated else activation_(self.kind, s.up_out)
        x.addmm_(a, w.down)


class ModernBlock(PreNormBlock):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.eps)
        self.attn = ModernAttention(cfg)
        self.mlp_norm = RMSNorm(cfg.n_embd, cfg.eps)
        self.mlp = ModernMLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def norms(self) -> tuple[nn.Module, nn.Module]:
        return self.attn_norm, self.mlp_norm


class GPT2Attention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
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

    @torch.no_grad()
    def decode_copy(self, norm: nn.LayerNorm) -> SimpleNamespace:
        (qkv, qkv_b), (o, o_b) = row_product(self.c_attn, norm), row_product(self.c_proj)
        return SimpleNamespace(qkv=qkv, qkv_b=qkv_b, o=o, o_b=o_b)

    def decode_scratch(self, row: Row) -> SimpleNamespace:
        nh, hd = self.n_head, self.head_dim
        s = SimpleNamespace(qkv_out=row.new(1, 3 * nh * hd), y_rows=(1, nh * hd))
        heads = s.qkv_out.view(3 * nh, hd)  # q heads, k heads, v heads
        s.q, s.k_rows, s.v_rows = heads[:nh].view(1, nh, 1, hd), heads[nh : 2 * nh], heads[2 * nh :]
        return s

    def decode(self, h, x, w, s, k_cache, v_cache, pos: int, rope) -> None:
        """x += attention of the new position (see ModernAttention.decode; no RoPE here)."""
        if w.qkv_b is None:
            torch.mm(h, w.qkv, out=s.qkv_out)
        else:
            torch.addmm(w.qkv_b, h, w.qkv, out=s.qkv_out)
        k_cache[:, pos].copy_(s.k_rows)
        v_cache[:, pos].copy_(s.v_rows)
        end = pos + 1
        y = F.scaled_dot_product_attention(s.q, k_cache[None, :, :end], v_cache[None, :, :end])
        x.addmm_(y.view(s.y_rows), w.o)
        if w.o_b is not None:
            x.add_(w.o_b)


class GPT2MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.kind = cfg.mlp
        self.c_fc = nn.Linear(cfg.n_embd, cfg.hidden_dim, bias=cfg.bias)
        self.act = activation(cfg.mlp)
        self.c_proj = nn.Linear(cfg.hidden_dim, cfg.n_embd, bias=cfg.bias)

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))

    @torch.no_grad()
    def decode_copy(self, norm: nn.LayerNorm) -> SimpleNamespace:
        (up, up_b), (down, down_b) = row_product(self.c_fc, norm), row_product(self.c_proj)
        return SimpleNamespace(up=up, up_b=up_b, down=down, down_b=down_b)

    def decode_scratch(self, row: Row) -> SimpleNamespace:
        return SimpleNamespace(up_out=row.new(1, self.c_fc.out_features))

    def decode(self, h, x, w, s) -> None:
        if w.up_b is None:
            torch.mm(h, w.up, out=s.up_out)
        else:
            torch.addmm(w.up_b, h, w.up, out=s.up_out)
        x.addmm_(activation_(self.kind, s.up_out), w.down)
        if w.down_b is not None:
            x.add_(w.down_b)


class GPT2Block(PreNormBlock):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.eps, bias=cfg.bias)
        self.attn = GPT2Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.eps, bias=cfg.bias)
        self.mlp = GPT2MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def norms(self) -> tuple[nn.Module, nn.Module]:
        return self.ln_1, self.ln_2
