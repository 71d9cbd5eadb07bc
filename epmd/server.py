"""An asyncio EPMD server that behaves as OTP's epmd does (docs/protocol/distribution.md section 2).

One ``asyncio.Protocol`` per connection feeds a ``RequestParser`` (``pyerl_node.proto.epmd_wire``);
the node table is ``epmd.registry.Registry``. Behaviour taken from epmd_srv.c and checked
against the real daemons (vectors/epmd/epmd_real_daemon_responses.json):

* A connection carries one request. ALIVE2 keeps it open: the registration lives until that
  socket closes, and any further byte on it unregisters the node and closes the socket.
  Every other request is answered and the socket closed.
* A malformed request (bad length, wrong field lengths, NUL in a name, unknown code, bytes
  beyond the announced length) closes the connection without an answer.
* ALIVE2, DUMP, KILL and STOP are only served to local peers (127.0.0.0/8, ::1, or the
  address the connection arrived on). KILL stops the server only when no node is registered
  or ``relaxed_command_check`` is set; STOP is ignored unless ``relaxed_command_check``.

Bounds, so that one local process opening thousands of connections cannot lock the nodes of
the host out (neither from registering nor from being found):

* The parser never buffers more than one request (at most 3 KiB).
* Every connection except a live registration has a deadline of ``request_timeout`` seconds
  from its arrival (default a few seconds; BEAM sends its request as soon as it connects):
  a silent or slow client, a refused ALIVE2 that stays open, a client that does not read
  its answer, all are closed then.
* At most ``capacity`` connections are open: ``max_connections``, lowered when the process's
  file descriptor limit would be reached first. A connection that arrives when the server
  is full makes room by closing the oldest connection that is not a live registration; only
  when every open connection is a registration is the newcomer refused. Registrations are
  therefore never closed by the server, and a node can always register or look up.

Known differences from epmd, none reachable by BEAM nodes or the ``epmd`` tool: an ALIVE2
name that is not valid UTF-8 closes the connection without answer (epmd answers result 1);
an empty name is refused with result 1 (epmd registers ""); a name forgotten after 1000 other
unregistrations starts again from the clock; epmd's deadline counts from the last byte read,
ours from the connection's arrival.

``address`` lists what to listen on (strings, or ``ListenAddress`` from ``epmd.addresses``
for best-effort entries); the default is 127.0.0.1 only, for servers embedded in a node or a
test (the daemon, ``python -m epmd``, listens like epmd). ``port=0`` picks a free port, shared
by all addresses; ``server.port`` tells which.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import itertools
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from enum import Enum
from types import TracebackType
from typing import cast

from epmd.addresses import ListenAddress, split_address_list
from epmd.registry import Registry
from pyerl_node.proto.epmd_wire import (
    REFUSED_CREATION,
    Alive2Req,
    Alive2Resp,
    DumpReq,
    DumpResp,
    KillReq,
    KillResp,
    NamesReq,
    NamesResp,
    Port2Error,
    PortPlease2Req,
    Request,
    RequestParser,
    StopReq,
    StopResp,
    encode_alive2_resp,
    encode_dump_resp,
    encode_kill_resp,
    encode_names_resp,
    encode_port2_resp,
    encode_stop_resp,
)
from pyerl_node.proto.errors import EpmdError, RemoteProtocolError

try:
    import resource
except ImportError:  # not on Windows: no descriptor limit to respect there
    resource = None  # type: ignore[assignment]

log = logging.getLogger("epmd")

DEFAULT_REQUEST_TIMEOUT = 5.0  # epmd waits 60 s; BEAM sends its request right after connecting
DEFAULT_MAX_CONNECTIONS = 10_000
LISTEN_BACKLOG = 1024
# Descriptors kept free for the listeners, the event loop and the connections asyncio accepts
# in one go before the server sees them (up to LISTEN_BACKLOG per listener and wakeup).
FD_HEADROOM = LISTEN_BACKLOG + 64
# A best-effort address is skipped on these (the host lacks that family or that address).
_ABSENT = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT})


def connection_capacity(max_connections: int, fd_limit: int | None) -> int:
    """How many connections to hold at most, given the soft limit on open descriptors."""
    if fd_limit is None or fd_limit < 0:  # RLIM_INFINITY is -1
        return max_connections
    headroom = min(FD_HEADROOM, fd_limit // 2)
    return max(1, min(max_connections, fd_limit - headroom))


def _fd_soft_limit() -> int | None:
    if resource is None:
        return None
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _is_local_peer(peer: tuple[str, int] | None, local: tuple[str, int] | None) -> bool:
    if peer is None:
        return False
    if peer[0].startswith("127.") or peer[0] == "::1":  # the common case, without parsing
        return True
    try:
        addr = ipaddress.ip_address(peer[0].split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback:
        return True
    return local is not None and peer[0] == local[0]


def _as_listen_addresses(address: str | Iterable[str | ListenAddress]) -> list[ListenAddress]:
    items = split_address_list(address) if isinstance(address, str) else list(address)
    return [a if isinstance(a, ListenAddress) else ListenAddress(a) for a in items]


class ConnState(Enum):
    """Where a connection is in its one-request life."""

    AWAITING = "awaiting request"  # connected, no complete request yet
    ANSWERED = "answered"  # the answer is written, the socket closing
    REFUSED = "refused"  # a refused ALIVE2: epmd keeps the socket open, until our deadline
    REGISTERED = "registered"  # a live registration: open for the node's lifetime


class _Connection(asyncio.Protocol):
    """One client connection: parse one request, answer it, close (or keep, for ALIVE2)."""

    def __init__(self, server: EpmdServer, ident: int) -> None:
        self._server = server
        self.ident = ident
        self.state = ConnState.AWAITING
        self._parser = RequestParser()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.local_peer = False
        self.peer = "?"
        self.fd = -1

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (a stream transport; other event loops, uvloop's, do not subclass asyncio.Transport)
        self._transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.local_peer = _is_local_peer(peer, local)
        if not self._server._accept(self):
            transport.abort()
            return
        self._timer = asyncio.get_running_loop().call_later(
            self._server.request_timeout, self._timed_out)
        log.debug("conn %d from %s (local=%s)", self.ident, self.peer, self.local_peer)

    def data_received(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        if self.state in (ConnState.REGISTERED, ConnState.REFUSED):
            # epmd: "got more than expected on ALIVE socket" -> unregister and close.
            log.info("conn %d: %d unexpected bytes on a registration socket, closing",
                     self.ident, len(data))
            self.close()
            self._server._forget(self)  # unregister now, as epmd does
            return
        try:
            self._parser.receive_data(data)
            request = self._parser.next_request()
        except RemoteProtocolError as exc:
            log.debug("conn %d from %s: %s; closing", self.ident, self.peer, exc)
            self.close()
            return
        if request is None:
            return
        log.debug("conn %d: %s", self.ident, request)
        self.state = ConnState.ANSWERED
        self._server._handle(self, request)
        if self.state is ConnState.ANSWERED:
            self.close()

    def eof_received(self) -> bool | None:
        return False  # let the transport close; connection_lost does the bookkeeping

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._transport = None
        self._server._forget(self)

    # -- helpers ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()  # flushes pending writes first

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def keep(self) -> None:
        """A live registration: no deadline, never evicted."""
        self.state = ConnState.REGISTERED
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None:
            return
        log.debug("conn %d from %s (%s): deadline of %.1fs passed, closing", self.ident,
                  self.peer, self.state.value, self._server.request_timeout)
        if transport.get_write_buffer_size():
            transport.abort()  # a client that does not read its answer: do not wait for it
        else:
            transport.close()


class EpmdServer:
    """The EPMD server. ``await start()`` / ``await stop()``, or ``async with``."""

    def __init__(
        self,
        address: str | Iterable[str | ListenAddress] = "127.0.0.1",
        port: int = 4369,
        *,
        relaxed_command_check: bool = False,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._plan = _as_listen_addresses(address) or [ListenAddress("127.0.0.1")]
        self.addresses: list[str] = []  # what is bound, once started
        self._requested_port = port
        self.relaxed_command_check = relaxed_command_check
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.capacity = max_connections  # lowered by start() to fit the descriptor limit
        self.evicted = 0  # connections closed to make room, since start
        self.registry = Registry(clock)
        self._servers: list[asyncio.Server] = []
        self._conns: dict[int, _Connection] = {}
        # Every connection that is not a live registration, oldest first: eviction order.
        self._evictable: OrderedDict[int, _Connection] = OrderedDict()
        self._ids = itertools.count(1)
        self._port: int | None = None
        self._stopped: asyncio.Event | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._waiters: list[tuple[Callable[[Registry], bool], asyncio.Future[None]]] = []
        self._full = False
        self._refusing = False

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        if self._port is None:
            raise EpmdError("EPMD server not started")
        return self._port

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    async def start(self) -> None:
        if self._servers:
            raise EpmdError("EPMD server already started")
        self._stopped = asyncio.Event()
        self._stop_task = None
        port = self._requested_port
        try:
            for entry in self._plan:
                server = await self._listen(entry, port)
                if server is not None:
                    # Every address listens on the port the first one got (port=0 case).
                    port = server.sockets[0].getsockname()[1]
        except EpmdError:
            await self._close_listeners()
            raise
        self._port = port
        self.capacity = connection_capacity(self.max_connections, _fd_soft_limit())
        self.evicted = 0
        log.info("EPMD listening on %s port %d, at most %d connections%s",
                 ", ".join(self.addresses), port, self.capacity,
                 " (relaxed command check)" if self.relaxed_command_check else "")

    async def _listen(self, entry: ListenAddress, port: int) -> asyncio.Server | None:
        try:
            server = await asyncio.get_running_loop().create_server(
                lambda: _Connection(self, next(self._ids)), host=entry.host, port=port,
                family=socket.AF_INET6 if entry.ipv6 else socket.AF_INET,
                reuse_address=True, backlog=LISTEN_BACKLOG,
            )
        except OSError as exc:
            if not entry.required and (exc.errno in _ABSENT
                                       or isinstance(exc, socket.gaierror)):
                log.info("not listening on %s: %s", entry.host, exc)
                return None
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            if exc.errno == errno.EADDRINUSE:
                why += " (is another EPMD running?)"
            raise EpmdError(f"cannot listen on {entry.host} port {port}: {why}") from exc
        self._servers.append(server)
        self.addresses.append(entry.host)
        return server

    async def stop(self) -> None:
        """Stop listening and close every connection (which unregisters every node)."""
        await self._close_listeners()
        for conn in list(self._conns.values()):
            conn.close()
            self._forget(conn)  # now, not when connection_lost runs: stop() leaves no node
        if self._stopped is not None and not self._stopped.is_set():
            self._stopped.set()
            log.info("EPMD on port %s stopped", self._port)

    def request_stop(self) -> None:
        """Schedule ``stop()`` (for callbacks that cannot await, e.g. signal handlers)."""
        if self._stop_task is None:
            self._stop_task = asyncio.get_running_loop().create_task(self.stop())

    async def wait_for(self, predicate: Callable[[Registry], bool]) -> None:
        """Return once ``predicate(self.registry)`` holds (checked after every change of
        registrations or connections).

        Registrations end when a socket closes, which the server learns asynchronously;
        this lets callers wait for that without polling. Bound it with ``asyncio.timeout``.
        """
        if predicate(self.registry):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            await fut
        finally:
            self._waiters.remove(entry)

    def _changed(self) -> None:
        for predicate, fut in self._waiters:
            if not fut.done() and predicate(self.registry):
                fut.set_result(None)

    async def serve_forever(self) -> None:
        """Wait until the server stops (``stop()`` or an honoured KILL_REQ)."""
        if self._stopped is None:
            raise EpmdError("EPMD server not started")
        await self._stopped.wait()

    async def __aenter__(self) -> EpmdServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _close_listeners(self) -> None:
        servers, self._servers = self._servers, []
        self.addresses = []
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()

    # -- called by connections -------------------------------------------------------------

    def _accept(self, conn: _Connection) -> bool:
        if len(self._conns) >= self.capacity and not self._make_room(conn):
            return False
        if self._full and len(self._conns) < self.capacity * 0.9:  # hysteresis: log less
            self._full = False
            log.info("below %d connections again (%d evicted so far)", self.capacity,
                     self.evicted)
        self._conns[conn.ident] = conn
        self._evictable[conn.ident] = conn
        self._changed()
        return True

    def _make_room(self, newcomer: _Connection) -> bool:
        """Close the oldest connection that is not a live registration; False if none."""
        if not self._full:  # warn once per overload, not once per connection
            self._full = True
            log.warning("%d connections open (the limit): closing the oldest that are not "
                        "registrations to make room (first for %s)", len(self._conns),
                        newcomer.peer)
        if not self._evictable:
            log.log(logging.DEBUG if self._refusing else logging.WARNING,
                    "all %d connections are registrations: refusing %s", len(self._conns),
                    newcomer.peer)
            self._refusing = True
            return False
        self._refusing = False
        _, victim = self._evictable.popitem(last=False)
        log.debug("conn %d from %s (%s) evicted for %s", victim.ident, victim.peer,
                  victim.state.value, newcomer.peer)
        victim.abort()
        self._forget(victim)
        self.evicted += 1
        return True

    def _forget(self, conn: _Connection) -> None:
        if self._conns.pop(conn.ident, None) is None:
            return
        self._evictable.pop(conn.ident, None)
        reg = self.registry.unregister_conn(conn.ident)
        if reg is not None:
            log.info("unregistered %s (port %d, creation %d)", reg.request.name,
                     reg.request.port, reg.creation)
        self._changed()

    def _handle(self, conn: _Connection, request: Request) -> None:
        match request:
            case Alive2Req():
                self._alive2(conn, request)
            case PortPlease2Req():
                reg = self.registry.lookup(request.name)
                conn.write(encode_port2_resp(Port2Error() if reg is None else reg.address))
            case NamesReq():
                conn.write(encode_names_resp(NamesResp(self.port, tuple(self.registry.names()))))
            case DumpReq():
                if self._local_only(conn, "DUMP_REQ"):
                    active, unused = self.registry.dump()
                    conn.write(encode_dump_resp(DumpResp(self.port, tuple(active),
                                                         tuple(unused))))
            case KillReq():
                if self._local_only(conn, "KILL_REQ"):
                    self._kill(conn)
            case StopReq():
                if self._local_only(conn, "STOP_REQ"):
                    self._stop_node(conn, request.name)

    def _local_only(self, conn: _Connection, what: str) -> bool:
        if not conn.local_peer:
            log.info("conn %d: %s from non-local address %s ignored", conn.ident, what,
                     conn.peer)
        return conn.local_peer

    def _alive2(self, conn: _Connection, req: Alive2Req) -> None:
        if not self._local_only(conn, "ALIVE2_REQ"):
            return
        reg = self.registry.register(req, conn.ident, conn.fd)
        extended = req.highest_version >= 6
        if reg is None:
            log.info("refused registration of %r (port %d) from %s", req.name, req.port,
                     conn.peer)
            conn.write(encode_alive2_resp(Alive2Resp(1, REFUSED_CREATION, extended)))
            # As epmd: a refused ALIVE2 keeps its socket open (here until the deadline).
            conn.state = ConnState.REFUSED
            return
        log.info("registered %s at port %d, creation %d (versions %d..%d, type %d)",
                 req.name, req.port, reg.creation, req.lowest_version,
                 req.highest_version, req.node_type)
        conn.write(encode_alive2_resp(Alive2Resp(0, reg.creation, extended)))
        conn.keep()
        self._evictable.pop(conn.ident, None)
        self._changed()

    def _kill(self, conn: _Connection) -> None:
        if len(self.registry) and not self.relaxed_command_check:
            log.info("KILL_REQ refused: %d nodes registered", len(self.registry))
            conn.write(encode_kill_resp(KillResp(ok=False)))
            return
        log.info("KILL_REQ: stopping")
        conn.write(encode_kill_resp(KillResp(ok=True)))
        conn.close()
        self.request_stop()

    def _stop_node(self, conn: _Connection, name: str) -> None:
        if not self.relaxed_command_check:
            log.info("STOP_REQ %r ignored: no relaxed command check", name)
            return
        reg = self.registry.unregister(name)
        if reg is not None:
            log.info("STOP_REQ: unregistered %s", name)
            self._changed()
            owner = self._conns.get(reg.conn)
            if owner is not None:
                owner.close()
        conn.write(encode_stop_resp(StopResp(existed=reg is not None)))
