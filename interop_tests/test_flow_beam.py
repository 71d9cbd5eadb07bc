"""Backpressure towards a real BEAM sender: while a Python mailbox nobody reads holds more than
the high-water mark of a connection's bytes, the node stops reading that connection, the BEAM
sender sees busy_dist_port (as with a slow BEAM), memory stays bounded, and once the mailbox is
read every message arrives, in order."""

from __future__ import annotations

import asyncio

import pytest

from interop_tests.beam import LOCALHOST, Epmd, unique_name
from interop_tests.conftest import BeamNodeFactory
from pyerl_node.node import Node
from pyerl_node.proto.terms import Atom
from pyerl_node.runtime import channel as channel_module

COUNT = 30_000  # 30 MiB of 1 KiB messages


async def test_a_beam_sender_is_held_back_and_nothing_is_lost(
        beam_node: BeamNodeFactory, otp_release: str, epmd: Epmd, cookie: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel_module, "FLOW_HIGH", 2 << 20)
    monkeypatch.setattr(channel_module, "FLOW_LOW", 1 << 20)
    beam = beam_node(otp_release)
    async with Node(f"{unique_name('py')}@{LOCALHOST}", cookie, epmd_port=epmd.port,
                    start_epmd=False) as py:
        box = py.mailbox(name="slow")
        assert await py.ping(beam.name)
        await beam.eval_async(
            "Self = self(), Mon = spawn(fun() -> erlang:system_monitor(self(), "
            "[busy_dist_port]), receive stop -> ok end end), register(mon, Mon), "
            "Parent = spawn(fun() -> receive go -> ok end, Bin = binary:copy(<<1>>, 1024), "
            f"[{{slow, '{py.node_atom.name}'}} ! {{N, Bin}} || N <- lists:seq(1, {COUNT})], "
            "receive stop -> ok end end), register(flooder, Parent), Parent ! go, ok")
        inbound = py._kernel.connected_channel(Atom(beam.name))
        assert inbound is not None
        async with asyncio.timeout(30):
            while "flow" not in inbound._pauses:
                await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)
        held = len(box.mailbox)
        assert held < COUNT  # the rest waits in the BEAM, not in Python
        assert box.mailbox.queued_bytes < 4 << 20  # bounded: about the mark
        busy = await beam.eval_async(
            "erlang:process_info(whereis(mon), messages)")
        assert "busy_dist_port" in busy  # the sender felt it, as with a slow BEAM
        received = [await box.receive(timeout=30) for _ in range(COUNT)]
        assert [m[0] for m in received] == list(range(1, COUNT + 1))
        assert all(m[1] == b"\x01" * 1024 for m in received)
        assert not inbound._pauses
        await beam.eval_async("flooder ! stop, mon ! stop, ok")
