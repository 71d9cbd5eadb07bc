"""Mailbox bounds (``max_queue``, long-queue warnings) and the accounting of connection bytes."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pyerl_node.node import Node
from pyerl_node.proto.errors import LocalProtocolError, ProcessExit
from pyerl_node.proto.terms import Atom
from pyerl_node.runtime.mailbox import LONG_QUEUE, Mailbox
from pyerl_node.runtime.process import Process

DOWN = Atom("DOWN")
EXIT = Atom("EXIT")
MAX_QUEUE = Atom("max_queue")


class Source:
    """A connection stand-in: counts its bytes that wait in mailboxes."""

    def __init__(self) -> None:
        self.waiting = 0

    def queued(self, size: int) -> None:
        self.waiting += size

    def delivered(self, size: int) -> None:
        self.waiting -= size


async def test_a_connections_bytes_count_until_received() -> None:
    box, source = Mailbox(), Source()
    box.put_from("a", source, 100)
    box.put("local")
    box.put_from("b", source, 50)
    assert (source.waiting, box.queued_bytes) == (150, 150)
    assert await box.receive(lambda m: m == "b") == "b"  # selective: from the middle
    assert (source.waiting, box.queued_bytes) == (100, 100)
    assert await box.receive() == "a"
    assert await box.receive() == "local"
    assert (source.waiting, box.queued_bytes) == (0, 0)


def test_a_dead_mailbox_gives_its_bytes_back() -> None:
    box, source = Mailbox(), Source()
    for _ in range(3):
        box.put_from("x", source, 10)
    box.close(ProcessExit(Atom("normal")))
    assert source.waiting == 0
    box.put_from("late", source, 10)  # dropped: a dead process's messages vanish
    assert source.waiting == 0


async def test_max_queue_ends_the_process_and_links_and_monitors_see_it(
        pair: tuple[Node, Node], caplog: pytest.LogCaptureFixture) -> None:
    a, _ = pair
    watcher = a.mailbox(trap_exit=True)
    bounded = a.mailbox(max_queue=3)
    a.link(watcher.pid, bounded.pid)
    ref = a.monitor(watcher.pid, bounded.pid)
    with caplog.at_level(logging.ERROR, "pyerl_node"):
        for i in range(3):
            await a.send(bounded.pid, i)
        assert bounded.alive
        await a.send(bounded.pid, 3)
    assert not bounded.alive and bounded.exit_reason is MAX_QUEUE
    got = {await watcher.receive(timeout=2) for _ in range(2)}
    assert got == {(EXIT, bounded.pid, MAX_QUEUE), (DOWN, ref, Atom("process"), bounded.pid,
                                                     MAX_QUEUE)}
    assert "exceeded max_queue (3 messages)" in caplog.text


async def test_spawned_processes_take_max_queue_too(pair: tuple[Node, Node]) -> None:
    a, b = pair

    async def never_reads(proc: Process) -> None:
        await asyncio.sleep(30)

    proc = a.spawn(never_reads, name="slow", max_queue=5)
    watcher = a.mailbox()
    ref = a.monitor(watcher.pid, proc.pid)
    for i in range(6):  # over the connection from b
        await b.send((Atom("slow"), a.node_atom), i)
    assert await watcher.receive(timeout=5) == (DOWN, ref, Atom("process"), proc.pid,
                                                MAX_QUEUE)


async def test_a_long_queue_is_worth_one_warning_a_minute(
        pair: tuple[Node, Node], caplog: pytest.LogCaptureFixture) -> None:
    a, _ = pair
    box = a.mailbox(name="nobody_reads")
    with caplog.at_level(logging.WARNING, "pyerl_node"):
        for i in range(LONG_QUEUE + 500):
            await a.send(box.pid, i)
    lines = [r for r in caplog.records if "messages in its queue" in r.getMessage()]
    assert len(lines) == 1
    assert f"has {LONG_QUEUE} messages" in lines[0].getMessage()
    assert "(nobody_reads)" in lines[0].getMessage()
    assert box.alive  # without max_queue, only a warning


async def test_max_queue_must_be_positive(pair: tuple[Node, Node]) -> None:
    with pytest.raises(LocalProtocolError, match="max_queue"):
        pair[0].mailbox(max_queue=0)
