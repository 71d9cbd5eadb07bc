"""The Python EPMD server (epmd/) driven in-process by our client and by raw sockets:
epmd's behaviour for every request, and bad input that must only affect its own connection."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from epmd import EpmdServer
from epmd.server import _is_local_peer
from pyerl_node.proto.epmd_wire import (
    Alive2Req,
    NodeType,
    PortPlease2Req,
    encode_request,
    parse_alive2_resp,
)
from pyerl_node.proto.errors import (
    EpmdError,
    LocalProtocolError,
    NameInUse,
    NodeNotFound,
)
from pyerl_node.runtime import epmd_client

REPO = Path(__file__).resolve().parents[1]
WAIT = 5.0  # bound for every wait in this file


@pytest.fixture
async def server() -> AsyncIterator[EpmdServer]:
    async with EpmdServer(port=0, request_timeout=2.0) as srv:
        yield srv


async def exchange(port: int, data: bytes, *, close_write: bool = False,
                   host: str = "127.0.0.1") -> tuple[bytes, bool]:
    """Send raw bytes; return (everything read, whether the server closed the socket).

    "Not closed" means nothing more arrived for 0.3 s after the last byte.
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        if close_write:
            writer.write_eof()
        got = b""
        while True:
            try:
                async with asyncio.timeout(0.3):
                    chunk = await reader.read(4096)
            except TimeoutError:
                return got, False
            if not chunk:
                return got, True
            got += chunk
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def gone(server: EpmdServer, name: str) -> None:
    async with asyncio.timeout(WAIT):
        await server.wait_for(lambda reg: reg.lookup(name) is None)


# --- the client against the server ----------------------------------------------------------


async def test_register_lookup_names_dump(server: EpmdServer) -> None:
    p = server.port
    async with await epmd_client.register("alpha", 5001, epmd_port=p) as alpha:
        assert alpha.name == "alpha" and alpha.port == 5001 and alpha.creation >= 4
        beta = await epmd_client.register("beta", 5002, epmd_port=p, hidden=True)
        addr = await epmd_client.port_please("alpha", epmd_port=p)
        assert (addr.port, addr.node_type, addr.highest_version, addr.lowest_version,
                addr.extra) == (5001, NodeType.NORMAL, 6, 6, b"")
        assert (await epmd_client.port_please("beta", epmd_port=p)).node_type == NodeType.HIDDEN
        assert await epmd_client.names(epmd_port=p) == [("beta", 5002), ("alpha", 5001)]
        dump = await epmd_client.dump(epmd_port=p)
        assert dump.epmd_port == p
        assert [(e.name, e.port) for e in dump.active] == [("beta", 5002), ("alpha", 5001)]
        assert all(e.fd > 2 for e in dump.active)
        await beta.close()
        await beta.close()  # idempotent
        await gone(server, "beta")
        dump = await epmd_client.dump(epmd_port=p)
        assert [e.name for e in dump.unused] == ["beta"]
    await gone(server, "alpha")
    assert await epmd_client.names(epmd_port=p) == []


async def test_name_in_use_and_not_found(server: EpmdServer) -> None:
    p = server.port
    async with await epmd_client.register("dup", 5001, epmd_port=p):
        with pytest.raises(NameInUse, match=f"'dup'.*in use|127.0.0.1:{p}"):
            await epmd_client.register("dup", 5002, epmd_port=p)
        # The refused attempt did not disturb the registration.
        assert (await epmd_client.port_please("dup", epmd_port=p)).port == 5001
    with pytest.raises(NodeNotFound, match=f"'nobody'.*127.0.0.1:{p}"):
        await epmd_client.port_please("nobody", epmd_port=p)


async def test_creation_changes_on_reregistration(server: EpmdServer) -> None:
    p = server.port
    creations = []
    for _ in range(3):
        reg = await epmd_client.register("again", 5001, epmd_port=p)
        creations.append(reg.creation)
        await reg.close()
        await gone(server, "again")
    assert creations[1] == creations[0] + 1 and creations[2] == creations[1] + 1


async def test_old_node_gets_alive2_resp_with_small_creation(server: EpmdServer) -> None:
    req = encode_request(Alive2Req(5003, "old", highest_version=5, lowest_version=5))
    reply, closed = await exchange(server.port, req)
    resp = parse_alive2_resp(reply)
    assert resp is not None and not resp.extended and resp.ok and 1 <= resp.creation <= 3
    assert not closed


async def test_extra_is_echoed(server: EpmdServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(encode_request(Alive2Req(5004, "hid", NodeType.HIDDEN, 0, 6, 5, b"xyz")))
    assert (await reader.readexactly(6))[:2] == b"v\x00"
    addr = await epmd_client.port_please("hid", epmd_port=server.port)
    assert (addr.node_type, addr.highest_version, addr.lowest_version, addr.extra) == (
        72, 6, 5, b"xyz")
    writer.close()
    await writer.wait_closed()
    await gone(server, "hid")


async def test_bytes_on_a_registration_socket_unregister_it(server: EpmdServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(encode_request(Alive2Req(5001, "chatty")))
    assert (await reader.readexactly(6))[:2] == b"v\x00"
    writer.write(encode_request(PortPlease2Req("chatty")))  # epmd does not answer this
    async with asyncio.timeout(WAIT):
        assert await reader.read() == b""
    await gone(server, "chatty")
    writer.close()
    await writer.wait_closed()


async def test_refused_alive2_keeps_the_socket_open(server: EpmdServer) -> None:
    # As the real daemon: result 1, creation 99, socket stays open.
    raw = b"".join((b"x", (5001).to_bytes(2, "big"), b"M\x00\x00\x06\x00\x05",
                    (256).to_bytes(2, "big"), b"a" * 256, b"\x00\x00"))
    reply, closed = await exchange(server.port, len(raw).to_bytes(2, "big") + raw)
    assert (reply, closed) == (b"v\x01\x00\x00\x00c", False)
    assert await epmd_client.names(epmd_port=server.port) == []


async def test_registration_lost_when_server_stops() -> None:
    async with EpmdServer(port=0) as srv:
        reg = await epmd_client.register("lost", 5001, epmd_port=srv.port)
    async with asyncio.timeout(WAIT):
        await reg.wait_lost()
    assert len(srv.registry) == 0
    await reg.close()


# --- KILL and STOP ----------------------------------------------------------------------------


async def test_kill_refused_with_live_nodes_then_honoured() -> None:
    async with EpmdServer(port=0) as srv:
        p = srv.port
        reg = await epmd_client.register("alive", 5001, epmd_port=p)
        assert await epmd_client.kill(epmd_port=p) is False
        assert await epmd_client.names(epmd_port=p) == [("alive", 5001)]
        await reg.close()
        await gone(srv, "alive")
        assert await epmd_client.kill(epmd_port=p) is True
        async with asyncio.timeout(WAIT):
            await srv.serve_forever()
        with pytest.raises(EpmdError, match=f"cannot reach EPMD at 127.0.0.1:{p}"):
            await epmd_client.names(epmd_port=p)


async def test_relaxed_kill_with_live_nodes() -> None:
    async with EpmdServer(port=0, relaxed_command_check=True) as srv:
        reg = await epmd_client.register("alive", 5001, epmd_port=srv.port)
        assert await epmd_client.kill(epmd_port=srv.port) is True
        async with asyncio.timeout(WAIT):
            await srv.serve_forever()
            await reg.wait_lost()
        await reg.close()


async def test_stop_ignored_without_relaxed_check(server: EpmdServer) -> None:
    async with await epmd_client.register("keep", 5001, epmd_port=server.port):
        with pytest.raises(EpmdError, match="relaxed command check"):
            await epmd_client.stop("keep", epmd_port=server.port)
        assert server.registry.lookup("keep") is not None


async def test_relaxed_stop() -> None:
    async with EpmdServer(port=0, relaxed_command_check=True) as srv:
        reg = await epmd_client.register("victim", 5001, epmd_port=srv.port)
        assert await epmd_client.stop("victim", epmd_port=srv.port) is True
        async with asyncio.timeout(WAIT):
            await reg.wait_lost()  # its registration socket was closed
        assert await epmd_client.names(epmd_port=srv.port) == []
        assert await epmd_client.stop("victim", epmd_port=srv.port) is False
        await reg.close()


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"garbage!",                                  # length 0x6761 > limit
    b"\x00\x00",                                  # length 0
    b"\xff\xff" + b"x" * 100,                     # length 65535
    b"\x00\x01Q",                                 # unknown request code
    b"\x00\x02zab",                               # more bytes than announced
    b"\x00\x02z\x00",                              # PORT_PLEASE2 with an empty name
    b"\x00\x05zab\x00c",                          # NUL inside a PORT_PLEASE2 name
    b"\x00\x0ex\x00\x01M\x00\x00\x06\x00\x06\x00\x09ab\x00\x00",  # name length lies
])
async def test_malformed_requests_close_without_answer(server: EpmdServer, data: bytes) -> None:
    async with await epmd_client.register("bystander", 5001, epmd_port=server.port):
        assert await exchange(server.port, data) == (b"", True)
        # Everyone else is still served.
        assert (await epmd_client.port_please("bystander", epmd_port=server.port)).port == 5001


async def test_length_that_lies_and_client_closes(server: EpmdServer) -> None:
    assert await exchange(server.port, b"\x00\x64abc", close_write=True) == (b"", True)
    assert await epmd_client.names(epmd_port=server.port) == []


async def test_request_split_over_many_segments(server: EpmdServer) -> None:
    async with await epmd_client.register("split", 5001, epmd_port=server.port):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in encode_request(PortPlease2Req("split")):
            writer.write(bytes((byte,)))
            await writer.drain()
            await asyncio.sleep(0.005)  # separate segments
        async with asyncio.timeout(WAIT):
            reply = await reader.read()
        assert reply[:4] == b"w\x00" + (5001).to_bytes(2, "big")
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("said", [b"", b"\x00", b"\x00\x05z"])
async def test_silent_client_is_closed_after_request_timeout(said: bytes) -> None:
    async with EpmdServer(port=0, request_timeout=0.2) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(said)  # nothing, or an incomplete request; then silence
        async with asyncio.timeout(WAIT):
            assert await reader.read() == b""
            await srv.wait_for(lambda _: srv.connection_count == 0)
        writer.close()
        await writer.wait_closed()


async def test_a_thousand_concurrent_connections(server: EpmdServer) -> None:
    p = server.port
    async with await epmd_client.register("busy", 5001, epmd_port=p):
        # 1000 connections open at once, each with half a request...
        conns = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", p) for _ in range(1000)))
        request = encode_request(PortPlease2Req("busy"))
        for _, writer in conns:
            writer.write(request[:3])
        async with asyncio.timeout(WAIT):
            await server.wait_for(lambda _: server.connection_count >= 1001)
        # ...others are still served meanwhile...
        assert await epmd_client.names(epmd_port=p) == [("busy", 5001)]
        # ...and each of the 1000 gets its answer once it completes the request.
        for _, writer in conns:
            writer.write(request[3:])

        async def answer(reader: asyncio.StreamReader) -> bytes:
            return await reader.read()

        async with asyncio.timeout(30):
            replies = await asyncio.gather(*(answer(r) for r, _ in conns))
        assert all(r[:4] == b"w\x00" + (5001).to_bytes(2, "big") for r in replies)
        for _, writer in conns:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)


async def test_random_bytes_never_hurt_the_server(server: EpmdServer) -> None:
    rng = random.Random(20261126)
    p = server.port
    async with await epmd_client.register("steady", 5001, epmd_port=p):

        async def fuzz() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", p)
            try:
                for _ in range(rng.randint(1, 4)):
                    prefix = rng.choice([b"", b"\x00", b"\x00\x05", b"\x00\x0ex"])
                    writer.write(prefix + rng.randbytes(rng.randint(0, 40)))
                    await writer.drain()
                with contextlib.suppress(TimeoutError, ConnectionError):
                    async with asyncio.timeout(0.2):
                        await reader.read(100)
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

        await asyncio.gather(*(fuzz() for _ in range(300)))
        assert (await epmd_client.port_please("steady", epmd_port=p)).port == 5001
        async with asyncio.timeout(WAIT):
            await server.wait_for(lambda reg: server.connection_count == 1 and len(reg) == 1)


async def test_connection_limit() -> None:
    async with EpmdServer(port=0, max_connections=3) as srv:
        held = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(3)]
        async with asyncio.timeout(WAIT):
            await srv.wait_for(lambda _: srv.connection_count == 3)
        reply, closed = await exchange(srv.port, encode_request(PortPlease2Req("x")))
        assert (reply, closed) == (b"", True)
        for _, writer in held:
            writer.close()
            await writer.wait_closed()
        async with asyncio.timeout(WAIT):
            await srv.wait_for(lambda _: srv.connection_count == 0)
        assert await epmd_client.names(epmd_port=srv.port) == []


def test_local_peer_rule() -> None:
    assert _is_local_peer(("127.0.0.1", 1), ("127.0.0.1", 2))
    assert _is_local_peer(("127.3.4.5", 1), ("127.0.0.1", 2))
    assert _is_local_peer(("::1", 1, 0, 0), ("::1", 2, 0, 0))  # type: ignore[arg-type]
    assert _is_local_peer(("::ffff:127.0.0.1", 1), ("::", 2))
    assert _is_local_peer(("10.0.0.5", 1), ("10.0.0.5", 4369))  # the host's own address
    assert not _is_local_peer(("10.0.0.6", 1), ("10.0.0.5", 4369))
    assert not _is_local_peer(None, None)


# --- addresses, IPv6, CLI -------------------------------------------------------------------


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_ipv4_and_ipv6_on_one_port() -> None:
    if not _ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    async with EpmdServer(address="127.0.0.1,::1", port=0) as srv:
        reg = await epmd_client.register("six", 5001, host="::1", epmd_port=srv.port)
        assert reg.epmd_where == f"[::1]:{srv.port}"
        addr = await epmd_client.port_please("six", "127.0.0.1", epmd_port=srv.port)
        assert addr.port == 5001
        assert await epmd_client.names("::1", epmd_port=srv.port) == [("six", 5001)]
        await reg.close()


async def test_start_errors_are_epmd_errors(server: EpmdServer) -> None:
    with pytest.raises(EpmdError, match=str(server.port)):
        await EpmdServer(port=server.port, address="127.0.0.1").start()
    with pytest.raises(EpmdError, match="not started"):
        _ = EpmdServer().port


async def test_cli_runs_until_sigterm() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "epmd", "--port", str(port), "-v", env=env,
        stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(20):
            while b"EPMD listening" not in await proc.stderr.readline():
                pass
        async with await epmd_client.register("cli", 5001, epmd_port=port):
            assert await epmd_client.names(epmd_port=port) == [("cli", 5001)]
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            await proc.stderr.read()
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# --- client errors --------------------------------------------------------------------------


async def test_client_connection_refused_names_host_and_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EpmdError, match=f"127.0.0.1:{port}"):
        await epmd_client.port_please("x", epmd_port=port)
    with pytest.raises(EpmdError, match=f"127.0.0.1:{port}"):
        await epmd_client.register("x", 1, epmd_port=port)


@contextlib.asynccontextmanager
async def fake_epmd(reply: bytes) -> AsyncIterator[int]:
    """A TCP server on a free port that answers every request with ``reply`` and stays open."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read(100)
        writer.write(reply)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def test_client_timeout() -> None:
    async with fake_epmd(b"") as port:
        with pytest.raises(EpmdError, match=rf"127.0.0.1:{port} did not answer ALIVE2_REQ"):
            await epmd_client.register("x", 1, epmd_port=port, timeout=0.2)
        with pytest.raises(EpmdError, match=r"did not answer NAMES_REQ within 0\.2s"):
            await epmd_client.names(epmd_port=port, timeout=0.2)


async def test_client_garbage_reply() -> None:
    async with fake_epmd(b"HTTP/1.1 400 Bad Request\r\n") as port:
        with pytest.raises(EpmdError, match="bad ALIVE2_REQ reply"):
            await epmd_client.register("x", 1, epmd_port=port)
        with pytest.raises(EpmdError, match="bad PORT_PLEASE2_REQ reply"):
            await epmd_client.port_please("x", epmd_port=port)


async def test_client_rejects_bad_arguments_before_connecting() -> None:
    with pytest.raises(LocalProtocolError, match="alive part"):
        await epmd_client.port_please("a@host", epmd_port=1)
    with pytest.raises(LocalProtocolError, match="16 bits"):
        await epmd_client.register("a", 70000, epmd_port=1)


def test_default_epmd_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ERL_EPMD_PORT", raising=False)
    assert epmd_client.default_epmd_port() == 4369
    monkeypatch.setenv("ERL_EPMD_PORT", "4400")
    assert epmd_client.default_epmd_port() == 4400
    monkeypatch.setenv("ERL_EPMD_PORT", "nope")
    with pytest.raises(EpmdError, match="ERL_EPMD_PORT"):
        epmd_client.default_epmd_port()
