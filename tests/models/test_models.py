"""Models: shapes, causality, loss at init, overfitting, KV cache = recomputation, precision, counts."""

import dataclasses
import math
import subprocess
import sys
import tomllib

import pytest
import torch

import lmforge.presets
from lmforge.errors import UserError
from lmforge.models import GPT, MODELS, GPTConfig, GRUConfig, build_model, model_config_from_dict
from lmforge.models.registry import build_unfilled

torch.set_num_threads(1)
V = 50  # a vocabulary that is not a multiple of 64, so padding is exercised

CONFIGS = {
    "modern": GPTConfig(vocab_size=V, seq_len=32, n_layer=2, n_head=2, n_embd=32, qk_norm=True),
    "modern-gqa-math-tied": GPTConfig(
        vocab_size=V, seq_len=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, mlp="relu2",
        tie_embeddings=True, attn_impl="math", logit_softcap=15.0,
    ),
    "gpt2": GPTConfig(
        vocab_size=V, seq_len=32, n_layer=2, n_head=2, n_embd=32, style="gpt2", mlp="gelu",
        tie_embeddings=True,
    ),
    "gru": GRUConfig(vocab_size=V, seq_len=32, n_layer=2, n_embd=16, hidden=32),
}  # fmt: skip


def make(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(CONFIGS[name])


@pytest.fixture(params=list(CONFIGS))
def name(request):
    return request.param


def test_shapes_and_padding(name):
    model = make(name)
    idx = torch.randint(0, V, (3, 20))
    logits = model(idx)
    assert logits.shape == (3, 20, V) and logits.dtype == torch.float32
    assert model.wte.weight.shape[0] == 64  # padded to a multiple of 64
    loss = model(idx, torch.randint(0, V, (3, 20)))
    assert loss.dim() == 0 and loss.dtype == torch.float32


def test_causal(name):
    model = make(name).eval()
    idx = torch.randint(0, V, (2, 16))
    changed = idx.clone()
    changed[:, 10] = (changed[:, 10] + 1) % V
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_loss_at_init_is_log_vocab(name):
    model = make(name)
    idx, targets = torch.randint(0, V, (8, 32)), torch.randint(0, V, (8, 32))
    assert abs(model(idx, targets).item() - math.log(V)) < 0.15


def test_ignore_index():
    model = make("modern")
    idx, targets = torch.randint(0, V, (2, 8)), torch.randint(0, V, (2, 8))
    masked = targets.clone()
    masked[:, 4:] = -1
    logits = model(idx)
    expected = torch.nn.functional.cross_entropy(logits[:, :4].reshape(-1, V), targets[:, :4].reshape(-1))
    torch.testing.assert_close(model(idx, masked), expected)


def test_overfits_one_batch(name):
    model = make(name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    idx = torch.randint(0, V, (4, 16))
    for _ in range(150):
        loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


@pytest.mark.parametrize("chunks", [[9, 1, 1, 1, 5, 1], [1, 1, 1, 1], [32]])
def test_cache_matches_recompute(name, chunks):
    """Feeding a sequence in pieces through the cache gives the logits of one full pass."""
    model = make(name).eval()
    total = sum(chunks)
    idx = torch.randint(0, V, (2, total))
    full = model(idx)
    cache = model.new_cache(2, 32)
    pieces, pos = [], 0
    for n in chunks:
        pieces.append(model(idx[:, pos : pos + n], cache=cache))
        pos += n
    assert cache.pos == total
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cache_overflow_is_a_user_error():
    model = make("modern").eval()
    cache = model.new_cache(1, 8)
    model(torch.zeros(1, 8, dtype=torch.long), cache=cache)
    with pytest.raises(UserError, match="context"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)
    with pytest.raises(UserError, match="seq_len"):
        model.new_cache(1, 33)
    with pytest.raises(UserError, match="context"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_bf16_autocast_close_to_fp32(name):
    model = make(name).eval()
    idx = torch.randint(0, V, (2, 16))
    ref = model(idx)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        low = model(idx)
        loss = model(idx, idx)
    assert loss.dtype == torch.float32
    assert (low.float() - ref).abs().max().item() < 0.05 * ref.abs().max().item() + 0.02


def test_counts(name):
    model = make(name)
    table = model.param_table()
    assert sum(count for _, _, count in table) == model.num_params()
    assert model.num_params() == sum(p.numel() for p in model.parameters())
    assert model.num_params(exclude_embeddings=True) < model.num_params()
    assert model.flops_per_token() > 6 * model.num_params(exclude_embeddings=True) // 2


def test_an_unfilled_model_counts_like_a_built_one_and_leaves_the_initialisers_alone(name):
    unfilled = build_unfilled(CONFIGS[name])
    built = make(name)
    assert [(n, p.shape) for n, p in unfilled.named_parameters()] == [
        (n, p.shape) for n, p in built.named_parameters()
    ]
    for exclude in (False, True):
        assert unfilled.num_params(exclude_embeddings=exclude) == built.num_params(exclude_embeddings=exclude)
    if hasattr(built, "flops_per_token"):
        assert unfilled.flops_per_token() == built.flops_per_token()
    weight = torch.empty(3, 4)
    torch.nn.init.ones_(weight)  # the initialisers are restored afterwards
    assert torch.equal(weight, torch.ones(3, 4))


def test_counting_a_candidate_does_not_import_the_compiler():
    # --auto counts every candidate's FLOPs; on the meta device that imported torch._dynamo (~1 s)
    code = (
        "import sys\n"
        "from lmforge.models.gpt import GPTConfig\n"
        "from lmforge.models.registry import build_unfilled\n"
        "m = build_unfilled(GPTConfig(vocab_size=4096, seq_len=128, n_layer=6, n_head=8, n_embd=256))\n"
        "print(m.flops_per_token() > 0, 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True False"


def test_flops_per_token_by_hand():
    cfg = GPTConfig(vocab_size=V, seq_len=32, n_layer=2, n_head=2, n_embd=32, mlp="gelu")
    model = GPT(cfg)
    C, L = 32, 2
    matmul = L * (3 * C * C + C * C + 2 * 4 * C * C) + V * C  # qkv, o_proj, up/down, head rows
    assert model.flops_per_token() == 6 * matmul + 12 * L * C * 32


def test_tied_head_is_one_tensor():
    model = make("gpt2")
    assert not any(k.startswith("lm_head") for k in model.state_dict())
    assert "rope_cos" not in make("modern").state_dict()  # tables are rebuilt, not stored


def test_gpt_config_validation():
    with pytest.raises(UserError, match=r"model.n_embd \(100\) must be divisible by model.n_head \(3\)"):
        GPTConfig(n_embd=100, n_head=3)
    with pytest.raises(UserError, match="model.mlp"):
        GPTConfig(mlp="tanh")
    with pytest.raises(UserError, match="model.n_kv_head"):
        GPTConfig(n_head=4, n_kv_head=3)
    with pytest.raises(UserError, match="model.mlp"):
        GPTConfig(style="gpt2")  # swiglu is not GPT-2
    with pytest.raises(UserError, match="model.style"):
        GPTConfig(style="llama")
    with pytest.raises(UserError, match="model.dropout"):
        GPTConfig(dropout=1.5)
    with pytest.raises(UserError, match="vocab_size"):
        GPT(GPTConfig())  # vocab_size still unknown


def test_resolved_defaults():
    cfg = GPTConfig(vocab_size=65, n_embd=128, n_head=4)
    assert (cfg.kv_heads, cfg.head_dim, cfg.hidden_dim, cfg.eps, cfg.padded_vocab_size) == (
        4,
        32,
        384,
        1e-6,
        128,
    )
    gpt2 = dataclasses.replace(cfg, style="gpt2", mlp="gelu")
    assert (gpt2.hidden_dim, gpt2.eps) == (512, 1e-5)


def test_gru_config_validation():
    with pytest.raises(UserError, match="model.tie"):
        GRUConfig(tie=True, n_embd=16, hidden=32)
    with pytest.raises(UserError, match="model.hidden"):
        GRUConfig(hidden=0)


def test_registry_and_presets():
    assert set(MODELS) == {"gpt", "gru", "task"}  # "task": a fine-tuned backbone + head (models/heads.py)
    with pytest.raises(UserError, match="model.n_layers"):
        model_config_from_dict({"family": "gpt", "n_layers": 2})
    with pytest.raises(UserError, match="model.family"):
        model_config_from_dict({"family": "lstm"})
    presets = sorted(lmforge.presets.folder().glob("g*.toml"))
    assert len(presets) >= 4
    for path in presets:
        section = tomllib.loads(path.read_text())["model"]
        model = build_model(model_config_from_dict({**section, "vocab_size": 65}))
        assert model.num_params() > 0, path


def _to_hf(model):
    """Our tensors under Hugging Face names (the map export will use), and the HF model to load them."""
    tf = pytest.importorskip("transformers")
    c, V_ = model.config, model.config.vocab_size
    head = (model.wte.weight if model.lm_head is None else model.lm_head.weight)[:V_]
    sd = {"lm_head.weight": head}
    if c.style == "gpt2":
        hf_cfg = tf.GPT2Config(
            vocab_size=V_,
            n_positions=c.seq_len,
            n_embd=c.n_embd,
            n_layer=c.n_layer,
            n_head=c.n_head,
            n_inner=c.hidden_dim,
            activation_function="gelu_new",
            layer_norm_epsilon=c.eps,
            tie_word_embeddings=c.tie_embeddings,
            resid_pdrop=0,
            embd_pdrop=0,
            attn_pdrop=0,
        )
        hf = tf.GPT2LMHeadModel(hf_cfg)
        sd |= {"transformer.wte.weight": model.wte.weight[:V_], "transformer.wpe.weight": model.wpe.weight}
        sd |= {f"transformer.{k}": v for k, v in model.ln_f.state_dict().items() for k in [f"ln_f.{k}"]}
        for i, b in enumerate(model.blocks):
            for k, v in b.state_dict().items():  # Conv1D stores Linear weights transposed
                sd[f"transformer.h.{i}.{k}"] = v.t() if v.dim() == 2 else v
    else:
        kw = dict(
            vocab_size=V_,
            hidden_size=c.n_embd,
            intermediate_size=c.hidden_dim,
            num_hidden_layers=c.n_layer,
            num_attention_heads=c.n_head,
            num_key_value_heads=c.kv_heads,
            head_dim=c.head_dim,
            max_position_embeddings=c.seq_len,
            rms_norm_eps=c.eps,
            tie_word_embeddings=c.tie_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": c.rope_base},
        )
        hf = (
            tf.Qwen3ForCausalLM(tf.Qwen3Config(**kw))
            if c.qk_norm
            else tf.LlamaForCausalLM(tf.LlamaConfig(**kw))
        )
        sd |= {"model.embed_tokens.weight": model.wte.weight[:V_], "model.norm.weight": model.norm_f.weight}
        hd, H, KV = c.head_dim, c.n_head, c.kv_heads
        for i, b in enumerate(model.blocks):
            p = f"model.layers.{i}."
            q, k, v = b.attn.qkv.weight.split([H * hd, KV * hd, KV * hd])
            gate, up = b.mlp.gate_up.weight.chunk(2)
            sd |= {
                p + "self_attn.q_proj.weight": q,
                p + "self_attn.k_proj.weight": k,
                p + "self_attn.v_proj.weight": v,
                p + "self_attn.o_proj.weight": b.attn.o_proj.weight,
                p + "mlp.gate_proj.weight": gate,
                p + "mlp.up_proj.weight": up,
                p + "mlp.down_proj.weight": b.mlp.down_proj.weight,
                p + "input_layernorm.weight": b.attn_norm.weight,
                p + "post_attention_layernorm.weight": b.mlp_norm.weight,
            }
            if c.qk_norm:
                sd[p + "self_attn.q_norm.weight"] = b.attn.q_norm.weight
                sd[p + "self_attn.k_norm.weight"] = b.attn.k_norm.weight
    missing, unexpected = hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)
    assert not unexpected and all("rotary" in k or k.endswith("attn.bias") for k in missing), missing
    return hf.eval()


@pytest.mark.parametrize(
    "overrides",
    [
        dict(qk_norm=False),  # Llama
        dict(qk_norm=True, n_kv_head=1, tie_embeddings=True),  # Qwen3 with GQA
        dict(style="gpt2", mlp="gelu", tie_embeddings=True),  # GPT-2
    ],
)
def test_same_logits_as_hugging_face(overrides):
    """The architecture maps exactly: skipped where transformers is not installed."""
    cfg = GPTConfig(**{"vocab_size": V, "seq_len": 32, "n_layer": 2, "n_head": 2, "n_embd": 32, **overrides})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # move norms and biases off 1/0 so a wrong map would show
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
        hf = _to_hf(model)
        idx = torch.randint(0, V, (2, 24))
        torch.testing.assert_close(hf(idx).logits, model(idx), atol=1e-5, rtol=1e-5)


def test_zero_init_proj_starts_blocks_as_identity():
    cfg = dataclasses.replace(CONFIGS["modern"], zero_init_proj=True)
    model = build_model(cfg)
    assert all(
        b.attn.o_proj.weight.abs().sum() == 0 and b.mlp.down_proj.weight.abs().sum() == 0
        for b in model.blocks
    )
    assert (
        abs(
            model(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long)).item()
            - math.log(V)
        )
        < 0.2
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_cache_matches_recompute(name):
    model = make(name).cuda().eval()
    idx = torch.randint(0, V, (2, 20), device="cuda")
    with torch.no_grad():
        cache = model.new_cache(2, 32, device="cuda")
        pieces = [model(idx[:, :7], cache=cache)] + [
            model(idx[:, i : i + 1], cache=cache) for i in range(7, 20)
        ]
        torch.testing.assert_close(torch.cat(pieces, 1), model(idx), atol=1e-4, rtol=1e-4)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert model(idx, idx).dtype == torch.float32
