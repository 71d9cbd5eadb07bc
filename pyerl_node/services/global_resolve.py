"""Name conflicts when partitions join (docs/protocol/global.md §7): ``exchange_names`` and the
methods.

The node whose name sorts first resolves each clash by calling
``global:resolve_it(Method, Name, HisPid, MyPid)`` on the node of *its own* pid, where
``Method`` is the method its own registration carries. That node may be a BEAM node (we rpc
into it) or a Python node; for the latter :func:`resolve_it` implements the same semantics,
and the built-in module ``global`` (:mod:`pyerl_node.services.builtins.global_`) serves it so
that BEAM nodes can rpc into us as they would into each other.

Built-in methods: ``random_exit_name`` (OTP's default, a local fun of module ``global`` on the
wire; we send the equivalent ``fun global:random_exit_name/3``), ``random_notify_name`` and
``notify_all_name``. Any other ``fun M:F/3`` runs as ``M:F(Name, Pid1, Pid2)`` among the
callables exposed on the pid's node.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pyerl_node.proto.errors import RpcError
from pyerl_node.proto.safe_repr import safe_repr
from pyerl_node.proto.terms import Atom, Export, Fun, Pid, Term
from pyerl_node.runtime.process import KILL
from pyerl_node.services import rpc as rpc_service

if TYPE_CHECKING:
    from pyerl_node.runtime.interface import NodeServices

log = logging.getLogger("pyerl_node.global")

GLOBAL = Atom("global")
RESOLVE_IT = Atom("resolve_it")
RANDOM_EXIT = Export(GLOBAL, Atom("random_exit_name"), 3)
RANDOM_NOTIFY = Export(GLOBAL, Atom("random_notify_name"), 3)
NOTIFY_ALL = Export(GLOBAL, Atom("notify_all_name"), 3)
METHODS = {e.function.name: e for e in (RANDOM_EXIT, RANDOM_NOTIFY, NOTIFY_ALL)}
INSERT = Atom("insert")
DELETE = Atom("delete")
NONE = Atom("none")
BADRPC = Atom("badrpc")
CONFLICT = Atom("global_name_conflict")

NameEntry = tuple[Term, Pid, Term]  # {Name, Pid, Method}
Resolve = Callable[[Term, Term, Pid, Pid], Awaitable[Term]]


def _minmax(p1: Pid, p2: Pid) -> tuple[Pid, Pid]:
    return (p1, p2) if p1.node.name < p2.node.name else (p2, p1)


async def resolve_it(node: NodeServices, exposed: rpc_service.Exposed, method: Term,
                     name: Term, pid1: Pid, pid2: Pid, *, sender: Pid) -> Term:
    """``global:resolve_it/4`` run on this node: ``catch Method(Name, Pid1, Pid2)``."""
    if type(method) is Fun and method.module is GLOBAL:
        method = RANDOM_EXIT  # the default method is a local fun of module global
    if type(method) is not Export or method.arity != 3:
        return (Atom("EXIT"), (Atom("badfun"), method))
    if method == RANDOM_EXIT:
        low, high = _minmax(pid1, pid2)
        log.info("global: Name conflict terminating %s", safe_repr((name, high)))
        node.exit(sender, high, KILL)
        return low
    if method == RANDOM_NOTIFY:
        low, high = _minmax(pid1, pid2)
        await node.send(high, (CONFLICT, name), sender=sender)
        return low
    if method == NOTIFY_ALL:
        await node.send(pid1, (CONFLICT, name, pid2), sender=sender)
        await node.send(pid2, (CONFLICT, name, pid1), sender=sender)
        return NONE
    outcome = await rpc_service.apply(exposed, method.module, method.function,
                                      [name, pid1, pid2])
    return rpc_service.rpc_result(outcome)


def remote_resolver(node: NodeServices, exposed: rpc_service.Exposed, sender: Pid) -> Resolve:
    """Resolve on the node of ``MyPid``: here, or by ``rpc:call`` (``{badrpc, R}`` on error)."""

    async def resolve(method: Term, name: Term, his: Pid, mine: Pid) -> Term:
        if mine.node is node.node_atom:
            return await resolve_it(node, exposed, method, name, his, mine, sender=sender)
        try:
            return await rpc_service.rpc_call(node, exposed, mine.node, GLOBAL, RESOLVE_IT,
                                              [method, name, his, mine], timeout=None)
        except RpcError as exc:
            return (BADRPC, exc.reason)

    return resolve


async def exchange_names(
    his_names: list[Term],
    lookup: Callable[[Term], NameEntry | None],
    i_resolve: bool,
    resolve: Resolve,
) -> tuple[list[Term], list[Term]]:
    """OTP ``exchange_names``: (ops for me, resolutions for him) from his name list.

    ``i_resolve`` is ``node() < HisNode``; ``lookup`` reads my current name table.
    """
    ops: list[Term] = []
    res: list[Term] = []
    for entry in his_names:
        if not (type(entry) is tuple and len(entry) == 3 and type(entry[1]) is Pid):
            continue
        name, pid, method = entry
        mine = lookup(name)
        if mine is None:
            ops.append((INSERT, entry))
            continue
        _, pid2, method2 = mine
        if pid2 == pid or not i_resolve:
            continue  # same registration, or the other side resolves
        winner = await resolve(method2, name, pid, pid2)
        if winner == pid:
            ops.append((INSERT, (name, pid, method)))
        elif winner == pid2:
            res.append((INSERT, (name, pid2, method2)))
        elif winner is NONE:
            ops.append((DELETE, name))
            res.append((DELETE, name))
        elif type(winner) is tuple and len(winner) == 2 and winner[0] is BADRPC:
            log.info("global: badrpc %s received when conflicting name %s was found",
                safe_repr(winner[1]), safe_repr(name))
            ops.append((INSERT, (name, pid, method)))
        else:
            log.info("global: Resolve method %s for conflicting name %s returned %s",
                safe_repr(method), safe_repr(name), safe_repr(winner))
            ops.append((DELETE, name))
            res.append((DELETE, name))
    # OTP prepends each op; keep its order so that the wire lists match
    return ops[::-1], res[::-1]
