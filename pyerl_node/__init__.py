"""pyerl_node: a Python node that speaks the Erlang distribution protocol.

``from pyerl_node import Node, GenServer, Atom`` is all most programs need; blocking code uses
:mod:`pyerl_node.sync`. Errors derive from :class:`ErlNodeError`.
"""

from importlib.metadata import PackageNotFoundError, version

from pyerl_node.gen import NOREPLY, GenServer, start_server
from pyerl_node.node import Node
from pyerl_node.proto import etf as _etf
from pyerl_node.proto.errors import (
    AuthenticationError,
    CallTimeout,
    ConnectionLost,
    DecodeError,
    EncodeError,
    EpmdError,
    ErlNodeError,
    HandshakeError,
    LocalProtocolError,
    NameInUse,
    NodeDown,
    NodeNotFound,
    NoProc,
    ProcessExit,
    ProtocolError,
    RemoteProtocolError,
    RpcError,
)
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
    atom_count,
    atom_limit,
    set_atom_limit,
)
from pyerl_node.runtime.flush import Flush
from pyerl_node.runtime.malloc_tuning import tune_malloc
from pyerl_node.runtime.process import Process

try:
    __version__ = version("pyerl-node")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

#: True when the compiled codec core runs; False on the pure-Python path (installed without a
#: C compiler, or ``PYERL_NODE_PURE=1``; :mod:`pyerl_node.proto.native`).
compiled: bool = _etf.COMPILED

__all__ = [
    "NOREPLY",
    "Atom",
    "AuthenticationError",
    "BitBinary",
    "CallTimeout",
    "ConnectionLost",
    "DecodeError",
    "EncodeError",
    "EpmdError",
    "ErlNodeError",
    "ExactKey",
    "Export",
    "Flush",
    "FrozenList",
    "FrozenMap",
    "Fun",
    "GenServer",
    "HandshakeError",
    "ImproperList",
    "LocalProtocolError",
    "NameInUse",
    "NoProc",
    "Node",
    "NodeDown",
    "NodeNotFound",
    "Pid",
    "Port",
    "Process",
    "ProcessExit",
    "ProtocolError",
    "Reference",
    "RemoteProtocolError",
    "RpcError",
    "__version__",
    "atom_count",
    "atom_limit",
    "compiled",
    "set_atom_limit",
    "start_server",
    "tune_malloc",
]
