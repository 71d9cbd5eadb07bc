"""Scenario e: h1's cable is cut while four nodes share global names, then put back.

Cluster: Python agent on h1, OTP 25 Elixir on h2, OTP 28 erl on h3, a second Python agent on
h4, net_ticktime ``TICKTIME`` everywhere. Node names are chosen so that both directions of
global's conflict rule are exercised: ``random_exit_name`` keeps the pid of the node whose name
sorts first and kills the other (OTP ``global:minmax/2``); ``erl..@h3`` < ``py..@h1`` <
``zx..@h2``.

While partitioned:

* every node sees nodedown for the other side within about net_ticktime (the delay from the
  cut is measured and printed; the tick rule bounds it to [T * 3/4, T * 5/4] plus scheduling);
* monitors across the cut fire with ``noconnection`` on both sides;
* each side drops the other side's global names;
* two names are registered on both sides: ``c`` on h1 and h3, ``d`` on h1 and h2.

Healed: nothing reconnects by itself (no traffic, no auto-connect): h2 dials h1 again, global
merges the two halves (connect_all brings h3 and h4 back too), names come back, and each
conflict is resolved as OTP resolves it: ``c`` is erl's (the Python process is killed), ``d``
is Python's (the Elixir process is killed), the same on every node. The time from the heal to
the full mesh and to the names is measured and printed.
"""

from __future__ import annotations

import secrets
import time

from interop_tests.beam import BeamNode
from interop_tests.multihost.conftest import TICKTIME, Cluster
from interop_tests.multihost.nodes import PyAgent
from interop_tests.multihost.probes import (
    IDENT_FUN,
    WatchEvent,
    agent_ident,
    global_ident,
    ident,
    start_watcher,
    wait_until,
    watch_global,
    watcher_events,
)
from interop_tests.multihost.test_global import MESH_WAIT, full_mesh
from pyerl_node.proto.terms import Atom

DETECT_WAIT = 3.0 * TICKTIME
SLACK = 1.0  # scheduling on a shared 2-core machine


def beam_register(beam: BeamNode, name: str) -> tuple[str, int, int]:
    """A fresh idle process on ``beam`` registered as global ``name``; its identity."""
    out = beam.eval(f"""
        P = spawn(fun() -> receive stop -> ok end end),
        yes = global:register_name({name}, P),
        ({IDENT_FUN})(P)""")
    return ident(out)


def beam_alive(beam: BeamNode, name_holder: tuple[str, int, int]) -> bool:
    node, pid_id, serial = name_holder
    assert node == beam.name
    return beam.eval(f"is_process_alive(c:pid(0, {pid_id}, {serial}))") == "true"


def nodedown_at(events: list[WatchEvent], node: str) -> float | None:
    return next((e.t for e in events if e.kind == "nodedown" and e.node == node), None)


def agent_nodedown_at(agent: PyAgent, node: str) -> float | None:
    return next((e["t"] for e in agent.events("nodedown") if e["node"] == node), None)


def test_partition_detect_heal_and_resolve(cluster: Cluster) -> None:
    lab = cluster.lab
    py = cluster.agent("h1", "py")
    zx = cluster.beam("h2", "25", "zx", elixir=True)
    erl = cluster.beam("h3", "28", "erl")
    py2 = cluster.agent("h4", "pyq")
    beams, agents = [zx, erl], [py, py2]
    assert erl.name < py.name < zx.name  # the conflict outcomes below rely on it
    for beam in beams:
        assert beam.eval(f"net_kernel:connect_node('{py.name}')") == "true"
    assert py2.request("connect", node=py.name) is True
    wait_until(lambda: full_mesh(beams, agents), MESH_WAIT, "four nodes meshed")
    for beam in beams:
        assert beam.eval("global:sync()") == "ok"
        start_watcher(beam)
    assert py2.request("sync") is True

    tag = secrets.token_hex(2)
    a, b, c, d = (f"mh_{x}_{tag}" for x in "abcd")
    a_pid = agent_ident(py.request("register", name=a)["pid"])
    b_pid = beam_register(zx, b)
    assert watch_global(zx, a) == a_pid and watch_global(erl, a) == a_pid
    assert agent_ident(py.request("monitor", name=b)) == b_pid
    assert agent_ident(py2.request("monitor", name=a)) == a_pid

    # -- the cut -----------------------------------------------------------------------------
    cut = time.time()
    lab.partition("h1")
    far_side = [zx.name, erl.name, py2.name]
    wait_until(lambda: all(nodedown_at(watcher_events(x), py.name) for x in beams)
               and agent_nodedown_at(py2, py.name) is not None
               and all(agent_nodedown_at(py, n) is not None for n in far_side),
               DETECT_WAIT, "nodedown on both sides of the cut", interval=0.2)
    delays = {f"{x.name} sees h1 down": nodedown_at(watcher_events(x), py.name) for x in beams}
    delays[f"{py2.name} sees h1 down"] = agent_nodedown_at(py2, py.name)
    delays |= {f"h1 sees {n} down": agent_nodedown_at(py, n) for n in far_side}
    measured = {k: round(v - cut, 2) for k, v in delays.items() if v is not None}
    print(f"\nMEASURED nodedown after the cut (net_ticktime {TICKTIME}s): {measured}")
    for what, delay in measured.items():
        assert TICKTIME * 0.75 - SLACK <= delay <= TICKTIME * 1.25 + SLACK, (what, delay)

    # monitors across the cut: DOWN noconnection on both sides
    for beam in beams:
        downs = [(e.node, e.reason) for e in watcher_events(beam) if e.kind == "down"]
        assert downs == [(py.name, Atom("noconnection"))]
    for agent, holder in ((py, b_pid), (py2, a_pid)):
        py_downs = [(agent_ident(e["pid"]), e["reason"]) for e in agent.events("down")]
        assert py_downs == [(holder, "noconnection")]

    # each side forgets the other side's names
    assert all(global_ident(beam, a) is None for beam in beams)
    assert py2.request("whereis", name=a) is None
    assert py.request("whereis", name=b) is None
    assert agent_ident(py.request("whereis", name=a)) == a_pid
    assert global_ident(erl, b) == b_pid

    # the same names taken on both sides
    c_py = agent_ident(py.request("register", name=c)["pid"])
    d_py = agent_ident(py.request("register", name=d)["pid"])
    c_erl = beam_register(erl, c)
    d_zx = beam_register(zx, d)

    # -- the heal ----------------------------------------------------------------------------
    healed = time.time()
    flowing = lab.heal("h1")
    # no one reconnects on their own; one explicit connect, global does the rest
    wait_until(lambda: zx.eval(f"net_kernel:connect_node('{py.name}')") == "true",
               MESH_WAIT, "h2 reconnects to h1", interval=0.2)
    connected = time.time()
    wait_until(lambda: full_mesh(beams, agents), MESH_WAIT, "mesh after the heal")
    meshed = time.time()

    def names_settled() -> bool:
        want = {a: a_pid, b: b_pid, c: c_erl, d: d_py}
        return (all(global_ident(beam, n) == p for beam in beams for n, p in want.items())
                and all(agent_ident(ag.request("whereis", name=n)) == p
                        for ag in agents for n, p in want.items()))

    wait_until(names_settled, MESH_WAIT, "names merged, conflicts resolved", interval=0.2)
    settled = time.time()
    print(f"MEASURED heal: traffic flows after {flowing:.2f}s; connect_node true after "
          f"{connected - healed:.2f}s, full mesh after {meshed - healed:.2f}s, names merged "
          f"after {settled - healed:.2f}s")

    # the losers were killed, as random_exit_name does
    assert c_py is not None and d_py is not None
    assert py.request("alive", name=c) is False
    assert not beam_alive(zx, d_zx)
    assert py.request("alive", name=d) is True and beam_alive(erl, c_erl)
