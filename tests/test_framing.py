"""Length-prefixed framing: whole input, byte at a time, arbitrary splits, ticks, limits, and the
hand-over of unconsumed bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyerl_node.proto.errors import LocalProtocolError, RemoteProtocolError
from pyerl_node.proto.framing import PacketReader, frame


def test_frame() -> None:
    assert frame(b"sok", 2) == bytes.fromhex("0003736f6b")
    assert frame(b"", 4) == b"\x00\x00\x00\x00"  # a tick
    with pytest.raises(LocalProtocolError):
        frame(b"x" * 65536, 2)
    with pytest.raises(LocalProtocolError):
        frame(b"x", 3)


def test_reader_whole_and_byte_at_a_time() -> None:
    stream = frame(b"abc", 4) + frame(b"", 4) + frame(b"d" * 300, 4)
    whole = PacketReader(4)
    whole.feed(stream)
    assert list(whole) == [b"abc", b"", b"d" * 300]
    assert whole.next_packet() is None

    slow = PacketReader(4)
    got: list[bytes] = []
    for i in range(len(stream)):
        slow.feed(stream[i:i + 1])
        got.extend(slow)
    assert got == [b"abc", b"", b"d" * 300]


def test_reader_accepts_memoryview() -> None:
    reader = PacketReader(2)
    reader.feed(memoryview(frame(b"hello", 2)))
    assert reader.next_packet() == b"hello"


def test_take_rest_hands_over_unconsumed_bytes() -> None:
    reader = PacketReader(2)
    reader.feed(frame(b"a", 2) + b"\x00\x00\x00\x05hel")
    assert reader.next_packet() == b"a"
    assert reader.take_rest() == b"\x00\x00\x00\x05hel"
    assert reader.take_rest() == b""
    assert reader.next_packet() is None


def test_max_packet_refused_before_the_body_arrives() -> None:
    reader = PacketReader(4, max_packet=1000)
    reader.feed((1001).to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError, match="1001"):
        reader.next_packet()
    ok = PacketReader(4, max_packet=1000)
    ok.feed(frame(b"x" * 1000, 4))
    assert ok.next_packet() == b"x" * 1000


def test_bad_length_bytes() -> None:
    with pytest.raises(LocalProtocolError):
        PacketReader(3)


def test_captured_streams_split_back_into_their_frames() -> None:
    # A real connection's first packets after the handshake, in 4-byte framing.
    path = Path(__file__).resolve().parent / "vectors/handshake/otp25_to_otp25.json"
    capture = json.loads(path.read_text())
    frames = [bytes.fromhex(f["hex"]) for f in capture["first_frames_after_handshake"]
              if f["from"] == "acceptor"]
    reader = PacketReader(4)
    reader.feed(b"".join(frames))
    assert list(reader) == [f[4:] for f in frames]


@given(st.lists(st.binary(max_size=300), max_size=20), st.sampled_from([1, 2, 4]), st.data())
def test_any_split_gives_the_same_packets(
        payloads: list[bytes], length_bytes: int, data: st.DataObject) -> None:
    payloads = [p[: (1 << (8 * length_bytes)) - 1] for p in payloads]
    stream = b"".join(frame(p, length_bytes) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = PacketReader(length_bytes)
    got: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        reader.feed(stream[start:end])
        got.extend(reader)
    assert got == payloads
    assert reader.take_rest() == b""


def test_a_big_packet_in_small_reads_is_not_quadratic() -> None:
    # 8 MB in 64-byte reads: 131 072 feeds. A reader that copied its buffer on every feed
    # (bytes +=) would move ~550 GB and hit the test timeout; ours takes a fraction of a second.
    packet = bytes(range(256)) * (1 << 15)
    stream = frame(packet, 4) + frame(b"next", 4)
    reader = PacketReader(4)
    got: list[bytes] = []
    for i in range(0, len(stream), 64):
        reader.feed(stream[i:i + 64])
        got.extend(reader)
    assert got == [packet, b"next"]
