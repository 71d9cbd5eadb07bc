"""The public ``global`` API: name changes through the registrar, user locks
(docs/protocol/global.md §5).

Every name change runs OTP's ``trans_all_known`` in one registrar process, so the name server
never waits on a remote node: lock ``{global, RegistrarPid}`` on the boss (the greatest node
name) alone, then on every known node and this one (retrying with OTP's random back-off while
another transaction or a connect session holds it, and when the known nodes changed
meanwhile), make the change with one ``multi_call`` to all of them, release everywhere but the
boss, then the boss. Lock, change and release all come from the registrar's pid: the
receivers keep the change only because that pid holds their ``global`` lock.

Reads (``whereis_name``, ``registered_names``, ``send``) are local table reads.
``set_lock``/``del_lock``/``trans`` take user locks with the same calls, held by a process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pyerl_node.proto.errors import LocalProtocolError, NoProc
from pyerl_node.proto.safe_repr import safe_repr
from pyerl_node.proto.terms import Atom, Pid, Term, freeze
from pyerl_node.runtime.process import Process
from pyerl_node.services.global_calls import (
    DEL_LOCK,
    GLOBAL,
    NameServer,
    delete_global_lock,
    multi_call,
    random_sleep,
    set_lock_on_nodes,
    the_boss,
)
from pyerl_node.services.global_resolve import METHODS, RANDOM_EXIT
from pyerl_node.services.global_tables import is_lock_id

log = logging.getLogger("pyerl_node.global")

T = TypeVar("T")
REGISTER = Atom("register")
UNREGISTER = Atom("unregister")
ABORTED = Atom("aborted")
_TRANS = Atom("$pyerl_global_trans")

Transaction = Callable[[Process, list[Atom]], Awaitable[T]]


def wire_method(method: Term | None) -> Term:
    """The resolve method sent with a registration: OTP's default is ``random_exit_name``;
    a built-in one may be named by ``str``/atom; any other term (an ``Export`` fun/3) is sent
    as it is."""
    if method is None:
        return RANDOM_EXIT
    key = method.name if isinstance(method, Atom) else method
    if isinstance(key, str):
        if key not in METHODS:
            raise LocalProtocolError(f"unknown resolve method {key!r}; "
                                     f"built-in: {', '.join(sorted(METHODS))}")
        return METHODS[key]
    return method


def _name(name: Term) -> Term:
    return Atom(name) if isinstance(name, str) else name


class Registrar:
    """The registrar process of one node and the API that runs through it."""

    def __init__(self, gns: NameServer) -> None:
        self.gns = gns
        self.tables = gns.tables
        self.node = gns.node
        self._local = gns.call_local
        self.proc: Process
        self._lock_owners: dict[Term, Process] = {}

    def start(self) -> None:
        self.proc = self.node.spawn(self._loop)

    async def _loop(self, proc: Process) -> None:
        while True:
            msg = await proc.receive()
            if not (type(msg) is tuple and len(msg) == 3 and msg[0] is _TRANS):
                continue
            _, fun, done = msg
            try:
                result = await self._trans_all_known(proc, fun)
            except Exception as exc:
                if not done.done():
                    done.set_exception(exc)
            else:
                if not done.done():
                    done.set_result(result)

    async def _trans_all_known(self, proc: Process, fun: Transaction[Term]) -> Term:
        lock_id = (GLOBAL, proc.pid)
        nodes = await self._set_lock_known(proc, lock_id)
        try:
            return await fun(proc, nodes)
        finally:
            await delete_global_lock(proc, lock_id, nodes, local=self._local)

    async def _set_lock_known(self, proc: Process, lock_id: Term) -> list[Atom]:
        times = 0
        while True:
            known = list(self.gns.known)
            nodes = [self.gns.me, *known]
            boss = the_boss(nodes)
            if await set_lock_on_nodes(proc, lock_id, [boss], local=self._local):
                if (await set_lock_on_nodes(proc, lock_id, nodes,
                                            local_free=self.tables.can_set_lock(lock_id),
                                            local=self._local)
                        and not set(self.gns.known) - set(known)):
                    return nodes
                await multi_call(proc, [boss], (DEL_LOCK, lock_id), local=self._local)
            await random_sleep(times)
            times += 1

    async def _run(self, fun: Transaction[T]) -> T:
        registrar = self.proc.task
        if registrar is None or registrar.done():
            raise LocalProtocolError(f"global is stopped on {self.gns.me.name}")
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.proc.mailbox.put((_TRANS, fun, done))
        # the node may stop meanwhile: then the registrar ends without answering
        await asyncio.wait([done, registrar], return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            raise LocalProtocolError(f"global stopped on {self.gns.me.name} during the call")
        return done.result()

    # -- names ----------------------------------------------------------------------------

    async def register_name(self, name: Term, pid: Pid, method: Term | None = None) -> bool:
        """``global:register_name/2,3``: True (yes), or False (no: the name is taken, or the
        pid already has a name)."""
        name, sent_method = _name(name), wire_method(method)

        async def fun(proc: Process, nodes: list[Atom]) -> bool:
            if self.tables.where(name) is not None:
                return False
            others = self.tables.has_other_name(pid)
            if others:
                log.error("global: %s registered under several names: %s",
                    safe_repr(pid), safe_repr([name, *others]))
                return False
            await multi_call(proc, nodes, (REGISTER, name, pid, sent_method),
                             local=self._local)
            return True

        return await self._run(fun)

    async def re_register_name(self, name: Term, pid: Pid, method: Term | None = None) -> None:
        """``global:re_register_name/2,3``: registers, replacing any holder."""
        name, sent_method = _name(name), wire_method(method)

        async def fun(proc: Process, nodes: list[Atom]) -> None:
            await multi_call(proc, nodes, (REGISTER, name, pid, sent_method),
                             local=self._local)

        await self._run(fun)

    async def unregister_name(self, name: Term) -> None:
        """``global:unregister_name/1``."""
        name = _name(name)
        if self.tables.where(name) is None:
            return

        async def fun(proc: Process, nodes: list[Atom]) -> None:
            await multi_call(proc, nodes, (UNREGISTER, name), local=self._local)

        await self._run(fun)

    async def send(self, name: Term, message: Term, *, sender: Pid | None = None) -> Pid:
        """``global:send/2``: the pid the message went to; NoProc if the name is unknown."""
        pid = self.tables.where(name)
        if pid is None:
            raise NoProc(f"no process is globally registered as {name!r}")
        await self.node.send(pid, message, sender=sender)
        return pid

    # -- user locks -------------------------------------------------------------------------

    async def set_lock(self, lock_id: tuple[Term, Term], nodes: list[Atom] | None = None,
                       retries: int | None = None, *, owner: Process | None = None) -> bool:
        """``global:set_lock/1,2,3`` (``retries=None``: infinity). The lock is held by
        ``owner``, by default a process kept for this lock id until :meth:`del_lock`."""
        if not is_lock_id(lock_id):
            raise LocalProtocolError(f"a lock id is {{ResourceId, RequesterId}}, not {lock_id!r}")
        holder = owner or self._lock_owner(lock_id)
        targets = self._targets(nodes)
        times = 1
        while True:
            if await set_lock_on_nodes(holder, lock_id, targets,
                                       local_free=self.tables.can_set_lock(lock_id),
                                       local=self._local):
                return True
            if retries is not None:
                if retries <= 0:
                    if owner is None:
                        self._drop_lock_owner(lock_id)
                    return False
                retries -= 1
            await random_sleep(times)
            times += 1

    async def del_lock(self, lock_id: tuple[Term, Term], nodes: list[Atom] | None = None,
                       *, owner: Process | None = None) -> None:
        """``global:del_lock/1,2``."""
        holder = owner or self._lock_owners.get(freeze(lock_id))
        if holder is None:
            return
        await multi_call(holder, self._targets(nodes), (DEL_LOCK, lock_id),
                         local=self._local)
        if owner is None:
            self._drop_lock_owner(lock_id)

    async def trans(self, lock_id: tuple[Term, Term], fun: Callable[[], Awaitable[T]],
                    nodes: list[Atom] | None = None, retries: int | None = None) -> T | Atom:
        """``global:trans/2,3,4``: ``await fun()`` under the lock, or ``aborted``."""
        holder = self.node.new_process()
        try:
            if not await self.set_lock(lock_id, nodes, retries, owner=holder):
                return ABORTED
            try:
                return await fun()
            finally:
                await self.del_lock(lock_id, nodes, owner=holder)
        finally:
            holder.exit()

    def _targets(self, nodes: list[Atom] | None) -> list[Atom]:
        return [self.gns.me, *self.node.nodes()] if nodes is None else list(nodes)

    def _lock_owner(self, lock_id: Term) -> Process:
        key = freeze(lock_id)
        owner = self._lock_owners.get(key)
        if owner is None or not owner.alive:
            owner = self._lock_owners[key] = self.node.new_process()
        return owner

    def _drop_lock_owner(self, lock_id: Term) -> None:
        owner = self._lock_owners.pop(freeze(lock_id), None)
        if owner is not None:
            owner.exit()
