"""A connected distribution channel after the handshake, sans-I/O (docs/protocol/distribution.md §5,
§6, §7).

Bytes in, events out; messages in, bytes out; the clock is an argument:

* :meth:`Connection.receive_data` takes bytes as they arrive and returns the control
  messages of every whole packet (4-byte length prefix; a zero-length packet is a tick).
  A packet that breaks the protocol fails the connection, as the BEAM disconnects a peer for
  one (erts ``dist.c``: a packet that does not decode, a malformed control tuple, an
  operation it does not know, a fragment out of sequence, all end in killing the
  connection): :meth:`~Connection.receive_data` raises
  :class:`~pyerl_node.proto.errors.FrameError`, which carries the messages decoded before
  the bad packet in the same call, and the machine stays FAILED.
* :meth:`Connection.send` encodes a control message into the outbound buffer;
  :meth:`Connection.data_to_send` hands out everything queued as one chunk, so the runtime
  writes any number of messages with one call.
* :meth:`Connection.get_timer` / :meth:`Connection.handle_timer` drive ticks and the
  net_ticktime check.

The frame format is fixed by the negotiated flags (§5.1): with DIST_HDR_ATOM_CACHE or
FRAGMENTS every packet starts with a distribution header (131, 68/69/70, see
:mod:`pyerl_node.proto.dist_header`), otherwise with the pass-through byte 112 followed by two
complete external terms. A packet in the other format fails the connection too (BEAM drops it
for that: "Got message from incompatible erlang"). A compressed term inflates to at most
``max_message_size`` bytes, the bound on a packet.

Ticks follow BEAM's ticker (§7): it fires every ``net_ticktime / tick_intensity`` seconds.
A firing queues a tick if nothing was sent since the previous one, and fails the connection
with :class:`NetTickTimeout` if nothing at all was received for ``net_ticktime`` (so the
peer is dropped between ``net_ticktime`` and one period later).

Receiving does not copy packets. When a read holds whole packets they are decoded in
place, by offset, from the ``bytes`` the runtime handed in; a run of sends whose header and
control message are remembered is decoded in one call (``control_memo.decode_sends``). The
start of a packet that is not complete yet is kept as a list of the pieces of reads it
arrived in, which are joined once, when enough bytes for it have arrived (a continuation
fragment is not joined at all): a big message arriving in many small reads costs linear time
and one copy. A fragmented message that ends with a big binary, as big messages do, has that
binary joined straight out of its fragments (its first fragment says where it starts,
:mod:`~pyerl_node.proto.term_scan`) and the rest decoded around an empty binary.

Sending encodes straight into the outbound ``bytearray`` behind a placeholder length prefix
that is filled in afterwards; a big message is cut into fragments in place, and one that
ends with a big binary is cut from its encoded start and the binary, which is copied once.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from enum import Enum
from functools import partial
from typing import Final, TypeAlias, cast

from pyerl_node.proto.control import (
    NO_PAYLOAD,
    AliasSend,
    AliasSendTt,
    AltactSigSend,
    ControlMessage,
    DemonitorP,
    LastBuilder,
    MonitorP,
    MonitorPExit,
    PayloadBuilder,
    PayloadExit,
    PayloadExit2,
    PayloadExit2Tt,
    PayloadExitTt,
    PayloadMonitorPExit,
    RegSend,
    RegSendTt,
    Send,
    SendSender,
    SendSenderTt,
    SendTt,
    SpawnReply,
    SpawnReplyTt,
    SpawnRequest,
    SpawnRequestTt,
    UnknownControl,
    UnlinkId,
    UnlinkIdAck,
    from_terms,
    last_builder,
    payload_builder,
    to_terms,
)
from pyerl_node.proto.control_memo import PrefixMemo, decode_sends, head_end
from pyerl_node.proto.deferred import Builder, DeferredMessage, end_error
from pyerl_node.proto.dist_header import (
    DIST_FRAG_CONT,
    DIST_FRAG_HEADER,
    DIST_HEADER,
    NORMAL_HEADER,
    VERSION,
    AtomCache,
    Buffer,
    FragmentAssembler,
    Fragments,
    fragment_headers,
    read_fragment_ids,
)
from pyerl_node.proto.errors import (
    FrameError,
    LocalProtocolError,
    NetTickTimeout,
    RemoteProtocolError,
    without_frames,
)
from pyerl_node.proto.etf import (
    BINARY,
    COMPRESSED,
    SMALL_TUPLE,
    decode_from,
    encode,
    encode_into,
)
from pyerl_node.proto.flags import DistFlag
from pyerl_node.proto.limits import MAX_FRAME
from pyerl_node.proto.safe_repr import safe_repr
from pyerl_node.proto.term_scan import scan_binaries
from pyerl_node.proto.terms import Atom, Pid, Reference, Term

PASS_THROUGH: Final = 112

_LENGTH = struct.Struct(">I")
_MAX_LENGTH = 0xFFFFFFFF
_TICK: Final = b"\x00\x00\x00\x00"
# A frame's start: the placeholder length, then the header.
_HEADER_FRAME_START: Final = _TICK + NORMAL_HEADER
_PASS_THROUGH_FRAME_START: Final = _TICK + bytes((PASS_THROUGH, VERSION))
_NORMAL_HEADER_SIZE = len(NORMAL_HEADER)
# Control operations whose tuple repeats but for its last element, a fresh reference:
# MONITOR_P and DEMONITOR_P, sent around every gen call.
_HEAD_OPS: Final = frozenset({19, 20})
_HEAD_REPEATED: Final = frozenset({MonitorP, DemonitorP})
# Messages whose control tuple (pids and atoms), or its head, is remembered encoded. Not
# ALIAS_SEND: its alias is usually the one-off reply address of a gen call.
_REPEATED: Final = frozenset({Send, SendSender, RegSend}) | _HEAD_REPEATED
_MAX_SENT_CTRL: Final = 256
_MAX_DESCRIPTION: Final = 200  # characters of a FrameError's description
# A fragment's head: 131, 69 or 70, SequenceId:64, FragmentId:64 (the last fragment is 1).
_FRAGMENT_HEAD: Final = 18
_FRAGMENT_KINDS: Final = frozenset({DIST_FRAG_HEADER, DIST_FRAG_CONT})
_FRAGMENT_ID = struct.Struct(">Q")
_EMPTY_BINARY: Final = bytes((BINARY, 0, 0, 0, 0))
# The operations whose payload is a message, which a big binary usually is.
_SENDS: Final = frozenset({Send, SendSender, RegSend, AliasSend, SendTt, SendSenderTt,
                           RegSendTt, AliasSendTt, AltactSigSend})
#: How many times cheaper a binary's byte is to decode than a byte of other terms (a copy at
#: some GB/s, against tens of MB/s of small terms with the compiled codec), as
#: decoding_sizes weighs it.
BINARY_DISCOUNT: Final = 128

# Control messages the peer understands only with a flag (docs/protocol/distribution.md §4.1, §6).
# Sending one without it makes BEAM drop the connection, so it is refused here instead.
_REQUIRED_FLAG: Final[dict[type, DistFlag]] = {
    SendSender: DistFlag.SEND_SENDER,
    SendSenderTt: DistFlag.SEND_SENDER,
    PayloadExit: DistFlag.EXIT_PAYLOAD,
    PayloadExitTt: DistFlag.EXIT_PAYLOAD,
    PayloadExit2: DistFlag.EXIT_PAYLOAD,
    PayloadExit2Tt: DistFlag.EXIT_PAYLOAD,
    PayloadMonitorPExit: DistFlag.EXIT_PAYLOAD,
    MonitorP: DistFlag.DIST_MONITOR,
    DemonitorP: DistFlag.DIST_MONITOR,
    MonitorPExit: DistFlag.DIST_MONITOR,
    SpawnRequest: DistFlag.SPAWN,
    SpawnRequestTt: DistFlag.SPAWN,
    SpawnReply: DistFlag.SPAWN,
    SpawnReplyTt: DistFlag.SPAWN,
    AliasSend: DistFlag.ALIAS,
    AliasSendTt: DistFlag.ALIAS,
    UnlinkId: DistFlag.UNLINK_ID,
    UnlinkIdAck: DistFlag.UNLINK_ID,
    AltactSigSend: DistFlag.ALTACT_SIG,
}


class ConnectionState(Enum):
    """OPEN until a fatal error (a bad packet, net_ticktime expiry); FAILED after it."""

    OPEN = "open"
    FAILED = "failed"


Event: TypeAlias = ControlMessage | DeferredMessage


class Connection:
    """The state machine of one connected channel (see the module docstring).

    ``flags`` are the negotiated (AND-ed) flags; ``now`` is the current time on the clock
    later passed to :meth:`receive_data` and :meth:`handle_timer`. ``fragment_size`` bounds
    the bytes of one outbound fragment. ``max_message_size`` bounds an inbound packet, what
    a compressed term in it may inflate to, and the bytes held for incomplete fragmented
    messages (all together);
    ``max_pending_fragments`` bounds how many of those may be open at once. A payload that
    is a compressed term declaring more than ``inline_inflate_limit`` bytes is not inflated:
    its message comes out as a :class:`~pyerl_node.proto.deferred.DeferredMessage` (and
    :attr:`deferred` counts up), for the runtime to inflate elsewhere.
    """

    def __init__(
        self,
        *,
        local_node: str,
        peer_node: str,
        flags: DistFlag,
        now: float,
        net_ticktime: float = 60.0,
        tick_intensity: int = 4,
        fragment_size: int = 64 * 1024,
        max_message_size: int = MAX_FRAME,
        max_pending_fragments: int = 256,
        inline_inflate_limit: int | None = None,
    ) -> None:
        if net_ticktime <= 0 or tick_intensity < 1:
            raise LocalProtocolError(
                f"need net_ticktime > 0 and tick_intensity >= 1, got {net_ticktime!r} "
                f"and {tick_intensity!r}"
            )
        if fragment_size < 1 or max_message_size < 1 or max_pending_fragments < 1:
            raise LocalProtocolError("fragment and message size limits must be positive")
        self.local_node = local_node
        self.peer_node = peer_node
        self.flags = flags
        self._flag_bits = int(flags)
        self.state = ConnectionState.OPEN
        self._header_mode = bool(flags & (DistFlag.DIST_HDR_ATOM_CACHE | DistFlag.FRAGMENTS))
        self._fragments = bool(flags & DistFlag.FRAGMENTS)
        self._send_sender = bool(flags & DistFlag.SEND_SENDER)
        self._fragment_size = fragment_size
        self._max_packet = max_message_size
        self._inline_inflate = (max_message_size if inline_inflate_limit is None
                                else inline_inflate_limit)
        #: how many messages came out deferred (compressed) so far
        self.deferred = 0
        self._net_ticktime = net_ticktime
        self._tick_period = net_ticktime / tick_intensity
        # Inbound: the received bytes of an incomplete packet (and how many bytes they must
        # reach before it can be complete: its whole length, or 4 while that is unknown).
        self._pending: list[Buffer] = []
        self._pending_size = 0
        self._needed = 0
        self._atom_cache = AtomCache()
        # control tuples decoded before: whole (sends), or all but the last element
        self._known_ctrl: PrefixMemo[PayloadBuilder] = PrefixMemo()
        self._known_heads: PrefixMemo[tuple[tuple[Term, ...], LastBuilder | None]] = (
            PrefixMemo())
        self._sent_ctrl: dict[tuple[Term, ...], bytes] = {}
        # per kind of repeated message: its last two ends and its frame start
        self._last_sends: dict[type, tuple[object, object, bytes]] = {}
        self._assembler = FragmentAssembler(
            max_bytes=max_message_size, max_sequences=max_pending_fragments
        )
        self._last_received = now
        # Outbound
        self._out = bytearray()
        self._sent_since_firing = False
        self._next_seq_id = 1
        self._next_firing = now + self._tick_period

    @property
    def header_mode(self) -> bool:
        """True if packets carry distribution headers (131, 68...), False for pass-through."""
        return self._header_mode

    @property
    def pending_fragment_bytes(self) -> int:
        """Bytes held for fragmented messages not yet complete."""
        return self._assembler.pending_bytes

    @property
    def incomplete_packet_size(self) -> int:
        """The announced size of the packet whose start is buffered (0 if none): what the
        read that completes it will have to decode."""
        return self._needed if self._pending else 0

    @property
    def buffered_bytes(self) -> int:
        """Received bytes held for messages not yet complete (a packet's start, fragments)."""
        return self._pending_size + self._assembler.pending_bytes

    def decoding_sizes(self, data: bytes) -> tuple[int, int]:
        """About how many bytes of messages ``receive_data(data)`` would decode, in all and
        in its biggest message: the packets it completes, a fragmented message's whole size
        for its last fragment, nothing for bytes that are only kept (a packet's start,
        fragments before the last). The binaries that a fragmented message's first fragment
        announces count 1/BINARY_DISCOUNT of their size (decoding copies them at memory
        speed). What the runtime weighs to decode a read elsewhere; it reads only packet
        heads."""
        n, pos, total, biggest = len(data), 0, 0, 0
        if self._pending:
            missing = self._needed - self._pending_size
            if n < missing:
                return 0, 0
            first = self._pending[0]
            if self._needed == 4:  # its length is in pieces
                (length,) = _LENGTH.unpack_from(b"".join(self._pending) + data[:missing])
                if n < missing + length:
                    return 0, 0
                everything = n + self._assembler.pending_bytes
                return everything, everything
            if len(first) < 4 + _FRAGMENT_HEAD:  # its head is in pieces: say it all counts
                everything = self._needed + n + self._assembler.pending_bytes
                return everything, everything
            total = biggest = self._packet_weight(first, 4, self._needed)
            pos = missing
        unpack = _LENGTH.unpack_from
        while n - pos >= 4:
            end = pos + 4 + unpack(data, pos)[0]
            if end > n:
                break
            weight = self._packet_weight(data, pos + 4, end)
            total += weight
            biggest = max(biggest, weight)
            pos = end
        return total, biggest

    def _packet_weight(self, buf: Buffer, start: int, end: int) -> int:
        # (``end`` may lie past ``buf``: the packet's start is all there is of it)
        if (self._fragments and end - start >= _FRAGMENT_HEAD and buf[start] == VERSION
                and buf[start + 1] in _FRAGMENT_KINDS):
            if _FRAGMENT_ID.unpack_from(buf, start + 10)[0] != 1:
                return 0  # not the last fragment: only kept
            held, binary = self._assembler.held(_FRAGMENT_ID.unpack_from(buf, start + 2)[0])
            size = end - start + held
            binary = min(binary, size)
            return size - binary + binary // BINARY_DISCOUNT
        return end - start

    def peer_alive(self, now: float) -> None:
        """Count the peer as heard from at ``now``: the runtime stopped reading its bytes (they
        wait in the socket), which says nothing about the peer being silent."""
        self._last_received = now

    def _check_open(self, action: str) -> None:
        if self.state is not ConnectionState.OPEN:
            raise LocalProtocolError(f"cannot {action}: the connection to {self.peer_node} failed")

    def _fail(self, error: RemoteProtocolError) -> RemoteProtocolError:
        self.state = ConnectionState.FAILED
        self._pending = []
        return error

    # -- receiving -----------------------------------------------------------------------------

    def receive_data(self, data: Buffer, now: float) -> list[Event]:
        """Feed received bytes; return the message of every whole non-tick packet, in order.

        Raises FrameError (and the connection fails) for a packet that breaks the protocol
        or announces a length above ``max_message_size``; the error's ``events`` are the
        messages of the packets before it.
        """
        self._check_open("receive data")
        if not data:
            return []
        self._last_received = now
        chunk = data if type(data) is bytes else bytes(data)
        events: list[Event] = []
        try:
            pos = 0
            if self._pending:
                pos = self._complete_pending(chunk, events)
                if pos < 0:
                    return events
            pos = self._packets(chunk, pos, events)
        except RemoteProtocolError as exc:
            raise self._fail(_frame_error(exc, self.peer_node, events)) from None
        if pos < len(chunk):
            # The start of a packet stays behind (kept as _piece keeps a fragment).
            tail = _piece(chunk, pos, len(chunk)) if pos else chunk
            self._pending = [tail]
            self._pending_size = len(tail)
            self._needed = 4 + _LENGTH.unpack_from(tail)[0] if len(tail) >= 4 else 4
        return events

    def _complete_pending(self, chunk: bytes, events: list[Event]) -> int:
        """Finish the packet whose start was kept, with the bytes of ``chunk`` it lacks.

        Returns the offset in ``chunk`` after them, or -1 if ``chunk`` did not complete it
        (it is kept too then). Only that packet's bytes are joined, not the whole read, and a
        continuation fragment's not at all.
        """
        pos = 0
        while True:
            missing = self._needed - self._pending_size
            if len(chunk) - pos < missing:
                self._pending.append(_piece(chunk, pos, len(chunk)) if pos else chunk)
                self._pending_size += len(chunk) - pos
                return -1
            self._pending.append(_piece(chunk, pos, pos + missing))
            pos += missing
            if self._needed == 4:  # the length was incomplete: now the packet's size is known
                head = b"".join(self._pending)
                (length,) = _LENGTH.unpack_from(head)
                if length > self._max_packet:
                    self._check_length(length)
                self._pending, self._pending_size, self._needed = [head], 4, 4 + length
                if length:
                    continue
            pieces, self._pending, self._pending_size = self._pending, [], 0
            if not self._continuation(pieces, events):
                self._packets(b"".join(pieces), 0, events)
            return pos

    def _continuation(self, pieces: list[Buffer], events: list[Event]) -> bool:
        """Hand a continuation fragment that came in pieces (the end of one read, the start
        of the next) to the assembler as they are, unjoined; False, with nothing done, for
        any other packet."""
        first = pieces[0]
        if not (self._fragments and len(first) >= 4 + _FRAGMENT_HEAD and first[4] == VERSION
                and first[5] == DIST_FRAG_CONT):
            return False
        seq_id, frag_id, offset = read_fragment_ids(first, 6, len(first))
        complete = self._assembler.add(seq_id, frag_id, memoryview(first)[offset:], *pieces[1:])
        if complete is not None:
            events.append(self._assembled(complete))
        return True

    def _check_length(self, length: int) -> None:
        if length > self._max_packet:
            raise RemoteProtocolError(
                f"announced a {length}-byte packet; the limit is {self._max_packet}")

    def _packets(self, source: bytes, pos: int, events: list[Event]) -> int:
        """Decode every whole packet in ``source`` from ``pos``; return the offset after the
        last one."""
        total = len(source)
        header_mode = self._header_mode
        decode = self._header_packet if header_mode else self._pass_through_packet
        unpack = _LENGTH.unpack_from
        limit = self._max_packet
        sends, headers = self._known_ctrl, self._atom_cache.known
        while total - pos >= 4:
            if header_mode:  # the sends of a stream in one call, then one other packet
                pos = decode_sends(source, pos, events, headers, sends.entries, sends.lengths,
                                   limit)
                if total - pos < 4:
                    break
            (length,) = unpack(source, pos)
            if length == 0:  # a tick
                pos += 4
                continue
            if length > limit:
                self._check_length(length)
            end = pos + 4 + length
            if end > total:
                break
            event = decode(source, pos + 4, end)
            if event is not None:
                events.append(event)
            pos = end
        return pos

    # Packets are decoded in place: ``buf[start:end]`` is the packet, ``buf`` may hold more.
    # A term that runs past ``end`` is caught by the offset checks.

    def _pass_through_packet(self, buf: bytes, start: int, end: int) -> Event | None:
        if end - start < 2 or buf[start] != PASS_THROUGH or buf[start + 1] != VERSION:
            raise _format_error("a pass-through packet (112, 131, ...)", buf[start:end], VERSION)
        limit = self._max_packet
        ctrl, offset = decode_from(buf, start + 2, max_decompressed_size=limit)
        payload: Term = NO_PAYLOAD
        if offset < end:
            if buf[offset] != VERSION:
                raise RemoteProtocolError(
                    f"expected 131 before the payload at offset {offset - start}, "
                    f"got {buf[offset]}"
                )
            if offset + 1 < end and buf[offset + 1] == COMPRESSED:
                deferred = self._deferred(buf, offset + 1, end, [], partial(_message, ctrl))
                if deferred is not None:
                    return deferred
            payload, offset = decode_from(buf, offset + 1, max_decompressed_size=limit)
        if offset != end:
            raise end_error(offset, end)
        return _message(ctrl, payload)

    def _header_packet(self, buf: bytes, start: int, end: int) -> Event | None:
        if end - start < 3 or buf[start] != VERSION:
            raise _format_error(
                "a distribution header (131, 68/69/70)", buf[start:end], PASS_THROUGH
            )
        kind = buf[start + 1]
        if kind == DIST_HEADER:
            refs, offset = self._atom_cache.read_header(buf, start + 2, end)
            return self._decode_message(buf, offset, end, refs)
        if kind == DIST_FRAG_HEADER:
            seq_id, frag_id, offset = read_fragment_ids(buf, start + 2, end)
            refs, offset = self._atom_cache.read_header(buf, offset, end)
            if self._assembler.discard(seq_id):
                # (BEAM: a sequence id already in use is a data error, the connection dies)
                raise RemoteProtocolError(
                    f"fragment sequence {seq_id} restarted before its last fragment")
            if frag_id == 1:
                return self._decode_message(buf, offset, end, refs)
            found = scan_binaries(buf, offset, end)
            self._assembler.first(seq_id, frag_id, refs, _piece(buf, offset, end), found.size,
                                  found.last_at - offset if found.last_at >= 0 else -1,
                                  found.last_size)
            return None
        if kind == DIST_FRAG_CONT:
            seq_id, frag_id, offset = read_fragment_ids(buf, start + 2, end)
            complete = self._assembler.add(seq_id, frag_id, _piece(buf, offset, end))
            if complete is None:
                return None
            return self._assembled(complete)
        raise RemoteProtocolError(f"unknown distribution header type {kind} after 131")

    def _assembled(self, done: Fragments) -> Event:
        """The message of a fragmented one. When it ends with the binary its first fragment
        announced, as a big message does, that binary is joined straight out of the
        fragments and the rest decoded with an empty binary in its place: no buffer of the
        whole message, and one copy of the binary less."""
        at = done.tail_at
        if at >= 0 and at + 5 + done.tail_size == done.size:
            head = bytes(memoryview(done.chunks[0])[:at]) + _EMPTY_BINARY
            try:
                event = self._decode_message(head, 0, len(head), done.refs)
            except RemoteProtocolError:
                event = None  # (decoded whole below: that says what is wrong)
            if type(event) in _SENDS:
                chain, last = _tuple_chain(cast(Send, event).message)
                if type(last) is bytes and not last:  # (the empty binary put in its place)
                    binary = b"".join([memoryview(done.chunks[0])[at + 5:], *done.chunks[1:]])
                    return replace(cast(Send, event), message=_with_last(chain, binary))
        data = done.joined()
        return self._decode_message(data, 0, len(data), done.refs)

    def _decode_message(self, buf: bytes, offset: int, end: int, refs: list[Atom]) -> Event:
        # Control message and payload follow the header without their 131 bytes.
        if offset >= end:
            raise RemoteProtocolError(
                "the distribution header is not followed by a control message"
            )
        limit = self._max_packet
        known = self._known_ctrl.lookup(buf, offset, refs)
        if known is not None:
            builder, after = known
            if after < end:
                if buf[after] == COMPRESSED:
                    deferred = self._deferred(buf, after, end, refs, builder)
                    if deferred is not None:
                        return deferred
                message, after = decode_from(buf, after, atom_cache=refs,
                                             max_decompressed_size=limit)
                if after == end:
                    return builder(message)
            raise end_error(after, end) if after != end else RemoteProtocolError(
                "a send operation without its message")
        ctrl: Term
        head_at = None
        head = self._known_heads.lookup(buf, offset, refs)
        # (a compressed term, legal only at the top, must not pass for the tuple's last one)
        if head is not None and head[1] < end and buf[head[1]] != COMPRESSED:
            (known_head, build_last), after_head = head
            last, ctrl_end = decode_from(buf, after_head, atom_cache=refs)
            if ctrl_end == end and build_last is not None:
                return build_last(last)
            ctrl = (*known_head, last)
        else:
            ctrl, ctrl_end = decode_from(buf, offset, atom_cache=refs,
                                         max_decompressed_size=limit)
            if type(ctrl) is tuple and ctrl and type(ctrl[0]) is int and ctrl[0] in _HEAD_OPS:
                head_at = head_end(buf, offset, refs)
        payload: Term = NO_PAYLOAD
        after = ctrl_end
        if after < end:
            if buf[after] == COMPRESSED:
                deferred = self._deferred(buf, after, end, refs, partial(_message, ctrl))
                if deferred is not None:
                    return deferred
            payload, after = decode_from(buf, after, atom_cache=refs,
                                         max_decompressed_size=limit)
        if after != end:
            raise end_error(after, end)
        decoded = _message(ctrl, payload)
        if payload is not NO_PAYLOAD:
            build = payload_builder(ctrl)
            if build is not None:
                self._known_ctrl.remember(buf, offset, ctrl_end, refs, build)
        elif head_at is not None:
            self._known_heads.remember(buf, offset, head_at, refs,
                                       (cast(tuple[Term, ...], ctrl)[:-1], last_builder(ctrl)))
        return decoded

    def _deferred(self, buf: bytes, at: int, end: int, refs: list[Atom],
                  build: Builder) -> DeferredMessage | None:
        """The message left compressed, if its payload (the compressed term at ``buf[at]``)
        declares more than the inline limit; not past the frame limit, which the inline
        decoding refuses at once."""
        if end - at < 5:
            return None
        (size,) = _LENGTH.unpack_from(buf, at + 1)
        if not self._inline_inflate < size <= self._max_packet:
            return None
        self.deferred += 1
        return DeferredMessage(build, buf[at:end], refs, self._max_packet, size)

    # -- sending -------------------------------------------------------------------------------

    def send(self, msg: ControlMessage) -> None:
        """Encode ``msg`` and queue it (fragmented if big and FRAGMENTS was negotiated).

        Raises LocalProtocolError if the negotiated flags do not allow ``msg``, EncodeError
        if it holds a value with no external term form (nothing is queued then).
        """
        if self.state is not ConnectionState.OPEN:
            self._check_open("send")
        if type(msg) in _REPEATED and self._header_mode:
            self._send_repeated(msg)
            return
        self._check_flags(msg)
        ctrl, payload = to_terms(msg)
        out = self._out
        start = len(out)
        try:
            if self._header_mode:
                out += _HEADER_FRAME_START
                encode_into(ctrl, out)
                split = None if payload is NO_PAYLOAD else self._ending_binary(payload)
                if split is not None:
                    self._append_fragments(start, *split)
                    return
                if payload is not NO_PAYLOAD:
                    encode_into(payload, out)
            else:
                out += _PASS_THROUGH_FRAME_START
                encode_into(ctrl, out)
                if payload is not NO_PAYLOAD:
                    out.append(VERSION)
                    encode_into(payload, out)
        except BaseException:
            del out[start:]
            raise
        self._end_frame(start)

    def _send_repeated(self, msg: ControlMessage) -> None:
        # A stream of sends repeats its sender and destination, and a stream of gen calls the
        # watcher and target of its monitors: the frame start of the last message of a kind
        # (header and control tuple, or its head) is reused while they are the same objects,
        # with no control tuple to build, hash or encode. Then the message or the reference.
        a: object
        b: object
        tail: Term
        if type(msg) is SendSender:
            a, b, tail = msg.from_pid, msg.to_pid, msg.message
        elif type(msg) is RegSend:
            a, b, tail = msg.from_pid, msg.to_name, msg.message
        elif type(msg) is Send:
            a, b, tail = None, msg.to_pid, msg.message
        else:
            monitor = cast(MonitorP | DemonitorP, msg)
            a, b, tail = monitor.from_pid, monitor.to_proc, monitor.ref
        last = self._last_sends.get(type(msg))
        if last is None or last[0] is not a or last[1] is not b:
            self._check_flags(msg)
            head = _HEADER_FRAME_START + self._ctrl_head(
                to_terms(msg)[0], whole=type(msg) not in _HEAD_REPEATED)
            last = self._last_sends[type(msg)] = (a, b, head)
        self._append_frame(last[2], tail)

    def send_message(self, from_pid: Pid, to: Pid | Atom | Reference, message: Term) -> None:
        """Queue ``message`` from ``from_pid`` to a pid, a registered name or an alias: the
        SEND_SENDER (SEND without that flag), REG_SEND or ALIAS_SEND that :meth:`send` would
        queue, and, while sender and destination repeat, without building it first."""
        sender: Pid | None = from_pid
        if type(to) is Atom:
            last = self._last_sends.get(RegSend)
        elif type(to) is Pid:
            if not self._send_sender:
                sender = None  # (SEND names no sender)
            last = self._last_sends.get(SendSender if sender else Send)
        else:
            self.send(AliasSend(from_pid, cast(Reference, to), message))
            return
        if (last is None or last[0] is not sender or last[1] is not to
                or self.state is not ConnectionState.OPEN):
            self.send(RegSend(from_pid, to, message) if isinstance(to, Atom)
                      else SendSender(from_pid, to, message) if sender else Send(to, message))
            return
        self._append_frame(last[2], message)

    def _append_frame(self, head: bytes, tail: Term) -> None:
        # a remembered frame start, then its last term
        out = self._out
        start = len(out)
        out += head
        # (a look at the last element first: this runs for every message of a stream)
        last = tail[-1] if type(tail) is tuple and tail else tail
        if type(last) is tuple or (type(last) is bytes and len(last) > self._fragment_size):
            split = self._ending_binary(tail)
            if split is not None:
                self._append_fragments(start, *split)
                return
        try:
            encode_into(tail, out)
        except BaseException:
            del out[start:]
            raise
        self._end_frame(start)

    def _ending_binary(self, term: Term) -> tuple[Term, bytes] | None:
        """``term`` with an empty binary in place of the binary it ends with, and that binary,
        when it is bigger than a fragment; None otherwise."""
        if not self._fragments:
            return None
        last = term
        while type(last) is tuple and last:  # (the test alone first: on every send)
            last = last[-1]
        if type(last) is not bytes or len(last) <= self._fragment_size:
            return None
        chain, _ = _tuple_chain(term)
        return _with_last(chain, b""), last

    def _append_fragments(self, start: int, tail: Term, binary: bytes) -> None:
        # A message that ends with a big binary, as fragments: its start is encoded with an
        # empty binary in the binary's place (then given the binary's length), and the
        # fragments are cut out of that and the binary, which is copied once, into them.
        out = self._out
        try:
            encode_into(tail, out)
        except BaseException:
            del out[start:]
            raise
        _LENGTH.pack_into(out, len(out) - 4, len(binary))
        body_start = start + 4 + _NORMAL_HEADER_SIZE
        prefix = bytes(out[body_start:])
        del out[start:]
        seq_id = self._next_seq_id
        self._next_seq_id = (seq_id + 1) & 0xFFFFFFFFFFFFFFFF or 1
        cut = len(prefix)
        with memoryview(binary) as rest:
            for header, begin, end in fragment_headers(seq_id, cut + len(binary),
                                                       self._fragment_size):
                out += _LENGTH.pack(len(header) + end - begin)
                out += header
                if begin < cut:
                    out += prefix[begin:min(end, cut)]
                if end > cut:
                    out += rest[max(begin - cut, 0):end - cut]
        self._sent_since_firing = True

    def _check_flags(self, msg: ControlMessage) -> None:
        required = _REQUIRED_FLAG.get(type(msg))
        # plain int test: IntFlag's & runs in Python and costs more than the check is worth
        if required is not None and not self._flag_bits & required.value:
            raise LocalProtocolError(
                f"{type(msg).__name__} needs {required.name}, which {self.peer_node} "
                "did not negotiate"
            )

    def _end_frame(self, start: int) -> None:
        # the frame encoded at ``start``: its length, or cut into fragments if it is big
        out = self._out
        length = len(out) - start - 4
        if self._fragments and length - _NORMAL_HEADER_SIZE > self._fragment_size:
            self._refragment(start)
        elif length > _MAX_LENGTH:
            del out[start:]
            raise LocalProtocolError(f"a {length}-byte packet does not fit a 4-byte length")
        else:
            _LENGTH.pack_into(out, start, length)
        self._sent_since_firing = True

    def _ctrl_head(self, ctrl: tuple[Term, ...], *, whole: bool) -> bytes:
        # The control tuple encoded, or all of it but its last element (a fresh reference),
        # remembered by value for the senders and destinations that come back.
        key = ctrl if whole else ctrl[:-1]
        encoded = self._sent_ctrl.get(key)
        if encoded is None:
            # (the tuple header counts the whole tuple, also when only its head is kept)
            encoded = bytes((SMALL_TUPLE, len(ctrl))) + encode(key)[3:]
            if len(self._sent_ctrl) >= _MAX_SENT_CTRL:
                self._sent_ctrl.clear()
            self._sent_ctrl[key] = encoded
        return encoded

    def _refragment(self, start: int) -> None:
        # The message was encoded as one frame at ``start``; cut it into fragment frames in
        # place: grow the buffer by the extra header bytes, then move the pieces right, last
        # first (memoryview assignment is a memmove), writing each frame's length and header
        # in front of its piece. No second buffer for a big message.
        out = self._out
        body_start = start + 4 + _NORMAL_HEADER_SIZE
        seq_id = self._next_seq_id
        self._next_seq_id = (seq_id + 1) & 0xFFFFFFFFFFFFFFFF or 1
        pieces = list(fragment_headers(seq_id, len(out) - body_start, self._fragment_size))
        out += bytes(sum(4 + len(header) for header, _, _ in pieces) - (body_start - start))
        frame_end = len(out)
        with memoryview(out) as view:
            for header, begin, end in reversed(pieces):
                piece_start = frame_end - (end - begin)
                view[piece_start:frame_end] = view[body_start + begin:body_start + end]
                frame_start = piece_start - len(header) - 4
                view[frame_start:piece_start] = (
                    _LENGTH.pack(len(header) + end - begin) + header
                )
                frame_end = frame_start

    @property
    def pending_bytes(self) -> int:
        """How many bytes are queued for ``data_to_send``."""
        return len(self._out)

    def data_to_send(self) -> list[bytearray]:
        """Everything queued since the last call (ticks included), as one chunk.

        The buffer itself is handed over (a fresh one takes its place): a big message is not
        copied again on its way to the socket.
        """
        if not self._out:
            return []
        data = self._out
        self._out = bytearray()
        return [data]

    # -- timers --------------------------------------------------------------------------------

    def get_timer(self) -> float:
        """When :meth:`handle_timer` should run next (absolute, same clock as ``now``)."""
        if self.state is not ConnectionState.OPEN:
            return float("inf")
        return self._next_firing

    def handle_timer(self, now: float) -> None:
        """Run the ticker if it is due: queue a tick if idle, check the peer is alive.

        Does nothing before :meth:`get_timer`'s time. Raises NetTickTimeout (and the
        connection fails) if nothing was received for ``net_ticktime`` seconds.
        """
        self._check_open("handle timers")
        if now < self._next_firing:
            return
        silent = now - self._last_received
        if silent >= self._net_ticktime:
            raise self._fail(NetTickTimeout(
                f"nothing received from {self.peer_node} for {silent:.1f} s "
                f"(net_ticktime {self._net_ticktime:g} s)"
            ))
        if not self._sent_since_firing:
            self._out += _TICK
        self._sent_since_firing = False
        # One firing per call, as BEAM's ticker: a late call does not count missed periods.
        self._next_firing += self._tick_period
        if self._next_firing <= now:
            self._next_firing = now + self._tick_period


def _piece(buf: bytes, start: int, end: int) -> Buffer:
    """A fragment's bytes until its message is joined: a view when it is a quarter of ``buf``
    (the read it came in) or more, so that it is copied once, at the join (a BEAM's 64 KiB
    fragments in reads of up to 256 KiB); else a copy, so that a small piece does not keep a
    big read alive (what views keep is at most 4 times what they show)."""
    if 4 * (end - start) >= len(buf):
        return memoryview(buf)[start:end]
    return buf[start:end]


def _tuple_chain(term: Term) -> tuple[list[tuple[Term, ...]], Term]:
    """The tuples from ``term`` down through their last elements, and the last element of
    the innermost one (``term`` itself when it is no tuple): where a message's big binary
    sits when it ends the message."""
    chain: list[tuple[Term, ...]] = []
    while type(term) is tuple and term:
        chain.append(term)
        term = term[-1]
    return chain, term


def _with_last(chain: list[tuple[Term, ...]], last: Term) -> Term:
    """The term of ``chain`` (see :func:`_tuple_chain`) with ``last`` as its last element."""
    for outer in reversed(chain):
        last = (*outer[:-1], last)
    return last


def _format_error(expected: str, packet: bytes, other_format: int) -> RemoteProtocolError:
    hint = ""
    if packet[0] == other_format:
        hint = " (the peer uses the other frame format than the negotiated flags say)"
    return RemoteProtocolError(f"expected {expected}, got {packet[:3]!r}{hint}")


def _unknown_operation(ctrl: tuple[Term, ...]) -> RemoteProtocolError:
    # BEAM too: an operation it does not know is an invalid message, and it disconnects.
    return RemoteProtocolError(
        f"unknown control operation {safe_repr(ctrl[0])} in {safe_repr(ctrl, 120)}")


def _frame_error(exc: RemoteProtocolError, peer: str, events: list[Event]) -> FrameError:
    text = str(exc)
    if len(text) > _MAX_DESCRIPTION:
        text = text[:_MAX_DESCRIPTION - 3] + "..."
    return FrameError(text, peer=peer, error=without_frames(exc), events=tuple(events))


def _message(ctrl: Term, payload: Term) -> ControlMessage:
    decoded = from_terms(ctrl, payload)
    if isinstance(decoded, UnknownControl):
        raise _unknown_operation(decoded.control)
    return decoded
