"""The names of the built-in modules: reserved, so that ``Node.expose`` cannot take them by
accident (``pg`` included: its service registers through :mod:`.pg`)."""

from __future__ import annotations

from typing import Final

from pyerl_node.proto.terms import Atom

ERLANG: Final = Atom("erlang")
GLOBAL: Final = Atom("global")
NET_ADM: Final = Atom("net_adm")
NET_KERNEL: Final = Atom("net_kernel")
OS: Final = Atom("os")
APPLICATION: Final = Atom("application")
CODE: Final = Atom("code")
PG: Final = Atom("pg")

BUILTIN_MODULES: Final = frozenset({ERLANG, GLOBAL, NET_ADM, NET_KERNEL, OS, APPLICATION, CODE,
                                    PG})
