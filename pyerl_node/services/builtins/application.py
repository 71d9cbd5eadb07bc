"""Built-in ``application``: ``which_applications/0,1`` and ``loaded_applications/0``.

The node runs one application, itself: ``{pyerl_node, Description, Vsn}`` with the package's
version. It serves what BEAM peers expect of ``kernel`` (net_kernel, rex, global) but is not
OTP's ``kernel`` application, so it does not claim to run it (docs/builtins.md).
"""

from __future__ import annotations

import platform
from typing import Any, Final

from pyerl_node.proto.terms import Atom, Term
from pyerl_node.services.builtins.common import charlist, function_clause
from pyerl_node.services.builtins.names import APPLICATION
from pyerl_node.services.builtins.system import package_version

PYERL_NODE: Final = Atom("pyerl_node")
INFINITY: Final = Atom("infinity")
_UNSET: Any = object()


def applications() -> list[Term]:
    description = (f"pyerl_node, an Erlang distribution node in Python "
                   f"{platform.python_version()}")
    return [(PYERL_NODE, charlist(description), charlist(package_version()))]


class ApplicationModule:
    """The functions of built-in ``application``."""

    def which_applications(self, timeout: Term = _UNSET) -> list[Term]:
        if timeout is not _UNSET and timeout is not INFINITY and not (
                type(timeout) is int and timeout >= 0):
            function_clause(APPLICATION, "which_applications", [timeout])
        return applications()

    def loaded_applications(self) -> list[Term]:
        return applications()
