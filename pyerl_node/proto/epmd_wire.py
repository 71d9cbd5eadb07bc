"""EPMD wire format: every request and response as pure encode/decode functions.

Implements docs/protocol/distribution.md section 2 (EPMD). This is the only module that knows EPMD
bytes; the asyncio client (``pyerl_node.runtime.epmd_client``) and the server (``epmd``) both use
it. Sans-I/O: no sockets, no clock.

Requests travel as ``Length:16, Body``; responses have no length prefix. Two parsing styles
follow from that:

* Requests (server side): ``RequestParser`` takes bytes as they arrive and yields at most one
  ``Request`` per connection, as real epmd does. It bounds its buffer with epmd's own limit
  (a body of ``MAX_REQUEST_BODY`` bytes) and rejects a length of 0 or one that is too large.
* Responses (client side): ``parse_alive2_resp`` and ``parse_port2_resp`` look at what has
  been received so far and return ``None`` while more bytes are needed. NAMES, DUMP, KILL and
  STOP replies end when epmd closes the socket, so their decoders take the complete reply.

Bad bytes from the peer raise ``RemoteProtocolError``; values that cannot be encoded raise
``LocalProtocolError``. Name rules (at most 255 characters, no NUL, valid UTF-8) are those
of epmd_srv.c; node names are ``str`` here and UTF-8 on the wire.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import IntEnum

from pyerl_node.proto.errors import LocalProtocolError, RemoteProtocolError

DEFAULT_EPMD_PORT = 4369

# epmd_int.h: MAXSYMLEN = 255 * 4 (255 UTF-8 characters), INBUF_SIZE = 3 * MAXSYMLEN. A
# request whose length prefix plus body reaches INBUF_SIZE is refused by closing the socket.
MAX_NAME_CHARS = 255
MAX_SYM_BYTES = 255 * 4
MAX_REQUEST_BODY = 3 * MAX_SYM_BYTES - 3


class RequestCode(IntEnum):
    """First byte of a request body."""

    ALIVE2_REQ = 120  # 'x'
    PORT_PLEASE2_REQ = 122  # 'z'
    NAMES_REQ = 110  # 'n'
    DUMP_REQ = 100  # 'd'
    KILL_REQ = 107  # 'k'
    STOP_REQ = 115  # 's'


class ResponseCode(IntEnum):
    """First byte of the responses that have one."""

    ALIVE2_X_RESP = 118  # 'v', 32-bit creation (node announced HighestVsn >= 6)
    PORT2_RESP = 119  # 'w'
    ALIVE2_RESP = 121  # 'y', 16-bit creation


class NodeType(IntEnum):
    """The node types in ALIVE2_REQ/PORT2_RESP; epmd only echoes them, any byte passes."""

    NORMAL = 77  # 'M'
    HIDDEN = 72  # 'H'


PROTOCOL_TCP_IPV4 = 0
# ALIVE2_RESP of a refused registration carries this meaningless creation (epmd_srv.c).
REFUSED_CREATION = 99


# --- requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alive2Req:
    """Register ``name`` -> ``port``; the registration lasts as long as the connection."""

    port: int
    name: str
    node_type: int = NodeType.NORMAL
    protocol: int = PROTOCOL_TCP_IPV4
    highest_version: int = 6
    lowest_version: int = 6
    extra: bytes = b""


@dataclass(frozen=True)
class PortPlease2Req:
    """Ask for the port of ``name`` (the alive part, no ``@host``)."""

    name: str


@dataclass(frozen=True)
class NamesReq:
    """List the registered names."""


@dataclass(frozen=True)
class DumpReq:
    """List registered and remembered (unregistered) names with ports and fds."""


@dataclass(frozen=True)
class KillReq:
    """Ask epmd to exit."""


@dataclass(frozen=True)
class StopReq:
    """Ask epmd to drop the registration of ``name`` (honoured only when relaxed)."""

    name: str


Request = Alive2Req | PortPlease2Req | NamesReq | DumpReq | KillReq | StopReq


# --- responses ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alive2Resp:
    """Answer to ALIVE2_REQ. ``extended``: ALIVE2_X_RESP (32-bit creation) vs ALIVE2_RESP."""

    result: int
    creation: int
    extended: bool = True

    @property
    def ok(self) -> bool:
        return self.result == 0


@dataclass(frozen=True)
class NodeAddress:
    """A successful PORT2_RESP: where a node listens and which versions it speaks."""

    port: int
    node_type: int
    protocol: int
    highest_version: int
    lowest_version: int
    name: str
    extra: bytes = b""


@dataclass(frozen=True)
class Port2Error:
    """PORT2_RESP with a non-zero result: the name is not registered."""

    result: int = 1


Port2Resp = NodeAddress | Port2Error


@dataclass(frozen=True)
class NamesResp:
    """NAMES reply: epmd's own port and (name, port) in epmd's order (newest first)."""

    epmd_port: int
    names: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class DumpEntry:
    name: str
    port: int
    fd: int


@dataclass(frozen=True)
class DumpResp:
    """DUMP reply: active registrations, then remembered unregistered names."""

    epmd_port: int
    active: tuple[DumpEntry, ...]
    unused: tuple[DumpEntry, ...] = ()


@dataclass(frozen=True)
class KillResp:
    """KILL reply: ``OK`` (epmd exits) or ``NO`` (nodes alive, command check not relaxed)."""

    ok: bool


@dataclass(frozen=True)
class StopResp:
    """STOP reply. epmd sends ``NOEXIST`` then ``STOPPED`` for an unknown name."""

    existed: bool


# --- helpers --------------------------------------------------------------------------------


def _u16(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise LocalProtocolError(f"{what} must fit in 16 bits, got {value}")
    return value.to_bytes(2, "big")


def _u8(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFF:
        raise LocalProtocolError(f"{what} must fit in 8 bits, got {value}")
    return bytes((value,))


def _encode_name(name: str) -> bytes:
    """The UTF-8 bytes of a node name that epmd would accept; LocalProtocolError otherwise."""
    if not name:
        raise LocalProtocolError("node name is empty")
    if len(name) > MAX_NAME_CHARS:
        raise LocalProtocolError(
            f"node name has {len(name)} characters, EPMD allows {MAX_NAME_CHARS}"
        )
    if "\x00" in name:
        raise LocalProtocolError(f"node name {name!r} contains a NUL character")
    try:
        return name.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise LocalProtocolError(f"node name {name!r} is not encodable as UTF-8") from exc


def _decode_name(raw: bytes, what: str) -> str:
    if b"\x00" in raw:
        raise RemoteProtocolError(f"{what}: node name contains a NUL byte")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"{what}: node name is not valid UTF-8: {raw!r}") from exc


def _frame(body: bytes) -> bytes:
    if len(body) > MAX_REQUEST_BODY:
        raise LocalProtocolError(
            f"EPMD request of {len(body)} bytes exceeds epmd's limit of {MAX_REQUEST_BODY}"
        )
    return len(body).to_bytes(2, "big") + body


def _node_entry(node: Alive2Req | NodeAddress) -> bytes:
    """The node description ALIVE2_REQ sends and PORT2_RESP returns: one layout, both ways."""
    name = _encode_name(node.name)
    return b"".join((
        _u16(node.port, "port"),
        _u8(node.node_type, "node type"),
        _u8(node.protocol, "protocol"),
        _u16(node.highest_version, "highest version"),
        _u16(node.lowest_version, "lowest version"),
        _u16(len(name), "name length"),
        name,
        _u16(len(node.extra), "extra length"),
        node.extra,
    ))


# --- request encoding and decoding ----------------------------------------------------------


def encode_request(req: Request) -> bytes:
    """The complete request, 2-byte length prefix included."""
    match req:
        case Alive2Req():
            body = bytes((RequestCode.ALIVE2_REQ,)) + _node_entry(req)
        case PortPlease2Req():
            body = bytes((RequestCode.PORT_PLEASE2_REQ,)) + _encode_name(req.name)
        case StopReq():
            body = bytes((RequestCode.STOP_REQ,)) + _encode_name(req.name)
        case NamesReq():
            body = bytes((RequestCode.NAMES_REQ,))
        case DumpReq():
            body = bytes((RequestCode.DUMP_REQ,))
        case KillReq():
            body = bytes((RequestCode.KILL_REQ,))
    return _frame(body)


def _decode_alive2(body: bytes) -> Alive2Req:
    # Checks in epmd_srv.c order. Bytes after the extra field are ignored, as epmd does.
    if len(body) <= 13:
        raise RemoteProtocolError(f"ALIVE2_REQ too short ({len(body)} bytes)")
    port, node_type, protocol, high, low, nlen = struct.unpack_from(">HBBHHH", body, 1)
    if nlen + 13 > len(body):
        raise RemoteProtocolError(
            f"ALIVE2_REQ name length {nlen} exceeds the {len(body)}-byte request"
        )
    (elen,) = struct.unpack_from(">H", body, 11 + nlen)
    if elen + nlen + 13 > len(body):
        raise RemoteProtocolError(
            f"ALIVE2_REQ extra length {elen} exceeds the {len(body)}-byte request"
        )
    name = _decode_name(body[11 : 11 + nlen], "ALIVE2_REQ")
    extra = body[13 + nlen : 13 + nlen + elen]
    return Alive2Req(port, name, node_type, protocol, high, low, bytes(extra))


def _decode_name_request(body: bytes, what: str) -> str:
    raw = body[1:]
    if raw.endswith(b"\x00"):  # very old clients NUL-terminate; epmd strips one NUL
        raw = raw[:-1]
    if not raw:
        raise RemoteProtocolError(f"{what} without a node name")
    name = _decode_name(raw, what)
    if len(name) > MAX_NAME_CHARS:
        raise RemoteProtocolError(f"{what}: node name longer than {MAX_NAME_CHARS} characters")
    return name


def decode_request(body: bytes) -> Request:
    """Decode one request body (without its length prefix)."""
    if not body:
        raise RemoteProtocolError("empty EPMD request")
    code = body[0]
    if code == RequestCode.ALIVE2_REQ:
        return _decode_alive2(body)
    if code == RequestCode.PORT_PLEASE2_REQ:
        return PortPlease2Req(_decode_name_request(body, "PORT_PLEASE2_REQ"))
    if code == RequestCode.STOP_REQ:
        return StopReq(_decode_name_request(body, "STOP_REQ"))
    simple: dict[int, Request] = {
        RequestCode.NAMES_REQ: NamesReq(),
        RequestCode.DUMP_REQ: DumpReq(),
        RequestCode.KILL_REQ: KillReq(),
    }
    if code in simple:
        return simple[code]
    raise RemoteProtocolError(f"unknown EPMD request code {code}")


class RequestParser:
    """Incremental parser for the single request a connection carries.

    ``receive_data`` buffers at most ``2 + MAX_REQUEST_BODY`` bytes; ``next_request`` returns
    the request once complete, or ``None`` while more bytes are needed. More bytes than the
    announced length, a zero length or a too large one raise ``RemoteProtocolError``: epmd
    closes such connections.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._want: int | None = None

    def receive_data(self, data: bytes) -> None:
        data = self._take(data, 2)
        if self._want is None and len(self._buf) == 2:
            length = int.from_bytes(self._buf, "big")
            if length == 0 or length > MAX_REQUEST_BODY:
                raise RemoteProtocolError(f"invalid EPMD request length {length}")
            self._want = 2 + length
        if self._want is not None:
            data = self._take(data, self._want)
        if data:
            expected = "?" if self._want is None else self._want - 2
            raise RemoteProtocolError(
                f"{len(data)} bytes beyond the announced request length {expected}")

    def _take(self, data: bytes, upto: int) -> bytes:
        """Buffer what fits below ``upto`` bytes; return the rest."""
        room = max(upto - len(self._buf), 0)
        self._buf += data[:room]
        return data[room:]

    def next_request(self) -> Request | None:
        if self._want is None or len(self._buf) < self._want:
            return None
        return decode_request(bytes(self._buf[2:]))

    @property
    def buffered(self) -> int:
        return len(self._buf)


# --- response encoding ----------------------------------------------------------------------


def encode_alive2_resp(resp: Alive2Resp) -> bytes:
    if resp.extended:
        if not 0 <= resp.creation <= 0xFFFFFFFF:
            raise LocalProtocolError(f"creation must fit in 32 bits, got {resp.creation}")
        return struct.pack(">BBI", ResponseCode.ALIVE2_X_RESP, resp.result, resp.creation)
    return (
        bytes((ResponseCode.ALIVE2_RESP,))
        + _u8(resp.result, "result")
        + _u16(resp.creation, "creation")
    )


def encode_port2_resp(resp: Port2Resp) -> bytes:
    if isinstance(resp, Port2Error):
        return bytes((ResponseCode.PORT2_RESP,)) + _u8(resp.result, "result")
    return bytes((ResponseCode.PORT2_RESP, 0)) + _node_entry(resp)


def encode_names_resp(resp: NamesResp) -> bytes:
    """Port, then ``name N at port P\\n`` per node: the text erl_epmd and ``epmd -names`` parse."""
    lines = (b"name %s at port %d\n" % (_encode_name(n), p) for n, p in resp.names)
    return resp.epmd_port.to_bytes(4, "big") + b"".join(lines)


def encode_dump_resp(resp: DumpResp) -> bytes:
    # epmd writes each line with its terminating NUL (snprintf length + 1).
    active = (
        b"active name     <%s> at port %d, fd = %d\n\x00" % (_encode_name(e.name), e.port, e.fd)
        for e in resp.active
    )
    unused = (
        b"old/unused name <%s>, port = %d, fd = %d \n\x00" % (_encode_name(e.name), e.port, e.fd)
        for e in resp.unused
    )
    return resp.epmd_port.to_bytes(4, "big") + b"".join(active) + b"".join(unused)


def encode_kill_resp(resp: KillResp) -> bytes:
    return b"OK" if resp.ok else b"NO"


def encode_stop_resp(resp: StopResp) -> bytes:
    return b"STOPPED" if resp.existed else b"NOEXISTSTOPPED"


# --- response decoding ----------------------------------------------------------------------


def parse_alive2_resp(data: bytes) -> Alive2Resp | None:
    """ALIVE2_RESP or ALIVE2_X_RESP from the bytes received so far; ``None``: need more."""
    if not data:
        return None
    if data[0] == ResponseCode.ALIVE2_X_RESP:
        size, fmt, extended = 6, ">BI", True
    elif data[0] == ResponseCode.ALIVE2_RESP:
        size, fmt, extended = 4, ">BH", False
    else:
        raise RemoteProtocolError(f"expected ALIVE2_RESP (121) or ALIVE2_X_RESP (118), got "
                                  f"{data[:16]!r}")
    if len(data) < size:
        return None
    if len(data) > size:
        raise RemoteProtocolError(f"{len(data) - size} unexpected bytes after ALIVE2 response")
    result, creation = struct.unpack_from(fmt, data, 1)
    return Alive2Resp(result, creation, extended)


def parse_port2_resp(data: bytes) -> Port2Resp | None:
    """PORT2_RESP from the bytes received so far; ``None`` while incomplete."""
    if not data:
        return None
    if data[0] != ResponseCode.PORT2_RESP:
        raise RemoteProtocolError(f"expected PORT2_RESP (119), got {data[:16]!r}")
    if len(data) < 2:
        return None
    if data[1] != 0:
        if len(data) > 2:
            raise RemoteProtocolError("unexpected bytes after PORT2_RESP error")
        return Port2Error(data[1])
    if len(data) < 12:
        return None
    port, node_type, protocol, high, low, nlen = struct.unpack_from(">HBBHHH", data, 2)
    if len(data) < 14 + nlen:
        return None
    (elen,) = struct.unpack_from(">H", data, 12 + nlen)
    end = 14 + nlen + elen
    if len(data) < end:
        return None
    if len(data) > end:
        raise RemoteProtocolError(f"{len(data) - end} unexpected bytes after PORT2_RESP")
    name = _decode_name(data[12 : 12 + nlen], "PORT2_RESP")
    return NodeAddress(port, node_type, protocol, high, low, name, bytes(data[14 + nlen : end]))


def _epmd_port_and_text(data: bytes, what: str) -> tuple[int, bytes]:
    if len(data) < 4:
        raise RemoteProtocolError(f"{what} shorter than its 4-byte port ({len(data)} bytes)")
    return int.from_bytes(data[:4], "big"), data[4:]


_NAMES_LINE = re.compile(rb"name (?P<name>[^ \n]+) at port (?P<port>[0-9]+)")


def decode_names_resp(data: bytes) -> NamesResp:
    """The complete NAMES reply (epmd closes after it). Lines that are not
    ``name N at port P`` are skipped, as erl_epmd does."""
    epmd_port, text = _epmd_port_and_text(data, "NAMES reply")
    names: list[tuple[str, int]] = []
    *lines, rest = text.split(b"\n")
    if rest:
        raise RemoteProtocolError(f"NAMES reply ends in an unterminated line {rest[:64]!r}")
    for line in lines:
        m = _NAMES_LINE.fullmatch(line)
        if m is not None:
            names.append((_decode_name(m["name"], "NAMES reply"), int(m["port"])))
    return NamesResp(epmd_port, tuple(names))


_DUMP_ACTIVE = re.compile(rb"active name     <(?P<name>[^>]*)> at port (?P<port>[0-9]+), "
                          rb"fd = (?P<fd>-?[0-9]+)\n")
_DUMP_UNUSED = re.compile(rb"old/unused name <(?P<name>[^>]*)>, port = (?P<port>[0-9]+), "
                          rb"fd = (?P<fd>-?[0-9]+) \n")


def decode_dump_resp(data: bytes) -> DumpResp:
    """The complete DUMP reply: NUL-terminated lines, active ones first."""
    epmd_port, text = _epmd_port_and_text(data, "DUMP reply")
    active: list[DumpEntry] = []
    unused: list[DumpEntry] = []
    *lines, rest = text.split(b"\x00")
    if rest:
        raise RemoteProtocolError(f"DUMP reply ends in an unterminated line {rest[:64]!r}")
    for line in lines:
        for pattern, into in ((_DUMP_ACTIVE, active), (_DUMP_UNUSED, unused)):
            m = pattern.fullmatch(line)
            if m is not None:
                name = _decode_name(m["name"], "DUMP reply")
                into.append(DumpEntry(name, int(m["port"]), int(m["fd"])))
                break
        else:
            raise RemoteProtocolError(f"unexpected DUMP line {line[:64]!r}")
    return DumpResp(epmd_port, tuple(active), tuple(unused))


def decode_kill_resp(data: bytes) -> KillResp:
    if data == b"OK":
        return KillResp(ok=True)
    if data == b"NO":
        return KillResp(ok=False)
    raise RemoteProtocolError(f"expected KILL reply OK or NO, got {data[:64]!r}")


def decode_stop_resp(data: bytes) -> StopResp:
    if data == b"STOPPED":
        return StopResp(existed=True)
    if data == b"NOEXISTSTOPPED":
        return StopResp(existed=False)
    raise RemoteProtocolError(f"expected STOP reply STOPPED or NOEXIST, got {data[:64]!r}")
