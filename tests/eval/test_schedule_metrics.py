"""Schedules and metrics checked with numbers (no model needed)."""

import math

import pytest

from lmforge.config import ScheduleConfig
from lmforge.eval.metrics import bits_per_byte, cross_entropy, model_flops_utilization, perplexity, softmax
from lmforge.train.schedule import lr_factor


def test_warmup_is_linear_from_zero():
    cfg = ScheduleConfig(name="constant", warmup_steps=10)
    assert lr_factor(0, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(4, 100, cfg) == pytest.approx(0.5)
    assert lr_factor(9, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(50, 100, cfg) == 1.0


def test_cosine_midpoint_and_end():
    cfg = ScheduleConfig(name="cosine", warmup_steps=0, min_lr_frac=0.1)
    assert lr_factor(0, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(50, 100, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(25, 100, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_wsd_is_flat_then_linear_down():
    cfg = ScheduleConfig(name="wsd", warmup_steps=10, warmdown_frac=0.2, min_lr_frac=0.0)
    assert lr_factor(10, 100, cfg) == 1.0
    assert lr_factor(79, 100, cfg) == 1.0
    assert lr_factor(80, 100, cfg) == pytest.approx(1 - 1 / 20)
    assert lr_factor(89, 100, cfg) == pytest.approx(0.5)
    assert lr_factor(99, 100, cfg) == pytest.approx(0.0)


def test_bits_per_byte_arithmetic():
    # 1000 tokens at ln(2) nats each over 500 bytes: 1000 bits / 500 bytes = 2 bits per byte.
    assert bits_per_byte(1000 * math.log(2), 500) == pytest.approx(2.0)
    # A char tokenizer on ASCII: one byte per token, so bpb = loss / ln 2.
    assert bits_per_byte(1.5 * 10, 10) == pytest.approx(1.5 / math.log(2))
    with pytest.raises(ValueError):
        bits_per_byte(1.0, 0)


def test_perplexity_and_cross_entropy_worked_example():
    probs = softmax([2.0, 1.0, 0.1])
    assert sum(probs) == pytest.approx(1.0)
    assert probs[0] == pytest.approx(0.659, abs=1e-3)
    assert cross_entropy(probs, 0) == pytest.approx(0.417, abs=1e-3)
    assert perplexity(math.log(65)) == pytest.approx(65)
    assert math.isfinite(perplexity(10_000.0))


def test_mfu():
    assert model_flops_utilization(1e6, 1e4, 1e11) == pytest.approx(0.1)
    assert model_flops_utilization(1e6, 1e4, 0) == 0.0
