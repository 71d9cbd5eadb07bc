"""asyncio EPMD client: register a node, look up a node's port, list names.

Runtime layer over ``pyerl_node.proto.epmd_wire`` (docs/protocol/distribution.md section 2, 2.8).
Each call opens its own TCP connection to EPMD, as BEAM's erl_epmd does:

* ``register`` sends ALIVE2_REQ (type 77, or 72 when hidden; versions 6..6) and keeps the
  socket in the returned ``Registration``: the node stays registered until ``close()``.
  A refusal raises ``NameInUse``.
* ``port_please`` sends PORT_PLEASE2_REQ and returns a ``NodeAddress``; ``NodeNotFound``
  when the name is not registered.
* ``names`` sends NAMES_REQ and reads the reply until EPMD closes the socket.
* ``dump``, ``kill`` and ``stop`` send the administrative requests of the ``epmd`` tool.

Every call is bounded by ``timeout`` seconds. Connection failures, timeouts and malformed
replies raise ``EpmdError`` (or its subclasses) naming the EPMD host and port.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar

from pyerl_node.proto.epmd_wire import (
    DEFAULT_EPMD_PORT,
    Alive2Req,
    DumpReq,
    DumpResp,
    KillReq,
    KillResp,
    NamesReq,
    NodeAddress,
    NodeType,
    Port2Error,
    Port2Resp,
    PortPlease2Req,
    Request,
    StopReq,
    StopResp,
    decode_dump_resp,
    decode_kill_resp,
    decode_names_resp,
    decode_stop_resp,
    encode_request,
    parse_alive2_resp,
    parse_port2_resp,
)
from pyerl_node.proto.errors import (
    EpmdError,
    LocalProtocolError,
    NameInUse,
    NodeNotFound,
    RemoteProtocolError,
)

__all__ = [
    "NodeAddress",
    "Registration",
    "default_epmd_port",
    "dump",
    "kill",
    "names",
    "port_please",
    "register",
    "stop",
]

# Replies that end at EOF (NAMES, DUMP) are capped: a real one is a few hundred bytes per node.
MAX_REPLY_BYTES = 4 * 1024 * 1024
_READ_CHUNK = 65536

T = TypeVar("T")


def default_epmd_port() -> int:
    """``$ERL_EPMD_PORT`` if set, else 4369."""
    value = os.environ.get("ERL_EPMD_PORT")
    if not value:
        return DEFAULT_EPMD_PORT
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise EpmdError(f"ERL_EPMD_PORT={value!r} is not a TCP port number")
    return port


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_alive_name(name: str) -> None:
    if "@" in name:
        raise LocalProtocolError(
            f"EPMD wants the alive part of a node name (before '@'), got {name!r}")


class _Exchange:
    """One EPMD connection: connect, send a request, read a reply (``_exchange`` times it)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.where = _where(host, port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect_and_send(self, request: bytes) -> None:
        try:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(request)
            await self.writer.drain()
        except OSError as exc:
            raise EpmdError(f"cannot reach EPMD at {self.where}: {exc}") from exc

    async def read_until(self, parse: Callable[[bytes], T | None], what: str) -> T:
        """Read until ``parse`` returns a value; EOF before that is an error."""
        assert self.reader is not None
        data = bytearray()
        while True:
            try:
                chunk = await self.reader.read(_READ_CHUNK)
            except OSError as exc:
                raise EpmdError(f"EPMD at {self.where} failed during {what}: {exc}") from exc
            if not chunk:
                raise EpmdError(f"EPMD at {self.where} closed the connection before "
                                f"answering {what} (got {len(data)} bytes)")
            data += chunk
            try:
                result = parse(bytes(data))
            except RemoteProtocolError as exc:
                raise EpmdError(f"bad {what} reply from EPMD at {self.where}: {exc}") from exc
            if result is not None:
                return result

    async def read_to_eof(self, what: str) -> bytes:
        assert self.reader is not None
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                chunk = await self.reader.read(_READ_CHUNK)
            except OSError as exc:
                raise EpmdError(f"EPMD at {self.where} failed during {what}: {exc}") from exc
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_REPLY_BYTES:
                raise EpmdError(f"{what} reply from EPMD at {self.where} exceeds "
                                f"{MAX_REPLY_BYTES} bytes")
            chunks.append(chunk)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.close()
            self.writer = None

    def detach(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        assert self.reader is not None and self.writer is not None
        pair = (self.reader, self.writer)
        self.writer = None
        return pair


class Registration:
    """A live EPMD registration; the socket stays open until ``close()``."""

    def __init__(self, name: str, port: int, creation: int, *, epmd_where: str,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.name = name
        self.port = port
        self.creation = creation
        self.epmd_where = epmd_where
        self._reader = reader
        self._writer = writer

    def __repr__(self) -> str:
        return (f"Registration(name={self.name!r}, port={self.port}, "
                f"creation={self.creation}, epmd={self.epmd_where})")

    @property
    def closed(self) -> bool:
        return self._writer.is_closing()

    async def wait_lost(self) -> None:
        """Return when EPMD closes the registration socket (EPMD stopped or STOP_REQ)."""
        try:
            while await self._reader.read(_READ_CHUNK):
                pass  # EPMD never sends anything on this socket
        except OSError:
            pass

    async def close(self) -> None:
        """Unregister: close the socket. Idempotent."""
        if self._writer.is_closing():
            return
        self._writer.close()
        try:
            async with asyncio.timeout(5.0):
                await self._writer.wait_closed()
        except (OSError, TimeoutError):
            self._writer.transport.abort()

    async def __aenter__(self) -> Registration:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _exchange(
    request: Request,
    what: str,
    *,
    host: str,
    epmd_port: int | None,
    timeout: float,
    body: Callable[[_Exchange], Awaitable[T]],
) -> T:
    """Connect, send ``request``, run ``body`` on the connection, all within ``timeout``.

    The connection is closed afterwards unless ``body`` detached it.
    """
    data = encode_request(request)  # bad arguments fail here, before any I/O
    exchange = _Exchange(host, default_epmd_port() if epmd_port is None else epmd_port)
    try:
        async with asyncio.timeout(timeout):
            await exchange.connect_and_send(data)
            return await body(exchange)
    except TimeoutError as exc:
        raise EpmdError(f"EPMD at {exchange.where} did not answer {what} within "
                        f"{timeout:g}s") from exc
    finally:
        exchange.close()


async def register(
    name: str,
    port: int,
    *,
    host: str = "127.0.0.1",
    epmd_port: int | None = None,
    hidden: bool = False,
    timeout: float = 5.0,
) -> Registration:
    """Register ``name`` (alive part) as listening on ``port``; keep the result open."""
    _check_alive_name(name)
    request = Alive2Req(port, name, NodeType.HIDDEN if hidden else NodeType.NORMAL)

    async def body(ex: _Exchange) -> Registration:
        resp = await ex.read_until(parse_alive2_resp, "ALIVE2_REQ")
        if not resp.ok:
            raise NameInUse(f"EPMD at {ex.where} refused to register {name!r} "
                            f"(result {resp.result}): the name is in use")
        reader, writer = ex.detach()
        return Registration(name, port, resp.creation, epmd_where=ex.where, reader=reader,
                            writer=writer)

    return await _exchange(request, "ALIVE2_REQ", host=host, epmd_port=epmd_port,
                           timeout=timeout, body=body)


async def port_please(
    name: str,
    host: str = "127.0.0.1",
    *,
    epmd_port: int | None = None,
    timeout: float = 5.0,
) -> NodeAddress:
    """Where node ``name`` (alive part) on ``host`` listens; ``NodeNotFound`` if unknown."""
    _check_alive_name(name)

    async def body(ex: _Exchange) -> NodeAddress:
        resp: Port2Resp = await ex.read_until(parse_port2_resp, "PORT_PLEASE2_REQ")
        if isinstance(resp, Port2Error):
            raise NodeNotFound(f"node {name!r} is not registered with EPMD at {ex.where}")
        return resp

    return await _exchange(PortPlease2Req(name), "PORT_PLEASE2_REQ", host=host,
                           epmd_port=epmd_port, timeout=timeout, body=body)


async def _read_reply(
    request: Request, what: str, decode: Callable[[bytes], T], *, host: str,
    epmd_port: int | None, timeout: float, silence: str = "",
) -> T:
    """Requests whose reply ends when EPMD closes the socket (NAMES, DUMP, KILL, STOP)."""

    async def body(ex: _Exchange) -> T:
        data = await ex.read_to_eof(what)
        if not data:
            raise EpmdError(f"EPMD at {ex.where} closed the connection without answering "
                            f"{what}{silence}")
        try:
            return decode(data)
        except RemoteProtocolError as exc:
            raise EpmdError(f"bad {what} reply from EPMD at {ex.where}: {exc}") from exc

    return await _exchange(request, what, host=host, epmd_port=epmd_port, timeout=timeout,
                           body=body)


async def names(
    host: str = "127.0.0.1", *, epmd_port: int | None = None, timeout: float = 5.0
) -> list[tuple[str, int]]:
    """The (name, port) pairs registered with EPMD on ``host``, newest first."""
    resp = await _read_reply(NamesReq(), "NAMES_REQ", decode_names_resp, host=host,
        epmd_port=epmd_port, timeout=timeout)
    return list(resp.names)


async def dump(
    host: str = "127.0.0.1", *, epmd_port: int | None = None, timeout: float = 5.0
) -> DumpResp:
    """EPMD's DUMP listing (active and remembered names, with fds). Local EPMD only."""
    return await _read_reply(DumpReq(), "DUMP_REQ", decode_dump_resp, host=host,
        epmd_port=epmd_port, timeout=timeout)


async def kill(
    host: str = "127.0.0.1", *, epmd_port: int | None = None, timeout: float = 5.0
) -> bool:
    """Ask EPMD to exit; False if it refuses because nodes are registered."""
    resp: KillResp = await _read_reply(KillReq(), "KILL_REQ", decode_kill_resp, host=host,
        epmd_port=epmd_port, timeout=timeout)
    return resp.ok


async def stop(
    name: str, host: str = "127.0.0.1", *, epmd_port: int | None = None, timeout: float = 5.0
) -> bool:
    """Ask EPMD to drop ``name``'s registration; False if it was not registered.

    EPMD answers only when started with relaxed command check; otherwise ``EpmdError``.
    """
    _check_alive_name(name)
    resp: StopResp = await _read_reply(
        StopReq(name), "STOP_REQ", decode_stop_resp, host=host, epmd_port=epmd_port,
        timeout=timeout, silence=" (EPMD honours STOP only with relaxed command check)")
    return resp.existed
