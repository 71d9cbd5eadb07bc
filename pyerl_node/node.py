"""``Node``: the public face of a Python node, wiring the runtime and the services together.

The work happens below: :mod:`pyerl_node.runtime.kernel` owns connections, processes and
signals; :mod:`pyerl_node.services` are the processes BEAM peers expect (``net_kernel``,
``rex``, ``global_name_server``...). This class starts them in the right order and offers the
verbs a program uses; each verb says which Erlang function it mirrors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import secrets
import ssl
import string
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

from pyerl_node.proto.errors import (
    EpmdError,
    ErlNodeError,
    LocalProtocolError,
    NodeDown,
    RpcError,
)
from pyerl_node.proto.flags import DistFlag
from pyerl_node.proto.names import NodeName, make_node_name, parse_node_name
from pyerl_node.proto.terms import Atom, Pid, Reference, Term
from pyerl_node.runtime import epmd_client, genserver, tls, transport
from pyerl_node.runtime.flush import Flush
from pyerl_node.runtime.interface import Destination, NodeKind
from pyerl_node.runtime.kernel import Kernel, as_atom
from pyerl_node.runtime.mailbox import Mailbox
from pyerl_node.runtime.process import Process, ProcessBody
from pyerl_node.runtime.tls_layer import TlsSettings
from pyerl_node.services import pg as pg_service
from pyerl_node.services import rpc as rpc_service
from pyerl_node.services import start_builtin_services
from pyerl_node.services.global_names import GlobalNameServer
from pyerl_node.services.phoenix import Dispatcher, PubSub

log = logging.getLogger("pyerl_node")

IS_AUTH = Atom("is_auth")
YES = Atom("yes")
NET_KERNEL = Atom("net_kernel")


def own_node_name(name: str) -> NodeName:
    """Our name from what the user wrote: ``py`` (a short name on this host, as
    ``erl -sname py``), ``py@host`` or ``py@host.domain`` / ``py@IP`` (as ``-name``)."""
    if "@" not in name:
        return make_node_name(name, long=False)
    return make_node_name(name, long=parse_node_name(name).is_long)


class Node:
    """A distributed Erlang node implemented in Python.

    ``async with Node("py", cookie="secret") as node: ...`` starts it: it listens on every
    interface (as ``erl``), registers with EPMD on this host (starting the Python EPMD as a
    daemon when nothing listens on the EPMD port) and serves ``net_kernel``, ``rex`` and
    ``global``. The arguments follow ``erl``'s flags:

    * ``name``: ``"py"`` (``-sname py``: ``py@<hostname>``), ``"py@host"``,
      ``"py@host.domain"`` or ``"py@10.0.0.5"`` (``-name``).
    * ``cookie``: default ``~/.erlang.cookie`` (created as erl creates it when missing).
    * ``listen_host``: narrows listening to one address (default: every interface);
      ``dist_port_min``/``dist_port_max``: erl's ``inet_dist_listen_min/max``.
    * ``proto_dist``: erl's ``-proto_dist``: ``inet_tcp`` (default), ``inet6_tcp``, and over
      TLS ``inet_tls`` / ``inet6_tls``, configured by ``ssl_dist_optfile`` (erl's
      ``-ssl_dist_optfile`` file, the same for BEAM and Python nodes) or by ready
      ``ssl_server_context`` and ``ssl_client_context`` objects.
    * ``epmd_port``: default ``$ERL_EPMD_PORT`` or 4369; ``start_epmd=False`` never starts
      one; ``embedded_epmd=True`` runs it inside this process instead of as a daemon (it
      then ends with the node, and so does every registration in it).
    * ``net_ticktime`` (seconds, default 60), ``connect_timeout`` (net_setuptime, 7 s),
      ``hidden`` (``-hidden``), ``global_names`` (take part in ``global``, default True).
    """

    def __init__(
        self,
        name: str,
        cookie: str | None = None,
        *,
        hidden: bool = False,
        listen_host: str | None = None,
        dist_port_min: int = 0,
        dist_port_max: int = 0,
        proto_dist: str = "inet_tcp",
        ssl_dist_optfile: str | os.PathLike[str] | None = None,
        ssl_server_context: ssl.SSLContext | None = None,
        ssl_client_context: ssl.SSLContext | None = None,
        epmd_port: int | None = None,
        start_epmd: bool = True,
        embedded_epmd: bool = False,
        net_ticktime: float = 60.0,
        connect_timeout: float = 7.0,
        challenge_source: Callable[[], int] | None = None,
        global_names: bool = True,
    ) -> None:
        if proto_dist not in PROTO_DISTS:
            raise LocalProtocolError(f"proto_dist {proto_dist!r} is none of "
                                     f"{', '.join(PROTO_DISTS)}")
        inet6 = proto_dist.startswith("inet6")
        tls_settings = _tls_settings(proto_dist.endswith("_tls"), ssl_dist_optfile,
                                     ssl_server_context, ssl_client_context)
        self._kernel = Kernel(
            own_node_name(name),
            cookie if cookie is not None else read_default_cookie(),
            hidden=hidden,
            listen=transport.ListenOptions(listen_host, dist_port_min, dist_port_max, inet6),
            epmd_port=epmd_port if epmd_port is not None else epmd_client.default_epmd_port(),
            net_ticktime=net_ticktime,
            connect_timeout=connect_timeout,
            challenge_source=challenge_source or (lambda: secrets.randbits(32)),
            tls=tls_settings,
        )
        self._exposed = rpc_service.Exposed()
        self._start_epmd = start_epmd
        self._embedded_epmd_wanted = embedded_epmd
        self._embedded_epmd: Any = None
        self._epmd_daemon_pid: int | None = None  # the EPMD daemon this node started, if any
        self._global_names = global_names
        self._global: GlobalNameServer | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, register with EPMD and start the built-in services."""
        kernel = self._kernel
        if kernel.started:
            raise LocalProtocolError("node already started")
        warning = await transport.unreachable_name_warning(kernel.name.host,
                                                           kernel.listen_options)
        port = await kernel.listen()
        try:
            await self._register()
        except BaseException:
            await kernel.close()
            raise
        kernel.open()
        self._global = start_builtin_services(kernel, self._exposed,
                                              global_names=self._global_names)
        self._pg = pg_service.start_pg(kernel, self._exposed)
        log.info("node %s up: listening on %s port %d (creation %d)", kernel.node_atom.name,
                 kernel.listen_options.bind_host, port, kernel.creation)
        if warning is not None:
            log.warning("node %s: %s", kernel.node_atom.name, warning)

    async def _register(self) -> None:
        try:
            await self._kernel.register_with_epmd()
            return
        except EpmdError as exc:
            # only "nothing listens there" means no EPMD; a timeout or a bad reply is an error
            if not self._start_epmd or not isinstance(exc.__cause__, ConnectionRefusedError):
                raise
        port = self._kernel.epmd_port
        if self._embedded_epmd_wanted:
            from epmd import EpmdServer

            self._embedded_epmd = EpmdServer(port=port)
            await self._embedded_epmd.start()
            log.info("started the Python EPMD in this process on port %d", port)
        else:
            from pyerl_node.runtime.epmd_daemon import ensure_epmd

            pid = await ensure_epmd(port)
            if pid is not None:
                self._epmd_daemon_pid = pid
                log.info("started the Python EPMD daemon on port %d (pid %d); it outlives "
                         "this node, as erl's epmd -daemon does", port, pid)
        await self._kernel.register_with_epmd()

    async def stop(self) -> None:
        """Close every connection, end every process, unregister from EPMD."""
        kernel = self._kernel
        if not kernel.started:
            return
        await kernel.close()
        if self._embedded_epmd is not None:
            await self._embedded_epmd.stop()
            self._embedded_epmd = None
        log.info("node %s stopped", kernel.node_atom.name)

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
    def name(self) -> NodeName:
        """Our node name, split at its ``@``."""
        return self._kernel.name

    @property
    def node_atom(self) -> Atom:
        """``node()``: our node name as an atom."""
        return self._kernel.node_atom

    @property
    def port(self) -> int:
        """The distribution port we listen on."""
        return self._kernel.port

    @property
    def creation(self) -> int:
        """The creation EPMD gave this incarnation of the node."""
        return self._kernel.creation

    @property
    def hidden(self) -> bool:
        """Whether we connect as a hidden node (``-hidden``)."""
        return self._kernel.hidden

    @property
    def cookie(self) -> str:
        """The magic cookie we authenticate with."""
        return self._kernel.cookie

    # -- processes ---------------------------------------------------------------------------

    def mailbox(
        self, name: Atom | str | None = None, *, trap_exit: bool = False,
        mailbox: Mailbox | None = None, max_queue: int | None = None,
    ) -> Process:
        """A process driven by the caller: it has a pid and receives with ``receive``.

        ``name`` registers it (``register/2``); ``mailbox`` replaces the ordinary queue;
        ``max_queue`` bounds it: one message more ends the process with reason ``max_queue``
        (links and monitors see it, as with the BEAM's ``max_heap_size``).
        """
        return self._kernel.new_process(name, trap_exit=trap_exit, mailbox=mailbox,
                                        max_queue=max_queue)

    def spawn(
        self, body: ProcessBody, *, name: Atom | str | None = None, link: Pid | None = None,
        trap_exit: bool = False, max_queue: int | None = None,
    ) -> Process:
        """Run ``body(process)`` as a new process; its return ends it with reason ``normal``.

        Raising :class:`ProcessExit` ends it with that reason; any other exception ends it with
        ``{python_exception, Type, Message}``. ``link`` links it to that pid first;
        ``max_queue`` bounds its mailbox as for :meth:`mailbox`.
        """
        return self._kernel.spawn(body, name=name, link=link, trap_exit=trap_exit,
                                  max_queue=max_queue)

    def register(self, name: Atom | str, pid: Pid) -> None:
        """``register/2``: LocalProtocolError if the name or the process has one already."""
        self._kernel.register(name, pid)

    def unregister(self, name: Atom | str) -> None:
        """``unregister/1``."""
        self._kernel.unregister(name)

    def whereis(self, name: Atom | str) -> Pid | None:
        """``whereis/1``: the local process registered as ``name``, or None."""
        return self._kernel.whereis(name)

    def registered(self) -> list[Atom]:
        """``registered/0``: the locally registered names."""
        return self._kernel.registered()

    def make_ref(self) -> Reference:
        """``make_ref/0``."""
        return self._kernel.make_ref()

    def alias(self, proc: Process) -> Reference:
        """``alias/0`` run by ``proc``: a reference that routes messages to it."""
        return self._kernel.alias(proc)

    def unalias(self, ref: Reference) -> None:
        """``unalias/1``."""
        self._kernel.unalias(ref)

    def link(self, a: Pid, b: Pid) -> None:
        """``link/1`` run by local process ``a``: link it with ``b`` (local or remote)."""
        self._kernel.link(a, b)

    def unlink(self, a: Pid, b: Pid) -> None:
        """``unlink/1`` run by local process ``a``."""
        self._kernel.unlink(a, b)

    def monitor(self, watcher: Pid, target: Destination) -> Reference:
        """``monitor(process, Target)`` by local ``watcher``: a pid, a name or ``(name, node)``.

        ``{'DOWN', Ref, process, Target, Reason}`` arrives when the target ends (``noproc``
        if it does not exist, ``noconnection`` if its node goes down).
        """
        return self._kernel.monitor(watcher, target)

    def demonitor(self, watcher: Pid, ref: Reference) -> None:
        """``demonitor/1`` by local ``watcher``."""
        self._kernel.demonitor(watcher, ref)

    def monitor_node(self, watcher: Pid, node: Atom | str, enable: bool = True) -> None:
        """``erlang:monitor_node/2``: ``{nodedown, Node}`` to ``watcher`` when it goes down."""
        self._kernel.monitor_node(watcher, node, enable)

    def monitor_nodes(self, watcher: Pid, enable: bool = True) -> None:
        """``net_kernel:monitor_nodes/1``: ``{nodeup, N}`` / ``{nodedown, N}`` for every
        visible node, to ``watcher``."""
        self._kernel.monitor_nodes(watcher, enable)

    def exit(self, sender: Pid, target: Pid, reason: Term) -> None:
        """``exit/2`` from local process ``sender``: an exit signal to ``target``."""
        self._kernel.exit(sender, target, reason)

    # -- messages ------------------------------------------------------------------------------

    def send(
        self, dest: Destination, message: Term, *, sender: Pid | None = None,
        flush: Flush = Flush.SOON,
    ) -> Coroutine[Any, Any, None]:
        """Send ``message`` to a pid, a registered name, ``(name, node)`` or an alias (a
        coroutine: ``await node.send(...)``).

        Like Erlang's ``!``: a dead or unknown local destination drops the message silently; a
        remote one is connected to first (``NodeDown`` if that fails). Remote sends of one
        turn of the event loop leave in one write; ``flush=Flush.NOW`` writes at once, for a
        caller that is going to wait for the answer.
        """
        # (the kernel's coroutine itself: no coroutine of our own around it, per message)
        return self._kernel.send(dest, message, sender=sender, flush=flush)

    async def call(
        self, dest: Destination, request: Term, *, timeout: float | None = 5.0
    ) -> Term:
        """``gen_server:call/3`` to a BEAM (or Python) server.

        Raises ``NoProc``, ``NodeDown``, ``ProcessExit`` (the server died) or ``CallTimeout``.
        """
        return await genserver.call(self._kernel, dest, request, timeout=timeout)

    async def cast(self, dest: Destination, message: Term) -> None:
        """``gen_server:cast/2``."""
        await genserver.cast(self._kernel, dest, message)

    async def ping(self, node: Atom | str, *, timeout: float = 10.0) -> bool:
        """``net_adm:ping/1``: True (pong) if ``node`` answers its net_kernel, else False."""
        try:
            answer = await genserver.call(
                self._kernel, (NET_KERNEL, as_atom(node)), (IS_AUTH, self.node_atom),
                timeout=timeout)
        except (ErlNodeError, OSError) as exc:
            self._kernel.peer_warnings.log(("connect", as_atom(node)), logging.WARNING,
                                           "ping %s: pang: %s", node, exc)
            return False
        return answer is YES

    # -- rpc -------------------------------------------------------------------------------

    def expose(self, name: Atom | str, obj: object, *, threaded: bool = True,
               replace_builtin: bool = False) -> None:
        """Make ``obj``'s callables callable by rpc/erpc as Erlang module ``name``.

        ``obj`` is a Python module, a dict of functions or an object (its public methods).
        Synchronous functions run in a thread pool unless ``threaded=False``.

        The node's built-in modules (``erlang``, ``global``, ``net_adm``, ``net_kernel``,
        ``os``, ``application``, ``code``, ``pg``: docs/builtins.md) answer what BEAM tools
        call on every node; exposing one of those names raises ``LocalProtocolError`` unless
        ``replace_builtin=True``. Then rpc calls of that module run ``obj`` instead, but what
        the node's own protocols call (``global:resolve_it``) stays built-in.
        """
        self._exposed.expose(name, obj, threaded=threaded, replace_builtin=replace_builtin)

    async def erpc(
        self, node: Atom | str, module: Atom | str, function: Atom | str, args: list[Term],
        *, timeout: float | None = 5.0,
    ) -> Term:
        """``erpc:call/5``: the result, or ``RpcError`` whose ``kind`` is the exception class
        (``error``, ``exit``, ``throw``) or ``timeout``/``noconnection``/``spawn``.
        """
        outcome = await rpc_service.call_outcome(
            self._kernel, self._exposed, as_atom(node), as_atom(module), as_atom(function),
            args, timeout=timeout)
        return rpc_service.raise_for_erpc(outcome)

    async def rpc(
        self, node: Atom | str, module: Atom | str, function: Atom | str, args: list[Term],
        *, timeout: float | None = 5.0,
    ) -> Term:
        """``rpc:call/5``: the result (or thrown term); ``{badrpc, Reason}`` raises
        ``RpcError(Reason)``, e.g. ``RpcError(('EXIT', (undef, Stack)))``.
        """
        return await rpc_service.rpc_call(
            self._kernel, self._exposed, as_atom(node), as_atom(module), as_atom(function),
            args, timeout=timeout)

    async def multicall(
        self, nodes: list[Atom | str], module: Atom | str, function: Atom | str,
        args: list[Term], *, timeout: float | None = 5.0,
    ) -> tuple[list[Term], list[Atom]]:
        """``rpc:multicall/5``: (results of the nodes that answered, nodes that did not)."""
        outcomes = await asyncio.gather(
            *(rpc_service.call_outcome(self._kernel, self._exposed, as_atom(n),
                                       as_atom(module), as_atom(function), args,
                                       timeout=timeout) for n in nodes),
            return_exceptions=True,
        )
        results: list[Term] = []
        bad: list[Atom] = []
        for target, outcome in zip(nodes, outcomes, strict=True):
            if isinstance(outcome, rpc_service.Outcome):
                results.append(rpc_service.rpc_result(outcome))
            elif isinstance(outcome, RpcError | NodeDown):
                bad.append(as_atom(target))
            else:
                raise outcome
        return results, bad

    # -- nodes ---------------------------------------------------------------------------------

    def nodes(self, kind: NodeKind = "visible") -> list[Atom]:
        """``erlang:nodes/1``: ``visible`` (``nodes()``), ``hidden``, ``connected`` (both),
        ``this`` or ``known``."""
        return self._kernel.nodes(kind)

    async def connect(self, node: Atom | str) -> bool:
        """``net_kernel:connect_node/1``: True once connected, False if it fails."""
        return await self._kernel.connect(node)

    def disconnect(self, node: Atom | str) -> bool:
        """``erlang:disconnect_node/1``: True if there was a connection to close."""
        return self._kernel.disconnect(node)

    def peer_flags(self, node: Atom | str) -> DistFlag | None:
        """The distribution flags negotiated with ``node``, None if not connected."""
        return self._kernel.peer_flags(as_atom(node))

    # -- global --------------------------------------------------------------------------------
    # ``:global`` of OTP (pyerl_node.services.global_names). A ``str`` name is an atom;
    # LocalProtocolError when the node runs with ``global_names=False``.

    def _global_server(self) -> GlobalNameServer:
        if self._global is None:
            raise LocalProtocolError(
                f"global is not running on {self.node_atom.name} (Node(global_names=True))")
        return self._global

    async def global_register(self, name: Term, pid: Pid, method: Term | None = None) -> bool:
        """``global:register_name/2,3``: True (yes) or False (no). ``method`` is
        ``random_exit_name`` (default), ``random_notify_name``, ``notify_all_name`` or an
        ``Export`` fun/3."""
        return await self._global_server().registrar.register_name(name, pid, method)

    async def global_re_register(self, name: Term, pid: Pid,
                                 method: Term | None = None) -> None:
        """``global:re_register_name/2,3``."""
        await self._global_server().registrar.re_register_name(name, pid, method)

    async def global_unregister(self, name: Term) -> None:
        """``global:unregister_name/1``."""
        await self._global_server().registrar.unregister_name(name)

    def global_whereis(self, name: Term) -> Pid | None:
        """``global:whereis_name/1``: a local table read."""
        return self._global_server().tables.where(name)

    def global_registered_names(self) -> list[Term]:
        """``global:registered_names/0``."""
        return self._global_server().tables.registered_names()

    async def global_send(self, name: Term, message: Term, *, sender: Pid | None = None) -> Pid:
        """``global:send/2``: the pid it went to; NoProc if no process has that name."""
        return await self._global_server().registrar.send(name, message, sender=sender)

    async def global_sync(self, nodes: list[Atom] | None = None, *,
                          timeout: float | None = None) -> None:
        """``global:sync/0,1``."""
        await self._global_server().sync(nodes, timeout=timeout)

    async def global_set_lock(
        self, lock_id: tuple[Term, Term], nodes: list[Atom] | None = None,
        retries: int | None = None,
    ) -> bool:
        """``global:set_lock/1,2,3`` (``retries=None`` is infinity)."""
        return await self._global_server().registrar.set_lock(lock_id, nodes, retries)

    async def global_del_lock(
        self, lock_id: tuple[Term, Term], nodes: list[Atom] | None = None,
    ) -> None:
        """``global:del_lock/1,2``."""
        await self._global_server().registrar.del_lock(lock_id, nodes)

    async def global_trans(
        self, lock_id: tuple[Term, Term], fun: Callable[[], Any],
        nodes: list[Atom] | None = None, retries: int | None = None,
    ) -> Any:
        """``global:trans/2,3,4``: ``await fun()`` under the lock, or ``aborted``."""
        return await self._global_server().registrar.trans(lock_id, fun, nodes, retries)

    # -- pg ------------------------------------------------------------------------------------
    # OTP's ``pg`` process groups (pyerl_node.services.pg). ``scope`` defaults to ``pg``, the
    # scope every node runs; groups are any term (an ``Atom`` for atom groups); members are
    # processes of this node. The queries read the local tables, as OTP's read ETS.

    _pg: pg_service.PgScopes | None = None

    def _pg_scope(self, scope: Atom | str) -> pg_service.PgScopeService:
        if self._pg is None:
            raise LocalProtocolError("the node is not started")
        return self._pg.get(as_atom(scope))

    def pg_start_scope(self, scope: Atom | str) -> None:
        """``pg:start/1``: run another scope on this node (LocalProtocolError if it runs)."""
        if self._pg is None:
            raise LocalProtocolError("the node is not started")
        self._pg.start_scope(as_atom(scope))

    async def pg_join(self, group: Term, pid_or_pids: Pid | list[Pid], *,
                      scope: Atom | str = pg_service.DEFAULT_SCOPE) -> None:
        """``pg:join/3``: local processes join ``group`` (a pid counts once per join);
        LocalProtocolError for a pid of another node."""
        self._pg_scope(scope).join(group, pid_or_pids)

    async def pg_leave(self, group: Term, pid_or_pids: Pid | list[Pid], *,
                       scope: Atom | str = pg_service.DEFAULT_SCOPE) -> bool:
        """``pg:leave/3``: one join of each pid undone; False (``not_joined``) if none was
        a member."""
        return self._pg_scope(scope).leave(group, pid_or_pids)

    def pg_get_members(self, group: Term, *,
                       scope: Atom | str = pg_service.DEFAULT_SCOPE) -> list[Pid]:
        """``pg:get_members/2``: the members on every node, newest join first."""
        return self._pg_scope(scope).get_members(group)

    def pg_get_local_members(self, group: Term, *,
                             scope: Atom | str = pg_service.DEFAULT_SCOPE) -> list[Pid]:
        """``pg:get_local_members/2``: the members on this node."""
        return self._pg_scope(scope).get_local_members(group)

    def pg_which_groups(self, *, scope: Atom | str = pg_service.DEFAULT_SCOPE) -> list[Term]:
        """``pg:which_groups/1``."""
        return self._pg_scope(scope).which_groups()

    async def pg_monitor(self, group: Term, watcher: Pid, *,
                         scope: Atom | str = pg_service.DEFAULT_SCOPE
                         ) -> tuple[Reference, list[Pid]]:
        """``pg:monitor/2`` for local process ``watcher``: ``(Ref, Members)``; then
        ``{Ref, join | leave, Group, Pids}`` reaches ``watcher`` on every change."""
        return self._pg_scope(scope).monitor(watcher, group)

    async def pg_monitor_scope(self, watcher: Pid, *,
                               scope: Atom | str = pg_service.DEFAULT_SCOPE
                               ) -> tuple[Reference, dict[Any, list[Pid]]]:
        """``pg:monitor_scope/1`` for ``watcher``: ``(Ref, {Group: Members})`` (the keys
        are ``ExactKey``s; ``d[group]`` finds them), then notifications of every group."""
        ref, groups = self._pg_scope(scope).monitor_scope(watcher)
        return ref, dict(groups)

    async def pg_demonitor(self, ref: Reference, *,
                           scope: Atom | str = pg_service.DEFAULT_SCOPE) -> bool:
        """``pg:demonitor/2``: False for an unknown ref; the watcher's queued notifications
        of ``ref`` are dropped."""
        return self._pg_scope(scope).demonitor(ref)

    # -- Phoenix.PubSub ------------------------------------------------------------------------

    def pubsub(self, name: Atom | str, *, pool_size: int = 1,
               broadcast_pool_size: int | None = None,
               dispatchers: dict[Atom, Dispatcher] | None = None) -> PubSub:
        """Join the Phoenix.PubSub ``name`` (``"MyApp.PubSub"`` as Elixir writes it) with the
        PG2 adapter's ``pool_size`` and ``broadcast_pool_size``; ``dispatchers`` stand in
        for custom Elixir dispatchers (pyerl_node.services.phoenix). LocalProtocolError if
        that PubSub runs here already."""
        if self._pg is None:
            raise LocalProtocolError("the node is not started")
        ps = PubSub(self._kernel, self._pg, name, pool_size=pool_size,
                    broadcast_pool_size=broadcast_pool_size, dispatchers=dispatchers)
        ps.start()
        return ps


PROTO_DISTS = ("inet_tcp", "inet6_tcp", "inet_tls", "inet6_tls")


def _tls_settings(
    wanted: bool, optfile: str | os.PathLike[str] | None,
    server: ssl.SSLContext | None, client: ssl.SSLContext | None,
) -> TlsSettings | None:
    """The TLS distribution a ``Node``'s arguments ask for; a bad optfile is refused with
    TlsConfigError (file, line, column, option) before anything starts."""
    if not wanted:
        if optfile is not None or server is not None or client is not None:
            raise LocalProtocolError("TLS options are given but proto_dist is not inet_tls or "
                                 "inet6_tls")
        return None
    if optfile is not None:
        if server is not None or client is not None:
            raise LocalProtocolError("give ssl_dist_optfile or the two contexts, not both")
        options = tls.load_optfile(optfile)
        return TlsSettings(tls.server_context(options), tls.client_context(options), options)
    if server is None or client is None:
        raise LocalProtocolError("inet_tls needs ssl_dist_optfile, or both ssl_server_context "
                             "and ssl_client_context")
    return TlsSettings(server, client)


def read_default_cookie() -> str:
    """The cookie ``erl`` would use: ``~/.erlang.cookie`` (created like erl does if missing)."""
    path = pathlib.Path(os.path.expanduser("~")) / ".erlang.cookie"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(20))
        path.write_text(cookie)
        path.chmod(0o400)
        return cookie
