"""Scaling fit: known exponents recovered from synthetic points; the closed-form optimum; bad input."""

from __future__ import annotations

import numpy as np
import pytest

from lmforge.cli import main
from lmforge.errors import UserError
from lmforge.tune.scaling import ScalingFit, fit_scaling

CHINCHILLA = ScalingFit(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28, rmse_log=0.0)


def ladder(noise: float = 0.0, seed: int = 0):
    n, d = np.meshgrid(np.geomspace(1e5, 1e8, 4), np.geomspace(1e7, 1e10, 4))
    n, d = n.ravel(), d.ravel()
    loss = CHINCHILLA.loss(n, d) * np.exp(np.random.default_rng(seed).normal(0, noise, n.shape))
    return n, d, loss


def test_fit_recovers_known_exponents():
    fit = fit_scaling(*ladder())
    assert fit.alpha == pytest.approx(0.34, abs=0.01) and fit.beta == pytest.approx(0.28, abs=0.01)
    assert pytest.approx(1.69, rel=0.02) == fit.E and fit.rmse_log < 1e-6


def test_fit_is_robust_to_a_little_noise():
    fit = fit_scaling(*ladder(noise=0.002))
    assert fit.alpha == pytest.approx(0.34, abs=0.08) and fit.beta == pytest.approx(0.28, abs=0.08)


def test_compute_optimal_matches_a_brute_force_search():
    flops = 1e20
    n_opt, d_opt, loss = CHINCHILLA.optimal(flops)
    grid = np.geomspace(1e6, 1e12, 200_001)
    brute = grid[np.argmin(CHINCHILLA.loss(grid, flops / (6 * grid)))]
    assert n_opt == pytest.approx(brute, rel=1e-3) and 6 * n_opt * d_opt == pytest.approx(flops)
    assert loss == pytest.approx(float(CHINCHILLA.loss(brute, flops / (6 * brute))), rel=1e-6)


def test_too_few_points_is_a_user_error():
    with pytest.raises(UserError, match="at least 6 points"):
        fit_scaling([1e5, 1e6], [1e7, 1e8], [3.0, 2.5])


def test_bad_ladders_fail_before_training(char_data, tmp_path, capsys):
    out = str(tmp_path / "s")
    assert main(["scaling", "--data", str(char_data), "--out", out, "--widths", "16"]) == 2
    assert "at least 2 widths" in capsys.readouterr().err
    assert main(["scaling", "--data", str(char_data), "--out", out, "--budget", "1e3", "2e3"]) == 2
    assert "raise --budget" in capsys.readouterr().err
    assert main(["scaling", "--data", str(tmp_path / "nope"), "--out", out]) == 2
    assert main(["scaling", "--data", str(char_data), "--out", out, "model.n_layr=2"]) == 2
    assert "did you mean 'model.n_layer'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_tiny_ladder_end_to_end(char_data, tmp_path):
    out = tmp_path / "ladder"
    args = ["scaling", "--data", str(char_data), "--out", str(out), "train.eval_tokens=512",
            "model.seq_len=32", "--widths", "8", "16", "24", "--budget", "2e8", "4e8"]  # fmt: skip
    assert main(args) == 0
    text = (out / "scaling.md").read_text(encoding="utf-8")
    assert "only as good as the ladder" in text and text.count("| 8 |") == 2
    assert (out / "scaling.png").is_file()
