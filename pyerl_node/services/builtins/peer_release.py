"""Which form a peer's ``sys`` reads: ``{ok, State}`` (OTP 26.1 and later) or the bare state.

OTP 26.1 changed ``sys:get_state/1`` and ``sys:replace_state/2`` to expect ``{ok, State}``
from the process; OTP 25 expects the bare state and returns whatever comes. Nothing in the
distribution handshake tells 26.1 from 25, so the first sys call from a node asks that node
(``erlang:system_info(otp_release)`` and ``version``, the erts version: 14.1 is OTP 26.1) and
the answer is kept for that incarnation of the node (its creation). A node that does not
answer is read as OTP 25 (a Python node says 25 itself).
"""

from __future__ import annotations

import re
from typing import Final

from pyerl_node.proto.errors import ErlNodeError
from pyerl_node.proto.terms import Atom, Pid
from pyerl_node.runtime.interface import NodeServices
from pyerl_node.services.builtins.common import text_of
from pyerl_node.services.builtins.names import ERLANG
from pyerl_node.services.rpc import Exposed, rpc_call

SYSTEM_INFO: Final = Atom("system_info")
ASK_TIMEOUT: Final = 5.0
#: OTP 26.1 came with erts 14.1
FIRST_OK_TUPLE: Final = (26, (14, 1))


def _numbers(text: str | None) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text or ""))


def reads_ok_tuple(release: str | None, erts_version: str | None) -> bool:
    """Whether a node of that release (and erts version) reads ``{ok, State}``."""
    major = _numbers(release)[:1]
    if not major:
        return False
    return major[0] > FIRST_OK_TUPLE[0] or (
        major[0] == FIRST_OK_TUPLE[0] and _numbers(erts_version)[:2] >= FIRST_OK_TUPLE[1])


class PeerReleases:
    """The answer form of each peer, asked once per node incarnation."""

    def __init__(self, node: NodeServices, exposed: Exposed) -> None:
        self._node = node
        self._exposed = exposed
        self._known: dict[tuple[Atom, int], bool] = {}

    async def reads_ok_tuple(self, caller: Pid) -> bool:
        """Whether ``caller``'s node reads ``{ok, State}`` (a ``StateReplyProbe``)."""
        if caller.node is self._node.node_atom:
            return False
        key = (caller.node, caller.creation)
        known = self._known.get(key)
        if known is None:
            release = await self._ask(caller.node, "otp_release")
            erts = await self._ask(caller.node, "version")
            known = self._known[key] = reads_ok_tuple(release, erts)
        return known

    async def _ask(self, peer: Atom, item: str) -> str | None:
        try:
            answer = await rpc_call(self._node, self._exposed, peer, ERLANG, SYSTEM_INFO,
                                    [Atom(item)], timeout=ASK_TIMEOUT)
        except (ErlNodeError, OSError):
            return None
        return text_of(answer)
