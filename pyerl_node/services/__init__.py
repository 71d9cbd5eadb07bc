"""Built-in processes every BEAM peer expects to find on a node (PROTOCOL.md §8)."""

from __future__ import annotations

from pyerl_node.runtime.genserver import start_server
from pyerl_node.runtime.interface import NodeServices
from pyerl_node.services.global_names import GlobalNameServer
from pyerl_node.services.group_leader import GroupLeader
from pyerl_node.services.net_kernel import NetKernel
from pyerl_node.services.rex import Rex
from pyerl_node.services.rpc import GROUP_LEADER_NAME, Exposed, spawn_handler


def start_builtin_services(
    node: NodeServices, exposed: Exposed, *, global_names: bool
) -> GlobalNameServer | None:
    """Register ``net_kernel``, ``rex`` and our group leader, serve distributed spawns from
    ``exposed``, and start ``global_name_server`` when the node takes part in ``global``.

    Without ``global`` the node stays silent towards it, never half participating: that would
    hang ``global:register_name`` on every BEAM node (GLOBAL.md §4.4).
    """
    node.spawn_handler = spawn_handler(node, exposed)
    start_server(node, NetKernel(), name="net_kernel")
    start_server(node, Rex(node, exposed), name="rex")
    start_server(node, GroupLeader(), name=GROUP_LEADER_NAME)
    if not global_names:
        return None
    server = GlobalNameServer(node, exposed)
    server.start()
    return server
