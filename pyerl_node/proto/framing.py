"""Length-prefixed packets, as BEAM's ``{packet, N}`` sockets frame them
(docs/protocol/distribution.md §3, §5).

The handshake frames each message with a 2-byte big-endian length, a connection after it
with 4 bytes; a 4-byte-framed packet of length 0 is a tick. ``PacketReader`` takes bytes
as they arrive and hands out whole packets. It keeps one ``bytearray`` and deletes consumed
bytes from its front (amortised O(1) in CPython), so a stream of many small reads never
costs quadratic copying. A length above ``max_packet`` is refused before its body arrives.
"""

from __future__ import annotations

from collections.abc import Iterator

from pyerl_node.proto.errors import LocalProtocolError, RemoteProtocolError

#: Default bound on one packet's length: a peer cannot make us buffer more than this.
DEFAULT_MAX_PACKET = 1 << 30

_LENGTH_BYTES = (1, 2, 4)


def _check_length_bytes(length_bytes: int) -> None:
    if length_bytes not in _LENGTH_BYTES:
        raise LocalProtocolError(f"length_bytes must be 1, 2 or 4, got {length_bytes!r}")


def frame(payload: bytes, length_bytes: int) -> bytes:
    """``payload`` behind its big-endian length prefix of ``length_bytes`` bytes."""
    _check_length_bytes(length_bytes)
    if len(payload) >= 1 << (8 * length_bytes):
        raise LocalProtocolError(
            f"a {len(payload)}-byte packet does not fit a {length_bytes}-byte length prefix"
        )
    return len(payload).to_bytes(length_bytes, "big") + payload


class PacketReader:
    """Incremental parser of length-prefixed packets: ``feed`` bytes, then take packets."""

    def __init__(self, length_bytes: int, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        _check_length_bytes(length_bytes)
        self._length_bytes = length_bytes
        self._max_packet = max_packet
        self._buffer = bytearray()

    def feed(self, data: bytes | memoryview) -> None:
        """Append received bytes."""
        self._buffer += data

    def next_packet(self) -> bytes | None:
        """The next whole packet (``b""`` for an empty one, a tick), or None if incomplete.

        Raises RemoteProtocolError when the announced length exceeds ``max_packet``.
        """
        n = self._length_bytes
        if len(self._buffer) < n:
            return None
        length = int.from_bytes(self._buffer[:n], "big")
        if length > self._max_packet:
            raise RemoteProtocolError(
                f"peer announced a {length}-byte packet; the limit is {self._max_packet}"
            )
        end = n + length
        if len(self._buffer) < end:
            return None
        packet = bytes(self._buffer[n:end])
        del self._buffer[:end]
        return packet

    def __iter__(self) -> Iterator[bytes]:
        """Every whole packet buffered so far."""
        while (packet := self.next_packet()) is not None:
            yield packet

    def take_rest(self) -> bytes:
        """Remove and return every buffered byte not yet handed out as a packet."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest
