"""Name conflicts when partitions join (docs/protocol/global.md §7): the Python node must end a
conflict exactly as a BEAM node in its place would.

Each scenario runs twice in the same test: two BEAM nodes, then a BEAM node and the Python
node in the place of the second one (same position in atom order). Both partitions register
``dup`` with the same method, then join; the outcomes are compared: which side keeps the
name, whether the loser was killed, which conflict messages each side's process received.
Both orders are covered: the Python node sorting after the BEAM node (the BEAM resolves,
possibly by rpc into Python) and before it (the Python node resolves).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

import pytest

from interop_tests.beam import LOCALHOST, BeamNode, Epmd
from interop_tests.conftest import BeamNodeFactory
from interop_tests.test_global_beam import beam_eval
from pyerl_node.node import Node
from pyerl_node.proto.terms import Atom, Export, Pid
from pyerl_node.runtime.process import Process

METHODS = ["random_exit_name", "random_notify_name", "notify_all_name"]
CONFLICT = Atom("global_name_conflict")


@dataclass(frozen=True)
class Side:
    """What happened to one partition's registration of ``dup``."""

    alive: bool
    messages: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    winner: str  # "low", "high" (the side whose node name sorts first / last) or "none"
    low: Side
    high: Side


COLLECTOR = """
    Loop = fun L(Acc) ->
        receive
            {get, From} -> From ! {msgs, lists:reverse(Acc)}, L(Acc);
            M -> L([M | Acc])
        end
    end,
    P = spawn(fun() -> Loop([]) end),
    register(dup_holder, P),
"""


def register_expr(method: str) -> str:
    if method == "random_exit_name":
        return "global:register_name(dup, P)"  # OTP's default: a local fun of global
    return f"global:register_name(dup, P, fun global:{method}/3)"


async def beam_register(beam: BeamNode, method: str) -> None:
    assert await beam_eval(beam, COLLECTOR + register_expr(method)) == "yes"


async def beam_side(beam: BeamNode) -> Side:
    out = await beam_eval(beam, """
        case whereis(dup_holder) of
            undefined -> dead;
            P -> P ! {get, self()},
                 receive {msgs, L} -> [element(tuple_size(M), M) =/= dup || M <- L]
                 after 5000 -> timeout end
        end""")
    if out == "dead":
        return Side(False, ())
    # each message {global_name_conflict, dup} -> false, {.., dup, OtherPid} -> true
    kinds = out.strip("[]").split(",") if out != "[]" else []
    return Side(True, tuple("notify_all" if k == "true" else "notify" for k in kinds))


def py_side(proc: Process) -> Side:
    if not proc.alive:
        return Side(False, ())
    kinds: list[str] = []
    while True:
        found, msg = proc.mailbox.receive_nowait()
        if not found:
            return Side(True, tuple(kinds))
        if type(msg) is tuple and msg[:2] == (CONFLICT, Atom("dup")):
            kinds.append("notify_all" if len(msg) == 3 else "notify")


async def beam_winner(beam: BeamNode) -> str:
    out = await beam_eval(beam, """
        case global:whereis_name(dup) of
            undefined -> none;
            W -> atom_to_list(node(W))
        end""")
    return out.strip('"')


def classify(winner_node: str, low: str, high: str) -> str:
    return {low: "low", high: "high"}.get(winner_node, "none")


async def settle(beams: list[BeamNode], py: Node | None) -> None:
    for beam in beams:
        assert await beam_eval(beam, "global:sync()") == "ok"
    if py is not None:
        await py.global_sync(timeout=15)
    await asyncio.sleep(0.3)  # exit signals / conflict messages sent by the resolver


async def beam_only(beam_node: BeamNodeFactory, release: str, method: str,
                    first: str, second: str) -> Outcome:
    a = beam_node(release, name=f"{first}@{LOCALHOST}")
    b = beam_node(release, name=f"{second}@{LOCALHOST}")
    try:
        await beam_register(a, method)
        await beam_register(b, method)
        assert await beam_eval(a, f"net_kernel:connect_node('{b.name}')") == "true"
        await settle([a, b], None)
        winner = await beam_winner(a)
        assert winner == await beam_winner(b)
        return Outcome(classify(winner, a.name, b.name), await beam_side(a), await beam_side(b))
    finally:
        a.stop()
        b.stop()


async def mixed(beam_node: BeamNodeFactory, epmd: Epmd, cookie: str, *, release: str,
                method: str, beam_name: str, py_name: str) -> Outcome:
    beam = beam_node(release, name=f"{beam_name}@{LOCALHOST}")
    py = Node(f"{py_name}@{LOCALHOST}", cookie, epmd_port=epmd.port, start_epmd=False,
              global_names=True)
    await py.start()
    try:
        await beam_register(beam, method)
        proc = py.mailbox()
        assert await py.global_register("dup", proc.pid, method)
        assert await py.connect(beam.name)
        await settle([beam], py)
        winner = await beam_winner(beam)
        py_pid = py.global_whereis("dup")
        assert (py_pid.node.name if isinstance(py_pid, Pid) else "none") == winner
        py_result, beam_result = py_side(proc), await beam_side(beam)
        low_is_beam = beam.name < py.node_atom.name
        low, high = (beam_result, py_result) if low_is_beam else (py_result, beam_result)
        lo_name, hi_name = sorted([beam.name, py.node_atom.name])
        return Outcome(classify(winner, lo_name, hi_name), low, high)
    finally:
        await py.stop()
        beam.stop()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("python_sorts", ["last", "first"])
async def test_conflict_outcome_equals_beam(
    otp_release: str, method: str, python_sorts: str, *, beam_node: BeamNodeFactory,
    epmd: Epmd, cookie: str,
) -> None:
    tag = secrets.token_hex(3)
    lo, hi = f"m_{tag}", f"z_{tag}"
    reference = await beam_only(beam_node, otp_release, method, lo, f"{hi}b")
    if python_sorts == "last":
        beam_name, py_name = f"{lo}m", f"{hi}p"
    else:
        beam_name, py_name = f"{hi}m", f"{lo}p"
    result = await mixed(beam_node, epmd, cookie, release=otp_release, method=method,
                         beam_name=beam_name, py_name=py_name)
    assert result == reference
    expected_winner = "none" if method == "notify_all_name" else "low"
    assert reference.winner == expected_winner




async def test_beam_resolves_by_rpc_into_python_custom_method(
    otp_release: str, beam_node: BeamNodeFactory, epmd: Epmd, cookie: str
) -> None:
    """{a (BEAM), py} holds ``dup`` for a Python pid with a custom method; {z (BEAM)} holds it
    too. a sorts first, so a resolves, by ``rpc:call(py, global, resolve_it, ...)`` since the
    pid of its entry lives on the Python node; the method is a Python function."""
    tag = secrets.token_hex(3)
    a = beam_node(otp_release, name=f"a_{tag}@{LOCALHOST}")
    z = beam_node(otp_release, name=f"z_{tag}@{LOCALHOST}")
    py = Node(f"p_{tag}@{LOCALHOST}", cookie, epmd_port=epmd.port, start_epmd=False,
              global_names=True)
    calls: list[tuple[object, ...]] = []

    def pick(name: object, pid1: Pid, pid2: Pid) -> Pid:
        calls.append((name, pid1, pid2))
        return pid1  # keep the other partition's registration

    py.expose("pyresolve", {"pick": pick})
    await py.start()
    try:
        assert await py.connect(a.name)
        await settle([a], py)
        proc = py.mailbox()
        method = Export(Atom("pyresolve"), Atom("pick"), 3)
        assert await py.global_register("dup", proc.pid, method)
        await beam_register(z, "random_exit_name")
        assert await beam_eval(z, f"net_kernel:connect_node('{a.name}')") == "true"
        await settle([a, z], py)
        winner = await beam_winner(a)
        assert winner == z.name == await beam_winner(z)
        pid = py.global_whereis("dup")
        assert pid is not None and pid.node is Atom(z.name)
        assert len(calls) == 1 and calls[0][0] is Atom("dup") and calls[0][2] == proc.pid
        assert proc.alive  # the custom method decided; nobody was killed
    finally:
        await py.stop()


async def test_python_resolves_by_rpc_into_beam(
    otp_release: str, beam_node: BeamNodeFactory, epmd: Epmd, cookie: str
) -> None:
    """{py, m (BEAM)} holds ``dup`` for m's pid; {z (BEAM)} holds it too; z joins through
    py, which sorts first and so resolves with ``rpc:call(m, global, resolve_it, ...)``: the
    default method keeps m's pid (m < z) and kills z's."""
    tag = secrets.token_hex(3)
    m = beam_node(otp_release, name=f"m_{tag}@{LOCALHOST}")
    z = beam_node(otp_release, name=f"z_{tag}@{LOCALHOST}")
    py = Node(f"a_{tag}@{LOCALHOST}", cookie, epmd_port=epmd.port, start_epmd=False,
              global_names=True)
    await py.start()
    try:
        assert await py.connect(m.name)
        await settle([m], py)
        await beam_register(m, "random_exit_name")
        await beam_register(z, "random_exit_name")
        assert await beam_eval(z, f"net_kernel:connect_node('{py.node_atom.name}')") == "true"
        await settle([m, z], py)
        assert await beam_winner(z) == m.name == await beam_winner(m)
        assert (await beam_side(z)).alive is False
        assert (await beam_side(m)).alive is True
    finally:
        await py.stop()
