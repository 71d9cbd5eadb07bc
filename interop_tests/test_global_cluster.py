"""``global`` in mixed clusters: OTP 25 + OTP 28 + two Python nodes (issue #6).

Joins in different orders must end in a full mesh (``connect_all``) where every name
registered anywhere is seen everywhere; a Python process that dies, and a Python node that
stops, take their names with them on every BEAM node; partitions end as OTP ends them
(``prevent_overlapping_partitions``: the nodes isolate) and reconnecting heals.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from interop_tests.beam import BeamNode, Epmd
from interop_tests.conftest import BeamNodeFactory, require_release
from interop_tests.test_global_beam import beam_eval, beam_whereis, pid_text, py_node, wait_for
from pyerl_node.node import Node
from pyerl_node.terms import Atom

NodeRef = BeamNode | Node


@pytest.fixture
async def pys(epmd: Epmd, cookie: str) -> AsyncIterator[list[Node]]:
    nodes = [py_node(epmd, cookie, "py1"), py_node(epmd, cookie, "py2")]
    for node in nodes:
        await node.start()
    try:
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


def name_of(node: NodeRef) -> str:
    return node.name if isinstance(node, BeamNode) else node.node_atom.name


async def connect(a: NodeRef, b: NodeRef) -> None:
    if isinstance(a, BeamNode):
        assert await beam_eval(a, f"net_kernel:connect_node('{name_of(b)}')") == "true"
    else:
        assert await a.connect(name_of(b))


async def sync_all(nodes: list[NodeRef]) -> None:
    for node in nodes:
        if isinstance(node, BeamNode):
            assert await beam_eval(node, "global:sync()") == "ok"
        else:
            await node.global_sync(timeout=15)


async def visible(node: NodeRef) -> set[str]:
    if isinstance(node, BeamNode):
        out = await beam_eval(node, "[atom_to_list(N) || N <- nodes()]")
        return set(eval(out.replace("\n", "")))  # a list of strings printed by ~p
    return {n.name for n in node.nodes()}


async def full_mesh(nodes: list[NodeRef], timeout: float = 15.0) -> None:
    names = {name_of(n) for n in nodes}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for node in nodes:
        while await visible(node) != names - {name_of(node)}:
            assert loop.time() < deadline, f"{name_of(node)} sees {await visible(node)}"
            await asyncio.sleep(0.05)


async def register_everywhere(nodes: list[NodeRef]) -> dict[str, str]:
    """Register ``n_<i>`` on node i (a process of that node); name -> pid text."""
    found: dict[str, str] = {}
    for i, node in enumerate(nodes):
        name = f"n_{i}"
        if isinstance(node, BeamNode):
            out = await beam_eval(node, f"""
                P = spawn(fun() -> receive stop -> ok end end),
                yes = global:register_name({name}, P), pid_to_list(P)""")
            found[name] = "." + out.strip('"<>').split(".", 1)[1] + ">"
        else:
            proc = node.mailbox()
            assert await node.global_register(name, proc.pid)
            found[name] = pid_text(proc.pid)
    return found


async def assert_seen_everywhere(nodes: list[NodeRef], names: dict[str, str]) -> None:
    for node in nodes:
        for name, text in names.items():
            if isinstance(node, BeamNode):
                assert text in await beam_whereis(node, name), (name_of(node), name)
            else:
                pid = node.global_whereis(name)
                assert pid is not None and pid_text(pid) == text, (name_of(node), name)


@pytest.mark.parametrize("order", ["py_first", "beam_first"])
async def test_four_node_mixed_cluster(
    order: str, beam_node: BeamNodeFactory, pys: list[Node]
) -> None:
    require_release("25")
    require_release("28")
    b25, b28 = beam_node("25"), beam_node("28")
    py1, py2 = pys
    if order == "py_first":
        # chain: py1 - b25, b28 - py1, py2 - b28
        await connect(py1, b25)
        await connect(b28, py1)
        await connect(py2, b28)
    else:
        # BEAM pair first, then py1 joins through b28, py2 through py1
        await connect(b25, b28)
        await connect(py1, b28)
        await connect(py2, py1)
    nodes: list[NodeRef] = [b25, b28, py1, py2]
    await full_mesh(nodes)
    await sync_all(nodes)
    names = await register_everywhere(nodes)
    await assert_seen_everywhere(nodes, names)

    # a Python process dies: its name vanishes on every node
    victim = py1.global_whereis("n_2")
    assert victim is not None
    proc = py1.registry.get(victim)
    assert proc is not None
    proc.exit(Atom("kill"))
    for node in (b25, b28):
        await wait_until_undefined(node, "n_2")
    await wait_for(lambda: py2.global_whereis("n_2") is None)

    # a Python node stops: its names vanish everywhere
    await py2.stop()
    for node in (b25, b28):
        await wait_until_undefined(node, "n_3")
    await wait_for(lambda: py1.global_whereis("n_3") is None)
    # and a BEAM registration still works with the remaining Python node in the cluster
    out = await beam_eval(b28, "global:register_name(late, spawn(fun() -> ok end))")
    assert out == "yes"


async def wait_until_undefined(beam: BeamNode, name: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await beam_whereis(beam, name) != "undefined":
        assert loop.time() < deadline, f"{name} still registered on {beam.name}"
        await asyncio.sleep(0.05)


async def test_three_nodes_python_joins_beam_pair(
    otp_release: str, beam_node: BeamNodeFactory, pys: list[Node]
) -> None:
    other = "28" if otp_release == "25" else "25"
    require_release(other)
    a, b = beam_node(otp_release), beam_node(other)
    py = pys[0]
    await connect(a, b)
    await sync_all([a, b])
    before = await register_everywhere([a, b])
    await connect(py, a)
    await full_mesh([a, b, py])
    await sync_all([a, b, py])
    await assert_seen_everywhere([a, b, py], before)
    proc = py.mailbox()
    assert await py.global_register("from_py", proc.pid)
    await assert_seen_everywhere([a, b, py], {"from_py": pid_text(proc.pid)})


@pytest.mark.parametrize("cut", ["beam_cuts_beam", "python_cuts_beam"])
async def test_partition_isolates_like_otp_and_heals(
    cut: str, beam_node: BeamNodeFactory, pys: list[Node]
) -> None:
    require_release("25")
    require_release("28")
    a, b = beam_node("25"), beam_node("28")
    py = pys[0]
    await connect(a, b)
    await connect(py, a)
    nodes: list[NodeRef] = [a, b, py]
    await full_mesh(nodes)
    await sync_all(nodes)
    names = await register_everywhere(nodes)
    await assert_seen_everywhere(nodes, names)

    # a loses b (or py loses b): prevent_overlapping_partitions isolates every node, as it
    # does with three BEAM nodes (GLOBAL.md §8.4)
    if cut == "beam_cuts_beam":
        assert await beam_eval(a, f"erlang:disconnect_node('{b.name}')") == "true"
    else:
        assert py.disconnect(b.name)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    for node in nodes:
        while await visible(node):
            assert loop.time() < deadline, f"{name_of(node)} still sees {await visible(node)}"
            await asyncio.sleep(0.05)
    # no name points to an unreachable pid; each keeps its own
    assert py.global_whereis("n_0") is None and py.global_whereis("n_1") is None
    assert py.global_whereis("n_2") is not None
    assert await beam_whereis(a, "n_1") == "undefined"
    assert await beam_whereis(a, "n_2") == "undefined"
    assert await beam_whereis(b, "n_0") == "undefined"
    assert await beam_whereis(b, "n_2") == "undefined"
    assert names["n_0"] in await beam_whereis(a, "n_0")
    assert names["n_1"] in await beam_whereis(b, "n_1")

    # reconnecting heals: py joins both, connect_all links a and b again
    await connect(py, a)
    await connect(py, b)
    await full_mesh(nodes)
    await sync_all(nodes)
    await assert_seen_everywhere(nodes, names)
