"""lmforge as an installed package: a wheel built from the repository, installed into a fresh venv and run
from another folder, finds its presets, its chat page and runs the pipeline -- nothing read from the
checkout. The venv reuses the current interpreter's third-party packages through a .pth line (torch is
too big to install per test) but gets lmforge only from the wheel, and PYTHONPATH is cleared."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(python: Path, args: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    work = tmp_path_factory.mktemp("wheel")
    src = work / "repo"  # build from a copy: the build writes build/ and *.egg-info next to its sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    build = [
        *pip,
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        str(work / "dist"),
        str(src),
    ]
    subprocess.run(build, check=True, capture_output=True, env=env, timeout=600)
    wheel = next((work / "dist").glob("lmforge-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       capture_output=True, text=True, check=True, env=env).stdout.strip()
    )  # fmt: skip
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, env=env, timeout=600)  # fmt: skip
    # The dependencies, but not the checkout's lmforge: the current site-packages, after the venv's own.
    (site / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    return python, site, elsewhere, env


def test_wheel_runs_from_another_folder(installed):
    python, site, cwd, env = installed

    def run(*args: str) -> str:
        return _run(python, list(args), cwd, env)

    where = run("-c", "import lmforge, lmforge.presets as p; print(lmforge.__file__); print(p.names())")
    assert where.splitlines()[0].startswith(str(site)) and "gpt-small" in where
    page = run("-c", "from lmforge.serve.app import STATIC; print(STATIC / 'index.html')")
    assert Path(page.strip()).is_file() and page.startswith(str(site))

    rng = random.Random(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis", "nobler", "mind"]
    paragraphs = [" ".join(rng.choice(words) for _ in range(40)) for _ in range(120)]
    (cwd / "notes.txt").write_text("\n\n".join(paragraphs))
    run("-m", "lmforge", "data", "prepare", "--source", "notes.txt", "--out", "data", "--tokenizer", "char")
    tiny = ["--no-progress", "train.batch_size=2", "train.eval_tokens=256"]
    out = run(
        "-m",
        "lmforge",
        "train",
        "--data",
        "data",
        "--out",
        "run",
        "--config",
        "gpt-small",
        "--max-steps",
        "2",
        *tiny,
    )
    assert "step" in out
    # `lmforge demo`'s pipeline, on the tiny corpus and preset (the built-in corpus needs the network)
    demo = run(
        "-m",
        "lmforge",
        "demo",
        "--source",
        "notes.txt",
        "--out",
        "demo",
        "--config",
        "gpt-tiny",
        "--time-budget",
        "3",
    )
    assert "step 7/7" in demo
    walk = run(str(ROOT / "docs" / "walkthrough.py"), "--tiny", "--source", "notes.txt", "--out", "walk")
    assert (cwd / "walk" / "summary.json").is_file(), walk[-500:]
