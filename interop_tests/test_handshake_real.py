"""Our handshake machines over plain asyncio sockets against real OTP 25 and OTP 28 nodes.

The BEAM node listens on a port we choose (``inet_dist_listen_min/max``), so the initiator
tests dial it directly, without an EPMD client. For the acceptor test the real epmd learns
our listener from a hand-written ALIVE2_REQ (docs/protocol/distribution.md §2.1), and the BEAM dials
us.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

import pytest

from interop_tests.beam import LOCALHOST, BeamNode, Epmd, free_port, unique_name
from interop_tests.conftest import BeamNodeFactory
from pyerl_node.proto.errors import HandshakeError
from pyerl_node.proto.flags import DistFlag, default_flags, expand
from pyerl_node.proto.framing import frame
from pyerl_node.proto.handshake import (
    AcceptorHandshake,
    Event,
    HandshakeComplete,
    InitiatorHandshake,
    NameReceived,
    State,
    Status,
    StatusReceived,
)

# What a real node announces (docs/protocol/distribution.md §4.1); OTP 28 adds ALTACT_SIG.
ANNOUNCED = {"25": DistFlag(0xD07DF7FBD), "28": DistFlag(0x2D07DF7FBD)}
STEP_TIMEOUT = 10.0
Machine = InitiatorHandshake | AcceptorHandshake


def _creation() -> int:
    return secrets.randbelow((1 << 32) - 1) + 1


def _challenge() -> int:
    return secrets.randbits(32)


async def drive(hs: Machine, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                seen: list[Event] | None = None, alive_answer: bool = True,
                ) -> HandshakeComplete | None:
    """Pump the handshake until it completes (the event) or the peer closes (None).

    Events are appended to ``seen``; status alive is answered with ``alive_answer``.
    """
    async with asyncio.timeout(STEP_TIMEOUT):
        while hs.state is not State.CLOSED:
            writer.write(hs.data_to_send())
            await writer.drain()
            data = await reader.read(4096)
            if not data:
                return None
            for event in hs.receive_data(data):
                if seen is not None:
                    seen.append(event)
                if isinstance(event, NameReceived):
                    assert isinstance(hs, AcceptorHandshake)
                    hs.accept(Status.OK)
                elif isinstance(event, HandshakeComplete):
                    writer.write(hs.data_to_send())
                    await writer.drain()
                    return event
            if hs.state is State.AWAIT_ALIVE_DECISION:
                assert isinstance(hs, InitiatorHandshake)
                hs.answer_alive(alive_answer)
        writer.write(hs.data_to_send())
        await writer.drain()
        return None


@contextlib.asynccontextmanager
async def dial(node: BeamNode, port: int, *, cookie: str, flags: DistFlag,
               name: str | None = None,
               ) -> AsyncIterator[tuple[InitiatorHandshake, asyncio.StreamReader,
                                        asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(LOCALHOST, port)
    hs = InitiatorHandshake(
        local_name=name or f"{unique_name('py')}@{LOCALHOST}", peer_name=node.name,
        cookie=cookie, flags=flags, creation=_creation(), challenge_source=_challenge)
    hs.start()
    try:
        yield hs, reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def start_listening_node(beam_node: BeamNodeFactory, release: str) -> tuple[BeamNode, int]:
    port = free_port()
    node = beam_node(release, prefix="b", extra_args=[
        "-kernel", "inet_dist_listen_min", str(port), "inet_dist_listen_max", str(port)])
    return node, port


async def wait_for(node: BeamNode, expr: str, expected: str) -> str:
    """Evaluate ``expr`` until it prints ``expected`` (bounded); the last value."""
    value = ""
    async with asyncio.timeout(STEP_TIMEOUT):
        while (value := await node.eval_async(expr)) != expected:
            await asyncio.sleep(0.1)
    return value


async def test_initiator_connects_visible(otp_release: str, beam_node: BeamNodeFactory,
                                          cookie: str) -> None:
    node, port = start_listening_node(beam_node, otp_release)
    name = f"{unique_name('py')}@{LOCALHOST}"
    async with dial(node, port, cookie=cookie, flags=default_flags(spawn=True), name=name) as (
            hs, reader, writer):
        done = await drive(hs, reader, writer)
        assert isinstance(done, HandshakeComplete)
        assert done.peer_name == node.name
        assert done.peer_flags == ANNOUNCED[otp_release]
        assert done.flags == default_flags(spawn=True) & expand(ANNOUNCED[otp_release])
        writer.write(frame(b"", 4))  # a tick, for good measure
        assert await node.eval_async("nodes()") == f"['{name}']"
        assert await node.eval_async("nodes(hidden)") == "[]"
    # Closing the socket is the disconnect: the node forgets us.
    await wait_for(node, "nodes()", "[]")


async def test_initiator_connects_hidden(otp_release: str, beam_node: BeamNodeFactory,
                                         cookie: str) -> None:
    node, port = start_listening_node(beam_node, otp_release)
    name = f"{unique_name('hid')}@{LOCALHOST}"
    async with dial(node, port, cookie=cookie, flags=default_flags(hidden=True),
                    name=name) as (hs, reader, writer):
        done = await drive(hs, reader, writer)
        assert isinstance(done, HandshakeComplete)
        assert not done.flags & DistFlag.PUBLISHED
        assert await node.eval_async("nodes(hidden)") == f"['{name}']"
        assert await node.eval_async("nodes()") == "[]"


async def test_wrong_cookie_is_refused(otp_release: str, beam_node: BeamNodeFactory,
                                       cookie: str) -> None:
    node, port = start_listening_node(beam_node, otp_release)
    async with dial(node, port, cookie=cookie + "_wrong", flags=default_flags()) as (
            hs, reader, writer):
        # The real acceptor checks our digest first and closes without a word.
        assert await drive(hs, reader, writer) is None
        assert hs.state is State.AWAIT_ACK
    async with asyncio.timeout(STEP_TIMEOUT):
        while "Invalid challenge reply" not in node.output:
            await asyncio.sleep(0.05)
    assert await node.eval_async("nodes(connected)") == "[]"


async def test_missing_26_flags(otp_release: str, beam_node: BeamNodeFactory,
                                cookie: str) -> None:
    # OTP 25 does not require UNLINK_ID; OTP 28 answers not_allowed (docs/protocol/distribution.md
    # §4.2).
    node, port = start_listening_node(beam_node, otp_release)
    async with dial(node, port, cookie=cookie,
                    flags=default_flags() & ~DistFlag.UNLINK_ID) as (hs, reader, writer):
        if otp_release == "25":
            assert isinstance(await drive(hs, reader, writer), HandshakeComplete)
        else:
            with pytest.raises(HandshakeError, match="not_allowed"):
                await drive(hs, reader, writer)


async def test_second_connection_gets_status_alive(
        otp_release: str, beam_node: BeamNodeFactory, cookie: str) -> None:
    node, port = start_listening_node(beam_node, otp_release)
    name = f"{unique_name('py')}@{LOCALHOST}"
    async with dial(node, port, cookie=cookie, flags=default_flags(), name=name) as first:
        assert isinstance(await drive(*first), HandshakeComplete)
        # The node believes the first connection is alive: "false" gives up, ...
        async with dial(node, port, cookie=cookie, flags=default_flags(), name=name) as second:
            seen: list[Event] = []
            assert await drive(*second, seen=seen, alive_answer=False) is None
            assert seen == [StatusReceived(Status.ALIVE)]
            assert second[0].state is State.CLOSED
        assert await node.eval_async("nodes()") == f"['{name}']"
        # ... "true" makes it drop the old connection and accept the new one.
        async with dial(node, port, cookie=cookie, flags=default_flags(), name=name) as third:
            seen = []
            assert isinstance(await drive(*third, seen=seen), HandshakeComplete)
            assert seen[0] == StatusReceived(Status.ALIVE)
            async with asyncio.timeout(STEP_TIMEOUT):
                await first[1].read()  # returns at EOF: the node closed the old connection
            assert first[1].at_eof()
            assert await node.eval_async("nodes()") == f"['{name}']"


async def test_dynamic_name(otp_release: str, beam_node: BeamNodeFactory,
                            cookie: str) -> None:
    node, port = start_listening_node(beam_node, otp_release)
    async with dial(node, port, cookie=cookie, flags=default_flags() | DistFlag.NAME_ME,
                    name=LOCALHOST) as conn:
        seen: list[Event] = []
        done = await drive(*conn, seen=seen)
        assert isinstance(done, HandshakeComplete)
        named = seen[0]
        assert isinstance(named, StatusReceived) and named.status is Status.NAMED
        assert named.name is not None and named.name.endswith(f"@{LOCALHOST}")
        assert named.creation is not None
        # A dynamically named node is always hidden.
        assert not done.flags & DistFlag.PUBLISHED
        assert await node.eval_async("nodes(hidden)") == f"['{named.name}']"


def _alive2_req(name: str, port: int) -> bytes:
    alive = name.partition("@")[0].encode()
    body = (bytes([120]) + port.to_bytes(2, "big") + bytes([77, 0]) + (6).to_bytes(2, "big")
            + (6).to_bytes(2, "big") + len(alive).to_bytes(2, "big") + alive
            + (0).to_bytes(2, "big"))
    return frame(body, 2)


async def test_real_node_connects_to_our_acceptor(otp_release: str, beam_node: BeamNodeFactory,
                                                  epmd: Epmd, cookie: str) -> None:
    node = beam_node(otp_release, prefix="b")
    name = f"{unique_name('py')}@{LOCALHOST}"
    done: asyncio.Future[HandshakeComplete | None] = asyncio.get_running_loop().create_future()
    connections: list[asyncio.StreamWriter] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        hs = AcceptorHandshake(local_name=name, cookie=cookie, flags=default_flags(spawn=True),
                               creation=creation, challenge_source=_challenge)
        try:
            result = await drive(hs, reader, writer)
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
        else:
            if not done.done():
                done.set_result(result)

    server = await asyncio.start_server(on_connect, LOCALHOST, 0)
    port = server.sockets[0].getsockname()[1]
    epmd_reader, epmd_writer = await asyncio.open_connection(LOCALHOST, epmd.port)
    try:
        epmd_writer.write(_alive2_req(name, port))
        async with asyncio.timeout(STEP_TIMEOUT):
            resp = await epmd_reader.readexactly(6)  # ALIVE2_X_RESP: 118, 0, Creation:32
        assert resp[:2] == b"\x76\x00"
        creation = int.from_bytes(resp[2:], "big")
        assert await node.eval_async(f"net_kernel:connect_node('{name}')") == "true"
        async with asyncio.timeout(STEP_TIMEOUT):
            complete = await done
        assert complete is not None and complete.peer_name == node.name
        assert complete.peer_flags == ANNOUNCED[otp_release]
        assert complete.flags == default_flags(spawn=True) & ANNOUNCED[otp_release]
        assert await node.eval_async("nodes()") == f"['{name}']"
    finally:
        for writer in connections:
            writer.close()
        epmd_writer.close()
        server.close()
        await server.wait_closed()
