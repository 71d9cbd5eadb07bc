"""The ``pg`` scope service among Python nodes (pyerl_node/services/pg.py): scopes registered
under their names, discovery on connect, joins/leaves/exits/nodedown seen everywhere, the
subscriptions, noconnect sends, rpc built-ins, and hostile scope messages that change nothing.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable

import pytest

from pyerl_node.node import Node
from pyerl_node.proto.errors import LocalProtocolError, RpcError
from pyerl_node.proto.pg import DISCOVER, GEN_CAST, JOIN, LEAVE, SYNC
from pyerl_node.proto.terms import Atom, Pid, Term
from tests.conftest import free_port

G = Atom("g")
OTHER_SCOPE = Atom("my_scope")


class Cluster:
    """Python nodes on one private embedded EPMD, all stopped at the end."""

    def __init__(self) -> None:
        self.port = free_port()
        self.tag = secrets.token_hex(3)
        self.nodes: list[Node] = []

    async def node(self, prefix: str) -> Node:
        node = Node(f"{prefix}{self.tag}@127.0.0.1", "cookie", epmd_port=self.port,
                    embedded_epmd=not self.nodes)
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
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def connected(a: Node, b: Node) -> None:
    """Connect and wait until both scopes have discovered each other (an empty sync done)."""
    assert await a.connect(b.node_atom)
    marker = a.mailbox()
    await a.pg_join(Atom("ready"), marker.pid)
    await wait_for(lambda: marker.pid in b.pg_get_members(Atom("ready")))
    await a.pg_leave(Atom("ready"), marker.pid)
    await wait_for(lambda: b.pg_get_members(Atom("ready")) == [])


async def test_the_default_scope_runs_under_its_name(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    assert a.whereis("pg") is not None
    assert a.pg_which_groups() == []
    with pytest.raises(LocalProtocolError, match="already started"):
        a.pg_start_scope("pg")
    with pytest.raises(LocalProtocolError, match="no pg scope"):
        a.pg_get_members(G, scope="nope")


async def test_join_leave_and_exit_are_seen_on_the_other_node(pair: tuple[Node, Node]) -> None:
    a, b = pair
    await connected(a, b)
    p1, p2 = a.mailbox(), a.mailbox()
    await a.pg_join(G, [p1.pid, p2.pid])
    await a.pg_join(G, p1.pid)
    assert a.pg_get_members(G) == [p1.pid, p1.pid, p2.pid]  # newest first, once per join
    assert a.pg_get_local_members(G) == [p1.pid, p1.pid, p2.pid]
    await wait_for(lambda: b.pg_get_members(G) == [p1.pid, p1.pid, p2.pid])
    assert b.pg_get_local_members(G) == []
    assert b.pg_which_groups() == [G]

    assert await a.pg_leave(G, p1.pid) is True
    await wait_for(lambda: b.pg_get_members(G) == [p1.pid, p2.pid])
    assert await a.pg_leave(Atom("never"), p1.pid) is False

    p2.exit(Atom("crash"))  # a member's exit is a leave of every group it joined
    await wait_for(lambda: b.pg_get_members(G) == [p1.pid])
    assert a.pg_get_members(G) == [p1.pid]


async def test_the_members_of_a_node_that_goes_down_go(cluster: Cluster) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    await connected(a, b)
    remote = b.mailbox()
    await b.pg_join(G, remote.pid)
    await wait_for(lambda: a.pg_get_members(G) == [remote.pid])
    a.disconnect(b.node_atom)
    await wait_for(lambda: a.pg_get_members(G) == [])
    # pg never dials: the connection stays down although b still has a member
    await asyncio.sleep(0.3)
    assert a.nodes() == []
    # the next connect rediscovers it
    await connected(a, b)
    await wait_for(lambda: a.pg_get_members(G) == [remote.pid])
    await b.stop()
    await wait_for(lambda: a.pg_get_members(G) == [])


async def test_other_scopes_are_separate_and_shared_only_where_they_run(
        cluster: Cluster) -> None:
    a, b, c = await cluster.node("a"), await cluster.node("b"), await cluster.node("c")
    await connected(a, b)
    await connected(a, c)
    a.pg_start_scope(OTHER_SCOPE)
    b.pg_start_scope(OTHER_SCOPE)
    p = a.mailbox()
    await a.pg_join(G, p.pid, scope=OTHER_SCOPE)
    await wait_for(lambda: b.pg_get_members(G, scope=OTHER_SCOPE) == [p.pid])
    assert b.pg_get_members(G) == []  # not in the default scope
    with pytest.raises(LocalProtocolError):
        c.pg_get_members(G, scope=OTHER_SCOPE)  # c does not run it
    # a scope started later discovers the nodes already connected
    c.pg_start_scope(OTHER_SCOPE)
    await wait_for(lambda: c.pg_get_members(G, scope=OTHER_SCOPE) == [p.pid])


async def test_only_local_pids_and_erlang_groups_join(pair: tuple[Node, Node]) -> None:
    a, b = pair
    with pytest.raises(LocalProtocolError, match="nolocal"):
        await a.pg_join(G, b.mailbox().pid)
    with pytest.raises(LocalProtocolError, match="Erlang term"):
        await a.pg_join(object(), a.mailbox().pid)
    assert a.pg_which_groups() == []


async def test_group_monitor_notifications(pair: tuple[Node, Node]) -> None:
    a, b = pair
    await connected(a, b)
    watcher = a.mailbox()
    ref, members = await a.pg_monitor(G, watcher.pid)
    assert members == []
    remote = b.mailbox()
    await b.pg_join(G, remote.pid)
    assert await watcher.receive(timeout=5) == (ref, JOIN, G, [remote.pid])
    await b.pg_join(Atom("other"), remote.pid)  # another group: not told
    remote.exit()
    assert await watcher.receive(timeout=5) == (ref, LEAVE, G, [remote.pid])
    assert await a.pg_demonitor(ref) is True
    assert await a.pg_demonitor(ref) is False


async def test_scope_monitor_snapshot_and_demonitor_flushes(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    p = a.mailbox()
    await a.pg_join(G, p.pid)
    watcher = a.mailbox()
    ref, groups = await a.pg_monitor_scope(watcher.pid)
    assert groups == {G: [p.pid]}
    await a.pg_join(1, p.pid)
    await a.pg_join(1.0, p.pid)  # another group: Erlang keeps 1 and 1.0 apart
    assert len(watcher.mailbox) == 2
    other = a.mailbox()
    await other.send(watcher.pid, Atom("unrelated"))
    assert await a.pg_demonitor(ref) is True
    assert await watcher.receive(timeout=1) is Atom("unrelated")  # only the notices went
    assert len(watcher.mailbox) == 0


async def test_a_dead_subscriber_is_forgotten(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    watcher = a.mailbox()
    ref, _ = await a.pg_monitor(G, watcher.pid)
    watcher.exit()
    await asyncio.sleep(0.05)  # the scope takes the DOWN
    assert await a.pg_demonitor(ref) is False


async def test_rpc_builtins(pair: tuple[Node, Node]) -> None:
    a, b = pair
    p = a.mailbox()
    await a.pg_join(G, p.pid)
    await a.pg_join((Atom("tuple"), 1), p.pid, scope="pg")
    a.pg_start_scope(OTHER_SCOPE)
    await a.pg_join(G, [p.pid, p.pid], scope=OTHER_SCOPE)
    node = a.node_atom
    assert set(await b.rpc(node, "pg", "which_groups", [])) == {G, (Atom("tuple"), 1)}
    assert await b.rpc(node, "pg", "which_groups", [OTHER_SCOPE]) == [G]
    assert await b.rpc(node, "pg", "get_members", [G]) == [p.pid]
    assert await b.rpc(node, "pg", "get_members", [OTHER_SCOPE, G]) == [p.pid, p.pid]
    assert await b.rpc(node, "pg", "get_local_members", [OTHER_SCOPE, G]) == [p.pid, p.pid]
    assert await b.rpc(node, "pg", "get_local_members", [G]) == [p.pid]
    # OTP's answers for a scope that does not run: [] from lookups, badarg from ets:match
    assert await b.rpc(node, "pg", "get_members", [Atom("nope"), G]) == []
    assert await b.rpc(node, "pg", "get_local_members", [b"not an atom", G]) == []
    with pytest.raises(RpcError) as info:
        await b.rpc(node, "pg", "which_groups", [Atom("nope")])
    reason = info.value.reason
    assert reason[0] is Atom("EXIT") and reason[1][0] is Atom("badarg")
    assert reason[1][1][0][:2] == (Atom("ets"), Atom("match"))


async def test_hostile_scope_messages_change_nothing(
        pair: tuple[Node, Node], caplog: pytest.LogCaptureFixture) -> None:
    a, b = pair
    await connected(a, b)
    member = b.mailbox()
    await b.pg_join(G, member.pid)
    await wait_for(lambda: a.pg_get_members(G) == [member.pid])
    scope_pid = a.whereis("pg")
    b_scope = b.whereis("pg")
    assert scope_pid is not None and b_scope is not None
    evil = b.mailbox()
    bad: list[Term] = [
        Atom("garbage"),
        (JOIN, b_scope, G, Atom("not_a_pid")),
        (JOIN, b_scope, G, [member.pid, 7]),
        (JOIN, b_scope, G, [member.pid, 8]),  # the same kind again: logged at DEBUG
        (LEAVE, b_scope, member.pid, [Atom("never_joined")]),
        (LEAVE, b_scope, member.pid, Atom("not_a_list")),
        (GEN_CAST, (SYNC, b_scope, [(G, Atom("x"))])),
        (GEN_CAST, (SYNC, b_scope, [(G, [member.pid]), (G, [member.pid])])),
        (DISCOVER, Atom("nobody")),
        (DISCOVER, scope_pid),  # a "peer" on the scope's own node
        (Atom("$gen_call"), (evil.pid, a.make_ref()), Atom("which_groups")),
    ]
    with caplog.at_level(logging.DEBUG, "pyerl_node.pg"):
        for message in bad:
            await evil.send((Atom("pg"), a.node_atom), message)
        # a join from a pid that is not a peer scope: ignored silently, as OTP does
        await evil.send((Atom("pg"), a.node_atom), (JOIN, evil.pid, G, evil.pid))
        await evil.send(scope_pid, (Atom("nodeup"), Atom("nowhere@nohost")))
        probe = b.mailbox()
        await b.pg_join(Atom("after"), probe.pid)
        await wait_for(lambda: a.pg_get_members(Atom("after")) == [probe.pid])
    assert a.whereis("pg") == scope_pid  # still the same process
    assert a.pg_get_members(G) == [member.pid]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len({r.getMessage().split("(")[1].split(")")[0]
                                 for r in warnings})  # once per kind of fault
    assert any("a member is not a pid" in r.getMessage() for r in warnings)
    repeated = [r for r in caplog.records if "a member is not a pid" in r.getMessage()]
    assert [r.levelno for r in repeated] == [logging.WARNING, logging.DEBUG]
    assert a.nodes() == [b.node_atom]  # the nodeup of an unknown node dialled nothing


async def test_a_peer_whose_node_is_gone_is_dropped_without_dialling(
        pair: tuple[Node, Node]) -> None:
    a, _ = pair
    ghost = Pid(Atom("ghost@127.0.0.1"), 40, 0, 1)
    scope_pid = a.whereis("pg")
    assert scope_pid is not None
    # a discover from a node that is not connected (it went away after sending it)
    await a.send(scope_pid, (DISCOVER, ghost))
    await a.send(scope_pid, (JOIN, ghost, G, Pid(ghost.node, 41, 0, 1)))
    probe = a.mailbox()
    await a.pg_join(Atom("probe"), probe.pid)
    await asyncio.sleep(0.1)
    assert a.pg_get_members(G) == []
    assert a.nodes("known") == [a.node_atom]


def same_everywhere(nodes: list[Node], expected: int) -> bool:
    """Every node lists the same members of G, ``expected`` of them."""
    views = [sorted(map(repr, n.pg_get_members(G))) for n in nodes]
    return len(views[0]) == expected and all(v == views[0] for v in views)


async def test_three_nodes_stay_consistent(cluster: Cluster) -> None:
    a, b, c = await cluster.node("a"), await cluster.node("b"), await cluster.node("c")
    nodes = [a, b, c]
    await connected(a, b)
    await connected(b, c)
    await connected(a, c)
    procs = {node.node_atom: [node.mailbox() for _ in range(3)] for node in nodes}
    for node in nodes:
        for i, proc in enumerate(procs[node.node_atom]):
            await node.pg_join(G, proc.pid)
            await node.pg_join((Atom("grp"), i), proc.pid)

    await wait_for(lambda: same_everywhere(nodes, 9))
    procs[a.node_atom][0].exit()
    await b.pg_leave(G, procs[b.node_atom][1].pid)
    await wait_for(lambda: same_everywhere(nodes, 7))
    await c.stop()
    await wait_for(lambda: same_everywhere([a, b], 4))
    for node in (a, b):
        assert sorted(map(repr, node.pg_get_members((Atom("grp"), 2)))) == sorted(
            [repr(procs[a.node_atom][2].pid), repr(procs[b.node_atom][2].pid)])
