"""Built-in ``code``: ``which/1``, ``is_loaded/1`` and ``all_loaded/0`` over the modules rpc
reaches on this node (built-in and exposed): each is "loaded" from ``python:<where>``, the
Python module or class serving it. BEAM modules are not here: ``non_existing`` / ``false``.
"""

from __future__ import annotations

from typing import Final

from pyerl_node.proto.terms import Atom, Term
from pyerl_node.services.builtins.common import charlist, function_clause
from pyerl_node.services.builtins.names import CODE
from pyerl_node.services.rpc import Exposed

NON_EXISTING: Final = Atom("non_existing")
FILE: Final = Atom("file")


class CodeModule:
    """The functions of built-in ``code``."""

    def __init__(self, exposed: Exposed) -> None:
        self._exposed = exposed

    def which(self, module: Term) -> Term:
        if not isinstance(module, Atom):
            function_clause(CODE, "which", [module])
        origin = self._exposed.origin(module)
        return NON_EXISTING if origin is None else charlist(origin)

    def is_loaded(self, module: Term) -> Term:
        if not isinstance(module, Atom):
            function_clause(CODE, "is_loaded", [module])
        origin = self._exposed.origin(module)
        return False if origin is None else (FILE, charlist(origin))

    def all_loaded(self) -> list[Term]:
        exposed = self._exposed
        return [(m, charlist(origin)) for m in exposed.modules()
                if (origin := exposed.origin(m)) is not None]
