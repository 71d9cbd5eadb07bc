"""An asyncio EPMD server that behaves as OTP's epmd does (PROTOCOL.md section 2).

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
* Bounds: the parser never buffers more than one request (at most 3 KiB); a non-registered
  connection that does not complete its request within ``request_timeout`` is closed; above
  ``max_connections`` new connections are closed at once. One bad connection never affects
  the others.

Known differences from epmd, none reachable by BEAM nodes or the ``epmd`` tool: an ALIVE2
name that is not valid UTF-8 closes the connection without answer (epmd answers result 1);
an empty name is refused with result 1 (epmd registers ""); a name forgotten after 1000 other
unregistrations starts again from the clock.

Listens on 127.0.0.1 by default; pass several addresses (e.g. ``("127.0.0.1", "::1")``) for
IPv6 too. ``port=0`` picks a free port, shared by all addresses; ``server.port`` tells which.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import cast

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

log = logging.getLogger("epmd")

DEFAULT_REQUEST_TIMEOUT = 60.0  # epmd's CLOSE_TIMEOUT
DEFAULT_MAX_CONNECTIONS = 10_000


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


class _Connection(asyncio.Protocol):
    """One client connection: parse one request, answer it, close (or keep, for ALIVE2)."""

    def __init__(self, server: EpmdServer, ident: int) -> None:
        self._server = server
        self.ident = ident
        self._parser = RequestParser()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.registered = False  # an ALIVE2 was answered: keep the socket, watch for close
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
        if self.registered:
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
        self._cancel_timer()
        log.debug("conn %d: %s", self.ident, request)
        self._server._handle(self, request)
        if not self.registered:
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

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        log.debug("conn %d from %s: no complete request within %.1fs, closing",
                  self.ident, self.peer, self._server.request_timeout)
        self.close()


class EpmdServer:
    """The EPMD server. ``await start()`` / ``await stop()``, or ``async with``."""

    def __init__(
        self,
        address: str | Iterable[str] = "127.0.0.1",
        port: int = 4369,
        *,
        relaxed_command_check: bool = False,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(address, str):
            address = [a for a in address.replace(",", " ").split() if a]
        self.addresses = list(address) or ["127.0.0.1"]
        self._requested_port = port
        self.relaxed_command_check = relaxed_command_check
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.registry = Registry(clock)
        self._servers: list[asyncio.Server] = []
        self._conns: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        self._port: int | None = None
        self._stopped: asyncio.Event | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._waiters: list[tuple[Callable[[Registry], bool], asyncio.Future[None]]] = []
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
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._stop_task = None
        port = self._requested_port
        try:
            for addr in self.addresses:
                server = await loop.create_server(
                    lambda: _Connection(self, next(self._ids)), host=addr, port=port,
                    family=socket.AF_INET6 if ":" in addr else socket.AF_INET,
                    reuse_address=True, backlog=1024,
                )
                self._servers.append(server)
                # Every address listens on the port the first one got (port=0 case).
                port = server.sockets[0].getsockname()[1]
        except OSError as exc:
            await self._close_listeners()
            raise EpmdError(f"cannot listen on {addr} port {port}: {exc}") from exc
        self._port = port
        log.info("EPMD listening on %s port %d%s", ", ".join(self.addresses), port,
                 " (relaxed command check)" if self.relaxed_command_check else "")

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
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()

    # -- called by connections -------------------------------------------------------------

    def _accept(self, conn: _Connection) -> bool:
        if len(self._conns) >= self.max_connections:
            if not self._refusing:  # warn once per overload, not once per connection
                log.warning("%d connections open: refusing new ones (from %s first)",
                            len(self._conns), conn.peer)
            self._refusing = True
            return False
        self._refusing = False
        self._conns[conn.ident] = conn
        self._changed()
        return True

    def _forget(self, conn: _Connection) -> None:
        if self._conns.pop(conn.ident, None) is None:
            return
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
        else:
            log.info("registered %s at port %d, creation %d (versions %d..%d, type %d)",
                     req.name, req.port, reg.creation, req.lowest_version,
                     req.highest_version, req.node_type)
            conn.write(encode_alive2_resp(Alive2Resp(0, reg.creation, extended)))
            self._changed()
        # As epmd: even a refused ALIVE2 keeps its socket open until the client closes it.
        conn.registered = True

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
