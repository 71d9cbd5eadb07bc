"""``rex``: the rpc server name (docs/protocol/net_kernel_rpc.md §3.1, §3.3).

Answers the ``features_request`` every BEAM node sends on connect, and serves what still goes
through ``rex`` rather than distributed spawn: ``rpc:block_call`` and the legacy
``{call, M, F, A, GL}`` (as ``$gen_call`` or as the C-node form ``{From, {call, ...}}``),
``{cast, M, F, A, GL}``, and ``rpc:sbcast``. Each call runs in its own task so that a slow
function does not hold up the others.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pyerl_node.proto.terms import Atom, Pid, Term
from pyerl_node.runtime.genserver import NOREPLY, From, GenServer
from pyerl_node.runtime.interface import NodeServices
from pyerl_node.services.rpc import Exposed, apply, rpc_result

FEATURES_REQUEST = Atom("features_request")
FEATURES_REPLY = Atom("features_reply")
ERPC = Atom("erpc")
CALL = Atom("call")
BLOCK_CALL = Atom("block_call")
CAST = Atom("cast")
SBCAST = Atom("sbcast")
REX = Atom("rex")
NONEXISTING_NAME = Atom("nonexisting_name")


def _mfa(request: Term, tag: Atom) -> tuple[Atom, Atom, list[Term]] | None:
    """``(M, F, A)`` of ``{tag, M, F, A, GroupLeader}``, None if it is not that shape."""
    if (
        type(request) is tuple
        and len(request) == 5
        and request[0] is tag
        and type(request[1]) is Atom
        and type(request[2]) is Atom
        and type(request[3]) is list
    ):
        return request[1], request[2], request[3]
    return None


class Rex(GenServer):
    def __init__(self, node: NodeServices, exposed: Exposed) -> None:
        self._node = node
        self._exposed = exposed
        self._tasks: set[asyncio.Task[Any]] = set()

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call_and_reply(self, mfa: tuple[Atom, Atom, list[Term]], from_: From) -> None:
        outcome = await apply(self._exposed, *mfa)
        await self.reply(from_, rpc_result(outcome))

    async def handle_call(self, request: Term, from_: From) -> Term:
        mfa = _mfa(request, CALL) or _mfa(request, BLOCK_CALL)
        if mfa is None:
            return (Atom("error"), Atom("not_supported"))
        self._background(self._call_and_reply(mfa, from_))
        return NOREPLY

    async def handle_cast(self, message: Term) -> None:
        mfa = _mfa(message, CAST)
        if mfa is not None:
            self._background(apply(self._exposed, *mfa))

    async def handle_info(self, message: Term) -> None:
        if not (type(message) is tuple and len(message) == 2 and isinstance(message[0], Pid)):
            return
        sender, request = message
        node = self._node
        if request is FEATURES_REQUEST:
            await self.process.send(sender, (FEATURES_REPLY, node.node_atom, [ERPC]))
        elif (mfa := _mfa(request, CALL)) is not None:
            self._background(self._plain_call(sender, mfa))
        elif type(request) is tuple and len(request) == 3 and request[0] is SBCAST:
            name, msg = request[1], request[2]
            if type(name) is Atom and node.whereis(name) is not None:
                await node.send(name, msg)
                answer: Term = node.node_atom
            else:
                answer = (NONEXISTING_NAME, name)
            await self.process.send(sender, (REX, node.node_atom, answer))

    async def _plain_call(self, sender: Pid, mfa: tuple[Atom, Atom, list[Term]]) -> None:
        outcome = await apply(self._exposed, *mfa)
        await self.process.send(sender, (REX, rpc_result(outcome)))
