"""Built-in processes every BEAM peer expects to find on a node (docs/protocol/distribution.md §8),
and the built-in modules BEAM code and tools call on any node (:mod:`.builtins`)."""

from __future__ import annotations

from pyerl_node.runtime.genserver import start_server
from pyerl_node.runtime.interface import NodeServices
from pyerl_node.services.builtins import global_
from pyerl_node.services.builtins.application import ApplicationModule
from pyerl_node.services.builtins.code import CodeModule
from pyerl_node.services.builtins.erlang import ErlangModule
from pyerl_node.services.builtins.names import (
    APPLICATION,
    CODE,
    ERLANG,
    GLOBAL,
    NET_ADM,
    NET_KERNEL,
    OS,
)
from pyerl_node.services.builtins.net_adm import NetAdmModule
from pyerl_node.services.builtins.net_kernel import NetKernelModule
from pyerl_node.services.builtins.os import OsModule
from pyerl_node.services.builtins.peer_release import PeerReleases
from pyerl_node.services.global_names import GlobalNameServer
from pyerl_node.services.group_leader import GroupLeader
from pyerl_node.services.net_kernel import NetKernel
from pyerl_node.services.rex import Rex
from pyerl_node.services.rpc import GROUP_LEADER_NAME, Exposed, spawn_handler


def start_builtin_services(
    node: NodeServices, exposed: Exposed, *, global_names: bool
) -> GlobalNameServer | None:
    """Register ``net_kernel``, ``rex`` and our group leader, serve distributed spawns from
    ``exposed`` and the built-in modules, and start ``global_name_server`` (with built-in
    ``global``) when the node takes part in ``global``. GenServers learn from
    :class:`~.builtins.peer_release.PeerReleases` which ``sys`` answer form a caller reads.

    Without ``global`` the node stays silent towards it, never half participating: that would
    hang ``global:register_name`` on every BEAM node (docs/protocol/global.md §4.4). Built-in ``pg``
    registers through :func:`pyerl_node.services.builtins.pg.provide` once pg runs.
    """
    node.spawn_handler = spawn_handler(node, exposed)
    node.state_reply_probe = PeerReleases(node, exposed).reads_ok_tuple
    start_server(node, NetKernel(), name="net_kernel")
    start_server(node, Rex(node, exposed), name="rex")
    start_server(node, GroupLeader(), name=GROUP_LEADER_NAME)
    exposed.provide(ERLANG, ErlangModule(node, exposed))
    exposed.provide(NET_ADM, NetAdmModule(node))
    exposed.provide(NET_KERNEL, NetKernelModule(node))
    exposed.provide(OS, OsModule())
    exposed.provide(APPLICATION, ApplicationModule())
    exposed.provide(CODE, CodeModule(exposed))
    if not global_names:
        return None
    server = GlobalNameServer(node, exposed)
    server.start()
    exposed.provide(GLOBAL, global_.GlobalBuiltin(node, exposed, server),
                    internal=global_.INTERNAL)
    return server
