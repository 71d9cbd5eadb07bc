"""``rex``: the rpc server name. Answers the ``features_request`` every BEAM node sends on
connect (NET_KERNEL_RPC.md §3.1); rpc itself comes with its own service.
"""

from __future__ import annotations

from pyerl_node.flags import DistFlag
from pyerl_node.gen import GenServer
from pyerl_node.terms import Atom, Pid, Term

FEATURES_REQUEST = Atom("features_request")
FEATURES_REPLY = Atom("features_reply")
ERPC = Atom("erpc")


class Rex(GenServer):
    async def handle_info(self, message: Term) -> None:
        if (
            type(message) is tuple
            and len(message) == 2
            and isinstance(message[0], Pid)
            and message[1] is FEATURES_REQUEST
        ):
            node = self.process.node
            # Only claim erpc when spawn requests are served.
            features = [ERPC] if node.flags & DistFlag.SPAWN else []
            await self.process.send(message[0], (FEATURES_REPLY, node.node_atom, features))
