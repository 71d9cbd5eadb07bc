"""Selective receive semantics of the mailbox."""

from __future__ import annotations

import asyncio

import pytest

from pyerl_node.proto.errors import CallTimeout, ProcessExit
from pyerl_node.proto.terms import Atom
from pyerl_node.runtime.mailbox import Mailbox


async def test_receive_takes_in_arrival_order() -> None:
    box = Mailbox()
    for i in range(3):
        box.put(i)
    assert [await box.receive() for _ in range(3)] == [0, 1, 2]


async def test_selective_receive_leaves_others_in_place() -> None:
    box = Mailbox()
    for msg in ("a", 1, "b", 2):
        box.put(msg)
    assert await box.receive(lambda m: isinstance(m, int)) == 1
    assert await box.receive(lambda m: isinstance(m, int)) == 2
    assert [await box.receive(), await box.receive()] == ["a", "b"]


async def test_waiting_receive_wakes_on_matching_message_only() -> None:
    box = Mailbox()
    task = asyncio.create_task(box.receive(lambda m: m == "wanted", timeout=2))
    await asyncio.sleep(0)
    box.put("other")
    await asyncio.sleep(0)
    assert not task.done()
    box.put("wanted")
    assert await task == "wanted"
    assert await box.receive() == "other"


async def test_timeout_raises_call_timeout_and_keeps_messages() -> None:
    box = Mailbox()
    box.put("x")
    with pytest.raises(CallTimeout):
        await box.receive(lambda m: m == "y", timeout=0.05)
    assert box.receive_nowait() == (True, "x")
    assert box.receive_nowait() == (False, None)


async def test_close_wakes_receiver_with_exit_and_drops_later_messages() -> None:
    box = Mailbox()
    task = asyncio.create_task(box.receive())
    await asyncio.sleep(0)
    box.close(ProcessExit(Atom("killed")))
    with pytest.raises(ProcessExit) as info:
        await task
    assert info.value.reason is Atom("killed")
    box.put("late")
    assert len(box) == 0
