"""``global`` in mixed clusters: OTP 25 + OTP 28 + two Python nodes (issue #6).

Joins in different orders must end in a full mesh (``connect_all``) where every name
registered anywhere is seen everywhere; a Python process that dies, and a Python node that
stops, take their names with them on every BEAM node; partitions end as OTP ends them
(``prevent_overlapping_partitions``: partitions that never overlap) and reconnecting heals.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from interop_tests.beam import BeamNode, Epmd
from interop_tests.conftest import BeamNodeFactory, require_release
from interop_tests.test_global_beam import beam_eval, beam_whereis, pid_text, py_node, wait_for
from pyerl_node.node import Node
from pyerl_node.proto.terms import Atom

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


async def settled_partitions(nodes: list[NodeRef], timeout: float = 15.0,
                             quiet: float = 1.0) -> dict[str, set[str]]:
    """Wait until the visibility graph is a set of disjoint cliques (no overlapping
    partitions) that stays the same for ``quiet`` seconds; node -> the nodes it sees."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    stable_since, last = loop.time(), None
    while True:
        views = {name_of(n): await visible(n) for n in nodes}
        cliques = all(views[y] | {y} == views[x] | {x} for x in views for y in views[x])
        now = loop.time()
        if not cliques or views != last:
            stable_since, last = now, views
        elif now - stable_since >= quiet:
            return views
        assert now < deadline, f"partitions overlap or keep changing: {views}"
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
    proc = py1._kernel.process(victim)
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
async def test_partition_splits_without_overlap_and_heals(
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

    # a (or py) loses b: prevent_overlapping_partitions splits the cluster into
    # partitions that do not overlap (docs/protocol/global.md §8.4). Usually every node ends
    # isolated, as with three BEAM nodes; when a remove_connection overtakes a nodedown, OTP itself
    # keeps one pair together. Either way a and b end apart and each name lives on in its partition.
    if cut == "beam_cuts_beam":
        cutter: NodeRef = a
        assert await beam_eval(a, f"erlang:disconnect_node('{b.name}')") == "true"
    else:
        cutter = py
        assert py.disconnect(b.name)
    views = await settled_partitions(nodes)
    assert name_of(b) not in views[name_of(cutter)], views
    for node in nodes:
        view = views[name_of(node)] | {name_of(node)}
        for i, owner in enumerate(nodes):
            kept = name_of(owner) in view
            if isinstance(node, BeamNode):
                where = await beam_whereis(node, f"n_{i}")
                assert (names[f"n_{i}"] in where) if kept else where == "undefined", (
                    name_of(node), i, views)
            else:
                pid = node.global_whereis(f"n_{i}")
                assert (pid is not None) == kept, (name_of(node), i, views)

    # reconnecting heals: py joins both, connect_all links a and b again
    await connect(py, a)
    await connect(py, b)
    await full_mesh(nodes)
    await sync_all(nodes)
    await assert_seen_everywhere(nodes, names)
