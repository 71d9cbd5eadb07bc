"""The layer rules of the package, checked on the import graph read from the sources' AST.

Every ``import`` counts, also one inside a function body or under ``TYPE_CHECKING``: a layer
that needs another's types needs that layer. The rules (docs/design.md, "Layers"):

* ``proto`` (sans-I/O) imports no I/O, clock, randomness, threads or logging, and nothing of
  the package outside ``proto``.
* ``runtime`` imports only ``proto`` and itself: never ``services`` nor the top-level facade.
* ``services`` import ``proto``, the runtime's service interface and each other; never the
  facade and never the runtime's internals (the kernel, channels, transports).
* no import cycle anywhere in the package or in ``epmd``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pyerl_node", "epmd")

IO_MODULES = frozenset({"asyncio", "socket", "ssl", "threading", "selectors", "time", "random",
                        "logging", "subprocess", "multiprocessing", "concurrent"})
# What services may use of the runtime: the interface it offers them and the plain types
# that interface speaks in. The kernel, channels and transports stay out of their reach.
SERVICE_VISIBLE_RUNTIME = frozenset({
    "pyerl_node.runtime.interface", "pyerl_node.runtime.process",
    "pyerl_node.runtime.mailbox", "pyerl_node.runtime.genserver",
    "pyerl_node.runtime.workers",
})


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


MODULES = all_modules()


def imports_of(name: str, source: str, known: Iterable[str]) -> set[str]:
    """The modules ``name`` imports: package modules by full name, others by top-level name."""
    known = set(known)
    is_package = MODULES.get(name, Path()).name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(_resolve(a.name, known) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else _resolve(target, known))
    return found


def _resolve(target: str, known: set[str]) -> str:
    """The package module ``target`` names (itself, or the nearest enclosing one), else its
    top-level name (a standard library or third-party module)."""
    parts = target.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return target.split(".", maxsplit=1)[0]


GRAPH = {name: imports_of(name, path.read_text(encoding="utf-8"), MODULES)
         for name, path in MODULES.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "pyerl_node":
        return parts[0]
    if len(parts) > 1 and parts[1] in ("proto", "runtime", "services"):
        return parts[1]
    return "facade"


def _internal(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if n in MODULES)


def test_the_layers_exist() -> None:
    # Otherwise every rule below would hold vacuously.
    for required in ("pyerl_node.proto.etf", "pyerl_node.runtime.kernel",
                     "pyerl_node.services.rex", "pyerl_node.node", "epmd.server"):
        assert required in MODULES


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == "proto"))
def test_proto_is_sans_io(module: str) -> None:
    imported = GRAPH[module]
    assert sorted(imported & IO_MODULES) == []
    assert [m for m in _internal(imported) if layer(m) != "proto"] == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == "runtime"))
def test_runtime_never_reaches_up(module: str) -> None:
    assert [m for m in _internal(GRAPH[module]) if layer(m) not in ("proto", "runtime")] == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == "services"))
def test_services_use_only_the_interface(module: str) -> None:
    allowed = {"proto", "services"}
    bad = [m for m in _internal(GRAPH[module])
           if layer(m) not in allowed and m not in SERVICE_VISIBLE_RUNTIME
           and m != "pyerl_node.runtime"]
    assert bad == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == "epmd"))
def test_the_epmd_server_uses_only_the_wire_format(module: str) -> None:
    # The daemon outlives nodes: it shares the byte layouts with them, nothing else.
    bad = [m for m in _internal(GRAPH[module])
           if layer(m) not in ("epmd", "proto") and m != "pyerl_node"]
    assert bad == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), or a self-loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    assert cycles(GRAPH) == []


# -- the checker itself -------------------------------------------------------------------------

def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(("source", "expected"), [
    ("import asyncio", {"asyncio"}),
    ("import os.path, socket", {"os", "socket"}),
    ("def f():\n    from time import monotonic", {"time"}),
    ("from pyerl_node.proto import etf", {"pyerl_node.proto.etf"}),
    ("from pyerl_node.proto.etf import decode", {"pyerl_node.proto.etf"}),
    ("from . import terms", {"pyerl_node.proto.terms"}),
    ("from .terms import Atom", {"pyerl_node.proto.terms"}),
    ("from ..runtime import kernel", {"pyerl_node.runtime.kernel"}),
    ("if TYPE_CHECKING:\n    from pyerl_node.node import Node", {"pyerl_node.node"}),
])
def test_the_checker_reads_imports(source: str, expected: set[str]) -> None:
    assert imports_of("pyerl_node.proto.etf", source, MODULES) == expected
