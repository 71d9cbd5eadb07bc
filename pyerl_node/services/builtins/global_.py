"""Built-in ``global``: the node's own ``global`` service as BEAM code calls it through rpc.

``whereis_name``, ``registered_names`` and ``send`` read this node's name table;
``register_name``, ``re_register_name`` and ``unregister_name`` run a transaction of this
node's registrar (docs/protocol/global.md §5), exactly as ``Node.global_register`` does;
``set_lock``, ``del_lock``, ``trans`` and ``sync`` are the node's user locks and sync.
``resolve_it/4`` is the function a BEAM node's ``global`` calls here to resolve a name
conflict (docs/protocol/global.md §7): it is internal, so it stays this module's even when a
user replaces ``global``.

A fun given to ``trans`` runs only if it is ``fun M:F/0`` of a module rpc reaches; any other
fun fails with ``undef`` under the lock, as a fun of a module the node does not have fails.
"""

from __future__ import annotations

from typing import Any, Final

from pyerl_node.proto.errors import ProcessExit
from pyerl_node.proto.terms import Atom, Export, Fun, Pid, Term
from pyerl_node.runtime.interface import NodeServices
from pyerl_node.services import rpc as rpc_service
from pyerl_node.services.builtins.common import OK, UNDEFINED, function_clause
from pyerl_node.services.builtins.erlang import raise_outcome
from pyerl_node.services.builtins.names import GLOBAL
from pyerl_node.services.global_names import GlobalNameServer
from pyerl_node.services.global_resolve import resolve_it
from pyerl_node.services.global_tables import is_lock_id
from pyerl_node.services.rpc import ErlangError, Exposed, Outcome

YES: Final = Atom("yes")
NO: Final = Atom("no")
BADARG: Final = Atom("badarg")
BADFUN: Final = Atom("badfun")
UNDEF: Final = Atom("undef")
INFINITY: Final = Atom("infinity")
#: the functions the node's own protocol calls (a BEAM's global resolving a conflict)
INTERNAL: Final = frozenset({"resolve_it"})
_UNSET: Any = object()
_TRANS_FRAME: Final[Term] = (GLOBAL, Atom("trans"), 4, [])


class GlobalBuiltin:
    """The functions of built-in ``global``."""

    def __init__(self, node: NodeServices, exposed: Exposed, server: GlobalNameServer) -> None:
        self._node = node
        self._exposed = exposed
        self._server = server

    # -- names -----------------------------------------------------------------------------

    def whereis_name(self, name: Term) -> Term:
        pid = self._server.tables.where(name)
        return UNDEFINED if pid is None else pid

    def registered_names(self) -> list[Term]:
        return self._server.tables.registered_names()

    async def register_name(self, name: Term, pid: Term, method: Term = _UNSET) -> Atom:
        self._check_registration("register_name", name, pid, method)
        done = await self._server.registrar.register_name(name, pid, _method(method))
        return YES if done else NO

    async def re_register_name(self, name: Term, pid: Term, method: Term = _UNSET) -> Atom:
        self._check_registration("re_register_name", name, pid, method)
        await self._server.registrar.re_register_name(name, pid, _method(method))
        return YES

    async def unregister_name(self, name: Term) -> Atom:
        await self._server.registrar.unregister_name(name)
        return OK

    async def send(self, name: Term, message: Term) -> Pid:
        pid = self._server.tables.where(name)
        if pid is None:
            raise ProcessExit((BADARG, (name, message)))  # global:send/2 exits so
        await self._node.send(pid, message)
        return pid

    async def sync(self, nodes: Term = _UNSET) -> Atom:
        if nodes is not _UNSET and not isinstance(nodes, list):
            function_clause(GLOBAL, "sync", [nodes])
        await self._server.sync(None if nodes is _UNSET else nodes)
        return OK

    @staticmethod
    def _check_registration(function: str, name: Term, pid: Term, method: Term) -> None:
        if not isinstance(pid, Pid):
            function_clause(GLOBAL, function, [name, pid])
        if method is not _UNSET and not isinstance(method, Export | Fun):
            raise ErlangError(Atom("function_clause"), [
                (GLOBAL, Atom("allow_tuple_fun"), [method], []),
                (GLOBAL, Atom(function), 3, [])])

    # -- locks -----------------------------------------------------------------------------

    async def set_lock(self, lock_id: Term, nodes: Term = _UNSET,
                       retries: Term = _UNSET) -> bool:
        self._check_lock("set_lock", lock_id, nodes, retries)
        return await self._server.registrar.set_lock(lock_id, _nodes(nodes), _retries(retries))

    async def del_lock(self, lock_id: Term, nodes: Term = _UNSET) -> bool:
        self._check_lock("del_lock", lock_id, nodes, _UNSET)
        await self._server.registrar.del_lock(lock_id, _nodes(nodes))
        return True

    async def trans(self, lock_id: Term, fun: Term, nodes: Term = _UNSET,
                    retries: Term = _UNSET) -> Term:
        self._check_lock("trans", lock_id, nodes, retries)

        async def run() -> Outcome:
            return await self._run_fun(fun)

        result = await self._server.registrar.trans(lock_id, run, _nodes(nodes),
                                                    _retries(retries))
        return result if isinstance(result, Atom) else raise_outcome(result, _TRANS_FRAME)

    async def _run_fun(self, fun: Term) -> Outcome:
        if isinstance(fun, Export) and fun.arity == 0:
            return await rpc_service.apply(self._exposed, fun.module, fun.function, [])
        if isinstance(fun, Fun) and fun.arity == 0:  # Erlang code, which cannot run here
            return Outcome(rpc_service.ERROR, UNDEF, [(fun, [], [])])
        return Outcome(rpc_service.ERROR, (BADFUN, fun), [_TRANS_FRAME])

    @staticmethod
    def _check_lock(function: str, lock_id: Term, nodes: Term, retries: Term) -> None:
        args = [a for a in (lock_id, nodes, retries) if a is not _UNSET]
        if not is_lock_id(lock_id) or (nodes is not _UNSET and not isinstance(nodes, list)):
            function_clause(GLOBAL, function, args)
        if retries is not _UNSET and retries is not INFINITY and not (
                type(retries) is int and retries >= 0):
            function_clause(GLOBAL, function, args)

    # -- conflicts ---------------------------------------------------------------------------

    async def resolve_it(self, method: Term, name: Term, pid1: Pid, pid2: Pid) -> Term:
        return await resolve_it(self._node, self._exposed, method, name, pid1, pid2,
                                sender=self._server.proc.pid)


def _method(method: Term) -> Term | None:
    return None if method is _UNSET else method


def _nodes(nodes: Term) -> list[Atom] | None:
    return None if nodes is _UNSET else nodes


def _retries(retries: Term) -> int | None:
    return None if retries is _UNSET or retries is INFINITY else retries
