"""Fuzzing the connection machine and its hand-off from the handshake: random packets, mutated
real streams (vectors/dist/) and mutated traffic behind a real handshake either give control
messages or fail the connection with a FrameError (HandshakeError before the handshake is
done) -- anything else is a bug. Settings and the mutator are test_fuzz_etf's
(``PYERL_FUZZ_EXAMPLES`` raises the counts).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyerl_node.proto import control as c
from pyerl_node.proto.connection import Connection, ConnectionState
from pyerl_node.proto.errors import FrameError, LocalProtocolError
from pyerl_node.proto.flags import DistFlag
from pyerl_node.proto.handshake import (
    AcceptorHandshake,
    HandshakeComplete,
    InitiatorHandshake,
    NameReceived,
    Status,
)
from pyerl_node.proto.safe_repr import safe_repr
from pyerl_node.proto.terms import Atom, Pid, Reference
from tests.test_connection import FULL, MODES, _directions, conn, packet
from tests.test_control import atom_cache_frame, frame_bytes
from tests.test_fuzz_etf import FUZZ_TIMEOUT, fuzz_settings, mutated

pytestmark = FUZZ_TIMEOUT

LIMIT = 4096  # a small max_message_size, so that the bounds are reached too
P1 = Pid(Atom("a@vm"), 1, 0, 5)
P2 = Pid(Atom("b@vm"), 2, 0, 6)


def feed(receiver: Connection, chunks: list[bytes]) -> list[Any]:
    """Feed ``chunks``: the messages, until a FrameError (after which the machine is FAILED
    and refuses more input). Any other exception fails the test."""
    events: list[Any] = []
    for chunk in chunks:
        try:
            events += receiver.receive_data(chunk, 0.0)
        except FrameError as exc:
            events += exc.events
            assert receiver.state is ConnectionState.FAILED
            assert len(exc.description) <= 200
            with pytest.raises(LocalProtocolError):
                receiver.receive_data(b"\x00\x00\x00\x00", 0.0)
            break
        assert receiver.pending_fragment_bytes <= LIMIT
    for event in events:
        assert type(event).__module__ == c.__name__  # a control message, nothing else
        assert len(safe_repr(event)) <= 200
    return events


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` in reads of the given sizes (the rest in one last read)."""
    out, at = [], 0
    for size in sizes:
        out.append(data[at:at + size])
        at += size
    return [*out, data[at:]]


@pytest.mark.parametrize("mode", MODES)
@fuzz_settings(100)
@given(bodies=st.lists(st.binary(min_size=1, max_size=80) | mutated(
    [b"\x83\x44\x00\x68\x03\x61\x16", b"\x83\x45" + bytes(15) + b"\x03\x00",
     b"\x83\x46" + bytes(15) + b"\x01", b"\x70\x83\x68\x02\x61\x01\x6a"]), max_size=5))
def test_random_packets(mode: str, bodies: list[bytes]) -> None:
    receiver = conn(MODES[mode], max_message_size=LIMIT)
    # A header that fills some atom cache slots, so that references to them can resolve.
    feed(receiver, [atom_cache_frame([(1, "x"), (2, "y")]) if mode != "pass_through" else b""])
    feed(receiver, [packet(body) for body in bodies])


def _streams() -> list[tuple[DistFlag, bytes]]:
    streams = []
    for name in ("dist/ctrl_25a_28b.json", "dist/altact_28_28.json",
                 "foreign_node/frame_formats_frag_25.json"):
        for flags, frames in _directions(name):
            data = b"".join(frame_bytes(f) for f in frames)
            if len(data) < 20_000:
                streams.append((flags, data))
    return streams


STREAMS = _streams()


@fuzz_settings(150)
@given(st.integers(0, len(STREAMS) - 1), st.data(),
       st.lists(st.integers(1, 300), max_size=6))
def test_mutated_real_streams(index: int, data: st.DataObject, sizes: list[int]) -> None:
    flags, stream = STREAMS[index]
    mutant = data.draw(mutated([stream]))
    feed(conn(flags, max_message_size=LIMIT), cut(mutant, sizes))


def _traffic() -> bytes:
    """What our own node sends: messages of every shape, some of them in fragments."""
    sender = conn(FULL, fragment_size=40)
    ref = Reference(Atom("a@vm"), 5, (1, 2, 3))
    for msg in (c.Link(P1, P2), c.SendSender(P1, P2, (Atom("x"), [1, 2.5, b"bin"])),
                c.RegSend(P1, Atom("rex"), {Atom("k"): "v" * 60}), c.MonitorP(P1, P2, ref),
                c.DemonitorP(P1, Atom("srv"), ref), c.SendSender(P1, P2, 10**40)):
        sender.send(msg)
    return bytes(sender.data_to_send()[0])


def _initiator_stream() -> bytes:
    """The bytes our initiator sends for a whole handshake with our acceptor."""
    init = InitiatorHandshake(local_name="a@vm", peer_name="b@vm", cookie="c", flags=FULL,
                              creation=1, challenge_source=lambda: 1111)
    acc = AcceptorHandshake(local_name="b@vm", cookie="c", flags=FULL, creation=2,
                            challenge_source=lambda: 2222)
    init.start()
    sent = b""
    while not any(isinstance(e, HandshakeComplete) for e in init.receive_data(b"")):
        out = init.data_to_send()
        sent += out
        for event in acc.receive_data(out):
            if isinstance(event, NameReceived):
                acc.accept(Status.OK)
        if any(isinstance(e, HandshakeComplete) for e in init.receive_data(acc.data_to_send())):
            break
    return sent + init.data_to_send()


TRAFFIC = _traffic()
HANDSHAKE = _initiator_stream()


@fuzz_settings(150)
@given(mutated([TRAFFIC]), st.lists(st.integers(1, 200), max_size=6))
def test_mutated_traffic_right_behind_a_handshake(traffic: bytes, sizes: list[int]) -> None:
    # The handshake's last packet and the first dist packets often arrive in one read: the
    # acceptor hands those bytes on (HandshakeComplete.trailing) to the connection.
    acc = AcceptorHandshake(local_name="b@vm", cookie="c", flags=FULL, creation=2,
                            challenge_source=lambda: 2222)
    chunks = cut(HANDSHAKE + traffic, sizes)
    for number, chunk in enumerate(chunks):
        done = _accept(acc, chunk)
        if done is not None:
            receiver = Connection(local_node="b@vm", peer_node=done.peer_name,
                                  flags=done.flags, now=0.0, max_message_size=LIMIT)
            feed(receiver, [done.trailing, *chunks[number + 1:]])
            return
    pytest.fail(f"the handshake did not complete: {acc.state}")


def _accept(acc: AcceptorHandshake, chunk: bytes) -> HandshakeComplete | None:
    """Feed the acceptor one read, accepting the peer's name; the completion if it came."""
    events = acc.receive_data(chunk)
    while events:
        event = events.pop(0)
        if isinstance(event, NameReceived):
            acc.accept(Status.OK)
            events += acc.receive_data(b"")  # what arrived behind the name, held till now
        elif isinstance(event, HandshakeComplete):
            return event
    return None


def test_the_hand_off_sample_is_whole() -> None:
    # Unmutated, the traffic behind the handshake decodes to its six messages.
    acc = AcceptorHandshake(local_name="b@vm", cookie="c", flags=FULL, creation=2,
                            challenge_source=lambda: 2222)
    done = _accept(acc, HANDSHAKE + TRAFFIC)
    assert done is not None
    received = feed(Connection(local_node="b@vm", peer_node=done.peer_name, flags=done.flags,
                               now=0.0), [done.trailing])
    assert [type(e) for e in received] == [c.Link, c.SendSender, c.RegSend, c.MonitorP,
                                           c.DemonitorP, c.SendSender]
