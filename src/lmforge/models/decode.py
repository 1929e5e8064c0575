"""Batch-1 decoding through the model's own modules: a copy of the weights laid out for one row.

At batch 1 on a CPU a decode step of a small model is a few dozen tiny products; what it costs is the
Python and dispatcher work around each op, not the arithmetic (at the demo shape ``nn.Module`` calls,
views and small element-wise ops were over half of a 1.3 ms step). So each block of the GPT has, next
to its ``forward``, a ``decode_copy`` (its tensors laid out once for one row) and a ``decode`` (one new
position, the same arithmetic reordered into a few fused calls on preallocated buffers); ``GPT.decode``
runs them. What lives here is what every block shares:

- ``row_operand``: a norm's scale (and a LayerNorm's shift, ``folded_bias``) folded into the matrix
  after it -- ``(n * w + b) @ W`` is ``n @ (diag(w) W) + b @ W`` -- stored in the layout that streams
  fastest from memory for a one-row product;
- ``Row``: one stream's residual row and the normalisation of it: RMSNorm over a row is LayerNorm over
  ``[x, -x]`` (mean 0, variance mean(x²)), because ``F.layer_norm`` is one fused kernel while
  ``F.rms_norm`` runs as several ops on the CPU (about 5 vs 10 µs for a 192-wide row);
- ``rope_matrices``: RoPE at one position as a (head_dim, head_dim) matrix, so rotating is one product;
- ``prepared``: the laid-out copy, kept per model and rebuilt when a parameter changes;
- ``Decoder``: one stream's step function, for the models ``covers`` accepts.

The arithmetic is the model's, reordered: logits agree with ``GPT.forward`` to float rounding and the
tokens with the module path (tests/models/test_decode.py).
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.models.layers import RMSNorm

# The layers a decodable GPT keeps its parameters in. A model with parameters anywhere else (a LoRA
# adapter, a task head) is decoded by its forward; parameter-free modules follow from the config.
PLAIN_LAYERS = (nn.Linear, nn.LayerNorm, nn.Embedding, RMSNorm)


def row_operand(weight: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``weight`` (out, in) as an (in, out) operand for ``row @ W``, rows scaled by ``scale`` (in,): a
    norm's weight folded in. Stored (in, out) when out >= in, else kept (out, in) and handed back
    transposed: out of cache a one-row product read the weights ~1.6-2.5x faster in that layout
    (384 -> 2048: 25 vs 10 GB/s; 1024 -> 384: 15 vs 10 GB/s, Intel Xeon with AMX and Zen 4 alike)."""
    w = weight.detach() if scale is None else weight.detach() * scale.detach()
    out_features, in_features = w.shape
    return w.t().contiguous() if out_features >= in_features else w.contiguous().t()


def folded_bias(
    weight: torch.Tensor, bias: torch.Tensor | None, shift: torch.Tensor | None
) -> torch.Tensor | None:
    """The bias of a product that follows a norm with shift ``shift``: ``shift @ W.T + bias``."""
    if shift is None:
        return None if bias is None else bias.detach().clone()
    b = weight.detach() @ shift.detach()  # (out,)
    return b if bias is None else b + bias.detach()


def row_product(linear: nn.Linear, norm: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(operand, bias) of ``linear`` for one-row products, ``norm``'s scale and shift (if any) folded
    in: ``linear(norm(x))`` is ``normalised(x) @ operand + bias``."""
    scale = None if norm is None else norm.weight
    shift = None if norm is None else getattr(norm, "bias", None)
    return row_operand(linear.weight, scale), folded_bias(linear.weight, linear.bias, shift)


def rope_matrices(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE ("rotate_half") as one matrix per position: ``x @ R[p]`` = ``x*cos[p] + rot(x)*sin[p]``.

    cos, sin: (seq_len, head_dim). Returns (seq_len, head_dim, head_dim). Column j < h = head_dim/2
    takes ``x[j]*cos - x[j+h]*sin``, column j >= h takes ``x[j]*cos + x[j-h]*sin``.
    """
    h = cos.size(1) // 2
    r = torch.diag_embed(cos)  # (T, d, d)
    j = torch.arange(h)
    r[:, j + h, j] = -sin[:, :h]
    r[:, j, j + h] = sin[:, h:]
    return r


class Row:
    """One stream's residual row ``x`` (1, width) and its normalisation without scale (the scale is
    folded into the next product). ``rms``: RMSNorm (as LayerNorm over ``[x, -x]``), else LayerNorm."""

    def __init__(self, width: int, rms: bool, eps: float, dtype: torch.dtype, device) -> None:
        self.width, self.rms, self.eps = width, rms, eps
        self.xx = torch.zeros(1, 2 * width if rms else width, dtype=dtype, device=device)
        self.x = self.xx[:, :width]  # the residual stream, updated in place by every block
        self.neg_x = self.xx[:, width:]
        self.x_row = self.x[0]  # (width,)

    def new(self, *shape: int) -> torch.Tensor:
        """A scratch buffer of this row's dtype and device."""
        return torch.zeros(*shape, dtype=self.xx.dtype, device=self.xx.device)

    def normed(self) -> torch.Tensor:
        """(1, width): x normalised, unscaled."""
        if self.rms:
            torch.neg(self.x, out=self.neg_x)
            return F.layer_norm(self.xx, self.xx.shape[1:], None, None, self.eps)[:, : self.width]
        return F.layer_norm(self.x, (self.width,), None, None, self.eps)


# model -> (fingerprint of its parameters, its decode copy); dropped with the model.
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prepared(model: nn.Module):
    """``model.decode_copy()``, rebuilt only when a parameter changed (storage or version counter), so
    a server's or chat's second request starts at once (no 30 ms of copies at 10.7 M parameters) and a
    model trained in between is never decoded with stale weights."""
    try:
        key = tuple((p.data_ptr(), p._version) for p in model.parameters())
    except RuntimeError:  # inference tensors keep no version counter: build afresh every time
        return model.decode_copy()
    hit = _PREPARED.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    copy = model.decode_copy()
    _PREPARED[model] = (key, copy)
    return copy


def covers(model: nn.Module) -> bool:
    """True for the models ``Decoder`` reproduces: a model with a ``decode`` method built of plain
    layers, float32 (or float64) weights, no hooks, no ``forward`` replaced on an instance. Anything else
    (LoRA adapters, bf16 weights where folding the norms into the matrices would round differently,
    the GRU) is decoded by its forward."""
    if not callable(getattr(model, "decode", None)):
        return False
    for m in model.modules():
        if m._forward_hooks or m._forward_pre_hooks or "forward" in vars(m):  # hooked or patched
            return False
        if type(m) not in PLAIN_LAYERS and next(m.parameters(recurse=False), None) is not None:
            return False  # parameters in a layer of another kind (a subclass may compute more)
    dtypes = {p.dtype for p in model.parameters()}
    return dtypes <= {torch.float32} or dtypes <= {torch.float64}


class Decoder:
    """``step(token_id)``: the logits (1, vocab_size) after one more token, written into ``cache``.
    Run it under ``torch.inference_mode()``; one per stream (its buffers are the stream's)."""

    def __init__(self, model: nn.Module, cache) -> None:
        self.model, self.cache = model, cache
        self.copy = prepared(model)
        self.scratch = model.decode_scratch(cache)

    def step(self, token_id: int) -> torch.Tensor:
        return self.model.decode(token_id, self.cache, self.copy, self.scratch)
