"""lmforge's AdamW: the same updates as torch.optim.AdamW(fused=True), and interchangeable state."""

from __future__ import annotations

import subprocess
import sys

import torch

from lmforge.config import OptimConfig
from lmforge.train.optim import AdamW, build_optimizers


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


def test_building_and_stepping_does_not_import_the_compiler():
    # The reason the class exists: torch.optim imports torch._dynamo (~1.2 s of start-up).
    code = (
        "import sys, torch\n"
        "from lmforge.config import OptimConfig\n"
        "from lmforge.train.optim import build_optimizers\n"
        "m = torch.nn.Linear(4, 4)\n"
        "opt = build_optimizers(OptimConfig(), m)[0]\n"
        "m(torch.randn(2, 4)).sum().backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)\n"
        "opt.step(); opt.zero_grad()\n"
        "assert isinstance(opt, torch.optim.Optimizer)\n"
        "opt.load_state_dict(opt.state_dict())\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
