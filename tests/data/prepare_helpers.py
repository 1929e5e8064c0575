"""Text the data-stage misuse tests make for themselves, and the check that a prepare fails in one line."""

from __future__ import annotations

import random

from lmforge.cli import main

_LINE = "when in the course of human events it becomes necessary for one people to dissolve bands"
WORDS = _LINE.split()


def prose(seed: int, n_lines: int = 200) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(WORDS) for _ in range(9)) for _ in range(n_lines)) + "\n"


def song(seed: int) -> str:
    """Verses between a chorus sung again and again: most of its characters are repeated lines."""
    rng = random.Random(seed)
    chorus = "\n".join(" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(4))
    return "\n\n".join([prose(seed + 100, 2), chorus, chorus, chorus, chorus])


def fails(capsys, argv: list[str], *needles: str) -> str:
    assert main(["data", "prepare", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err
