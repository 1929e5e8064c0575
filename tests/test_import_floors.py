"""The house has no back stairs: imports run downward only (ground -> train -> the stages -> serve ->
cli, as the README's "The code" says) and no two modules import each other, directly or round a loop.
Read from the source with `ast`, so a lazy import inside a function counts too."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lmforge"
GROUND_IN_EVAL = {"lmforge.eval.metrics", "lmforge.eval.loss"}  # pure maths training uses as well
FLOORS = {"train": 1, "eval": 2, "generate": 2, "tune": 2, "finetune": 2, "export": 2, "serve": 3, "cli": 4}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> int:
    if module in GROUND_IN_EVAL or module in ("lmforge", "lmforge.__main__"):
        return 0 if module != "lmforge.__main__" else 5
    part = module.split(".")[1] if "." in module else ""
    return FLOORS.get(part, 0)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The lmforge modules `path` imports (`from lmforge.x import y` counts y if y is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lmforge")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmforge"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return found & modules


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: imports(path, modules) - {name} for name, path in paths.items()}


def test_imports_run_downward(graph):
    upward = [
        f"{a} (floor {floor(a)}) imports {b} (floor {floor(b)})"
        for a, targets in graph.items()
        for b in targets
        if floor(b) > floor(a) and b != "lmforge"
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles(graph):
    def package_of(module: str) -> str:
        return module.rsplit(".", 1)[0]

    # A package's __init__ re-exporting its own modules is not a cycle of the design.
    edges = {a: {b for b in bs if not (b == package_of(a) or a == package_of(b))} for a, bs in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)
