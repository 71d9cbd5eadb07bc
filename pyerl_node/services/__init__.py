"""Built-in processes every BEAM peer expects to find on a node (PROTOCOL.md §8)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyerl_node.node import Node


def start_builtin_services(node: Node) -> None:
    """Register ``net_kernel``, ``rex`` and our group leader, and ``global_name_server`` when
    the node takes part in ``global`` (``Node(global_names=True)``). Without it the node stays
    silent towards ``global``, never half participating: that would hang
    ``global:register_name`` on every BEAM node (GLOBAL.md §4.4).
    """
    from pyerl_node.gen import start_server
    from pyerl_node.services.group_leader import GroupLeader
    from pyerl_node.services.net_kernel import NetKernel
    from pyerl_node.services.rex import Rex

    start_server(node, NetKernel(), name="net_kernel")
    start_server(node, Rex(), name="rex")
    start_server(node, GroupLeader(), name="pyerl_group_leader")
    if node.global_names:
        from pyerl_node.services.global_names import GlobalNameServer

        node.global_service = GlobalNameServer(node)
        node.global_service.start()
