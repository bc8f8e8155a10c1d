"""The package's import layering: read from the source (every import, function-level ones included), each
subpackage one unit, as the README's layout section draws it."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tvm_dse"


def _unit(module: str) -> str | None:
    """The unit of a ``tvm_dse`` module: its subpackage, or the module itself."""
    parts = module.split(".")
    if parts[0] != "tvm_dse" or len(parts) == 1:
        return None
    return parts[1]


def _imports() -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> the importing files."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts)
        package = name.removesuffix(".__init__") if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        unit = _unit(name.removesuffix(".__init__"))
        if unit is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                modules = [module] + [f"{module}.{alias.name}" for alias in node.names]
            else:
                continue
            for module in modules:
                imported = _unit(module)
                if imported not in (None, unit) and ((PACKAGE / imported).is_dir()
                                                     or (PACKAGE / f"{imported}.py").exists()):
                    graph[unit][imported].append(str(path.relative_to(PACKAGE.parent)))
    return graph


GRAPH = _imports()


def _reaches(start: str, goal: str) -> list[str] | None:
    """An import path from ``start`` to ``goal``, or None."""
    seen, stack = {start}, [[start]]
    while stack:
        path = stack.pop()
        for following in GRAPH.get(path[-1], {}):
            if following == goal:
                return path + [goal]
            if following not in seen:
                seen.add(following)
                stack.append(path + [following])
    return None


def test_no_unit_imports_one_that_imports_it_back():
    cycles = {}
    for unit, imported in GRAPH.items():
        for other in imported:
            back = _reaches(other, unit)
            if back:
                cycles[(unit, other)] = back
    assert not cycles, "imports that run back up: " + "; ".join(
        f"{a} -> {b} ({GRAPH[a][b][0]}), back: {' -> '.join(path)}" for (a, b), path in cycles.items())


@pytest.mark.parametrize("low, high", [
    ("measure", "lower"), ("measure", "strategies"), ("measure", "frontend"),
    ("quant", "frontend"), ("quant", "graph"), ("quant", "plan"), ("quant", "strategies"), ("quant", "accuracy"),
    ("strategies", "build"), ("graph", "lower"), ("layouts", "strategies"),
    ("zoo", "frontend"), ("search", "strategies"),
])
def test_lower_layers_do_not_reach_higher_ones(low, high):
    assert _reaches(low, high) is None, f"{low} reaches {high}: {' -> '.join(_reaches(low, high))}"


def test_no_product_module_imports_the_testing_helpers():
    importers = sorted({unit for unit, imported in GRAPH.items() if "testing" in imported})
    assert importers == [], f"product modules importing tvm_dse.testing: {importers}"
