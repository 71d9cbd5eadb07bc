"""Built-in ``net_adm``: ``ping/1``, ``names/0,1`` and ``localhost/0`` of this node.

``ping`` is ``net_adm:ping/1``: a call of ``{is_auth, node()}`` to the target's
``net_kernel``; anything but ``yes`` is ``pang`` and drops the connection, as OTP does.
``names`` asks EPMD (this node's EPMD port) on the host, ``localhost`` is this machine's name.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Final

from pyerl_node.proto.errors import EpmdError, ErlNodeError
from pyerl_node.proto.terms import Atom, Term
from pyerl_node.runtime import genserver
from pyerl_node.runtime.interface import NodeServices
from pyerl_node.services.builtins.common import ERROR, OK, charlist, function_clause, text_of
from pyerl_node.services.builtins.names import NET_ADM, NET_KERNEL

PONG: Final = Atom("pong")
PANG: Final = Atom("pang")
YES: Final = Atom("yes")
IS_AUTH: Final = Atom("is_auth")
ADDRESS: Final = Atom("address")
#: how long a ping waits for the answer (connection setup included), as net_setuptime + margin
PING_TIMEOUT: Final = 10.0
_UNSET: Any = object()


def host_text(host: Term) -> str | None:
    """An Erlang host (atom, string or IP address tuple) as text; None if it is none."""
    if type(host) is tuple and len(host) in (4, 8) and all(type(p) is int for p in host):
        try:
            if len(host) == 4:
                return str(ipaddress.IPv4Address(bytes(host)))
            return str(ipaddress.IPv6Address(b"".join(p.to_bytes(2, "big") for p in host)))
        except (ValueError, OverflowError):
            return None
    return text_of(host)


class NetAdmModule:
    """The functions of built-in ``net_adm``."""

    def __init__(self, node: NodeServices) -> None:
        self._node = node

    async def ping(self, node: Term) -> Atom:
        if not isinstance(node, Atom):
            function_clause(NET_ADM, "ping", [node])
        me = self._node
        try:
            answer = await genserver.call(me, (NET_KERNEL, node), (IS_AUTH, me.node_atom),
                                          timeout=PING_TIMEOUT)
        except (ErlNodeError, OSError):
            answer = None
        if answer is YES:
            return PONG
        me.disconnect(node)
        return PANG

    async def names(self, host: Term = _UNSET) -> Term:
        where = "127.0.0.1" if host is _UNSET else host_text(host)
        if where is None:
            return (ERROR, ADDRESS)
        try:
            listed = await self._node.epmd_names(where)
        except (EpmdError, OSError):
            return (ERROR, ADDRESS)
        return (OK, [(charlist(name), port) for name, port in listed])

    def localhost(self) -> list[int]:
        return charlist(socket.gethostname())
