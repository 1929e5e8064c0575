"""Training presets (TOML files with sections model, optim, schedule, train, data) shipped as package data.

Why inside the package: a preset found through a path relative to the source checkout works only from an
editable install in the repository; as package data (read through `importlib.resources`) `lmforge train
--config gpt-small` works the same from a wheel installed anywhere.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def folder() -> Path:
    """The folder holding the preset files (a real folder: the package is installed unzipped)."""
    return Path(str(resources.files(__name__)))


def names() -> list[str]:
    return sorted(p.stem for p in folder().glob("*.toml"))


def path(name: str) -> Path | None:
    """The file of preset `name` (with or without .toml), or None if there is no such preset."""
    candidate = folder() / (name if name.endswith(".toml") else f"{name}.toml")
    return candidate if candidate.is_file() else None
