"""No import cycle among the modules of src/gradclip, lazy in-function imports included.

The graph is read from the code with ``ast``, so an import hidden inside a function (the
usual way of breaking a cycle at run time) still counts; an import under
``if TYPE_CHECKING:`` never runs and does not. Edges:

- ``import gradclip.a.b`` and ``from gradclip.a.b import name`` import ``gradclip.a.b``;
- ``from gradclip.a import b``, where ``b`` is a submodule, imports ``gradclip.a.b``;
  where ``b`` is a name defined in the package, it imports the package's ``__init__``;
- relative imports are resolved against the importing module.

The implicit imports of parent packages (``import gradclip.a.b`` runs
``gradclip/__init__.py`` first) are not edges: the top-level package re-exports the whole
API, so counting them would make every module depend on every other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "gradclip"


def module_files(root: Path = SRC / PACKAGE) -> dict[str, Path]:
    """Every module under ``root`` by dotted name (a package by its own name)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def is_type_checking_block(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement below ``node``, at any depth, outside ``TYPE_CHECKING`` blocks."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        if is_type_checking_block(child):
            for branch in child.orelse:  # the else branch runs
                yield from import_nodes(ast.Module(body=[branch], type_ignores=[]))
            continue
        yield from import_nodes(child)


def absolute_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a ``from ... import`` names, with relative levels resolved."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    package = parts if is_package else parts[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The gradclip modules that ``module`` imports (see the module docstring for the rules)."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = absolute_base(node, module, is_package)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            targets.add(submodule if submodule in modules else base)
    return {target for target in targets if target in modules and target != module}


def import_graph() -> dict[str, set[str]]:
    """``module -> the gradclip modules it imports``, for every module of the package."""
    modules = module_files()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan, 1972)."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                lowlink[node] = min(lowlink[node], lowlink[successor])
            elif successor in on_stack:
                lowlink[node] = min(lowlink[node], index[successor])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [cycle_through(graph, set(component)) for component in components]


def cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle from the component's first module back to it, as a path."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & component):
                if successor == start:
                    return paths[node] + [start]
                if successor not in paths:
                    paths[successor] = paths[node] + [successor]
                    following.append(successor)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones():
    graph = {
        "gradclip.a": {"gradclip.b"},
        "gradclip.b": {"gradclip.c"},
        "gradclip.c": {"gradclip.a"},
        "gradclip.d": set(),
    }
    assert find_cycles(graph) == [["gradclip.a", "gradclip.b", "gradclip.c", "gradclip.a"]]
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import hidden\nelse:\n    import shown\n"
        "def f():\n    import lazy\n"
    )
    names = {alias.name for node in import_nodes(tree) for alias in node.names}
    assert names == {"TYPE_CHECKING", "shown", "lazy"}


def test_the_graph_resolves_submodules_packages_and_relative_imports():
    graph = import_graph()
    assert "gradclip.strategies.base" in graph["gradclip.strategies"]  # from pkg.sub import
    assert "gradclip.monitor" in graph["gradclip.app.training.trainer"]  # a package's name
    assert graph["gradclip"] == {"gradclip._version"}  # the API loads lazily (TYPE_CHECKING)
    assert "gradclip.distributed" in graph["gradclip.functional"]
    node = ast.parse("from . import base\nfrom ..flat import x").body
    assert absolute_base(node[0], "gradclip.strategies.norm", False) == "gradclip.strategies"
    assert absolute_base(node[1], "gradclip.strategies.norm", False) == "gradclip.flat"


def test_no_import_cycle_among_gradclip_modules():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
