"""Generation state: the GPT's preallocated key/value cache and the GRU's hidden state.

Both expose ``pos`` (positions already consumed), ``max_len`` (positions the state can hold; None
for the GRU, whose hidden state summarises any history) and ``reset()``, so the generation engine
drives either without knowing the family. The KV cache is allocated once, in full, so decoding a
token writes into existing memory instead of concatenating (gpt-fast's approach). Caches are for
inference: they hold values, not autograd graphs (keys/values are detached on the way in).
"""

from __future__ import annotations

import torch


class LayerKV:
    """One layer's slice of the cache: views into the big tensors, no copies."""

    __slots__ = ("k", "v")

    def __init__(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k, self.v = k, v  # (B, n_kv, max_len, head_dim) each

    def append(self, k: torch.Tensor, v: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write T new keys/values at pos; return all keys/values so far, (B, n_kv, pos + T, head_dim)."""
        if k.requires_grad:  # the cache stores values, not graphs: it is for inference
            k, v = k.detach(), v.detach()
        end = pos + k.size(2)
        self.k[:, :, pos:end] = k
        self.v[:, :, pos:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class KVCache:
    def __init__(self, shape: tuple[int, int, int, int, int], device=None, dtype=torch.float32) -> None:
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # (n_layer, B, n_kv, max_len, head_dim)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.layers = [LayerKV(self.k[i], self.v[i]) for i in range(shape[0])]  # views, not copies
        self.max_len: int | None = shape[3]
        self.pos = 0

    def reset(self) -> None:
        self.pos = 0  # stale entries are overwritten before they are read


class GRUState:
    def __init__(self, n_layer: int, batch_size: int, hidden: int, device=None, dtype=torch.float32) -> None:
        self.h = torch.zeros(n_layer, batch_size, hidden, device=device, dtype=dtype)  # nn.GRU's layout
        self.max_len: int | None = None
        self.pos = 0

    def reset(self) -> None:
        self.h.zero_()
        self.pos = 0
