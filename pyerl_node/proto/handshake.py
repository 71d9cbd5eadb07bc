"""The distribution handshake, version 6, as two sans-I/O state machines
(docs/protocol/distribution.md §3).

``InitiatorHandshake`` (the connecting side, OTP's ``handshake_we_started``) and
``AcceptorHandshake`` (``handshake_other_started``) take received bytes with
``receive_data(data) -> events`` and queue the bytes to send, which ``data_to_send()``
drains. Every message is framed with a 2-byte length over TCP; over TLS (``inet_tls_dist``)
with a 4-byte one (``length_bytes=4``, docs/protocol/tls.md). The message layouts are the frozen
dataclasses below, each with ``encode()``; ``decode_message`` parses one packet.

Initiator::

    start()                     queues send_name 'N'
    <- status                   StatusReceived (ok / ok_simultaneous / named: continue;
                                alive: call answer_alive(); nok: the machine is CLOSED and the
                                peer's own connection attempt to us will win)
    <- challenge 'N'            checks the peer's name and mandatory flags, queues reply 'r'
    <- challenge_ack 'a'        checks the digest: HandshakeComplete

Acceptor::

    <- send_name 'N' (or 'n')   checks the name and mandatory flags: NameReceived
    accept(status)              the node's decision: ok / ok_simultaneous / named (queue the
                                status and challenge), alive (wait for 's true'/'s false'),
                                nok / not_allowed (queue the status; the machine is CLOSED)
    <- complement 'c'           only after an old 'n' send_name; completes flags and creation
    <- challenge_reply 'r'      checks the digest, queues ack 'a': HandshakeComplete

Errors: a bad cookie digest raises AuthenticationError (both sides), a peer without the
required flags MissingFlags (the acceptor first queues status ``not_allowed``, as OTP does),
status ``not_allowed`` received by the initiator, ``false`` after ``alive`` received by the
acceptor and any malformed or unexpected packet raise HandshakeError. After an error the
machine stays FAILED: ``data_to_send()`` still drains what was queued (send it, then close),
every other call raises LocalProtocolError. A machine that ended without error (CLOSED: nok,
not_allowed or alive/false decided by either side) likewise wants its last bytes sent and the
socket closed. Bytes that arrive while the machine waits for a local decision (accept /
answer_alive) stay buffered until the next ``receive_data`` (``b""`` just processes them).

Dynamic names (NAME_ME, §3.7) are supported on both sides: an initiator whose flags hold
NAME_ME sends ``local_name`` as a bare host and learns its name from StatusReceived(NAMED);
an acceptor answers such a peer with ``accept(Status.NAMED, name=..., creation=...)``.
Timeouts (``net_setuptime``) are the caller's job: the machines have no clock.
"""

from __future__ import annotations

import hashlib
import hmac
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from pyerl_node.proto.errors import (
    AuthenticationError,
    HandshakeError,
    LocalProtocolError,
    MissingFlags,
    ProtocolError,
)
from pyerl_node.proto.flags import REQUIRED, DistFlag, expand, flag_names, missing
from pyerl_node.proto.framing import PacketReader, frame

#: The distribution protocol version of the 'N' handshake (OTP 23+).
VERSION = 6
_U32 = 1 << 32
_LOW_32 = DistFlag(_U32 - 1)


class Status(Enum):
    """The acceptor's answer to send_name (§3.4)."""

    OK = "ok"
    OK_SIMULTANEOUS = "ok_simultaneous"
    NOK = "nok"
    NOT_ALLOWED = "not_allowed"
    ALIVE = "alive"
    NAMED = "named"


class Role(Enum):
    INITIATOR = "initiator"
    ACCEPTOR = "acceptor"


class State(Enum):
    """Where a handshake machine is; both roles share the terminal states."""

    IDLE = "idle"  # initiator before start()
    AWAIT_NAME = "await_name"
    AWAIT_DECISION = "await_decision"  # acceptor: the node must call accept()
    AWAIT_ALIVE_REPLY = "await_alive_reply"
    AWAIT_STATUS = "await_status"
    AWAIT_ALIVE_DECISION = "await_alive_decision"  # initiator: call answer_alive()
    AWAIT_CHALLENGE = "await_challenge"
    AWAIT_COMPLEMENT = "await_complement"
    AWAIT_REPLY = "await_reply"
    AWAIT_ACK = "await_ack"
    DONE = "done"
    CLOSED = "closed"  # ended by a status, without error
    FAILED = "failed"


# --- messages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendName:
    """'N' from the initiator: ``Flags:64, Creation:32, Nlen:16, Name``."""

    flags: DistFlag
    creation: int
    name: str

    def encode(self) -> bytes:
        name = _latin1(self.name)
        return (
            b"N" + int(self.flags).to_bytes(8, "big") + self.creation.to_bytes(4, "big")
            + len(name).to_bytes(2, "big") + name
        )


@dataclass(frozen=True)
class OldSendName:
    """'n' (protocol version 5): ``Version:16, Flags:32, Name`` (runs to the end)."""

    version: int
    flags: DistFlag
    name: str

    def encode(self) -> bytes:
        return (
            b"n" + self.version.to_bytes(2, "big") + int(self.flags).to_bytes(4, "big")
            + _latin1(self.name)
        )


@dataclass(frozen=True)
class StatusMessage:
    """'s' + text: a Status from the acceptor, ``true``/``false`` from the initiator.

    ``named:`` carries the name and creation given to a NAME_ME initiator.
    """

    text: str
    name: str | None = None
    creation: int | None = None

    def encode(self) -> bytes:
        if self.text != Status.NAMED.value:
            return b"s" + _latin1(self.text)
        assert self.name is not None and self.creation is not None
        name = self.name.encode("utf-8")
        return b"snamed:" + len(name).to_bytes(2, "big") + name + self.creation.to_bytes(4, "big")


@dataclass(frozen=True)
class Challenge:
    """'N' from the acceptor: ``Flags:64, Challenge:32, Creation:32, Nlen:16, Name``."""

    flags: DistFlag
    challenge: int
    creation: int
    name: str

    def encode(self) -> bytes:
        name = _latin1(self.name)
        return (
            b"N" + int(self.flags).to_bytes(8, "big") + self.challenge.to_bytes(4, "big")
            + self.creation.to_bytes(4, "big") + len(name).to_bytes(2, "big") + name
        )


@dataclass(frozen=True)
class Complement:
    """'c' after an old 'n': ``FlagsHigh:32, Creation:32``."""

    flags_high: int
    creation: int

    def encode(self) -> bytes:
        return b"c" + self.flags_high.to_bytes(4, "big") + self.creation.to_bytes(4, "big")


@dataclass(frozen=True)
class ChallengeReply:
    """'r': the initiator's own challenge and its digest of the acceptor's."""

    challenge: int
    digest: bytes

    def encode(self) -> bytes:
        return b"r" + self.challenge.to_bytes(4, "big") + self.digest


@dataclass(frozen=True)
class ChallengeAck:
    """'a': the acceptor's digest of the initiator's challenge."""

    digest: bytes

    def encode(self) -> bytes:
        return b"a" + self.digest


Message = (
    SendName | OldSendName | StatusMessage | Challenge | Complement | ChallengeReply
    | ChallengeAck
)


def decode_message(packet: bytes, sender: Role) -> Message:
    """Parse one handshake packet (without its length) sent by ``sender``.

    Layouts follow ``dist_util``: send_name and challenge may carry bytes after the name
    (ignored, as OTP does), reply, ack and complement have exact sizes.
    Raises HandshakeError for anything else.
    """
    if packet[:1] == b"s":
        message: Message | None = _decode_status(packet)
    elif sender is Role.INITIATOR:
        message = _decode_from_initiator(packet)
    else:
        message = _decode_from_acceptor(packet)
    if message is None:
        raise HandshakeError(f"malformed or unknown handshake message from the "
                             f"{sender.value}: {packet[:40].hex()}")
    return message


def _decode_from_initiator(packet: bytes) -> Message | None:
    tag, size = packet[:1], len(packet)
    if tag == b"N" and size >= 15:
        nlen = _u(packet, 13, 2)
        if size >= 15 + nlen:
            return SendName(DistFlag(_u(packet, 1, 8)), _u(packet, 9, 4),
                            packet[15:15 + nlen].decode("latin-1"))
    elif tag == b"n" and size >= 7:
        return OldSendName(_u(packet, 1, 2), DistFlag(_u(packet, 3, 4)),
                           packet[7:].decode("latin-1"))
    elif tag == b"c" and size == 9:
        return Complement(_u(packet, 1, 4), _u(packet, 5, 4))
    elif tag == b"r" and size == 21:
        return ChallengeReply(_u(packet, 1, 4), packet[5:])
    return None


def _decode_from_acceptor(packet: bytes) -> Message | None:
    tag, size = packet[:1], len(packet)
    if tag == b"N" and size >= 19:
        nlen = _u(packet, 17, 2)
        if size >= 19 + nlen:
            return Challenge(DistFlag(_u(packet, 1, 8)), _u(packet, 9, 4), _u(packet, 13, 4),
                             packet[19:19 + nlen].decode("latin-1"))
    elif tag == b"a" and size == 17:
        return ChallengeAck(packet[1:])
    return None


def _decode_status(packet: bytes) -> StatusMessage | None:
    if not packet.startswith(b"snamed:"):
        return StatusMessage(packet[1:].decode("latin-1"))
    body = packet[7:]
    nlen = _u(body, 0, 2)
    if len(body) < 6 + nlen:
        return None
    try:
        name = body[2:2 + nlen].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return StatusMessage(Status.NAMED.value, name, _u(body, 2 + nlen, 4))


def _u(data: bytes, offset: int, size: int) -> int:
    return int.from_bytes(data[offset:offset + size], "big")


def _latin1(text: str) -> bytes:
    # dist_util sends node names with atom_to_binary(Node, latin1).
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"{text!r} cannot be sent: not Latin-1") from None


def gen_digest(challenge: int, cookie: str) -> bytes:
    """``md5(Cookie ++ integer_to_list(Challenge))`` (§3.2)."""
    return hashlib.md5(_latin1(cookie) + str(challenge).encode("ascii")).digest()


def _negotiate(own: DistFlag, peer: DistFlag) -> DistFlag:
    # dist_util ANDs its own flags with the peer's expanded ones. A BEAM's own flags always
    # hold the OTP 25 bits, so expanding ours too gives what the peer computes even if we
    # announce only the digest.
    return expand(own) & expand(peer)


def _is_node_name(name: str) -> bool:
    # dist_util:is_name_ok/2 for static names: exactly one '@', both parts non-empty.
    parts = name.split("@")
    return len(parts) == 2 and all(parts)


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NameReceived:
    """The acceptor got send_name: the node must now call ``accept``.

    ``peer_name`` is a bare host when the peer asked for a dynamic name (NAME_ME in
    ``peer_flags``); ``peer_creation`` is None after an old 'n' (it comes in the complement);
    ``version`` is 6 for 'N', the version field (5) for 'n'.
    """

    peer_name: str
    peer_flags: DistFlag
    peer_creation: int | None
    version: int


@dataclass(frozen=True)
class StatusReceived:
    """The initiator got a status; for NAMED also the name and creation to adopt."""

    status: Status
    name: str | None = None
    creation: int | None = None


@dataclass(frozen=True)
class HandshakeComplete:
    """Both sides proved the cookie.

    ``flags`` is the negotiated set (ours AND the peer's, both digest-expanded), ``peer_flags`` what
    the peer announced; ``trailing`` holds the bytes received after the handshake's last
    message, the start of the 4-byte-framed connection stream.
    """

    peer_name: str
    flags: DistFlag
    peer_flags: DistFlag
    peer_creation: int
    trailing: bytes


Event = NameReceived | StatusReceived | HandshakeComplete


# --- machines -------------------------------------------------------------------------------


class _Handshake(ABC):
    """What both roles share: framing, the outgoing queue, the error state."""

    _role: Role

    def __init__(self, *, local_name: str, cookie: str, flags: DistFlag, creation: int,
                 challenge_source: Callable[[], int], required: DistFlag,
                 length_bytes: int) -> None:
        if length_bytes not in (2, 4):
            raise LocalProtocolError(f"handshake messages have 2- or 4-byte lengths, not "
                                     f"{length_bytes!r}")
        if not 0 <= creation < _U32:
            raise LocalProtocolError(f"creation {creation} is not a 32-bit value")
        _latin1(local_name)
        _latin1(cookie)
        self._local_name = local_name
        self._cookie = cookie
        self._flags = flags
        self._creation = creation
        self._challenge_source = challenge_source
        self._required = required
        self._length_bytes = length_bytes
        self._reader = PacketReader(length_bytes)
        self._out = bytearray()
        self._state = State.IDLE
        self._error: Exception | None = None
        self._peer_name: str | None = None
        self._peer_flags = DistFlag(0)
        self._peer_creation: int | None = None
        self._own_challenge = 0
        self._negotiated = DistFlag(0)

    @property
    def state(self) -> State:
        return self._state

    def data_to_send(self) -> bytes:
        """Drain the queued bytes (each message framed with its length)."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed received bytes; returns the events they complete, in order."""
        self._check_usable()
        if self._state in (State.IDLE, State.DONE, State.CLOSED):
            raise LocalProtocolError(f"the handshake cannot receive data in state {self._state}")
        self._reader.feed(data)
        events: list[Event] = []
        try:
            while self._state not in _PAUSED:
                packet = self._reader.next_packet()
                if packet is None:
                    break
                message = decode_message(packet, _other(self._role))
                event = self._handle(message)
                if event is not None:
                    events.append(event)
        except ProtocolError as exc:  # the peer's bytes, or a bad challenge source
            self._fail(exc)
            raise
        return events

    @abstractmethod
    def _handle(self, message: Message) -> Event | None:
        """Apply one message from the peer in the current state (the role's transitions)."""

    def _complete(self) -> HandshakeComplete:
        self._state = State.DONE
        assert self._peer_name is not None and self._peer_creation is not None
        return HandshakeComplete(self._peer_name, self._negotiated, self._peer_flags,
                                 self._peer_creation, self._reader.take_rest())

    def _send(self, message: Message) -> None:
        self._out += frame(message.encode(), self._length_bytes)

    def _new_challenge(self) -> int:
        challenge = self._challenge_source()
        if not 0 <= challenge < _U32:
            exc = LocalProtocolError(f"challenge source gave {challenge!r}, not a 32-bit value")
            self._fail(exc)  # also when called from accept() / answer_alive()
            raise exc
        return challenge

    def _unexpected(self, message: Message) -> HandshakeError:
        return HandshakeError(f"unexpected {type(message).__name__} in state {self._state}",
                              peer=self._peer_name)

    def _check_usable(self) -> None:
        if self._state is State.FAILED:
            raise LocalProtocolError(f"the handshake already failed: {self._error}")

    def _fail(self, exc: Exception) -> None:
        self._state = State.FAILED
        self._error = exc


# The machine stops reading packets in these states (a local decision is due, or it ended).
_PAUSED = frozenset({State.AWAIT_DECISION, State.AWAIT_ALIVE_DECISION, State.DONE,
                     State.CLOSED, State.FAILED})


def _other(role: Role) -> Role:
    return Role.ACCEPTOR if role is Role.INITIATOR else Role.INITIATOR


class InitiatorHandshake(_Handshake):
    """The connecting side. Call ``start()``, then feed the peer's bytes."""

    _role = Role.INITIATOR

    def __init__(self, *, local_name: str, peer_name: str, cookie: str, flags: DistFlag,
                 creation: int, challenge_source: Callable[[], int],
                 required: DistFlag = REQUIRED, length_bytes: int = 2) -> None:
        super().__init__(local_name=local_name, cookie=cookie, flags=flags, creation=creation,
                         challenge_source=challenge_source, required=required,
                         length_bytes=length_bytes)
        self._name_me = bool(flags & DistFlag.NAME_ME)
        if self._name_me and "@" in local_name:
            raise LocalProtocolError("with NAME_ME, local_name is the bare host to send")
        self._peer_name = peer_name

    def start(self) -> None:
        """Queue send_name."""
        self._check_usable()
        if self._state is not State.IDLE:
            raise LocalProtocolError("start() was already called")
        self._send(SendName(self._flags, self._creation, self._local_name))
        self._state = State.AWAIT_STATUS

    def answer_alive(self, proceed: bool) -> None:
        """Answer status ``alive``: True if we have no other live connection to the peer
        (it then drops its old one and the handshake goes on), False to give up (CLOSED)."""
        self._check_usable()
        if self._state is not State.AWAIT_ALIVE_DECISION:
            raise LocalProtocolError(f"answer_alive() is not expected in state {self._state}")
        self._send(StatusMessage("true" if proceed else "false"))
        self._state = State.AWAIT_CHALLENGE if proceed else State.CLOSED

    def _handle(self, message: Message) -> Event | None:
        if self._state is State.AWAIT_STATUS and isinstance(message, StatusMessage):
            return self._on_status(message)
        if self._state is State.AWAIT_CHALLENGE and isinstance(message, Challenge):
            self._on_challenge(message)
            return None
        if self._state is State.AWAIT_ACK and isinstance(message, ChallengeAck):
            return self._on_ack(message)
        raise self._unexpected(message)

    def _on_status(self, message: StatusMessage) -> Event:
        try:
            status = Status(message.text)
        except ValueError:
            raise HandshakeError(f"unknown status {message.text!r}",
                                 peer=self._peer_name) from None
        if status is Status.NOT_ALLOWED:
            raise HandshakeError("the peer refused the connection (status not_allowed: "
                                 "flags, allow-list or name form)", peer=self._peer_name)
        if (status is Status.NAMED) != self._name_me:
            raise HandshakeError(f"status {status.value} does not answer a "
                                 f"{'dynamic' if self._name_me else 'static'} name",
                                 peer=self._peer_name)
        if status is Status.NAMED:
            assert message.name is not None
            host = message.name.partition("@")[2]
            if not _is_node_name(message.name) or host != self._local_name:
                raise HandshakeError(f"dynamic name {message.name!r} is not on our host "
                                     f"{self._local_name!r}", peer=self._peer_name)
        self._state = {
            Status.NOK: State.CLOSED,
            Status.ALIVE: State.AWAIT_ALIVE_DECISION,
        }.get(status, State.AWAIT_CHALLENGE)
        return StatusReceived(status, message.name, message.creation)

    def _on_challenge(self, message: Challenge) -> None:
        if message.name != self._peer_name:
            raise HandshakeError(f"the challenge comes from {message.name!r}, "
                                 f"not from the node we dialled", peer=self._peer_name)
        lacking = missing(self._required, message.flags)
        if lacking:
            raise MissingFlags(f"the peer cannot handle {flag_names(lacking)}",
                               peer=self._peer_name, missing=int(lacking))
        self._peer_flags = message.flags
        self._peer_creation = message.creation
        self._negotiated = _negotiate(self._flags, message.flags)
        self._own_challenge = self._new_challenge()
        self._send(ChallengeReply(self._own_challenge,
                                  gen_digest(message.challenge, self._cookie)))
        self._state = State.AWAIT_ACK

    def _on_ack(self, message: ChallengeAck) -> HandshakeComplete:
        if not hmac.compare_digest(message.digest,
                                   gen_digest(self._own_challenge, self._cookie)):
            raise AuthenticationError("invalid challenge ack: the peer's cookie differs",
                                      peer=self._peer_name)
        return self._complete()


class AcceptorHandshake(_Handshake):
    """The accepting side. Feed the peer's bytes; answer NameReceived with ``accept``."""

    _role = Role.ACCEPTOR

    def __init__(self, *, local_name: str, cookie: str, flags: DistFlag, creation: int,
                 challenge_source: Callable[[], int], required: DistFlag = REQUIRED,
                 length_bytes: int = 2) -> None:
        super().__init__(local_name=local_name, cookie=cookie, flags=flags, creation=creation,
                         challenge_source=challenge_source, required=required,
                         length_bytes=length_bytes)
        self._state = State.AWAIT_NAME
        self._own_flags = flags  # what our challenge announces (see _send_challenge)

    def accept(self, status: Status, *, name: str | None = None,
               creation: int | None = None) -> None:
        """The node's decision on the NameReceived peer (§3.4).

        OK / OK_SIMULTANEOUS go on; ALIVE waits for the peer's true/false (on true the
        handshake goes on: drop the old connection before sending the final ack, as OTP's
        wait_pending does); NOK and NOT_ALLOWED end the handshake (CLOSED): send the queued
        status, then close the socket. A peer that
        asked for a dynamic name gets NAMED with the full ``name`` and ``creation`` it is to
        use (then HandshakeComplete reports that name); NAMED is only for such a peer.
        """
        self._check_usable()
        if self._state is not State.AWAIT_DECISION:
            raise LocalProtocolError(f"accept() is not expected in state {self._state}")
        dynamic = bool(self._peer_flags & DistFlag.NAME_ME)
        if status in (Status.NOK, Status.NOT_ALLOWED):
            self._send(StatusMessage(status.value))
            self._state = State.CLOSED
            return
        if (status is Status.NAMED) != dynamic:
            raise LocalProtocolError(
                "a peer asking for a dynamic name (NAME_ME) must be answered with NAMED or "
                "refused" if dynamic else "NAMED only answers a peer that set NAME_ME")
        if status is Status.NAMED:
            if name is None or creation is None or not _is_node_name(name):
                raise LocalProtocolError("NAMED needs name='alive@host' and creation=")
            if not 0 <= creation < _U32:
                raise LocalProtocolError(f"creation {creation} is not a 32-bit value")
            self._peer_name, self._peer_creation = name, creation
            self._send(StatusMessage(status.value, name, creation))
        else:
            self._send(StatusMessage(status.value))
        if status is Status.ALIVE:
            self._state = State.AWAIT_ALIVE_REPLY
        else:
            self._send_challenge()

    def _send_challenge(self) -> None:
        own = self._flags
        if self._peer_flags & DistFlag.NAME_ME:
            # A dynamically named peer is always hidden (dist_util:publish_flag).
            own = (own & ~DistFlag.PUBLISHED) | DistFlag.NAME_ME
        self._own_flags = own
        self._own_challenge = self._new_challenge()
        self._send(Challenge(own, self._own_challenge, self._creation, self._local_name))
        self._state = (State.AWAIT_COMPLEMENT if self._peer_creation is None
                       else State.AWAIT_REPLY)

    def _handle(self, message: Message) -> Event | None:
        if self._state is State.AWAIT_NAME and isinstance(message, SendName | OldSendName):
            return self._on_name(message)
        if self._state is State.AWAIT_ALIVE_REPLY and isinstance(message, StatusMessage):
            self._on_alive_reply(message)
            return None
        if self._state is State.AWAIT_COMPLEMENT and isinstance(message, Complement):
            self._on_complement(message)
            return None
        if self._state is State.AWAIT_REPLY and isinstance(message, ChallengeReply):
            return self._on_reply(message)
        raise self._unexpected(message)

    def _on_name(self, message: SendName | OldSendName) -> NameReceived:
        flags = message.flags
        if isinstance(message, SendName):
            creation: int | None = message.creation
            version = VERSION
            dynamic = bool(flags & DistFlag.NAME_ME)
            valid = ("@" not in message.name and message.name != "") if dynamic \
                else _is_node_name(message.name)
        else:
            creation, version = None, message.version
            valid = _is_node_name(message.name)
        if not valid:
            raise HandshakeError(f"invalid node name {message.name!r} in send_name")
        self._peer_name = message.name
        self._peer_flags = flags
        self._peer_creation = creation
        # Bits above 32 of an old 'n' come with the complement: check them then (OTP 28).
        self._check_peer_flags(low_only=creation is None)
        self._state = State.AWAIT_DECISION
        return NameReceived(message.name, flags, creation, version)

    def _check_peer_flags(self, *, low_only: bool = False) -> None:
        required = self._required & _LOW_32 if low_only else self._required
        lacking = missing(required, self._peer_flags)
        if lacking:
            self._send(StatusMessage(Status.NOT_ALLOWED.value))
            raise MissingFlags(f"connection refused: the peer cannot handle "
                               f"{flag_names(lacking)}", peer=self._peer_name,
                               missing=int(lacking))

    def _on_alive_reply(self, message: StatusMessage) -> None:
        if message.text == "false":
            raise HandshakeError("the peer keeps its existing connection (answered false "
                                 "to status alive)", peer=self._peer_name)
        if message.text != "true":
            raise HandshakeError(f"expected true or false after status alive, got "
                                 f"{message.text!r}", peer=self._peer_name)
        self._send_challenge()

    def _on_complement(self, message: Complement) -> None:
        self._peer_flags |= DistFlag(message.flags_high << 32)
        self._peer_creation = message.creation
        self._check_peer_flags()
        self._state = State.AWAIT_REPLY

    def _on_reply(self, message: ChallengeReply) -> HandshakeComplete:
        if not hmac.compare_digest(message.digest,
                                   gen_digest(self._own_challenge, self._cookie)):
            raise AuthenticationError("invalid challenge reply: the peer's cookie differs",
                                      peer=self._peer_name)
        self._negotiated = _negotiate(self._own_flags, self._peer_flags)
        self._send(ChallengeAck(gen_digest(message.challenge, self._cookie)))
        return self._complete()
