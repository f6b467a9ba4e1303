"""The package layout stays what README's Layout section says: no import circles between edgeq's
modules (counting imports inside functions too: a lazy import is still a dependency), modules of
a few hundred lines, and no flat modules beside the packages beyond the few that belong there."""

from __future__ import annotations

import ast
from pathlib import Path

import edgeq

ROOT = Path(edgeq.__file__).parent
# The package root keeps only the program's entry, the library façade and the declarative parts.
ROOT_MODULES = {"__init__", "__main__", "entry", "api", "errors", "status", "targets", "recipes",
                "testing"}
MAX_LINES = 450
# Longer modules, each with the reason it is one file (README, Layout).
LONGER = {
    "edgetpu/rules.py": "one constraint function per Edge TPU rule, each citing its evidence",
    "targets.py": "the whole profile schema as frozen dataclasses with its one strict loader",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = ["edgeq", *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):  # `if TYPE_CHECKING:` imports are annotations, not dependencies
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def test_no_import_circles():
    modules = _modules()
    graph = {m: _imports(p, m, set(modules)) for m, p in modules.items()}
    # A package's __init__ that only re-exports its own modules is not a circle with them.
    for m in graph:
        graph[m] = {t for t in graph[m] if not (m.startswith(t + ".") and t != "edgeq")}
    cycles = []
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, [*stack, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_modules_stay_small():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    unexplained = {p: n for p, n in long.items() if p not in LONGER}
    assert not unexplained, f"modules over {MAX_LINES} lines: {unexplained}"


def test_package_root_holds_only_its_own_modules():
    flat = {p.stem for p in ROOT.glob("*.py")}
    assert flat <= ROOT_MODULES, f"move these into a package: {sorted(flat - ROOT_MODULES)}"
