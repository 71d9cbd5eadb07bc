"""The Python EPMD server (epmd/) driven in-process by our client and by raw sockets:
epmd's behaviour for every request, bad input that must only affect its own connection, the
deadlines and eviction that keep a flood from locking nodes out; and the daemon
(``python -m epmd``: options, detaching, addresses) with ``ensure_epmd``, which starts it."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import epmd.server as epmd_server
from epmd import EpmdServer
from epmd.addresses import ListenAddress, listen_plan, split_address_list
from epmd.daemonize import Readiness
from epmd.server import FD_HEADROOM, _is_local_peer, connection_capacity
from pyerl_node.proto.epmd_wire import (
    Alive2Req,
    NamesReq,
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
from pyerl_node.runtime.epmd_daemon import ensure_epmd, epmd_accepts
from tests.conftest import free_port

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


# --- hardening: deadlines, eviction, descriptor limits ---------------------------------------


async def hold(port: int, data: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An open connection that has sent ``data`` (maybe nothing)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if data:
        writer.write(data)
        await writer.drain()
    return reader, writer


async def register_raw(port: int, name: str) -> tuple[asyncio.StreamReader,
                                                      asyncio.StreamWriter]:
    """A registration made over a raw socket (its reply checked): closing it unregisters."""
    reader, writer = await hold(port, encode_request(Alive2Req(5001, name)))
    async with asyncio.timeout(WAIT):
        assert (await reader.readexactly(6))[:2] == b"v\x00"
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server closes (or resets) the connection within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def close_all(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in conns:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)


async def test_refused_alive2_is_closed_at_the_deadline() -> None:
    async with EpmdServer(port=0, request_timeout=0.3) as srv:
        held = await register_raw(srv.port, "taken")
        reader, writer = await hold(srv.port, encode_request(Alive2Req(5002, "taken")))
        async with asyncio.timeout(WAIT):
            assert await reader.readexactly(6) == b"v\x01\x00\x00\x00c"
        assert not await closed_by_server(reader, 0.1)  # open for a while, as with epmd...
        assert await closed_by_server(reader, WAIT)  # ...but not for ever
        reg = srv.registry.lookup("taken")
        assert reg is not None and reg.request.port == 5001
        await close_all([held, (reader, writer)])


async def test_registrations_have_no_deadline() -> None:
    async with EpmdServer(port=0, request_timeout=0.2) as srv:
        reg = await register_raw(srv.port, "lasting")
        silent = await hold(srv.port)
        assert await closed_by_server(silent[0], WAIT)  # the deadline is short...
        await asyncio.sleep(0.3)
        assert not await closed_by_server(reg[0], 0.1)  # ...and does not apply to a node
        assert (await epmd_client.port_please("lasting", epmd_port=srv.port)).port == 5001
        await close_all([reg, silent])


async def test_full_server_evicts_the_oldest_connection_that_is_no_registration() -> None:
    async with EpmdServer(port=0, max_connections=3, request_timeout=60) as srv:
        p = srv.port
        keeper = await register_raw(p, "keeper")  # the oldest connection of all
        a = await hold(p)
        b = await hold(p, b"\x00")  # half a request
        async with asyncio.timeout(WAIT):
            await srv.wait_for(lambda _: srv.connection_count == 3)
        # Full: a lookup still gets its answer; the oldest non-registration (a) made room.
        reply, closed = await exchange(p, encode_request(PortPlease2Req("keeper")))
        assert reply[:4] == b"w\x00" + (5001).to_bytes(2, "big") and closed
        assert await closed_by_server(a[0], WAIT)
        assert not await closed_by_server(b[0], 0.2)
        # Next in line is b, older than d.
        async with asyncio.timeout(WAIT):
            await srv.wait_for(lambda _: srv.connection_count == 2)
        d = await hold(p)
        async with asyncio.timeout(WAIT):
            await srv.wait_for(lambda _: srv.connection_count == 3)
        e = await hold(p)
        assert await closed_by_server(b[0], WAIT)
        assert not await closed_by_server(d[0], 0.2)
        assert not await closed_by_server(keeper[0], 0.1)
        assert srv.evicted == 2 and srv.connection_count == 3
        assert srv.registry.lookup("keeper") is not None
        await close_all([keeper, a, b, d, e])


async def test_newcomer_refused_only_when_all_are_registrations() -> None:
    async with EpmdServer(port=0, max_connections=2, request_timeout=60) as srv:
        regs = [await register_raw(srv.port, name) for name in ("one", "two")]
        assert await exchange(srv.port, encode_request(NamesReq())) == (b"", True)
        assert srv.evicted == 0
        assert sorted(n for n, _ in srv.registry.names()) == ["one", "two"]
        assert not any([await closed_by_server(r, 0.1) for r, _ in regs])
        await close_all(regs)


async def test_a_flood_cannot_lock_nodes_out() -> None:
    cap = 100
    async with EpmdServer(port=0, max_connections=cap, request_timeout=60) as srv:
        p = srv.port
        regs = [await epmd_client.register(f"n{i}", 5001 + i, epmd_port=p) for i in range(3)]
        flood = await asyncio.gather(*(hold(p) for _ in range(4 * cap)))
        async with asyncio.timeout(WAIT):
            await srv.wait_for(lambda _: srv.evicted >= 3 * cap)
        assert srv.connection_count == cap
        # While the flood holds the server full, a node registers and every node is found.
        async with await epmd_client.register("late", 6000, epmd_port=p) as late:
            assert late.creation >= 4
            for name, port in (("n0", 5001), ("n2", 5003), ("late", 6000)):
                assert (await epmd_client.port_please(name, epmd_port=p)).port == port
            assert len(await epmd_client.names(epmd_port=p)) == 4
        assert srv.connection_count <= cap
        for reg in regs:
            assert not reg.closed
            await reg.close()
        await close_all(flood)
        async with asyncio.timeout(WAIT):
            await srv.wait_for(lambda _: srv.connection_count == 0)


def test_connection_capacity() -> None:
    assert connection_capacity(10_000, None) == 10_000
    assert connection_capacity(10_000, -1) == 10_000  # RLIM_INFINITY
    assert connection_capacity(10_000, 20_000) == 10_000
    assert connection_capacity(10_000, 4096) == 4096 - FD_HEADROOM
    assert connection_capacity(10_000, 1024) == 512
    assert connection_capacity(3, 1024) == 3


async def test_capacity_stays_below_the_descriptor_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(epmd_server, "_fd_soft_limit", lambda: 256)
    async with EpmdServer(port=0) as srv:
        assert (srv.max_connections, srv.capacity) == (10_000, 128)


# --- addresses ------------------------------------------------------------------------------


def test_listen_plan_as_epmd() -> None:
    la = ListenAddress
    assert listen_plan(None) == listen_plan([]) == [la("0.0.0.0"), la("::", required=False)]
    assert listen_plan(["10.1.2.3"]) == [la("10.1.2.3"), la("127.0.0.1"),
                                         la("::1", required=False)]
    assert listen_plan(["::1", "127.0.0.1", "127.0.0.1"]) == [la("::1"), la("127.0.0.1")]
    assert listen_plan(["0.0.0.0"]) == [la("0.0.0.0"), la("::1", required=False)]
    assert listen_plan(["0:0::1", "::"]) == [la("::1"), la("::"), la("127.0.0.1")]
    assert split_address_list(" 127.0.0.2, ::1,10.0.0.1 ") == ["127.0.0.2", "::1", "10.0.0.1"]


@pytest.mark.parametrize("bad", ["localhost", "1.2.3.456", "127.0.0.1/8", "::g"])
def test_listen_plan_rejects_what_epmd_cannot_parse(bad: str) -> None:
    with pytest.raises(EpmdError, match=f"cannot parse IP address '{re.escape(bad)}'"):
        listen_plan(["127.0.0.1", bad])


async def test_best_effort_addresses_are_skipped_required_ones_fail() -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface of this host.
    plan = [ListenAddress("127.0.0.1"), ListenAddress("192.0.2.1", required=False)]
    async with EpmdServer(address=plan, port=0) as srv:
        assert srv.addresses == ["127.0.0.1"]
        assert await epmd_client.names(epmd_port=srv.port) == []
    with pytest.raises(EpmdError, match=r"cannot listen on 192\.0\.2\.1 port 0: Cannot assign"):
        await EpmdServer(address="192.0.2.1", port=0).start()


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


# --- the daemon: CLI, detaching, addresses ----------------------------------------------------
# Helpers shared with interop_tests/test_epmd_interop.py.

_ENV = {k: v for k, v in os.environ.items() if not k.startswith("ERL_EPMD_")}
DAEMON_ENV = _ENV | {"PYTHONPATH": str(REPO)}


def run_epmd(*args: str, env: dict[str, str] | None = None, timeout: float = 30,
             pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``python -m epmd ARGS`` to completion (the launcher only, with ``--daemon``)."""
    return subprocess.run([sys.executable, "-m", "epmd", *args], env=env or DAEMON_ENV,
                          capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL, pass_fds=pass_fds)


def start_daemon(*args: str, env: dict[str, str] | None = None,
                 pass_fds: tuple[int, ...] = ()) -> int:
    """Start ``python -m epmd --daemon ARGS``; the daemon's pid once it listens."""
    out = run_epmd("--daemon", "--print-pid", *args, env=env, pass_fds=pass_fds)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def pid_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for init to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def stop_pid(pid: int, timeout: float = WAIT) -> None:
    """SIGTERM, then SIGKILL, to a daemon started by a test; returns once it is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if pid_gone(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while not pid_gone(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    assert pid_gone(pid), f"pid {pid} survived SIGKILL"


@contextlib.contextmanager
def daemon(*args: str, env: dict[str, str] | None = None) -> Iterator[int]:
    pid = start_daemon(*args, env=env)
    try:
        yield pid
    finally:
        stop_pid(pid)


def zombie_children() -> list[int]:
    """Children of this process that exited and were not reaped."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rpartition(")")[2].split()
            if fields[0] == "Z" and int(fields[1]) == os.getpid():
                found.append(int(stat.parent.name))
    return found


def proc_status_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def listeners(port: int) -> set[str]:
    """The addresses with a TCP socket listening on ``port`` (Linux /proc/net)."""
    found: set[str] = set()
    for table, width in (("tcp", 4), ("tcp6", 16)):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            host, _, hexport = local.partition(":")
            if state != "0A" or int(hexport, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(host)  # 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))
            found.add(str(ipaddress.ip_address(raw)))
    return found


def names_over(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=WAIT) as sock:
        sock.sendall(encode_request(NamesReq()))
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        return reply


async def test_cli_runs_until_sigterm() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "epmd", "--port", str(port), "--address", "127.0.0.1", "-v",
        env=DAEMON_ENV, stderr=asyncio.subprocess.PIPE)
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


def test_cli_help() -> None:
    out = run_epmd("--help")
    assert out.returncode == 0
    for option in ("--port", "--address", "--daemon", "--pidfile", "--request-timeout",
                   "--max-connections", "ERL_EPMD_ADDRESS"):
        assert option in out.stdout


@pytest.mark.parametrize("daemonize", [False, True], ids=["foreground", "daemon"])
def test_cli_port_in_use_is_one_line_and_status_1(daemonize: bool) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        args = ["--daemon"] * daemonize + ["--port", str(port), "--address", "127.0.0.1"]
        out = run_epmd(*args)
    assert out.returncode == 1
    assert out.stderr == (f"epmd: cannot listen on 127.0.0.1 port {port}: Address already in "
                          "use (is another EPMD running?)\n")
    assert out.stdout == ""


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--address", "1.2.3.456"], {}, "cannot parse IP address '1.2.3.456'"),
    (["--address", "127.0.0.1,localhost"], {}, "cannot parse IP address 'localhost'"),
    ([], {"ERL_EPMD_ADDRESS": "nowhere"}, "cannot parse IP address 'nowhere'"),
    ([], {"ERL_EPMD_PORT": "abc"}, "ERL_EPMD_PORT='abc' is not a TCP port number"),
    (["--port", "70000"], {}, "--port 70000 is not a TCP port number"),
    (["--daemon", "--address", "192.0.2.1"], {}, "cannot listen on 192.0.2.1 port {port}: "
                                                  "Cannot assign requested address"),
])
def test_cli_bad_input_is_one_line_and_status_1(args: list[str], env: dict[str, str],
                                                message: str) -> None:
    port = free_port()
    chosen = "--port" in args or "ERL_EPMD_PORT" in env
    out = run_epmd(*args, *([] if chosen else ["--port", str(port)]), env=DAEMON_ENV | env)
    assert out.returncode == 1
    assert out.stderr == f"epmd: {message.format(port=port)}\n"
    assert not listeners(port)


def test_daemon_detaches_and_listens_on_all_interfaces(tmp_path: Path) -> None:
    port = free_port()
    pidfile = tmp_path / "epmd.pid"
    inherited_r, inherited_w = os.pipe()
    # The port from ERL_EPMD_PORT, as epmd.
    pid = start_daemon("--pidfile", str(pidfile), env=DAEMON_ENV | {"ERL_EPMD_PORT": str(port)},
                       pass_fds=(inherited_w,))
    try:
        os.close(inherited_w)
        # The daemon closed the descriptors it inherited: the pipe is at its end.
        assert select.select([inherited_r], [], [], WAIT)[0] == [inherited_r]
        assert os.read(inherited_r, 1) == b""
        os.close(inherited_r)
        assert pidfile.read_text() == f"{pid}\n"
        with pytest.raises(ChildProcessError):  # not our child: never our zombie
            os.waitpid(pid, os.WNOHANG)
        assert os.getsid(pid) != os.getsid(0)
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        assert {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)} == {"/dev/null"}
        expected = {"0.0.0.0", "::"} if _ipv6_loopback() else {"0.0.0.0"}
        assert listeners(port) == expected
        assert names_over("127.0.0.1", port) == port.to_bytes(4, "big")
        if _ipv6_loopback():
            assert names_over("::1", port) == port.to_bytes(4, "big")
    finally:
        stop_pid(pid)
    assert not pidfile.exists()
    assert not listeners(port)


@pytest.mark.parametrize(("args", "env", "listed"), [
    ([], {"ERL_EPMD_ADDRESS": "127.0.0.2"}, "127.0.0.2"),
    (["--address", "127.0.0.3"], {"ERL_EPMD_ADDRESS": "127.0.0.2"}, "127.0.0.3"),
], ids=["env", "option-beats-env"])
def test_daemon_address_list_adds_loopback(args: list[str], env: dict[str, str],
                                           listed: str) -> None:
    port = free_port()
    with daemon("--port", str(port), *args, env=DAEMON_ENV | env):
        loopbacks = {"127.0.0.1", "::1"} if _ipv6_loopback() else {"127.0.0.1"}
        assert listeners(port) == {listed} | loopbacks
        assert names_over(listed, port) == port.to_bytes(4, "big")
        assert names_over("127.0.0.1", port) == port.to_bytes(4, "big")


def test_daemon_relaxed_command_check_from_env() -> None:
    port = free_port()
    env = DAEMON_ENV | {"ERL_EPMD_RELAXED_COMMAND_CHECK": "1"}
    pid = start_daemon("--port", str(port), "--address", "127.0.0.1", env=env)
    try:
        async def session() -> bool:
            async with await epmd_client.register("alive", 5001, epmd_port=port):
                return await epmd_client.kill(epmd_port=port)

        assert asyncio.run(session()) is True  # KILL with a live node: honoured
        deadline = time.monotonic() + WAIT
        while not pid_gone(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pid_gone(pid)
    finally:
        stop_pid(pid)


def test_readiness_report_to_a_starter_that_gave_up() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    assert Readiness(write_fd).ready() is False  # the daemon then exits instead of lingering


# --- ensure_epmd: start the daemon when nothing listens ------------------------------------


async def test_ensure_epmd_uses_what_listens(server: EpmdServer) -> None:
    assert await ensure_epmd(server.port) is None
    async with asyncio.timeout(WAIT):  # the probe's connection is gone again
        await server.wait_for(lambda _: server.connection_count == 0)


async def test_ensure_epmd_starts_a_detached_daemon() -> None:
    port = free_port()
    pid = await ensure_epmd(port, address="127.0.0.1")
    assert pid is not None
    try:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        assert zombie_children() == []  # the launcher was reaped
        async with await epmd_client.register("ensured", 5001, epmd_port=port):
            assert (await epmd_client.dump(epmd_port=port)).epmd_port == port
            assert await ensure_epmd(port) is None  # now it is there
    finally:
        stop_pid(pid)


async def test_ensure_epmd_errors_name_the_port() -> None:
    with socket.socket() as blocker:  # bound, not listening: refuses, yet the port is taken
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]
        with pytest.raises(EpmdError, match=rf"^cannot start the Python EPMD on port {port} "
                                            r"\(address 127.0.0.1\): cannot listen on "
                                            r"127.0.0.1 .*Address already in use"):
            await ensure_epmd(port, address="127.0.0.1")
    with pytest.raises(EpmdError, match=rf"port {port} \(address nowhere\): cannot parse IP"):
        await ensure_epmd(port, address="nowhere")
    with pytest.raises(LocalProtocolError, match="not a TCP port"):
        await ensure_epmd(0)


async def test_ensure_epmd_timeout_leaves_no_daemon() -> None:
    port = free_port()
    with pytest.raises(EpmdError, match=rf"port {port} .*did not start listening within 0.05s"):
        await ensure_epmd(port, address="127.0.0.1", timeout=0.05)
    await asyncio.sleep(2.0)  # a daemon forked before the launcher died exits on its own
    assert not await epmd_accepts(port)
    assert zombie_children() == []


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
