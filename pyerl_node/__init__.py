"""pyerl_node: a Python node that speaks the Erlang distribution protocol."""

from pyerl_node.proto.terms import (
    Atom,
    BitBinary,
    ExactKey,
    Export,
    FrozenList,
    FrozenMap,
    Fun,
    ImproperList,
    Pid,
    Port,
    Reference,
)

__all__ = [
    "Atom",
    "BitBinary",
    "ExactKey",
    "Export",
    "FrozenList",
    "FrozenMap",
    "Fun",
    "ImproperList",
    "Pid",
    "Port",
    "Reference",
]
