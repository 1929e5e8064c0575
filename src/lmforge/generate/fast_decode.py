"""One decoding step of the GPT as plain tensor calls: the batch-1 path that has to be fast (issue 4).

At batch 1 on a CPU a decode step of a small model is a few dozen tiny products; what it costs is the
Python and dispatcher work around each op, not the arithmetic (at the demo shape ``nn.Module`` calls,
views and little element-wise ops were over half of a 1.3 ms step). So for the one-new-token case the
model's weights are laid out once for a single row, and a step is a short list of fused calls on
preallocated buffers:

- a norm's scale (and a LayerNorm's shift) is folded into the matrix after it: ``(n * w + b) @ W`` is
  ``n @ (diag(w) W) + b @ W``, so a norm is one op and the product that follows is one ``addmm``;
- RMSNorm over a row is LayerNorm over ``[x, -x]`` (mean 0, variance mean(x²)), because
  ``F.layer_norm`` is one fused kernel while ``F.rms_norm`` runs as several ops on the CPU
  (≈ 5 vs 10 µs for a 192-wide row); QK-norm likewise, over ``[heads, -heads]``;
- RoPE at one position is a (head_dim, head_dim) matrix, tabled for every position, so rotating the
  queries or the keys is one small product, and the keys are written straight into the cache;
- the residual stream is updated in place with ``addmm_``; each matrix is stored in the layout that
  streamed fastest from memory for a one-row product (see ``_weights_t``).

The arithmetic is the model's, reordered: logits agree with ``GPT.forward`` to float rounding and the
tokens with the module path (tests/generate/test_fast_decode.py). The laid-out weights are kept per model and
rebuilt when a parameter changes (``prepared``), so only the first stream pays for the copies.
``FastDecoder.covers`` says which models it serves (our GPT, either style, float32 weights); anything
else -- LoRA-wrapped layers, the GRU, task heads, bf16 -- keeps the ``model(ids, cache=...)`` path.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.models.cache import KVCache
from lmforge.models.gpt import GPT
from lmforge.models.layers import Linear, RMSNorm

# The layers that hold a GPT's parameters. A model with parameters anywhere else (a LoRA adapter,
# say) is not decoded here; parameter-free modules (activations, dropout) follow from the config.
_PLAIN = (Linear, RMSNorm, nn.Linear, nn.LayerNorm, nn.Embedding)


def _weights_t(weight: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``weight`` (out, in) as an (in, out) operand for ``row @ W``, rows scaled by ``scale`` (in,): a
    norm's weight folded in. Stored (in, out) when out >= in, else kept (out, in) and handed back
    transposed: out of cache a one-row product read the weights ~1.6-2.5x faster in that layout
    (e.g. 384 -> 2048: 25 vs 10 GB/s; 1024 -> 384: 15 vs 10 GB/s on this CPU)."""
    w = weight.detach() if scale is None else weight.detach() * scale.detach()
    out_features, in_features = w.shape
    return w.t().contiguous() if out_features >= in_features else w.contiguous().t()


def _folded_bias(
    weight: torch.Tensor, bias: torch.Tensor | None, shift: torch.Tensor | None
) -> torch.Tensor | None:
    """The bias of a product that follows a norm with shift ``shift``: ``shift @ W.T + bias``."""
    if shift is None:
        return None if bias is None else bias.detach().clone()
    b = weight.detach() @ shift.detach()  # (out,)
    return b if bias is None else b + bias.detach()


def _detached(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()


def rope_matrices(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE ("rotate_half") as one matrix per position: ``x @ R[p]`` = ``x*cos[p] + rot(x)*sin[p]``.

    cos, sin: (seq_len, head_dim). Returns (seq_len, head_dim, head_dim). Column j < h = head_dim/2
    takes ``x[j]*cos - x[j+h]*sin``, column j >= h takes ``x[j]*cos + x[j-h]*sin``.
    """
    T, d = cos.shape
    h = d // 2
    r = torch.diag_embed(cos)  # (T, d, d)
    j = torch.arange(h)
    r[:, j + h, j] = -sin[:, :h]
    r[:, j, j + h] = sin[:, h:]
    return r


class _Layer:
    """One block's tensors in decode layout (see the module docstring); None where a style has none."""

    __slots__ = ("qkv", "qkv_b", "qk_w", "o", "o_b", "up", "up_b", "down", "down_b")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, None)


class _Weights:
    """A GPT's weights in decode layout: built once per model and weight version (see ``prepared``)."""

    @torch.no_grad()
    def __init__(self, model: GPT) -> None:
        cfg = model.config
        modern = cfg.style == "modern"
        nh, nkv, hd = cfg.n_head, cfg.kv_heads, cfg.head_dim
        self.wte = model.wte.weight.detach()  # (padded vocab, C)
        self.wpe = None if modern else model.wpe.weight.detach()  # (seq_len, C)
        head = model.matvec_weight()  # (vocab_size, C)
        final = model.norm_f if modern else model.ln_f
        cap = cfg.logit_softcap or 1.0  # cap * tanh(z / cap): the 1 / cap goes into the head
        self.head = _weights_t(head / cap, final.weight)  # (C, vocab_size)
        b = _folded_bias(head, None, getattr(final, "bias", None))
        self.head_b = None if b is None else b / cap
        # One table for all layers: (seq_len, hd, hd), 1 MB at the demo shape, 4 MB at head_dim 64.
        self.rope = rope_matrices(model.rope_cos, model.rope_sin).to(self.wte.dtype) if modern else None
        self.layers = []
        for block in model.blocks:
            L, a, m = _Layer(), block.attn, block.mlp
            if modern:
                L.qkv = _weights_t(a.qkv.weight, block.attn_norm.weight)
                L.o = _weights_t(a.o_proj.weight)
                if cfg.qk_norm:  # the norms' weights, one row per q head then per k head
                    qw, kw = a.q_norm.weight.detach(), a.k_norm.weight.detach()
                    L.qk_w = torch.cat((qw.expand(nh, hd), kw.expand(nkv, hd)))  # (n_head + n_kv, hd)
                L.up = _weights_t((m.gate_up if m.gated else m.up_proj).weight, block.mlp_norm.weight)
                L.down = _weights_t(m.down_proj.weight)
            else:
                L.qkv = _weights_t(a.c_attn.weight, block.ln_1.weight)
                L.qkv_b = _folded_bias(a.c_attn.weight, a.c_attn.bias, block.ln_1.bias)
                L.o, L.o_b = _weights_t(a.c_proj.weight), _detached(a.c_proj.bias)
                L.up = _weights_t(m.c_fc.weight, block.ln_2.weight)
                L.up_b = _folded_bias(m.c_fc.weight, m.c_fc.bias, block.ln_2.bias)
                L.down, L.down_b = _weights_t(m.c_proj.weight), _detached(m.c_proj.bias)
            self.layers.append(L)


# model -> (fingerprint of its parameters, their decode layout); dropped with the model.
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prepared(model: GPT) -> _Weights:
    """The model's weights in decode layout, rebuilt only when a parameter changed (storage or
    version counter), so a server's or chat's second request starts as fast as HF's (no 30 ms of
    copies at 10.7 M parameters) and a model trained in between is never decoded with stale weights."""
    try:
        key = tuple((p.data_ptr(), p._version) for p in model.parameters())
    except RuntimeError:  # inference tensors keep no version counter: build afresh every time
        return _Weights(model)
    hit = _PREPARED.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    weights = _Weights(model)
    _PREPARED[model] = (key, weights)
    return weights


class FastDecoder:
    """``step(token_id)``: the logits (1, vocab_size) after one more token, written into ``cache``."""

    @staticmethod
    def covers(model: nn.Module) -> bool:
        """True for the models this decoder reproduces: our GPT built of its own plain layers, float32
        (or float64) weights, no hooks, no ``forward`` replaced on an instance. Anything else (LoRA
        adapters, a wrapper, bf16 weights, where folding the norms into the matrices would round
        differently) keeps the module path."""
        if type(model) is not GPT:
            return False
        for m in model.modules():
            if m._forward_hooks or m._forward_pre_hooks or "forward" in vars(m):  # hooked or patched
                return False
            if type(m) not in _PLAIN and next(m.parameters(recurse=False), None) is not None:
                return False
        dtypes = {p.dtype for p in model.parameters()}
        return dtypes <= {torch.float32} or dtypes <= {torch.float64}

    def __init__(self, model: GPT, cache: KVCache) -> None:
        cfg = model.config
        w = prepared(model)
        self.wte, self.wpe, self.rope, self.layers = w.wte, w.wpe, w.rope, w.layers
        self.head, self.head_b = w.head, w.head_b
        self.modern = cfg.style == "modern"
        self.qk_norm = self.modern and cfg.qk_norm
        self.gated = cfg.mlp == "swiglu"
        self.cache = cache
        self.n_head, self.n_kv, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        self.eps, self.width, self.mlp, self.softcap = cfg.eps, cfg.n_embd, cfg.mlp, cfg.logit_softcap
        C, nh, nkv, hd = cfg.n_embd, self.n_head, self.n_kv, self.head_dim
        # Buffers, reused by every layer and step, and the views of them that a step needs, made here.
        new = lambda *shape: torch.zeros(*shape, dtype=w.wte.dtype, device=w.wte.device)  # noqa: E731
        self.xx = new(1, 2 * C)  # (1, 2C): the residual stream x, then -x (RMSNorm as LayerNorm)
        self.x, self.neg_x = self.xx[:, :C], self.xx[:, C:]
        self.x_row = self.x[0]  # (C,)
        self.qkv_out = new(1, (nh + 2 * nkv) * hd)
        heads = self.qkv_out.view(nh + 2 * nkv, hd)  # (n_head + 2 n_kv, hd): q heads, k heads, v heads
        self.q_rows, self.k_rows, self.v_rows = heads[:nh], heads[nh : nh + nkv], heads[nh + nkv :]
        self.qk_rows = heads[: nh + nkv]
        self.qk2 = new(nh + nkv, 2 * hd)  # q and k heads, then their negations: QK-norm as LayerNorm
        self.qk2_pos, self.qk2_neg = self.qk2[:, :hd], self.qk2[:, hd:]
        self.qk_normed = new(nh + nkv, hd)
        self.q_normed, self.k_normed = self.qk_normed[:nh], self.qk_normed[nh:]
        self.q = new(1, nh, 1, hd)  # rotated queries, (B, n_head, T, head_dim)
        self.q_rot = self.q.view(nh, hd)
        self.y_rows = (1, nh * hd)
        self.up_out = new(1, self.layers[0].up.size(1))  # (1, hidden), or (1, 2 hidden): [gate | up]
        self.gate, self.up_half = self.up_out.chunk(2, dim=-1)
        self.k_cache = [cache.k[i, 0] for i in range(cfg.n_layer)]  # (n_kv, max_len, hd) each
        self.v_cache = [cache.v[i, 0] for i in range(cfg.n_layer)]

    def step(self, token_id: int) -> torch.Tensor:
        """Append one token at ``cache.pos``; return its next-token logits (1, vocab_size). Run it
        under ``torch.inference_mode()``."""
        cache, pos = self.cache, self.cache.pos
        x = self.x
        if self.wpe is None:
            x.copy_(self.wte[token_id])
        else:
            torch.add(self.wte[token_id], self.wpe[pos], out=self.x_row)
        end = pos + 1
        for i, L in enumerate(self.layers):
            h = self._norm()  # (1, C), unscaled: the scale is in L.qkv
            if L.qkv_b is None:
                torch.mm(h, L.qkv, out=self.qkv_out)
            else:
                torch.addmm(L.qkv_b, h, L.qkv, out=self.qkv_out)
            k_cache, v_cache = self.k_cache[i], self.v_cache[i]  # (n_kv, max_len, hd)
            if self.modern:
                q, k = self._qk(L)
                rope = self.rope[pos]  # (hd, hd)
                torch.mm(q, rope, out=self.q_rot)
                torch.mm(k, rope, out=k_cache[:, pos])  # rotated keys go straight into the cache
                q = self.q
            else:
                q = self.q_rows.view(1, self.n_head, 1, self.head_dim)
                k_cache[:, pos].copy_(self.k_rows)
            v_cache[:, pos].copy_(self.v_rows)
            y = F.scaled_dot_product_attention(
                q, k_cache[None, :, :end], v_cache[None, :, :end], enable_gqa=self.n_kv != self.n_head
            )  # (1, n_head, 1, hd)
            x.addmm_(y.view(self.y_rows), L.o)
            if L.o_b is not None:
                x.add_(L.o_b)
            h = self._norm()
            if L.up_b is None:
                torch.mm(h, L.up, out=self.up_out)
            else:
                torch.addmm(L.up_b, h, L.up, out=self.up_out)
            x.addmm_(self._act(), L.down)
            if L.down_b is not None:
                x.add_(L.down_b)
        cache.pos = end
        h = self._norm()
        logits = h @ self.head if self.head_b is None else torch.addmm(self.head_b, h, self.head)
        if self.softcap:
            return torch.tanh(logits.float()).mul_(self.softcap)  # the 1 / cap is in the head
        return logits

    def _norm(self) -> torch.Tensor:
        """The residual row normalised, without its scale: RMS (modern) or LayerNorm (gpt2)."""
        if self.modern:
            torch.neg(self.x, out=self.neg_x)
            return F.layer_norm(self.xx, self.xx.shape[1:], None, None, self.eps)[:, : self.width]
        return F.layer_norm(self.x, (self.width,), None, None, self.eps)

    def _qk(self, L: _Layer) -> tuple[torch.Tensor, torch.Tensor]:
        """The query and key heads to rotate: (n_head, hd) and (n_kv, hd), QK-normalised if set."""
        if not self.qk_norm:
            return self.q_rows, self.k_rows
        self.qk2_pos.copy_(self.qk_rows)
        torch.neg(self.qk_rows, out=self.qk2_neg)
        n = F.layer_norm(self.qk2, self.qk2.shape[1:], None, None, self.eps)  # (n_head + n_kv, 2 hd)
        torch.mul(n[:, : self.head_dim], L.qk_w, out=self.qk_normed)
        return self.q_normed, self.k_normed

    def _act(self) -> torch.Tensor:
        u = self.up_out
        if self.gated:
            return F.silu(self.gate, inplace=True).mul_(self.up_half)
        if self.mlp == "relu2":
            return F.relu(u, inplace=True).square_()
        if self.mlp == "gelu":
            return F.gelu(u, approximate="tanh")
        return F.relu(u, inplace=True)
