"""Lock calls between ``global_name_server`` processes: multi_call, set_lock, del_lock.

docs/protocol/global.md §4.5 and §5. Every lock operation is a ``gen_server:multi_call`` of
``{set_lock, Id}`` / ``{del_lock, Id}`` to the ``global_name_server`` of a list of nodes,
made *from the process that holds the lock*: the receivers record the pid in ``From`` as the
holder, and the lock-holder rule (§5) keeps a ``{register, ...}`` only when it comes from a
holder. So every helper here takes the calling :class:`Process` and sends from its pid.

Calls use the plain ``{Pid, Ref}`` tag (monitor reference as tag), which every OTP release
answers; nodes that do not answer (down, or no ``global_name_server``) are "bad nodes" and,
as in OTP's ``check_replies``, do not make a lock attempt fail. The call to our own node's
name server is answered directly (it answers these requests synchronously anyway): a
transaction then costs one network round trip per remote node and step, as on the BEAM.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from typing import Protocol

from pyerl_node.proto.errors import CallTimeout, ErlNodeError
from pyerl_node.proto.terms import Atom, Pid, Reference, Term
from pyerl_node.runtime.genserver import GEN_CALL
from pyerl_node.runtime.interface import NodeServices
from pyerl_node.runtime.process import DOWN, Process
from pyerl_node.services.global_tables import Tables

GNS = Atom("global_name_server")
GLOBAL = Atom("global")
SET_LOCK = Atom("set_lock")
DEL_LOCK = Atom("del_lock")

# OTP's multi_call waits forever; a node that never answers would then freeze the caller (the
# hang of docs/protocol/global.md §4.4). A generous bound keeps every wait finite: such a node
# counts as bad.
CALL_TIMEOUT = 30.0


#: Our own name server's answer to a call from a local process (``call_local``).
LocalAnswer = Callable[[Term, Pid], Term]


class NameServer(Protocol):
    """What the locker and the registrar use of their node's ``global_name_server``."""

    node: NodeServices
    me: Atom
    known: dict[Atom, int]
    tables: Tables

    def call_local(self, request: Term, caller: Pid) -> Term: ...


async def multi_call(
    proc: Process, nodes: Iterable[Atom], request: Term, *, timeout: float = CALL_TIMEOUT,
    local: LocalAnswer | None = None,
) -> tuple[dict[Atom, Term], list[Atom]]:
    """``gen_server:multi_call(Nodes, global_name_server, Request)`` from ``proc``.

    ``local`` answers for our own node, when given. Returns (replies by node, bad nodes).
    """
    node = proc.host
    waiting: dict[Reference, Atom] = {}
    bad: list[Atom] = []
    replies: dict[Atom, Term] = {}
    for target in dict.fromkeys(nodes):
        if target is node.node_atom and local is not None:
            # our own name server answers at once: the same answer as a message round trip
            # (every request here is answered synchronously), without two loop hops
            replies[target] = local(request, proc.pid)
            continue
        ref = proc.monitor((GNS, target))
        try:
            await node.send((GNS, target), (GEN_CALL, (proc.pid, ref), request), sender=proc.pid)
        except (ErlNodeError, OSError):
            proc.demonitor(ref)
            bad.append(target)
            continue
        waiting[ref] = target

    def answer(msg: Term) -> bool:
        if type(msg) is not tuple:
            return False
        if len(msg) == 2:
            return type(msg[0]) is Reference and msg[0] in waiting
        return (len(msg) == 5 and msg[0] is DOWN and type(msg[1]) is Reference
                and msg[1] in waiting)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while waiting:
        try:
            msg = await proc.receive(answer, max(0.0, deadline - loop.time()))
        except CallTimeout:
            break
        target = waiting.pop(msg[1] if len(msg) == 5 else msg[0])
        if len(msg) == 2:
            proc.demonitor(msg[0])
            replies[target] = msg[1]
        else:
            bad.append(target)
    for ref, target in waiting.items():
        proc.demonitor(ref)
        bad.append(target)
    return replies, bad


async def set_lock_on_nodes(
    proc: Process, lock_id: Term, nodes: list[Atom], local_free: bool = True, *,
    local: LocalAnswer | None = None,
) -> bool:
    """One attempt to take ``lock_id`` on ``nodes`` (OTP ``set_lock_on_nodes``).

    ``local_free`` is the caller's probe of the lock on its own node (``local_lock_check``):
    when it is False and there is more than one node, nothing is sent. On a partial success the
    locks taken are released again.
    """
    if not nodes:
        return True
    if len(nodes) > 1 and proc.pid.node in nodes and not local_free:
        return False
    replies, _bad = await multi_call(proc, nodes, (SET_LOCK, lock_id), local=local)
    granted = [n for n, r in replies.items() if r is True]
    if len(granted) == len(replies):
        return True
    if len(replies) > 1 and granted:
        await multi_call(proc, granted, (DEL_LOCK, lock_id), local=local)
    return False


async def del_lock(proc: Process, lock_id: Term, nodes: Iterable[Atom], *,
                   local: LocalAnswer | None = None) -> None:
    """``global:del_lock(Id, Nodes)``: always succeeds."""
    nodes = list(nodes)
    if nodes:
        await multi_call(proc, nodes, (DEL_LOCK, lock_id), local=local)


async def delete_global_lock(proc: Process, lock_id: Term, nodes: list[Atom], *,
                             local: LocalAnswer | None = None) -> None:
    """Release ``lock_id`` everywhere, the boss last (OTP ``delete_global_lock``)."""
    if not nodes:
        return
    boss = the_boss(nodes)
    await del_lock(proc, lock_id, [n for n in nodes if n is not boss], local=local)
    await del_lock(proc, lock_id, [boss], local=local)


def the_boss(nodes: Iterable[Atom]) -> Atom:
    """``lists:max(Nodes)``: atoms compare by their text."""
    return max(nodes, key=lambda n: n.name)


def pid_order(pid: Pid) -> tuple[int, int, str, int]:
    """Erlang term order of pids: serial, id, node name, creation (docs/protocol/distribution.md
    §5.5)."""
    return (pid.serial, pid.id, pid.node.name, pid.creation)


def locker_lock_id(mine: Pid, his: Pid) -> tuple[Atom, list[Pid]]:
    """The lock id of a connect session: ``{global, lists:sort([MyLocker, HisLocker])}``."""
    return (GLOBAL, sorted([mine, his], key=pid_order))


async def random_sleep(times: int) -> None:
    """OTP's back-off: uniform up to 125 ms * 2^times, at most 8 s."""
    top = 8.0 if times > 5 else (1 << times) / 8
    await asyncio.sleep(random.uniform(0.001, top))
