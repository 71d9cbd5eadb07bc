"""The connect session on the wire, message by message, against a scripted peer.

Node ``b`` runs without ``global``; the test registers its own ``global_name_server`` there
and plays OTP's part by hand (docs/protocol/global.md §4.1, §4.7), so every message node ``a`` sends
is checked for its exact shape and tags: ``init_connect``, ``init_connect_ack``, the restart rules
of ``cancel_connect``/``init_connect_ack``, the active lock path (``a``'s locker times out first and
locks ``b``), ``exchange``, ``resolved`` and the lock release.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from pyerl_node.node import Node
from pyerl_node.proto.terms import Atom, Pid, Term
from pyerl_node.runtime.genserver import GEN_CALL, GEN_CAST
from pyerl_node.runtime.process import Process
from pyerl_node.services.global_calls import GNS, locker_lock_id, multi_call
from tests.test_global_python import Cluster

INIT_CONNECT = Atom("init_connect")
INIT_CONNECT_ACK = Atom("init_connect_ack")
CANCEL_CONNECT = Atom("cancel_connect")
LOCK_SET = Atom("lock_set")
EXCHANGE = Atom("exchange")
RESOLVED = Atom("resolved")
SET_LOCK = Atom("set_lock")
DEL_LOCK = Atom("del_lock")


@dataclass
class FakeGns:
    """A scripted ``global_name_server`` on node ``b``: answers lock calls ``true``, records
    them, and queues every other message for the test."""

    node: Node
    proc: Process
    locker: Process
    inbox: asyncio.Queue[Term]
    calls: list[Term]

    async def serve(self, proc: Process) -> None:
        while True:
            msg = await proc.receive()
            if type(msg) is tuple and len(msg) == 3 and msg[0] is GEN_CALL:
                (caller, tag), request = msg[1], msg[2]
                self.calls.append(request)
                await proc.send(caller, (tag, True))
            else:
                self.inbox.put_nowait(msg)

    async def next(self, timeout: float = 3.0) -> Term:
        async with asyncio.timeout(timeout):
            return await self.inbox.get()

    async def nothing(self, seconds: float = 0.15) -> None:
        with pytest.raises(TimeoutError):
            await self.next(seconds)

    async def to_a(self, a: Node, msg: Term) -> None:
        await self.proc.send((GNS, a.node_atom), msg)


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Node, FakeGns]]:
    cluster = Cluster()
    try:
        a = await cluster.node("a")
        b = await cluster.node("b", global_names=False)
        fake = FakeGns(b, b.mailbox(), b.mailbox(), asyncio.Queue(), [])
        fake.proc.exit()
        fake.proc = b.spawn(fake.serve, name=GNS)
        yield a, fake
    finally:
        await cluster.stop()


def init_connect_tag(msg: Term, a: Node) -> tuple[int, Pid]:
    """Check ``{'$gen_cast', {init_connect, {8, Tag}, A, {locker, no_longer_a_pid, _, L}}}``."""
    assert type(msg) is tuple and msg[0] is GEN_CAST
    kind, (vsn, tag), node, locker = msg[1]
    assert (kind, vsn, node) == (INIT_CONNECT, 8, a.node_atom)
    assert locker[:2] == (Atom("locker"), Atom("no_longer_a_pid"))
    assert isinstance(locker[3], Pid) and locker[3].node is a.node_atom
    assert isinstance(tag, int)
    return tag, locker[3]


async def test_session_restart_rules_and_active_lock_path(scripted: tuple[Node, FakeGns]) -> None:
    a, fake = scripted
    b = fake.node
    assert await b.connect(a.node_atom)
    tag1, a_locker = init_connect_tag(await fake.next(), a)

    # an init_connect_ack that does not match: cancel (with the tag it named) and restart
    await fake.to_a(a, (INIT_CONNECT_ACK, b.node_atom, 111, 222))
    assert await fake.next() == (CANCEL_CONNECT, a.node_atom, 222)
    tag2, _ = init_connect_tag(await fake.next(), a)
    assert tag2 != tag1
    # a cancel_connect with a tag that is not a's current one is ignored (no storm)
    await fake.to_a(a, (CANCEL_CONNECT, b.node_atom, tag1))
    await fake.nothing()
    # with a's current tag: a restarts once
    await fake.to_a(a, (CANCEL_CONNECT, b.node_atom, tag2))
    tag3, _ = init_connect_tag(await fake.next(), a)
    assert tag3 not in (tag1, tag2)

    # b's init_connect: a acknowledges both tags
    his_tag = 987654321987654321
    await fake.to_a(a, (GEN_CAST, (INIT_CONNECT, (8, his_tag), b.node_atom,
                                   (Atom("locker"), Atom("no_longer_a_pid"), [],
                                    fake.locker.pid))))
    assert await fake.next() == (INIT_CONNECT_ACK, a.node_atom, his_tag, tag3)

    # nobody locks for a: its locker times out (200 ms, it knows no nodes) and locks b itself
    lock_id = locker_lock_id(a_locker, fake.locker.pid)
    msg = await fake.next(timeout=5)
    assert msg == (GEN_CAST, (LOCK_SET, a_locker, True, [], his_tag))
    assert fake.calls == [(SET_LOCK, lock_id)]
    # b's locker answers: a sends its names
    await fake.to_a(a, (GEN_CAST, (LOCK_SET, fake.locker.pid, True, [], tag3)))
    box = a.mailbox()
    assert await fake.next() == (GEN_CAST, (EXCHANGE, a.node_atom, [], [], his_tag))
    # b's names: one new name for a
    b_pid = b.mailbox().pid
    entry = (Atom("from_b"), b_pid, Atom("method"))
    await fake.to_a(a, (GEN_CAST, (EXCHANGE, b.node_atom, [entry], [], tag3)))
    assert await fake.next() == (GEN_CAST, (RESOLVED, a.node_atom, [], [], Atom("unused"), [],
                                            his_tag))
    await fake.to_a(a, (GEN_CAST, (RESOLVED, b.node_atom, [], [], Atom("unused"), [], tag3)))
    await a.global_sync(timeout=3)
    assert a.global_whereis("from_b") == b_pid
    # the session lock is released: on a, then on b (the boss: its name sorts last)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while (DEL_LOCK, lock_id) not in fake.calls:
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    assert fake.calls == [(SET_LOCK, lock_id), (DEL_LOCK, lock_id)]
    # a registration from a now includes b: set_lock (b is the boss), register, del_lock
    fake.calls.clear()
    assert await a.global_register("from_a", box.pid)
    registrar_lock = fake.calls[0][1]
    assert fake.calls == [(SET_LOCK, registrar_lock), (SET_LOCK, registrar_lock),
                          (Atom("register"), Atom("from_a"), box.pid,
                           fake.calls[2][3]),
                          (DEL_LOCK, registrar_lock)]
    assert registrar_lock[0] is Atom("global") and isinstance(registrar_lock[1], Pid)


async def test_passive_lock_path(scripted: tuple[Node, FakeGns],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The peer's locker acts first (as BEAM lockers do): it locks a, says lock_set; a's
    locker locks its own partition with the same lock id and answers."""
    a, fake = scripted
    b = fake.node
    assert a._global is not None
    # a's locker never times out here, however slow the machine: the peer is first
    monkeypatch.setattr(a._global.locker, "_timeout", lambda: None)
    assert await b.connect(a.node_atom)
    my_tag, a_locker = init_connect_tag(await fake.next(), a)
    his_tag = 42
    await fake.to_a(a, (GEN_CAST, (INIT_CONNECT, (8, his_tag), b.node_atom,
                                   (Atom("locker"), Atom("no_longer_a_pid"), [],
                                    fake.locker.pid))))
    assert await fake.next() == (INIT_CONNECT_ACK, a.node_atom, his_tag, my_tag)
    lock_id = locker_lock_id(fake.locker.pid, a_locker)
    replies, bad = await multi_call(fake.locker, [a.node_atom], (SET_LOCK, lock_id), timeout=3)
    assert replies == {a.node_atom: True} and not bad
    # another requester cannot lock global on a meanwhile
    intruder = b.mailbox()
    other = (Atom("global"), [intruder.pid])
    replies, _ = await multi_call(intruder, [a.node_atom], (SET_LOCK, other), timeout=3)
    assert replies == {a.node_atom: False}
    await fake.proc.send((GNS, a.node_atom),
                         (GEN_CAST, (LOCK_SET, fake.locker.pid, True, [], my_tag)))
    assert await fake.next() == (GEN_CAST, (LOCK_SET, a_locker, True, [], his_tag))
    assert await fake.next() == (GEN_CAST, (EXCHANGE, a.node_atom, [], [], his_tag))
    assert fake.calls == []  # a never called b: only its own partition was locked
    await fake.to_a(a, (GEN_CAST, (EXCHANGE, b.node_atom, [], [], my_tag)))
    await fake.to_a(a, (GEN_CAST, (RESOLVED, b.node_atom, [], [], Atom("unused"), [], my_tag)))
    assert await fake.next() == (GEN_CAST, (RESOLVED, a.node_atom, [], [], Atom("unused"), [],
                                            his_tag))
    await a.global_sync(timeout=3)
    # the peer releases a; a's own locker released its hold on its side
    await multi_call(fake.locker, [a.node_atom], (DEL_LOCK, lock_id), timeout=3)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while a._global.tables.is_lock_set(Atom("global")):
        assert loop.time() < deadline, "a still holds the session lock"
        await asyncio.sleep(0.01)
    # a stale tag is refused: the session is over, a sends nothing back
    await fake.to_a(a, (GEN_CAST, (EXCHANGE, b.node_atom, [], [], my_tag)))
    await fake.nothing()
