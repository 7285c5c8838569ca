"""No import circles inside a distribution: its modules' imports form a graph without cycles.

Issue 13 broke five circles (engine/cylon <-> select, table <-> engine/ops, launch cli <->
service, tf callbacks <-> dataset, torch datamodule <-> loaders); this keeps them broken.
Every import counts, wherever it stands: one inside a function or under
``if TYPE_CHECKING:`` hides a circle (the modules still depend on each other), it does
not break it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("deeprc_core", "deeprc_torch", "deeprc_tf", "deeprc_launch")


def _modules(src: Path) -> dict[str, tuple[Path, bool]]:
    """Every module under ``src`` by dotted name, with whether it is a package's ``__init__``.

    A compiled extension (``_stack.c`` built to ``_stack*.so``, typed by ``_stack.pyi``)
    counts as a module too, one that imports nothing of ours.
    """
    found: dict[str, tuple[Path, bool]] = {}
    for path in sorted(src.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        if path.suffix == ".py" or name not in found:
            found[name] = (path, is_package)
    return found


def _imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, at any depth (functions, classes, if TYPE_CHECKING, try)."""
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def _graph(src: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same distribution it imports."""
    modules = _modules(src)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        deps: set[str] = set()
        if path.suffix == ".pyi":
            graph[name] = set()
            continue
        for imp in _imports(ast.parse(path.read_text())):
            if isinstance(imp, ast.Import):
                deps |= {a.name for a in imp.names if a.name in modules}
                continue
            if imp.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (imp.level - 1)]
                target = ".".join(base + ([imp.module] if imp.module else []))
            else:
                target = imp.module or ""
            subs = {f"{target}.{a.name}" for a in imp.names} & set(modules)
            # `from . import sub` needs only `sub` (a partly initialised parent serves it)
            if target in modules and len(subs) < len(imp.names):
                deps.add(target)
            deps |= subs
        graph[name] = deps - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circles(package: str) -> None:
    src = REPO / package / "src"
    graph = _graph(src)
    assert len(graph) > 5, f"found only {sorted(graph)} under {src}"
    assert _cycles(graph) == [], f"{package}: modules that import each other (directly or through others)"


def test_the_check_sees_a_circle(tmp_path: Path) -> None:
    """The detector itself: a two-module circle, eager, lazy or for types only; a one-way import is none."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import thing\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nfrom . import a\nthing = 1\n")
    (pkg / "c.py").write_text("import os\n")
    assert _cycles(_graph(tmp_path)) == [["pkg.a", "pkg.b"]]
    (pkg / "b.py").write_text(
        "thing = 1\ndef later():\n    try:\n        from . import a\n    except ImportError:\n        pass\n"
    )
    assert _cycles(_graph(tmp_path)) == [["pkg.a", "pkg.b"]]  # a lazy import is still a circle
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\nthing = 1\n")
    assert _cycles(_graph(tmp_path)) == [["pkg.a", "pkg.b"]]  # so is one for annotations
    (pkg / "b.py").write_text("from . import _ext\nthing = 1\n")
    (pkg / "_ext.pyi").write_text("def f() -> int: ...\n")
    assert _cycles(_graph(tmp_path)) == []  # an extension module is a leaf, not the package
