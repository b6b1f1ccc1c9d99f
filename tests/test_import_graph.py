"""The repository's import graph has no cycle, counting imports inside functions too.

Every ``.py`` file under the repository's packages and scripts is parsed (nothing is imported). An edge goes from a
module to each repository module it imports, at any depth of its code: ``import a.b``, ``from a import b`` (to
``a.b`` when that is a module, else to ``a``), relative imports, and ``importlib.import_module`` with a literal
name. Names built at run time (the runner's ``importlib.import_module(f"integrations.{name}.model")``) are not seen;
those point from ``integrations.common`` to a baseline's modules, which import ``integrations.common`` modules that
do not import them back.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("ftcl_plugin", "integrations", "patches", "benchmarks", "tests")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """``{"pkg.module": path}`` for every ``.py`` file in :data:`FOLDERS` (``pkg/__init__.py`` is ``"pkg"``)."""
    modules = {}
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, list[str]]]:
    """``(base, names)`` of every import in the tree; ``names`` are the ``from ... import`` names."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield base, [alias.name for alias in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.args[0].value, []


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the repository modules it imports (anywhere in its code)."""
    modules = module_files(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for base, names in _imported(tree, name, path.name == "__init__.py"):
            targets = [f"{base}.{item}" if f"{base}.{item}" in modules else base for item in names] or [base]
            for target in targets:
                while target and target not in modules:  # `import a.b.c` of a non-module attribute path
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_cycle_finder_on_a_known_graph() -> None:
    # Hand-made: a <-> b through c (one cycle of three), d -> a outside it, e alone.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"x": {"y"}, "y": set()}) == []


def test_function_level_and_relative_imports_are_edges(tmp_path: Path) -> None:
    package = tmp_path / "integrations" / "common"
    package.mkdir(parents=True)
    (tmp_path / "integrations" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("from .one import f\n")
    (package / "one.py").write_text("def f():\n    from .two import g\n    return g\n")
    (package / "two.py").write_text("import importlib\n\ndef g():\n"
                                    "    return importlib.import_module('integrations.common.one')\n")
    graph = import_graph(tmp_path)
    assert graph["integrations.common.one"] == {"integrations.common.two"}
    assert graph["integrations.common.two"] == {"integrations.common.one"}
    assert cycles(graph) == [["integrations.common.one", "integrations.common.two"]]


def test_the_repository_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "integrations.common.runner" in graph and "patches._session" in graph  # the walk found the code
    assert cycles(graph) == []
