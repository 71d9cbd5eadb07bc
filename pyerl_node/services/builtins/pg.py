"""The registration point of built-in ``pg`` (process groups).

``pg`` is reserved for the node (``Node.expose("pg", ...)`` is refused) but not served until
the pg service registers its module here: :func:`provide` with an object whose methods are
``which_groups/0,1``, ``get_members/1,2`` and ``get_local_members/1,2`` (the scope argument
first, as in OTP). Until then a call of ``pg`` is ``undef``.
"""

from __future__ import annotations

from pyerl_node.services.builtins.names import PG
from pyerl_node.services.rpc import Exposed


def provide(exposed: Exposed, module: object) -> None:
    """Serve ``module`` as built-in ``pg`` (call it when the pg service starts)."""
    exposed.provide(PG, module)
