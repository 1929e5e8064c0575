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
  maps exactly onto ``GPT2LMHeadModel`` (whose ``Conv1D`` weights are our ``nn.Linear`` weights transposed).

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

The blocks live in blocks.py, the config in gpt_config.py. Batch-1 generation decodes one position at a
time through ``GPT.decode``: each block's own ``decode`` beside its ``forward`` (models/decode.py).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import UserError
from lmforge.models.blocks import GPT2Block, ModernBlock
from lmforge.models.cache import KVCache
from lmforge.models.decode import Row, folded_bias, rope_matrices, row_operand
from lmforge.models.gpt_config import ATTN_IMPLS, STYLES, GPTConfig
from lmforge.models.layers import RMSNorm, param_groups, rope_tables

__all__ = ["ATTN_IMPLS", "GPT", "STYLES", "GPTConfig"]


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

    def head_weight(self) -> torch.Tensor:
        """The head's (vocab_size, width) matrix: the untied head's or the embedding's first rows."""
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
        logits = F.linear(x, self.head_weight())  # (B, T, vocab_size), no padding columns
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

    # Batch-1 decoding, one new position per call: the fast twin of forward(idx (1, 1), cache), run by
    # models/decode.py's Decoder (the generation engine's path for this model).
    @torch.no_grad()
    def decode_copy(self) -> SimpleNamespace:
        """The weights laid out for one-row products: embeddings, every block's ``decode_copy``, and
        the head with the final norm's scale (and the soft-cap's 1 / cap) folded in."""
        cfg = self.config
        modern = cfg.style == "modern"
        final = self.norm_f if modern else self.ln_f
        head, cap = self.head_weight(), cfg.logit_softcap or 1.0  # cap * tanh(z / cap)
        head_b = folded_bias(head, None, getattr(final, "bias", None))
        return SimpleNamespace(
            wte=self.wte.weight.detach(),  # (padded vocab, C)
            wpe=None if modern else self.wpe.weight.detach(),  # (seq_len, C)
            # One table for all layers: (seq_len, hd, hd), 1 MB at the demo shape, 4 MB at head_dim 64.
            rope=rope_matrices(self.rope_cos, self.rope_sin).to(self.wte.weight.dtype) if modern else None,
            head=row_operand(head / cap, final.weight),  # (C, vocab_size)
            head_b=None if head_b is None else head_b / cap,
            blocks=[block.decode_copy() for block in self.blocks],
        )

    def decode_scratch(self, cache: KVCache) -> SimpleNamespace:
        """One stream's buffers (shared by every layer) and the cache's per-layer views for batch 0."""
        cfg, w = self.config, self.wte.weight
        row = Row(cfg.n_embd, cfg.style == "modern", cfg.eps, w.dtype, w.device)
        shared = self.blocks[0].decode_scratch(row)  # every layer has the same shapes
        # Each block's step for this stream, over batch 0's (n_kv, max_len, head_dim) cache views.
        steps = [
            block.decoder(row, shared, cache.k[i, 0], cache.v[i, 0]) for i, block in enumerate(self.blocks)
        ]
        return SimpleNamespace(row=row, steps=steps)

    def decode(self, token_id: int, cache: KVCache, copy: SimpleNamespace, scratch: SimpleNamespace):
        """Append ``token_id`` at ``cache.pos``; its next-token logits (1, vocab_size). Arguments from
        ``decode_copy`` and ``decode_scratch``; run under ``torch.inference_mode()``."""
        pos, row = cache.pos, scratch.row
        if copy.wpe is None:
            row.x.copy_(copy.wte[token_id])
            rope = copy.rope[pos]  # (head_dim, head_dim)
        else:
            torch.add(copy.wte[token_id], copy.wpe[pos], out=row.x_row)
            rope = None
        for block_step, block_copy in zip(scratch.steps, copy.blocks, strict=True):
            block_step(block_copy, pos, rope)
        cache.pos = pos + 1
        h = row.normed()
        logits = h @ copy.head if copy.head_b is None else torch.addmm(copy.head_b, h, copy.head)
        if self.config.logit_softcap:
            return torch.tanh(logits.float()).mul_(self.config.logit_softcap)  # the 1 / cap is in the head
        return logits

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
