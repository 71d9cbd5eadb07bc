"""A Python EPMD server (Erlang Port Mapper Daemon), for hosts without Erlang.

``python -m epmd [--port 4369] [--address LIST] [--daemon]`` runs it as epmd runs (every
interface by default; ``--help`` lists the options), ``pyerl_node.runtime.epmd_daemon.ensure_epmd``
starts that daemon for a node when none listens; a node or a test embeds it with
``async with EpmdServer(address="127.0.0.1", port=0) as server: ...``.
The byte layouts live in ``pyerl_node.proto.epmd_wire``; see ``epmd.server`` for the behaviour.
"""

from epmd.registry import Registry
from epmd.server import EpmdServer

__all__ = ["EpmdServer", "Registry"]
