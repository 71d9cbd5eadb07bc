"""Phoenix.PubSub among Python nodes (pyerl_node/services/phoenix.py): the PG2 adapter's names
and groups, broadcasts of every kind, order per sender, subscriber bookkeeping, dispatchers,
bad forwards, and the blocking twin's verbs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Iterable

import pytest

from pyerl_node import sync
from pyerl_node.node import Node
from pyerl_node.proto.errors import LocalProtocolError
from pyerl_node.proto.terms import Atom, Pid, Term
from pyerl_node.pubsub import BlockingPubSub, PubSub
from pyerl_node.runtime.process import Process
from pyerl_node.services.phoenix import (
    DEFAULT_DISPATCHER,
    FORWARD_TO_LOCAL,
    PUBSUB_SCOPE,
    adapter_groups,
    pubsub_atom,
)
from tests.conftest import free_port

NAME = "MyApp.PubSub"
ADAPTER = Atom("Elixir.MyApp.PubSub.Adapter")


async def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def joined(a: Node, b: Node, group: Atom = ADAPTER) -> None:
    """Connect and wait until each node lists the other's worker in ``group``."""
    assert await a.connect(b.node_atom)
    for x, y in ((a, b), (b, a)):
        await wait_for(lambda x=x, y=y: any(  # type: ignore[misc]
            p.node is y.node_atom for p in x.pg_get_members(group, scope=PUBSUB_SCOPE)))


async def drain(proc: Process, timeout: float = 0.2) -> list[Term]:
    """Everything that reaches ``proc`` within ``timeout`` of quiet."""
    got: list[Term] = []
    while True:
        try:
            got.append(await proc.receive(timeout=timeout))
        except Exception:  # CallTimeout: quiet for long enough
            return got


def test_names_as_elixir_makes_them() -> None:
    assert pubsub_atom("MyApp.PubSub") is Atom("Elixir.MyApp.PubSub")
    assert pubsub_atom("Elixir.MyApp.PubSub") is Atom("Elixir.MyApp.PubSub")
    assert pubsub_atom(":my_pubsub") is Atom("my_pubsub")
    assert pubsub_atom(Atom("x")) is Atom("x")
    assert adapter_groups(Atom("Elixir.MyApp.PubSub"), 3) == (
        ADAPTER, Atom("Elixir.MyApp.PubSub.Adapter_2"), Atom("Elixir.MyApp.PubSub.Adapter_3"))
    # Module.concat(:my_pubsub, "Adapter")
    assert adapter_groups(Atom("my_pubsub"), 1) == (Atom("Elixir.my_pubsub.Adapter"),)


async def test_workers_are_registered_and_joined(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    ps = a.pubsub(NAME, pool_size=3, broadcast_pool_size=2)
    assert ps.groups == adapter_groups(Atom("Elixir.MyApp.PubSub"), 3)
    assert ps.broadcast_groups == ps.groups[:2]
    for group in ps.groups:
        worker = a.whereis(group)
        assert worker is not None
        assert a.pg_get_local_members(group, scope=PUBSUB_SCOPE) == [worker]
    with pytest.raises(LocalProtocolError, match="already runs"):
        a.pubsub(NAME)
    await ps.stop()
    assert a.whereis(ADAPTER) is None
    await asyncio.sleep(0.05)  # the scope takes the workers' DOWNs
    assert a.pg_get_members(ADAPTER, scope=PUBSUB_SCOPE) == []
    a.pubsub(NAME)  # the name is free again


@pytest.mark.parametrize(("pool", "broadcast"), [(0, None), (1, 2), (2, 0)])
async def test_bad_pool_sizes(pair: tuple[Node, Node], pool: int, broadcast: int | None) -> None:
    with pytest.raises(LocalProtocolError, match="pool_size"):
        pair[0].pubsub(NAME, pool_size=pool, broadcast_pool_size=broadcast)


async def test_broadcasts_of_every_kind(pair: tuple[Node, Node]) -> None:
    a, b = pair
    pa, pb = a.pubsub(NAME), b.pubsub(NAME)
    await joined(a, b)
    sa, sb, sb_other = a.mailbox(), b.mailbox(), b.mailbox()
    await pa.subscribe("room", sa.pid)
    await pb.subscribe(b"room", sb.pid)
    await pb.subscribe("elsewhere", sb_other.pid)

    await pa.broadcast("room", (Atom("hello"), 1))
    assert await sa.receive(timeout=5) == (Atom("hello"), 1)  # the plain message
    assert await sb.receive(timeout=5) == (Atom("hello"), 1)

    await pa.broadcast_from(sa.pid, "room", 2)  # skips the sender here, not remotely
    assert await sb.receive(timeout=5) == 2
    await pa.local_broadcast("room", 3)
    assert await sa.receive(timeout=5) == 3
    await pa.local_broadcast_from(sa.pid, "room", 4)
    await pa.direct_broadcast(b.node_atom, "room", 5)
    assert await sb.receive(timeout=5) == 5
    await pa.direct_broadcast(a.node_atom, "room", 6)
    assert await sa.receive(timeout=5) == 6
    assert await drain(sa) == [] and await drain(sb) == [] and await drain(sb_other) == []
    assert pb.subscribers("room") == [sb.pid]


async def test_messages_of_one_sender_arrive_in_order(pair: tuple[Node, Node]) -> None:
    a, b = pair
    pa, pb = a.pubsub(NAME, pool_size=4), b.pubsub(NAME, pool_size=4)
    await joined(a, b)
    sub = b.mailbox()
    await pb.subscribe("t", sub.pid)
    sender = a.mailbox()
    n = 300
    for i in range(n):
        if i % 2:
            await pa.broadcast("t", i)
        else:
            await pa.broadcast_from(sender.pid, "t", i)
    got = [await sub.receive(timeout=5) for _ in range(n)]
    # two senders (the node itself, and ``sender``), maybe through two workers: each in order
    assert [x for x in got if x % 2] == list(range(1, n, 2))
    assert [x for x in got if not x % 2] == list(range(0, n, 2))


async def test_subscriptions_duplicate_unsubscribe_and_exit(pair: tuple[Node, Node]) -> None:
    a, b = pair
    ps = a.pubsub(NAME)
    sub = a.mailbox()
    await ps.subscribe("t", sub.pid)
    await ps.subscribe("t", sub.pid)  # twice: two deliveries, as with Elixir's Registry
    await ps.subscribe("u", sub.pid)
    await ps.broadcast("t", Atom("m"))
    assert await drain(sub) == [Atom("m"), Atom("m")]
    await ps.unsubscribe("t", sub.pid)  # every subscription of that topic
    await ps.broadcast("t", Atom("m"))
    assert await drain(sub) == []
    assert ps.subscribers("u") == [sub.pid]
    sub.exit()
    await wait_for(lambda: ps.subscribers("u") == [])
    with pytest.raises(LocalProtocolError, match="not a live process"):
        await ps.subscribe("t", b.mailbox().pid)  # subscribers are local processes
    with pytest.raises(LocalProtocolError, match="topic"):
        await ps.subscribe(42, a.mailbox().pid)  # type: ignore[arg-type]


async def test_dispatchers(pair: tuple[Node, Node], caplog: pytest.LogCaptureFixture) -> None:
    a, b = pair
    fast = Atom("Elixir.MyApp.Fastlane")
    calls: list[tuple[list[tuple[Pid, Term]], Pid | None, Term]] = []

    def fastlane(entries: list[tuple[Pid, Term]], from_: Pid | None,
                 message: Term) -> Iterable[tuple[Pid, Term]]:
        calls.append((entries, from_, message))
        return [(pid, (meta, message)) for pid, meta in entries]

    pa, pb = a.pubsub(NAME), b.pubsub(NAME, dispatchers={fast: fastlane})
    await joined(a, b)
    sub = b.mailbox()
    await pb.subscribe("t", sub.pid, metadata=Atom("meta"))
    await pa.broadcast("t", 1, fast)  # from a BEAM-like node: b's stand-in runs
    assert await sub.receive(timeout=5) == (Atom("meta"), 1)
    assert calls == [([(sub.pid, Atom("meta"))], None, 1)]
    unknown = Atom("Elixir.Unknown.Dispatcher")
    with caplog.at_level(logging.WARNING, "pyerl_node.pubsub"):
        await pa.broadcast("t", 2, unknown)
        await pa.broadcast("t", 3, unknown)
        assert [await sub.receive(timeout=5) for _ in range(2)] == [2, 3]  # plain delivery
    assert sum("no Python dispatcher" in r.getMessage() for r in caplog.records) == 1


async def test_a_failing_dispatcher_harms_nothing(pair: tuple[Node, Node]) -> None:
    a, b = pair
    broken = Atom("Elixir.Broken")

    def fails(entries: list[tuple[Pid, Term]], from_: Pid | None,
              message: Term) -> Iterable[tuple[Pid, Term]]:
        raise RuntimeError("boom")

    pa, pb = a.pubsub(NAME), b.pubsub(NAME, dispatchers={broken: fails})
    await joined(a, b)
    sub = b.mailbox()
    await pb.subscribe("t", sub.pid)
    await pa.broadcast("t", 1, broken)
    await pa.broadcast("t", 2)
    assert await sub.receive(timeout=5) == 2
    assert a.nodes() == [b.node_atom]  # the connection survived


async def test_bad_forwards_are_dropped_once_logged(
        pair: tuple[Node, Node], caplog: pytest.LogCaptureFixture) -> None:
    a, b = pair
    pb = b.pubsub(NAME)
    sub = b.mailbox()
    await pb.subscribe("t", sub.pid)
    evil = a.mailbox()
    with caplog.at_level(logging.WARNING, "pyerl_node.pubsub"):
        for message in [(FORWARD_TO_LOCAL, "t", 1, DEFAULT_DISPATCHER),  # a str is a binary
                        (FORWARD_TO_LOCAL, [116], 2, DEFAULT_DISPATCHER),  # a charlist: no
                        (FORWARD_TO_LOCAL, [116], 3, DEFAULT_DISPATCHER),
                        (FORWARD_TO_LOCAL, b"t", 4, b"not an atom"),
                        Atom("noise"), (Atom("other"), 1),
                        (FORWARD_TO_LOCAL, b"t", 5, DEFAULT_DISPATCHER)]:
            await evil.send((ADAPTER, b.node_atom), message)
        assert [await sub.receive(timeout=5) for _ in range(2)] == [1, 5]
    dropped = [r for r in caplog.records if "dropped a forward_to_local" in r.getMessage()]
    assert len(dropped) == 2  # once per kind of bad field
    assert b.whereis(ADAPTER) is not None


def test_the_blocking_pubsub_has_every_verb() -> None:
    def verbs(cls: type) -> dict[str, list[tuple[str, object, object]]]:
        return {name: [(p.name, p.kind, p.default)
                       for p in inspect.signature(member).parameters.values()]
                for name, member in inspect.getmembers(cls, inspect.isfunction)
                if not name.startswith("_")}

    wanted = {k: v for k, v in verbs(PubSub).items() if k not in ("start", "worker_message")}
    assert verbs(BlockingPubSub) == wanted


def test_the_blocking_node_runs_pg_and_pubsub() -> None:
    port = free_port()
    with sync.Node("blk_a@127.0.0.1", "cookie", epmd_port=port, embedded_epmd=True) as a, \
            sync.Node("blk_b@127.0.0.1", "cookie", epmd_port=port) as b:
        pa, pb = a.pubsub(NAME), b.pubsub(NAME)
        assert a.connect(b.node_atom)
        box = b.mailbox()
        b.pg_join(Atom("g"), box.pid)
        pb.subscribe("t", box.pid)
        deadline = time.monotonic() + 10
        while not (a.pg_get_members(Atom("g")) == [box.pid]
                   and a.pg_get_members(ADAPTER, scope=PUBSUB_SCOPE) != [a.whereis(ADAPTER)]):
            assert time.monotonic() < deadline, "b's members never reached a"
            time.sleep(0.01)
        pa.broadcast("t", Atom("hi"))
        assert box.receive(timeout=5) is Atom("hi")
        assert b.pg_leave(Atom("g"), box.pid) is True
        assert pb.subscribers("t") == [box.pid]
        pb.stop()


async def test_members_on_unconnected_nodes_are_skipped_not_dialled(
        pair: tuple[Node, Node], caplog: pytest.LogCaptureFixture) -> None:
    a, b = pair
    pa, pb = a.pubsub(NAME), b.pubsub(NAME)
    await joined(a, b)
    # b's scope announces a member on a node nobody is connected to
    ghost = Pid(Atom("ghost@127.0.0.1"), 5, 0, 1)
    b_scope, a_scope = b.whereis(PUBSUB_SCOPE), a.whereis(PUBSUB_SCOPE)
    assert b_scope is not None and a_scope is not None
    await b.send(a_scope, (Atom("join"), b_scope, ADAPTER, ghost), sender=b_scope)
    await wait_for(lambda: ghost in a.pg_get_members(ADAPTER, scope=PUBSUB_SCOPE))
    sub = b.mailbox()
    await pb.subscribe("t", sub.pid)
    with caplog.at_level(logging.WARNING, "pyerl_node.pubsub"):
        await pa.broadcast("t", 1)
        await pa.broadcast("t", 2)
    assert [await sub.receive(timeout=5) for _ in range(2)] == [1, 2]  # b still gets them
    assert sum("not connected" in r.getMessage() for r in caplog.records) == 1
    await asyncio.sleep(0.1)
    assert a.nodes("known") == [a.node_atom, b.node_atom]  # nothing dialled the ghost
