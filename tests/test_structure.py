"""The shape of the code, read with ``ast``: imports form no circle, the shared core
``qpy/`` imports no tier, and no module or class grows past a size one reads in a sitting.

Every import counts, including those inside functions: a lazy import still ties the two
modules together, it only hides the tie until the function runs.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("qpy", "qpy_master", "qpy_multiuser")
SHARED_CORE = "qpy"
TIERS = ("qpy_master", "qpy_multiuser")
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250
# The launcher is sent whole to each node and runs there on the stdlib alone, so it
# cannot be split into modules that import each other.
LONG_MODULES = {"qpy_master.launcher"}


@cache
def modules() -> dict[str, Path]:
    """Every module of the runtime packages by dotted name (a package by its own name)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def _from_base(name: str, node: ast.ImportFrom) -> str:
    """The module a ``from X import ...`` reads, with relative levels resolved against
    the importing module ``name``."""
    if not node.level:
        return node.module or ""
    parts = name.split(".")
    package = parts if _is_package(name) else parts[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports(name: str) -> set[str]:
    """The dotted names module ``name`` imports anywhere in its body: ``from pkg import
    sub`` counts as ``pkg.sub`` when that is a module, else as ``pkg``."""
    tree = ast.parse(modules()[name].read_text(), str(modules()[name]))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(name, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules() else base)
    return found


def _own_module(imported: str) -> str | None:
    """The module of ours that ``imported`` names (its longest known prefix), if any."""
    parts = imported.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules():
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    """Edges from each module to the modules of ours it imports (itself excluded)."""
    graph = {}
    for name in modules():
        targets = {_own_module(imported) for imported in imports(name)}
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None: a depth-first
    search meets a cycle when it reaches a module still on its own path."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node):], node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph[node]):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


# --- the checks of the helpers themselves: a check that cannot fail proves nothing ------


def test_find_cycle_reports_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_imports_are_read_inside_functions_and_resolved_to_modules():
    assert "qpy.completion" in imports("qpy.commands.help")  # `from qpy import ...`, lazily
    assert "qpy.paths" in imports("qpy.completion")  # inside _ask_running_master
    assert set(modules()) >= {"qpy", "qpy.cli", "qpy.commands.jobs", "qpy_master.master",
                              "qpy_multiuser.state"}


# --- the shape --------------------------------------------------------------------------


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_shared_core_imports_no_tier():
    wrong = sorted(f"{name} imports {imported}"
                   for name in modules() if name.split(".")[0] == SHARED_CORE
                   for imported in imports(name) if imported.split(".")[0] in TIERS)
    assert not wrong, "the shared core imports a tier: " + "; ".join(wrong)


def test_module_sizes():
    big = sorted(f"{name}: {_lines(path)} lines" for name, path in modules().items()
                 if name not in LONG_MODULES and _lines(path) > MAX_MODULE_LINES)
    assert not big, f"modules over {MAX_MODULE_LINES} lines: " + "; ".join(big)


def test_class_sizes():
    big = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    big.append(f"{name}.{node.name}: {size} lines")
    assert not big, f"classes over {MAX_CLASS_LINES} lines: " + "; ".join(sorted(big))
