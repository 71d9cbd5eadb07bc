"""The node: listener, EPMD registration, connection table, routing, processes and signals.

This is the runtime layer of DESIGN.md. Bytes never appear here: each peer connection is a
:class:`~pyerl_node.runtime.channel.Channel` that turns bytes into control messages, and this module
decides what each control message means for local processes (delivery, links, monitors, exit
signals) and which control messages local actions send to peers.

Everything runs on one asyncio event loop; no locks are needed because no method awaits while
the process table is inconsistent.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from types import TracebackType
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
    RpcError,
)
from pyerl_node.proto.flags import DistFlag, default_flags
from pyerl_node.proto.handshake import Status
from pyerl_node.proto.names import parse_node_name
from pyerl_node.proto.terms import Atom, Pid, Reference, Term
from pyerl_node.runtime import epmd_client, inbound
from pyerl_node.runtime.channel import Channel, Flush, PeerWinsSimultaneousError, dial
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
    exit_action,
    python_exit_reason,
)
from pyerl_node.runtime.registry import Registry
from pyerl_node.services import global_names as global_mod
from pyerl_node.services import rpc as rpc_service

log = logging.getLogger("pyerl_node")

NODEUP = Atom("nodeup")
NODEDOWN = Atom("nodedown")

Destination = Pid | Atom | str | Reference | tuple[Atom | str, Atom | str]


def _atom(value: Atom | str) -> Atom:
    return value if isinstance(value, Atom) else Atom(value)


class Node:
    """A distributed Erlang node implemented in Python.

    ``async with Node("py@127.0.0.1", cookie="secret") as node: ...`` starts it: it listens on
    loopback, registers with EPMD (starting the bundled Python EPMD when none answers and
    ``start_epmd`` allows it) and serves ``net_kernel`` and ``rex``.
    """

    def __init__(
        self,
        name: str,
        cookie: str | None = None,
        *,
        hidden: bool = False,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        epmd_port: int | None = None,
        start_epmd: bool = True,
        net_ticktime: float = 60.0,
        connect_timeout: float = 7.0,
        challenge_source: Callable[[], int] | None = None,
        global_names: bool = True,  # take part in `global` (GLOBAL.md)
    ) -> None:
        self.name = parse_node_name(name)
        self.node_atom = Atom(str(self.name))
        self.cookie = cookie if cookie is not None else read_default_cookie()
        self.hidden = hidden
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.epmd_port = epmd_port if epmd_port is not None else epmd_client.default_epmd_port()
        self.start_epmd = start_epmd
        self.net_ticktime = net_ticktime
        self.connect_timeout = connect_timeout
        self.challenge_source = challenge_source or (lambda: secrets.randbits(32))
        self.flags: DistFlag = default_flags(hidden=hidden, spawn=True)
        self.exposed = rpc_service.Exposed()
        self.creation = 0
        self.registry = Registry(self.node_atom, 0)
        self._channels: dict[Atom, Channel] = {}
        self._pending: dict[Atom, asyncio.Future[Channel]] = {}
        self._dialers: dict[Atom, asyncio.Task[None]] = {}
        self._aliases: dict[Reference, Process] = {}
        self._node_monitors: dict[Atom, set[Pid]] = {}
        self._all_nodes_monitors: set[Pid] = set()
        self._unlink_ids = 0
        self._server: asyncio.Server | None = None
        self._registration: epmd_client.Registration | None = None
        self._embedded_epmd: Any = None
        self._background: set[asyncio.Task[Any]] = set()
        self._system: Process | None = None
        self._started = False
        self.global_names = global_names  # started by start_builtin_services
        self.global_service: global_mod.GlobalNameServer | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, register with EPMD and start the built-in services."""
        if self._started:
            raise LocalProtocolError("node already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Channel(self, initiator=False), self.listen_host, self.listen_port
        )
        port = self._server.sockets[0].getsockname()[1]
        try:
            self._registration = await self._register_with_epmd(port)
        except BaseException:
            self._server.close()
            raise
        self.creation = self._registration.creation
        self.registry.creation = self.creation
        self._started = True
        self._system = self._new_process()
        from pyerl_node.services import start_builtin_services

        start_builtin_services(self)
        log.info("node %s up on port %d (creation %d)", self.node_atom.name, port, self.creation)

    async def _register_with_epmd(self, port: int) -> epmd_client.Registration:
        alive = self.name.alive
        try:
            return await epmd_client.register(
                alive, port, epmd_port=self.epmd_port, hidden=self.hidden
            )
        except EpmdError as exc:
            # only "nothing listens there" means no EPMD; a timeout or a bad reply is an error
            if not self.start_epmd or not isinstance(exc.__cause__, ConnectionRefusedError):
                raise
        # Nothing answers on the EPMD port: run our own, as `erl` starts epmd when needed.
        from epmd import EpmdServer

        self._embedded_epmd = EpmdServer(address=self.listen_host, port=self.epmd_port)
        await self._embedded_epmd.start()
        log.info("started the Python EPMD on port %d", self.epmd_port)
        return await epmd_client.register(
            alive, port, epmd_port=self.epmd_port, hidden=self.hidden
        )

    async def stop(self) -> None:
        """Close every connection, end every process, unregister from EPMD."""
        if not self._started:
            return
        self._started = False
        # Connections first: peers see noconnection for our processes, as when a BEAM halts.
        for channel in list(self._channels.values()):
            channel.close()
            self.channel_down(channel)
        for proc in list(self.registry):
            self.terminate(proc, Atom("shutdown"))
        for task in list(self._dialers.values()) + list(self._background):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._registration is not None:
            await self._registration.close()
        if self._embedded_epmd is not None:
            await self._embedded_epmd.stop()
        await asyncio.sleep(0)
        log.info("node %s stopped", self.node_atom.name)

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    # -- processes ---------------------------------------------------------------------------

    def _new_process(
        self, name: Atom | str | None = None, *, trap_exit: bool = False,
        mailbox: Mailbox | None = None,
    ) -> Process:
        if not self._started:
            raise LocalProtocolError("the node is not started")
        proc = Process(self, self.registry.new_pid(), trap_exit=trap_exit)
        if mailbox is not None:
            proc.mailbox = mailbox
        self.registry.add(proc)
        if name is not None:
            try:
                self.registry.register(_atom(name), proc)
            except ValueError:
                self.registry.remove(proc)
                raise
        return proc

    def mailbox(
        self, name: Atom | str | None = None, *, trap_exit: bool = False,
        mailbox: Mailbox | None = None,
    ) -> Process:
        """A process driven by the caller: it has a pid and receives with ``receive``.

        ``mailbox`` replaces the ordinary queue (e.g. one that routes replies to waiters).
        """
        return self._new_process(name, trap_exit=trap_exit, mailbox=mailbox)

    def spawn(
        self,
        body: ProcessBody,
        *,
        name: Atom | str | None = None,
        link: Pid | None = None,
        trap_exit: bool = False,
    ) -> Process:
        """Run ``body(process)`` as a new process; its return ends it with reason ``normal``.

        Raising :class:`ProcessExit` ends it with that reason; any other exception ends it with
        ``{python_exception, Type, Message}``.
        """
        proc = self._new_process(name, trap_exit=trap_exit)
        if link is not None:
            self.link(proc.pid, link)
        self.run_process(proc, body)
        return proc

    def run_process(self, proc: Process, body: ProcessBody) -> None:
        """Drive an existing caller-driven process by ``body`` from now on (see ``spawn``)."""
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
            if proc.alive:
                reason = Atom("killed")
            else:
                return
        except Exception as exc:
            log.error("process %r crashed", proc.pid, exc_info=exc)
            reason = python_exit_reason(exc)
        if proc.alive:
            self.terminate(proc, reason)

    def register(self, name: Atom | str, pid: Pid) -> None:
        proc = self.registry.get(pid)
        if proc is None:
            raise LocalProtocolError(f"{pid!r} is not a live local process")
        self.registry.register(_atom(name), proc)

    def pid_links(self, pid: Pid) -> set[Pid]:
        """The pids linked to local process ``pid`` (empty if it is not alive)."""
        proc = self.registry.get(pid)
        return set() if proc is None else set(proc.links)

    def whereis(self, name: Atom | str) -> Pid | None:
        proc = self.registry.whereis(_atom(name))
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
        link_reason = Atom("killed") if reason is KILL else reason
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

    # -- messages ------------------------------------------------------------------------------

    def _resolve(self, dest: Destination) -> tuple[Atom | None, Term]:
        """Split a destination into (remote node or None for local, pid/name/alias)."""
        if isinstance(dest, Pid):
            return (None if dest.node is self.node_atom else dest.node), dest
        if isinstance(dest, Reference):
            return (None if dest.node is self.node_atom else dest.node), dest
        if isinstance(dest, Atom | str):
            return None, _atom(dest)
        if isinstance(dest, tuple) and len(dest) == 2:
            name, node = _atom(dest[0]), _atom(dest[1])
            return (None if node is self.node_atom else node), name
        raise LocalProtocolError(f"not a destination: {dest!r}")

    async def send(
        self, dest: Destination, message: Term, *, sender: Pid | None = None,
        flush: Flush = Flush.SOON,
    ) -> None:
        """Send ``message`` to a pid, a registered name, ``(name, node)`` or an alias.

        Like Erlang's ``!``: a dead or unknown local destination drops the message silently; a
        remote one is connected to first (``NodeDown`` if that fails). Remote sends of one
        turn of the event loop leave in one write; ``flush=Flush.NOW`` writes at once, for a
        caller that is going to wait for the answer.
        """
        node, target = self._resolve(dest)
        if node is None:
            self.deliver_local(target, message)
            return
        channel = self._channels.get(node) or await self.connect_channel(node)
        from_pid = sender or self._system_pid()
        channel.send(self._remote_send_message(channel, from_pid, target, message), flush)
        await channel.drain()

    def _remote_send_message(
        self, channel: Channel, from_pid: Pid, target: Term, message: Term
    ) -> c.ControlMessage:
        if isinstance(target, Pid):
            if channel.send_sender:
                return c.SendSender(from_pid, target, message)
            return c.Send(target, message)
        if isinstance(target, Reference):
            return c.AliasSend(from_pid, target, message)
        return c.RegSend(from_pid, target, message)

    def local_process(self, target: Term) -> Process | None:
        """The live local process a pid or registered name stands for."""
        if type(target) is Pid:
            return self.registry.get(target)
        if type(target) is Atom:
            return self.registry.whereis(target)
        return None

    def deliver_local(self, target: Term, message: Term) -> None:
        if isinstance(target, Reference):
            proc = self._aliases.get(target)
        else:
            proc = self.local_process(target)
        if proc is not None:
            proc.mailbox.put(message)

    def _system_pid(self) -> Pid:
        assert self._system is not None
        return self._system.pid

    async def ping(self, node: Atom | str, *, timeout: float = 10.0) -> bool:
        """``net_adm:ping/1``: True (pong) if ``node`` answers its net_kernel, else False."""
        from pyerl_node import gen

        try:
            answer = await gen.call(
                self, (Atom("net_kernel"), _atom(node)), (Atom("is_auth"), self.node_atom),
                timeout=timeout,
            )
        except (ErlNodeError, OSError) as exc:
            log.debug("ping %s: %s", node, exc)
            return False
        return answer is Atom("yes")

    async def call(
        self, dest: Destination, request: Term, *, timeout: float | None = 5.0
    ) -> Term:
        """``gen_server:call/3`` to a BEAM (or Python) server."""
        from pyerl_node import gen

        return await gen.call(self, dest, request, timeout=timeout)

    async def cast(self, dest: Destination, message: Term) -> None:
        """``gen_server:cast/2``."""
        from pyerl_node import gen

        await gen.cast(self, dest, message)

    # -- rpc -------------------------------------------------------------------------------

    def expose(self, name: Atom | str, obj: object, *, threaded: bool = True) -> None:
        """Make ``obj``'s callables callable by rpc/erpc as Erlang module ``name``.

        ``obj`` is a Python module, a dict of functions or an object (its public methods).
        Synchronous functions run in a thread pool unless ``threaded=False``.
        """
        self.exposed.expose(name, obj, threaded=threaded)

    async def erpc(
        self, node: Atom | str, module: Atom | str, function: Atom | str, args: list[Term],
        *, timeout: float | None = 5.0,
    ) -> Term:
        """``erpc:call/5``: the result, or ``RpcError`` whose ``kind`` is the exception class
        (``error``, ``exit``, ``throw``) or ``timeout``/``noconnection``/``spawn``.
        """
        outcome = await self._erpc_outcome(node, module, function, args, timeout)
        return rpc_service.raise_for_erpc(outcome)

    async def rpc(
        self, node: Atom | str, module: Atom | str, function: Atom | str, args: list[Term],
        *, timeout: float | None = 5.0,
    ) -> Term:
        """``rpc:call/5``: the result (or thrown term); ``{badrpc, Reason}`` raises
        ``RpcError(Reason)``, e.g. ``RpcError(('EXIT', (undef, Stack)))``.
        """
        try:
            outcome = await self._erpc_outcome(node, module, function, args, timeout)
        except RpcError as exc:
            reason = Atom("nodedown") if exc.kind in ("noconnection", "nodedown") else exc.reason
            raise RpcError(reason) from exc
        return rpc_service.raise_for_rpc(outcome)

    async def multicall(
        self, nodes: list[Atom | str], module: Atom | str, function: Atom | str,
        args: list[Term], *, timeout: float | None = 5.0,
    ) -> tuple[list[Term], list[Atom]]:
        """``rpc:multicall/5``: (results of the nodes that answered, nodes that did not)."""
        outcomes = await asyncio.gather(
            *(self._erpc_outcome(n, module, function, args, timeout) for n in nodes),
            return_exceptions=True,
        )
        results: list[Term] = []
        bad: list[Atom] = []
        for target, outcome in zip(nodes, outcomes, strict=True):
            if isinstance(outcome, rpc_service.Outcome):
                results.append(rpc_service.rpc_result(outcome))
            elif isinstance(outcome, Exception):
                bad.append(_atom(target))
            else:
                raise outcome
        return results, bad

    async def _erpc_outcome(
        self, node: Atom | str, module: Atom | str, function: Atom | str, args: list[Term],
        timeout: float | None,
    ) -> rpc_service.Outcome:
        target, mod, fun = _atom(node), _atom(module), _atom(function)
        if target is self.node_atom:
            return await rpc_service.apply(self.exposed, mod, fun, list(args))
        try:
            return await rpc_service.erpc_call(self, target, mod, fun, list(args), timeout=timeout)
        except (NodeDown, ConnectionLost) as exc:
            raise RpcError(Atom("noconnection"), kind="noconnection") from exc

    def group_leader_pid(self) -> Pid:
        """The group leader we name in spawn requests: it answers the I/O protocol."""
        pid = self.whereis("pyerl_group_leader")
        assert pid is not None
        return pid

    def connected_channel(self, node: Atom) -> Channel | None:
        """The live connection to ``node``, None if not connected."""
        return self._channels.get(node)

    def peer_flags(self, node: Atom) -> DistFlag | None:
        """The negotiated flags of the connection to ``node``, None if not connected."""
        channel = self._channels.get(node)
        return None if channel is None else channel.flags

    # -- aliases -------------------------------------------------------------------------------

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
        self._send_remote_soon(b.node, c.Link(a, b), on_fail=lambda: self._link_broken(a, b))

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
        self, watcher: Pid, target: Pid | Atom | str | tuple[Any, Any], *,
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
        node, what = self._resolve(target)
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
        self._send_remote_soon(
            node,
            c.MonitorP(watcher, what, ref),
            on_fail=lambda: self.fire_down(watcher, ref, NOCONNECTION),
            flush=flush,
        )
        return ref

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
        proc = self.registry.get(watcher)
        if proc is None:
            return
        target = proc.monitoring.pop(ref, None)
        if target is not None:
            proc.mailbox.put((DOWN, ref, PROCESS, target, reason))

    def send_down(self, entry: MonitorEntry, ref: Reference, reason: Term) -> None:
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
        node = _atom(node)
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
            self._send_remote_soon(node, None, on_fail=lambda: self._nodedown_to(watcher, node))

    def _nodedown_to(self, watcher: Pid, node: Atom) -> None:
        self._node_monitors.get(node, set()).discard(watcher)
        self.deliver_local(watcher, (NODEDOWN, node))

    def monitor_nodes(self, watcher: Pid, enable: bool = True) -> None:
        """``net_kernel:monitor_nodes/1``: ``{nodeup, N}`` / ``{nodedown, N}`` for every node."""
        if enable:
            self._all_nodes_monitors.add(watcher)
        else:
            self._all_nodes_monitors.discard(watcher)

    def nodes(self, *, hidden: bool = False) -> list[Atom]:
        """Connected nodes: visible ones (``nodes()``), or hidden ones too."""
        return [n for n, ch in self._channels.items() if hidden or ch.visible]

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
                payload = channel.exit_payload
                channel.send(
                    c.PayloadExit(sender, target, reason)
                    if payload
                    else c.Exit(sender, target, reason)
                )
            return
        if channel is None:
            self._spawn_task(self._exit2_later(sender, target, reason))
            return
        payload = channel.exit_payload
        channel.send(
            c.PayloadExit2(sender, target, reason) if payload else c.Exit2(sender, target, reason)
        )

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
            await self.connect_channel(_atom(node))
        except (NodeDown, HandshakeError, ConnectionLost, EpmdError, OSError) as exc:
            log.info("connect to %s failed: %s", node, exc)
            return False
        return True

    async def connect_channel(self, node: Atom) -> Channel:
        channel = self._channels.get(node)
        if channel is not None:
            return channel
        if node is self.node_atom:
            raise LocalProtocolError("a node does not connect to itself")
        if not self._started:
            raise LocalProtocolError("the node is not started")
        pending = self._pending.get(node)
        if pending is None:
            pending = self._pending[node] = asyncio.get_running_loop().create_future()
            self._dialers[node] = asyncio.get_running_loop().create_task(self._dial(node, pending))
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
                err = exc if isinstance(exc, NodeDown) else NodeDown(f"{node.name}: {exc}")
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
        if not self._started:
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
            old.close()
            self._connection_gone(old)
        self._channels[peer] = channel
        pending = self._pending.pop(peer, None)
        if pending is not None and not pending.done():
            pending.set_result(channel)
        log.info(
            "connected to %s (%s)", peer.name, "visible" if channel.visible else "hidden"
        )
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
            log.info("connection to %s down", channel.peer.name)
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
        channel = self._channels.get(_atom(node))
        if channel is None:
            return False
        channel.close()
        self.channel_down(channel)
        return True

    def _send_remote_soon(
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

        self._spawn_task(later())

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- inbound control messages --------------------------------------------------------------

    def dispatch(self, channel: Channel, msg: Any) -> None:
        """Act on one control message from ``channel``'s peer (runtime.inbound)."""
        inbound.dispatch(self, channel, msg)

    # -- global --------------------------------------------------------------------------------
    # Thin wrappers around pyerl_node.services.global_names (``:global`` of OTP). A ``str``
    # name is an atom; LocalProtocolError when the node runs with ``global_names=False``.

    def _global(self) -> global_mod.GlobalNameServer:
        server = self.global_service
        if server is None:
            raise LocalProtocolError(
                f"global is not running on {self.node_atom.name} (Node(global_names=True))")
        return server

    async def global_register(self, name: Term, pid: Pid, method: Term | None = None) -> bool:
        """``global:register_name/2,3``: True (yes) or False (no). ``method`` is
        ``random_exit_name`` (default), ``random_notify_name``, ``notify_all_name`` or an
        ``Export`` fun/3."""
        return await self._global().registrar.register_name(name, pid, method)

    async def global_re_register(self, name: Term, pid: Pid,
                                 method: Term | None = None) -> None:
        """``global:re_register_name/2,3``."""
        await self._global().registrar.re_register_name(name, pid, method)

    async def global_unregister(self, name: Term) -> None:
        """``global:unregister_name/1``."""
        await self._global().registrar.unregister_name(name)

    def global_whereis(self, name: Term) -> Pid | None:
        """``global:whereis_name/1``: a local table read."""
        return self._global().tables.where(name)

    def global_registered_names(self) -> list[Term]:
        """``global:registered_names/0``."""
        return self._global().tables.registered_names()

    async def global_send(self, name: Term, message: Term, *, sender: Pid | None = None) -> Pid:
        """``global:send/2``: NoProc if no process has that name."""
        return await self._global().registrar.send(name, message, sender=sender)

    async def global_sync(self, nodes: list[Atom] | None = None, *,
                          timeout: float | None = None) -> None:
        """``global:sync/0,1``."""
        await self._global().sync(nodes, timeout=timeout)

    async def global_set_lock(
        self, lock_id: tuple[Term, Term], nodes: list[Atom] | None = None,
        retries: int | None = None, *, owner: Process | None = None,
    ) -> bool:
        """``global:set_lock/1,2,3`` (``retries=None`` is infinity)."""
        return await self._global().registrar.set_lock(lock_id, nodes, retries, owner=owner)

    async def global_del_lock(
        self, lock_id: tuple[Term, Term], nodes: list[Atom] | None = None,
        *, owner: Process | None = None,
    ) -> None:
        """``global:del_lock/1,2``."""
        await self._global().registrar.del_lock(lock_id, nodes, owner=owner)

    async def global_trans(
        self, lock_id: tuple[Term, Term], fun: Callable[[], Any],
        nodes: list[Atom] | None = None, retries: int | None = None,
    ) -> Any:
        """``global:trans/2,3,4``: ``await fun()`` under the lock, or ``aborted``."""
        return await self._global().registrar.trans(lock_id, fun, nodes, retries)



def read_default_cookie() -> str:
    """The cookie ``erl`` would use: ``~/.erlang.cookie`` (created like erl does if missing)."""
    import os
    import pathlib
    import string

    path = pathlib.Path(os.path.expanduser("~")) / ".erlang.cookie"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(20))
        path.write_text(cookie)
        path.chmod(0o400)
        return cookie
