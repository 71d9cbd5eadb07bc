"""pyerl_node.proto.epmd_wire against bytes captured from the real epmd daemons and BEAM nodes,
plus round trips and hostile input (docs/protocol/distribution.md section 2)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyerl_node.proto.epmd_wire import (
    MAX_REQUEST_BODY,
    Alive2Req,
    Alive2Resp,
    DumpEntry,
    DumpReq,
    DumpResp,
    KillReq,
    KillResp,
    NamesReq,
    NamesResp,
    NodeAddress,
    NodeType,
    Port2Error,
    PortPlease2Req,
    Request,
    RequestParser,
    StopReq,
    StopResp,
    decode_dump_resp,
    decode_kill_resp,
    decode_names_resp,
    decode_request,
    decode_stop_resp,
    encode_alive2_resp,
    encode_dump_resp,
    encode_kill_resp,
    encode_names_resp,
    encode_port2_resp,
    encode_request,
    encode_stop_resp,
    parse_alive2_resp,
    parse_port2_resp,
)
from pyerl_node.proto.errors import LocalProtocolError, RemoteProtocolError

VECTORS = Path(__file__).resolve().parent / "vectors"
DAEMON = json.loads((VECTORS / "epmd" / "epmd_real_daemon_responses.json").read_text())["results"]
DAEMON_RUNS = sorted(DAEMON)  # otp25, otp25 -relaxed_command_check, otp28, ...


def _hex(run: str, case: str) -> bytes:
    return bytes.fromhex(DAEMON[run][case]["hex"])


def _epmd_sections() -> list[tuple[str, dict[str, Any]]]:
    """The epmd parts of all captures, one entry per distinct request/response bytes."""
    out: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for path in sorted([*VECTORS.glob("dist/*.json"), *VECTORS.glob("foreign_node/*.json")]):
        for entry in json.loads(path.read_text()).get("epmd", []):
            key = (entry.get("hex", ""), entry.get("resp_hex", ""))
            if key[0]:
                out.setdefault(key, (path.name, entry))
    return list(out.values())


EPMD_ENTRIES = _epmd_sections()


def test_vectors_present() -> None:
    assert len(DAEMON_RUNS) == 4
    assert any(e.get("req") == "ALIVE2_REQ" for _, e in EPMD_ENTRIES)
    assert any(e.get("req") == "PORT_PLEASE2_REQ" for _, e in EPMD_ENTRIES)


# --- requests as real BEAM nodes send them --------------------------------------------------


@pytest.mark.parametrize("entry", [e for _, e in EPMD_ENTRIES if e.get("req") == "ALIVE2_REQ"])
def test_alive2_req_from_beam(entry: dict[str, Any]) -> None:
    raw = bytes.fromhex(entry["hex"])
    req = decode_request(raw[2:])
    assert req == Alive2Req(
        port=entry["port"], name=entry["name"], node_type=entry["node_type"],
        protocol=entry["proto"], highest_version=entry["hi"], lowest_version=entry["lo"],
        extra=entry["extra"].encode(),
    )
    assert encode_request(req) == raw


@pytest.mark.parametrize("entry",
                         [e for _, e in EPMD_ENTRIES if e.get("req") == "PORT_PLEASE2_REQ"])
def test_port_please2_from_beam_and_fake_epmd_answer(entry: dict[str, Any]) -> None:
    raw = bytes.fromhex(entry["hex"])
    assert decode_request(raw[2:]) == PortPlease2Req(entry["name"])
    assert encode_request(PortPlease2Req(entry["name"])) == raw
    resp = parse_port2_resp(bytes.fromhex(entry["resp_hex"]))
    if isinstance(resp, NodeAddress):
        assert resp.name == entry["name"]
        assert resp.highest_version == 6
    else:
        assert resp == Port2Error(1)
    assert encode_port2_resp(resp) == bytes.fromhex(entry["resp_hex"])


def test_port_please2_spec_example() -> None:
    assert encode_request(PortPlease2Req("alpha")) == bytes.fromhex("00067a616c706861")


def test_simple_requests() -> None:
    assert encode_request(NamesReq()) == b"\x00\x01n"
    assert encode_request(DumpReq()) == b"\x00\x01d"
    assert encode_request(KillReq()) == b"\x00\x01k"
    assert encode_request(StopReq("beta")) == b"\x00\x05sbeta"
    for req in (NamesReq(), DumpReq(), KillReq(), StopReq("beta")):
        assert decode_request(encode_request(req)[2:]) == req


def test_alive2_req_hidden_with_extra_layout() -> None:
    req = Alive2Req(5004, "hid", node_type=NodeType.HIDDEN, highest_version=6,
                    lowest_version=5, extra=b"xyz")
    assert encode_request(req) == bytes.fromhex("0013" "78" "138c" "48" "00" "0006" "0005"
                                                "0003" "686964" "0003" "78797a")


def test_port_please2_strips_one_trailing_nul() -> None:
    # Very old clients NUL-terminate the name; epmd strips it.
    assert decode_request(b"zalpha\x00") == PortPlease2Req("alpha")


# --- responses of the real daemons ----------------------------------------------------------


@pytest.mark.parametrize("run", DAEMON_RUNS)
def test_alive2_x_resp_vectors(run: str) -> None:
    for case in ("ALIVE2_REQ alpha hi=6 lo=5", "ALIVE2_REQ type 72 (hidden/C node) with extra",
                 "ALIVE2_REQ alpha again after unregister", "ALIVE2_REQ alpha third time"):
        raw = _hex(run, case)
        resp = parse_alive2_resp(raw)
        assert resp == Alive2Resp(0, int.from_bytes(raw[2:], "big"), extended=True)
        assert resp.ok
        assert encode_alive2_resp(resp) == raw
    first = parse_alive2_resp(_hex(run, "ALIVE2_REQ alpha again after unregister"))
    again = parse_alive2_resp(_hex(run, "ALIVE2_REQ alpha third time"))
    assert first is not None and again is not None
    assert again.creation == first.creation + 1


@pytest.mark.parametrize("run", DAEMON_RUNS)
def test_alive2_refused_vectors(run: str) -> None:
    for case in ("ALIVE2_REQ duplicate name while registered", "ALIVE2_REQ name 256 chars"):
        raw = _hex(run, case)
        resp = parse_alive2_resp(raw)
        assert resp == Alive2Resp(1, 99, extended=True)
        assert not resp.ok
        assert encode_alive2_resp(resp) == raw


@pytest.mark.parametrize("run", DAEMON_RUNS)
def test_alive2_resp_old_node_vector(run: str) -> None:
    raw = _hex(run, "ALIVE2_REQ beta hi=5 lo=5 (old node)")
    resp = parse_alive2_resp(raw)
    assert resp is not None and not resp.extended and resp.ok
    assert 1 <= resp.creation <= 3
    assert encode_alive2_resp(resp) == raw


@pytest.mark.parametrize("run", DAEMON_RUNS)
def test_port2_resp_vectors(run: str) -> None:
    alpha = parse_port2_resp(_hex(run, "PORT_PLEASE2_REQ alpha"))
    assert alpha == NodeAddress(5001, 77, 0, 6, 5, "alpha", b"")
    hid = parse_port2_resp(_hex(run, "PORT_PLEASE2_REQ hid (type 72, extra)"))
    assert hid == NodeAddress(5004, 72, 0, 6, 5, "hid", b"xyz")
    beta = parse_port2_resp(_hex(run, "PORT_PLEASE2_REQ beta (registered with hi=5)"))
    assert beta == NodeAddress(5003, 77, 0, 5, 5, "beta", b"")
    unknown = parse_port2_resp(_hex(run, "PORT_PLEASE2_REQ unknown"))
    assert unknown == Port2Error(1)
    for case, resp in (("PORT_PLEASE2_REQ alpha", alpha), ("PORT_PLEASE2_REQ unknown", unknown),
                       ("PORT_PLEASE2_REQ hid (type 72, extra)", hid)):
        assert resp is not None
        assert encode_port2_resp(resp) == _hex(run, case)


@pytest.mark.parametrize("run", DAEMON_RUNS)
def test_names_resp_vectors(run: str) -> None:
    raw = _hex(run, "NAMES_REQ")
    resp = decode_names_resp(raw)
    assert resp.epmd_port == int.from_bytes(raw[:4], "big")
    assert resp.names == (("hid", 5004), ("beta", 5003), ("alpha", 5001))
    assert encode_names_resp(resp) == raw
    after_stop = decode_names_resp(_hex(run, "NAMES_REQ after STOP"))
    assert encode_names_resp(after_stop) == _hex(run, "NAMES_REQ after STOP")


@pytest.mark.parametrize("run", DAEMON_RUNS)
def test_dump_resp_vectors(run: str) -> None:
    for case in ("DUMP_REQ", "DUMP_REQ after re-registrations"):
        raw = _hex(run, case)
        resp = decode_dump_resp(raw)
        assert {e.name for e in resp.active} == {"hid", "beta", "alpha"}
        assert resp.unused == ()
        assert encode_dump_resp(resp) == raw
    assert decode_dump_resp(_hex(run, "DUMP_REQ")).active[0] == DumpEntry("hid", 5004, 8)


def test_dump_resp_unused_lines_round_trip() -> None:
    resp = DumpResp(4369, (DumpEntry("a", 1, 5),), (DumpEntry("b", 2, 7), DumpEntry("c", 3, 9)))
    raw = encode_dump_resp(resp)
    assert b"old/unused name <b>, port = 2, fd = 7 \n\x00" in raw
    assert decode_dump_resp(raw) == resp


@pytest.mark.parametrize("run", DAEMON_RUNS)
def test_kill_and_stop_vectors(run: str) -> None:
    kill = _hex(run, "KILL_REQ with live nodes")
    assert decode_kill_resp(kill) == KillResp(ok=("relaxed" in run))
    assert encode_kill_resp(decode_kill_resp(kill)) == kill
    if "relaxed" in run:
        assert decode_stop_resp(_hex(run, "STOP_REQ beta")) == StopResp(existed=True)
        assert decode_stop_resp(_hex(run, "STOP_REQ unknown")) == StopResp(existed=False)
        assert encode_stop_resp(StopResp(False)) == _hex(run, "STOP_REQ unknown")
        assert encode_stop_resp(StopResp(True)) == _hex(run, "STOP_REQ beta")
    else:
        assert decode_kill_resp(_hex(run, "KILL_REQ with no live nodes")) == KillResp(ok=True)


# --- incremental parsing ---------------------------------------------------------------------


PORT2_SAMPLES = [encode_port2_resp(NodeAddress(5004, 72, 0, 6, 5, "hid", b"xyz")),
                 encode_port2_resp(Port2Error(1))]
ALIVE2_SAMPLES = [encode_alive2_resp(Alive2Resp(0, 0x6B0812DA)),
                  encode_alive2_resp(Alive2Resp(0, 2, extended=False))]


@pytest.mark.parametrize("raw", PORT2_SAMPLES)
def test_port2_every_prefix_needs_more_and_trailing_bytes_fail(raw: bytes) -> None:
    for i in range(len(raw)):
        assert parse_port2_resp(raw[:i]) is None
    assert parse_port2_resp(raw) is not None
    with pytest.raises(RemoteProtocolError):
        parse_port2_resp(raw + b"\x00")


@pytest.mark.parametrize("raw", ALIVE2_SAMPLES)
def test_alive2_every_prefix_needs_more_and_trailing_bytes_fail(raw: bytes) -> None:
    for i in range(len(raw)):
        assert parse_alive2_resp(raw[:i]) is None
    assert parse_alive2_resp(raw) is not None
    with pytest.raises(RemoteProtocolError):
        parse_alive2_resp(raw + b"\x00")


def test_wrong_response_codes() -> None:
    with pytest.raises(RemoteProtocolError, match="ALIVE2"):
        parse_alive2_resp(b"w\x01")
    with pytest.raises(RemoteProtocolError, match="PORT2_RESP"):
        parse_port2_resp(b"v\x00\x00\x00\x00\x01")


def test_request_parser_one_byte_at_a_time() -> None:
    raw = encode_request(Alive2Req(5001, "alpha", extra=b"x"))
    parser = RequestParser()
    for i, byte in enumerate(raw):
        assert parser.next_request() is None, i
        parser.receive_data(bytes((byte,)))
    assert parser.next_request() == Alive2Req(5001, "alpha", extra=b"x")


def test_request_parser_rejects_bytes_after_the_request() -> None:
    parser = RequestParser()
    with pytest.raises(RemoteProtocolError, match="beyond the announced request length 2"):
        parser.receive_data(b"\x00\x02zab")


@pytest.mark.parametrize("length", [0, MAX_REQUEST_BODY + 1, 0xFFFF])
def test_request_parser_rejects_bad_lengths(length: int) -> None:
    parser = RequestParser()
    with pytest.raises(RemoteProtocolError, match="length"):
        parser.receive_data(length.to_bytes(2, "big"))


def test_request_parser_accepts_the_largest_request() -> None:
    parser = RequestParser()
    parser.receive_data(MAX_REQUEST_BODY.to_bytes(2, "big") + b"n" * MAX_REQUEST_BODY)
    assert parser.buffered == MAX_REQUEST_BODY + 2


@pytest.mark.parametrize("body", [
    b"x" + bytes(12),                                        # too short (epmd: <= 13 bytes)
    b"x\x13\x89M\x00\x00\x06\x00\x05\x00\x09ab\x00\x00",     # name length beyond the body
    b"x\x13\x89M\x00\x00\x06\x00\x05\x00\x02ab\x00\x09",     # extra length beyond the body
    b"x\x13\x89M\x00\x00\x06\x00\x05\x00\x02a\x00\x00\x00",  # NUL in the name
    b"x\x13\x89M\x00\x00\x06\x00\x05\x00\x02\xff\xfe\x00\x00",  # not UTF-8
    b"z", b"z\x00", b"za\x00b", b"z" + "é".encode() * 256,   # PORT_PLEASE2 names
    b"s",                                                    # STOP without a name
    b"Q", b"",                                               # unknown code, empty
])
def test_malformed_requests(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_request(body)


def test_alive2_ignores_bytes_after_extra_as_epmd_does() -> None:
    body = encode_request(Alive2Req(5001, "a"))[2:] + b"junk"
    assert decode_request(body) == Alive2Req(5001, "a")


# --- encoding errors ------------------------------------------------------------------------


@pytest.mark.parametrize("req", [
    Alive2Req(70000, "a"), Alive2Req(1, ""), Alive2Req(1, "a" * 256), Alive2Req(1, "a\x00b"),
    Alive2Req(1, "a", node_type=300), Alive2Req(1, "\udc80"), PortPlease2Req(""),
    Alive2Req(1, "a", extra=b"e" * 3100),
])
def test_encode_rejects_bad_values(req: Request) -> None:
    with pytest.raises(LocalProtocolError):
        encode_request(req)


def test_encode_rejects_bad_creation() -> None:
    with pytest.raises(LocalProtocolError):
        encode_alive2_resp(Alive2Resp(0, 1 << 32))
    with pytest.raises(LocalProtocolError):
        encode_alive2_resp(Alive2Resp(0, 1 << 16, extended=False))


# --- round trips and fuzzing ----------------------------------------------------------------

names_st = st.text(st.characters(codec="utf-8", exclude_characters="\x00 \n>"),
                   min_size=1, max_size=255)
u16 = st.integers(0, 0xFFFF)
u8 = st.integers(0, 0xFF)


@given(port=u16, name=names_st, node_type=u8, protocol=u8, high=u16, low=u16,
       extra=st.binary(max_size=300))
def test_alive2_req_round_trip(*, port: int, name: str, node_type: int, protocol: int,
                               high: int, low: int, extra: bytes) -> None:
    req = Alive2Req(port, name, node_type, protocol, high, low, extra)
    raw = encode_request(req)
    parser = RequestParser()
    parser.receive_data(raw)
    assert parser.next_request() == req


@given(name=names_st)
def test_name_requests_round_trip(name: str) -> None:
    for req in (PortPlease2Req(name), StopReq(name)):
        assert decode_request(encode_request(req)[2:]) == req


@given(port=u16, name=names_st, node_type=u8, protocol=u8, high=u16, low=u16,
       extra=st.binary(max_size=300))
def test_port2_resp_round_trip(*, port: int, name: str, node_type: int, protocol: int,
                               high: int, low: int, extra: bytes) -> None:
    resp = NodeAddress(port, node_type, protocol, high, low, name, extra)
    assert parse_port2_resp(encode_port2_resp(resp)) == resp


@given(epmd_port=st.integers(0, 0xFFFFFFFF),
       names=st.lists(st.tuples(names_st, u16), max_size=20))
def test_names_resp_round_trip(epmd_port: int, names: list[tuple[str, int]]) -> None:
    resp = NamesResp(epmd_port, tuple(names))
    assert decode_names_resp(encode_names_resp(resp)) == resp


@given(result=u8, creation=st.integers(0, 0xFFFFFFFF), extended=st.booleans())
def test_alive2_resp_round_trip(result: int, creation: int, extended: bool) -> None:
    if not extended:
        creation &= 0xFFFF
    resp = Alive2Resp(result, creation, extended)
    assert parse_alive2_resp(encode_alive2_resp(resp)) == resp


@given(st.binary(max_size=64))
def test_random_request_bodies_decode_or_raise_remote_error(body: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_request(body)


@given(st.lists(st.binary(max_size=4000), max_size=5))
def test_random_request_streams_parse_or_raise_with_bounded_buffer(chunks: list[bytes]) -> None:
    parser = RequestParser()
    with contextlib.suppress(RemoteProtocolError):
        for chunk in chunks:
            parser.receive_data(chunk)
            parser.next_request()
    assert parser.buffered <= MAX_REQUEST_BODY + 2


@given(st.binary(max_size=64))
def test_random_responses_parse_or_raise_remote_error(data: bytes) -> None:
    for parse in (parse_alive2_resp, parse_port2_resp, decode_names_resp, decode_dump_resp,
                  decode_kill_resp, decode_stop_resp):
        with contextlib.suppress(RemoteProtocolError):
            parse(data)
