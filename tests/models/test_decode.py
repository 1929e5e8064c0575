"""Batch-1 decoding through each block's ``decode``: same logits as the model's forward, same tokens
as the forward path, for both styles and every option; everything else falls back to the forward."""

import pytest
import torch

from lmforge.generate import engine, generate_tokens
from lmforge.models import GPTConfig, GRUConfig, build_model, decode
from lmforge.models.decode import Decoder, covers, prepared, rope_matrices
from lmforge.models.layers import rope_tables, rotate
from lmforge.models.lora import add_lora

torch.set_num_threads(1)
V = 40
SMALL = dict(vocab_size=V, seq_len=16, n_layer=2, n_embd=32)
CONFIGS = {
    "modern-qknorm": GPTConfig(**SMALL, n_head=2, qk_norm=True),
    "modern-gqa-softcap-tied": GPTConfig(
        **SMALL, n_head=4, n_kv_head=2, logit_softcap=4.0, tie_embeddings=True, attn_impl="math"
    ),
    "modern-relu2-mqa": GPTConfig(**SMALL, n_head=4, n_kv_head=1, mlp="relu2", qk_norm=True),
    "modern-gelu": GPTConfig(**SMALL, n_head=2, mlp="gelu"),
    "modern-relu": GPTConfig(**SMALL, n_head=2, mlp="relu", norm_eps=1e-5),
    "gpt2-tied": GPTConfig(**SMALL, n_head=2, style="gpt2", mlp="gelu", tie_embeddings=True),
    "gpt2-nobias": GPTConfig(**SMALL, n_head=4, style="gpt2", mlp="relu2", bias=False),
}


def peaky(cfg, biases: bool = False):
    """A random model with large block weights and non-trivial norm scales (so greedy does not
    collapse to one token and the folded norm weights are exercised); ``biases`` perturbs the biases
    and LayerNorm shifts too (logits only: at these sizes they made greedy gpt2 repeat one token)."""
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1 and name.startswith("blocks."):
                p.mul_(5.0)
            elif p.dim() == 1 and (biases or name.endswith("weight")):
                p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def module_path(monkeypatch):
    monkeypatch.setattr(engine, "covers", lambda model: False)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_step_logits_match_forward(name):
    model = peaky(CONFIGS[name], biases=True)
    assert covers(model)
    ids = torch.randint(0, V, (1, 14), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        cache = model.new_cache(1, 16)
        model(ids[:, :3], cache=cache)  # prefill by the model, then one position at a time
        step = Decoder(model, cache).step
        got = torch.cat([step(int(t)) for t in ids[0, 3:]])
        assert cache.pos == 14
        want = model(ids)[0, 3:]  # (11, V), no cache
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_tokens_as_module_path(name, monkeypatch):
    """Greedy and seeded sampling (penalty, top-k, top-p), past the 16-token window (slides)."""
    model = peaky(CONFIGS[name])
    prompt = [1, 2, 3, 4, 5]
    opts = dict(temperature=1.0, top_k=10, top_p=0.9, repetition_penalty=1.3, seed=7)
    fast = [
        list(generate_tokens(model, prompt, 40, temperature=0)),
        list(generate_tokens(model, prompt, 40, **opts)),
    ]
    assert len(set(fast[0])) >= 3  # not one repeated token
    module_path(monkeypatch)
    slow = [
        list(generate_tokens(model, prompt, 40, temperature=0)),
        list(generate_tokens(model, prompt, 40, **opts)),
    ]
    assert fast == slow


def test_one_token_prompt_and_eot(monkeypatch):
    model = peaky(CONFIGS["modern-qknorm"])
    greedy = list(generate_tokens(model, [0], 12, temperature=0))
    stopped = list(generate_tokens(model, [0], 12, temperature=0, eot_id=greedy[4]))
    assert stopped == greedy[: greedy.index(greedy[4])]
    module_path(monkeypatch)
    assert greedy == list(generate_tokens(model, [0], 12, temperature=0))


def test_fallbacks():
    lora = peaky(CONFIGS["modern-qknorm"])
    add_lora(lora, rank=2, alpha=4.0)
    hooked = peaky(CONFIGS["gpt2-tied"])  # a hook would be skipped by the fast path
    hooked.blocks[0].register_forward_hook(lambda *args: None)
    patched = peaky(CONFIGS["gpt2-tied"])
    patched.forward = patched.forward  # e.g. tests/serving.py's Knobs counts and slows calls
    half = peaky(CONFIGS["gpt2-tied"]).to(torch.bfloat16)
    gru = build_model(GRUConfig(vocab_size=V, seq_len=16, n_layer=1, n_embd=16, hidden=16))
    for model in (lora, hooked, patched, half, gru):
        assert not covers(model)
        assert len(list(generate_tokens(model, [1, 2], 5, temperature=0))) == 5  # the module path


def test_weights_rebuilt_when_changed():
    model = peaky(CONFIGS["modern-qknorm"])
    first = prepared(model)
    assert prepared(model) is first  # reused by the next stream
    before = list(generate_tokens(model, [1, 2], 10, temperature=0))
    with torch.no_grad():
        model.blocks[0].mlp.down_proj.weight.mul_(-1.0)  # e.g. a training step in between
    assert prepared(model) is not first
    after = list(generate_tokens(model, [1, 2], 10, temperature=0))
    with torch.no_grad():
        want = model(torch.tensor([[1, 2] + after[:-1]]))[0].argmax(-1).tolist()  # greedy = argmax
    assert after == want[1:] and after != before
    assert len(decode._PREPARED) >= 1


def test_rope_matrices_rotate():
    cos, sin = rope_tables(8, 6, 10000.0)
    x = torch.randn(8, 3, 6)  # (T, heads, head_dim)
    want = rotate(x[None], cos, sin)[0]
    got = torch.einsum("thd,tde->the", x, rope_matrices(cos, sin))
    torch.testing.assert_close(got, want)
