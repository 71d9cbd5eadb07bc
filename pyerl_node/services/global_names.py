"""``global``: the cluster-wide name registry, as a full participant (docs/protocol/global.md, vsn
8).

:class:`GlobalNameServer` is the body of the process registered as ``global_name_server``. It
mirrors OTP's ``global`` gen_server message for message, because every BEAM node in the
cluster expects exactly that behaviour:

* **connect sessions** (§4): on ``nodeup`` of a visible peer not yet known it sends
  ``init_connect`` (vsn 8, a fresh tag); the peer's ``init_connect`` is acknowledged with
  ``init_connect_ack`` and handed to the locker (:mod:`.global_locker`); once the locker holds
  the lock in both partitions it sends ``exchange`` with its names; a resolver process
  compares the peer's names with ours (:mod:`.global_resolve`) and ``resolved`` goes back;
  when both sides' results are in, the operations are applied, the peer's partition becomes
  known, ``in_sync`` is cast to each newly known node (connecting to it: ``connect_all``) and
  the locker tells our old partition with ``new_nodes`` before it releases the lock. Tags are
  checked on every message; mismatches cancel (``cancel_connect``) and restart (§4.7).
* **calls** (§5): ``set_lock``/``del_lock``/``register``/``unregister`` from any node, with
  either ``multi_call`` tag form (the reply goes through :func:`pyerl_node.gen.reply`), on the
  tables of :mod:`.global_tables` (monitors, the lock-holder rule).
* **prevent_overlapping_partitions** (§8): on losing a node it multicasts
  ``lost_connection``; on receiving one it forwards it and asks the lost node to disconnect
  from it (``remove_connection``); on ``remove_connection`` it disconnects.
* ``global:sync`` (§6): waits until every visible node is synced or gone.

The public API (``register_name``, ``trans`` ...) is :mod:`.global_registrar`. Hidden
connections never reach us: ``monitor_nodes`` reports visible nodes only (§9).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pyerl_node.proto.errors import ErlNodeError
from pyerl_node.proto.safe_repr import safe_repr
from pyerl_node.proto.terms import Atom, Pid, Reference, Term, freeze
from pyerl_node.runtime.genserver import GEN_CALL, GEN_CAST, NOREPLY, reply
from pyerl_node.runtime.process import DOWN, KILL, Process
from pyerl_node.services.global_calls import DEL_LOCK, GNS, SET_LOCK
from pyerl_node.services.global_locker import (
    ADD_TO_KNOWN,
    CANCEL,
    HIS_THE_LOCKER,
    LOCK_IS_SET,
    LOCK_SET,
    REMOVE_FROM_KNOWN,
    CancelFun,
    Locker,
)
from pyerl_node.services.global_registrar import REGISTER, UNREGISTER, Registrar
from pyerl_node.services.global_resolve import (
    DELETE,
    INSERT,
    exchange_names,
    remote_resolver,
)
from pyerl_node.services.global_tables import LOCK_KEY, Tables, is_lock_id

if TYPE_CHECKING:
    from pyerl_node.runtime.interface import NodeServices
    from pyerl_node.services.rpc import Exposed

log = logging.getLogger("pyerl_node.global")

VSN = 8
VERIFY_CONNECT_VSN = 8
POP_VSN = 7
LOST_CONNECTION_MEMORY = 3600.0

INIT_CONNECT = Atom("init_connect")
INIT_CONNECT_ACK = Atom("init_connect_ack")
CANCEL_CONNECT = Atom("cancel_connect")
EXCHANGE = Atom("exchange")
EXCHANGE_OPS = Atom("exchange_ops")
RESOLVED = Atom("resolved")
NEW_NODES = Atom("new_nodes")
IN_SYNC = Atom("in_sync")
LOST_CONNECTION = Atom("lost_connection")
REMOVE_CONNECTION = Atom("remove_connection")
EXTRA_NODEDOWN = Atom("extra_nodedown")
REGISTER_EXT = Atom("register_ext")
NODEUP = Atom("nodeup")
NODEDOWN = Atom("nodedown")
LOCKER = Atom("locker")
NO_LONGER_A_PID = Atom("no_longer_a_pid")
UNUSED = Atom("unused")
YES = Atom("yes")
OK = Atom("ok")
VSN_KEY = Atom("vsn")


class NodeDownType(enum.Enum):
    """How a node left (OTP's ``handle_nodedown`` ``What``; ``ignore_node`` only exists for
    global groups, which we do not support)."""

    DISCONNECTED = "disconnected"
    REMOVE_CONNECTION = "remove_connection"


@dataclass
class SessionState:
    """Per-peer connect session state (OTP keeps it in the process dictionary)."""

    my_tag: int | None = None
    his_tag: Term = None
    vsn: int | None = None
    wait_lock: Term = None  # LOCK_IS_SET, or ("exchange", NameList) received early
    save_ops: Term = None  # my ops (list), or ("resolved", ...) received early
    lock_id: Term = None
    pre_connect: tuple[int, Term, Term] | None = None


@dataclass
class Syncer:
    waiting: set[Atom]
    done: asyncio.Future[None]


class GlobalNameServer:
    """``global_name_server`` and its helper processes on one node."""

    def __init__(self, node: NodeServices, exposed: Exposed) -> None:
        self.node = node
        self.exposed = exposed
        self.me = node.node_atom
        self.known: dict[Atom, int] = {}
        self.pending: dict[Atom, int] = {}
        self.removing: set[Atom] = set()
        self.synced: list[Atom] = []
        self.sessions: dict[Atom, SessionState] = {}
        self.resolvers: dict[Atom, tuple[int, Process | None]] = {}
        self.tables = Tables(self.me, self._monitor, self._demonitor,
                             lambda pid: node.process(pid) is not None)
        self.syncers: list[Syncer] = []
        self.lost_connections: dict[tuple[Atom, Atom], tuple[int, int, float]] = {}
        self.creation_id = secrets.randbits(58) + node.creation
        self._tags = itertools.count(-(1 << 59))
        self._tasks: set[asyncio.Task[None]] = set()
        self.locker = Locker(self)
        self.registrar = Registrar(self)
        self.proc: Process
        self.locker_proc: Process

    def start(self) -> None:
        """Spawn the name server (registered), the locker and the registrar."""
        node = self.node
        self.proc = node.spawn(self._serve, name=GNS)
        node.monitor_nodes(self.proc.pid)
        self.locker_proc = node.spawn(self.locker.run)
        self.registrar.start()

    async def _serve(self, proc: Process) -> None:
        try:
            while True:
                msg = await proc.receive()
                try:
                    await self._handle(msg)
                except Exception:
                    # one bad message must not take the registry down for the whole cluster
                    log.exception("global_name_server: failed to handle %s", safe_repr(msg))
        finally:
            for task in list(self._tasks):  # connects and casts on our behalf end with us
                task.cancel()

    def _monitor(self, pid: Pid) -> Reference:
        return self.proc.monitor(pid)

    def _demonitor(self, ref: Reference) -> None:
        self.proc.demonitor(ref)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- plumbing -----------------------------------------------------------------------------

    def _session(self, node: Atom) -> SessionState:
        return self.sessions.setdefault(node, SessionState())

    def _my_tag(self, node: Atom) -> int | None:
        st = self.sessions.get(node)
        return None if st is None else st.my_tag

    def _connected(self, node: Atom) -> bool:
        return self.node.is_connected(node)

    async def _cast(self, node: Atom, msg: Term) -> None:
        """``gen_server:cast({global_name_server, Node}, Msg)``; never blocks on a connect."""
        await self._send(node, (GEN_CAST, msg))

    async def _send(self, node: Atom, msg: Term) -> None:
        if node is self.me or self._connected(node):
            await self.node.send((GNS, node), msg, sender=self.proc.pid)
            return

        async def later() -> None:
            try:
                await self.node.send((GNS, node), msg, sender=self.proc.pid)
            except ErlNodeError as exc:
                log.debug("global: cannot reach %s: %s", node.name, exc)

        self._spawn(later())

    async def _volatile_send(self, node: Atom, msg: Term) -> None:
        """Send only over an existing connection (OTP ``noconnect``)."""
        if self._connected(node):
            await self.node.send((GNS, node), msg, sender=self.proc.pid)

    def _to_locker(self, msg: Term) -> None:
        self.locker_proc.mailbox.put(msg)

    # -- dispatch ---------------------------------------------------------------------------

    async def _handle(self, msg: Term) -> None:
        if type(msg) is not tuple or not msg or type(msg[0]) is not Atom:
            log.warning("global_name_server: unexpected message %s", safe_repr(msg))
            return
        kind = msg[0]
        if len(msg) > 1 and kind in self._INFO_KINDS and type(msg[1]) is not Atom:
            log.warning("global_name_server: malformed message %s", safe_repr(msg))
            return
        if kind is GEN_CALL and len(msg) == 3 and _is_from(msg[1]):
            answer = self._handle_call(msg[2], msg[1])
            if answer is not NOREPLY:
                await reply(self.node, msg[1], answer, sender=self.proc.pid)
        elif kind is GEN_CAST and len(msg) == 2 and type(msg[1]) is tuple and msg[1]:
            await self._handle_cast(msg[1])
        elif kind is DOWN and len(msg) == 5:
            self.tables.on_down(msg[1])
        else:
            handler = self._INFO.get((kind, len(msg)))
            if handler is None:
                log.warning("global_name_server: unexpected message %s", safe_repr(msg))
                return
            await handler(self, *msg[1:])

    def call_local(self, request: Term, caller: Pid) -> Term:
        """A ``set_lock``/``del_lock``/``register``/``unregister`` call from a process of this
        node, answered directly (see :func:`.global_calls.multi_call`)."""
        return self._handle_call(request, (caller, None))

    def _handle_call(self, request: Term, from_: tuple[Pid, Term]) -> Term:
        caller = from_[0]
        if type(request) is tuple and request:
            kind, n = request[0], len(request)
            if kind is REGISTER and n == 4 and isinstance(request[2], Pid):
                self.tables.insert(request[1], request[2], request[3], caller, [])
                return YES
            if (kind is REGISTER_EXT and n == 5 and isinstance(request[2], Pid)
                    and type(request[4]) is Atom):
                self.tables.insert(request[1], request[2], request[3], caller, [],
                                   reg_node=request[4])
                return YES
            if kind is UNREGISTER and n == 2:
                self.tables.delete(request[1])
                return OK
            if kind is SET_LOCK and n == 2 and is_lock_id(request[1]):
                return self.tables.set_lock(request[1], caller)
            if kind is DEL_LOCK and n == 2 and is_lock_id(request[1]):
                self.tables.del_lock(request[1], caller)
                return True
        if request is Atom("get_known"):
            return list(self.known)
        if request is Atom("get_synced"):
            return list(self.synced)
        if request is Atom("get_protocol_version"):
            return VSN
        if request is Atom("get_names_ext"):
            return self.tables.names_ext_list()
        # OTP logs and never answers an unknown call
        log.warning("global_name_server: unexpected call %s from %s",
            safe_repr(request), safe_repr(from_))
        return NOREPLY

    async def _handle_cast(self, msg: tuple[Any, ...]) -> None:
        kind, n = msg[0], len(msg)
        if type(kind) is not Atom:
            log.warning("global_name_server: unexpected cast %s", safe_repr(msg))
            return
        if kind in self._NODE_CASTS and (n < 2 or type(msg[1]) is not Atom):
            log.warning("global_name_server: malformed cast %s", safe_repr(msg))
            return
        if kind is INIT_CONNECT and n == 4:
            await self._init_connect_cast(msg[1], msg[2], msg[3])
        elif kind is LOCK_IS_SET and n == 4:
            if self._my_tag(msg[1]) == msg[2]:
                await self._lock_is_set(msg[1], msg[3])
            else:
                await self._cancel_locker(msg[1], msg[2])
        elif kind is EXCHANGE and n == 5:
            if self._my_tag(msg[1]) == msg[4] and type(msg[2]) is list:
                self._exchange(msg[1], msg[2])
            else:
                await self._cancel_locker(msg[1], msg[4])
        elif kind is EXCHANGE_OPS and n == 5:
            await self._exchange_ops(msg[1], msg[2], msg[3], msg[4])
        elif kind is RESOLVED and n == 7:
            node, his_resolved, his_known, _unused, names_ext, tag = msg[1:]
            if self._my_tag(node) == tag:
                st = self._session(node)
                if type(st.save_ops) is list:
                    await self._resolved(node, his_resolved, his_known, names_ext)
                else:
                    st.save_ops = (RESOLVED, his_known, names_ext, his_resolved)
            else:
                await self._cancel_locker(node, tag)
        elif kind is NEW_NODES and n == 6:
            await self._new_nodes(*msg[1:])
        elif kind is IN_SYNC and n == 3:
            await self._in_sync(msg[1])
        elif kind is LOCK_SET and n == 5 and isinstance(msg[1], Pid):
            if self._my_tag(msg[1].node) == msg[4]:
                self._to_locker(msg)
        elif kind is LOCK_SET and n == 4:
            self._to_locker(msg)
        elif kind in (Atom("async_del_name"), Atom("async_del_lock")):
            pass  # legacy (R13 and older): the DOWN of our monitor does the work
        else:
            log.warning("global_name_server: unexpected cast %s", safe_repr(msg))

    # -- connect sessions ---------------------------------------------------------------------

    async def _on_nodeup(self, node: Atom) -> None:
        if node is not self.me:
            await self._handle_nodeup(node)

    async def _handle_nodeup(self, node: Atom) -> None:
        if node in self.known or node in self.resolvers:
            return
        st = self._session(node)
        if st.pre_connect is not None:
            vsn, init_msg, his_tag = st.pre_connect
            st.pre_connect = None
            self.proc.mailbox.put((GEN_CAST, (INIT_CONNECT, (vsn, his_tag), node, init_msg)))
        tag = next(self._tags)
        st.my_tag = tag
        locker_info: Term = (LOCKER, NO_LONGER_A_PID, [], self.locker_proc.pid)
        await self._cast(node, (INIT_CONNECT, (VSN, tag), self.me, locker_info))
        self.resolvers[node] = (tag, None)

    async def _init_connect_cast(self, vsn: Term, node: Term, init_msg: Term) -> None:
        if type(node) is not Atom:
            return
        if type(vsn) is tuple and len(vsn) >= 2 and type(vsn[0]) is int:
            his_vsn, his_tag = vsn[0], vsn[1]
            use = VSN if (his_vsn > VSN or len(vsn) > 2) else his_vsn
            await self._init_connect(use, node, init_msg, his_tag, his_vsn)
        else:
            log.info("Illegal global protocol version %s Node: %s", safe_repr(vsn), safe_repr(node))

    async def _init_connect(self, vsn: int, node: Atom, init_msg: Term, his_tag: Term,
                            his_vsn: int) -> None:
        if node in self.pending:
            if his_vsn < VERIFY_CONNECT_VSN:
                log.error("'global' at node %s got an out of sync connection attempt from "
                          "old version %d node %s. Disconnecting from it.",
                          self.me.name, his_vsn, node.name)
                self.node.disconnect(node)
                return
            # Cancel both attempts and start over; like OTP 26+, drop this init_connect: the
            # peer restarts too and sends a fresh one.
            await self._volatile_send(node, (CANCEL_CONNECT, self.me, his_tag))
            await self._restart_connect(node, self._my_tag(node))
            return
        st = self._session(node)
        st.vsn = vsn
        st.his_tag = his_tag
        resolver = self.resolvers.get(node)
        if resolver is None:
            st.pre_connect = (vsn, init_msg, his_tag)
            return
        if not (type(init_msg) is tuple and len(init_msg) == 4
                and isinstance(init_msg[3], Pid)):
            log.warning("global: bad init_connect from %s: %s", node.name, safe_repr(init_msg))
            return
        my_tag = resolver[0]
        self._to_locker((HIS_THE_LOCKER, init_msg[3], (vsn, []), his_tag, my_tag))
        if his_vsn >= VERIFY_CONNECT_VSN:
            await self._volatile_send(node, (INIT_CONNECT_ACK, self.me, his_tag, my_tag))
        self.pending[node] = his_vsn

    async def _restart_connect(self, node: Atom, my_tag: int | None) -> None:
        await self._cancel_locker(node, my_tag)
        self.sessions.pop(node, None)
        self.pending.pop(node, None)
        if my_tag is not None:
            await self._handle_nodeup(node)

    async def _on_cancel_connect(self, node: Atom, tag: Term) -> None:
        if tag is not None and self._my_tag(node) == tag:
            await self._cancel_locker(node, tag)
            self.sessions.pop(node, None)
            self.pending.pop(node, None)
            await self._restart_connect(node, tag)

    async def _on_init_connect_ack(self, node: Atom, his_my_tag: Term,
                                   his_his_tag: Term) -> None:
        st = self.sessions.get(node)
        my_tag = None if st is None else st.my_tag
        his_tag = None if st is None else st.his_tag
        if my_tag == his_my_tag and his_tag == his_his_tag:
            return
        await self._volatile_send(node, (CANCEL_CONNECT, self.me, his_his_tag))
        await self._restart_connect(node, my_tag)

    async def _cancel_locker(self, node: Atom, tag: int | None, fun: CancelFun = None) -> None:
        self._to_locker((CANCEL, node, tag, fun))
        await self._send_cancel_connect(node, tag)
        resolver = self.resolvers.get(node)
        if resolver is not None and resolver[0] == tag:
            if resolver[1] is not None:
                resolver[1].exit(KILL)
            del self.resolvers[node]

    async def _send_cancel_connect(self, node: Atom, my_tag: int | None) -> None:
        vsn = self.pending.get(node)
        st = self.sessions.get(node)
        if vsn is None or vsn < VERIFY_CONNECT_VSN or st is None or st.my_tag != my_tag:
            return
        await self._volatile_send(node, (CANCEL_CONNECT, self.me, st.his_tag))

    async def _lock_is_set(self, node: Atom, lock_id: Term) -> None:
        st = self._session(node)
        await self._cast(node, (EXCHANGE, self.me, self.tables.name_list(), [], st.his_tag))
        st.lock_id = lock_id
        early = st.wait_lock
        st.wait_lock = LOCK_IS_SET
        if type(early) is tuple:
            self._exchange(node, early[1])

    def _exchange(self, node: Atom, name_list: list[Term]) -> None:
        st = self._session(node)
        state, st.wait_lock = st.wait_lock, None
        if state is LOCK_IS_SET:
            self._start_resolver(node, name_list)
        else:
            st.wait_lock = (EXCHANGE, name_list)

    def _start_resolver(self, node: Atom, name_list: list[Term]) -> None:
        if node not in self.resolvers:
            return
        tag = self.resolvers[node][0]

        async def resolve(proc: Process) -> None:
            ops, res = await exchange_names(
                name_list, self.tables.lookup, self.me.name < node.name,
                remote_resolver(self.node, self.exposed, proc.pid))
            await proc.send(GNS, (GEN_CAST, (EXCHANGE_OPS, node, tag, ops, res)))

        self.resolvers[node] = (tag, self.node.spawn(resolve))

    async def _exchange_ops(self, node: Atom, tag: Term, ops: Term, resolved: Term) -> None:
        if self._my_tag(node) != tag:
            await self._cancel_locker(node, tag)
            return
        st = self._session(node)
        known = self._known_list(self._node_vsn(node))
        await self._cast(node, (RESOLVED, self.me, resolved, known, UNUSED,
                                self.tables.names_ext_list(), st.his_tag))
        early = st.save_ops
        st.save_ops = ops
        if type(early) is tuple:
            _, his_known, names_ext, his_resolved = early
            await self._resolved(node, his_resolved, his_known, names_ext)

    async def _resolved(self, node: Atom, his_resolved: Term, his_known: Term,
                        names_ext: Term) -> None:
        st = self._session(node)
        ops = list(st.save_ops or []) + _as_list(his_resolved)
        st.save_ops = None
        old_known = dict(self.known)
        new_nodes = self._node_vsn_list([node, *_as_list(his_known)])
        his_known_nodes = _node_list(_as_list(his_known))
        self._sync_others(his_known_nodes)
        extra: list[Term] = [(VSN_KEY, st.vsn), (LOCK_KEY, st.lock_id)]
        self._do_ops(ops, self.me, _as_list(names_ext), extra)
        self._synced_event([node])
        for other in his_known_nodes:
            await self._cancel_resolved_locker(other, None)
        plain_new_nodes = _node_list(new_nodes)
        ext = _as_list(names_ext)

        async def tell_new_nodes() -> None:
            for known, vsn in old_known.items():
                nodes = new_nodes if vsn >= POP_VSN else plain_new_nodes
                await self._cast_from_locker(known, (NEW_NODES, self.me, ops, ext, nodes, extra))

        await self._cancel_resolved_locker(node, tell_new_nodes)
        added = self._add_to_known(new_nodes)
        self._to_locker((ADD_TO_KNOWN, added))
        if node not in self.synced:
            self.synced.append(node)

    async def _cast_from_locker(self, node: Atom, msg: Term) -> None:
        try:
            await self.node.send((GNS, node), (GEN_CAST, msg), sender=self.locker_proc.pid)
        except ErlNodeError as exc:
            log.debug("global: new_nodes to %s lost: %s", node.name, exc)

    async def _cancel_resolved_locker(self, node: Atom, fun: CancelFun) -> None:
        tag = self._my_tag(node)
        self.pending.pop(node, None)
        await self._cancel_locker(node, tag, fun)
        self.sessions.pop(node, None)

    async def _new_nodes(self, conn_node: Term, ops: Term, names_ext: Term, nodes: Term,
                         extra: Term) -> None:
        added = self._add_to_known(_as_list(nodes))
        self._sync_others(added)
        self._do_ops(_as_list(ops), conn_node, _as_list(names_ext), _as_list(extra))
        self._to_locker((ADD_TO_KNOWN, added))

    async def _in_sync(self, node: Atom) -> None:
        self._synced_event([node])
        if node not in self.synced:
            self.synced.append(node)
        self.pending.pop(node, None)
        await self._cancel_locker(node, self._my_tag(node))
        self.sessions.pop(node, None)

    def _do_ops(self, ops: list[Term], conn_node: Term, names_ext: list[Term],
                extra: list[Term]) -> None:
        # names registered for C nodes travel with the node that registered them
        ext_nodes = {freeze(e[0]): e for e in names_ext
                     if type(e) is tuple and len(e) == 3 and type(e[2]) is Atom}
        for op in ops:
            if not (type(op) is tuple and len(op) == 2):
                continue
            if op[0] is INSERT and type(op[1]) is tuple and len(op[1]) == 3:
                name, pid, method = op[1]
                if isinstance(pid, Pid):
                    ext = ext_nodes.get(freeze(name))
                    reg_node = ext[2] if ext is not None and ext[1] == pid else None
                    self.tables.insert(name, pid, method, conn_node, extra, reg_node=reg_node)
        for op in ops:
            if type(op) is tuple and len(op) == 2 and op[0] is DELETE:
                self.tables.delete(op[1])

    def _sync_others(self, nodes: list[Atom]) -> None:
        """Connect to each node and tell it we are in sync (``connect_all``)."""
        for other in nodes:
            self._spawn(self._sync_other(other))

    async def _sync_other(self, other: Atom) -> None:
        if await self.node.connect(other):
            await self._cast(other, (IN_SYNC, self.me, True))
        else:
            log.warning("'global' at %s failed to connect to %s", self.me.name, other.name)
            self.proc.mailbox.put((EXTRA_NODEDOWN, other))

    def _add_to_known(self, entries: list[Term]) -> list[Atom]:
        added: list[Atom] = []
        for entry in entries:
            if type(entry) is Atom:
                node, vsn = entry, 0
            elif type(entry) is tuple and len(entry) == 2 and type(entry[0]) is Atom:
                node, vsn = entry
            else:
                continue
            if node is self.me:
                continue
            if node not in self.known:
                added.insert(0, node)
                self.known[node] = vsn
            elif self.known[node] < 0:
                self.known[node] = vsn
        return added

    def _node_vsn(self, node: Atom) -> int:
        if node is self.me:
            return VSN
        return self.known.get(node, self.pending.get(node, 0))

    def _node_vsn_list(self, entries: list[Term]) -> list[Term]:
        out: list[Term] = []
        for entry in entries:
            if type(entry) is Atom:
                out.append((entry, self._node_vsn(entry)))
            elif type(entry) is tuple and len(entry) == 2 and entry[1] == 0:
                out.append((entry[0], self._node_vsn(entry[0])))
            elif type(entry) is tuple and len(entry) == 2:
                out.append(entry)
        return out

    def _known_list(self, vsn: int) -> list[Term]:
        if vsn < POP_VSN:
            return list(self.known)
        return list(self.known.items())

    def _synced_event(self, nodes: list[Atom]) -> None:
        for syncer in list(self.syncers):
            syncer.waiting.difference_update(nodes)
            if not syncer.waiting:
                self.syncers.remove(syncer)
                if not syncer.done.done():
                    syncer.done.set_result(None)

    # -- node down and overlapping partitions ----------------------------------------------

    async def _on_nodedown(self, node: Atom) -> None:
        if node is not self.me:
            await self._handle_nodedown(node, NodeDownType.DISCONNECTED)

    async def _on_extra_nodedown(self, node: Atom) -> None:
        await self._handle_nodedown(node, NodeDownType.DISCONNECTED)

    async def _handle_nodedown(self, node: Atom, what: NodeDownType) -> None:
        # the DOWN signals of our monitors have already removed that node's names and locks
        await self._cancel_locker(node, self._my_tag(node))
        self._to_locker((REMOVE_FROM_KNOWN, node))
        self.sessions.pop(node, None)
        if what == NodeDownType.REMOVE_CONNECTION:
            self.removing.add(node)
        elif node in self.removing:
            self.removing.discard(node)
        else:
            await self._inform_connection_loss(node)
        self.pending.pop(node, None)
        self.known.pop(node, None)
        if node in self.synced:
            self.synced.remove(node)
        self._synced_event([node])

    async def _inform_connection_loss(self, node: Atom) -> None:
        msg = (LOST_CONNECTION, self.me, self.creation_id, next(self._tags), node)
        await self._multicast(msg, node)

    async def _multicast(self, msg: Term, ignore: Atom) -> None:
        targets = {**self.pending, **self.known}
        for other, vsn in targets.items():
            if other is not ignore and vsn >= POP_VSN:
                await self._volatile_send(other, msg)

    async def _on_lost_connection(self, node_a: Atom, xcre: Term, op_id: Term,
                                  node_b: Atom) -> None:
        if not (type(node_a) is Atom and type(node_b) is Atom and type(op_id) is int):
            return
        now = asyncio.get_running_loop().time()
        key = (node_a, node_b)
        for k, (_, _, expiry) in list(self.lost_connections.items()):
            if expiry < now:
                del self.lost_connections[k]
        seen = self.lost_connections.get(key)
        if seen is not None and seen[0] == xcre and op_id <= seen[1]:
            return
        await self._multicast((LOST_CONNECTION, node_a, xcre, op_id, node_b), node_a)
        self.lost_connections[key] = (xcre if type(xcre) is int else 0, op_id,
                                      now + LOST_CONNECTION_MEMORY)
        rm = node_a if node_b is self.me else node_b
        if rm not in self.known and rm not in self.pending:
            return
        if self._node_vsn(rm) < POP_VSN:
            self.node.disconnect(rm)
            what = "disconnected old"
        else:
            await self._volatile_send(rm, (REMOVE_CONNECTION, self.me))
            what = "requested disconnect from"
        log.warning("'global' at node %s %s node %s in order to prevent overlapping "
                    "partitions", self.me.name, what, rm.name)
        await self._handle_nodedown(rm, NodeDownType.REMOVE_CONNECTION)

    async def _on_remove_connection(self, node: Atom) -> None:
        if node not in self.known and node not in self.pending:
            return
        self.node.disconnect(node)
        await self._handle_nodedown(node, NodeDownType.REMOVE_CONNECTION)
        log.warning("'global' at node %s disconnected node %s in order to prevent "
                    "overlapping partitions", self.me.name, node.name)

    _INFO: ClassVar[dict[tuple[Atom, int], Callable[..., Awaitable[None]]]] = {
        (NODEUP, 2): _on_nodeup,
        (NODEDOWN, 2): _on_nodedown,
        (EXTRA_NODEDOWN, 2): _on_extra_nodedown,
        (CANCEL_CONNECT, 3): _on_cancel_connect,
        (INIT_CONNECT_ACK, 4): _on_init_connect_ack,
        (LOST_CONNECTION, 5): _on_lost_connection,
        (REMOVE_CONNECTION, 2): _on_remove_connection,
    }

    _INFO_KINDS: ClassVar[frozenset[Atom]] = frozenset(k for k, _ in _INFO)
    # casts whose second element names the sending node
    _NODE_CASTS: ClassVar[frozenset[Atom]] = frozenset(
        {LOCK_IS_SET, EXCHANGE, EXCHANGE_OPS, RESOLVED, NEW_NODES, IN_SYNC})

    # -- global:sync -----------------------------------------------------------------------

    async def sync(self, nodes: list[Atom] | None = None, *, timeout: float | None = None) -> None:
        """``global:sync/0,1``: wait until our name table is in sync with every visible node
        (or ``nodes``), or they went down."""
        targets = set(self.node.nodes() if nodes is None else nodes)
        targets.discard(self.me)
        targets.difference_update(self.synced)
        if not targets:
            return
        syncer = Syncer(targets, asyncio.get_running_loop().create_future())
        self.syncers.append(syncer)
        try:
            async with asyncio.timeout(timeout):
                await syncer.done
        finally:
            if syncer in self.syncers:
                self.syncers.remove(syncer)


def _is_from(term: Term) -> bool:
    return type(term) is tuple and len(term) == 2 and isinstance(term[0], Pid)


def _as_list(term: Term) -> list[Term]:
    return term if type(term) is list else []


def _node_list(entries: list[Term]) -> list[Atom]:
    out: list[Atom] = []
    for entry in entries:
        if type(entry) is Atom:
            out.append(entry)
        elif type(entry) is tuple and len(entry) == 2 and type(entry[0]) is Atom:
            out.append(entry[0])
    return out
