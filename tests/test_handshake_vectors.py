"""Real handshakes captured from OTP 25/28 (tests/vectors/handshake) replayed through our
machines: every frame decodes and re-encodes to its bytes; our acceptor, fed a capture's
initiator frames with the captured challenge as its challenge source, answers exactly the
bytes the real acceptor sent; our initiator does the same for the initiator's side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pyerl_node.proto.errors import AuthenticationError, MissingFlags
from pyerl_node.proto.flags import MANDATORY_25, MANDATORY_28, DistFlag
from pyerl_node.proto.framing import PacketReader
from pyerl_node.proto.handshake import (
    AcceptorHandshake,
    Challenge,
    ChallengeAck,
    ChallengeReply,
    Complement,
    HandshakeComplete,
    InitiatorHandshake,
    NameReceived,
    OldSendName,
    Role,
    SendName,
    State,
    Status,
    StatusMessage,
    StatusReceived,
    decode_message,
    gen_digest,
)

VECTORS = Path(__file__).resolve().parent / "vectors" / "handshake"
CAPTURES = {p.stem: json.loads(p.read_text()) for p in sorted(VECTORS.glob("*.json"))}
COOKIE = "capcookie"


def _frames(name: str, side: str | None = None) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = CAPTURES[name]["handshake"]
    return [f for f in frames if side is None or f["from"] == side]


def _raw(frame: dict[str, Any]) -> bytes:
    return bytes.fromhex(frame["hex"])


def _packet(frame: dict[str, Any]) -> bytes:
    reader = PacketReader(2)
    reader.feed(_raw(frame))
    packet = reader.next_packet()
    assert packet is not None and reader.take_rest() == b""
    return packet


def _all_frames() -> list[tuple[str, int]]:
    return [(name, i) for name, c in CAPTURES.items() for i in range(len(c["handshake"]))]


@pytest.mark.parametrize(("capture", "index"), _all_frames())
def test_every_frame_decodes_and_reencodes(capture: str, index: int) -> None:
    frame = CAPTURES[capture]["handshake"][index]
    packet = _packet(frame)
    message = decode_message(packet, Role(frame["from"]))
    assert message.encode() == packet
    want = frame["decoded"]
    match message:
        case SendName(flags, creation, name):
            assert (want["type"], int(flags), creation, name) == \
                ("N", want["flags"], want["creation"], want["node"])
        case OldSendName(version, flags, name):
            assert (want["type"], version, int(flags), name) == \
                ("n", want["version"], want["flags"], want["node"])
        case Challenge(flags, challenge, creation, name):
            assert (int(flags), challenge, creation, name) == \
                (want["flags"], want["challenge"], want["creation"], want["node"])
        case StatusMessage(text, name, creation):
            assert text.rstrip(":") == want["status"].rstrip(":")
            assert (name, creation) == (want.get("node"), want.get("creation"))
        case Complement(flags_high, creation):
            assert (flags_high, creation) == (want["flags_high"], want["creation"])
        case ChallengeReply(challenge, digest):
            assert (challenge, digest.hex()) == (want["challenge"], want["digest"])
        case ChallengeAck(digest):
            assert digest.hex() == want["digest"]
    if "digest_check" in frame:
        check = frame["digest_check"]
        challenge = int(check["input"].removeprefix("capcookie"))
        assert gen_digest(challenge, COOKIE).hex() == check["expected"]
        assert (want["digest"] == check["expected"]) is check["matches"]


# Captures of complete handshakes, with what the acceptor decided.
_COMPLETE = {
    "otp25_to_otp25": Status.OK,
    "otp25_to_otp28": Status.OK,
    "otp28_to_otp25": Status.OK,
    "otp28_to_otp28": Status.OK,
    "otp25_hidden_to_otp25": Status.OK,
    "otp25_to_python": Status.OK,
    "otp28_to_python": Status.OK,
    "python_to_otp25": Status.OK,
    "python_to_otp28": Status.OK,
    "otp28_to_otp25_ok_simultaneous": Status.OK_SIMULTANEOUS,
    "python_second_conn_alive_otp25": Status.ALIVE,
    "python_old_n_to_otp28": Status.OK,
    "python_name_me_to_otp25_named": Status.NAMED,
    "python_name_me_to_otp28_named": Status.NAMED,
}


def _decoded(name: str, kind: str) -> dict[str, Any]:
    return next(f["decoded"] for f in _frames(name) if f["decoded"].get("name") == kind)


def _acceptor_for(name: str, *, cookie: str = COOKIE,
                  required: DistFlag = MANDATORY_25) -> AcceptorHandshake:
    challenge = _decoded(name, "challenge")
    flags = DistFlag(challenge["flags"])
    if flags & DistFlag.NAME_ME:
        # What a node configures; the machine itself turns PUBLISHED into NAME_ME.
        flags = (flags & ~DistFlag.NAME_ME) | DistFlag.PUBLISHED
    return AcceptorHandshake(
        local_name=challenge["node"], cookie=cookie, flags=flags,
        creation=challenge["creation"], challenge_source=lambda: challenge["challenge"],
        required=required)


def _accept(acceptor: AcceptorHandshake, capture: str, status: Status) -> None:
    if status is Status.NAMED:
        named = _decoded(capture, "status")
        acceptor.accept(status, name=named["node"], creation=named["creation"])
    else:
        acceptor.accept(status)


@pytest.mark.parametrize(("capture", "status"), list(_COMPLETE.items()))
def test_our_acceptor_answers_like_the_real_one(capture: str, status: Status) -> None:
    acceptor = _acceptor_for(capture)
    sent: list[bytes] = []
    events = []
    for frame in _frames(capture, "initiator"):
        events += acceptor.receive_data(_raw(frame))
        if acceptor.state is State.AWAIT_DECISION:
            _accept(acceptor, capture, status)
        sent.append(acceptor.data_to_send())
    assert b"".join(sent) == b"".join(_raw(f) for f in _frames(capture, "acceptor"))
    assert isinstance(events[0], NameReceived) and isinstance(events[-1], HandshakeComplete)
    done = events[-1]
    if capture == "python_old_n_to_otp28":
        high = _decoded(capture, "complement")["flags_high"]
        assert done.peer_flags == _decoded(capture, "send_name_v5")["flags"] | high << 32
    else:
        assert done.peer_flags == _decoded(capture, "send_name_v6")["flags"]
    assert acceptor.state is State.DONE


@pytest.mark.parametrize("capture", [c for c in _COMPLETE if c != "python_old_n_to_otp28"])
def test_our_initiator_answers_like_the_real_one(capture: str) -> None:
    send_name = _decoded(capture, "send_name_v6")
    reply = _decoded(capture, "challenge_reply")
    initiator = InitiatorHandshake(
        local_name=send_name["node"], peer_name=CAPTURES[capture]["acceptor"], cookie=COOKIE,
        flags=DistFlag(send_name["flags"]), creation=send_name["creation"],
        challenge_source=lambda: reply["challenge"], required=MANDATORY_25)
    initiator.start()
    sent = [initiator.data_to_send()]
    events = []
    for frame in _frames(capture, "acceptor"):
        events += initiator.receive_data(_raw(frame))
        if initiator.state is State.AWAIT_ALIVE_DECISION:
            initiator.answer_alive(True)
        sent.append(initiator.data_to_send())
    assert b"".join(sent) == b"".join(_raw(f) for f in _frames(capture, "initiator"))
    status = events[0]
    assert isinstance(status, StatusReceived) and status.status is _COMPLETE[capture]
    done = events[-1]
    assert isinstance(done, HandshakeComplete)
    challenge = _decoded(capture, "challenge")
    assert (done.peer_name, int(done.peer_flags), done.peer_creation) == \
        (challenge["node"], challenge["flags"], challenge["creation"])
    assert done.flags == send_name["flags"] & challenge["flags"]


@pytest.mark.parametrize("capture", ["python_name_me_to_otp25_named",
                                     "python_name_me_to_otp28_named"])
def test_named_status_gives_the_initiator_its_name(capture: str) -> None:
    named = _decoded(capture, "status")
    initiator = InitiatorHandshake(
        local_name="vm", peer_name="b@vm", cookie=COOKIE,
        flags=DistFlag(_decoded(capture, "send_name_v6")["flags"]), creation=1,
        challenge_source=lambda: 1)
    initiator.start()
    events = initiator.receive_data(_raw(_frames(capture, "acceptor")[0]))
    assert events == [StatusReceived(Status.NAMED, named["node"], named["creation"])]


def test_first_connection_bytes_are_handed_over() -> None:
    capture = CAPTURES["otp25_to_otp25"]
    after = b"".join(bytes.fromhex(f["hex"]) for f in capture["first_frames_after_handshake"]
                     if f["from"] == "acceptor")
    send_name = _decoded("otp25_to_otp25", "send_name_v6")
    initiator = InitiatorHandshake(
        local_name="a@vm", peer_name="b@vm", cookie=COOKIE,
        flags=DistFlag(send_name["flags"]), creation=send_name["creation"],
        challenge_source=lambda: _decoded("otp25_to_otp25", "challenge_reply")["challenge"])
    initiator.start()
    acceptor_bytes = b"".join(_raw(f) for f in _frames("otp25_to_otp25", "acceptor"))
    events = initiator.receive_data(acceptor_bytes + after)
    done = events[-1]
    assert isinstance(done, HandshakeComplete) and done.trailing == after


def test_otp28_style_acceptor_refuses_a_peer_without_unlink_id() -> None:
    # python_missing_flag_to_otp28_not_allowed: OTP 28 answered not_allowed.
    capture = "python_missing_flag_to_otp28_not_allowed"
    acceptor = AcceptorHandshake(local_name="b@vm", cookie=COOKIE, flags=DistFlag(0x2D07DF7FBD),
                                 creation=1, challenge_source=lambda: 1, required=MANDATORY_28)
    with pytest.raises(MissingFlags) as info:
        acceptor.receive_data(_raw(_frames(capture, "initiator")[0]))
    assert info.value.missing == DistFlag.UNLINK_ID and info.value.peer == "p2@vm"
    assert acceptor.data_to_send() == _raw(_frames(capture, "acceptor")[0])
    assert acceptor.state is State.FAILED


def test_otp28_style_initiator_aborts_on_an_acceptor_without_26_flags() -> None:
    capture = "otp28_to_python_missing_26_flags_aborted"
    send_name = _decoded(capture, "send_name_v6")
    initiator = InitiatorHandshake(
        local_name="b@vm", peer_name="py@vm", cookie=COOKIE, flags=DistFlag(send_name["flags"]),
        creation=send_name["creation"], challenge_source=lambda: 1, required=MANDATORY_28)
    initiator.start()
    assert initiator.data_to_send() == _raw(_frames(capture, "initiator")[0])
    acceptor_bytes = b"".join(_raw(f) for f in _frames(capture, "acceptor"))
    with pytest.raises(MissingFlags) as info:
        initiator.receive_data(acceptor_bytes)
    assert info.value.missing == DistFlag.UNLINK_ID | DistFlag.V4_NC
    assert initiator.data_to_send() == b""  # the initiator just closes


def test_acceptor_rejects_the_wrong_cookie_capture() -> None:
    capture = "python_wrong_cookie_otp25"
    acceptor = _acceptor_for(capture)
    frames = _frames(capture, "initiator")
    assert isinstance(acceptor.receive_data(_raw(frames[0]))[0], NameReceived)
    acceptor.accept(Status.OK)
    acceptor.data_to_send()
    with pytest.raises(AuthenticationError, match="py@vm"):
        acceptor.receive_data(_raw(frames[1]))
    assert acceptor.data_to_send() == b""  # OTP closes without a word, and so do we


def test_initiator_with_the_wrong_cookie_sends_the_captured_bad_reply() -> None:
    capture = "python_wrong_cookie_otp25"
    send_name = _decoded(capture, "send_name_v6")
    initiator = InitiatorHandshake(
        local_name="py@vm", peer_name="b@vm", cookie="wrong", flags=DistFlag(send_name["flags"]),
        creation=send_name["creation"],
        challenge_source=lambda: _decoded(capture, "challenge_reply")["challenge"])
    initiator.start()
    initiator.data_to_send()
    initiator.receive_data(b"".join(_raw(f) for f in _frames(capture, "acceptor")))
    assert initiator.data_to_send() == _raw(_frames(capture, "initiator")[1])


def test_old_send_name_is_decoded_as_otp25_rejected_it() -> None:
    frame = _frames("python_old_n_to_otp25_rejected", "initiator")[0]
    acceptor = AcceptorHandshake(local_name="b@vm", cookie=COOKIE, flags=DistFlag(0xD07DF7FBD),
                                 creation=1, challenge_source=lambda: 1)
    assert acceptor.receive_data(_raw(frame)) == [
        NameReceived("py@vm", DistFlag(0x75F5FBD), None, 5)]
