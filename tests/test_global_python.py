"""``global`` among Python nodes only (the Python EPMD on a free port; no BEAM needed).

Two Python nodes must run the *active* lock path (nobody else takes the lock for them), so
these tests cover what BEAM peers never make us do: both lockers are ours.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Callable

import pytest

from pyerl_node.node import Node
from pyerl_node.proto.errors import LocalProtocolError, NoProc
from pyerl_node.proto.terms import Atom, Export, Term
from pyerl_node.runtime.genserver import GEN_CALL
from pyerl_node.runtime.process import Process
from pyerl_node.services.global_calls import GNS, multi_call
from pyerl_node.services.global_names import GlobalNameServer
from tests.conftest import free_port

CONFLICT = Atom("global_name_conflict")


class Cluster:
    """Python nodes on one private EPMD; every node is stopped at the end."""

    def __init__(self) -> None:
        self.port = free_port()
        self.tag = secrets.token_hex(3)
        self.nodes: list[Node] = []

    async def node(self, prefix: str, **options: object) -> Node:
        options.setdefault("global_names", True)
        options.setdefault("embedded_epmd", True)
        node = Node(f"{prefix}{self.tag}@127.0.0.1", "cookie", epmd_port=self.port,
                    **options)  # type: ignore[arg-type]
        await node.start()
        self.nodes.append(node)
        return node

    async def stop(self) -> None:
        for node in reversed(self.nodes):
            await node.stop()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        await c.stop()


async def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def require(node: Node) -> GlobalNameServer:
    assert node._global is not None
    return node._global


def mesh(nodes: list[Node]) -> bool:
    names = {n.node_atom for n in nodes}
    return all(set(n.nodes()) == names - {n.node_atom} for n in nodes)


async def test_two_nodes_register_whereis_unregister_and_death(cluster: Cluster) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    box = a.mailbox()
    assert await a.global_register("early", box.pid)  # before the nodes meet
    assert await b.connect(a.node_atom)
    await b.global_sync(timeout=5)
    await a.global_sync(timeout=5)
    assert b.global_whereis("early") == box.pid
    other = b.mailbox()
    assert await b.global_register("late", other.pid)
    assert a.global_whereis("late") == other.pid
    assert not await a.global_register("late", box.pid)  # taken
    assert not await a.global_register("again", box.pid)  # the pid already has a name
    assert sorted(n.name for n in a.global_registered_names()) == ["early", "late"]
    # global:send to a remote pid and a dead name
    await a.global_send("late", b"hi")
    assert await other.receive(timeout=5) == b"hi"
    with pytest.raises(NoProc):
        await a.global_send("nobody", b"x")
    other.exit(Atom("bye"))
    await wait_for(lambda: a.global_whereis("late") is None)
    await a.global_unregister("early")
    assert b.global_whereis("early") is None
    # re_register overwrites, and the receivers monitor the new pid
    p1, p2 = a.mailbox(), b.mailbox()
    assert await a.global_register("w", p1.pid)
    await a.global_re_register("w", p2.pid)
    assert a.global_whereis("w") == b.global_whereis("w") == p2.pid


async def test_ten_node_mesh_from_a_chain_of_single_connects(cluster: Cluster) -> None:
    nodes = [await cluster.node(f"m{i}_") for i in range(10)]
    started = time.monotonic()
    for prev, node in itertools.pairwise(nodes):
        assert await node.connect(prev.node_atom)
    await wait_for(lambda: mesh(nodes), timeout=30)
    for node in nodes:
        await node.global_sync(timeout=30)
    assert time.monotonic() - started < 30
    box = nodes[4].mailbox()
    assert await nodes[4].global_register("anyone", box.pid)
    assert all(n.global_whereis("anyone") == box.pid for n in nodes)
    # every node knows every other one in global's sense
    for node in nodes:
        assert set(require(node).known) == {n.node_atom for n in nodes} - {node.node_atom}


@pytest.mark.parametrize(
    ("method", "expect"),
    [
        ("random_exit_name", "low_wins_high_killed"),
        ("random_notify_name", "low_wins_high_notified"),
        ("notify_all_name", "none_both_notified"),
    ],
)
async def test_conflicting_names_between_python_partitions(
    cluster: Cluster, method: str, expect: str
) -> None:
    low, high = await cluster.node("a"), await cluster.node("z")
    p_low, p_high = low.mailbox(), high.mailbox()
    assert await low.global_register("dup", p_low.pid, method)
    assert await high.global_register("dup", p_high.pid, method)
    assert await high.connect(low.node_atom)
    await low.global_sync(timeout=5)
    await high.global_sync(timeout=5)
    await asyncio.sleep(0.05)
    winner = low.global_whereis("dup")
    assert winner == high.global_whereis("dup")
    if expect == "low_wins_high_killed":
        assert winner == p_low.pid
        assert not p_high.alive and p_low.alive
    elif expect == "low_wins_high_notified":
        assert winner == p_low.pid and p_high.alive
        assert await p_high.receive(timeout=2) == (CONFLICT, Atom("dup"))
        assert len(p_low.mailbox) == 0
    else:
        assert winner is None
        assert await p_low.receive(timeout=2) == (CONFLICT, Atom("dup"), p_high.pid)
        assert await p_high.receive(timeout=2) == (CONFLICT, Atom("dup"), p_low.pid)


async def test_custom_resolve_method_runs_on_the_pids_node(cluster: Cluster) -> None:
    low, high = await cluster.node("a"), await cluster.node("z")
    calls: list[Term] = []

    def keep_the_other(name: Term, pid1: Term, pid2: Term) -> Term:
        calls.append(name)
        return pid1

    low.expose("myresolve", {"keep": keep_the_other})
    p_low, p_high = low.mailbox(), high.mailbox()
    method = Export(Atom("myresolve"), Atom("keep"), 3)
    assert await low.global_register("dup", p_low.pid, method)
    assert await high.global_register("dup", p_high.pid)
    assert await high.connect(low.node_atom)
    await low.global_sync(timeout=5)
    await high.global_sync(timeout=5)
    assert low.global_whereis("dup") == high.global_whereis("dup") == p_high.pid
    assert calls == [Atom("dup")]


async def test_unknown_method_name_is_refused(cluster: Cluster) -> None:
    a = await cluster.node("a")
    with pytest.raises(LocalProtocolError):
        await a.global_register("x", a.mailbox().pid, "no_such_method")


async def call_gns(proc: Process, node: Node, request: Term) -> Term:
    replies, bad = await multi_call(proc, [node.node_atom], request, timeout=5)
    assert not bad
    return replies[node.node_atom]


async def test_lock_holder_rule(cluster: Cluster) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    assert await a.connect(b.node_atom)
    await a.global_sync(timeout=5)
    # the connect session's lock is released just after the sync
    await wait_for(lambda: not require(b).tables.is_lock_set(Atom("global")))
    holder, sneaky = a.mailbox(), a.mailbox()
    lock = (Atom("global"), holder.pid)
    assert await call_gns(holder, b, (Atom("set_lock"), lock)) is True
    # another requester id cannot take the same resource
    assert await call_gns(sneaky, b, (Atom("set_lock"), (Atom("global"), sneaky.pid))) is False
    # a register from a pid that does not hold the lock: answered yes, but not kept
    target = a.mailbox()
    assert await call_gns(sneaky, b, (Atom("register"), Atom("sneaky"), target.pid,
                                      Atom("m"))) is Atom("yes")
    assert b.global_whereis("sneaky") is None
    # from the holder it is kept
    assert await call_gns(holder, b, (Atom("register"), Atom("fair"), target.pid,
                                      Atom("m"))) is Atom("yes")
    assert b.global_whereis("fair") == target.pid
    assert await call_gns(holder, b, (Atom("del_lock"), lock)) is True
    # lock released normally: registrations without a lock are kept again
    other = a.mailbox()
    assert await call_gns(sneaky, b, (Atom("register"), Atom("free"), other.pid,
                                      Atom("m"))) is Atom("yes")
    assert b.global_whereis("free") == other.pid
    # a holder that dies releases its lock; then an unlocked register is not kept
    assert await call_gns(holder, b, (Atom("set_lock"), lock)) is True
    holder.exit(Atom("kill"))
    await wait_for(lambda: not require(b).tables.is_lock_set(Atom("global")))
    last = a.mailbox()
    assert await call_gns(sneaky, b, (Atom("register"), Atom("after_death"), last.pid,
                                      Atom("m"))) is Atom("yes")
    assert b.global_whereis("after_death") is None


async def test_set_lock_del_lock_and_trans(cluster: Cluster) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    assert await a.connect(b.node_atom)
    await a.global_sync(timeout=5)
    assert await a.global_set_lock((Atom("res"), Atom("one")))
    # another requester: refused at once with retries=0
    assert not await b.global_set_lock((Atom("res"), Atom("two")), retries=0)
    assert await b.global_trans((Atom("res"), Atom("two")), _done, retries=0) is Atom("aborted")
    await a.global_del_lock((Atom("res"), Atom("one")))
    assert await b.global_trans((Atom("res"), Atom("two")), _done, retries=0) is Atom("done")
    with pytest.raises(LocalProtocolError):
        await a.global_set_lock(Atom("not_a_lock_id"))  # type: ignore[arg-type]


async def _done() -> Term:
    return Atom("done")


async def test_overlapping_partitions_are_prevented(cluster: Cluster) -> None:
    a, b, c = await cluster.node("a"), await cluster.node("b"), await cluster.node("c")
    assert await b.connect(a.node_atom)
    assert await c.connect(a.node_atom)
    await wait_for(lambda: mesh([a, b, c]))
    for node in (a, b, c):
        await node.global_sync(timeout=5)
    pb = b.mailbox()
    assert await b.global_register("on_b", pb.pid)
    assert a.disconnect(b.node_atom)
    # as with BEAM nodes: c is asked to drop both, every node ends isolated
    await wait_for(lambda: not a.nodes() and not b.nodes() and not c.nodes())
    assert a.global_whereis("on_b") is None and c.global_whereis("on_b") is None
    assert b.global_whereis("on_b") == pb.pid
    # reconnecting heals
    assert await c.connect(a.node_atom)
    assert await c.connect(b.node_atom)
    await wait_for(lambda: mesh([a, b, c]))
    for node in (a, b, c):
        await node.global_sync(timeout=5)
    assert a.global_whereis("on_b") == c.global_whereis("on_b") == pb.pid


async def test_hidden_connections_take_no_part(cluster: Cluster) -> None:
    a = await cluster.node("a")
    h = await cluster.node("h", hidden=True)
    assert await h.connect(a.node_atom)
    await asyncio.sleep(0.4)  # longer than a locker's first timeout
    assert not require(a).sessions and not require(a).known
    assert not require(h).sessions and not require(h).known
    await a.global_sync(timeout=1)  # nothing visible to wait for


async def test_node_without_global_stays_silent(cluster: Cluster) -> None:
    a = await cluster.node("a", global_names=False)
    assert a.whereis(GNS) is None
    with pytest.raises(LocalProtocolError):
        a.global_whereis("x")


async def test_stray_messages_do_not_break_the_name_server(cluster: Cluster) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    assert await a.connect(b.node_atom)
    await a.global_sync(timeout=5)
    box = a.mailbox()
    for junk in [Atom("junk"), (), (GEN_CALL, Atom("bad_from"), 1),
                 (Atom("$gen_cast"), (Atom("exchange"), 1, 2, 3, 4)),
                 (Atom("$gen_cast"), (Atom("init_connect"), Atom("bad"), b.node_atom, 1)),
                 (Atom("cancel_connect"), a.node_atom, 12345),
                 (Atom("init_connect_ack"), a.node_atom, 1, 2),
                 (Atom("lost_connection"), 1, 2, 3, 4), ([1], 2), (Atom("$gen_cast"), ([1],)),
                 (Atom("$gen_call"), (box.pid, [1]), ([1], 2)),
                 (Atom("$gen_call"), (box.pid, 7), (Atom("set_lock"), Atom("bad_id"))),
                 (Atom("$gen_cast"), (Atom("new_nodes"), b.node_atom, 1, 2, 3, 4))]:
        await box.send((GNS, b.node_atom), junk)
    # still serving, still in sync
    p = a.mailbox()
    assert await a.global_register("still", p.pid)
    assert b.global_whereis("still") == p.pid


def test_sync_facade() -> None:
    from pyerl_node.sync import Node as SyncNode

    port, tag = free_port(), secrets.token_hex(3)
    with SyncNode(f"s1{tag}@127.0.0.1", "cookie", epmd_port=port,
                     embedded_epmd=True) as a, \
            SyncNode(f"s2{tag}@127.0.0.1", "cookie", epmd_port=port) as b:
        assert a.connect(b.node_atom)
        a.global_sync(timeout=5)
        box = a.mailbox()
        assert a.global_register("sync_name", box.pid)
        assert b.global_whereis("sync_name") == box.pid
        assert b.global_registered_names() == [Atom("sync_name")]
        assert b.global_send("sync_name", b"hello") == box.pid
        assert box.receive(timeout=5) == b"hello"
        assert b.global_trans((Atom("r"), Atom("me")), lambda: 42) == 42
        assert b.global_set_lock((Atom("r2"), Atom("me")))
        b.global_del_lock((Atom("r2"), Atom("me")))
        a.global_re_register("sync_name", b.mailbox().pid)
        a.global_unregister("sync_name")
        assert b.global_whereis("sync_name") is None
