"""epmd.registry: creations, refusals, ordering and remembered names, as epmd_srv.c keeps them."""

from __future__ import annotations

import itertools

from epmd.registry import MAX_UNREG_COUNT, Registry
from pyerl_node.proto.epmd_wire import Alive2Req, DumpEntry


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_first_creation_is_time_plus_one_and_reregistration_adds_one() -> None:
    clock = Clock(1_795_000_000.7)
    reg = Registry(clock)
    first = reg.register(Alive2Req(5001, "alpha"), conn=1)
    assert first is not None and first.creation == 1_795_000_001
    clock.now += 1000  # the remembered counter wins over the clock
    assert reg.unregister_conn(1) is first
    again = reg.register(Alive2Req(5001, "alpha"), conn=2)
    assert again is not None and again.creation == 1_795_000_002
    reg.unregister_conn(2)
    third = reg.register(Alive2Req(5001, "alpha"), conn=3)
    assert third is not None and third.creation == 1_795_000_003


def test_creation_skips_reserved_values_on_wrap() -> None:
    reg = Registry(Clock(0xFFFFFFFF))
    r = reg.register(Alive2Req(1, "a"), conn=1)
    assert r is not None and r.creation == 4  # 0..3 are reserved for old nodes
    assert Registry(Clock(0)).register(Alive2Req(1, "a"), conn=1).creation == 4  # type: ignore[union-attr]


def test_old_node_gets_small_creation() -> None:
    reg = Registry(Clock(1_795_000_000))
    seen = []
    for conn in range(6):
        r = reg.register(Alive2Req(1, "old", highest_version=5, lowest_version=5), conn)
        assert r is not None
        seen.append(r.creation)
        reg.unregister_conn(conn)
    assert set(seen) == {1, 2, 3}
    assert all(a != b for a, b in itertools.pairwise(seen))


def test_refusals() -> None:
    reg = Registry(Clock(1e9))
    assert reg.register(Alive2Req(1, "a"), conn=1) is not None
    assert reg.register(Alive2Req(2, "a"), conn=2) is None  # taken
    assert reg.register(Alive2Req(2, "x" * 256), conn=3) is None  # too long
    assert reg.register(Alive2Req(2, "é" * 255), conn=4) is not None  # 255 chars, 510 bytes
    assert reg.register(Alive2Req(2, ""), conn=5) is None
    assert reg.register(Alive2Req(2, "b", extra=b"e" * 1021), conn=6) is None
    assert reg.register(Alive2Req(2, "b", extra=b"e" * 1020), conn=7) is not None
    assert len(reg) == 3


def test_order_newest_first_and_dump() -> None:
    reg = Registry(Clock(1e9))
    for conn, name in enumerate(["alpha", "beta", "hid"]):
        reg.register(Alive2Req(5001 + conn, name), conn, fd=10 + conn)
    assert reg.names() == [("hid", 5003), ("beta", 5002), ("alpha", 5001)]
    reg.unregister_conn(0)
    reg.register(Alive2Req(5001, "alpha"), conn=9, fd=20)
    assert reg.names() == [("alpha", 5001), ("hid", 5003), ("beta", 5002)]
    reg.unregister("beta")
    active, unused = reg.dump()
    assert active == [DumpEntry("alpha", 5001, 20), DumpEntry("hid", 5003, 12)]
    assert unused == [DumpEntry("beta", 5002, 11)]
    assert reg.lookup("beta") is None
    assert reg.unregister_conn(1) is None  # beta's connection no longer owns anything


def test_unregister_unknown_is_none() -> None:
    reg = Registry(Clock(1e9))
    assert reg.unregister("nobody") is None
    assert reg.unregister_conn(42) is None


def test_remembered_names_are_bounded() -> None:
    reg = Registry(Clock(1e9))
    for conn in range(MAX_UNREG_COUNT + 10):
        reg.register(Alive2Req(1, f"n{conn}"), conn)
        reg.unregister_conn(conn)
    _, unused = reg.dump()
    assert len(unused) == MAX_UNREG_COUNT
    assert unused[-1].name == f"n{MAX_UNREG_COUNT + 9}"
    assert unused[0].name == "n10"  # the oldest ones were forgotten
