"""The kernel of a node: its connection table, routing, processes and signals.

Bytes never appear here: each peer connection is a :class:`~pyerl_node.runtime.channel.Channel`
that turns bytes into control messages; the kernel decides what each control message means for
local processes (delivery, links, monitors, exit signals; :mod:`.inbound`) and which control
messages local actions send to peers. Services (net_kernel, rex, global...) are ordinary
processes: they reach the kernel through :class:`~pyerl_node.runtime.interface.NodeServices`
and hooks they register, never the other way round.

Everything runs on one asyncio event loop; no locks are needed because no method awaits while
the process table is inconsistent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

from pyerl_node.proto import control as c
from pyerl_node.proto.errors import (
    ConnectionLost,
    EpmdError,
    ErlNodeError,
    HandshakeError,
    LocalProtocolError,
    NodeDown,
    ProcessExit,
)
from pyerl_node.proto.flags import DistFlag, default_flags
from pyerl_node.proto.handshake import Status
from pyerl_node.proto.names import NodeName
from pyerl_node.proto.terms import Atom, Pid, Reference, Term
from pyerl_node.runtime import epmd_client, inbound, transport
from pyerl_node.runtime.channel import Channel, PeerWinsSimultaneousError, dial
from pyerl_node.runtime.flush import Flush
from pyerl_node.runtime.interface import Destination, NodeKind, SpawnHandler, StateReplyProbe
from pyerl_node.runtime.mailbox import Mailbox
from pyerl_node.runtime.process import (
    DOWN,
    KILL,
    NOCONNECTION,
    NOPROC,
    NORMAL,
    PROCESS,
    MonitorEntry,
    Process,
    ProcessBody,
    ProcessWatch,
    exit_action,
    python_exit_reason,
)
from pyerl_node.runtime.ratelimit import OncePer
from pyerl_node.runtime.registry import Registry
from pyerl_node.runtime.tls_layer import TlsSettings

log = logging.getLogger("pyerl_node")

NODEUP = Atom("nodeup")
NODEDOWN = Atom("nodedown")
KILLED = Atom("killed")
SHUTDOWN = Atom("shutdown")
UNDEF = Atom("undef")
MAX_QUEUE = Atom("max_queue")


def as_atom(value: Atom | str) -> Atom:
    return value if isinstance(value, Atom) else Atom(value)


class Kernel:
    """One node's processes and connections (the runtime behind :class:`pyerl_node.Node`)."""

    def __init__(
        self,
        name: NodeName,
        cookie: str,
        *,
        hidden: bool,
        listen: transport.ListenOptions,
        epmd_port: int,
        net_ticktime: float,
        connect_timeout: float,
        challenge_source: Callable[[], int],
        tls: TlsSettings | None = None,
    ) -> None:
        self.name = name
        self.node_atom = Atom(str(name))
        self.cookie = cookie
        self.hidden = hidden
        self.listen_options = listen
        self.epmd_port = epmd_port
        self.net_ticktime = net_ticktime
        self.connect_timeout = connect_timeout
        self.challenge_source = challenge_source
        #: TLS distribution (inet_tls), None for plain TCP
        self.tls = tls
        self.flags: DistFlag = default_flags(hidden=hidden, spawn=True)
        self.creation = 0
        self.registry = Registry(self.node_atom, 0)
        self.spawn_handler: SpawnHandler = _undefined_function
        self.state_reply_probe: StateReplyProbe | None = None
        self.started = False
        self._channels: dict[Atom, Channel] = {}
        self._pending: dict[Atom, asyncio.Future[Channel]] = {}
        self._dialers: dict[Atom, asyncio.Task[None]] = {}
        self._aliases: dict[Reference, Process] = {}
        self._node_monitors: dict[Atom, set[Pid]] = {}
        self._all_nodes_monitors: set[Pid] = set()
        self._unlink_ids = 0
        self._server: asyncio.Server | None = None
        self._registration: epmd_client.Registration | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._system: Process | None = None
        #: peer-provoked warnings (failed connects, bad handshakes): once a minute per key
        self.peer_warnings = OncePer(log)

    # -- lifecycle ------------------------------------------------------------------------------

    async def listen(self) -> int:
        """Open the distribution listener; the port it got."""
        self._server = await transport.listen(
            lambda: Channel(self, initiator=False), self.listen_options)
        return transport.listened_port(self._server)

    async def register_with_epmd(self) -> None:
        """Register our name and port with EPMD on this host; sets our creation."""
        self._registration = await epmd_client.register(
            self.name.alive, self.port, epmd_port=self.epmd_port, hidden=self.hidden)
        self.creation = self._registration.creation
        self.registry.creation = self.creation

    def open(self) -> None:
        """Accept processes from now on (after EPMD gave us our creation)."""
        self.started = True
        self._system = self.new_process()

    async def close(self) -> None:
        """Close every connection, end every process, unregister from EPMD."""
        self.started = False
        # Connections first: peers see noconnection for our processes, as when a BEAM halts.
        for channel in list(self._channels.values()):
            channel.close("node stopping")
            self.channel_down(channel)
        for proc in list(self.registry):
            self.terminate(proc, SHUTDOWN)
        for task in list(self._dialers.values()) + list(self._background):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._registration is not None:
            await self._registration.close()
            self._registration = None
        await asyncio.sleep(0)

    @property
    def port(self) -> int:
        if self._server is None:
            raise LocalProtocolError("the node is not listening")
        return transport.listened_port(self._server)

    # -- processes ---------------------------------------------------------------------------

    def new_process(
        self, name: Atom | str | None = None, *, trap_exit: bool = False,
        mailbox: Mailbox | None = None, max_queue: int | None = None,
    ) -> Process:
        """A live process with a fresh pid, driven by the caller until it is given a body.

        ``max_queue``: the most messages its mailbox may hold; one more ends the process with
        reason ``max_queue``.
        """
        if not self.started:
            raise LocalProtocolError("the node is not started")
        if max_queue is not None and max_queue < 1:
            raise LocalProtocolError(f"max_queue must be a positive count, not {max_queue!r}")
        box = Mailbox(max_queue) if mailbox is None else mailbox
        proc = Process(self, self.registry.new_pid(), box, trap_exit=trap_exit)
        box.watch = ProcessWatch(proc)
        self.registry.add(proc)
        if name is not None:
            try:
                self.registry.register(as_atom(name), proc)
            except ValueError:
                self.registry.remove(proc)
                raise
        return proc

    def spawn(
        self, body: ProcessBody, *, name: Atom | str | None = None, link: Pid | None = None,
        trap_exit: bool = False, max_queue: int | None = None,
    ) -> Process:
        """Run ``body(process)`` as a new process (see :meth:`pyerl_node.Node.spawn`)."""
        proc = self.new_process(name, trap_exit=trap_exit, max_queue=max_queue)
        if link is not None:
            self.link(proc.pid, link)
        self.run_process(proc, body)
        return proc

    def run_process(self, proc: Process, body: ProcessBody) -> None:
        """Drive an existing caller-driven process by ``body`` from now on."""
        if proc.task is not None:
            raise LocalProtocolError(f"{proc.pid!r} already runs a body")
        proc.task = asyncio.get_running_loop().create_task(self._run(proc, body))

    async def _run(self, proc: Process, body: ProcessBody) -> None:
        reason: Term = NORMAL
        try:
            await body(proc)
        except ProcessExit as exc:
            reason = exc.reason
        except asyncio.CancelledError:
            if not proc.alive:
                return
            reason = KILLED
        except Exception as exc:
            log.error("process %r crashed", proc.pid, exc_info=exc)
            reason = python_exit_reason(exc)
        if proc.alive:
            self.terminate(proc, reason)

    def process(self, pid: Pid) -> Process | None:
        """The live local process ``pid``."""
        return self.registry.get(pid)

    def local_process(self, target: Term) -> Process | None:
        """The live local process a pid or registered name stands for."""
        if type(target) is Pid:
            return self.registry.get(target)
        if type(target) is Atom:
            return self.registry.whereis(target)
        return None

    def register(self, name: Atom | str, pid: Pid) -> None:
        proc = self.registry.get(pid)
        if proc is None:
            raise LocalProtocolError(f"{pid!r} is not a live local process")
        try:
            self.registry.register(as_atom(name), proc)
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from None

    def unregister(self, name: Atom | str) -> None:
        self.registry.unregister(as_atom(name))

    def processes(self) -> Iterator[Process]:
        """The live local processes (a snapshot)."""
        return iter(self.registry)

    def registered(self) -> list[Atom]:
        return self.registry.registered()

    def whereis(self, name: Atom | str) -> Pid | None:
        proc = self.registry.whereis(as_atom(name))
        return None if proc is None else proc.pid

    def make_ref(self) -> Reference:
        return self.registry.new_ref()

    def terminate(self, proc: Process, reason: Term) -> None:
        """End ``proc`` with ``reason`` and send its exit and DOWN signals."""
        if not proc.alive:
            return
        proc.exit_reason = reason
        self.registry.remove(proc)
        proc.mailbox.close(ProcessExit(reason))
        task = proc.task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
        for alias in proc.aliases:
            self._aliases.pop(alias, None)
        proc.aliases.clear()
        link_reason = KILLED if reason is KILL else reason
        for other in proc.links:
            self._send_exit(proc.pid, other, link_reason, from_link=True)
        proc.links.clear()
        for ref, entry in proc.monitored_by.items():
            self.send_down(entry, ref, reason)
        proc.monitored_by.clear()
        for ref, target in proc.monitoring.items():
            self._drop_monitor(proc.pid, ref, target)
        proc.monitoring.clear()
        self._all_nodes_monitors.discard(proc.pid)
        for node in proc.watched_nodes:
            self._node_monitors.get(node, set()).discard(proc.pid)
        proc.watched_nodes.clear()

    def mailbox_full(self, proc: Process) -> None:
        """``proc``'s queue passed its ``max_queue``: it ends, as ``max_heap_size`` ends a BEAM
        process (links and monitors see the reason)."""
        log.error("process %r%s exceeded max_queue (%s messages): exit with reason max_queue",
                  proc.pid, f" ({proc.name.name})" if proc.name else "", proc.mailbox.max_queue)
        self.terminate(proc, MAX_QUEUE)

    def mailbox_long(self, proc: Process) -> None:
        """``proc``'s queue is long: a warning, once a minute per process."""
        box = proc.mailbox
        self.peer_warnings.log(
            ("queue", proc.pid), logging.WARNING,
            "process %r%s has %d messages in its queue (%.1f MB from connections)", proc.pid,
            f" ({proc.name.name})" if proc.name else "", len(box), box.queued_bytes / 2**20)

    def system_pid(self) -> Pid:
        """The pid remote sends without a sender come from."""
        if self._system is None:
            raise LocalProtocolError("the node is not started")
        return self._system.pid

    def spawn_task(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background until it ends or the node stops."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- messages ------------------------------------------------------------------------------

    def resolve(self, dest: Destination) -> tuple[Atom | None, Term]:
        """Split a destination into (remote node or None for local, pid/name/alias)."""
        # (exact types first: the usual ones, tested at the least cost)
        if (type(dest) is tuple and len(dest) == 2 and type(dest[1]) is Atom
                and type(dest[0]) is Atom):
            return (None if dest[1] is self.node_atom else dest[1]), dest[0]
        if type(dest) is Pid or isinstance(dest, Reference):
            return (None if dest.node is self.node_atom else dest.node), dest
        if isinstance(dest, Atom | str):
            return None, as_atom(dest)
        if isinstance(dest, tuple) and len(dest) == 2:
            name, node = as_atom(dest[0]), as_atom(dest[1])
            return (None if node is self.node_atom else node), name
        raise LocalProtocolError(f"not a destination: {dest!r}")

    async def send(
        self, dest: Destination, message: Term, *, sender: Pid | None = None,
        flush: Flush = Flush.SOON,
    ) -> None:
        """Erlang's ``!`` (see :meth:`pyerl_node.Node.send`)."""
        node, target = self.resolve(dest)
        if node is None:
            self.deliver_local(target, message)
            return
        channel = self._channels.get(node) or await self.connect_channel(node)
        channel.send_message(sender or self.system_pid(), target, message, flush)
        if channel.paused_writing:  # (no coroutine to await otherwise)
            await channel.drain()

    def send_noconnect(self, dest: Destination, message: Term, *,
                       sender: Pid | None = None) -> bool:
        """``erlang:send(Dest, Msg, [noconnect])``: deliver without ever dialling a node.

        A local destination gets the message at once; a remote one only over an existing
        connection, queued for the next write without waiting for the socket to drain (the
        protocols that use it send small messages and must not be suspended between two).
        False when the destination's node is not connected: the message is dropped.
        """
        node, target = self.resolve(dest)
        if node is None:
            self.deliver_local(target, message)
            return True
        channel = self._channels.get(node)
        if channel is None:
            return False
        channel.send_message(sender or self.system_pid(), target, message)
        return True

    def deliver_local(self, target: Term, message: Term) -> None:
        if isinstance(target, Reference):
            proc = self._aliases.get(target)
        else:
            proc = self.local_process(target)
        if proc is not None:
            proc.mailbox.put(message)

    def deliver_from(self, target: Term, message: Term, channel: Channel) -> None:
        """Deliver a message ``channel`` received (its bytes count until it is received)."""
        if type(target) is Pid:
            proc = self.registry.get(target)
        elif isinstance(target, Reference):
            proc = self._aliases.get(target)
        else:
            proc = self.local_process(target)
        if proc is not None:
            proc.mailbox.put_from(message, channel, channel.current_size)

    def alias(self, proc: Process) -> Reference:
        """A reference that routes messages to ``proc`` until ``unalias``."""
        ref = self.make_ref()
        self._aliases[ref] = proc
        proc.aliases.add(ref)
        return ref

    def unalias(self, ref: Reference) -> None:
        owner = self._aliases.pop(ref, None)
        if owner is not None:
            owner.aliases.discard(ref)

    def send_spawn_request(self, caller: Process, node: Atom, req_id: Reference,
                           module: Atom, function: Atom, args: list[Term],
                           options: list[Term], group_leader: Pid) -> None:
        """Ask ``node`` to spawn ``module:function(args)`` (the answer: SPAWN_REPLY to
        ``caller``, a ``{spawn_reply, ReqId, Flags, Result}`` message); ``noconnection`` DOWN
        for ``req_id`` when ``node`` cannot be reached."""
        self.send_soon(
            node,
            c.SpawnRequest(req_id, caller.pid, group_leader, module, function, len(args),
                           options, args),
            on_fail=lambda: self.fire_down(caller.pid, req_id, NOCONNECTION),
        )

    # -- links ---------------------------------------------------------------------------------

    def link(self, a: Pid, b: Pid) -> None:
        """Link local process ``a`` with ``b`` (local or remote)."""
        proc = self.registry.get(a)
        if proc is None or a == b:
            return
        if b.node is self.node_atom:
            other = self.registry.get(b)
            if other is None:
                self.signal_exit(proc, b, NOPROC, from_link=True)
                return
            proc.links.add(b)
            other.links.add(a)
            return
        proc.links.add(b)
        self.send_soon(b.node, c.Link(a, b), on_fail=lambda: self._link_broken(a, b))

    def _link_broken(self, a: Pid, b: Pid) -> None:
        proc = self.registry.get(a)
        if proc is not None and b in proc.links:
            proc.links.discard(b)
            self.signal_exit(proc, b, NOCONNECTION, from_link=True)

    def unlink(self, a: Pid, b: Pid) -> None:
        proc = self.registry.get(a)
        if proc is None or b not in proc.links:
            return
        proc.links.discard(b)
        if b.node is self.node_atom:
            other = self.registry.get(b)
            if other is not None:
                other.links.discard(a)
            return
        self._unlink_ids += 1
        channel = self._channels.get(b.node)
        if channel is not None:
            channel.send(c.UnlinkId(self._unlink_ids, a, b))

    # -- monitors ------------------------------------------------------------------------------

    def monitor(
        self, watcher: Pid, target: Destination, *,
        ref: Reference | None = None, flush: Flush = Flush.SOON,
    ) -> Reference:
        """Monitor a pid or a registered name (local or ``(name, node)``).

        ``ref`` supplies the monitor reference, for callers that must know it before a DOWN
        can arrive. ``flush`` says when a remote MONITOR_P is written (``Flush.LATER`` when
        a send that flushes follows at once).
        """
        proc = self.registry.get(watcher)
        if proc is None:
            raise LocalProtocolError(f"{watcher!r} is not a live local process")
        ref = ref or self.make_ref()
        node, what = self.resolve(target)
        shown: Term = what if isinstance(what, Pid) else (what, node or self.node_atom)
        proc.monitoring[ref] = shown
        if node is None:
            local = self.local_process(what)
            if local is None:
                proc.monitoring.pop(ref)
                proc.mailbox.put((DOWN, ref, PROCESS, shown, NOPROC))
            else:
                local.monitored_by[ref] = MonitorEntry(watcher, what)
            return ref
        self.send_soon(
            node,
            c.MonitorP(watcher, what, ref),
            on_fail=lambda: self.fire_down(watcher, ref, NOCONNECTION),
            flush=flush,
        )
        return ref

    def monitor_and_send(self, watcher: Pid, target: Destination, message: Term,
                         ref: Reference) -> bool:
        """What a gen call starts with, when ``target`` is a pid or ``(name, node)`` on a
        connected node: monitor it with ``ref`` and send it ``message`` from ``watcher``,
        in one write that leaves at once. False, with nothing done, otherwise (a local or
        unconnected target, a socket that is draining: monitor and send do it then)."""
        what: Pid | Atom
        if type(target) is Pid:
            node, what = target.node, target
            shown: Term = target
        elif type(target) is tuple and len(target) == 2:
            what, node = as_atom(target[0]), as_atom(target[1])
            shown = (what, node)
        else:
            return False
        channel = self._channels.get(node)
        proc = self.registry.get(watcher)
        if channel is None or channel.paused_writing or proc is None:
            return False
        proc.monitoring[ref] = shown
        channel.send(c.MonitorP(watcher, what, ref), Flush.LATER)
        channel.send_message(watcher, what, message, Flush.NOW)
        return True

    def demonitor(self, watcher: Pid, ref: Reference) -> None:
        proc = self.registry.get(watcher)
        if proc is None:
            return
        target = proc.monitoring.pop(ref, None)
        if target is not None:
            self._drop_monitor(watcher, ref, target)

    def _drop_monitor(self, watcher: Pid, ref: Reference, target: Term) -> None:
        if isinstance(target, Pid):
            node, what = target.node, target
        else:
            what, node = target
        if node is self.node_atom:
            local = self.local_process(what)
            if local is not None:
                local.monitored_by.pop(ref, None)
            return
        channel = self._channels.get(node)
        if channel is not None:
            channel.send(c.DemonitorP(watcher, what, ref), Flush.LATER)  # nobody waits for it

    def fire_down(self, watcher: Pid, ref: Reference, reason: Term) -> None:
        """Deliver the DOWN of monitor ``ref`` held by local ``watcher``."""
        proc = self.registry.get(watcher)
        if proc is None:
            return
        target = proc.monitoring.pop(ref, None)
        if target is not None:
            proc.mailbox.put((DOWN, ref, PROCESS, target, reason))

    def send_down(self, entry: MonitorEntry, ref: Reference, reason: Term) -> None:
        """Tell the holder of monitor ``ref`` (local or remote) that its target ended."""
        watcher = entry.watcher
        if watcher.node is self.node_atom:
            self.fire_down(watcher, ref, reason)
            return
        channel = self._channels.get(watcher.node)
        if channel is None:
            return
        if channel.exit_payload:
            channel.send(c.PayloadMonitorPExit(entry.target, watcher, ref, reason))
        else:
            channel.send(c.MonitorPExit(entry.target, watcher, ref, reason))

    # -- node monitoring -----------------------------------------------------------------------

    def monitor_node(self, watcher: Pid, node: Atom | str, enable: bool = True) -> None:
        """``erlang:monitor_node/2``: ``{nodedown, Node}`` when the connection goes down."""
        node = as_atom(node)
        proc = self.registry.get(watcher)
        if proc is None:
            return
        if not enable:
            self._node_monitors.get(node, set()).discard(watcher)
            proc.watched_nodes.discard(node)
            return
        self._node_monitors.setdefault(node, set()).add(watcher)
        proc.watched_nodes.add(node)
        if node not in self._channels:
            self.send_soon(node, None, on_fail=lambda: self._nodedown_to(watcher, node))

    def _nodedown_to(self, watcher: Pid, node: Atom) -> None:
        self._node_monitors.get(node, set()).discard(watcher)
        self.deliver_local(watcher, (NODEDOWN, node))

    def monitor_nodes(self, watcher: Pid, enable: bool = True) -> None:
        """``net_kernel:monitor_nodes/1``: ``{nodeup, N}`` / ``{nodedown, N}`` for every node."""
        if enable:
            self._all_nodes_monitors.add(watcher)
        else:
            self._all_nodes_monitors.discard(watcher)

    def nodes(self, kind: NodeKind = "visible") -> list[Atom]:
        """``erlang:nodes/1`` for one kind: visible, hidden, connected (both), this, known."""
        if kind == "this":
            return [self.node_atom]
        if kind == "known":
            return [self.node_atom, *self._channels]
        if kind == "connected":
            return list(self._channels)
        visible = kind == "visible"
        return [n for n, ch in self._channels.items() if ch.visible is visible]

    def is_connected(self, node: Atom) -> bool:
        return node in self._channels

    def peer_flags(self, node: Atom) -> DistFlag | None:
        """The negotiated flags of the connection to ``node``, None if not connected."""
        channel = self._channels.get(node)
        return None if channel is None else channel.flags

    def supports_alias(self, node: Atom) -> bool:
        """Whether the connection to ``node`` delivers to process aliases (DFLAG_ALIAS)."""
        channel = self._channels.get(node)
        return channel is not None and channel.alias

    def connected_channel(self, node: Atom) -> Channel | None:
        return self._channels.get(node)

    def peer_address(self, node: Atom) -> tuple[str, int] | None:
        """The (address, port) of the connection to ``node``, None if not connected."""
        channel = self._channels.get(node)
        return None if channel is None else channel.address

    # -- exit signals --------------------------------------------------------------------------

    def exit(self, sender: Pid, target: Pid, reason: Term) -> None:
        """``erlang:exit/2``: send an exit signal to ``target``."""
        self._send_exit(sender, target, reason, from_link=False)

    def _send_exit(self, sender: Pid, target: Pid, reason: Term, *, from_link: bool) -> None:
        if target.node is self.node_atom:
            proc = self.registry.get(target)
            if proc is not None:
                if from_link:
                    proc.links.discard(sender)
                self.signal_exit(proc, sender, reason, from_link=from_link)
            return
        channel = self._channels.get(target.node)
        if from_link:
            # a link over a connection that is gone is already broken on the other side
            if channel is not None:
                channel.send(c.PayloadExit(sender, target, reason) if channel.exit_payload
                             else c.Exit(sender, target, reason))
            return
        if channel is None:
            self.spawn_task(self._exit2_later(sender, target, reason))
            return
        channel.send(c.PayloadExit2(sender, target, reason) if channel.exit_payload
                     else c.Exit2(sender, target, reason))

    async def _exit2_later(self, sender: Pid, target: Pid, reason: Term) -> None:
        try:
            await self.connect_channel(target.node)
        except ErlNodeError:
            return  # exit/2 to an unreachable node is lost, as in Erlang
        self._send_exit(sender, target, reason, from_link=False)

    def signal_exit(self, proc: Process, sender: Pid, reason: Term, *, from_link: bool) -> None:
        dies_with = exit_action(proc, sender, reason, from_link=from_link)
        if dies_with is not None:
            self.terminate(proc, dies_with)

    # -- connections ---------------------------------------------------------------------------

    async def connect(self, node: Atom | str) -> bool:
        """``net_kernel:connect_node/1``: True once connected, False if it fails."""
        try:
            await self.connect_channel(as_atom(node))
        except (NodeDown, HandshakeError, ConnectionLost, EpmdError, OSError) as exc:
            self.peer_warnings.log(("connect", as_atom(node)), logging.WARNING,
                                   "cannot connect to %s: %s", node, exc)
            return False
        return True

    async def connect_channel(self, node: Atom) -> Channel:
        """The connection to ``node``, dialled if there is none (NodeDown if that fails)."""
        channel = self._channels.get(node)
        if channel is not None:
            return channel
        if node is self.node_atom:
            raise LocalProtocolError("a node does not connect to itself")
        if not self.started:
            raise LocalProtocolError("the node is not started")
        pending = self._pending.get(node)
        if pending is None:
            loop = asyncio.get_running_loop()
            pending = self._pending[node] = loop.create_future()
            self._dialers[node] = loop.create_task(self._dial(node, pending))
        return await asyncio.shield(pending)

    async def _dial(self, node: Atom, pending: asyncio.Future[Channel]) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout):
                try:
                    await dial(self, node)
                except PeerWinsSimultaneousError:
                    # the peer's own connection to us completes this pending connect
                    await asyncio.shield(pending)
        except asyncio.CancelledError:
            # superseded by the peer's own connection (simultaneous connect) or node stop
            raise
        except Exception as exc:
            if not pending.done():
                why = str(exc) or (f"no connection within {self.connect_timeout:g} s"
                                   if isinstance(exc, TimeoutError) else type(exc).__name__)
                err = exc if isinstance(exc, NodeDown) else NodeDown(f"{node.name}: {why}")
                err.__cause__ = exc
                pending.set_exception(err)
                pending.exception()  # mark retrieved: nobody may be waiting any more
            if self._pending.get(node) is pending:
                del self._pending[node]
        finally:
            if self._dialers.get(node) is asyncio.current_task():
                del self._dialers[node]

    def accept_decision(self, peer: Atom) -> Status:
        """What the acceptor answers a peer's send_name (net_kernel's accept_pending rules)."""
        if not self.started:
            return Status.NOK
        if peer in self._channels:
            return Status.ALIVE
        if peer in self._pending:
            if self.node_atom.name > peer.name:
                return Status.NOK  # our own connection attempt wins
            dialer = self._dialers.pop(peer, None)
            if dialer is not None:
                dialer.cancel()
            return Status.OK_SIMULTANEOUS
        return Status.OK

    def channel_up(self, channel: Channel) -> None:
        peer = channel.peer
        old = self._channels.get(peer)
        if old is not None and old is not channel:
            old.close("replaced by a new connection")
            self._connection_gone(old)
        self._channels[peer] = channel
        pending = self._pending.pop(peer, None)
        if pending is not None and not pending.done():
            pending.set_result(channel)
        log.info("connection to %s up (%s, %s, %s)", peer.name, channel.where,
                 "visible" if channel.visible else "hidden",
                 "we dialled" if channel.initiator else "it dialled")
        if channel.visible:
            for watcher in list(self._all_nodes_monitors):
                self.deliver_local(watcher, (NODEUP, peer))

    def channel_failed(self, peer: Atom | None, error: BaseException) -> None:
        """A handshake failed (acceptor side): wake anyone waiting on that peer."""
        if peer is None:
            return
        pending = self._pending.get(peer)
        if pending is not None and peer not in self._dialers and not pending.done():
            pending.set_exception(NodeDown(f"{peer.name}: {error}"))
            pending.exception()
            del self._pending[peer]

    def channel_down(self, channel: Channel) -> None:
        if self._channels.get(channel.peer) is channel:
            del self._channels[channel.peer]
            log.info("connection to %s down (%s): %s", channel.peer.name, channel.where,
                     channel.down_reason)
            self._connection_gone(channel)

    def _connection_gone(self, channel: Channel) -> None:
        node = channel.peer
        for proc in self.registry:
            for other in [p for p in proc.links if p.node is node]:
                proc.links.discard(other)
                self.signal_exit(proc, other, NOCONNECTION, from_link=True)
            for ref, target in list(proc.monitoring.items()):
                target_node = target.node if isinstance(target, Pid) else target[1]
                if target_node is node:
                    del proc.monitoring[ref]
                    proc.mailbox.put((DOWN, ref, PROCESS, target, NOCONNECTION))
            for ref, entry in list(proc.monitored_by.items()):
                if entry.watcher.node is node:
                    del proc.monitored_by[ref]
        for watcher in self._node_monitors.pop(node, set()):
            self.deliver_local(watcher, (NODEDOWN, node))
        if channel.visible:
            for watcher in list(self._all_nodes_monitors):
                self.deliver_local(watcher, (NODEDOWN, node))

    def disconnect(self, node: Atom | str) -> bool:
        """``erlang:disconnect_node/1``."""
        channel = self._channels.get(as_atom(node))
        if channel is None:
            return False
        channel.close("disconnected by this node")
        self.channel_down(channel)
        return True

    async def epmd_names(self, host: str = "127.0.0.1") -> list[tuple[str, int]]:
        """``net_adm:names/1``: the (name, port) pairs EPMD on ``host`` lists (on the EPMD
        port this node uses); EpmdError or OSError if it cannot be asked."""
        return await epmd_client.names(host, epmd_port=self.epmd_port)

    def send_soon(
        self, node: Atom, msg: c.ControlMessage | None, *, on_fail: Callable[[], None],
        flush: Flush = Flush.SOON,
    ) -> None:
        """Send ``msg`` to ``node`` now if connected, else after connecting (or ``on_fail``)."""
        channel = self._channels.get(node)
        if channel is not None:
            if msg is not None:
                channel.send(msg, flush)
            return

        async def later() -> None:
            try:
                ch = await self.connect_channel(node)
            except Exception:
                on_fail()
                return
            if msg is not None:
                ch.send(msg)

        self.spawn_task(later())

    # -- inbound control messages --------------------------------------------------------------

    def dispatch(self, channel: Channel, events: Sequence[c.ControlMessage]) -> None:
        """Act on the control messages of one read from ``channel``'s peer, in order
        (:mod:`.inbound`)."""
        inbound.dispatch(self, channel, events)


def _undefined_function(proc: Process, module: Atom, function: Atom, args: list[Term],
                        finish: Callable[[Term], None]) -> None:
    """The spawn handler of a node that serves no functions: every spawn is undef."""
    finish((UNDEF, [(module, function, args, [])]))
