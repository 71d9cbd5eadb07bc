"""The bounds on what a peer can cost us (pyerl_node.proto.limits): the weak atom table and its
limit, and safe_repr, the bounded text for log lines and errors about peer data."""

from __future__ import annotations

import gc
import sys
import threading
import time
from typing import Any

import pytest

from pyerl_node.proto import etf, limits, terms
from pyerl_node.proto.errors import AtomTableFull, DecodeError, ProcessExit, RpcError
from pyerl_node.proto.safe_repr import safe_repr
from pyerl_node.proto.terms import (
    Atom,
    BitBinary,
    ExactKey,
    FrozenList,
    FrozenMap,
    Fun,
    ImproperList,
    Pid,
    Reference,
)

# --- the atom table -----------------------------------------------------------------------


def test_atoms_are_freed_when_unused() -> None:
    name = "test_limits_short_lived_atom"
    atom = Atom(name)
    assert Atom(name) is atom and name in terms._ATOMS
    count = terms.atom_count()
    del atom
    gc.collect()
    assert name not in terms._ATOMS and terms.atom_count() == count - 1
    assert Atom(name).name == name  # made anew


def test_a_live_atom_keeps_its_identity() -> None:
    keep = [Atom(f"test_limits_kept_{i}") for i in range(1000)]
    gc.collect()
    assert all(Atom(f"test_limits_kept_{i}") is a for i, a in enumerate(keep))
    # also when the one making it again lost a race for the table slot
    with pytest.raises(TypeError):
        Atom(b"bytes")  # type: ignore[arg-type]


def test_decoded_atoms_are_freed_but_for_a_bounded_cache() -> None:
    gc.collect()  # (atoms held only by cyclic garbage of earlier tests leave now)
    before = terms.atom_count()
    many = 40_000
    items = b"".join(b"\x77" + bytes((len(n),)) + n
                     for n in (f"test_limits_wire_{i}".encode() for i in range(many)))
    data = b"\x83\x6c" + many.to_bytes(4, "big") + items + b"\x6a"
    decoded = etf.decode(data)
    assert terms.atom_count() >= many  # (the caches may let go of earlier atoms meanwhile)
    del decoded
    gc.collect()
    # The decoder's caches hold a bounded number of the atoms they saw, no more.
    assert terms.atom_count() - before <= etf._ATOM_CACHE_MAX


def test_atom_limit_raises_a_typed_error() -> None:
    old = terms.set_atom_limit(terms.atom_count() + 5)
    made = []
    try:
        made += [Atom(f"test_limits_limit_{i}") for i in range(5)]
        with pytest.raises(AtomTableFull) as info:
            Atom("test_limits_one_too_many")
        assert info.value.limit == terms.atom_limit() and "atom table full" in str(info.value)
        assert Atom("test_limits_limit_0") is made[0]  # existing atoms are still found
        # From the wire: a DecodeError with the offset and tag of the atom (the runtime
        # closes the connection for it).
        data = b"\x83\x68\x02\x61\x01\x77\x04zzzq"
        with pytest.raises(AtomTableFull) as wire:
            etf.decode(data)
        assert isinstance(wire.value, DecodeError)
        assert (wire.value.offset, wire.value.tag) == (5, etf.SMALL_ATOM_UTF8)
        # not chained to the first error, whose frames reach the decode's (all it built)
        assert wire.value.__context__ is None
        with pytest.raises(ValueError, match="positive"):
            terms.set_atom_limit(0)
    finally:
        terms.set_atom_limit(old)
    assert terms.atom_limit() == limits.MAX_ATOMS == 1 << 20
    assert etf.decode(data)[1] is Atom("zzzq")


def test_interning_from_many_threads_gives_one_atom_per_name() -> None:
    names = [f"test_limits_thread_{i}" for i in range(3000)]
    results: list[list[Atom]] = []
    start = threading.Barrier(6)

    def work() -> None:
        start.wait()
        results.append([Atom(n) for n in names])

    threads = [threading.Thread(target=work) for _ in range(6)]
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    finally:
        sys.setswitchinterval(previous)
    assert len(results) == 6
    for made in results[1:]:
        assert all(a is b for a, b in zip(made, results[0], strict=True))


# --- safe_repr -------------------------------------------------------------------------------


def _quick(value: Any, limit: int = 200) -> str:
    start = time.perf_counter()
    text = safe_repr(value, limit)
    assert time.perf_counter() - start < 0.05
    assert len(text) <= max(limit, 8)
    return text


def test_huge_integers_are_described_not_converted() -> None:
    big = 10**9600
    assert _quick(big) == "<int of 31891 bits>"
    assert _quick(-big) == "<-int of 31891 bits>"
    assert _quick(2**128 - 1) == str(2**128 - 1)
    assert _quick([1, -5, True, None, 1.5]) == "[1, -5, True, None, 1.5]"


def test_deep_terms_do_not_recurse() -> None:
    for opener in (lambda t: (t,), lambda t: [t], lambda t: {1: t}, lambda t: ImproperList(
            (t,), 0)):
        term: Any = 0
        for _ in range(19_999):
            term = opener(term)
        text = _quick(term, 60)
        assert len(text) == 60 and text.endswith("...")


def test_big_containers_and_leaves_cost_only_the_limit() -> None:
    assert _quick("x" * 10_000_000, 20) == "'" + "x" * 16 + "..."
    assert _quick(b"\x00" * 10_000_000, 20).startswith("b'\\x00")
    assert _quick(memoryview(b"abc")) == "b'abc'"
    assert _quick(list(range(1_000_000)), 30) == "[0, 1, 2, 3, 4, 5, 6, 7, 8,..."
    assert _quick(dict.fromkeys(range(1_000_000), 0), 24) == "{0: 0, 1: 0, 2: 0, 3:..."


def test_term_types_look_like_their_reprs() -> None:
    node = Atom("a@b")
    pid = Pid(node, 1, 2, 3)
    ref = Reference(node, 4, (5, 6, 7))
    assert _quick([pid, ref, node]) == "[Pid<a@b.1.2.3>, Ref<a@b.4.5.6.7>, Atom('a@b')]"
    assert _quick((1,)) == "(1,)" and _quick(()) == "()" and _quick(set()) == "set()"
    assert _quick(FrozenMap({1: 2})) == "FrozenMap({1: 2})"
    assert _quick(FrozenList([1])) == "FrozenList([1])"
    assert _quick(ExactKey(1.0)) == "ExactKey(1.0)"
    assert _quick(BitBinary(b"\x80", 1)) == "BitBinary(data=b'\\x80', bits=1)"
    # Fields that are not small are walked, not handed to the object's own repr.
    assert _quick(ImproperList(tuple(range(100)), 10**100), 40) == (
        "ImproperList((0, 1, 2, 3, 4, 5, 6, 7,...")
    fun = Fun(1, bytes(16), 0, Atom("m"), 0, 0, pid, ("x" * 1000,))
    assert _quick(fun, 500).startswith("Fun(1, b'\\x00")


def test_safe_repr_never_raises() -> None:
    class Hostile:
        __slots__ = ("x",)

        def __init__(self) -> None:
            self.x = 1

        def __repr__(self) -> str:
            raise RuntimeError("no")

    class Plain:
        pass

    # what came before the failure stays; the rest is cut
    assert _quick([1, Hostile()]) == "[1, <unprintable list>..."
    assert _quick(Plain()) == "<Plain>"


def test_errors_show_peer_terms_briefly() -> None:
    deep: Any = 0
    for _ in range(19_999):
        deep = [deep]
    for reason in (10**9600, deep, b"x" * 10**6):
        assert len(str(ProcessExit(reason))) < 220
        assert len(str(RpcError(reason))) < 220
