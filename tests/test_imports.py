"""The package's import graph, read from the source with `ast`: no circle, and layers import only lower layers."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

from sources import parse_files

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "yolonas"

# DESIGN.md's order, low to high: a top-level module or folder imports only those before it.
LAYERS = ["errors", "preprocess", "arch", "data", "infer", "weights", "eval", "train", "deploy", "quant", "nas",
          "showdown", "serve", "scale", "cli"]
# The applications on top of the library: none imports another.
APPLICATIONS = ("showdown", "serve", "scale")

# The one allowed upward import: the model's convenience methods delegate through an import inside the method.
ALLOWED = {
    ("yolonas.arch.model", "YoloNAS.predict"): {"yolonas.infer", "yolonas.infer.predictor"},
    ("yolonas.arch.model", "YoloNAS.save"): {"yolonas.weights"},
}


class Edge(NamedTuple):
    """`src` imports `dst`, in the function `where` (None at module level)."""

    src: str
    dst: str
    where: str | None


def module_names(root: Path = SRC) -> dict[str, Path]:
    """Every module of the package by dotted name; a package is named by its folder (its __init__)."""
    names = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _ancestors(name: str) -> list[str]:
    """yolonas.a.b -> [yolonas, yolonas.a]: the packages Python imports before the module itself."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve(node: ast.ImportFrom, importer: str, modules: dict[str, Path]) -> str:
    """The absolute module an ImportFrom names, relative imports resolved against `importer`."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not _is_package(importer, modules):
        base.pop()  # a plain module's relative imports start from its package
    base = base[:len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _targets(node: ast.Import | ast.ImportFrom, importer: str, modules: dict[str, Path]) -> set[str]:
    """The package modules one import statement names: the module, or a submodule for `from pkg import sub`."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    base = _resolve(node, importer, modules)
    if base not in modules:
        return set()
    subs = {f"{base}.{a.name}" for a in node.names}
    return {base} | (subs & modules.keys())


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, where: str | None, scope: str | None):
    """(import statement, enclosing function) for every import that runs, skipping `if TYPE_CHECKING:` blocks."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for b in child.orelse:  # only the else branch runs
                yield from _walk(b, where, scope)
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, where
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{scope}.{child.name}" if scope else child.name
            yield from _walk(child, name, name)
        elif isinstance(child, ast.ClassDef):
            yield from _walk(child, where, f"{scope}.{child.name}" if scope else child.name)
        else:
            yield from _walk(child, where, scope)


def import_edges(root: Path = SRC) -> list[Edge]:
    """Every import between package modules, module- and function-level, relative imports resolved.

    Importing yolonas.a.b also runs yolonas.a's __init__ first, so that is an edge too, unless it is a package
    the importer is or lives in (Python has already started importing it by then).
    """
    modules = module_names(root)
    trees = parse_files(list(modules.values()))
    edges = []
    for name, path in modules.items():
        own = {name, *_ancestors(name)}
        for node, where in _walk(trees[path], None, None):
            for dst in _targets(node, name, modules):
                implied = {p for p in _ancestors(dst) if p not in own and p != PACKAGE}
                edges += [Edge(name, d, where) for d in sorted({dst} | implied)]
    return edges


def _allowed(edge: Edge) -> bool:
    return edge.dst in ALLOWED.get((edge.src, edge.where), set())


def cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself), Tarjan's way."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.src, set()).add(e.dst)
        graph.setdefault(e.dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _layer(name: str) -> str | None:
    """The top-level module or folder a module belongs to; None for the package's own __init__ (the public API)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def upward_imports(edges: list[Edge]) -> list[Edge]:
    """Edges from a lower layer to a higher one, the allowed ones left out."""
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    return [e for e in edges if _layer(e.src) and _layer(e.dst) and not _allowed(e)
            and rank[_layer(e.dst)] > rank[_layer(e.src)]]


def test_no_application_imports_another():
    crossing = [e for e in import_edges() if _layer(e.src) in APPLICATIONS and _layer(e.dst) in APPLICATIONS
                and _layer(e.src) != _layer(e.dst)]
    assert not crossing, crossing


def test_every_top_level_module_has_a_layer():
    layers = {_layer(name) for name in module_names()} - {None}
    assert layers <= set(LAYERS), f"not in DESIGN.md's import order: {sorted(layers - set(LAYERS))}"


def test_the_graph_sees_function_level_and_relative_imports():
    edges = set(import_edges())
    assert Edge("yolonas.arch.model", "yolonas.infer.predictor", "YoloNAS.predict") in edges
    assert Edge("yolonas.arch.model", "yolonas.infer", "YoloNAS.predict") in edges  # its package's __init__ runs
    assert Edge("yolonas.arch.model", "yolonas.weights", "YoloNAS.save") in edges
    assert any(e.src == "yolonas.data" and e.dst == "yolonas.data.loader" for e in edges)


def test_no_import_circle():
    edges = [e for e in import_edges() if not _allowed(e)]
    assert cycles(edges) == []


def test_cycles_are_found():
    edges = [Edge("a", "b", None), Edge("b", "c", "f"), Edge("c", "a", None), Edge("d", "a", None)]
    assert cycles(edges) == [["a", "b", "c"]]


def test_layers_import_only_lower_layers():
    assert upward_imports(import_edges()) == []


def test_preprocess_imports_only_errors():
    edges = {e.dst for e in import_edges() if e.src == "yolonas.preprocess"}
    assert edges <= {"yolonas.errors"}
