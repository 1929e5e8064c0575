"""The hand-written autograd functions in models/layers.py against the composites they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.models.layers import RMSNorm, _GELUTanhFn, _ReLU2Fn, _RMSNormFn, attend


def _grads(fn, *inputs):
    """(output, gradients of sum(output * fixed weights) w.r.t. each input)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    weights = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).view_as(out)
    (out * weights).sum().backward()
    return out.detach(), [t.grad for t in leaves]


def test_functions_pass_gradcheck_in_float64():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: _RMSNormFn.apply(a, b, 1e-6), (x, w))
    assert torch.autograd.gradcheck(_GELUTanhFn.apply, (x,))
    # relu² has a kink at 0 only in its second derivative; keep x away from 0 for finite differences.
    xs = (x.detach().abs() + 0.1) * torch.sign(x.detach())
    assert torch.autograd.gradcheck(_ReLU2Fn.apply, (xs.requires_grad_(True),))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_matches_the_composite(dtype):
    torch.manual_seed(1)
    x = torch.randn(4, 7, 32).to(dtype)
    w = torch.rand(32) + 0.5
    norm = RMSNorm(32, 1e-6)
    norm.weight.data.copy_(w)

    def composite(a, b):
        return F.rms_norm(a.float(), (32,), b, 1e-6).to(a.dtype)

    y_ref, (gx_ref, gw_ref) = _grads(composite, x, w)
    y, (gx, gw) = _grads(lambda a, b: _RMSNormFn.apply(a, b, 1e-6), x, w)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(gx, gx_ref, **tol)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-4, atol=1e-3)
    assert y.dtype == dtype and gx.dtype == dtype and gw.dtype == torch.float32
    # Without gradients the module takes ATen's path: same values.
    with torch.no_grad():
        torch.testing.assert_close(norm(x), y, **tol)


def test_gelu_and_relu2_match_aten():
    torch.manual_seed(2)
    x = torch.randn(6, 50) * 3
    y_ref, (g_ref,) = _grads(lambda a: F.gelu(a, approximate="tanh"), x)
    y, (g,) = _grads(_GELUTanhFn.apply, x)  # the modules run these only where fastpaths.py chose them
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)
    y_ref, (g_ref,) = _grads(lambda a: F.relu(a).square(), x)
    y, (g,) = _grads(_ReLU2Fn.apply, x)
    assert torch.equal(y, y_ref) and torch.equal(g, g_ref)
    # bf16 (what autocast hands the activation): within bf16 rounding of the fp32 result.
    xb = x.bfloat16()
    y, (g,) = _grads(_GELUTanhFn.apply, xb)
    y_ref, (g_ref,) = _grads(lambda a: F.gelu(a, approximate="tanh"), x)
    torch.testing.assert_close(y.float(), y_ref, rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(g.float(), g_ref, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("n_kv", [4, 2])
def test_math_attention_matches_sdpa_with_and_without_a_cache_prefix(n_kv):
    torch.manual_seed(3)
    B, H, T, hd = 2, 4, 6, 8
    blocked = torch.ones(16, 16, dtype=torch.bool).triu(1)
    q = torch.randn(B, H, T, hd)
    k, v = torch.randn(B, n_kv, T + 3, hd), torch.randn(B, n_kv, T + 3, hd)
    for pos, kk, vv in ((0, k[:, :, :T], v[:, :, :T]), (3, k, v)):
        ref = attend(q, kk, vv, "sdpa", blocked, pos, 0.0)
        torch.testing.assert_close(attend(q, kk, vv, "math", blocked, pos, 0.0), ref, rtol=1e-5, atol=1e-5)
    one = q[:, :, :1]
    torch.testing.assert_close(
        attend(one, k, v, "math", blocked, T + 2, 0.0), attend(one, k, v, "sdpa", blocked, T + 2, 0.0)
    )
