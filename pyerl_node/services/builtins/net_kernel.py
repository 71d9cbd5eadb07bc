"""Built-in ``net_kernel``: ``get_net_ticktime/0``, ``connect_node/1``, ``disconnect/1``,
``nodes_info/0`` and ``node_info/1,2`` for this node's connections.

The connection info has the BEAM's keys but what a Python connection has: the owner is this
node's ``net_kernel`` process (connections here are not processes), the address is the peer's
socket address, the type ``normal`` (visible) or ``hidden``. There are no ``in``/``out``
message counters: nothing counts them, and a made-up count would mislead.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Final

from pyerl_node.proto.terms import Atom, Term
from pyerl_node.runtime.interface import NodeServices
from pyerl_node.services.builtins.common import ERROR, OK, charlist, function_clause
from pyerl_node.services.builtins.names import NET_KERNEL

OWNER: Final = Atom("owner")
STATE: Final = Atom("state")
UP: Final = Atom("up")
ADDRESS: Final = Atom("address")
TYPE: Final = Atom("type")
NORMAL: Final = Atom("normal")
HIDDEN: Final = Atom("hidden")
NET_ADDRESS: Final = Atom("net_address")
TCP: Final = Atom("tcp")
INET: Final = Atom("inet")
INET6: Final = Atom("inet6")
BAD_NODE: Final = (ERROR, Atom("bad_node"))
INVALID_KEY: Final = (ERROR, Atom("invalid_key"))
_UNSET: Any = object()


def ip_tuple(address: str) -> tuple[tuple[int, ...], Atom]:
    """``{127,0,0,1}`` (or the eight 16-bit parts of an IPv6 address) and its family."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return tuple(ip.packed), INET
    packed = ip.packed
    return tuple(int.from_bytes(packed[i:i + 2], "big") for i in range(0, 16, 2)), INET6


class NetKernelModule:
    """The functions of built-in ``net_kernel``."""

    def __init__(self, node: NodeServices) -> None:
        self._node = node

    def get_net_ticktime(self) -> int:
        # the BEAM's ticktime is whole seconds
        return max(1, round(self._node.net_ticktime))

    async def connect_node(self, node: Term) -> bool:
        if not isinstance(node, Atom):
            function_clause(NET_KERNEL, "connect_node", [node])
        return node is self._node.node_atom or await self._node.connect(node)

    def disconnect(self, node: Term) -> bool:
        if not isinstance(node, Atom):
            function_clause(NET_KERNEL, "disconnect", [node])
        return self._node.disconnect(node)

    def nodes_info(self) -> Term:
        return (OK, [(n, self._info(n)) for n in self._node.nodes("connected")])

    def node_info(self, node: Term, key: Term = _UNSET) -> Term:
        if not isinstance(node, Atom) or not self._node.is_connected(node):
            return BAD_NODE
        info = self._info(node)
        if key is _UNSET:
            return (OK, info)
        value = dict(info).get(key) if isinstance(key, Atom) else None
        return INVALID_KEY if value is None else (OK, value)

    def _info(self, node: Atom) -> list[tuple[Atom, Term]]:
        me = self._node
        owner = me.whereis(NET_KERNEL)
        info: list[tuple[Atom, Term]] = [] if owner is None else [(OWNER, owner)]
        info.append((STATE, UP))
        peer = me.peer_address(node)
        if peer is not None:
            ip, family = ip_tuple(peer[0])
            host = node.name.partition("@")[2]
            info.append((ADDRESS, (NET_ADDRESS, (ip, peer[1]), charlist(host), TCP, family)))
        info.append((TYPE, HIDDEN if node in me.nodes("hidden") else NORMAL))
        return info
