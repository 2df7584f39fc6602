"""The seams between lwst's layers (issue 12, item 1), checked on the source itself.

The import graph is read from the code (every ``import``, also those inside functions), so a
lazy import cannot hide a cycle or a reach into the app layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lwst import progress

LWST = Path(__file__).resolve().parents[1] / "lwst"
APP_LAYER = ("prefect", "prefect_dask", "flows", "tasks")
ENTRY_POINT = "lwst.cli"  # the console script: the one module allowed to reach the flows


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


def test_only_the_entry_point_reaches_prefect_or_the_flows():
    offenders = {}
    for path in LWST.rglob("*.py"):
        reached = sorted(name for name in _imports(path)
                         if name.split(".")[0] in APP_LAYER)
        if reached and _module_name(path) != ENTRY_POINT:
            offenders[_module_name(path)] = reached
    assert offenders == {}
    entry = _imports(LWST / "cli.py")
    assert not any(name.split(".")[0] in ("prefect", "prefect_dask") for name in entry)


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


@pytest.mark.parametrize("module", ["flows.stylize_dataset", "lwst.cli_pipeline"])
def test_no_module_level_listener_list(module):
    import importlib

    loaded = importlib.import_module(module)
    assert not hasattr(loaded, "PROGRESS_LISTENERS")
