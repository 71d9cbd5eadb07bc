"""``net_kernel``: answers ``{is_auth, Node}`` so that ``net_adm:ping/1`` returns ``pong``.

A BEAM node that gets no answer (or a ``noproc``) pings ``pang`` and disconnects us
(docs/protocol/net_kernel_rpc.md §2). The handshake already proved the cookie, so the answer is
``yes``.
"""

from __future__ import annotations

from pyerl_node.proto.terms import Atom, Term
from pyerl_node.runtime.genserver import From, GenServer

IS_AUTH = Atom("is_auth")
YES = Atom("yes")


class NetKernel(GenServer):
    async def handle_call(self, request: Term, from_: From) -> Term:
        if type(request) is tuple and len(request) == 2 and request[0] is IS_AUTH:
            return YES
        # Other net_kernel calls (connect, monitor_nodes via gen_server...) are not served:
        # answer with an error term rather than leave the caller waiting.
        return (Atom("error"), Atom("not_supported"))
