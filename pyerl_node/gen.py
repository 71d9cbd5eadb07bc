"""GenServers in Python and the generic call protocol both ways (``gen:call``/``cast``).

The machinery lives in :mod:`pyerl_node.runtime.genserver` (services are GenServers too);
this module is its public face: subclass :class:`GenServer`, start it with
:func:`start_server`, answer later with :data:`NOREPLY` and :func:`reply`.
"""

from pyerl_node.runtime.genserver import NOREPLY, From, GenServer, reply, start_server

__all__ = ["NOREPLY", "From", "GenServer", "reply", "start_server"]
