"""The sans-I/O rule (DESIGN.md, "Layers"): core modules import no I/O, clock, randomness or
logging, and nothing from the runtime. Checked on the source's AST, so a module is caught even
if the import sits in a function body."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyerl_node"
CORE = ("terms", "etf", "flags", "names", "epmd_wire", "framing", "handshake", "control",
        "dist_header", "control_memo", "connection")
# The core may use itself and the error hierarchy; anything else in the package is runtime.
ALLOWED_INTERNAL = frozenset(CORE) | {"errors"}
FORBIDDEN = frozenset({"asyncio", "socket", "threading", "time", "random", "logging",
                       "selectors", "subprocess"})


def violations(source: str) -> list[str]:
    """Every import in ``source`` a core module may not make, as written."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in FORBIDDEN
                      or _internal_runtime(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from .x import y
                targets = [f"pyerl_node.{node.module}"] if node.module else [
                    f"pyerl_node.{a.name}" for a in node.names]
            else:
                targets = [node.module or ""]
            found += [t for t in targets
                      if t.split(".")[0] in FORBIDDEN or _internal_runtime(t)]
    return found


def _internal_runtime(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "pyerl_node" and len(parts) > 1 and parts[1] not in ALLOWED_INTERNAL


def test_the_core_exists() -> None:
    # Otherwise every check below could be skipped and the rule would hold vacuously.
    assert (PACKAGE / "terms.py").is_file()


@pytest.mark.parametrize("module", CORE)
def test_core_module_is_sans_io(module: str) -> None:
    path = PACKAGE / f"{module}.py"
    if not path.is_file():
        pytest.skip(f"pyerl_node/{module}.py does not exist yet")
    assert violations(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(("source", "expected"), [
    ("import asyncio", ["asyncio"]),
    ("import os, socket", ["socket"]),
    ("import logging.handlers", ["logging.handlers"]),
    ("def f():\n    from time import monotonic", ["time"]),
    ("from random import SystemRandom", ["random"]),
    ("from . import node", ["pyerl_node.node"]),
    ("from .mailbox import Mailbox", ["pyerl_node.mailbox"]),
    ("from pyerl_node.services import rex", ["pyerl_node.services"]),
    ("from .errors import DecodeError\nfrom . import terms\nimport struct", []),
    ("import hashlib, zlib\nfrom pyerl_node.etf import decode", []),
])
def test_the_checker_sees_forbidden_imports(source: str, expected: list[str]) -> None:
    assert violations(source) == expected
