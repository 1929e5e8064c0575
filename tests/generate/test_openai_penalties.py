"""OpenAI's presence / frequency penalties and logit_bias as a pure function, checked with numbers."""

from __future__ import annotations

import torch

from lmforge.generate.sampling import openai_penalties


def test_penalties_subtract_per_count_and_presence():
    logits = torch.tensor([[1.0, -1.0, 0.5, 2.0]])
    generated = torch.tensor([[0, 0, 1]])  # token 0 twice, token 1 once
    out = openai_penalties(logits, generated, presence=0.5, frequency=0.25)
    expected = torch.tensor([[1.0 - 0.5 - 0.5, -1.0 - 0.25 - 0.5, 0.5, 2.0]])
    torch.testing.assert_close(out, expected)


def test_bias_adds_and_nothing_changes_without_settings():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    out = openai_penalties(logits, torch.zeros(2, 0, dtype=torch.long), bias={2: -100.0, 0: 5.0})
    torch.testing.assert_close(out, torch.tensor([[6.0, 2.0, -97.0], [5.0, 0.0, -100.0]]))
    same = openai_penalties(logits, torch.tensor([[1], [2]]))
    torch.testing.assert_close(same, logits)
