"""A Python EPMD server (Erlang Port Mapper Daemon), for hosts without Erlang.

``python -m epmd [--port 4369] [--address 127.0.0.1] [--relaxed-command-check]`` runs it;
a node embeds it with ``async with EpmdServer(address="127.0.0.1", port=0) as server: ...``.
The byte layouts live in ``pyerl_node.proto.epmd_wire``; see ``epmd.server`` for the behaviour.
"""

from epmd.registry import Registry
from epmd.server import EpmdServer

__all__ = ["EpmdServer", "Registry"]
