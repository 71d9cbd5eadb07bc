"""Processes, links, monitors and calls on Python nodes over real loopback connections.

Two Python nodes (and the Python EPMD, embedded on a free port) stand in for the network; the
same behaviour against real BEAM nodes is in ``interop_tests/test_node_*.py``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable

import pytest

from pyerl_node.gen import From, GenServer, start_server
from pyerl_node.node import Node
from pyerl_node.proto.errors import CallTimeout, NodeDown, NoProc, ProcessExit
from pyerl_node.proto.terms import Atom, Pid, Term
from pyerl_node.runtime import genserver as gen
from pyerl_node.runtime.flush import Flush
from pyerl_node.runtime.process import Process

EXIT = Atom("EXIT")
DOWN = Atom("DOWN")


def _links(node: Node, pid: Pid) -> set[Pid]:
    proc = node._kernel.process(pid)
    return set() if proc is None else set(proc.links)


class Echo(GenServer):
    async def handle_call(self, request: Term, from_: From) -> Term:
        if request == Atom("crash"):
            raise RuntimeError("asked to crash")
        if request == Atom("slow"):
            await asyncio.sleep(1)
        return (Atom("echo"), request)

    async def handle_cast(self, message: Term) -> None:
        target, payload = message
        await self.process.send(target, payload)


async def test_connect_ping_and_nodes(pair: tuple[Node, Node]) -> None:
    a, b = pair
    assert await a.ping(b.node_atom)
    assert a.nodes() == [b.node_atom]
    assert b.nodes() == [a.node_atom]


async def test_ping_unknown_node_is_pang(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    assert not await a.ping("nobody@127.0.0.1", timeout=3)


async def test_send_to_registered_name_and_pid(pair: tuple[Node, Node]) -> None:
    a, b = pair
    box = b.mailbox(name="inbox")
    await a.send((Atom("inbox"), b.node_atom), "by name")
    assert await box.receive(timeout=5) == b"by name"
    await a.send(box.pid, [1, 2, 3])
    assert await box.receive(timeout=5) == [1, 2, 3]


async def test_gen_server_call_and_cast(pair: tuple[Node, Node]) -> None:
    a, b = pair
    start_server(b, Echo(), name="echo")
    assert await a.call((Atom("echo"), b.node_atom), Atom("hi")) == (Atom("echo"), Atom("hi"))
    me = a.mailbox()
    await a.cast((Atom("echo"), b.node_atom), (me.pid, "casted"))
    assert await me.receive(timeout=5) == b"casted"


async def test_call_errors(pair: tuple[Node, Node]) -> None:
    a, b = pair
    start_server(b, Echo(), name="echo")
    with pytest.raises(NoProc):
        await a.call((Atom("nosuch"), b.node_atom), 1, timeout=5)
    with pytest.raises(CallTimeout):
        await a.call((Atom("echo"), b.node_atom), Atom("slow"), timeout=0.2)
    with pytest.raises(ProcessExit) as info:
        await a.call((Atom("echo"), b.node_atom), Atom("crash"), timeout=5)
    assert info.value.reason[0] is Atom("python_exception")
    with pytest.raises(NodeDown):
        await a.call((Atom("x"), Atom("nobody@127.0.0.1")), 1, timeout=5)


async def test_monitor_remote_process_down_reason(pair: tuple[Node, Node]) -> None:
    a, b = pair
    target = b.mailbox()
    watcher = a.mailbox()
    await a.connect(b.node_atom)
    ref = watcher.monitor(target.pid)
    await asyncio.sleep(0.1)  # let the MONITOR_P arrive before the exit
    target.exit(Atom("bye"))
    assert await watcher.receive(timeout=5) == (DOWN, ref, Atom("process"), target.pid, Atom("bye"))


async def test_monitor_unknown_remote_name_is_noproc(pair: tuple[Node, Node]) -> None:
    a, b = pair
    watcher = a.mailbox()
    ref = watcher.monitor((Atom("ghost"), b.node_atom))
    msg = await watcher.receive(timeout=5)
    assert msg == (DOWN, ref, Atom("process"), (Atom("ghost"), b.node_atom), Atom("noproc"))


async def test_link_propagates_abnormal_exit_and_trap_exit(pair: tuple[Node, Node]) -> None:
    a, b = pair
    trapper = a.mailbox(trap_exit=True)
    victim = a.mailbox()
    remote = b.mailbox()
    await a.connect(b.node_atom)
    trapper.link(remote.pid)
    victim.link(remote.pid)
    await asyncio.sleep(0.1)
    remote.exit(Atom("boom"))
    assert await trapper.receive(timeout=5) == (EXIT, remote.pid, Atom("boom"))
    for _ in range(50):
        if not victim.alive:
            break
        await asyncio.sleep(0.02)
    assert victim.exit_reason is Atom("boom")


async def test_normal_exit_does_not_kill_linked(pair: tuple[Node, Node]) -> None:
    a, b = pair
    survivor = a.mailbox()
    remote = b.mailbox()
    await a.connect(b.node_atom)
    survivor.link(remote.pid)
    await asyncio.sleep(0.1)
    remote.exit(Atom("normal"))
    await asyncio.sleep(0.2)
    assert survivor.alive


async def test_unlink_stops_exit_propagation(pair: tuple[Node, Node]) -> None:
    a, b = pair
    local = a.mailbox()
    remote = b.mailbox()
    await a.connect(b.node_atom)
    local.link(remote.pid)
    await asyncio.sleep(0.1)
    local.unlink(remote.pid)
    await asyncio.sleep(0.1)
    assert _links(a, local.pid) == set() and _links(b, remote.pid) == set()
    remote.exit(Atom("boom"))
    await asyncio.sleep(0.2)
    assert local.alive


async def test_exit2_kill_is_untrappable(pair: tuple[Node, Node]) -> None:
    a, b = pair
    target = b.mailbox(trap_exit=True)
    sender = a.mailbox()
    a.exit(sender.pid, target.pid, Atom("soft"))  # connects first, as exit/2 does
    assert await target.receive(timeout=5) == (EXIT, sender.pid, Atom("soft"))
    a.exit(sender.pid, target.pid, Atom("kill"))
    for _ in range(50):
        if not target.alive:
            break
        await asyncio.sleep(0.02)
    assert target.exit_reason is Atom("killed")


async def test_node_down_fires_noconnection_and_nodedown(pair: tuple[Node, Node]) -> None:
    a, b = pair
    remote = b.mailbox()
    watcher = a.mailbox(trap_exit=True)
    await a.connect(b.node_atom)
    ref = watcher.monitor(remote.pid)
    watcher.link(remote.pid)
    a.monitor_node(watcher.pid, b.node_atom)
    await asyncio.sleep(0.1)
    await b.stop()
    got: list[Term] = [await watcher.receive(timeout=5) for _ in range(3)]
    assert (DOWN, ref, Atom("process"), remote.pid, Atom("noconnection")) in got
    assert (EXIT, remote.pid, Atom("noconnection")) in got
    assert (Atom("nodedown"), b.node_atom) in got


async def test_spawned_process_lifecycle(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    seen: list[Term] = []

    async def body(proc: Process) -> None:
        seen.append(await proc.receive(timeout=5))
        raise ProcessExit(Atom("done"))

    proc = a.spawn(body, name="worker")
    watcher = a.mailbox()
    ref = watcher.monitor(proc.pid)
    assert a.whereis("worker") == proc.pid
    await a.send("worker", "go")
    assert await watcher.receive(timeout=5) == (DOWN, ref, Atom("process"), proc.pid, Atom("done"))
    assert seen == ["go"]  # local sends pass the Python object itself, no codec round trip
    assert a.whereis("worker") is None
    # a message to a dead pid is dropped silently, a monitor of it fires noproc
    await a.send(proc.pid, "late")
    ref2 = watcher.monitor(proc.pid)
    noproc = (DOWN, ref2, Atom("process"), proc.pid, Atom("noproc"))
    assert await watcher.receive(timeout=5) == noproc


async def test_simultaneous_connect_ends_in_one_connection(pair: tuple[Node, Node]) -> None:
    a, b = pair
    results = await asyncio.gather(a.connect(b.node_atom), b.connect(a.node_atom))
    assert list(results) == [True, True]
    await asyncio.sleep(0.2)
    assert a.nodes() == [b.node_atom] and b.nodes() == [a.node_atom]
    assert await a.ping(b.node_atom) and await b.ping(a.node_atom)


async def test_wrong_cookie_is_refused_and_node_keeps_running(pair: tuple[Node, Node]) -> None:
    a, b = pair
    intruder = Node(f"x{secrets.token_hex(3)}@127.0.0.1", "wrong", epmd_port=a._kernel.epmd_port)
    async with intruder:
        assert not await intruder.ping(a.node_atom, timeout=3)
    assert await a.ping(b.node_atom)


async def test_gen_call_helper_direct(pair: tuple[Node, Node]) -> None:
    a, b = pair
    srv = start_server(b, Echo())
    assert await gen.call(a._kernel, srv.pid, 7) == (Atom("echo"), 7)
    assert isinstance(srv.pid, Pid)


async def test_alias_routes_until_unaliased_or_exit(pair: tuple[Node, Node]) -> None:
    a, b = pair
    owner = b.mailbox()
    alias = b.alias(owner)
    await a.send(alias, "via alias")  # ALIAS_SEND over the wire
    assert await owner.receive(timeout=5) == b"via alias"
    b.unalias(alias)
    await a.send(alias, "dropped")
    await a.send(owner.pid, "direct")
    assert await owner.receive(timeout=5) == b"direct"  # the aliased message never arrived
    second = b.alias(owner)
    owner.exit(Atom("normal"))
    assert not owner.aliases
    await b.send(second, "to nobody")  # dropped silently, nothing raised


async def test_concurrent_calls_get_their_own_replies(pair: tuple[Node, Node]) -> None:
    a, b = pair
    start_server(b, Echo(), name="echo")
    dest = (Atom("echo"), b.node_atom)
    with pytest.raises(CallTimeout):
        await a.call(dest, Atom("slow"), timeout=0.1)  # its reply comes late and is dropped
    replies = await asyncio.gather(*(a.call(dest, i) for i in range(50)))
    assert replies == [(Atom("echo"), i) for i in range(50)]


async def test_each_call_times_out_at_its_own_deadline(pair: tuple[Node, Node]) -> None:
    # The pending calls share one timer: each one still fails at its own timeout, in the
    # order of their deadlines, and an answered call is not touched by the others' expiry.
    a, b = pair
    silent = b.mailbox(name="silent")  # never answers
    start_server(b, Echo(), name="echo")
    loop = asyncio.get_running_loop()
    start = loop.time()
    ended: dict[float, float] = {}

    async def unanswered(timeout: float) -> None:
        with pytest.raises(CallTimeout):
            await a.call((Atom("silent"), b.node_atom), "hello", timeout=timeout)
        ended[timeout] = loop.time() - start

    timeouts = [0.3, 0.1, 0.5, 0.2]
    answered = asyncio.create_task(a.call((Atom("echo"), b.node_atom), Atom("slow"),
                                          timeout=5.0))
    await asyncio.gather(*(unanswered(t) for t in timeouts))
    assert sorted(ended, key=ended.__getitem__) == sorted(timeouts)
    for timeout, took in ended.items():
        assert timeout - 0.01 <= took < timeout + 0.5, (timeout, took)
    assert await answered == (Atom("echo"), Atom("slow"))  # (its own deadline is far off)
    assert len(silent.mailbox) == len(timeouts)  # the requests got there


async def test_calls_past_their_deadlines_fail_in_deadline_order_after_a_late_loop() -> None:
    loop = asyncio.get_running_loop()
    deadlines = gen._Deadlines()
    failed: list[float] = []

    def note(timeout: float) -> Callable[[asyncio.Future[Term]], None]:
        def done(waiter: asyncio.Future[Term]) -> None:
            assert isinstance(waiter.exception(), gen._ExpiredError)
            failed.append(timeout)
        return done

    for timeout in (0.03, 0.01, 0.05, 0.02):
        waiter: asyncio.Future[Term] = loop.create_future()
        waiter.add_done_callback(note(timeout))
        deadlines.add(waiter, timeout)
    time.sleep(0.1)  # the loop is late: every deadline passed before its timer runs
    await asyncio.sleep(0.01)
    assert failed == [0.01, 0.02, 0.03, 0.05]


async def test_a_finished_call_leaves_no_monitor_behind(pair: tuple[Node, Node]) -> None:
    # The demonitor of a call waits for another write (Flush.LATER), but not for long: with
    # nothing else sent, the server's side forgets the monitor within a few milliseconds.
    a, b = pair
    srv = start_server(b, Echo(), name="echo")
    await a.connect(b.node_atom)
    await a.global_sync(timeout=5)  # then nothing else is sent that could carry it
    await b.global_sync(timeout=5)
    await asyncio.sleep(0.2)
    assert await a.call((Atom("echo"), b.node_atom), 1) == (Atom("echo"), 1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2
    while srv.monitored_by:
        assert loop.time() < deadline, srv.monitored_by
        await asyncio.sleep(0.001)
    assert loop.time() < deadline - 1.5  # long before the next tick could have carried it


async def test_flush_now_writes_before_the_loop_turns(pair: tuple[Node, Node]) -> None:
    a, b = pair
    box = b.mailbox(name="inbox")
    await a.send((Atom("inbox"), b.node_atom), "warm-up")
    await box.receive(timeout=5)
    channel = a._kernel.connected_channel(b.node_atom)
    assert channel is not None
    await a.send((Atom("inbox"), b.node_atom), "soon")
    assert channel.queued_bytes > 0  # still queued
    await a.send((Atom("inbox"), b.node_atom), "now", flush=Flush.NOW)
    assert channel.queued_bytes == 0  # both written, in order
    assert [await box.receive(timeout=5) for _ in range(2)] == [b"soon", b"now"]
