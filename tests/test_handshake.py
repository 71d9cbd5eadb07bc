"""Our initiator against our acceptor, in memory: every status, wrong cookies both ways, missing
flags both ways, the old 'n' + 'c' send_name, dynamic names, byte-at-a-time delivery, bytes
after the last message, the error state and API misuse."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable

import pytest

from pyerl_node.proto.errors import (
    AuthenticationError,
    HandshakeError,
    LocalProtocolError,
    MissingFlags,
)
from pyerl_node.proto.flags import MANDATORY_25, REQUIRED, DistFlag, default_flags
from pyerl_node.proto.framing import frame
from pyerl_node.proto.handshake import (
    AcceptorHandshake,
    Challenge,
    ChallengeAck,
    ChallengeReply,
    Complement,
    Event,
    HandshakeComplete,
    InitiatorHandshake,
    NameReceived,
    OldSendName,
    SendName,
    State,
    Status,
    StatusMessage,
    StatusReceived,
    gen_digest,
)

A, B = "a@127.0.0.1", "b@127.0.0.1"


def counter(start: int) -> Callable[[], int]:
    return itertools.count(start).__next__


def make_pair(*, init_cookie: str = "c", acc_cookie: str = "c",
              init_flags: DistFlag | None = None, acc_flags: DistFlag | None = None,
              local_name: str = A) -> tuple[InitiatorHandshake, AcceptorHandshake]:
    init = InitiatorHandshake(
        local_name=local_name, peer_name=B, cookie=init_cookie,
        flags=default_flags() if init_flags is None else init_flags,
        creation=0x11111111, challenge_source=counter(1000))
    acc = AcceptorHandshake(
        local_name=B, cookie=acc_cookie,
        flags=default_flags(spawn=True) if acc_flags is None else acc_flags,
        creation=0x22222222, challenge_source=counter(4_000_000_000))
    return init, acc


def deliver(data: bytes, machine: InitiatorHandshake | AcceptorHandshake,
            chunk: int | None) -> list[Event]:
    if chunk is None:
        return machine.receive_data(data)
    events: list[Event] = []
    for i in range(0, len(data), chunk):
        events += machine.receive_data(data[i:i + chunk])
    return events


def run(init: InitiatorHandshake, acc: AcceptorHandshake, status: Status = Status.OK, *,
        alive_answer: bool = True, chunk: int | None = None,
        ) -> tuple[list[Event], list[Event]]:
    """Pump bytes both ways until neither side has anything to say."""
    init_events: list[Event] = []
    acc_events: list[Event] = []
    init.start()
    while True:
        to_acc = init.data_to_send()
        if to_acc and acc.state not in (State.DONE, State.CLOSED):
            acc_events += deliver(to_acc, acc, chunk)
            if acc.state is State.AWAIT_DECISION:
                acc.accept(status)
        to_init = acc.data_to_send()
        if to_init and init.state not in (State.DONE, State.CLOSED):
            init_events += deliver(to_init, init, chunk)
            if init.state is State.AWAIT_ALIVE_DECISION:
                init.answer_alive(alive_answer)
        if not to_acc and not to_init:
            return init_events, acc_events


@pytest.mark.parametrize("chunk", [None, 1, 3])
@pytest.mark.parametrize("status", [Status.OK, Status.OK_SIMULTANEOUS, Status.ALIVE])
def test_handshake_completes(status: Status, chunk: int | None) -> None:
    init, acc = make_pair()
    init_events, acc_events = run(init, acc, status, chunk=chunk)
    negotiated = default_flags()  # ours lacks SPAWN, the acceptor's has it
    assert acc_events == [
        NameReceived(A, default_flags(), 0x11111111, 6),
        HandshakeComplete(A, negotiated, default_flags(), 0x11111111, b""),
    ]
    assert init_events == [
        StatusReceived(status),
        HandshakeComplete(B, negotiated, default_flags(spawn=True), 0x22222222, b""),
    ]
    assert init.state is acc.state is State.DONE


def test_hidden_initiator_gives_a_hidden_connection() -> None:
    init, acc = make_pair(init_flags=default_flags(hidden=True))
    init_events, acc_events = run(init, acc)
    for done in (init_events[-1], acc_events[-1]):
        assert isinstance(done, HandshakeComplete)
        assert not done.flags & DistFlag.PUBLISHED


def test_nok_closes_both_without_error() -> None:
    init, acc = make_pair()
    init_events, _ = run(init, acc, Status.NOK)
    assert init_events == [StatusReceived(Status.NOK)]
    assert init.state is acc.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        init.receive_data(b"")


def test_not_allowed_is_an_error_for_the_initiator() -> None:
    init, acc = make_pair()
    with pytest.raises(HandshakeError, match="not_allowed") as info:
        run(init, acc, Status.NOT_ALLOWED)
    assert info.value.peer == B
    assert init.state is State.FAILED and acc.state is State.CLOSED


def test_alive_answered_false() -> None:
    init, acc = make_pair()
    with pytest.raises(HandshakeError, match="false"):
        run(init, acc, Status.ALIVE, alive_answer=False)
    assert init.state is State.CLOSED and acc.state is State.FAILED


@pytest.mark.parametrize("chunk", [None, 1])
def test_wrong_cookie_caught_by_the_acceptor(chunk: int | None) -> None:
    init, acc = make_pair(init_cookie="mine", acc_cookie="theirs")
    with pytest.raises(AuthenticationError, match=re.escape(A)) as info:
        run(init, acc, chunk=chunk)
    assert info.value.peer == A
    assert acc.state is State.FAILED
    assert acc.data_to_send() == b""  # no ack, just close


def test_wrong_cookie_caught_by_the_initiator() -> None:
    # An acceptor that accepts any reply but acks with another cookie.
    init, _ = make_pair()
    init.start()
    init.data_to_send()
    init.receive_data(frame(StatusMessage("ok").encode(), 2)
                      + frame(Challenge(default_flags(), 77, 5, B).encode(), 2))
    reply = init.data_to_send()
    assert reply[2:3] == b"r"
    assert reply[7:] == gen_digest(77, "c")
    their_challenge = int.from_bytes(reply[3:7], "big")
    with pytest.raises(AuthenticationError, match=re.escape(B)):
        init.receive_data(frame(ChallengeAck(gen_digest(their_challenge, "x")).encode(), 2))
    assert init.state is State.FAILED


def test_initiator_without_required_flags_is_refused_with_not_allowed() -> None:
    init, acc = make_pair(init_flags=default_flags() & ~DistFlag.UNLINK_ID)
    init.start()
    with pytest.raises(MissingFlags, match="UNLINK_ID") as info:
        acc.receive_data(init.data_to_send())
    assert info.value.missing == DistFlag.UNLINK_ID and info.value.peer == A
    refusal = acc.data_to_send()
    assert refusal == frame(b"snot_allowed", 2)
    with pytest.raises(HandshakeError, match="not_allowed"):
        init.receive_data(refusal)


def test_acceptor_without_required_flags_is_abandoned() -> None:
    init, acc = make_pair(acc_flags=default_flags() & ~DistFlag.V4_NC)
    with pytest.raises(MissingFlags, match="V4_NC") as info:
        run(init, acc)
    assert info.value.missing == DistFlag.V4_NC and info.value.peer == B
    assert init.state is State.FAILED


def test_required_is_a_parameter() -> None:
    init, acc = make_pair(init_flags=default_flags() & ~DistFlag.V4_NC)
    acc = AcceptorHandshake(local_name=B, cookie="c", flags=default_flags(), creation=1,
                            challenge_source=counter(1), required=REQUIRED & ~DistFlag.V4_NC)
    _, acc_events = run(init, acc)
    assert isinstance(acc_events[-1], HandshakeComplete)
    assert not acc_events[-1].flags & DistFlag.V4_NC


def _old_initiator_bytes(acc: AcceptorHandshake, flags: DistFlag, creation: int) -> list[Event]:
    """Play an OTP 23/24 initiator that sends 'n' and then 'c' against ``acc``."""
    events = acc.receive_data(frame(OldSendName(5, flags & 0xFFFFFFFF, A).encode(), 2))
    acc.accept(Status.OK)
    out = acc.data_to_send()
    assert out.startswith(frame(b"sok", 2))
    challenge = Challenge(default_flags(spawn=True), 4_000_000_000, 0x22222222, B)
    assert out[5:] == frame(challenge.encode(), 2)
    events += acc.receive_data(
        frame(Complement(flags >> 32, creation).encode(), 2)
        + frame(ChallengeReply(9, gen_digest(4_000_000_000, "c")).encode(), 2))
    return events


def test_old_send_name_with_complement() -> None:
    _, acc = make_pair()
    events = _old_initiator_bytes(acc, default_flags(), 0x33333333)
    assert events == [
        NameReceived(A, DistFlag(default_flags() & 0xFFFFFFFF), None, 5),
        HandshakeComplete(A, default_flags(), default_flags(), 0x33333333, b""),
    ]
    assert acc.data_to_send() == frame(ChallengeAck(gen_digest(9, "c")).encode(), 2)


def test_old_send_name_high_flags_are_checked_at_the_complement() -> None:
    _, acc = make_pair()
    with pytest.raises(MissingFlags, match="V4_NC"):
        _old_initiator_bytes(acc, default_flags() & ~DistFlag.V4_NC, 1)
    assert acc.data_to_send() == frame(b"snot_allowed", 2)


def test_old_send_name_low_flags_are_checked_at_once() -> None:
    _, acc = make_pair()
    with pytest.raises(MissingFlags, match="BIG_CREATION"):
        acc.receive_data(frame(OldSendName(
            5, default_flags() & 0xFFFFFFFF & ~(DistFlag.BIG_CREATION
                                                 | DistFlag.MANDATORY_25_DIGEST), A).encode(), 2))


def test_dynamic_name() -> None:
    init, acc = make_pair(init_flags=default_flags() | DistFlag.NAME_ME, local_name="127.0.0.1")
    init.start()
    assert acc.receive_data(init.data_to_send()) == [
        NameReceived("127.0.0.1", default_flags() | DistFlag.NAME_ME, 0x11111111, 6)]
    with pytest.raises(LocalProtocolError, match="NAME_ME"):
        acc.accept(Status.OK)
    acc.accept(Status.NAMED, name="gen42@127.0.0.1", creation=0x44444444)
    init_events = init.receive_data(acc.data_to_send())
    assert init_events == [StatusReceived(Status.NAMED, "gen42@127.0.0.1", 0x44444444)]
    acc_events = acc.receive_data(init.data_to_send())
    init_events = init.receive_data(acc.data_to_send())
    acc_done, init_done = acc_events[-1], init_events[-1]
    assert isinstance(acc_done, HandshakeComplete) and isinstance(init_done, HandshakeComplete)
    assert (acc_done.peer_name, acc_done.peer_creation) == ("gen42@127.0.0.1", 0x44444444)
    # Such connections are always hidden, and NAME_ME stays on (what OTP does).
    assert init_done.peer_flags & DistFlag.NAME_ME
    assert not init_done.peer_flags & DistFlag.PUBLISHED
    assert acc_done.flags == init_done.flags
    assert not acc_done.flags & DistFlag.PUBLISHED


def test_named_for_a_static_initiator_is_an_error() -> None:
    init, _ = make_pair()
    init.start()
    with pytest.raises(HandshakeError, match="static"):
        init.receive_data(frame(StatusMessage("named", "x@h", 1).encode(), 2))


def test_named_on_another_host_is_an_error() -> None:
    init, _ = make_pair(init_flags=default_flags() | DistFlag.NAME_ME, local_name="h1")
    init.start()
    with pytest.raises(HandshakeError, match="host"):
        init.receive_data(frame(StatusMessage("named", "x@h2", 1).encode(), 2))


def test_challenge_from_another_node_is_an_error() -> None:
    init, _ = make_pair()
    init.start()
    with pytest.raises(HandshakeError, match="not from the node we dialled"):
        init.receive_data(frame(b"sok", 2)
                          + frame(Challenge(default_flags(), 1, 1, "c@127.0.0.1").encode(), 2))


@pytest.mark.parametrize("name", ["nohost", "a@", "@h", "a@b@c"])
def test_acceptor_refuses_bad_names(name: str) -> None:
    _, acc = make_pair()
    with pytest.raises(HandshakeError, match="invalid node name"):
        acc.receive_data(frame(SendName(default_flags(), 1, name).encode(), 2))


@pytest.mark.parametrize("who", ["initiator", "acceptor"])
def test_trailing_bytes_after_the_last_message_are_handed_over(who: str) -> None:
    init, acc = make_pair()
    init.start()
    acc.receive_data(init.data_to_send())
    acc.accept(Status.OK)
    init.receive_data(acc.data_to_send())
    extra = b"\x00\x00\x00\x00\x00\x00\x00\x02p\x83"  # a tick and the start of a packet
    if who == "acceptor":
        events = acc.receive_data(init.data_to_send() + extra)
    else:
        acc.receive_data(init.data_to_send())
        events = init.receive_data(acc.data_to_send() + extra)
    done = events[-1]
    assert isinstance(done, HandshakeComplete) and done.trailing == extra


def test_status_and_challenge_in_one_read() -> None:
    init, acc = make_pair()
    init.start()
    acc.receive_data(init.data_to_send())
    acc.accept(Status.OK)
    both = acc.data_to_send()
    assert init.receive_data(both) == [StatusReceived(Status.OK)]
    assert init.state is State.AWAIT_ACK


def test_bytes_sent_before_our_decision_wait_for_it() -> None:
    _, acc = make_pair()
    early = frame(SendName(default_flags(), 1, A).encode(), 2) + frame(b"junk", 2)
    assert len(acc.receive_data(early)) == 1
    acc.accept(Status.OK)
    with pytest.raises(HandshakeError, match="malformed"):
        acc.receive_data(b"")


def test_error_state_is_sticky() -> None:
    _, acc = make_pair()
    with pytest.raises(HandshakeError):
        acc.receive_data(frame(b"?", 2))
    assert acc.state is State.FAILED
    with pytest.raises(LocalProtocolError, match="already failed"):
        acc.receive_data(frame(SendName(default_flags(), 1, A).encode(), 2))
    with pytest.raises(LocalProtocolError):
        acc.accept(Status.OK)


def test_api_misuse() -> None:
    init, acc = make_pair()
    with pytest.raises(LocalProtocolError):
        init.receive_data(b"x")  # before start()
    with pytest.raises(LocalProtocolError):
        init.answer_alive(True)
    with pytest.raises(LocalProtocolError):
        acc.accept(Status.OK)  # nothing received yet
    init.start()
    with pytest.raises(LocalProtocolError):
        init.start()
    acc.receive_data(init.data_to_send())
    with pytest.raises(LocalProtocolError, match="NAME_ME"):
        acc.accept(Status.NAMED, name="x@y", creation=1)
    with pytest.raises(LocalProtocolError):
        InitiatorHandshake(local_name=A, peer_name=B, cookie="c", flags=default_flags(),
                           creation=1 << 32, challenge_source=counter(1))
    with pytest.raises(LocalProtocolError, match="bare host"):
        InitiatorHandshake(local_name=A, peer_name=B, cookie="c",
                           flags=default_flags() | DistFlag.NAME_ME, creation=1,
                           challenge_source=counter(1))


def test_bad_challenge_source_fails_the_machine() -> None:
    acc = AcceptorHandshake(local_name=B, cookie="c", flags=default_flags(), creation=1,
                            challenge_source=lambda: -1)
    acc.receive_data(frame(SendName(default_flags(), 1, A).encode(), 2))
    with pytest.raises(LocalProtocolError, match="32-bit"):
        acc.accept(Status.OK)
    assert acc.state is State.FAILED


def test_digest_is_md5_of_cookie_and_decimal_challenge() -> None:
    # docs/protocol/distribution.md §3.1 worked example.
    assert gen_digest(3363001978, "capcookie").hex() == "11106f0e3f09f330d36316af2d46dfd1"


def test_names_and_cookies_must_be_latin1() -> None:
    with pytest.raises(LocalProtocolError, match="Latin-1"):
        AcceptorHandshake(local_name="b@\u0436", cookie="c", flags=default_flags(), creation=1,
                          challenge_source=counter(1))
    with pytest.raises(LocalProtocolError, match="Latin-1"):
        gen_digest(1, "\u0436")
    # Latin-1 cookies are hashed byte for byte, as atom_to_list/1 + md5 do.
    assert gen_digest(1, "\u00e9") == hashlib.md5(b"\xe91").digest()


def test_named_status_with_bad_utf8_is_malformed() -> None:
    init, _ = make_pair(init_flags=default_flags() | DistFlag.NAME_ME, local_name="h")
    init.start()
    with pytest.raises(HandshakeError, match="malformed"):
        init.receive_data(frame(b"snamed:\x00\x03\xff@h\x00\x00\x00\x01", 2))


def test_named_needs_a_name_and_creation() -> None:
    init, acc = make_pair(init_flags=default_flags() | DistFlag.NAME_ME, local_name="h")
    init.start()
    acc.receive_data(init.data_to_send())
    with pytest.raises(LocalProtocolError, match="name="):
        acc.accept(Status.NAMED, name="nohost", creation=1)
    with pytest.raises(LocalProtocolError, match="32-bit"):
        acc.accept(Status.NAMED, name="x@h", creation=-1)
    acc.accept(Status.NAMED, name="x@h", creation=1)
    assert init.receive_data(acc.data_to_send())[0] == StatusReceived(Status.NAMED, "x@h", 1)


def test_alive_reply_must_be_true_or_false() -> None:
    init, acc = make_pair()
    init.start()
    acc.receive_data(init.data_to_send())
    acc.accept(Status.ALIVE)
    assert acc.data_to_send() == frame(b"salive", 2)
    with pytest.raises(HandshakeError, match="true or false"):
        acc.receive_data(frame(b"smaybe", 2))


def test_negotiated_flags_expand_the_digest() -> None:
    # A peer may announce MANDATORY_25_DIGEST instead of the OTP 25 bits it stands for;
    # dist_util ANDs with the expanded set, so those bits are on for the connection.
    minimal = DistFlag.PUBLISHED | DistFlag.MANDATORY_25_DIGEST | DistFlag.V4_NC \
        | DistFlag.UNLINK_ID
    init, acc = make_pair(acc_flags=minimal)
    init_events, acc_events = run(init, acc)
    init_done, acc_done = init_events[-1], acc_events[-1]
    assert isinstance(init_done, HandshakeComplete) and isinstance(acc_done, HandshakeComplete)
    assert init_done.flags & DistFlag.BIG_CREATION
    assert init_done.flags == default_flags() & (minimal | MANDATORY_25)
    assert init_done.peer_flags == minimal
    # Both sides agree, also the one that announced only the digest.
    assert acc_done.flags == init_done.flags


def test_over_tls_every_message_has_a_4_byte_length() -> None:
    # inet_tls_dist runs the handshake on a {packet, 4} socket (docs/protocol/tls.md)
    init = InitiatorHandshake(local_name=A, peer_name=B, cookie="c", flags=default_flags(),
                              creation=1, challenge_source=counter(7), length_bytes=4)
    acc = AcceptorHandshake(local_name=B, cookie="c", flags=default_flags(spawn=True),
                            creation=2, challenge_source=counter(9), length_bytes=4)
    init_events, acc_events = run(init, acc)
    assert isinstance(init_events[-1], HandshakeComplete)
    assert isinstance(acc_events[-1], HandshakeComplete)
    probe = InitiatorHandshake(local_name=A, peer_name=B, cookie="c", flags=default_flags(),
                               creation=1, challenge_source=counter(7), length_bytes=4)
    probe.start()
    send_name = probe.data_to_send()
    assert int.from_bytes(send_name[:4], "big") == len(send_name) - 4
    assert send_name[4:5] == b"N"


def test_a_2_byte_send_name_is_not_read_as_a_4_byte_one() -> None:
    acc = AcceptorHandshake(local_name=B, cookie="c", flags=default_flags(spawn=True),
                            creation=2, challenge_source=counter(9), length_bytes=4)
    init, _ = make_pair()
    init.start()
    assert acc.receive_data(init.data_to_send()) == []  # still waiting: no name seen


def test_only_2_or_4_byte_lengths() -> None:
    with pytest.raises(LocalProtocolError):
        AcceptorHandshake(local_name=B, cookie="c", flags=default_flags(), creation=2,
                          challenge_source=counter(9), length_bytes=1)
