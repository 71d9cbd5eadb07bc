"""One connection to a peer node: the thin asyncio layer over the sans-I/O machines.

A :class:`Channel` is an ``asyncio.Protocol``. Over TLS (``inet_tls``) it first runs a
:class:`~pyerl_node.runtime.tls_layer.TlsLayer` and checks the peer's certificate as OTP does;
then it feeds the (plaintext) bytes to the handshake machine, then to the
:class:`~pyerl_node.proto.connection.Connection`, hands the resulting control messages to the
node, and writes what the machines queue. A packet that breaks the protocol ends the
connection, as the BEAM ends it, after the messages before it are delivered.

Writes are batched: however many messages are sent in one event-loop iteration, they leave in
one ``writelines`` call. The connection's timer (ticks, net_ticktime) is one ``call_at``
handle, re-armed after each event. The channel is the :class:`~pyerl_node.runtime.mailbox.
FlowSource` of the messages it delivers: it knows how many of its bytes wait in mailboxes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol, TypeAlias, cast

from pyerl_node.proto.connection import Connection, Event
from pyerl_node.proto.control import ControlMessage
from pyerl_node.proto.deferred import DeferredMessage
from pyerl_node.proto.errors import (
    ConnectionLost,
    EpmdError,
    ErlNodeError,
    FrameError,
    HandshakeError,
    NodeDown,
    RemoteProtocolError,
)
from pyerl_node.proto.etf import COMPILED
from pyerl_node.proto.flags import DistFlag
from pyerl_node.proto.handshake import (
    AcceptorHandshake,
    HandshakeComplete,
    InitiatorHandshake,
    NameReceived,
    State,
    Status,
    StatusReceived,
)
from pyerl_node.proto.names import parse_node_name
from pyerl_node.proto.terms import Atom, Pid, Reference, Term
from pyerl_node.runtime import epmd_client
from pyerl_node.runtime.flush import LATER_DELAY, Flush
from pyerl_node.runtime.ratelimit import OncePer
from pyerl_node.runtime.tls import (
    PeerCertificateError,
    check_client_certificate,
    check_server_certificate,
    client_server_hostname,
)
from pyerl_node.runtime.tls_layer import TlsError, TlsLayer, TlsSettings
from pyerl_node.runtime.transport import ListenOptions
from pyerl_node.runtime.workers import Workers

log = logging.getLogger("pyerl_node.channel")

# Senders wait (``drain``) while more than this is queued for the socket: bounded memory.
_HIGH_WATER = 4 * 1024 * 1024
_HANDSHAKE_TIMEOUT = 7.0  # net_setuptime's default
# Queued output beyond this is written at once instead of at the end of the loop iteration.
_FLUSH_AT = 256 * 1024
_BIG_WRITE = 64 * 1024
# What a delivered message costs beyond its bytes on the wire (its Python objects), so that a
# flood of tiny messages counts for what it weighs.
_MESSAGE_OVERHEAD = 64
#: Reading pauses while more than FLOW_HIGH bytes of a connection's messages wait in
#: mailboxes, and resumes below FLOW_LOW.
FLOW_HIGH = 64 * 1024 * 1024
FLOW_LOW = 32 * 1024 * 1024
#: A read that would decode this much, or a message of _BIG_MESSAGE or more, is decoded off
#: the loop, and so is a compressed payload that inflates to more than OFFLOAD_AT. (Weighed
#: as Connection.decoding_sizes weighs them: a binary's bytes count little.)
#: (Above asyncio's largest read, 256 KiB: a read of small messages stays on the loop, and
#: decoding 1 MiB of small terms takes the pure-Python codec about 100 ms.)
OFFLOAD_AT = 1024 * 1024
# (the pure-Python codec decodes a deeply nested 120 KB term in about 30 ms, ten times slower
# than the compiled one)
_BIG_MESSAGE = 256 * 1024 if COMPILED else 64 * 1024
_FLOW = "flow"
_DECODING = "decoding"
# (with the cyclic GC paused during a decode: its collections would hold the GIL, and the loop)
_DECODERS = Workers(max_threads=2, name="pyerl-decode", pause_gc=True)
# The first bytes of a TLS ClientHello record, where a plain node expects a send_name.
_TLS_RECORD = b"\x16\x03"


# What waits to be delivered behind a deferred message: messages, deferred messages, and the
# error of a bad packet after them (delivered in this order).
_Held: TypeAlias = ControlMessage | DeferredMessage | BaseException


class PeerWinsSimultaneousError(HandshakeError):
    """The peer answered ``nok``: its own connection attempt to us wins (net_kernel's rule)."""

    def __init__(self, peer: str) -> None:
        super().__init__("simultaneous connect: the peer's connection wins", peer=peer)


class HandshakeRefusedError(HandshakeError):
    """We answered the peer's send_name with nok, not_allowed or alive-then-false."""


class ChannelOwner(Protocol):
    """What a channel needs of its node: identity for the handshake, and the callbacks that
    tell the kernel about connections and hand it control messages."""

    node_atom: Atom
    cookie: str
    flags: DistFlag
    creation: int
    hidden: bool
    net_ticktime: float
    epmd_port: int
    listen_options: ListenOptions
    challenge_source: Callable[[], int]
    peer_warnings: OncePer
    tls: TlsSettings | None

    def accept_decision(self, peer: Atom) -> Status: ...

    def channel_up(self, channel: Channel) -> None: ...

    def channel_down(self, channel: Channel) -> None: ...

    def channel_failed(self, peer: Atom | None, error: BaseException) -> None: ...

    def dispatch(self, channel: Channel, events: Sequence[ControlMessage]) -> None: ...


class Channel(asyncio.Protocol):
    """The connection to one peer, from the first handshake byte to the close."""

    def __init__(self, node: ChannelOwner, *, initiator: bool,
                 peer: Atom | None = None) -> None:
        self.node = node
        self.initiator = initiator
        self.peer: Atom = peer if peer is not None else Atom("")
        self.flags = DistFlag(0)
        self.visible = False
        self.exit_payload = self.alias = False
        self.handshake_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._handshake: InitiatorHandshake | AcceptorHandshake | None = None
        self._conn: Connection | None = None
        self._flush_pending = False
        self._later: asyncio.TimerHandle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._drain_waiter: asyncio.Future[None] | None = None
        #: the socket's buffer is past its high-water mark: senders ``drain`` first
        self.paused_writing = False
        #: the peer's (address, port), once connected
        self.address: tuple[str, int] | None = None
        #: why the connection ended, for the log line that says it went down
        self.down_reason = "closed by the peer"
        self._tls: TlsLayer | None = None
        #: bytes of messages from this connection that wait in mailboxes
        self.undelivered = 0
        #: the accounted size of the message being dispatched (read by inbound delivery)
        self.current_size = 0
        self._pauses: set[str] = set()  # why reading is paused (flow, decoding), if it is
        self._decoding = False
        self._backlog: list[bytes] = []  # reads that came while a big one was decoded
        self._backlog_bytes = 0
        self._held: deque[_Held] = deque()  # the rest of a read with deferred messages
        self._held_share = 0  # the accounted size of each plain message held

    @property
    def where(self) -> str:
        """The peer's address for log lines: ``host:port`` or ``[v6]:port``."""
        if self.address is None:
            return "?"
        host, port = self.address[0], self.address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (a stream transport; other event loops, uvloop's, do not subclass asyncio.Transport)
        self._transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and len(peername) >= 2:
            self.address = (str(peername[0]), int(peername[1]))
        node = self.node
        common = {
            "local_name": node.node_atom.name,
            "cookie": node.cookie,
            "flags": node.flags,
            "creation": node.creation,
            "challenge_source": node.challenge_source,
            "length_bytes": 2 if node.tls is None else 4,  # inet_tls_dist frames with 4
        }
        hs: InitiatorHandshake | AcceptorHandshake
        if self.initiator:
            hs = InitiatorHandshake(peer_name=self.peer.name, **common)  # type: ignore[arg-type]
        else:
            hs = AcceptorHandshake(**common)  # type: ignore[arg-type]
        self._handshake = hs
        # net_setuptime bounds the TLS and the distribution handshake together, as in OTP
        self._timer = self._loop.call_later(_HANDSHAKE_TIMEOUT, self._handshake_timeout)
        settings = node.tls
        if settings is None:
            self._start_handshake()
            return
        hostname = None
        if self.initiator:
            host = parse_node_name(self.peer.name).host
            # an optfile's server_name_indication rule; a ready context checks the host itself
            hostname = (client_server_hostname(settings.options, host)
                        if settings.options is not None else host)
        self._tls = TlsLayer(settings.client if self.initiator else settings.server,
                             server_side=not self.initiator, server_hostname=hostname)
        try:
            transport.write(self._tls.start())
        except TlsError as exc:
            self._fail(exc)

    def _start_handshake(self) -> None:
        if isinstance(self._handshake, InitiatorHandshake):
            self._handshake.start()
            self._write_handshake()

    def data_received(self, data: bytes) -> None:
        tls = self._tls
        if tls is None:
            self._received(data)
            return
        was_established = tls.established
        try:
            plain, out = tls.receive(data)
        except TlsError as exc:
            alert = tls.pending_output()  # the peer learns why, as from OTP's ssl
            if alert and self._transport is not None:
                self._transport.write(alert)
            self._fail(exc)
            return
        if out and self._transport is not None:
            self._transport.write(out)
        if tls.established and not was_established:
            try:
                self._check_certificate(tls)
            except PeerCertificateError as exc:
                self._fail(exc)
                return
            self._start_handshake()
        if plain:
            self._received(plain)

    def _check_certificate(self, tls: TlsLayer) -> None:
        """OTP's checks of the peer's certificate, before a distribution byte is sent."""
        settings = self.node.tls
        if settings is None or settings.options is None:
            return  # ready-made contexts: their own verification is all there is
        if self.initiator:
            check_server_certificate(tls.ssl_object, settings.options,
                                     parse_node_name(self.peer.name).host)
        else:
            check_client_certificate(tls.ssl_object, settings.options,
                                     peer_ip=self.address[0] if self.address else "",
                                     allowed=())

    def _received(self, data: bytes) -> None:
        """Plaintext from the peer: handshake bytes, then distribution packets."""
        conn = self._conn
        if conn is None:
            if (self._tls is None and not self.initiator and self.address is not None
                    and data.startswith(_TLS_RECORD)):
                self._fail(HandshakeError(
                    "the peer speaks TLS, but this node runs plain TCP distribution "
                    "(it needs -proto_dist inet_tcp, or this node inet_tls)"))
                return
            self._handshake_data(data)
            return
        if self._decoding or self._held:  # a big packet is being decoded: later bytes wait
            self._backlog.append(data)
            self._backlog_bytes += len(data)
            if self._backlog_bytes >= OFFLOAD_AT:  # bounded: reading waits for the decode
                self._pause(_DECODING)
            return
        if (conn.incomplete_packet_size + conn.pending_fragment_bytes >= _BIG_MESSAGE
                or len(data) >= OFFLOAD_AT) and self._decodes_much(conn, data):
            self._decode_off_loop(conn, data)
            return
        held, deferred = conn.buffered_bytes, conn.deferred
        try:
            events = conn.receive_data(data, self._loop.time())
        except FrameError as exc:
            # what came before the bad packet counts
            self._deliver(exc.events, len(data), exc)
            return
        except RemoteProtocolError as exc:
            self._fail(exc)
            return
        size = len(data) + held - conn.buffered_bytes
        if conn.deferred != deferred:
            self._deliver(events, size, None)
            return
        self._dispatch(cast(list[ControlMessage], events), size)  # (no deferred one in it)
        # Answers produced while dispatching (rpc replies, noproc DOWNs...) leave now,
        # one write for the whole chunk, without waiting for another loop iteration.
        self.flush()

    @staticmethod
    def _decodes_much(conn: Connection, data: bytes) -> bool:
        # (the start of a big message, or fragments before its last, are only kept)
        total, biggest = conn.decoding_sizes(data)
        return total >= OFFLOAD_AT or biggest >= _BIG_MESSAGE

    def _decode_off_loop(self, conn: Connection, data: bytes) -> None:
        """Decode a read that may complete a big message in a worker thread, so that the
        loop (ticks, other connections, processes) runs on meanwhile. Reading goes on: the
        reads that come meanwhile wait, in order, and are decoded together after it (one
        hand-off for all of them, not one per read); past OFFLOAD_AT of them reading
        pauses until the decode is done."""
        self._decoding = True
        held = conn.buffered_bytes

        def decode() -> tuple[list[Event], int]:
            events = conn.receive_data(data, self._loop.time())
            return events, len(data) + held - conn.buffered_bytes

        _DECODERS.submit(decode, (), self._decoded)

    def _decoded(self, ok: bool, outcome: Any) -> None:
        self._decoding = False
        if self._closed:
            return
        if not ok:
            if isinstance(outcome, FrameError):
                self._deliver(outcome.events, 0, outcome)
            else:
                self._fail(outcome)
            return
        events, size = outcome
        self._deliver(events, size, None)

    def _deliver(self, events: Sequence[Event], size: int, error: BaseException | None) -> None:
        """Deliver a read's messages in order, its deferred ones inflated off the loop one at
        a time (each counted by its inflated size), then fail with ``error`` if there is one.
        What follows a deferred message waits, and so do later reads."""
        held = self._held
        held.extend(events)
        plain = sum(not isinstance(event, DeferredMessage) for event in events)
        self._held_share = size // plain if plain else 0
        if error is not None:
            held.append(error)
        self._drain_held()

    def _drain_held(self) -> None:
        held = self._held
        while held and not self._decoding and not self._closed:
            if _FLOW in self._pauses:
                return  # mailboxes are full: delivered() goes on once they drain
            first = held[0]
            if isinstance(first, DeferredMessage):
                held.popleft()
                self._decoding = True
                _DECODERS.submit(first.resolve, (), partial(self._resolved, first.size))
                return
            if isinstance(first, BaseException):
                held.clear()
                self._fail(first)
                return
            run: list[ControlMessage] = []
            while held and not isinstance(held[0], DeferredMessage | BaseException):
                run.append(cast(ControlMessage, held.popleft()))
            self._dispatch(run, self._held_share * len(run))
        self.flush()
        if held or self._decoding or self._closed:
            return
        if _DECODING in self._pauses:  # (the backlog is taken now: reading may go on)
            self._resume(_DECODING)
        if self._backlog:
            backlog, self._backlog, self._backlog_bytes = self._backlog, [], 0
            self._received(backlog[0] if len(backlog) == 1 else b"".join(backlog))

    def _resolved(self, size: int, ok: bool, outcome: Any) -> None:
        """A deferred message was inflated (or failed to)."""
        self._decoding = False
        if self._closed:
            return
        if not ok:
            self._held.clear()  # (what came after the bad packet is not delivered)
            self._fail(outcome)
            return
        self._dispatch((outcome,), size)
        self._drain_held()

    def _dispatch(self, events: Sequence[ControlMessage], size: int) -> None:
        if not events:
            return
        # the bytes of this read, shared by its messages (a big one usually comes alone)
        self.current_size = size // len(events) + _MESSAGE_OVERHEAD
        self.node.dispatch(self, events)  # (one call per read: the kernel loops)

    # -- FlowSource: how many of our bytes wait in mailboxes --------------------------------------

    def queued(self, size: int) -> None:
        """``size`` bytes of ours now wait in a mailbox; past the high-water mark reading
        pauses (the sending BEAM node sees busy_dist_port, as with a slow BEAM)."""
        self.undelivered += size
        if self.undelivered > FLOW_HIGH and _FLOW not in self._pauses:
            log.info("connection to %s: %.0f MB wait in mailboxes, reading pauses",
                     self.peer.name, self.undelivered / 2**20)
            self._pause(_FLOW)

    def delivered(self, size: int) -> None:
        """``size`` bytes of ours left a mailbox; below the low-water mark reading resumes."""
        self.undelivered -= size
        if self.undelivered < FLOW_LOW and _FLOW in self._pauses:
            log.info("connection to %s: reading resumes", self.peer.name)
            self._resume(_FLOW)
            if self._held:  # (not from inside a mailbox's receive)
                self._loop.call_soon(self._drain_held)

    def _pause(self, why: str) -> None:
        if not self._pauses and self._transport is not None and not self._closed:
            self._transport.pause_reading()
        self._pauses.add(why)

    def _resume(self, why: str) -> None:
        self._pauses.discard(why)
        if not self._pauses and self._transport is not None and not self._closed:
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed and exc is not None:
            self.down_reason = f"connection lost: {exc}"
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        if not self.handshake_done.done():
            cause = ("with TLS, the peer may have refused our certificate; otherwise a cookie "
                     "mismatch is the usual cause" if self._tls is not None
                     else "a cookie mismatch is the usual cause")
            self.handshake_done.set_exception(ConnectionLost(
                f"{self.peer.name or 'the peer'} ({self.where}) closed the connection during "
                f"the handshake ({cause})"))
            self.handshake_done.exception()
            return
        self.node.channel_down(self)

    def pause_writing(self) -> None:
        self.paused_writing = True

    def resume_writing(self) -> None:
        self.paused_writing = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- handshake -------------------------------------------------------------------------------

    def _handshake_data(self, data: bytes) -> None:
        hs = self._handshake
        assert hs is not None
        try:
            for event in hs.receive_data(data):
                if isinstance(event, NameReceived):
                    self._on_name(event)
                elif isinstance(event, StatusReceived):
                    self._on_status(event)
                elif isinstance(event, HandshakeComplete):
                    self._on_complete(event, hs.data_to_send())
                    return
            self._write_handshake()
            if hs.state is State.CLOSED:
                # ended by a status (nok, not_allowed, alive answered false): no connection
                self._fail(PeerWinsSimultaneousError(self.peer.name) if self.initiator
                           else HandshakeRefusedError("refused by status", peer=self.peer.name))
        except ErlNodeError as exc:
            self._write_handshake()
            self._fail(exc)

    def _on_name(self, event: NameReceived) -> None:
        assert isinstance(self._handshake, AcceptorHandshake)
        try:
            parse_node_name(event.peer_name)
        except ErlNodeError:
            self._handshake.accept(Status.NOT_ALLOWED)
            raise
        self.peer = Atom(event.peer_name)
        self._handshake.accept(self.node.accept_decision(self.peer))

    def _on_status(self, event: StatusReceived) -> None:
        assert isinstance(self._handshake, InitiatorHandshake)
        if event.status is Status.ALIVE:
            # We dialled because we have no connection: the peer's one is stale.
            self._handshake.answer_alive(True)

    def _on_complete(self, event: HandshakeComplete, final: bytes) -> None:
        assert self._transport is not None
        if self._timer is not None:
            self._timer.cancel()
        self.peer = Atom(event.peer_name)
        self.flags = event.flags
        bits = int(event.flags)
        self.visible = bool(bits & DistFlag.PUBLISHED) and not self.node.hidden
        # per-message decisions read these instead of IntFlag arithmetic (slow in Python)
        self.exit_payload = bool(bits & DistFlag.EXIT_PAYLOAD)
        self.alias = bool(bits & DistFlag.ALIAS)
        now = self._loop.time()
        self._conn = Connection(
            local_node=self.node.node_atom.name,
            peer_node=event.peer_name,
            flags=event.flags,
            now=now,
            net_ticktime=self.node.net_ticktime,
            inline_inflate_limit=OFFLOAD_AT,
        )
        self._handshake = None
        self.handshake_done.set_result(None)
        # channel_up drops an old connection to this peer (status alive answered true) before
        # our final ack goes out, as OTP waits for the old connection to die first.
        self.node.channel_up(self)
        if final:
            self._write(final)
        self._arm_timer()
        if event.trailing:
            self._received(bytes(event.trailing))

    def _handshake_timeout(self) -> None:
        self._fail(HandshakeError("handshake timed out", peer=self.peer.name or None))

    def _write_handshake(self) -> None:
        if self._handshake is not None and self._transport is not None:
            out = self._handshake.data_to_send()
            if out:
                self._write(out)

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` to the socket (encrypted first over TLS)."""
        assert self._transport is not None
        if self._tls is None:
            self._transport.write(data)
            return
        try:
            self._transport.write(self._tls.send(data))
        except TlsError as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self._conn is None:
            # Losing a simultaneous connect or being answered nok/alive is routine (INFO);
            # a wrong cookie or broken bytes are worth a WARNING, once per attempt.
            if isinstance(exc, PeerWinsSimultaneousError | HandshakeRefusedError):
                log.info("handshake with %s (%s) ended: %s", self.peer.name or "a peer",
                         self.where, exc)
            else:  # once a minute per address: a peer may retry a wrong cookie in a loop
                self.node.peer_warnings.log(
                    ("handshake", self.address[0] if self.address else None), logging.WARNING,
                    "handshake with %s (%s) failed: %s", self.peer.name or "a peer",
                    self.where, exc)
            if not self.handshake_done.done():
                self.handshake_done.set_exception(exc)
                self.handshake_done.exception()
            if not self.initiator:
                self.node.channel_failed(self.peer if self.peer.name else None, exc)
        self.close(str(exc))

    # -- connected -------------------------------------------------------------------------------

    def send(self, msg: ControlMessage, flush: Flush = Flush.SOON) -> None:
        """Queue one control message; ``flush`` says when it is written."""
        conn = self._conn
        if conn is None or self._closed:
            return
        conn.send(msg)
        self._queued(conn, flush)

    def send_message(self, from_pid: Pid, to: Pid | Atom | Reference, message: Term,
                     flush: Flush = Flush.SOON) -> None:
        """Queue ``message`` from ``from_pid`` to a pid, name or alias of the peer's (see
        :meth:`Connection.send_message`); ``flush`` says when it is written."""
        conn = self._conn
        if conn is None or self._closed:
            return
        conn.send_message(from_pid, to, message)
        self._queued(conn, flush)

    def _queued(self, conn: Connection, flush: Flush) -> None:
        if flush is Flush.NOW or conn.pending_bytes > _FLUSH_AT:
            # (past _FLUSH_AT: big or many messages start moving while more are encoded)
            self.flush()
        elif flush is Flush.SOON:
            if not self._flush_pending:
                self._flush_pending = True
                self._loop.call_soon(self.flush)
        elif self._later is None:
            # Armed once and left armed across flushes: a stream of calls, each ending in a
            # demonitor, arms it at most once per LATER_DELAY instead of once per call.
            self._later = self._loop.call_later(LATER_DELAY, self._later_due)

    @property
    def queued_bytes(self) -> int:
        """Bytes of control messages queued here, not yet handed to the socket."""
        return 0 if self._conn is None else self._conn.pending_bytes

    async def drain(self) -> None:
        """Wait while the socket's outbound buffer is above its high-water mark."""
        if self.paused_writing and not self._closed:
            waiter = self._drain_waiter
            if waiter is None or waiter.done():
                waiter = self._drain_waiter = self._loop.create_future()
            await waiter

    def _later_due(self) -> None:
        self._later = None
        self.flush()

    def flush(self) -> None:
        """Write everything queued now."""
        self._flush_pending = False
        if self._conn is None or self._transport is None or self._closed:
            return
        for chunk in self._conn.data_to_send():
            # A view: what the socket does not take at once is copied into the transport's
            # buffer once, instead of being sliced into a new bytearray first.
            self._write(memoryview(chunk) if len(chunk) > _BIG_WRITE else chunk)

    def _arm_timer(self) -> None:
        if self._conn is None or self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(self._conn.get_timer(), self._on_timer)

    def _on_timer(self) -> None:
        assert self._conn is not None
        if self._pauses or self._decoding or self._held:  # its bytes wait on us
            self._conn.peer_alive(self._loop.time())
        try:
            self._conn.handle_timer(self._loop.time())
        except RemoteProtocolError as exc:
            self._fail(exc)
            return
        self.flush()
        self._arm_timer()

    def close(self, reason: str | None = None) -> None:
        """Close the connection (``reason``: why, for the log line of it going down)."""
        if reason is not None and not self._closed:
            self.down_reason = reason
        if self._timer is not None:
            self._timer.cancel()
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self._transport is not None and not self._closed:
            self.flush()
            self._closed = True
            self._transport.close()


async def dial(node: ChannelOwner, peer: Atom) -> Channel:
    """Connect to ``peer`` (EPMD lookup, TCP, handshake as initiator)."""
    name = parse_node_name(peer.name)
    try:
        address = await epmd_client.port_please(name.alive, name.host, epmd_port=node.epmd_port)
    except EpmdError as exc:
        raise NodeDown(f"{peer.name}: {exc}") from exc
    if address.highest_version < 6:
        raise NodeDown(f"{peer.name} speaks distribution versions up to "
                       f"{address.highest_version} only; we need 6")
    loop = asyncio.get_running_loop()
    _, channel = await loop.create_connection(
        lambda: Channel(node, initiator=True, peer=peer), name.host, address.port,
        family=node.listen_options.family,
    )  # (TLS, if any, runs inside the channel: it checks the certificate as OTP does)
    try:
        await channel.handshake_done
    except BaseException:
        channel.close()
        raise
    return channel
