"""Hugging Face <-> lmforge: which architecture a GPT is, its config fields, and its tensor names.

Pure functions over config dataclasses and ``{name: tensor}`` dicts, no I/O: each direction of each
architecture is one readable function, so a wrong map is a one-line diff, and the tests check them
by comparing logits with ``transformers``' own models.

Which lmforge model is which Hugging Face model (exactly, not approximately; see ``models/gpt.py``):

- modern style, SwiGLU MLP, QK-norm      -> ``Qwen3ForCausalLM``  (head_dim written explicitly)
- modern style, SwiGLU MLP, no QK-norm   -> ``LlamaForCausalLM``
- gpt2 style (LayerNorm, learned positions, GELU-tanh / ReLU / ReLU²)  -> ``GPT2LMHeadModel``
  (its ``Conv1D`` stores our ``Linear`` weights transposed; without biases we write zeros)

Everything else has no standard architecture and is refused with the feature named: a modern MLP
other than SwiGLU (Llama/Qwen3 MLPs are always gated), ``logit_softcap``, the GRU family. Dropout
only acts in training and does not matter. GQA and tied or untied heads all map.

The vocabulary: our tensors are padded to a multiple of 64 with zero rows that never produce a
logit. Hugging Face gets the *exact* vocabulary (the padding rows are dropped on export and added
back, zero, on import), so ``logits.shape[-1]``, ``len(AutoTokenizer)`` and ``config.vocab_size``
all agree and logits compare one to one.
"""

from __future__ import annotations

import math

import torch

from lmforge.errors import UserError
from lmforge.models.gpt import GPTConfig

# Hugging Face architecture -> the transformers config class that describes it.
CONFIG_CLASSES = {
    "Qwen3ForCausalLM": "Qwen3Config",
    "LlamaForCausalLM": "LlamaConfig",
    "GPT2LMHeadModel": "GPT2Config",
}
# Our gpt2-style MLP activation -> GPT-2's activation_function (same formula); and back, with the
# other spellings of the tanh-approximated GELU that transformers uses.
GPT2_ACTIVATIONS = {"gelu": "gelu_new", "relu": "relu", "relu2": "relu2"}
FROM_GPT2_ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu", "relu2": "relu2"}
# Buffers that some transformers versions save alongside the weights; they carry no learned values.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "attn.bias", "attn.masked_bias")


# --- which architecture ----------------------------------------------------------------------


def architecture_for(cfg) -> str:
    """The Hugging Face architecture that is exactly ``cfg``, or a UserError naming what is not."""
    if cfg.family != "gpt":
        raise UserError(
            f"model family '{cfg.family}' (Embedding -> GRU -> Linear) has no standard Hugging Face "
            "architecture; only GPT runs export (modern SwiGLU -> Llama/Qwen3, gpt2 style -> GPT-2)"
        )
    if cfg.logit_softcap:
        raise UserError(
            f"model.logit_softcap ({cfg.logit_softcap}) has no equivalent in Llama, Qwen3 or GPT-2; "
            "only runs trained with model.logit_softcap=0 export"
        )
    if cfg.style == "gpt2":
        if cfg.mlp not in GPT2_ACTIVATIONS:
            raise UserError(f"model.mlp '{cfg.mlp}' has no GPT-2 activation; use gelu, relu or relu2")
        return "GPT2LMHeadModel"
    if cfg.mlp != "swiglu":
        raise UserError(
            f"model.mlp '{cfg.mlp}' in the modern style has no standard architecture (Llama and Qwen3 "
            "MLPs are gated SwiGLU); only runs trained with model.mlp=swiglu export"
        )
    return "Qwen3ForCausalLM" if cfg.qk_norm else "LlamaForCausalLM"


# --- config fields ---------------------------------------------------------------------------


def hf_config_fields(cfg: GPTConfig, architecture: str, eot_id: int) -> dict:
    """Keyword arguments for the transformers config class of ``architecture`` (see CONFIG_CLASSES)."""
    common = dict(
        vocab_size=cfg.vocab_size,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        pad_token_id=eot_id,
        dtype="float32",
    )
    if architecture == "GPT2LMHeadModel":
        return common | dict(
            n_positions=cfg.seq_len,
            n_embd=cfg.n_embd,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            n_inner=cfg.hidden_dim,
            activation_function=GPT2_ACTIVATIONS[cfg.mlp],
            layer_norm_epsilon=cfg.eps,
            resid_pdrop=cfg.dropout,  # GPT-2 drops out where we do: embeddings, attention, residuals
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
        )
    fields = common | dict(
        hidden_size=cfg.n_embd,
        intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.seq_len,
        rms_norm_eps=cfg.eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_base},
        hidden_act="silu",
        attention_bias=False,
        attention_dropout=0.0,
    )
    if architecture == "LlamaForCausalLM":
        fields["mlp_bias"] = False
    else:
        fields["use_sliding_window"] = False
    return fields


def gpt_config_from_hf(hf_cfg, architecture: str, seq_len: int | None = None) -> GPTConfig:
    """Our GPTConfig for a transformers config, or a UserError naming the setting we cannot represent.

    ``seq_len`` caps the context (a 40k-position model would allocate a 40k x 40k mask table).
    """

    def refuse(setting: str, value, need: str) -> UserError:
        return UserError(f"{architecture} with {setting}={value!r} cannot be imported exactly ({need})")

    def get(name: str, default=None):
        return getattr(hf_cfg, name, default)

    if architecture == "GPT2LMHeadModel":
        act = get("activation_function")
        if act not in FROM_GPT2_ACTIVATIONS:
            raise refuse("activation_function", act, f"one of {', '.join(FROM_GPT2_ACTIVATIONS)}")
        for name, want in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False)):
            if bool(get(name, want)) != want:
                raise refuse(name, get(name), f"lmforge needs {want}")
        if get("add_cross_attention", False):
            raise refuse("add_cross_attention", True, "a decoder-only model is needed")
        return GPTConfig(
            vocab_size=hf_cfg.vocab_size,
            seq_len=min(hf_cfg.n_positions, seq_len or hf_cfg.n_positions),
            n_layer=hf_cfg.n_layer,
            n_head=hf_cfg.n_head,
            n_embd=hf_cfg.n_embd,
            mlp=FROM_GPT2_ACTIVATIONS[act],
            mlp_hidden=get("n_inner") or 4 * hf_cfg.n_embd,
            style="gpt2",
            tie_embeddings=bool(get("tie_word_embeddings", True)),
            norm_eps=hf_cfg.layer_norm_epsilon,
        )
    if get("hidden_act") != "silu":
        raise refuse("hidden_act", get("hidden_act"), "SwiGLU needs 'silu'")
    for name in ("attention_bias", "mlp_bias", "use_sliding_window"):
        if get(name, False):
            raise refuse(name, True, "lmforge's modern style has no biases and full attention")
    rope = get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise refuse("rope_type", rope.get("rope_type"), "only plain RoPE, no scaling")
    n_head = hf_cfg.num_attention_heads
    head_dim = get("head_dim") or hf_cfg.hidden_size // n_head
    if head_dim * n_head != hf_cfg.hidden_size:
        raise refuse("head_dim", head_dim, "lmforge needs hidden_size / num_attention_heads")
    positions = hf_cfg.max_position_embeddings
    return GPTConfig(
        vocab_size=hf_cfg.vocab_size,
        seq_len=min(positions, seq_len or positions),
        n_layer=hf_cfg.num_hidden_layers,
        n_head=n_head,
        n_kv_head=get("num_key_value_heads") or n_head,
        n_embd=hf_cfg.hidden_size,
        mlp="swiglu",
        mlp_hidden=hf_cfg.intermediate_size,
        style="modern",
        tie_embeddings=bool(get("tie_word_embeddings", False)),
        qk_norm=architecture == "Qwen3ForCausalLM",
        rope_base=float(rope.get("rope_theta", 10000.0)),
        norm_eps=hf_cfg.rms_norm_eps,
    )


# --- tensor names: ours -> Hugging Face ------------------------------------------------------


def to_llama(sd: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Our modern GPT's state dict under LlamaForCausalLM names (Qwen3: plus q_norm / k_norm).

    Fused tensors are split by rows: ``attn.qkv`` = [q | k | v], ``mlp.gate_up`` = [gate | up].
    """
    V, hd, H, KV = cfg.vocab_size, cfg.head_dim, cfg.n_head, cfg.kv_heads
    out = {"model.embed_tokens.weight": sd["wte.weight"][:V], "model.norm.weight": sd["norm_f.weight"]}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"][:V]
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        q, k, v = sd[ours + "attn.qkv.weight"].split([H * hd, KV * hd, KV * hd])
        gate, up = sd[ours + "mlp.gate_up.weight"].chunk(2)
        out |= {
            theirs + "self_attn.q_proj.weight": q,
            theirs + "self_attn.k_proj.weight": k,
            theirs + "self_attn.v_proj.weight": v,
            theirs + "self_attn.o_proj.weight": sd[ours + "attn.o_proj.weight"],
            theirs + "mlp.gate_proj.weight": gate,
            theirs + "mlp.up_proj.weight": up,
            theirs + "mlp.down_proj.weight": sd[ours + "mlp.down_proj.weight"],
            theirs + "input_layernorm.weight": sd[ours + "attn_norm.weight"],
            theirs + "post_attention_layernorm.weight": sd[ours + "mlp_norm.weight"],
        }
        if cfg.qk_norm:
            out[theirs + "self_attn.q_norm.weight"] = sd[ours + "attn.q_norm.weight"]
            out[theirs + "self_attn.k_norm.weight"] = sd[ours + "attn.k_norm.weight"]
    return _owned(out)


def to_gpt2(sd: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Our gpt2-style GPT's state dict under GPT2LMHeadModel names.

    GPT-2's Conv1D keeps weights as (in, out), our Linear as (out, in): every matrix is transposed.
    GPT-2 always has biases; a model trained with ``bias=False`` gets zeros, which is the same function.
    """
    V = cfg.vocab_size

    def bias(name: str, size: int) -> torch.Tensor:
        return sd.get(name, torch.zeros(size))

    C = cfg.n_embd
    out = {
        "transformer.wte.weight": sd["wte.weight"][:V],
        "transformer.wpe.weight": sd["wpe.weight"],
        "transformer.ln_f.weight": sd["ln_f.weight"],
        "transformer.ln_f.bias": bias("ln_f.bias", C),
    }
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"][:V]
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            weight = sd[f"{ours}{name}.weight"]  # (out, in)
            out[f"{theirs}{name}.weight"] = weight.t()  # (in, out)
            out[f"{theirs}{name}.bias"] = bias(f"{ours}{name}.bias", weight.shape[0])
        for name in ("ln_1", "ln_2"):
            out[f"{theirs}{name}.weight"] = sd[f"{ours}{name}.weight"]
            out[f"{theirs}{name}.bias"] = bias(f"{ours}{name}.bias", C)
    return _owned(out)


# --- tensor names: Hugging Face -> ours ------------------------------------------------------


def from_llama(hf: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """A LlamaForCausalLM / Qwen3ForCausalLM state dict under our names (the inverse of to_llama)."""
    take = _Taker(hf)
    sd = {
        "wte.weight": _pad_vocab(take("model.embed_tokens.weight"), cfg),
        "norm_f.weight": take("model.norm.weight"),
    }
    if cfg.tie_embeddings:
        take.optional("lm_head.weight")  # some savers write the tied head too; it is the same tensor
    else:
        sd["lm_head.weight"] = _pad_vocab(take("lm_head.weight"), cfg)
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        qkv = [take(theirs + f"self_attn.{p}_proj.weight") for p in "qkv"]
        sd |= {
            ours + "attn.qkv.weight": torch.cat(qkv),
            ours + "attn.o_proj.weight": take(theirs + "self_attn.o_proj.weight"),
            ours + "mlp.gate_up.weight": torch.cat(
                [take(theirs + "mlp.gate_proj.weight"), take(theirs + "mlp.up_proj.weight")]
            ),
            ours + "mlp.down_proj.weight": take(theirs + "mlp.down_proj.weight"),
            ours + "attn_norm.weight": take(theirs + "input_layernorm.weight"),
            ours + "mlp_norm.weight": take(theirs + "post_attention_layernorm.weight"),
        }
        if cfg.qk_norm:
            sd[ours + "attn.q_norm.weight"] = take(theirs + "self_attn.q_norm.weight")
            sd[ours + "attn.k_norm.weight"] = take(theirs + "self_attn.k_norm.weight")
    take.check_all_used()
    return sd


def from_gpt2(hf: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """A GPT2LMHeadModel state dict under our names (the inverse of to_gpt2); biases are dropped
    when ``cfg.bias`` is False (see ``gpt2_biases_are_zero``)."""
    take = _Taker(hf)

    def put(ours: str, theirs: str, transpose: bool = False) -> None:
        weight = take(theirs + ".weight")
        sd[ours + ".weight"] = weight.t() if transpose else weight
        bias = take(theirs + ".bias")
        if cfg.bias:
            sd[ours + ".bias"] = bias

    sd = {
        "wte.weight": _pad_vocab(take("transformer.wte.weight"), cfg),
        "wpe.weight": take("transformer.wpe.weight")[: cfg.seq_len],
    }
    if cfg.tie_embeddings:
        take.optional("lm_head.weight")
    else:
        sd["lm_head.weight"] = _pad_vocab(take("lm_head.weight"), cfg)
    put("ln_f", "transformer.ln_f")
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            put(ours + name, theirs + name, transpose=True)
        for name in ("ln_1", "ln_2"):
            put(ours + name, theirs + name)
    take.check_all_used()
    return sd


def gpt2_biases_are_zero(hf: dict[str, torch.Tensor]) -> bool:
    """True when every bias is zero: such a GPT-2 is exactly our gpt2 style with ``bias=False``
    (what export writes for one), so a round trip keeps the config."""
    return all(not v.any() for k, v in hf.items() if k.endswith(".bias") and not k.endswith("attn.bias"))


# --- helpers ---------------------------------------------------------------------------------


def _owned(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous copies that share no storage (safetensors refuses shared or strided tensors)."""
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in tensors.items()}


def _pad_vocab(weight: torch.Tensor, cfg: GPTConfig) -> torch.Tensor:
    """(vocab_size, C) -> (padded_vocab_size, C) with zero rows, as our model keeps it."""
    if weight.shape[0] != cfg.vocab_size:
        raise UserError(
            f"embedding has {weight.shape[0]} rows but the config says vocab_size={cfg.vocab_size}"
        )
    padded = torch.zeros(64 * math.ceil(cfg.vocab_size / 64), weight.shape[1], dtype=weight.dtype)
    padded[: cfg.vocab_size] = weight
    return padded


class _Taker:
    """Reads tensors by name, names a missing one, and finally refuses any left unused."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors, self.used = tensors, set()

    def __call__(self, name: str) -> torch.Tensor:
        if name not in self.tensors:
            raise UserError(f"the weights have no tensor '{name}'; is the folder complete?")
        self.used.add(name)
        return self.tensors[name].to(torch.float32)

    def optional(self, name: str) -> None:
        self.used.add(name)

    def check_all_used(self) -> None:
        extra = sorted(k for k in self.tensors if k not in self.used and not k.endswith(IGNORED_SUFFIXES))
        if extra:
            raise UserError(
                f"the weights hold {len(extra)} tensor(s) lmforge has no place for, e.g. '{extra[0]}'; "
                "the model is not exactly a supported architecture"
            )
