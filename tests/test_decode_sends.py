"""control_memo.decode_sends: a stream's sends decoded in one call (compiled when the core
is), with the outcome of decoding them packet by packet, whatever the stream holds."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyerl_node.proto import connection as connection_module
from pyerl_node.proto import control as c
from pyerl_node.proto import control_memo, etf
from pyerl_node.proto.connection import Connection
from pyerl_node.proto.control_memo import PURE_DECODE_SENDS, decode_sends
from pyerl_node.proto.errors import FrameError
from pyerl_node.proto.terms import Atom, Pid, Reference
from tests.test_connection import FULL, TICK, conn, packet
from tests.test_dist_header import build_atom_cache_header

SENDER = Pid(Atom("a@vm"), 7, 0, 5)
REF = Reference(Atom("a@vm"), 5, (1, 2, 3))
# The atom cache slots a BEAM would use: its node name, '' and the destination name.
DEFINE = build_atom_cache_header([(1, "a@vm", True), (2, "", True), (3, "sink", True)])
REUSE = build_atom_cache_header([(1, "a@vm", False), (2, "", False), (3, "sink", False)])
# REG_SEND {6, FromPid, '', sink} through the cache: NEW_PID with the node as ref 0
CTRL = (bytes((104, 4, 97, 6, 88, 82, 0)) + (7).to_bytes(4, "big") + bytes(4)
        + (5).to_bytes(4, "big") + bytes((82, 1, 82, 2)))


def _send(header: bytes, payload: bytes) -> bytes:
    return packet(bytes((131, 68)) + header + CTRL + payload)


def _payload(value: Any) -> bytes:
    return etf.encode(value)[1:]


# What a stream may hold: sends through a header that defines the cache or reuses it, with
# good or broken payloads, ticks, other operations, sends without the cache, a compressed
# payload, bytes after a payload, a packet over the limit, garbage.
PIECES: dict[str, bytes] = {
    "define": _send(DEFINE, _payload((Atom("hello"), 1))),
    "reuse": _send(REUSE, _payload((Atom("hello"), 2, b"bytes"))),
    "reuse_other": _send(REUSE, _payload([1, 2.5, "text"])),
    "tick": TICK,
    "plain": packet(bytes((131, 68, 0)) + _payload((6, SENDER, Atom(""), Atom("sink")))
                    + _payload(3)),
    "monitor": packet(bytes((131, 68, 0)) + _payload((19, SENDER, Atom("sink"), REF))),
    "compressed": _send(REUSE, etf.encode(b"z" * 200, compressed=True)[1:]),
    "trailing": _send(REUSE, _payload(4) + b"\x6a"),
    "bad_payload": _send(REUSE, bytes((119, 1, 0xFF))),  # not UTF-8
    "cache_miss": _send(REUSE, bytes((82, 9))),  # a reference the header does not have
    "huge": (1 << 20).to_bytes(4, "big") + bytes((131, 68)),
    "garbage": packet(b"\x01\x02\x03\x04"),
}


def _outcome(receiver: Connection, reads: list[bytes]) -> tuple[list[Any], str | None]:
    events: list[Any] = []
    for read in reads:
        try:
            events += receiver.receive_data(read, 0.0)
        except FrameError as error:
            return events + list(error.events), f"{type(error.error).__name__}: {error}"
    return events, None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(sorted(PIECES)), max_size=12),
       st.lists(st.integers(min_value=0, max_value=400), max_size=4))
def test_a_stream_decodes_as_it_does_packet_by_packet(names: list[str],
                                                       cuts: list[int]) -> None:
    stream = b"".join(PIECES[name] for name in ["define", "reuse", "reuse", *names])
    points = sorted({min(cut, len(stream)) for cut in cuts} | {0, len(stream)})
    reads = [stream[a:b] for a, b in itertools.pairwise(points) if b > a]
    fast = _outcome(conn(FULL, max_message_size=1000), reads)
    with pytest.MonkeyPatch.context() as patch:  # no runs: every packet on its own
        patch.setattr(connection_module, "decode_sends", lambda buf, pos, *_: pos)
        slow = _outcome(conn(FULL, max_message_size=1000), reads)
    assert fast == slow


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(sorted(PIECES)), max_size=10), st.integers(0, 30))
def test_the_compiled_function_does_what_the_python_one_does(names: list[str],
                                                             start: int) -> None:
    receiver = conn(FULL, max_message_size=1000)
    warm = PIECES["define"] + PIECES["reuse"] + PIECES["reuse"]
    receiver.receive_data(warm, 0.0)  # (remembers the header and the control message)
    stream = warm + b"".join(PIECES[name] for name in names)
    memo = receiver._known_ctrl
    outcomes = []
    for run in (decode_sends, PURE_DECODE_SENDS):
        events: list[Any] = []
        pos = run(stream, start, events, receiver._atom_cache.known, memo.entries,
                  memo.lengths, 1000)
        outcomes.append((pos, events))
    assert outcomes[0] == outcomes[1]


def test_a_run_decodes_a_stream_of_sends_and_stops_at_anything_else() -> None:
    receiver = conn(FULL)
    assert len(receiver.receive_data(PIECES["define"] + PIECES["reuse"], 0.0)) == 2
    memo = receiver._known_ctrl
    stream = PIECES["reuse"] + TICK + PIECES["reuse_other"] + PIECES["plain"]
    events: list[Any] = []
    pos = decode_sends(stream, 0, events, receiver._atom_cache.known, memo.entries,
                       memo.lengths, 1 << 20)
    assert pos == len(stream) - len(PIECES["plain"])  # (its own control tuple: not in a run)
    assert events == [c.RegSend(SENDER, Atom("sink"), (Atom("hello"), 2, b"bytes")),
                      c.RegSend(SENDER, Atom("sink"), [1, 2.5, b"text"])]
    for stop in ("compressed", "trailing", "bad_payload", "cache_miss", "huge", "garbage"):
        assert decode_sends(PIECES[stop], 0, events, receiver._atom_cache.known,
                            memo.entries, memo.lengths, 1 << 19) == 0, stop
    assert len(events) == 2


@pytest.mark.skipif(not etf.COMPILED, reason="the compiled core is not in use")
def test_the_compiled_function_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        control_memo.decode_sends(bytearray(TICK), 0, [], {}, {}, [], 1)  # type: ignore[arg-type]
