"""Pure parts of ``global``: lock-id pid order (from real captures), conflict resolution."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyerl_node.proto.terms import Atom, Pid, Reference, Term
from pyerl_node.services.global_calls import locker_lock_id, pid_order, the_boss
from pyerl_node.services.global_resolve import (
    BADRPC,
    DELETE,
    INSERT,
    NONE,
    RANDOM_EXIT,
    exchange_names,
)
from pyerl_node.services.global_tables import Tables

VECTORS = Path(__file__).resolve().parent / "vectors"
_PID = re.compile(r"#Pid<(.+)\.(\d+)\.(\d+)\.(\d+)>")
_LOCK = re.compile(r"\{set_lock,\{global,\[(#Pid<[^>]*>),(#Pid<[^>]*>)\]\}\}")


def _pid(text: str) -> Pid:
    match = _PID.fullmatch(text)
    assert match is not None
    node, pid_id, serial, creation = match.groups()
    return Pid(Atom(node), int(pid_id), int(serial), int(creation))


def _captured_lock_ids() -> list[list[Pid]]:
    """Every ``{set_lock, {global, [LockerA, LockerB]}}`` a BEAM locker sent in a capture:
    the BEAM built these lists with ``lists:sort/1``."""
    found: list[list[Pid]] = []
    for path in sorted(VECTORS.glob("dist/*.json")):
        for conn in json.loads(path.read_text()).get("connections", []):
            for frame in conn["frames"]:
                msg = frame.get("msg")
                if isinstance(msg, str):
                    found.extend([_pid(a), _pid(b)] for a, b in _LOCK.findall(msg))
    return found


def test_lock_ids_sort_pids_as_the_beam_does() -> None:
    captured = _captured_lock_ids()
    if not captured:
        pytest.skip(f"no captures under {VECTORS}")
    for pids in captured:
        assert locker_lock_id(pids[1], pids[0]) == (Atom("global"), pids)
        assert locker_lock_id(pids[0], pids[1]) == (Atom("global"), pids)
    # the captures include lists where node-name order would give the other answer
    assert any(p[0].node.name > p[1].node.name for p in captured)
    # and lists where the creation order would
    assert any(p[0].creation > p[1].creation and p[0].id == p[1].id for p in captured)


def test_pid_order_is_serial_id_node_creation() -> None:
    a = Pid(Atom("a@h"), 9, 0, 5)
    b = Pid(Atom("b@h"), 1, 1, 1)
    c = Pid(Atom("b@h"), 9, 0, 1)
    assert sorted([b, c, a], key=pid_order) == [a, c, b]


def test_the_boss_is_the_greatest_atom() -> None:
    assert the_boss([Atom("b@h"), Atom("c@h"), Atom("a@z")]) is Atom("c@h")


ME = Atom("a@h")
HIM = Atom("b@h")


def _p(node: Atom, n: int) -> Pid:
    return Pid(node, n, 0, 1)


async def _no_resolve(method: Term, name: Term, his: Pid, mine: Pid) -> Term:
    raise AssertionError("no conflict expected")


async def test_exchange_names_inserts_new_and_skips_same() -> None:
    table = {Atom("same"): (Atom("same"), _p(HIM, 1), RANDOM_EXIT)}
    his = [(Atom("new"), _p(HIM, 2), RANDOM_EXIT), (Atom("same"), _p(HIM, 1), RANDOM_EXIT)]
    ops, res = await exchange_names(his, table.get, True, _no_resolve)
    assert ops == [(INSERT, (Atom("new"), _p(HIM, 2), RANDOM_EXIT))]
    assert res == []


@pytest.mark.parametrize(
    ("answer", "ops", "res"),
    [
        ("his", [(INSERT, (Atom("x"), _p(HIM, 1), Atom("mh")))], []),
        ("mine", [], [(INSERT, (Atom("x"), _p(ME, 1), Atom("mm")))]),
        ("none", [(DELETE, Atom("x"))], [(DELETE, Atom("x"))]),
        ("badrpc", [(INSERT, (Atom("x"), _p(HIM, 1), Atom("mh")))], []),
        ("junk", [(DELETE, Atom("x"))], [(DELETE, Atom("x"))]),
    ],
)
async def test_exchange_names_conflict_outcomes(answer: str, ops: list[Term],
                                                res: list[Term]) -> None:
    table = {Atom("x"): (Atom("x"), _p(ME, 1), Atom("mm"))}
    seen: list[tuple[Term, ...]] = []

    async def resolve(method: Term, name: Term, his: Pid, mine: Pid) -> Term:
        seen.append((method, name, his, mine))
        return {"his": his, "mine": mine, "none": NONE, "badrpc": (BADRPC, Atom("nodedown")),
                "junk": Atom("whatever")}[answer]

    got = await exchange_names([(Atom("x"), _p(HIM, 1), Atom("mh"))], table.get, True, resolve)
    assert got == (ops, res)
    # OTP calls resolve_it(MyMethod, Name, HisPid, MyPid)
    assert seen == [(Atom("mm"), Atom("x"), _p(HIM, 1), _p(ME, 1))]


async def test_exchange_names_leaves_conflicts_to_the_smaller_node() -> None:
    table = {Atom("x"): (Atom("x"), _p(ME, 1), RANDOM_EXIT)}
    ops, res = await exchange_names([(Atom("x"), _p(HIM, 1), RANDOM_EXIT)], table.get, False,
                                    _no_resolve)
    assert (ops, res) == ([], [])


@given(st.lists(st.integers(0, 50), unique=True), st.lists(st.integers(0, 50), unique=True))
async def test_exchange_names_without_conflicts_inserts_exactly_the_unknown(
    mine: list[int], his: list[int]
) -> None:
    table = {i: (i, _p(ME, i), RANDOM_EXIT) for i in mine}
    # his entries for names I also hold point to the same pid: no conflict
    entries: list[Term] = [(i, table[i][1] if i in table else _p(HIM, i), RANDOM_EXIT)
                           for i in his]
    entries.append(Atom("not_an_entry"))  # malformed entries are skipped
    ops, res = await exchange_names(entries, table.get, True, _no_resolve)
    assert res == []
    # OTP prepends each op, so the ops come in reverse order of his list
    assert ops == [(INSERT, (i, _p(HIM, i), RANDOM_EXIT)) for i in reversed(his)
                   if i not in table]


class FakeMonitors:
    """Monitor bookkeeping for :class:`Tables` without a node."""

    def __init__(self) -> None:
        self.live: dict[Reference, Pid] = {}
        self.n = 0

    def monitor(self, pid: Pid) -> Reference:
        self.n += 1
        ref = Reference(ME, 1, (self.n, 0, 0))
        self.live[ref] = pid
        return ref

    def demonitor(self, ref: Reference) -> None:
        del self.live[ref]

    def ref_of(self, pid: Pid) -> Reference:
        return next(r for r, p in self.live.items() if p == pid)


def _tables(alive: set[Pid] | None = None) -> tuple[Tables, FakeMonitors]:
    mons = FakeMonitors()
    return Tables(ME, mons.monitor, mons.demonitor,
                  lambda pid: alive is None or pid in alive), mons


GLOBAL_ATOM = Atom("global")


def test_tables_lock_holder_rule() -> None:
    tables, mons = _tables()
    holder, other, target = _p(HIM, 1), _p(HIM, 2), _p(HIM, 3)
    assert tables.set_lock((GLOBAL_ATOM, holder), holder)
    assert not tables.set_lock((GLOBAL_ATOM, other), other)  # another requester id
    assert tables.set_lock((GLOBAL_ATOM, holder), other)  # same requester id: joins
    tables.insert(Atom("sneaky"), target, RANDOM_EXIT, _p(HIM, 9), [])
    assert tables.where(Atom("sneaky")) is None and not mons.live.keys() - {
        mons.ref_of(holder), mons.ref_of(other)}
    tables.insert(Atom("fair"), target, RANDOM_EXIT, holder, [])
    assert tables.where(Atom("fair")) == target
    # a new_nodes insertion counts if the lock id of the session still holds the lock
    extra: list[Term] = [(Atom("vsn"), 8), (Atom("lock"), (GLOBAL_ATOM, holder))]
    tables.insert(Atom("by_node"), _p(HIM, 4), RANDOM_EXIT, HIM, extra)
    assert tables.where(Atom("by_node")) == _p(HIM, 4)
    tables.insert(Atom("stale"), _p(HIM, 5), RANDOM_EXIT, HIM,
                  [(Atom("lock"), (GLOBAL_ATOM, other))])
    assert tables.where(Atom("stale")) is None
    tables.del_lock((GLOBAL_ATOM, holder), holder)
    tables.del_lock((GLOBAL_ATOM, holder), other)
    assert not tables.is_lock_set(GLOBAL_ATOM)
    tables.insert(Atom("free"), _p(HIM, 6), RANDOM_EXIT, _p(HIM, 9), [])
    assert tables.where(Atom("free")) == _p(HIM, 6)
    # the lock's last holder dies: unlocked inserts are refused until a normal release
    assert tables.set_lock((GLOBAL_ATOM, holder), holder)
    tables.on_down(mons.ref_of(holder))
    assert not tables.is_lock_set(GLOBAL_ATOM)
    tables.insert(Atom("after_death"), _p(HIM, 7), RANDOM_EXIT, _p(HIM, 9), [])
    assert tables.where(Atom("after_death")) is None


def test_tables_names_follow_their_monitors() -> None:
    mine = _p(ME, 1)
    alive = {mine}
    tables, mons = _tables(alive)
    tables.insert("w", mine, RANDOM_EXIT, mine, [])  # a str name is an atom
    assert tables.where("w") == tables.where(Atom("w")) == mine
    assert tables.has_other_name(mine) == [Atom("w")]
    alive.clear()  # a dead local pid is not returned even before its DOWN
    assert tables.where("w") is None
    tables.on_down(mons.ref_of(mine))
    assert tables.registered_names() == [] and not mons.live
    # a list name is stored frozen and found again
    tables.insert([1, 2], _p(HIM, 2), RANDOM_EXIT, HIM, [])
    assert tables.where([1, 2]) == _p(HIM, 2)
    assert tables.name_list() == [([1, 2], _p(HIM, 2), RANDOM_EXIT)]
    # re-insert replaces (and demonitors the old pid)
    tables.insert([1, 2], _p(HIM, 3), RANDOM_EXIT, HIM, [])
    assert list(mons.live.values()) == [_p(HIM, 3)]
    tables.delete([1, 2])
    assert not mons.live and tables.names == {}
