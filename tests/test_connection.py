"""The connection state machine (docs/protocol/distribution.md §5-§7): real captured streams
replayed through it, our own frames looped back through it in every mode, ticks and net_ticktime
on a fake clock, and hostile input (every bad packet fails the connection with a FrameError, as
the BEAM disconnects; the fuzzing of it is in test_fuzz_connection.py).
"""

from __future__ import annotations

import glob
import itertools
import random
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyerl_node.proto import connection as connection_module
from pyerl_node.proto import control as c
from pyerl_node.proto import etf
from pyerl_node.proto.connection import BINARY_DISCOUNT, Connection, ConnectionState, Event
from pyerl_node.proto.deferred import DeferredMessage
from pyerl_node.proto.dist_header import Fragments
from pyerl_node.proto.errors import (
    DecodeError,
    EncodeError,
    FrameError,
    LocalProtocolError,
    NetTickTimeout,
    RemoteProtocolError,
)
from pyerl_node.proto.flags import DistFlag, default_flags
from pyerl_node.proto.term_scan import Binaries
from pyerl_node.proto.terms import Atom, BitBinary, Pid, Reference
from tests.test_control import (
    OP_NAMES,
    VECTORS,
    assert_rendered,
    atom_cache_frame,
    control_messages,
    frame_bytes,
    load_json,
    render,
)
from tests.test_dist_header import build_atom_cache_header

TICK = b"\x00\x00\x00\x00"
P1 = Pid(Atom("a@vm"), 1, 0, 5)
P2 = Pid(Atom("py@vm"), 2, 0, 6)
R = Reference(Atom("a@vm"), 5, (1, 2, 3))

FULL = default_flags(spawn=True) | DistFlag.ALTACT_SIG  # atom cache header + fragments
PASS = FULL & ~(DistFlag.DIST_HDR_ATOM_CACHE | DistFlag.FRAGMENTS)
HDR_ONLY = FULL & ~DistFlag.FRAGMENTS
FRAG_ONLY = FULL & ~DistFlag.DIST_HDR_ATOM_CACHE
MODES = {"pass_through": PASS, "atom_cache": HDR_ONLY, "fragments": FRAG_ONLY, "both": FULL}


def conn(flags: DistFlag = FULL, now: float = 0.0, **kw: Any) -> Connection:
    return Connection(local_node="py@vm", peer_node="a@vm", flags=flags, now=now, **kw)


def packet(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def fails(receiver: Connection, data: bytes, match: str | None = None) -> FrameError:
    """Feed ``data``: it must fail the connection (FrameError; FAILED afterwards)."""
    with pytest.raises(FrameError, match=match) as info:
        receiver.receive_data(data, 0.0)
    assert receiver.state is ConnectionState.FAILED
    assert isinstance(info.value.error, RemoteProtocolError)
    assert len(info.value.description) <= 200
    with pytest.raises(LocalProtocolError, match="failed"):
        receiver.receive_data(TICK, 0.0)
    return info.value


# --- replaying real streams -----------------------------------------------------------------


def _handshake_flags(frames: list[dict[str, Any]]) -> DistFlag:
    """The AND of the flags both sides announced (send_name and challenge)."""
    announced = {"initiator": 0, "acceptor": 0}
    for f in frames:
        if f["kind"] != "handshake":
            continue
        body = bytes.fromhex(f["hex"])[2:]
        if body[:1] == b"N":  # v6 send_name or challenge: Flags:64 first
            announced[f["from"]] = int.from_bytes(body[1:9], "big")
        elif body[:1] == b"n":  # v5: Version:16, Flags:32
            announced[f["from"]] = int.from_bytes(body[3:7], "big")
        elif body[:1] == b"c":  # complement: the high 32 flag bits
            announced[f["from"]] |= int.from_bytes(body[1:5], "big") << 32
    return DistFlag(announced["initiator"] & announced["acceptor"])


def _expected_outcome(frame: dict[str, Any], header_mode: bool) -> str | None:
    """The op name a frame must produce, "fatal", or None (a tick or partial fragment)."""
    if frame["kind"] == "tick":
        return None
    header = frame["header"]
    if (header == "pass_through") == header_mode:
        return "fatal"  # the wrong format for the negotiated flags (frame_formats_* probes)
    if header == "dist_frag_hdr" or (header == "dist_frag_cont" and "ctrl" not in frame):
        return None
    return str(frame["op"])


STREAM_FILES = sorted(
    Path(p).relative_to(VECTORS).as_posix()
    for p in glob.glob(str(VECTORS / "dist" / "*.json"))
    + glob.glob(str(VECTORS / "foreign_node" / "*.json"))
    if "probe_results" not in p
)


def _directions(name: str) -> list[tuple[DistFlag, list[dict[str, Any]]]]:
    """(negotiated flags, frames after the handshake) per connection and direction."""
    out = []
    for connection in load_json(name)["connections"]:
        frames = connection["frames"]
        flags = _handshake_flags(frames)
        for side in ("initiator", "acceptor"):
            dist = [f for f in frames if f["from"] == side and f["kind"] != "handshake"]
            if dist:
                out.append((flags, dist))
    return out


@pytest.mark.parametrize("name", STREAM_FILES)
def test_replay_stream(name: str) -> None:
    for flags, frames in _directions(name):
        receiver = conn(flags)
        for number, frame in enumerate(frames):
            expected = _expected_outcome(frame, receiver.header_mode)
            where = f"{name} frame {number} ({frame.get('header')} {frame.get('op')})"
            if expected == "fatal":
                # The BEAM hung up on the probe here ("Got message from incompatible erlang").
                fails(receiver, frame_bytes(frame), match="other frame format")
                break
            events = receiver.receive_data(frame_bytes(frame), 0.0)
            if expected is None:
                assert events == [], where
                continue
            assert len(events) == 1, where
            event = events[0]
            assert type(event) is OP_NAMES[expected], where
            assert not isinstance(event, DeferredMessage)
            ctrl, payload = c.to_terms(event)
            assert_rendered(ctrl, frame["ctrl"])
            if frame.get("msg") is not None:
                assert_rendered(payload, frame["msg"])
        assert receiver.pending_fragment_bytes == 0


def test_replay_covers_both_formats_and_fragments() -> None:
    # Guards the replay above against silently testing less than it claims.
    headers = {f.get("header") for name in STREAM_FILES for _, frames in _directions(name)
               for f in frames}
    assert {"pass_through", "dist_hdr", "dist_frag_hdr", "dist_frag_cont", None} <= headers


@pytest.mark.parametrize("name", ["dist/ctrl_25a_28b.json", "foreign_node/iex_connects.json"])
def test_replay_in_arbitrary_pieces(name: str) -> None:
    # The same stream cut at random places (and byte by byte) gives the same events.
    for flags, frames in _directions(name):
        stream = b"".join(frame_bytes(f) for f in frames)
        reference = conn(flags).receive_data(stream, 0.0)
        assert len(reference) >= sum(1 for f in frames if f.get("ctrl") is not None)
        rng = random.Random(name)
        receiver = conn(flags)
        got: list[Event] = []
        pos = 0
        while pos < len(stream):
            size = rng.choice([1, 2, 3, 5, 100, 1500, 70000])
            got += receiver.receive_data(stream[pos:pos + size], 0.0)
            pos += size
        assert got == reference
        one_by_one = conn(flags)
        view = memoryview(stream)
        got = []
        for i in range(len(stream)):
            got += one_by_one.receive_data(view[i:i + 1], 0.0)
        assert got == reference


@pytest.mark.parametrize("release", ["25", "28"])
def test_fragmented_message_vector(release: str) -> None:
    vector = load_json(f"control/fragmented_message_otp{release}.json")
    fragments = vector["fragments"]
    receiver = conn(FULL)
    # 'sink' was put in the cache by an earlier big message that the file leaves out
    # (it is in foreign_node/frame_formats_frag_*.json, replayed above): pre-load it.
    reused = [(s["cache_index"], s["atom"]) for s in fragments[0]["atom_cache_detail"]
              if not s["new"]]
    assert [type(e) for e in receiver.receive_data(atom_cache_frame(reused), 0.0)] == [c.Link]
    for frame in vector["preceding_frames"]:
        assert len(receiver.receive_data(bytes.fromhex(frame["hex"]), 0.0)) == 1
    assert len(fragments) == 2
    assert receiver.receive_data(frame_bytes(fragments[0]), 0.0) == []
    assert receiver.pending_fragment_bytes > 0
    receiver.receive_data(TICK, 0.0)  # ticks may come between fragments
    (event,) = receiver.receive_data(frame_bytes(fragments[1]), 0.0)
    assert isinstance(event, c.RegSend), event
    assert receiver.pending_fragment_bytes == 0
    assert_rendered((6, event.from_pid, Atom(""), event.to_name), fragments[1]["ctrl"])
    tag, blob = event.message
    assert tag == Atom("big70k") and isinstance(blob, bytes) and len(blob) == 70_000
    assert render(event.message).startswith(fragments[1]["msg_prefix"])


# --- our frames through our receiver --------------------------------------------------------


def loop_back(sender: Connection, receiver: Connection) -> list[Event]:
    events: list[Event] = []
    for chunk in sender.data_to_send():
        events += receiver.receive_data(chunk, 0.0)
    return events


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=60, deadline=None)
@given(messages=st.lists(control_messages, min_size=1, max_size=8),
       fragment_size=st.integers(1, 200))
def test_loop_back(mode: str, messages: list[Any], fragment_size: int) -> None:
    flags = MODES[mode]
    sender = conn(flags, fragment_size=fragment_size)
    receiver = conn(flags)
    for msg in messages:
        sender.send(msg)
    assert loop_back(sender, receiver) == messages
    assert receiver.pending_fragment_bytes == 0


@settings(max_examples=60, deadline=None)
@given(messages=st.lists(control_messages, min_size=1, max_size=6), data=st.data())
def test_loop_back_in_pieces(messages: list[Any], data: st.DataObject) -> None:
    # Whatever the reads look like (ticks in between, packets split anywhere), the same
    # messages come out.
    sender = conn(FULL, fragment_size=50)
    stream = bytearray()
    for msg in messages:
        sender.send(msg)
        stream += sender.data_to_send()[0] + TICK
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=20)))
    receiver = conn(FULL)
    events: list[Event] = []
    for begin, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        events += receiver.receive_data(bytes(stream[begin:end]), 0.0)
    assert events == messages


@pytest.mark.parametrize("mode", MODES)
def test_frame_format_on_the_wire(mode: str) -> None:
    sender = conn(MODES[mode], fragment_size=64)
    sender.send(c.Link(P1, P2))
    small = sender.data_to_send()[0]
    assert int.from_bytes(small[:4], "big") == len(small) - 4
    if mode == "pass_through":
        assert small[4:6] == bytes((112, 131))
        assert small.count(131) >= 1
    else:
        assert small[4:7] == bytes((131, 68, 0))  # no atom cache refs, no 131 inside
    sender.send(c.SendSender(P1, P2, b"x" * 200))
    (big,) = sender.data_to_send()
    kinds = []
    pos = 0
    while pos < len(big):
        length = int.from_bytes(big[pos:pos + 4], "big")
        kinds.append(bytes(big[pos + 4:pos + 6]))
        pos += 4 + length
    assert pos == len(big)
    if mode in ("fragments", "both"):
        assert kinds[0] == bytes((131, 69)) and len(kinds) > 2
        assert set(kinds[1:]) == {bytes((131, 70))}
    else:
        assert len(kinds) == 1


def test_fragment_size_boundary() -> None:
    # A body of exactly fragment_size bytes goes whole; one byte more is fragmented.
    probe = conn(FULL)
    probe.send(c.SendSender(P1, P2, b""))
    base = len(probe.data_to_send()[0]) - 7  # body of the message around an empty binary
    for extra, expected_frames in ((0, 1), (1, 2)):
        sender = conn(FULL, fragment_size=base + 10)
        sender.send(c.SendSender(P1, P2, b"y" * (10 + extra)))
        (data,) = sender.data_to_send()
        receiver = conn(FULL)
        assert receiver.receive_data(data, 0.0) == [c.SendSender(P1, P2, b"y" * (10 + extra))]
        assert data.count(bytes((131, 70))) == expected_frames - 1


def test_interleaved_fragment_sequences() -> None:
    sender = conn(FULL, fragment_size=7)
    first = c.RegSend(P1, Atom("one"), b"1" * 30)
    second = c.SendSender(P1, P2, [b"2" * 20, Atom("two")])
    frames: dict[int, list[bytes]] = {}
    for msg in (first, second):
        sender.send(msg)
        data = bytes(sender.data_to_send()[0])
        pos, parts = 0, []
        while pos < len(data):
            end = pos + 4 + int.from_bytes(data[pos:pos + 4], "big")
            parts.append(data[pos:end])
            pos = end
        frames[len(frames)] = parts
    assert len(frames[0]) > 3 and len(frames[1]) > 3
    receiver = conn(FULL)
    events: list[Event] = []
    a, b = frames[0], frames[1]
    order = [b[0], a[0], a[1], b[1], TICK, a[2], b[2], *b[3:], *a[3:]]
    for data in order:
        events += receiver.receive_data(data, 0.0)
    assert events == [second, first]  # in the order they completed
    assert receiver.pending_fragment_bytes == 0


def test_send_is_batched_into_one_chunk() -> None:
    sender = conn(FULL)
    for i in range(100):
        sender.send(c.SendSender(P1, P2, i))
    chunks = sender.data_to_send()
    assert len(chunks) == 1 and isinstance(chunks[0], bytearray)
    assert sender.data_to_send() == []
    events = conn(FULL).receive_data(chunks[0], 0.0)
    assert [e.message for e in events] == list(range(100))  # type: ignore[union-attr]


def test_send_refuses_ops_the_peer_did_not_negotiate() -> None:
    old_peer = conn(PASS & ~(DistFlag.SEND_SENDER | DistFlag.ALIAS | DistFlag.ALTACT_SIG))
    for msg in (c.SendSender(P1, P2, 1), c.AliasSend(P1, R, 1), c.AltactSigSend(4, P1, R, 1)):
        with pytest.raises(LocalProtocolError, match="needs"):
            old_peer.send(msg)
    assert old_peer.data_to_send() == []
    old_peer.send(c.Send(P2, 1))  # the legacy form is fine
    assert len(old_peer.data_to_send()) == 1


@pytest.mark.parametrize("mode", MODES)
def test_unencodable_message_leaves_nothing_queued(mode: str) -> None:
    sender = conn(MODES[mode])
    sender.send(c.SendSender(P1, P2, "before"))
    with pytest.raises(EncodeError):
        sender.send(c.SendSender(P1, P2, [1, object()]))
    sender.send(c.SendSender(P1, P2, "after"))
    receiver = conn(MODES[mode])
    assert [e.message for e in loop_back(sender, receiver)] == [  # type: ignore[union-attr]
        b"before", b"after"]


# --- ticks and net_ticktime -----------------------------------------------------------------


def test_tick_when_idle() -> None:
    machine = conn(now=100.0, net_ticktime=60)
    assert machine.get_timer() == 115.0
    machine.handle_timer(114.9)  # early: nothing happens
    assert machine.data_to_send() == [] and machine.get_timer() == 115.0
    machine.handle_timer(115.0)
    assert machine.data_to_send() == [TICK]
    assert machine.get_timer() == 130.0
    machine.handle_timer(115.0)  # already handled
    assert machine.data_to_send() == []
    machine.handle_timer(130.0)
    assert machine.data_to_send() == [TICK]


def test_no_tick_when_busy() -> None:
    machine = conn(now=0.0, net_ticktime=8, tick_intensity=4)
    machine.send(c.SendSender(P1, P2, 1))
    machine.handle_timer(2.0)
    (data,) = machine.data_to_send()
    assert not data.endswith(TICK)
    machine.handle_timer(4.0)  # nothing sent in the last period
    assert machine.data_to_send() == [TICK]


def test_net_ticktime_expiry() -> None:
    machine = conn(now=0.0, net_ticktime=60)
    for t in (15.0, 30.0, 45.0):
        machine.handle_timer(t)
    with pytest.raises(NetTickTimeout, match=r"nothing received from a@vm for 60\.0 s"):
        machine.handle_timer(60.0)
    assert machine.state is ConnectionState.FAILED
    assert machine.get_timer() == float("inf")
    for call in (lambda: machine.handle_timer(75.0), lambda: machine.receive_data(TICK, 75.0),
                 lambda: machine.send(c.Link(P1, P2))):
        with pytest.raises(LocalProtocolError, match="failed"):
            call()


def test_received_ticks_keep_the_connection_alive() -> None:
    machine = conn(now=0.0, net_ticktime=60)
    machine.receive_data(TICK, 50.0)
    for t in (15.0, 30.0, 45.0, 60.0, 75.0, 90.0, 105.0):
        machine.handle_timer(t)
    with pytest.raises(NetTickTimeout):
        machine.handle_timer(120.0)


def test_partial_packets_count_as_received() -> None:
    machine = conn(now=0.0, net_ticktime=4, tick_intensity=4)
    machine.receive_data(b"\x00\x00", 3.5)
    for t in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0):
        machine.handle_timer(t)
    with pytest.raises(NetTickTimeout):
        machine.handle_timer(8.0)


def test_late_timer_counts_one_period() -> None:
    machine = conn(now=0.0, net_ticktime=60)
    machine.receive_data(TICK, 90.0)
    machine.handle_timer(100.0)  # several periods late (a stalled loop): one firing
    assert machine.data_to_send() == [TICK]
    assert machine.get_timer() == 115.0


def test_bad_configuration() -> None:
    with pytest.raises(LocalProtocolError):
        conn(net_ticktime=0)
    with pytest.raises(LocalProtocolError):
        conn(tick_intensity=0)
    with pytest.raises(LocalProtocolError):
        conn(fragment_size=0)


# --- hostile input --------------------------------------------------------------------------


def _valid_frame(flags: DistFlag) -> bytes:
    sender = conn(flags)
    sender.send(c.RegSend(P1, Atom("rex"), (Atom("hello"), [1, 2, 3])))
    return bytes(sender.data_to_send()[0])


VALID_EVENT = c.RegSend(P1, Atom("rex"), (Atom("hello"), [1, 2, 3]))


@pytest.mark.parametrize("mode", MODES)
def test_every_truncation_of_a_frame_fails_the_connection(mode: str) -> None:
    frame = _valid_frame(MODES[mode])
    body = frame[4:]
    for cut in range(1, len(body)):
        fails(conn(MODES[mode]), packet(body[:cut]))
        # and with garbage appended instead
        fails(conn(MODES[mode]), packet(body + b"\x00" * cut))


@pytest.mark.parametrize("mode", MODES)
def test_messages_before_a_bad_packet_come_with_the_error(mode: str) -> None:
    # BEAM handles the packets before the bad one, then disconnects: the error carries them.
    good = _valid_frame(MODES[mode])
    receiver = conn(MODES[mode])
    bad = packet(b"\x70\x83\x01" if mode == "pass_through" else b"\x83\x44\x00\x01")
    error = fails(receiver, good + TICK + good + bad + good)
    assert error.events == (VALID_EVENT, VALID_EVENT)
    assert isinstance(error.error, DecodeError) and "unknown tag 1" in error.description
    assert error.peer == "a@vm" and str(error).startswith("a@vm: ")
    # the same when the bad packet completes one that began in an earlier read
    receiver = conn(MODES[mode])
    assert receiver.receive_data(good[:5], 0.0) == []
    error = fails(receiver, good[5:] + packet(b"\x00"))
    assert error.events == (VALID_EVENT,)


def test_unknown_operations_fail_the_connection() -> None:
    # erts dist.c: an operation it does not know is an "Invalid distribution message", and
    # the connection is killed; so it is here (no UnknownControl event reaches the runtime).
    for ctrl, payload in (((99, Atom("x")), None), ((5, P1, P2), None), ((17,), 1)):
        body = bytes((131, 68, 0)) + etf.encode(ctrl)[1:]
        if payload is not None:
            body += etf.encode(payload)[1:]
        error = fails(conn(FULL), packet(body), match="unknown control operation")
        assert str(ctrl[0]) in error.description
        pass_body = b"\x70" + etf.encode(ctrl) + (b"" if payload is None else etf.encode(payload))
        fails(conn(PASS), packet(pass_body), match="unknown control operation")


def test_lying_lengths() -> None:
    receiver = conn(FULL, max_message_size=1000)
    # A length that claims more than arrives: nothing happens yet, nothing is allocated for it.
    assert receiver.receive_data((999).to_bytes(4, "big") + b"\x83\x44", 0.0) == []
    fails(conn(FULL, max_message_size=1000), (1001).to_bytes(4, "big"),
          match="1001-byte packet; the limit is 1000")
    # Announced only after a packet was split over reads, too.
    receiver3 = conn(FULL, max_message_size=1000)
    receiver3.receive_data(b"\x00", 0.0)
    fails(receiver3, b"\xff\xff\xff", match="limit")


def test_compressed_terms_inflate_within_the_packet_limit() -> None:
    # A compressed payload may not inflate beyond max_message_size (which bounds a packet).
    ctrl = etf.encode((22, P1, P2))[1:]
    payload = etf.encode(b"z" * 5000, compressed=True)[1:]
    assert payload[0] == etf.COMPRESSED and len(payload) < 200
    body = bytes((131, 68, 0)) + ctrl + payload
    (event,) = conn(FULL, max_message_size=6000).receive_data(packet(body), 0.0)
    assert event == c.SendSender(P1, P2, b"z" * 5000)
    error = fails(conn(FULL, max_message_size=4000), packet(body), match="limit is 4000")
    assert isinstance(error.error, DecodeError) and error.error.tag == etf.COMPRESSED
    # a compressed term is only valid at the top: also not as a remembered head's last element
    receiver = conn(FULL)
    monitor = c.MonitorP(P1, Atom("srv"), R)
    sender = conn(FULL)
    sender.send(monitor)
    frame = bytes(sender.data_to_send()[0])
    assert receiver.receive_data(frame, 0.0) == [monitor]
    ref_at = frame.rindex(etf.encode(R)[1:])
    raw = etf.encode(R)[1:]
    squeezed = frame[7:ref_at] + b"\x50" + len(raw).to_bytes(4, "big") + zlib.compress(raw)
    fails(receiver, packet(bytes((131, 68, 0)) + squeezed), match="top level")


def test_wrong_format_for_the_flags() -> None:
    fails(conn(PASS), _valid_frame(FULL), match="other frame format")
    fails(conn(FULL), _valid_frame(PASS), match="other frame format")


def _frag(kind: int, seq: int, frag: int, data: bytes, refs: bytes = b"\x00") -> bytes:
    ids = seq.to_bytes(8, "big") + frag.to_bytes(8, "big")
    return packet(bytes((131, kind)) + ids + (refs if kind == 69 else b"") + data)


def test_fragment_sequences_that_never_complete_are_bounded() -> None:
    receiver = conn(FULL, max_message_size=10_000, max_pending_fragments=8)
    for seq in range(1, 9):
        assert receiver.receive_data(_frag(69, seq, 3, b"z" * 500), 0.0) == []
    assert receiver.pending_fragment_bytes == 4000
    fails(receiver, _frag(69, 9, 3, b"z" * 500), match="8 already open")
    # continuations that would overflow the bytes held
    receiver = conn(FULL, max_message_size=1000)
    receiver.receive_data(_frag(69, 1, 3, b"z" * 500), 0.0)
    fails(receiver, _frag(70, 1, 2, b"z" * 900), match="the limit is 1000")


def test_fragment_errors() -> None:
    fails(conn(FULL), _frag(70, 5, 1, b"x"), match="not open")
    receiver = conn(FULL)
    assert receiver.receive_data(_frag(69, 5, 3, b"x"), 0.0) == []
    fails(receiver, _frag(70, 5, 1, b"x"), match="expected 2")
    # A sequence whose pieces do not make a message.
    receiver = conn(FULL)
    receiver.receive_data(_frag(69, 6, 2, b"\x68\x02"), 0.0)
    fails(receiver, _frag(70, 6, 1, b"\x61"), match="truncated")
    fails(conn(FULL), _frag(69, 7, 0, b"\x61"), match="fragment id 0")


def test_a_new_first_fragment_for_an_open_sequence_fails_the_connection() -> None:
    # BEAM: a first fragment whose sequence id is already in use is a data error.
    sender = conn(FULL, fragment_size=10)
    msg = c.SendSender(P1, P2, b"q" * 40)
    sender.send(msg)
    (data,) = sender.data_to_send()
    first_len = int.from_bytes(data[:4], "big") + 4
    receiver = conn(FULL)
    assert receiver.receive_data(data[:first_len], 0.0) == []
    fails(receiver, bytes(data), match="restarted")


def test_single_fragment_sequence() -> None:
    # A 131,69 header with FragmentId 1 is a whole message.
    sender = conn(FULL)
    sender.send(c.Link(P1, P2))
    data = bytes(sender.data_to_send()[0])
    body = data[7:]  # after length and 131,68,0
    receiver = conn(FULL)
    assert receiver.receive_data(_frag(69, 9, 1, body), 0.0) == [c.Link(P1, P2)]


def test_outbound_sequence_ids_differ() -> None:
    sender = conn(FULL, fragment_size=8)
    ids = []
    for _ in range(3):
        sender.send(c.SendSender(P1, P2, b"w" * 20))
        (data,) = sender.data_to_send()
        assert data[4:6] == bytes((131, 69))
        ids.append(int.from_bytes(data[6:14], "big"))
    assert len(set(ids)) == 3



# --- repeated control tuples (the receive memo and the send cache) ---------------------------


def _reg_send_frame(header: bytes, payload: int) -> bytes:
    """REG_SEND {6, Pid, '', ATOM_CACHE_REF 0} + a small integer payload, behind ``header``."""
    pid = bytes((88, 82, 0)) + bytes(12)  # pid on the node in cache ref 0 as well
    ctrl = bytes((104, 4, 97, 6)) + pid + bytes((119, 0, 82, 0))
    return packet(bytes((131, 68)) + header + ctrl + bytes((97, payload)))


def test_repeated_control_bytes_follow_the_atom_cache() -> None:
    # The same control bytes after a header that redefines the slot they refer to must
    # decode to the new atom, not to what an earlier identical tuple meant.
    receiver = conn(FULL)
    define_sink = build_atom_cache_header([(3, "sink", True)])
    reuse = build_atom_cache_header([(3, "sink", False)])
    define_other = build_atom_cache_header([(3, "other", True)])
    stream = [(define_sink, "sink"), (reuse, "sink"), (reuse, "sink"),
              (define_other, "other"), (reuse, "other"), (define_sink, "sink"),
              (reuse, "sink")]
    for n, (header, name) in enumerate(stream):
        (event,) = receiver.receive_data(_reg_send_frame(header, n), 0.0)
        assert event == c.RegSend(Pid(Atom(name), 0, 0, 0), Atom(name), n)


def test_repeated_control_tuple_without_its_payload_fails_the_connection() -> None:
    header = build_atom_cache_header([(3, "sink", True)])
    reuse = build_atom_cache_header([(3, "sink", False)])
    whole = _reg_send_frame(reuse, 2)
    body = whole[4:]
    # payload missing, payload truncated, a term too many
    for bad, why in ((body[:-1], "truncated"), (body[:-2], "without its message"),
                     (body + b"\x61\x00", "after the payload")):
        receiver = conn(FULL)
        receiver.receive_data(_reg_send_frame(header, 1), 0.0)
        assert receiver.receive_data(whole, 0.0) == [
            c.RegSend(Pid(Atom("sink"), 0, 0, 0), Atom("sink"), 2)]
        fails(receiver, packet(bad), match=why)


@pytest.mark.parametrize("mode", MODES)
def test_repeated_sends_encode_as_the_first(mode: str) -> None:
    sends: list[c.ControlMessage] = [
        c.RegSend(P1, Atom("sink"), 1), c.SendSender(P1, P2, 2), c.Send(P2, 3),
        c.AliasSend(P1, R, 4)]
    first = conn(MODES[mode])
    for msg in sends:
        first.send(msg)
    once = first.data_to_send()[0]
    for _ in range(3):
        for msg in sends:
            first.send(msg)
        assert first.data_to_send()[0] == once
    receiver = conn(MODES[mode])
    assert receiver.receive_data(bytes(once) * 2, 0.0) == sends * 2


@pytest.mark.parametrize("mode", MODES)
def test_monitors_with_a_remembered_head_encode_as_fresh_ones(mode: str) -> None:
    refs = [Reference(Atom("a@vm"), 5, (n, 2, 3)) for n in range(4)]
    calls: list[c.ControlMessage] = [
        m for ref in refs for m in (c.MonitorP(P1, Atom("srv"), ref), c.MonitorP(P1, P2, ref),
                                    c.DemonitorP(P1, Atom("srv"), ref))]
    warm = conn(MODES[mode])
    for msg in calls:
        warm.send(msg)
    stream = bytes(warm.data_to_send()[0])
    assert conn(MODES[mode]).receive_data(stream, 0.0) == calls
    for msg in calls:  # each from a connection that never saw its head
        cold = conn(MODES[mode])
        cold.send(msg)
        chunk = bytes(cold.data_to_send()[0])
        assert stream.startswith(chunk)
        stream = stream[len(chunk):]
    assert stream == b""


def test_payload_builder_builds_what_from_terms_builds() -> None:
    ctrl = (22, P1, P2)
    build = c.payload_builder(ctrl)
    assert build is not None and build([1]) == c.from_terms(ctrl, [1]) == c.SendSender(P1, P2, [1])
    tt = (23, P1, P2, Atom("tok"))
    build = c.payload_builder(tt)
    assert build is not None and build(5) == c.SendSenderTt(P1, P2, Atom("tok"), 5)
    assert c.payload_builder((1, P1, P2)) is None  # LINK: no payload
    assert c.payload_builder((99, P1)) is None  # unknown operation
    with pytest.raises(RemoteProtocolError):
        c.payload_builder((22, P1))  # malformed


def test_last_builder_builds_what_from_terms_builds() -> None:
    ctrl = (19, P1, Atom("srv"), R)
    build = c.last_builder(ctrl)
    r2 = Reference(Atom("a@vm"), 5, (9, 9, 9))
    assert build is not None and build(r2) == c.from_terms((19, P1, Atom("srv"), r2))
    assert build(r2) == c.MonitorP(P1, Atom("srv"), r2) and build(R) == c.from_terms(ctrl)
    with pytest.raises(RemoteProtocolError, match="wrong type"):
        build(Atom("not_a_ref"))  # the one element it checks
    assert c.last_builder((22, P1, P2)) is None  # SEND_SENDER: a payload follows
    assert c.last_builder((99, P1)) is None  # unknown operation
    assert c.last_builder((19, P1)) is None  # too short: from_terms says what is wrong
    with pytest.raises(RemoteProtocolError):
        c.last_builder((19, Atom("not_a_pid"), Atom("srv"), R))  # malformed


def test_a_remembered_monitor_head_with_a_bad_last_element_fails_the_connection() -> None:
    receiver = conn(FULL)
    sender = conn(FULL)
    sender.send(c.MonitorP(P1, Atom("srv"), R))
    frame = bytes(sender.data_to_send()[0])
    assert receiver.receive_data(frame, 0.0) == [c.MonitorP(P1, Atom("srv"), R)]
    ref_at = frame.rindex(etf.encode(R)[1:])
    bad = frame[4:ref_at] + etf.encode(Atom("not_a_ref"))[1:]
    fails(receiver, packet(bad), match="wrong type")


def _monitor_frame(header: bytes, ref_word: int) -> bytes:
    """MONITOR_P {19, Pid, ATOM_CACHE_REF 0, Ref}: the head repeats, the reference does not."""
    pid = bytes((88, 82, 0)) + bytes(12)
    ref = bytes((90, 0, 1, 82, 0)) + bytes(4) + ref_word.to_bytes(4, "big")
    ctrl = bytes((104, 4, 97, 19)) + pid + bytes((82, 0)) + ref
    return packet(bytes((131, 68)) + header + ctrl)


def test_repeated_monitor_heads_follow_the_atom_cache() -> None:
    receiver = conn(FULL)
    define_a = build_atom_cache_header([(9, "server_a", True)])
    reuse = build_atom_cache_header([(9, "server_a", False)])
    define_b = build_atom_cache_header([(9, "server_b", True)])
    stream = [(define_a, "server_a"), (reuse, "server_a"), (reuse, "server_a"),
              (define_b, "server_b"), (reuse, "server_b"), (reuse, "server_b")]
    for n, (header, name) in enumerate(stream):
        (event,) = receiver.receive_data(_monitor_frame(header, n), 0.0)
        node = Atom(name)
        assert event == c.MonitorP(Pid(node, 0, 0, 0), node, Reference(node, 0, (n,)))


def test_a_control_tuple_with_a_strange_operation_fails_the_connection() -> None:
    for op in (b"\x6a", b"\x6c\x00\x00\x00\x01\x61\x13\x6a", b"\x46" + bytes(8)):  # [], [19], 0.0
        body = bytes((131, 68, 0, 104, 2)) + op + bytes((97, 1))
        fails(conn(FULL), packet(body), match="operation number")


def test_malformed_control_tuples_are_described_briefly() -> None:
    # The tuple is shown in the error cut short: a huge or deep one costs no more to report.
    deep: Any = 0
    for _ in range(5000):
        deep = (deep,)
    for bad_field in (10**9600, deep, b"x" * 1_000_000):
        body = bytes((131, 68, 0)) + etf.encode((1, P1, bad_field))[1:]
        error = fails(conn(FULL), packet(body), match="LINK|Link")
        assert len(str(error.error)) < 400


BIG = bytes(3 << 20)


@pytest.mark.parametrize("mode", MODES)
def test_a_payload_inflating_past_the_inline_limit_comes_out_deferred(mode: str) -> None:
    # The control message is decoded, the compressed payload is not: resolve() inflates it
    # (elsewhere, off the loop) to the message the inline decoding gives.
    flags = MODES[mode]
    msgs: list[c.ControlMessage] = [
        c.RegSend(P1, Atom("inbox"), BIG), c.SendSender(P1, P2, BIG),
        c.RegSend(P1, Atom("inbox"), BIG)]  # (the third: a remembered control tuple)
    frames = []
    for msg in msgs:
        sender = conn(flags, fragment_size=len(BIG) * 2)  # (one fragment: it is rewritten)
        sender.send(msg)
        frame = bytes(sender.data_to_send()[0])
        at = frame.index(etf.encode(BIG)[1:6])
        frames.append(packet(frame[4:at] + etf.encode(BIG, compressed=9)[1:]))
    receiver = conn(flags, inline_inflate_limit=1 << 20)
    deferred = receiver.receive_data(b"".join(frames), 0.0)
    assert receiver.deferred == 3
    assert all(isinstance(d, DeferredMessage) and d.size == len(BIG) + 5 for d in deferred)
    assert [d.resolve() for d in deferred if isinstance(d, DeferredMessage)] == msgs
    # Below the limit, or with none given, it is inflated at once.
    assert conn(flags, inline_inflate_limit=len(BIG) + 5).receive_data(frames[0], 0.0) == \
        msgs[:1]
    assert conn(flags).receive_data(frames[0], 0.0) == msgs[:1]


def test_a_deferred_payload_is_checked_when_it_is_resolved() -> None:
    ctrl = etf.encode((6, P1, Atom(""), Atom("inbox")))[1:]
    zipped = etf.encode(BIG, compressed=9)[1:]
    receiver = conn(FULL, inline_inflate_limit=1 << 20)
    cases = {
        "less than": zipped[:1] + (len(BIG) + 6).to_bytes(4, "big") + zipped[5:],
        "bytes after the payload": zipped + b"\x6a",
    }
    for why, payload in cases.items():
        (deferred,) = receiver.receive_data(packet(bytes((131, 68, 0)) + ctrl + payload), 0.0)
        assert isinstance(deferred, DeferredMessage)
        with pytest.raises(RemoteProtocolError, match=why):
            deferred.resolve()
    # A payload that does not decode: the error keeps nothing of the decode (its frames and
    # the error it came from would hold what it built, to be freed on the event loop).
    bad = zlib.compress(bytes((108, 0, 0, 0, 2, 119, 1, 0xFF)) + bytes(2 << 20), 9)
    zipped_bad = bytes((80,)) + (8 + (2 << 20)).to_bytes(4, "big") + bad
    (deferred,) = receiver.receive_data(packet(bytes((131, 68, 0)) + ctrl + zipped_bad), 0.0)
    assert isinstance(deferred, DeferredMessage)
    with pytest.raises(DecodeError, match="UTF-8") as info:
        deferred.resolve()
    assert info.value.__context__ is None and info.value.__cause__ is None
    tb = info.value.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_name != "resolve":
        tb = tb.tb_next
    assert tb is not None and tb.tb_next is None  # raised by resolve itself
    # An operation nobody knows is refused when its payload is there to show.
    unknown = etf.encode((99, P1))[1:]
    (deferred,) = receiver.receive_data(packet(bytes((131, 68, 0)) + unknown + zipped), 0.0)
    assert isinstance(deferred, DeferredMessage)
    with pytest.raises(RemoteProtocolError, match="unknown control operation 99"):
        deferred.resolve()
    # A claim past the frame limit is refused at once, not deferred.
    small = conn(FULL, inline_inflate_limit=1 << 20, max_message_size=2 << 20)
    fails(small, packet(bytes((131, 68, 0)) + ctrl + zipped), match="limit")


@pytest.mark.parametrize("mode", MODES)
def test_a_stream_of_sends_reuses_its_frame_start_only_for_the_same_ends(mode: str) -> None:
    # The last send's header and control tuple are reused while sender and destination are
    # the same objects; equal new objects, another destination or kind encode afresh, and a
    # payload that cannot be encoded leaves nothing behind. Monitors the same, but for their
    # reference.
    p2_again = Pid(Atom("py@vm"), 2, 0, 6)
    r2 = Reference(Atom("a@vm"), 5, (9, 2, 3))
    sends: list[c.ControlMessage] = [
        c.SendSender(P1, P2, 1), c.SendSender(P1, P2, 2), c.SendSender(P1, p2_again, 3),
        c.SendSender(P2, P1, 4), c.RegSend(P1, Atom("sink"), 5), c.RegSend(P1, Atom("sink"), 6),
        c.RegSend(P1, Atom("other"), 7), c.Send(P2, 8), c.Send(P2, 9), c.SendSender(P1, P2, 10),
        c.MonitorP(P1, Atom("srv"), R), c.MonitorP(P1, Atom("srv"), r2),
        c.DemonitorP(P1, Atom("srv"), r2), c.MonitorP(P1, P2, R), c.MonitorP(P1, p2_again, r2),
        c.DemonitorP(P1, Atom("srv"), R)]
    sender = conn(MODES[mode])
    for msg in sends:
        sender.send(msg)
        with pytest.raises(EncodeError):
            sender.send(c.SendSender(P1, P2, object()))
    stream = bytes(sender.data_to_send()[0])
    for msg in sends:  # byte for byte what a fresh connection sends
        fresh = conn(MODES[mode])
        fresh.send(msg)
        chunk = bytes(fresh.data_to_send()[0])
        assert stream.startswith(chunk), msg
        stream = stream[len(chunk):]
    assert stream == b""
    no_sender = conn(MODES[mode] & ~DistFlag.SEND_SENDER)
    for _ in range(2):  # refused every time, not only before a first success
        with pytest.raises(LocalProtocolError, match="SEND_SENDER"):
            no_sender.send(c.SendSender(P1, P2, 1))
    assert no_sender.pending_bytes == 0


@pytest.mark.parametrize("send_sender", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_send_message_queues_what_send_queues(mode: str, send_sender: bool) -> None:
    # To a pid (SEND_SENDER, or SEND without the flag), a name (REG_SEND), an alias
    # (ALIAS_SEND): the same bytes as the message built and sent, repeated or not, and
    # nothing once the connection failed.
    flags = MODES[mode] if send_sender else MODES[mode] & ~DistFlag.SEND_SENDER
    p2_again = Pid(Atom("py@vm"), 2, 0, 6)
    alias = Reference(Atom("py@vm"), 6, (7, 8, 9))
    calls: list[tuple[Pid, Pid | Atom | Reference, int]] = [
        (P1, P2, 1), (P1, P2, 2), (P2, P2, 3), (P1, p2_again, 4), (P1, Atom("sink"), 5),
        (P1, Atom("sink"), 6), (P2, Atom("sink"), 7), (P1, alias, 8), (P1, P2, 9)]

    def built(from_pid: Pid, to: Pid | Atom | Reference, message: int) -> c.ControlMessage:
        if isinstance(to, Atom):
            return c.RegSend(from_pid, to, message)
        if isinstance(to, Reference):
            return c.AliasSend(from_pid, to, message)
        return c.SendSender(from_pid, to, message) if send_sender else c.Send(to, message)

    by_message, by_send = conn(flags), conn(flags)
    for from_pid, to, message in calls:
        by_message.send_message(from_pid, to, message)
        by_send.send(built(from_pid, to, message))
    (stream,) = by_message.data_to_send()
    assert [stream] == by_send.data_to_send()
    assert conn(flags).receive_data(bytes(stream), 0.0) == [built(*call) for call in calls]


def test_send_message_on_a_failed_connection_raises() -> None:
    failed = conn(FULL)
    failed.send_message(P1, Atom("sink"), 1)  # (remembered)
    fails(failed, packet(b"\x00\x01"))
    with pytest.raises(LocalProtocolError, match="cannot send"):
        failed.send_message(P1, Atom("sink"), 2)


def test_decoding_size_weighs_what_a_read_would_decode() -> None:
    # The runtime decodes a read elsewhere when it would decode much: the packets it
    # completes and the fragmented messages it ends, not the start of a big one.
    big = c.RegSend(P1, Atom("inbox"), bytes(300_000))
    whole = conn(HDR_ONLY)
    whole.send(big)
    frame = bytes(whole.data_to_send()[0])
    receiver = conn(HDR_ONLY)
    assert receiver.decoding_sizes(TICK + frame + TICK + frame) == (2 * (len(frame) - 4),
                                                                   len(frame) - 4)
    reads = [frame[:2], frame[2:100_000], frame[100_000:200_000], frame[200_000:]]
    for i, read in enumerate(reads):
        weight, biggest = receiver.decoding_sizes(read)
        assert biggest == weight
        assert (weight >= len(frame) - 4) if i == len(reads) - 1 else weight == 0, i
        assert receiver.receive_data(read, 0.0) == ([big] if i == len(reads) - 1 else [])
    # Fragmented: one fragment per read, only the last one weighs. A binary weighs
    # 1/BINARY_DISCOUNT of its bytes (its decoding is a copy), other terms all of theirs.
    dense = c.RegSend(P1, Atom("inbox"), [(Atom("row"), i) for i in range(40_000)])
    for msg, binary in ((big, 300_000), (dense, 0)):
        cut = conn(FULL, fragment_size=64 * 1024)
        cut.send(msg)
        stream = bytes(cut.data_to_send()[0])
        others = len(stream) - binary  # (headers, the control message, the other terms)
        receiver = conn(FULL)
        pos, weights = 0, []
        while pos < len(stream):
            end = pos + 4 + int.from_bytes(stream[pos:pos + 4], "big")
            weights.append(receiver.decoding_sizes(stream[pos:end])[0])
            events = receiver.receive_data(stream[pos:end], 0.0)
            pos = end
        assert len(weights) >= 5 and weights[:-1] == [0] * (len(weights) - 1)
        # not counted: lengths, fragment headers before the last (the last one's counts)
        headers = 4 + 19 + (len(weights) - 2) * (4 + 18) + 4
        assert weights[-1] - binary // BINARY_DISCOUNT == others - headers
        assert events == [msg]


def _fragmented(msg: c.ControlMessage) -> bytes:
    sender = conn(FULL, fragment_size=64 * 1024)
    sender.send(msg)
    return bytes(sender.data_to_send()[0])


@pytest.mark.parametrize("payload", [
    bytes(range(256)) * 1000,
    (Atom("tag"), 0, bytes(300_000)),
    (Atom("put"), [1, 2], (Atom("key"), (b"", bytes(200_000)))),
])
def test_a_message_ending_in_a_big_binary_is_never_joined_whole(
        payload: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its binary is joined straight out of the fragments; the rest decodes around an empty
    # binary in its place.
    msg = c.RegSend(P1, Atom("inbox"), payload)
    stream = _fragmented(msg)
    monkeypatch.setattr(Fragments, "joined", lambda self: pytest.fail("joined whole"))
    receiver = conn(FULL)
    assert receiver.receive_data(stream, 0.0) == [msg]
    assert receiver.receive_data(stream, 0.0) == [msg]  # (its control message remembered)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=150_000), min_size=1, max_size=8))
def test_fragments_cut_by_reads_anywhere_are_kept_unjoined(sizes: list[int]) -> None:
    # Reads that end inside fragments: a continuation fragment in two pieces goes to the
    # assembler as two pieces; a big binary still comes out unjoined, the rest as sent.
    msgs: list[c.ControlMessage] = [
            c.RegSend(P1, Atom("inbox"), (Atom("tag"), bytes(range(256)) * 800)),
            c.RegSend(P1, Atom("inbox"), [(Atom("row"), i) for i in range(20_000)]),
            c.SendSender(P1, P2, 1)]
    sender = conn(FULL, fragment_size=64 * 1024)
    for msg in msgs:
        sender.send(msg)
    stream = bytes(sender.data_to_send()[0])
    receiver, pos = conn(FULL), 0
    events: list[Event] = []
    joined: list[int] = []
    whole = Fragments.joined

    def counted(self: Fragments) -> bytes:
        joined.append(self.size)
        return whole(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Fragments, "joined", counted)
        for size in itertools.cycle(sizes):
            if pos >= len(stream):
                break
            events += receiver.receive_data(stream[pos:pos + size], 0.0)
            pos += size
    assert events == msgs
    assert len(joined) == 1  # (the list: it does not end with a binary)


def test_a_continuation_fragment_split_by_reads_is_not_joined(
        monkeypatch: pytest.MonkeyPatch) -> None:
    msg = c.RegSend(P1, Atom("inbox"), (Atom("tag"), bytes(300_000)))
    stream = _fragmented(msg)
    split: list[bool] = []
    handed = Connection._continuation

    def counted(self: Connection, pieces: list[Any], events: list[Event]) -> bool:
        split.append(handed(self, pieces, events))
        return split[-1]

    monkeypatch.setattr(Connection, "_continuation", counted)
    monkeypatch.setattr(Fragments, "joined", lambda self: pytest.fail("joined whole"))
    receiver, events = conn(FULL), []
    for pos in range(0, len(stream), 100_000):  # (fragments are 64 KiB: cut inside some)
        events += receiver.receive_data(stream[pos:pos + 100_000], 0.0)
    assert events == [msg] and split and all(split)


@pytest.mark.parametrize("payload", [
    bytes(range(256)) * 1000,
    (Atom("tag"), 0, bytes(300_000)),
    (Atom("put"), [1, 2], (Atom("key"), (b"", bytes(200_000)))),
    (Atom("small"), bytes(64 * 1024)),  # one fragment's worth: no fast path, same bytes
])
def test_a_message_ending_in_a_big_binary_is_cut_into_the_fragments_it_always_was(
        payload: Any) -> None:
    # Its start is encoded around an empty binary and the fragments are cut from that and
    # the binary: byte for byte what encoding it whole and cutting that gives.
    msgs: list[c.ControlMessage] = [
        c.RegSend(P1, Atom("inbox"), payload), c.RegSend(P1, Atom("inbox"), payload),
        c.AliasSend(P1, R, payload), c.SendSender(P1, P2, (1, payload))]
    fast, whole = conn(FULL, fragment_size=64 * 1024), conn(FULL, fragment_size=64 * 1024)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(whole, "_ending_binary", lambda term: None)
        for msg in msgs:
            fast.send(msg)
            whole.send(msg)
            fast.send_message(P1, Atom("inbox"), payload)  # (the remembered frame start)
            whole.send_message(P1, Atom("inbox"), payload)
    stream = bytes(fast.data_to_send()[0])
    assert stream == bytes(whole.data_to_send()[0])
    assert len(conn(FULL).receive_data(stream, 0.0)) == 2 * len(msgs)


@pytest.mark.parametrize("payload", [
    [bytes(200_000)],  # in a list: [] comes after it
    {Atom("k"): bytes(200_000)},  # in a map
    (bytes(200_000), 1),  # not the last term
    (Atom("a"), BitBinary(bytes(200_000), 3)),  # a bitstring
    (Atom("a"), [1, 2], bytes(200_000), b""),  # a small binary last
])
def test_other_big_messages_are_joined_and_decoded_whole(payload: Any) -> None:
    msg = c.RegSend(P1, Atom("inbox"), payload)
    assert conn(FULL).receive_data(_fragmented(msg), 0.0) == [msg]


def test_a_broken_message_ending_in_a_binary_fails_as_it_would_whole() -> None:
    msg = c.RegSend(P1, Atom("inbox"), (Atom("tag"), bytes(200_000)))
    stream = bytearray(_fragmented(msg))
    ctrl_at = stream.index(etf.encode(Atom("inbox"))[1:])
    stream[ctrl_at - 2] = 0xFF  # the tag of the '' before the name: no tag
    error = fails(conn(FULL), bytes(stream), match="255")
    with pytest.MonkeyPatch.context() as patch:  # no binary seen ending it: joined whole
        patch.setattr(connection_module, "scan_binaries",
                      lambda *args: Binaries(0, -1, 0))
        whole = fails(conn(FULL), bytes(stream))
    assert str(error) == str(whole)


def test_a_binary_header_that_claims_more_than_the_message_weighs_no_less_than_it() -> None:
    # The first fragment announces a binary longer than the whole message: the message is
    # weighed by its real size (what the decoder will refuse, cheaply), never below zero.
    head = bytes((131, 69)) + (7).to_bytes(8, "big") + (2).to_bytes(8, "big") + b"\x00"
    ctrl = etf.encode((6, P1, Atom(""), Atom("inbox")))[1:]
    first = head + ctrl + bytes((109,)) + (1 << 30).to_bytes(4, "big") + b"x" * 100
    last = bytes((131, 70)) + (7).to_bytes(8, "big") + (1).to_bytes(8, "big") + b"y" * 100
    receiver = conn(FULL)
    framed = [len(p).to_bytes(4, "big") + p for p in (first, last)]
    assert receiver.decoding_sizes(framed[0]) == (0, 0)
    assert receiver.receive_data(framed[0], 0.0) == []
    weight, biggest = receiver.decoding_sizes(framed[1])
    assert 0 <= weight == biggest <= (len(first) + len(last)) // BINARY_DISCOUNT + 1
    with pytest.raises(FrameError):
        receiver.receive_data(framed[1], 0.0)


def test_a_frame_error_keeps_nothing_of_the_decode() -> None:
    # The error that ended a decode is kept without its traceback and the errors it came
    # from: their frames would keep the received bytes and all the decode built alive.
    bad_atom = bytes((119, 1, 0xFF))  # not UTF-8: the DecodeError comes from a codec error
    with pytest.raises(DecodeError) as direct:
        etf.decode(b"\x83" + bad_atom)
    assert direct.value.__context__ is not None  # (what the connection must not keep)
    ctrl = etf.encode((6, P1, Atom(""), Atom("x")))[1:]
    error = fails(conn(FULL), packet(bytes((131, 68, 0)) + ctrl + bad_atom), match="UTF-8")
    assert isinstance(error.error, DecodeError)
    assert error.error.__traceback__ is None and error.error.__context__ is None
    assert error.error.__cause__ is None


def test_fragments_keep_their_reads_alive_only_for_a_quarter_of_them_or_more() -> None:
    # A fragment is held as a view of the read it came in when it is a quarter of that read
    # or more (one copy, at the join); a smaller one is copied, so that what is held for
    # incomplete messages stays within 4 times the bytes counted for them.
    import sys
    stream_conn = conn(FULL, fragment_size=1000)
    stream_conn.send(c.RegSend(P1, Atom("inbox"), bytes(5000)))
    stream = bytes(stream_conn.data_to_send()[0])
    frames, pos = [], 0
    while pos < len(stream):
        end = pos + 4 + int.from_bytes(stream[pos:pos + 4], "big")
        frames.append(stream[pos:end])
        pos = end
    # (ticks beside it: 2 KB make the 1 KB fragment a third of its read, 8 KB a ninth)
    cases = ((frames[0], True), (frames[0] + TICK * 500, True), (frames[0] + TICK * 2000, False))
    for read_with_it, shared in cases:
        receiver = conn(FULL)
        before = sys.getrefcount(read_with_it)
        assert receiver.receive_data(read_with_it, 0.0) == []
        assert (sys.getrefcount(read_with_it) > before) is shared
        assert receiver.receive_data(b"".join(frames[1:]), 0.0) == [
            c.RegSend(P1, Atom("inbox"), bytes(5000))]
