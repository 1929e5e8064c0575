"""lmforge's AdamW: the same updates as torch.optim.AdamW(fused=True), and interchangeable state."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lmforge.config import OptimConfig
from lmforge.train.optim import AdamW, Muon, build_optimizers


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def _groups(model: torch.nn.Module) -> list[dict]:
    mats = [p for p in model.parameters() if p.ndim == 2]
    vecs = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": mats, "weight_decay": 0.1}, {"params": vecs, "weight_decay": 0.0}]


def _train(model, opt, steps: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(5, 8, generator=gen)
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_adamw_matches_torch_fused_bit_for_bit():
    ours_model, ref_model = _model(), _model()
    ours = AdamW(_groups(ours_model), lr=3e-2, betas=(0.9, 0.95), eps=1e-8)
    ref = torch.optim.AdamW(_groups(ref_model), lr=3e-2, betas=(0.9, 0.95), eps=1e-8, fused=True)
    _train(ours_model, ours, 7)
    _train(ref_model, ref, 7)
    for a, b in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_adamw_state_moves_between_torch_and_ours():
    # Train 3 steps with ours, continue in torch's from our state dict, and the other way round;
    # both must equal 6 uninterrupted steps.
    straight = _model()
    _train(straight, AdamW(_groups(straight), lr=1e-2, betas=(0.9, 0.99), eps=1e-8), 6)

    first = _model()
    ours = AdamW(_groups(first), lr=1e-2, betas=(0.9, 0.99), eps=1e-8)
    _train(first, ours, 3)
    torch_opt = torch.optim.AdamW(_groups(first), lr=1e-2, betas=(0.9, 0.99), eps=1e-8, fused=True)
    torch_opt.load_state_dict(ours.state_dict())
    gen_rest = 3  # same batches as steps 4..6 of the straight run
    gen = torch.Generator().manual_seed(1)
    for _ in range(gen_rest):
        torch.randn(5, 8, generator=gen)
    for _ in range(3):
        first(torch.randn(5, 8, generator=gen)).square().mean().backward()
        torch_opt.step()
        torch_opt.zero_grad(set_to_none=True)
    for a, b in zip(first.parameters(), straight.parameters(), strict=True):
        assert torch.equal(a, b)

    back = _model()
    ours_again = AdamW(_groups(back), lr=1e-2, betas=(0.9, 0.99), eps=1e-8)
    for p, q in zip(back.parameters(), first.parameters(), strict=True):
        p.data.copy_(q)
    ours_again.load_state_dict(torch_opt.state_dict())
    assert ours_again.state_dict()["state"].keys() == torch_opt.state_dict()["state"].keys()
    for key, st in torch_opt.state_dict()["state"].items():
        for name, value in st.items():
            assert torch.equal(ours_again.state_dict()["state"][key][name], value)


def test_adamw_is_the_default_and_torch_is_used_when_sharded():
    model = _model()
    cfg = OptimConfig()
    assert isinstance(build_optimizers(cfg, model)[0], AdamW)
    assert isinstance(build_optimizers(cfg, model, sharded=True)[0], torch.optim.AdamW)


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_building_and_stepping_does_not_import_the_compiler(name):
    # The reason the classes exist: torch.optim imports torch._dynamo (~1.2 s of start-up).
    code = (
        "import sys, torch\n"
        "from lmforge.config import OptimConfig\n"
        "from lmforge.train.optim import build_optimizers\n"
        "m = torch.nn.Linear(4, 4)\n"
        f"opts = build_optimizers(OptimConfig(name={name!r}), m)\n"
        "m(torch.randn(2, 4)).sum().backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)\n"
        "for opt in opts:\n"
        "    opt.step(); opt.zero_grad()\n"
        "    assert isinstance(opt, torch.optim.Optimizer)\n"
        "    opt.load_state_dict(opt.state_dict())\n"
        "print(len(opts), 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"{1 if name == 'adamw' else 2} False"


def _muon_pair(ns_dtype):
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(8, 5)), torch.nn.Parameter(torch.randn(5, 8))]
    copies = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    kw = {"lr": 0.02, "momentum": 0.95, "adjust_lr_fn": "original"}
    ours = Muon([{"params": weights, "weight_decay": 0.1}], ns_dtype=ns_dtype, **kw)
    theirs = torch.optim.Muon([{"params": copies, "weight_decay": 0.1}], **kw)
    for step in range(3):
        for w, c in zip(weights, copies, strict=True):
            w.grad = torch.randn(w.shape, generator=torch.Generator().manual_seed(step))
            c.grad = w.grad.clone()
        ours.step()
        theirs.step()
        ours.zero_grad()
        theirs.zero_grad()
    return ours, theirs, weights, copies


def test_muon_in_bfloat16_is_torchs_update_and_its_state_moves_both_ways():
    ours, theirs, weights, copies = _muon_pair(torch.bfloat16)
    for w, c in zip(weights, copies, strict=True):
        torch.testing.assert_close(w, c, rtol=0, atol=0)
    assert ours.state_dict()["param_groups"] == theirs.state_dict()["param_groups"]
    torch.testing.assert_close(ours.state_dict()["state"], theirs.state_dict()["state"], rtol=0, atol=0)
    params = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    fresh = Muon([{"params": params, "weight_decay": 0.1}], lr=0.02, adjust_lr_fn="original")
    fresh.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(fresh.state_dict()["state"], ours.state_dict()["state"], rtol=0, atol=0)
    assert fresh.param_groups[0]["ns_coefficients"] == theirs.param_groups[0]["ns_coefficients"]


def test_muon_on_the_cpu_orthogonalises_in_float32_close_to_torchs_bfloat16():
    ours, theirs, weights, copies = _muon_pair(None)
    moved = [(w - c).abs().max().item() for w, c in zip(weights, copies, strict=True)]
    assert max(moved) > 0  # not torch's bf16 arithmetic ...
    for w, c in zip(weights, copies, strict=True):
        torch.testing.assert_close(w, c, rtol=0, atol=2e-3)  # ... but the same update to bf16's precision


def test_muon_orthogonalises_same_shaped_matrices_together_as_it_would_one_by_one():
    from lmforge.train.optim import _newton_schulz

    g = torch.Generator().manual_seed(0)
    shapes = [(8, 24), (24, 8), (8, 24), (8, 8), (16, 8), (8, 8)]  # two batches (one transposed), a single
    updates = [torch.randn(s, generator=g) for s in shapes]
    opt = Muon([torch.nn.Parameter(torch.zeros(1, 1))], lr=0.02)
    coefficients, steps, eps = (3.4445, -4.7750, 2.0315), 5, 1e-7
    together = opt._orthogonalised(updates, coefficients, steps, eps)
    for u, t in zip(updates, together, strict=True):
        alone = _newton_schulz(u, coefficients, steps, eps, torch.float32)
        assert t.shape == u.shape
        torch.testing.assert_close(t, alone, rtol=1e-5, atol=1e-5)
