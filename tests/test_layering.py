"""The seams between lwst's layers (issue 12, item 1), checked on the source itself.

The import graph is read from the code (every ``import``, also those inside functions), so a
lazy import cannot hide a cycle or a reach into the app layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lwst import progress

REPO = Path(__file__).resolve().parents[1]
LWST = REPO / "lwst"
APP_LAYER = ("prefect", "prefect_dask", "flows", "tasks")


def _module_name(path: Path) -> str:
    parts = path.relative_to(LWST.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of everything ``path`` imports (``from a import b`` gives ``a`` and
    ``a.b``), anywhere in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in LWST.rglob("*.py")}
    return {name: {d for d in _imports(path) if d in modules and d != name}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_lwst_modules():
    assert _cycles(_graph()) == []


def test_the_import_finder_sees_lazy_and_relative_imports(monkeypatch):
    planted = LWST / "_planted_for_test.py"
    monkeypatch.setattr(Path, "read_text", lambda self: (
        "def f():\n    from flows.cli import add_parser\n    import prefect.flows\n"
        "from . import cli\n"))
    assert {"flows.cli", "flows.cli.add_parser", "prefect.flows", "lwst", "lwst.cli"} <= \
        _imports(planted)


def test_no_lwst_module_imports_prefect_flows_or_tasks():
    """Not even lazily inside a function: ``lwst run`` reaches the flows the other way round,
    as a command `flows.cli` registers through the ``lwst.commands`` entry point."""
    offenders = {}
    for path in LWST.rglob("*.py"):
        reached = sorted(name for name in _imports(path)
                         if name.split(".")[0] in APP_LAYER)
        if reached:
            offenders[_module_name(path)] = reached
    assert offenders == {}


def test_lwst_run_is_registered_from_pyproject():
    """A fresh install (`.ci/run`, `make install`) gets ``lwst run`` from pyproject.toml's
    entry point, not from anything left in one venv; the target it names exists."""
    import importlib
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    target = project["entry-points"]["lwst.commands"]["run"]
    assert target == "flows.cli:add_parser"
    module, _, name = target.partition(":")
    assert callable(getattr(importlib.import_module(module), name))


def test_progress_reaches_only_the_listener_of_its_own_call():
    heard: list[tuple[int, int, str]] = []
    progress.notify(1, 2, {"id": "nobody-listens"})  # no listener: nothing, no error
    with progress.listening(lambda done, total, record: heard.append((done, total,
                                                                      record["id"]))):
        progress.notify(1, 2, {"id": "a"})
        with progress.listening(None):
            progress.notify(2, 2, {"id": "muted"})
        progress.notify(2, 2, {"id": "b"})
    progress.notify(3, 3, {"id": "after"})
    assert heard == [(1, 2, "a"), (2, 2, "b")]


@pytest.mark.parametrize("module", ["flows.stylize_dataset", "flows.cli"])
def test_no_module_level_listener_list(module):
    import importlib

    loaded = importlib.import_module(module)
    assert not hasattr(loaded, "PROGRESS_LISTENERS")
