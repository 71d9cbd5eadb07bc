"""term_scan: the bytes of binaries read off an encoded message's first bytes, without
decoding it (what the runtime weighs to decide where a big message is decoded)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pyerl_node.proto import etf
from pyerl_node.proto.term_scan import BUDGET, Binaries, scan_binaries
from pyerl_node.proto.terms import Atom, BitBinary, Fun, Pid
from tests.strategies import (
    atoms,
    bit_binaries,
    exports,
    floats,
    integers,
    pids,
    ports,
    references,
)

_LEAVES = st.one_of(atoms(), integers(), floats(), st.binary(max_size=300), bit_binaries(),
                    pids(), ports(), references(), exports(), st.text(max_size=20),
                    st.sampled_from([True, False, None]))


def _nested(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(children, max_size=4).map(tuple), st.lists(children, max_size=4),
                     st.dictionaries(atoms(10), children, max_size=3))


_TERMS = st.recursive(_LEAVES, _nested, max_leaves=20)


def _binaries(term: Any) -> int:
    """What the scan must find: every binary's length (a fun is jumped over whole)."""
    if isinstance(term, bytes):
        return len(term)
    if isinstance(term, str):  # (a Python str goes out as a binary of its UTF-8)
        return len(term.encode())
    if isinstance(term, BitBinary):
        return len(term.data)
    if isinstance(term, tuple | list):
        return sum(map(_binaries, term))
    if isinstance(term, dict):
        return sum(_binaries(k) + _binaries(v) for k, v in term.items())
    return 0


@settings(max_examples=300, deadline=None)
@given(_TERMS, _TERMS)
def test_the_binaries_of_a_control_message_and_payload_are_counted(ctrl: Any,
                                                                   payload: Any) -> None:
    body = etf.encode(ctrl)[1:] + etf.encode(payload)[1:]
    found = scan_binaries(body, 0, len(body), budget=10_000)
    assert found.size == _binaries(ctrl) + _binaries(payload)
    assert found.last_at == -1  # (every binary ends inside the bytes given)


def test_a_binary_reaching_past_the_bytes_given_counts_whole() -> None:
    # The usual big message: its first fragment holds the head of a 16 MiB binary.
    body = etf.encode((6, Atom("a"), Atom("inbox")))[1:] + etf.encode(
        (Atom("tag"), 0, bytes(16 << 20)))[1:]
    at = len(body) - (16 << 20) - 5
    assert scan_binaries(body, 0, 64 * 1024) == Binaries(16 << 20, at, 16 << 20)
    assert scan_binaries(body, 0, 100) == Binaries(16 << 20, at, 16 << 20)  # (its header only)
    assert scan_binaries(body, 0, at + 4) == Binaries(0, -1, 0)  # its length is not all there
    bits = etf.encode((Atom("tag"), BitBinary(bytes(1000), 3)))[1:]
    assert scan_binaries(bits, 0, 100) == Binaries(1000, -1, 0)  # (only a BINARY_EXT ends one)


def test_the_walk_ends_after_its_budget() -> None:
    body = etf.encode([*range(2 * BUDGET), b"x" * 1000])[1:]
    assert scan_binaries(body, 0, len(body)).size == 0  # (a dense message: nothing cheap seen)
    assert scan_binaries(body, 0, len(body), budget=3 * BUDGET).size == 1000


def test_a_fun_is_jumped_over_with_what_it_holds() -> None:
    fun = Fun(0, bytes(16), 0, Atom("m"), 0, 0, Pid(Atom("n@h"), 1, 0, 1), (b"inside",))
    body = etf.encode((fun, b"after"))[1:]
    assert scan_binaries(body, 0, len(body)).size == len(b"after")


def test_the_old_identifier_and_float_forms_are_walked() -> None:
    # Tags the encoder never writes but old peers do: PID_EXT, PORT_EXT, REFERENCE_EXT,
    # NEW_REFERENCE_EXT, FLOAT_EXT, ATOM_EXT; each followed by a binary that must be found.
    node = bytes((100, 0, 3)) + b"n@h"  # ATOM_EXT
    forms = [
        bytes((103,)) + node + bytes(9),  # PID_EXT: id, serial, 1-byte creation
        bytes((102,)) + node + bytes(5),  # PORT_EXT
        bytes((101,)) + node + bytes(5),  # REFERENCE_EXT
        bytes((114, 0, 2)) + node + bytes(1 + 8),  # NEW_REFERENCE_EXT, 2 words
        bytes((90, 0, 1)) + bytes((82, 0)) + bytes(4 + 4),  # NEWER_REFERENCE, cached node
        bytes((99,)) + b"1.0".ljust(31, b"\x00"),  # FLOAT_EXT
        bytes((110, 2, 0, 1, 2)),  # SMALL_BIG
        bytes((111, 0, 0, 0, 3, 1, 1, 2, 3)),  # LARGE_BIG
    ]
    binary = bytes((109, 0, 0, 0, 4)) + b"abcd"
    for form in forms:
        body = bytes((104, 2)) + form + binary
        assert scan_binaries(body, 0, len(body)).size == 4, form


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=200))
def test_any_bytes_end_the_walk_without_an_error(data: bytes, start: int) -> None:
    assert scan_binaries(data, start, len(data)).size >= 0
