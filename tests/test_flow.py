"""Flow control on the receive side: reading pauses while a connection's messages pile up in
mailboxes, big reads are decoded off the loop, and nothing is lost or reordered either way."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pyerl_node.node import Node
from pyerl_node.proto import etf
from pyerl_node.proto.terms import Atom
from pyerl_node.runtime import channel as channel_module
from pyerl_node.runtime.channel import Channel


@pytest.fixture
def offloaded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per job handed to the decoder threads while the test runs."""
    jobs: list[int] = []
    submit = channel_module._DECODERS.submit

    def counting(fn: Any, args: Any, done: Any) -> None:
        jobs.append(1)
        submit(fn, args, done)

    monkeypatch.setattr(channel_module._DECODERS, "submit", counting)
    return jobs


def _channel(node: Node, peer: Node) -> Channel:
    ch = node._kernel.connected_channel(peer.node_atom)
    assert ch is not None
    return ch


async def test_reading_pauses_while_messages_wait_and_nothing_is_lost(
        pair: tuple[Node, Node], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel_module, "FLOW_HIGH", 1 << 20)
    monkeypatch.setattr(channel_module, "FLOW_LOW", 1 << 19)
    a, b = pair
    box = a.mailbox(name="slow")
    assert await b.ping(a.node_atom)
    inbound = _channel(a, b)
    payload = b"x" * 1024
    count = 20_000  # 20 MiB: more than the mark, the sockets and the sender's buffer hold

    async def flood() -> None:
        for i in range(count):
            await b.send((Atom("slow"), a.node_atom), (i, payload))

    sender = asyncio.create_task(flood())
    peak = 0
    async with asyncio.timeout(30):
        while "flow" not in inbound._pauses:  # until more than the mark waits
            await asyncio.sleep(0.01)
            peak = max(peak, inbound.undelivered)
        for _ in range(20):  # paused: what waits no longer grows
            await asyncio.sleep(0.01)
            peak = max(peak, inbound.undelivered)
    assert not sender.done()  # the sender is held back meanwhile
    assert peak < (1 << 20) + (1 << 19)  # bounded: the mark plus what one read brings
    received = [await box.receive(timeout=10) for _ in range(count)]
    await sender
    assert [m[0] for m in received] == list(range(count))  # all of them, in order
    assert box.mailbox.queued_bytes == 0
    assert not inbound._pauses  # below the low-water mark again: reading resumed


async def test_a_big_read_is_decoded_off_the_loop_in_order(
        pair: tuple[Node, Node], offloaded: list[int]) -> None:
    a, b = pair
    box = a.mailbox(name="big")
    assert await b.ping(a.node_atom)
    big = [(Atom("row"), i, float(i), b"abc") for i in range(100_000)]  # ~2.3 MB, structured
    await b.send((Atom("big"), a.node_atom), ("first", big))
    for i in range(100):
        await b.send((Atom("big"), a.node_atom), ("small", i))
    first = await box.receive(timeout=30)
    assert first == (b"first", big)
    assert [await box.receive(timeout=10) for _ in range(100)] == [
        (b"small", i) for i in range(100)]
    assert offloaded  # the big message left the loop
    assert not _channel(a, b)._pauses


async def test_small_reads_stay_on_the_loop(pair: tuple[Node, Node],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = pair
    box = a.mailbox(name="small")
    assert await b.ping(a.node_atom)
    monkeypatch.setattr(channel_module._DECODERS, "submit",
                        lambda *args: pytest.fail("a small read went off the loop"))
    for i in range(200):
        await b.send((Atom("small"), a.node_atom), i)
    assert [await box.receive(timeout=5) for _ in range(200)] == list(range(200))


def _reg_send(sender: Node, name: str, payload: bytes) -> bytes:
    """A REG_SEND packet in header mode (no atom cache refs) with an encoded ``payload``."""
    ctrl = etf.encode((6, sender.mailbox().pid, Atom(""), Atom(name)))[1:]
    body = bytes((131, 68, 0)) + ctrl + payload
    return len(body).to_bytes(4, "big") + body


async def test_compressed_messages_are_inflated_off_the_loop_in_order_and_counted_inflated(
        pair: tuple[Node, Node], offloaded: list[int]) -> None:
    # A small packet whose payload inflates past OFFLOAD_AT leaves the loop to inflate, and
    # waits in the mailbox for what it holds, not for its few wire bytes.
    a, b = pair
    box = a.mailbox(name="zipped")
    assert await b.ping(a.node_atom)
    inbound = _channel(a, b)
    big = bytes(4 * channel_module.OFFLOAD_AT)
    bomb = etf.encode(big, compressed=9)[1:]
    assert len(bomb) < 10_000
    read = b"".join([_reg_send(b, "zipped", etf.encode("before")[1:]),
                     _reg_send(b, "zipped", bomb),
                     _reg_send(b, "zipped", etf.encode("after")[1:])])
    inbound._received(read)  # one read: what follows the compressed message waits for it
    assert len(box.mailbox) == 1
    async with asyncio.timeout(10):
        while len(box.mailbox) < 3:
            await asyncio.sleep(0.01)
    assert offloaded == [1]
    assert inbound.undelivered >= len(big)  # counted inflated
    assert [await box.receive(timeout=1) for _ in range(3)] == [b"before", big, b"after"]
    assert inbound.undelivered == 0


@pytest.mark.parametrize("bad", ["inflates to less", "a bad packet after it"])
async def test_a_bad_packet_behind_a_compressed_message_ends_the_connection_after_it(
        pair: tuple[Node, Node], bad: str) -> None:
    a, b = pair
    box = a.mailbox(name="zipped")
    assert await b.ping(a.node_atom)
    inbound = _channel(a, b)
    big = bytes(2 * channel_module.OFFLOAD_AT)
    bomb = etf.encode(big, compressed=9)[1:]
    packets = [_reg_send(b, "zipped", etf.encode("before")[1:])]
    if bad == "inflates to less":  # the claim is checked off the loop: it fails there
        packets.append(_reg_send(b, "zipped", bomb[:1] + (len(big) + 10).to_bytes(4, "big")
                                 + bomb[5:]))
        delivered = [b"before"]
    else:
        packets += [_reg_send(b, "zipped", bomb), b"\x00\x00\x00\x05hello"]
        delivered = [b"before", big]
    packets.append(_reg_send(b, "zipped", etf.encode("after")[1:]))
    inbound._received(b"".join(packets))
    async with asyncio.timeout(10):
        while not inbound._closed:
            await asyncio.sleep(0.01)
    assert [await box.receive(timeout=1) for _ in delivered] == delivered
    assert len(box.mailbox) == 0  # nothing after the bad packet
