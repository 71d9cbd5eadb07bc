"""The node's built-in modules: what BEAM code and tools call on any node, answered by Python.

Every BEAM node answers ``erlang:node/0``, ``global:whereis_name/1``, ``net_adm:ping/1``,
``code:which/1``... through rpc, erpc, multicall and distributed spawn; a node that answers
``undef`` counts as failing in every ``rpc:multicall`` across the cluster. Each module here
serves one Erlang module for this node's own processes, names and connections, with the
return shapes (and the error shapes) an OTP 25 node gives; ``docs/builtins.md`` lists the
functions and the values chosen where Python has no equivalent.

The modules are plain objects whose public methods are the Erlang functions (arity from the
signature); :func:`pyerl_node.services.start_builtin_services` hands them to
:meth:`pyerl_node.services.rpc.Exposed.provide`. They answer inline (no thread), so each
function is quick or ``async``. This package's ``__init__`` imports nothing: the rpc module
reads :mod:`.names` at import time.
"""
