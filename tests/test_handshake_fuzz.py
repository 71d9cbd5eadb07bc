"""Hostile input: random and mutated handshake bytes give events or HandshakeError (and its
subclasses), never another exception, and a failed machine stays failed."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyerl_node.proto.errors import HandshakeError, LocalProtocolError
from pyerl_node.proto.flags import MANDATORY_25, DistFlag, default_flags
from pyerl_node.proto.framing import frame
from pyerl_node.proto.handshake import (
    AcceptorHandshake,
    InitiatorHandshake,
    NameReceived,
    State,
    Status,
)

VECTORS = Path(__file__).resolve().parent / "vectors" / "handshake"
CAPTURES = [json.loads(p.read_text()) for p in sorted(VECTORS.glob("*.json"))]


def _stream(capture: dict[str, object], side: str) -> bytes:
    frames = capture["handshake"]
    assert isinstance(frames, list)
    return b"".join(bytes.fromhex(f["hex"]) for f in frames if f["from"] == side)


INITIATOR_STREAMS = [_stream(c, "initiator") for c in CAPTURES]
ACCEPTOR_STREAMS = [_stream(c, "acceptor") for c in CAPTURES if _stream(c, "acceptor")]

# A few whole messages, so random input also reaches the later states.
FRAMES = st.binary(max_size=40).map(lambda b: frame(b, 2)) | st.sampled_from(
    [frame(m, 2) for m in (b"sok", b"salive", b"strue", b"sfalse", b"snamed:", b"snot_allowed",
                           b"snok", b"sok_simultaneous")])


@st.composite
def mutated(draw: st.DrawFn, streams: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(streams)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[at:at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


inputs_to_acceptor = (st.lists(FRAMES, max_size=6).map(b"".join) | st.binary(max_size=200)
                      | mutated(INITIATOR_STREAMS))
inputs_to_initiator = (st.lists(FRAMES, max_size=6).map(b"".join) | st.binary(max_size=200)
                       | mutated(ACCEPTOR_STREAMS))


def _chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out, at = [], 0
    for size in sizes:
        out.append(data[at:at + size])
        at += size
    out.append(data[at:])
    return out


def _assert_stays_failed(machine: AcceptorHandshake | InitiatorHandshake) -> None:
    assert machine.state is State.FAILED
    machine.data_to_send()  # still allowed: a queued not_allowed must go out
    try:
        machine.receive_data(b"x")
    except LocalProtocolError:
        return
    raise AssertionError("a failed machine accepted more input")


settings_ = settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow],
                     deadline=None)


@settings_
@given(inputs_to_acceptor, st.lists(st.integers(1, 30), max_size=8),
       st.sampled_from(list(Status)))
def test_acceptor_survives_anything(data: bytes, sizes: list[int], decision: Status) -> None:
    acc = AcceptorHandshake(local_name="b@vm", cookie="capcookie", flags=default_flags(),
                            creation=5, challenge_source=lambda: 1455462869,
                            required=MANDATORY_25)
    try:
        for chunk in _chunks(data, sizes):
            for event in acc.receive_data(chunk):
                if isinstance(event, NameReceived):
                    status = (Status.NAMED if event.peer_flags & DistFlag.NAME_ME
                              else decision if decision is not Status.NAMED else Status.OK)
                    acc.accept(status, name="gen@vm", creation=7)
            if acc.state in (State.DONE, State.CLOSED):
                break
    except HandshakeError:
        _assert_stays_failed(acc)


@settings_
@given(inputs_to_initiator, st.lists(st.integers(1, 30), max_size=8), st.booleans(),
       st.booleans())
def test_initiator_survives_anything(data: bytes, sizes: list[int], proceed: bool,
                                     name_me: bool) -> None:
    flags = default_flags() | (DistFlag.NAME_ME if name_me else DistFlag(0))
    init = InitiatorHandshake(local_name="vm" if name_me else "py@vm", peer_name="b@vm",
                              cookie="capcookie", flags=flags, creation=5,
                              challenge_source=lambda: 2898982229, required=MANDATORY_25)
    init.start()
    try:
        for chunk in _chunks(data, sizes):
            init.receive_data(chunk)
            if init.state is State.AWAIT_ALIVE_DECISION:
                init.answer_alive(proceed)
            if init.state in (State.DONE, State.CLOSED):
                break
    except HandshakeError:
        _assert_stays_failed(init)
