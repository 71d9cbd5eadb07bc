"""``pg`` against real OTP 25 and OTP 28 nodes (issue 13): Python joins seen by
``pg:get_members`` on the BEAM and BEAM joins seen by Python, leaves and member exits both
ways, ``pg:monitor`` notifications both ways, another scope, the rpc built-ins, and a cluster
of two BEAM nodes and the Python node that stays consistent through joins, leaves, exits and a
nodedown.

BEAM nodes run the default scope with ``-kernel start_pg true``; their members are processes
registered by name so that the test can refer to them.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from interop_tests.beam import LOCALHOST, BeamNode, Epmd
from interop_tests.conftest import BeamNodeFactory
from pyerl_node.node import Node
from pyerl_node.proto.pg import JOIN, LEAVE
from pyerl_node.proto.terms import Atom, Pid

START_PG = ("-kernel", "start_pg", "true")
G = Atom("g")


@pytest.fixture
async def py(epmd: Epmd, cookie: str) -> AsyncIterator[Node]:
    node = Node(f"py_{secrets.token_hex(3)}@{LOCALHOST}", cookie, epmd_port=epmd.port,
                start_epmd=False)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def beam_eval(beam: BeamNode, expr: str) -> str:
    return await beam.eval_async(expr, timeout=20)


async def eventually(check: Callable[[], bool | Awaitable[bool]], what: str,
                     timeout: float = 10.0) -> None:
    """Poll ``check`` (a plain or an async predicate) until it holds; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        outcome = check()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return
        assert loop.time() < deadline, f"not reached in {timeout}s: {what}"
        await asyncio.sleep(0.05)


def pid_text(pid: Pid) -> str:
    """How a BEAM prints a Python pid (remote): ``<N.Id.Serial>``; we match the tail."""
    return f".{pid.id}.{pid.serial}>"


async def spawn_member(beam: BeamNode, name: str) -> None:
    """A BEAM process registered as ``name`` that lives until it gets ``stop``."""
    assert await beam_eval(beam, f"""
        P = spawn(fun() -> receive stop -> ok end end), register({name}, P), ok""") == "ok"


async def beam_member_nodes(beam: BeamNode, group: str = "g", scope: str = "pg") -> Counter[str]:
    out = await beam_eval(beam, f"[atom_to_list(node(P)) || P <- pg:get_members({scope}, "
                                f"{group})]")
    return Counter(eval(out.replace("\n", "")))  # a list of strings printed by ~p


def py_member_nodes(py: Node, group: Atom = G) -> Counter[str]:
    return Counter(p.node.name for p in py.pg_get_members(group))


async def connect(py: Node, beam: BeamNode) -> None:
    """Connect; done once each side lists a member of the other's (the scopes synced)."""
    assert await py.connect(beam.name)
    probe = py.mailbox()
    await py.pg_join(Atom("probe"), probe.pid)
    assert await beam_eval(beam, "pg:join(probe, spawn(fun() -> receive after infinity -> "
                                 "ok end end))") == "ok"
    await eventually(lambda: py_member_nodes(py, Atom("probe"))[beam.name] > 0, "py discovers")

    async def beam_discovers() -> bool:
        return (await beam_member_nodes(beam, "probe"))[py.node_atom.name] > 0

    await eventually(beam_discovers, "beam discovers")


async def test_joins_leaves_and_exits_both_ways(
        otp_release: str, beam_node: BeamNodeFactory, py: Node) -> None:
    beam = beam_node(otp_release, extra_args=START_PG)
    await connect(py, beam)
    p1, p2 = py.mailbox(), py.mailbox()
    await py.pg_join(G, [p1.pid, p2.pid])
    await py.pg_join(G, p1.pid)

    async def beam_sees_py(count: int) -> bool:
        return (await beam_member_nodes(beam))[py.node_atom.name] == count

    await eventually(lambda: beam_sees_py(3), "BEAM lists the Python joins")
    out = await beam_eval(beam, "pg:get_members(g)")
    # the same order as the Python node's: newest join first, a pid once per join
    shown = ["." + text.split(".", 1)[1] for text in re.findall(r"<\d+\.\d+\.\d+>", out)]
    assert shown == [pid_text(p) for p in py.pg_get_members(G)]
    assert shown == [pid_text(p1.pid), pid_text(p1.pid), pid_text(p2.pid)]
    assert await beam_eval(beam, "pg:get_local_members(g)") == "[]"

    await spawn_member(beam, "m1")
    assert await beam_eval(beam, "pg:join(g, whereis(m1))") == "ok"
    await eventually(lambda: py_member_nodes(py)[beam.name] == 1, "Python sees m1")
    beam_pid = next(p for p in py.pg_get_members(G) if p.node.name == beam.name)
    assert py.pg_get_members(G)[0] == beam_pid  # newest join first, as on the BEAM

    assert await py.pg_leave(G, p1.pid) is True
    await eventually(lambda: beam_sees_py(2), "BEAM sees the Python leave")
    p2.exit(Atom("crash"))
    await eventually(lambda: beam_sees_py(1), "BEAM sees the Python member exit")
    assert await beam_eval(beam, "m1 ! stop, ok") == "ok"
    await eventually(lambda: py_member_nodes(py)[beam.name] == 0,
                     "Python sees the BEAM member exit")
    assert py.pg_get_members(G) == [p1.pid]


async def test_monitor_notifications_both_ways(
        otp_release: str, beam_node: BeamNodeFactory, py: Node) -> None:
    beam = beam_node(otp_release, extra_args=START_PG)
    await connect(py, beam)
    # a BEAM subscriber that keeps its notifications for us to read
    assert await beam_eval(beam, """
        Self = self(),
        P = spawn(fun() ->
                {Ref, []} = pg:monitor(g), Self ! ready,
                Loop = fun L(Acc) ->
                    receive
                        {Ref, Kind, Group, Pids} ->
                            L([{Kind, Group, [node(X) || X <- Pids]} | Acc]);
                        {get, From} -> From ! {notices, lists:reverse(Acc)}, L(Acc)
                    end
                end,
                Loop([])
            end),
        register(watcher, P),
        receive ready -> ok after 5000 -> timeout end""") == "ok"
    watcher = py.mailbox()
    ref, members = await py.pg_monitor(G, watcher.pid)
    assert members == []

    py_node = py.node_atom.name

    async def beam_lists_python(count: int) -> bool:
        return (await beam_member_nodes(beam))[py_node] == count

    mine = py.mailbox()
    await py.pg_join(G, mine.pid)
    # each change reaches the BEAM before the next one is made there: a fixed order to check
    await eventually(lambda: beam_lists_python(1), "the BEAM has the Python join")
    await spawn_member(beam, "m2")
    assert await beam_eval(beam, "pg:join(g, whereis(m2))") == "ok"
    assert await watcher.receive(timeout=5) == (ref, JOIN, G, [mine.pid])  # local first
    notice = await watcher.receive(timeout=5)
    assert notice[:3] == (ref, JOIN, G) and notice[3][0].node.name == beam.name
    mine.exit()
    assert await watcher.receive(timeout=5) == (ref, LEAVE, G, [mine.pid])
    await eventually(lambda: beam_lists_python(0), "the BEAM has the Python leave")
    assert await beam_eval(beam, "m2 ! stop, ok") == "ok"
    notice = await watcher.receive(timeout=5)
    assert notice[:3] == (ref, LEAVE, G) and notice[3][0].node.name == beam.name

    expected = (f"{{notices,[{{join,g,['{py_node}']}},{{join,g,['{beam.name}']}},"
                f"{{leave,g,['{py_node}']}},{{leave,g,['{beam.name}']}}]}}")

    async def beam_notices() -> bool:
        out = await beam_eval(beam, "watcher ! {get, self()}, "
                                    "receive {notices, N} -> {notices, N} end")
        return out.replace("\n", "").replace(" ", "") == expected

    await eventually(beam_notices, "the BEAM watcher's notices")
    assert await py.pg_demonitor(ref) is True


async def test_another_scope_and_the_rpc_builtins(
        otp_release: str, beam_node: BeamNodeFactory, py: Node) -> None:
    beam = beam_node(otp_release, extra_args=START_PG)
    assert await beam_eval(beam, "{ok, _} = pg:start(my_scope), ok") == "ok"
    assert await py.connect(beam.name)
    py.pg_start_scope("my_scope")
    p = py.mailbox()
    await py.pg_join((Atom("t"), 1), p.pid, scope="my_scope")

    async def beam_sees() -> bool:
        out = await beam_eval(beam, "pg:get_members(my_scope, {t, 1})")
        return pid_text(p.pid) in out

    await eventually(beam_sees, "BEAM sees the join in my_scope")
    assert await beam_eval(beam, "pg:get_members(g)") == "[]"  # the default scope is apart
    py_name = py.node_atom.name
    out = await beam_eval(beam, f"rpc:call('{py_name}', pg, get_members, [my_scope, {{t, 1}}])")
    assert pid_text(p.pid) in out
    assert await beam_eval(beam, f"rpc:call('{py_name}', pg, which_groups, [my_scope])") == (
        "[{t,1}]")
    assert await beam_eval(beam, f"rpc:call('{py_name}', pg, get_members, [nope, g])") == "[]"
    assert await beam_eval(beam, f"erpc:call('{py_name}', pg, get_local_members, [g])") == "[]"
    out = await beam_eval(beam, f"catch erpc:call('{py_name}', pg, which_groups, [nope])")
    assert out.startswith("{'EXIT',{{exception,badarg,") or "badarg" in out
    # the same call on the BEAM itself fails the same way
    assert "badarg" in await beam_eval(beam, "catch pg:which_groups(nope)")


@pytest.mark.parametrize("releases", [("25", "25"), ("28", "28"), ("25", "28")],
                         ids=["otp25", "otp28", "otp25+otp28"])
async def test_two_beams_and_python_stay_consistent(
        releases: tuple[str, str], beam_node: BeamNodeFactory, py: Node) -> None:
    a = beam_node(releases[0], prefix="a", extra_args=START_PG)
    b = beam_node(releases[1], prefix="b", extra_args=START_PG)
    await connect(py, a)
    await connect(py, b)
    assert await beam_eval(a, f"net_kernel:connect_node('{b.name}')") == "true"
    names = [a.name, b.name, py.node_atom.name]

    for beam, prefix in ((a, "a"), (b, "b")):
        for i in range(3):
            await spawn_member(beam, f"{prefix}{i}")
            assert await beam_eval(beam, f"pg:join(g, whereis({prefix}{i}))") == "ok"
    mine = [py.mailbox() for _ in range(3)]
    for proc in mine:
        await py.pg_join(G, proc.pid)

    async def consistent(expected: dict[str, int], beams: list[BeamNode]) -> bool:
        want = Counter({k: v for k, v in expected.items() if v})
        views = [await beam_member_nodes(beam) for beam in beams] + [py_member_nodes(py)]
        return all(Counter({k: v for k, v in view.items() if v}) == want for view in views)

    await eventually(lambda: consistent(dict.fromkeys(names, 3), [a, b]), "9 members")
    # a leave on each side and a member exit on each side
    assert await beam_eval(a, "pg:leave(g, whereis(a0))") == "ok"
    assert await beam_eval(b, "b1 ! stop, ok") == "ok"
    assert await py.pg_leave(G, mine[0].pid) is True
    mine[1].exit()
    await eventually(lambda: consistent({a.name: 2, b.name: 2, names[2]: 1}, [a, b]),
                     "after leaves and exits")
    # a BEAM node dies without a goodbye: everyone else drops its members
    a.kill9()
    await eventually(lambda: consistent({b.name: 2, names[2]: 1}, [b]), "after a's nodedown")
    assert a.name not in {p.node.name for p in py.pg_get_members(G)}
