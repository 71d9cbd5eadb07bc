"""Control messages (docs/protocol/distribution.md §6): tuple shapes, round trips, malformed tuples,
and every example frame of ``vectors/control/control_messages.json`` decoded through a Connection.

The vector files render terms in Erlang syntax (tests/vectors/README.md); :func:`render` produces
the same notation so that decoded control tuples and payloads are compared in full, not just
by operation name. Helpers here are shared with the connection tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyerl_node.proto import control as c
from pyerl_node.proto.connection import Connection
from pyerl_node.proto.deferred import DeferredMessage
from pyerl_node.proto.errors import LocalProtocolError, RemoteProtocolError
from pyerl_node.proto.flags import DistFlag
from pyerl_node.proto.terms import (
    Atom,
    BitBinary,
    Export,
    Fun,
    ImproperList,
    Pid,
    Port,
    Reference,
    Term,
)
from tests.test_dist_header import build_atom_cache_header

VECTORS = Path(__file__).resolve().parent / "vectors"

HEADER_FLAGS = DistFlag.DIST_HDR_ATOM_CACHE | DistFlag.FRAGMENTS
ALL_CLASSES: tuple[type, ...] = typing.get_args(c.ControlMessage)

# The operation names the vector files use, per class.
OP_NAMES: dict[str, type] = {
    "LINK": c.Link, "SEND": c.Send, "EXIT": c.Exit, "UNLINK": c.Unlink,
    "REG_SEND": c.RegSend, "GROUP_LEADER": c.GroupLeader, "EXIT2": c.Exit2,
    "SEND_TT": c.SendTt, "EXIT_TT": c.ExitTt, "REG_SEND_TT": c.RegSendTt,
    "EXIT2_TT": c.Exit2Tt, "MONITOR_P": c.MonitorP, "DEMONITOR_P": c.DemonitorP,
    "MONITOR_P_EXIT": c.MonitorPExit, "SEND_SENDER": c.SendSender,
    "SEND_SENDER_TT": c.SendSenderTt, "PAYLOAD_EXIT": c.PayloadExit,
    "PAYLOAD_EXIT_TT": c.PayloadExitTt, "PAYLOAD_EXIT2": c.PayloadExit2,
    "PAYLOAD_EXIT2_TT": c.PayloadExit2Tt, "PAYLOAD_MONITOR_P_EXIT": c.PayloadMonitorPExit,
    "SPAWN_REQUEST": c.SpawnRequest, "SPAWN_REQUEST_TT": c.SpawnRequestTt,
    "SPAWN_REPLY": c.SpawnReply, "SPAWN_REPLY_TT": c.SpawnReplyTt,
    "ALIAS_SEND": c.AliasSend, "ALIAS_SEND_TT": c.AliasSendTt, "UNLINK_ID": c.UnlinkId,
    "UNLINK_ID_ACK": c.UnlinkIdAck, "ALTACT_SIG_SEND": c.AltactSigSend,
}


# --- rendering terms as the vector files do ------------------------------------------------

_UNQUOTED_ATOM = re.compile(r"[a-z][a-zA-Z0-9_@]*\Z")
_RESERVED = frozenset((
    "after", "and", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor", "case",
    "catch", "cond", "div", "end", "fun", "if", "let", "maybe", "not", "of", "or", "orelse",
    "receive", "rem", "try", "when", "xor",
))


def _atom(name: str) -> str:
    if _UNQUOTED_ATOM.match(name) and name not in _RESERVED:
        return name
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _printable(codes: bytes | list[int]) -> bool:
    return bool(codes) and all(32 <= b < 127 for b in codes)


def _text(codes: bytes | list[int]) -> str:
    return "".join(chr(b) for b in codes).replace("\\", "\\\\").replace('"', '\\"')


def render(t: Term) -> str:
    """``t`` in the Erlang notation of vectors/README.md."""
    if t is True or t is False:
        return "true" if t else "false"
    if t is None:
        return "nil"
    if isinstance(t, Atom):
        return _atom(t.name)
    if isinstance(t, int):
        return str(t)
    if isinstance(t, float):
        return repr(t)
    if isinstance(t, bytes):
        if _printable(t):
            return f'<<"{_text(t)}">>'
        return "<<" + ",".join(map(str, t)) + ">>"
    if isinstance(t, BitBinary):
        parts = [str(b) for b in t.data[:-1]] + [f"{t.data[-1] >> (8 - t.bits)}:{t.bits}"]
        return "<<" + ",".join(parts) + ">>"
    if isinstance(t, tuple):
        return "{" + ",".join(render(x) for x in t) + "}"
    if isinstance(t, list):
        if all(type(x) is int for x in t) and _printable(t):
            return f'"{_text(t)}"'
        return "[" + ",".join(render(x) for x in t) + "]"
    if isinstance(t, ImproperList):
        return "[" + ",".join(render(x) for x in t.items) + "|" + render(t.tail) + "]"
    if isinstance(t, dict):
        return "#{" + ",".join(f"{render(k)} => {render(v)}" for k, v in t.items()) + "}"
    if isinstance(t, Pid):
        return f"#Pid<{t.node.name}.{t.id}.{t.serial}.{t.creation}>"
    if isinstance(t, Reference):
        return f"#Ref<{t.node.name}.{t.creation}." + ".".join(map(str, t.ids)) + ">"
    if isinstance(t, Port):
        return f"#Port<{t.node.name}.{t.id}.{t.creation}>"
    if isinstance(t, Export):
        return f"fun {_atom(t.module.name)}:{_atom(t.function.name)}/{t.arity}"
    if isinstance(t, Fun):
        free = ",".join(render(x) for x in t.free_vars)
        return (f"#Fun<{t.module.name}.{t.index}.{t.old_uniq}/{t.arity} "
                f"pid={render(t.pid)} free=[{free}]>")
    raise AssertionError(f"cannot render {t!r}")


_TRUNCATED = re.compile(r"\.\.\.<truncated, (\d+) chars>\Z")


def assert_rendered(term: Term, expected: str) -> None:
    """``term`` renders as ``expected``; long renderings are stored truncated, with their
    length: then the prefix and the length must match."""
    text = render(term)
    cut = _TRUNCATED.search(expected)
    if cut is None:
        assert text == expected
    else:
        assert text.startswith(expected[:cut.start()]), (text[:200], expected[:200])
        assert len(text) == int(cut.group(1))


# --- vector helpers (shared with the connection tests) -------------------------------------


@cache
def load_json(relative: str) -> Any:
    return json.loads((VECTORS / relative).read_text())


def frame_bytes(frame: dict[str, Any]) -> bytes:
    """The whole frame of a vector entry; frames stored truncated are rebuilt and verified.

    Big frames are stored as their first 1024 bytes plus the length and SHA-256 of the whole.
    Their bodies are a repeating byte pattern (a big binary), so the frame is the kept bytes
    continued with the pattern; the hash proves the reconstruction exact.
    """
    kept = bytes.fromhex(frame["hex"])
    info = frame.get("hex_truncated")
    if info is None:
        return kept
    total: int = info["total_bytes"]
    for period in range(1, 65):
        tail = kept[-period:]
        whole = (kept + tail * (-(-(total - len(kept)) // period)))[:total]
        if hashlib.sha256(whole).hexdigest() == info["sha256"]:
            return whole
    raise AssertionError("cannot rebuild truncated frame")


def atom_cache_frame(entries: list[tuple[int, str]]) -> bytes:
    """A whole 4-byte-framed 131,68 packet whose header defines ``(slot, atom)`` entries.

    It carries a LINK control message, so a Connection reports exactly one event for it.
    """
    body = bytes((131, 68)) + build_atom_cache_header([(s, a, True) for s, a in entries])
    # {1, Pid, Pid} with pids on node ''
    pid = bytes((88, 119, 0)) + bytes(12)
    body += bytes((104, 3, 97, 1)) + pid + pid
    return len(body).to_bytes(4, "big") + body


# --- shapes ---------------------------------------------------------------------------------

P1 = Pid(Atom("a@vm"), 10, 0, 7)
P2 = Pid(Atom("b@vm"), 20, 1, 8)
R = Reference(Atom("b@vm"), 8, (1, 2, 3))
TOK = (Atom("seq"), 1, 2, P1, 0)
E = Atom("")
MSG = (Atom("hello"), [1, 2])

# (message, expected control tuple, expected payload): written out from
# docs/protocol/distribution.md §6, not from the implementation's table.
SHAPES: list[tuple[Any, tuple[Term, ...], Term]] = [
    (c.Link(P1, P2), (1, P1, P2), c.NO_PAYLOAD),
    (c.Send(P2, MSG), (2, E, P2), MSG),
    (c.Exit(P1, P2, Atom("r")), (3, P1, P2, Atom("r")), c.NO_PAYLOAD),
    (c.Unlink(P1, P2), (4, P1, P2), c.NO_PAYLOAD),
    (c.RegSend(P1, Atom("rex"), MSG), (6, P1, E, Atom("rex")), MSG),
    (c.GroupLeader(P1, P2), (7, P1, P2), c.NO_PAYLOAD),
    (c.Exit2(P1, P2, Atom("r")), (8, P1, P2, Atom("r")), c.NO_PAYLOAD),
    (c.SendTt(P2, TOK, MSG), (12, E, P2, TOK), MSG),
    (c.ExitTt(P1, P2, TOK, Atom("r")), (13, P1, P2, TOK, Atom("r")), c.NO_PAYLOAD),
    (c.RegSendTt(P1, Atom("rex"), TOK, MSG), (16, P1, E, Atom("rex"), TOK), MSG),
    (c.Exit2Tt(P1, P2, TOK, Atom("r")), (18, P1, P2, TOK, Atom("r")), c.NO_PAYLOAD),
    (c.MonitorP(P1, Atom("net_kernel"), R), (19, P1, Atom("net_kernel"), R), c.NO_PAYLOAD),
    (c.DemonitorP(P1, P2, R), (20, P1, P2, R), c.NO_PAYLOAD),
    (c.MonitorPExit(Atom("gone"), P2, R, Atom("r")), (21, Atom("gone"), P2, R, Atom("r")),
     c.NO_PAYLOAD),
    (c.SendSender(P1, P2, MSG), (22, P1, P2), MSG),
    (c.SendSenderTt(P1, P2, TOK, MSG), (23, P1, P2, TOK), MSG),
    (c.PayloadExit(P1, P2, Atom("r")), (24, P1, P2), Atom("r")),
    (c.PayloadExitTt(P1, P2, TOK, Atom("r")), (25, P1, P2, TOK), Atom("r")),
    (c.PayloadExit2(P1, P2, Atom("kill")), (26, P1, P2), Atom("kill")),
    (c.PayloadExit2Tt(P1, P2, TOK, Atom("kill")), (27, P1, P2, TOK), Atom("kill")),
    (c.PayloadMonitorPExit(P1, P2, R, Atom("noproc")), (28, P1, P2, R), Atom("noproc")),
    (c.SpawnRequest(R, P1, P2, Atom("erpc"), Atom("execute_call"), 4, [Atom("monitor")],
                    [R, Atom("erlang"), Atom("node"), []]),
     (29, R, P1, P2, (Atom("erpc"), Atom("execute_call"), 4), [Atom("monitor")]),
     [R, Atom("erlang"), Atom("node"), []]),
    (c.SpawnRequestTt(R, P1, P2, Atom("m"), Atom("f"), 0, [], TOK, []),
     (30, R, P1, P2, (Atom("m"), Atom("f"), 0), [], TOK), []),
    (c.SpawnReply(R, P1, 2, P2), (31, R, P1, 2, P2), c.NO_PAYLOAD),
    (c.SpawnReplyTt(R, P1, 0, Atom("notsup"), TOK), (32, R, P1, 0, Atom("notsup"), TOK),
     c.NO_PAYLOAD),
    (c.AliasSend(P1, R, MSG), (33, P1, R), MSG),
    (c.AliasSendTt(P1, R, TOK, MSG), (34, P1, R, TOK), MSG),
    (c.UnlinkId(4, P1, P2), (35, 4, P1, P2), c.NO_PAYLOAD),
    (c.UnlinkIdAck(4, P2, P1), (36, 4, P2, P1), c.NO_PAYLOAD),
    (c.AltactSigSend(4, P1, R, MSG), (37, 4, P1, R), MSG),
    (c.AltactSigSend(6, P1, R, MSG, TOK), (37, 6, P1, R, TOK), MSG),
    (c.AltactSigSend(17, P1, P2, Atom("bye")), (37, 17, P1, P2), Atom("bye")),
]


def test_shapes_cover_every_class() -> None:
    assert {type(m) for m, _, _ in SHAPES} == set(ALL_CLASSES)
    assert set(OP_NAMES.values()) == set(ALL_CLASSES)


@pytest.mark.parametrize(("msg", "ctrl", "payload"), SHAPES, ids=lambda v: type(v).__name__)
def test_wire_shape(msg: Any, ctrl: tuple[Term, ...], payload: Term) -> None:
    got_ctrl, got_payload = c.to_terms(msg)
    assert got_ctrl == ctrl
    assert all(type(a) is type(b) for a, b in zip(got_ctrl, ctrl, strict=True))
    assert got_payload == payload
    assert c.from_terms(ctrl, payload) == msg


def test_unused_slot_is_ignored_on_receive() -> None:
    # BEAM puts '' there, but the slot is unused: any term is accepted.
    assert c.from_terms((2, Atom("x"), P2), MSG) == c.Send(P2, MSG)
    assert c.from_terms((6, P1, [], Atom("rex")), MSG) == c.RegSend(P1, Atom("rex"), MSG)


def test_nil_payload_is_not_no_payload() -> None:
    # None is the atom nil, a perfectly good message.
    assert c.from_terms((22, P1, P2), None) == c.SendSender(P1, P2, None)
    with pytest.raises(RemoteProtocolError, match="payload"):
        c.from_terms((1, P1, P2), None)


# --- round trips with generated fields ------------------------------------------------------

atoms = st.sampled_from(["ok", "", "rex", "a@vm", "$gen_call", "ünïcødé", "x" * 255]).map(Atom)
pids = st.builds(Pid, st.sampled_from([Atom("a@vm"), Atom("py@127.0.0.1")]),
                 st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
refs = st.builds(Reference, st.just(Atom("b@vm")), st.integers(0, 2**32 - 1),
                 st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=5).map(tuple))
scalars = st.one_of(
    atoms, pids, refs, st.integers(-(2**70), 2**70), st.binary(max_size=40), st.booleans(),
    st.none(), st.floats(allow_nan=False, allow_infinity=False),
)
terms: st.SearchStrategy[Term] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.one_of(atoms, st.binary(max_size=4)), inner, max_size=3),
    ),
    max_leaves=12,
)

FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "from_pid": pids, "to_pid": pids, "sender": pids, "group_leader": pids,
    "to_name": atoms, "module": atoms, "function": atoms,
    "to_proc": st.one_of(pids, atoms), "from_proc": st.one_of(pids, atoms),
    "ref": refs, "req_id": refs, "alias": refs,
    "to": st.one_of(pids, refs, atoms), "result": st.one_of(pids, atoms),
    "id": st.integers(1, 2**64), "flags": st.integers(0, 31), "arity": st.integers(0, 255),
    "options": st.lists(terms, max_size=3), "args": st.lists(terms, max_size=3),
    "token": terms, "reason": terms, "message": terms,
}


def messages_of(cls: type) -> st.SearchStrategy[Any]:
    return st.builds(cls, **{f.name: FIELD_STRATEGIES[f.name] for f in dataclasses.fields(cls)})


control_messages: st.SearchStrategy[Any] = st.one_of(*(messages_of(k) for k in ALL_CLASSES))


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda k: k.__name__)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_round_trip(cls: type, data: st.DataObject) -> None:
    msg = data.draw(messages_of(cls))
    ctrl, payload = c.to_terms(msg)
    assert type(ctrl) is tuple and isinstance(ctrl[0], int)
    assert c.from_terms(ctrl, payload) == msg


def test_only_control_messages_convert() -> None:
    for thing in (c.UnknownControl((99,), c.NO_PAYLOAD), (1, P1, P2), None):
        with pytest.raises(LocalProtocolError, match="not a control message"):
            c.to_terms(thing)  # type: ignore[arg-type]


def test_altact_token_travels_only_when_given() -> None:
    assert len(c.to_terms(c.AltactSigSend(5, P1, R, MSG))[0]) == 4
    assert len(c.to_terms(c.AltactSigSend(7, P1, R, MSG, TOK))[0]) == 5


# --- what a peer may send -----------------------------------------------------------------

MALFORMED: list[tuple[Term, Term, str]] = [
    ([1, P1, P2], c.NO_PAYLOAD, "tuple starting"),
    ((), c.NO_PAYLOAD, "tuple starting"),
    ((Atom("link"), P1, P2), c.NO_PAYLOAD, "tuple starting"),
    ((True, P1, P2), c.NO_PAYLOAD, "tuple starting"),
    ((1, P1), c.NO_PAYLOAD, "Link has 2 elements after the op, got 1"),
    ((1, P1, P2, P2), c.NO_PAYLOAD, "Link has 2 elements"),
    ((1, P1, Atom("x")), c.NO_PAYLOAD, r"Link element 2 \(to_pid\)"),
    ((22, P1, P2), c.NO_PAYLOAD, "needs a payload"),
    ((24, P1, P2), c.NO_PAYLOAD, "needs a payload"),
    ((1, P1, P2), MSG, "carries no payload"),
    ((6, P1, E, b"rex"), MSG, r"to_name"),
    ((19, P1, 42, R), c.NO_PAYLOAD, r"to_proc"),
    ((19, P1, P2, (1, 2)), c.NO_PAYLOAD, r"ref"),
    ((35, True, P1, P2), c.NO_PAYLOAD, r"\(id\)"),
    ((29, R, P1, P2, (Atom("m"), Atom("f")), []), [], "Module, Fun, Arity"),
    ((29, R, P1, P2, [Atom("m"), Atom("f"), 0], []), [], "Module, Fun, Arity"),
    ((29, R, P1, P2, (Atom("m"), Atom("f"), Atom("a")), []), [], r"element 4 \(arity\)"),
    ((29, R, P1, P2, (Atom("m"), 0, 0), []), [], r"element 4 \(function\)"),
    ((29, R, P1, P2, (Atom("m"), Atom("f"), 0), ()), [], "options"),
    ((29, R, P1, P2, (Atom("m"), Atom("f"), 0), []), (1,), r"payload \(args\)"),
    ((37, 4, P1), MSG, "AltactSigSend has 4 elements after the op, got 2"),
    ((37, 4, P1, 1.5), MSG, r"\(to\)"),
]


@pytest.mark.parametrize(("ctrl", "payload", "match"), MALFORMED)
def test_malformed_is_a_typed_error(ctrl: Term, payload: Term, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        c.from_terms(ctrl, payload)


@pytest.mark.parametrize("op", [0, 5, 9, 10, 11, 14, 15, 17, 38, 1000, -1, 2**70])
def test_unknown_op_is_reported_not_raised(op: int) -> None:
    assert c.from_terms((op, Atom("x")), c.NO_PAYLOAD) == c.UnknownControl((op, Atom("x")),
                                                                            c.NO_PAYLOAD)
    assert c.from_terms((op,), MSG) == c.UnknownControl((op,), MSG)


@settings(max_examples=300, deadline=None)
@given(ctrl=st.one_of(st.lists(terms, max_size=7).map(tuple),
                      st.tuples(st.integers(0, 40)).flatmap(
                          lambda t: st.lists(scalars, max_size=7).map(lambda r: t + tuple(r)))),
       payload=st.one_of(st.just(c.NO_PAYLOAD), terms))
def test_anything_gives_a_message_or_a_typed_error(ctrl: Term, payload: Term) -> None:
    try:
        msg = c.from_terms(ctrl, payload)
    except RemoteProtocolError:
        return
    if isinstance(msg, c.UnknownControl):
        assert msg.control == ctrl
    else:
        assert c.from_terms(*c.to_terms(msg)) == msg


# --- real frames ----------------------------------------------------------------------------

EXAMPLES = load_json("control/control_messages.json")["examples"]


def _example_id(e: dict[str, Any]) -> str:
    return f"{e['op']}-{e['header']}-{e['source'].split('/')[1]}-{e['dir'].split()[0]}"


@pytest.mark.parametrize("example", EXAMPLES, ids=[_example_id(e) for e in EXAMPLES])
def test_vector_frame(example: dict[str, Any]) -> None:
    if "hex" not in example:
        # The last fragment of a big message alone cannot be decoded; the whole sequence is
        # replayed from the dist/ stream in test_connection.
        assert example["header"] == "dist_frag_cont"
        assert "dist/ stream" in example["note"]
        return
    pass_through = example["header"] == "pass_through"
    conn = Connection(local_node="x@vm", peer_node="y@vm",
                      flags=DistFlag(0) if pass_through else HEADER_FLAGS, now=0.0)
    reused = [(s["cache_index"], s["atom"]) for s in example.get("atom_cache_slots_used") or []
              if not s["new"]]
    if reused:
        assert [type(e) for e in conn.receive_data(atom_cache_frame(reused), 0.0)] == [c.Link]
    events = conn.receive_data(bytes.fromhex(example["hex"]), 0.0)
    assert len(events) == 1
    event = events[0]
    assert type(event) is OP_NAMES[example["op"]] and not isinstance(event, DeferredMessage)
    ctrl, payload = c.to_terms(event)
    assert_rendered(ctrl, example["ctrl"])
    if example.get("msg") is None:
        assert payload is c.NO_PAYLOAD
    else:
        assert_rendered(payload, example["msg"])
