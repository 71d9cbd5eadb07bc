"""Bad input from a peer never takes the node down, nor its other connections."""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct

import pytest

from pyerl_node.node import Node
from pyerl_node.proto import control as c
from pyerl_node.proto.connection import Connection
from pyerl_node.proto.etf import encode
from pyerl_node.proto.flags import DistFlag, default_flags
from pyerl_node.proto.handshake import HandshakeComplete, InitiatorHandshake
from pyerl_node.proto.terms import Atom, Pid


async def _raw_peer(
    target: Node, cookie: str = "cookie", flags: DistFlag | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, HandshakeComplete]:
    """A hand-driven peer: TCP plus our sans-I/O initiator, so the test controls every byte."""
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    try:
        return reader, writer, await _handshake(reader, writer, target, cookie, flags)
    except BaseException:
        writer.close()
        await writer.wait_closed()
        raise


async def _handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: Node, cookie: str,
    flags: DistFlag | None,
) -> HandshakeComplete:
    hs = InitiatorHandshake(
        local_name=f"raw{secrets.token_hex(3)}@127.0.0.1", peer_name=target.node_atom.name,
        cookie=cookie, flags=flags or default_flags(), creation=7,
        challenge_source=lambda: 12345,
    )
    hs.start()
    writer.write(hs.data_to_send())
    while True:
        data = await asyncio.wait_for(reader.read(4096), 5)
        if not data:
            raise ConnectionError("closed during the handshake")
        for event in hs.receive_data(data):
            if isinstance(event, HandshakeComplete):
                writer.write(hs.data_to_send())
                return event
        writer.write(hs.data_to_send())


async def _until_closed(reader: asyncio.StreamReader) -> None:
    """Read until the node hangs up (bounded)."""
    async with asyncio.timeout(10):
        while await reader.read(65536):
            pass


async def test_garbage_before_and_during_handshake(pair: tuple[Node, Node]) -> None:
    a, b = pair
    for junk in (b"\x00\x05hello", b"GET / HTTP/1.1\r\n\r\n", b"\xff" * 100, b""):
        reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
        writer.write(junk)
        writer.write_eof()
        await _until_closed(reader)
        writer.close()
        await writer.wait_closed()
    assert await b.ping(a.node_atom)


async def test_wrong_cookie_raw_peer_is_closed(pair: tuple[Node, Node]) -> None:
    a, b = pair
    with pytest.raises(ConnectionError):
        await _raw_peer(a, cookie="wrong")
    assert await b.ping(a.node_atom)


BAD_PACKETS = {
    "truncated control tuple": bytes((131, 68, 0)) + b"\x68\x02\x61",
    "unknown operation 99": bytes((131, 68, 0)) + bytes((104, 2, 97, 99, 97, 1)),
    "pass-through packet in header mode": bytes((112, 131, 100)),
}


@pytest.mark.parametrize("bad", BAD_PACKETS.values(), ids=BAD_PACKETS.keys())
async def test_a_bad_frame_ends_that_connection_after_what_came_before(
        pair: tuple[Node, Node], bad: bytes, caplog: pytest.LogCaptureFixture) -> None:
    # The BEAM disconnects a peer for a packet it cannot decode or does not know (dist.c)
    a, b = pair
    assert await b.ping(a.node_atom)
    box = a.mailbox(name="inbox")
    reader, writer, done = await _raw_peer(a)
    conn = Connection(local_node="raw@127.0.0.1", peer_node=a.node_atom.name,
                      flags=done.flags, now=0.0)
    me = Pid(Atom(str(done.peer_name)), 1, 0, 7)
    conn.send(c.RegSend(me, Atom("inbox"), Atom("before")))
    for chunk in conn.data_to_send():
        writer.write(chunk)
    writer.write(struct.pack(">I", len(bad)) + bad)
    conn.send(c.RegSend(me, Atom("inbox"), Atom("after")))
    for chunk in conn.data_to_send():
        writer.write(chunk)
    with caplog.at_level(logging.INFO, "pyerl_node"):
        await writer.drain()
        assert await box.receive(timeout=5) is Atom("before")
        await _until_closed(reader)  # the node hung up on us
        await asyncio.sleep(0.1)  # (its connection_lost comes a loop turn later)
    assert len(box.mailbox) == 0  # nothing after the bad packet was taken
    down = [r.getMessage() for r in caplog.records if " down (" in r.getMessage()]
    assert any(line.startswith("connection to raw") and " down (127.0.0.1:" in line
               for line in down), caplog.text
    assert await b.ping(a.node_atom)  # the other connection never noticed
    writer.close()
    await writer.wait_closed()


async def test_oversized_length_closes_only_that_connection(pair: tuple[Node, Node]) -> None:
    a, b = pair
    assert await b.ping(a.node_atom)
    reader, writer, _ = await _raw_peer(a)
    writer.write(struct.pack(">I", 0xFFFFFFFF) + b"x" * 100)
    await writer.drain()
    await _until_closed(reader)  # the node hung up on us...
    writer.close()
    await writer.wait_closed()
    assert await b.ping(a.node_atom)  # ...and on nobody else


async def test_atoms_beyond_the_limit_end_only_that_connection(
        pair: tuple[Node, Node], caplog: pytest.LogCaptureFixture) -> None:
    from pyerl_node import atom_count, set_atom_limit

    a, b = pair
    assert await b.ping(a.node_atom)
    box = a.mailbox(name="atoms")
    # pass-through framing (112, control, payload): the payload is written by hand, so its
    # atoms exist nowhere in this process before the node decodes them
    plain = default_flags() & ~(DistFlag.DIST_HDR_ATOM_CACHE | DistFlag.FRAGMENTS)
    reader, writer, done = await _raw_peer(a, flags=plain)
    me = Pid(Atom(str(done.peer_name)), 1, 0, 7)
    names = [f"never_seen_{secrets.token_hex(8)}_{i}".encode() for i in range(500)]
    payload = bytes((131, 108)) + struct.pack(">I", len(names)) + b"".join(
        bytes((119, len(n))) + n for n in names) + bytes((106,))
    body = bytes((112,)) + encode((6, me, Atom(""), Atom("atoms"))) + payload
    old = set_atom_limit(atom_count() + 100)
    try:
        with caplog.at_level(logging.INFO, "pyerl_node"):
            writer.write(struct.pack(">I", len(body)) + body)
            await writer.drain()
            await _until_closed(reader)  # the node hung up on the peer that filled the table
            await asyncio.sleep(0.1)
        assert len(box.mailbox) == 0
        assert "atom table full" in caplog.text
    finally:
        set_atom_limit(old)
        writer.close()
        await writer.wait_closed()
    assert await b.ping(a.node_atom)  # everyone else carries on
