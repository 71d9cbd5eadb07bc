"""A node with no EPMD on its host starts the Python EPMD as a daemon that outlives it, and
real erl nodes use that daemon as their EPMD."""

from __future__ import annotations

import os
import signal
import time

from interop_tests.beam import LOCALHOST, BeamNode, free_port, unique_name
from interop_tests.conftest import require_release
from pyerl_node.node import Node
from pyerl_node.runtime.epmd_client import names


def _stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


async def test_the_daemon_outlives_the_node_and_serves_erl(cookie: str) -> None:
    require_release("28")
    port = free_port()
    node = Node(f"{unique_name('py')}@{LOCALHOST}", cookie, epmd_port=port)
    await node.start()
    daemon = node._epmd_daemon_pid
    assert daemon is not None
    try:
        assert [n for n, _ in await names(epmd_port=port)] == [node.name.alive]
        beam = BeamNode.start("28", f"{unique_name('beam')}@{LOCALHOST}", cookie=cookie,
                              epmd_port=port)
        try:
            assert await node.ping(beam.name)
            await node.stop()  # the node goes, the daemon and erl's registration stay
            assert [n for n, _ in await names(epmd_port=port)] == [beam.name.split("@")[0]]
            assert beam.eval("net_adm:names()").startswith("{ok,[{")
        finally:
            beam.stop()
    finally:
        await node.stop()
        _stop(daemon)
