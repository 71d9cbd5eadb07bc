"""Which implementation of the codec core runs: the compiled one or the pure-Python one.

``pip install`` builds the compiled core (``pyerl_node.proto._cetf``, C, from ``_cetf.c``)
when the machine has a C compiler and Python's headers, and installs the package without it
otherwise: the compiled functions stand in for pure-Python ones of the same signature and
behaviour (:mod:`pyerl_node.proto.etf` says how), so nothing else depends on which runs.
``PYERL_NODE_PURE=1`` in the environment when the package is first imported keeps the
compiled core unloaded (and, at install time, unbuilt): how the pure path is tested and
measured. :data:`pyerl_node.compiled` tells which one runs.
"""

from __future__ import annotations

import os
from importlib import import_module
from types import ModuleType
from typing import Final

#: The environment variable that forces the pure-Python path (any value but "" and "0").
PURE_ENV: Final = "PYERL_NODE_PURE"


def pure_requested() -> bool:
    """Whether ``PYERL_NODE_PURE`` asks for the pure-Python path."""
    return os.environ.get(PURE_ENV, "").strip() not in ("", "0")


def load(name: str) -> ModuleType | None:
    """The compiled module ``pyerl_node.proto.<name>``, or None: not built (or built for
    another Python), or the pure path requested."""
    if pure_requested():
        return None
    try:
        return import_module(f"{__package__}.{name}")
    except ImportError:
        return None
