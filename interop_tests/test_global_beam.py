"""``global`` between the Python node and real BEAM nodes (OTP 25 + Elixir 1.14, OTP 28).

The seed scenario of issue #6 both ways: a name registered with ``:global.register_name/2``
on the BEAM is found and messaged from Python; a Python process registered from Python is
found by ``:global.whereis_name/1`` on every BEAM node and reached with
``GenServer.call({:global, name}, ...)``; ``:global.sync()`` returns ``ok`` everywhere.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable

import pytest

from interop_tests.beam import LOCALHOST, BeamNode, Epmd
from interop_tests.conftest import BeamNodeFactory
from pyerl_node.gen import From, GenServer, start_server
from pyerl_node.node import Node
from pyerl_node.proto.terms import Atom, Pid, Term
from pyerl_node.runtime.process import Process

SYNC = "global:sync()"


class Pong(GenServer):
    async def handle_call(self, request: Term, from_: From) -> Term:
        return (Atom("pong"), request)


def py_node(epmd: Epmd, cookie: str, prefix: str = "py") -> Node:
    # "py_..." sorts after "beam_...": BEAM nodes resolve name conflicts (docs/protocol/global.md
    # §7)
    return Node(f"{prefix}_{secrets.token_hex(3)}@{LOCALHOST}", cookie, epmd_port=epmd.port,
                start_epmd=False, global_names=True)


@pytest.fixture
async def py(epmd: Epmd, cookie: str) -> AsyncIterator[Node]:
    node = py_node(epmd, cookie)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def beam_eval(beam: BeamNode, expr: str, timeout: float = 20.0) -> str:
    return await beam.eval_async(expr, timeout=timeout)


async def beam_whereis(beam: BeamNode, name: str) -> str:
    return await beam_eval(beam, f"global:whereis_name({name})")


def pid_text(pid: Pid) -> str:
    """How the BEAM prints a remote pid in ``~p``: ``<N.Id.Serial>`` with N != 0."""
    return f".{pid.id}.{pid.serial}>"


async def echo_once(proc: Process) -> None:
    msg = await proc.receive(timeout=20)
    if type(msg) is tuple and len(msg) == 2 and isinstance(msg[0], Pid):
        await proc.send(msg[0], (Atom("got"), msg[1]))


async def test_seed_scenario_both_ways(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    elixir = otp_release == "25"
    beam = beam_node(otp_release, elixir=elixir)
    assert await py.connect(beam.name)
    await py.global_sync(timeout=10)
    assert await beam_eval(beam, SYNC) == "ok"

    # BEAM registers, Python finds and messages it
    if elixir:
        out = await asyncio.to_thread(beam.eval_elixir, """
            pid = spawn(fn -> receive do {from, msg} -> send(from, {:got, msg}) end end)
            :global.register_name(:my_process, pid)
        """)
    else:
        out = await beam_eval(beam, """
            Pid = spawn(fun() -> receive {From, Msg} -> From ! {got, Msg} end end),
            global:register_name(my_process, Pid)""")
    assert out in (":yes", "yes")
    pid = py.global_whereis("my_process")
    assert isinstance(pid, Pid) and pid.node is Atom(beam.name)
    box = py.mailbox()
    assert await py.global_send("my_process", (box.pid, b"hi"), sender=box.pid) == pid
    assert await box.receive(timeout=10) == (Atom("got"), b"hi")

    # Python registers, BEAM finds it and calls it
    server = start_server(py, Pong())
    assert await py.global_register("py_server", server.pid)
    assert pid_text(server.pid) in await beam_whereis(beam, "py_server")
    if elixir:
        out = await asyncio.to_thread(
            beam.eval_elixir, "GenServer.call({:global, :py_server}, :ping, 5000)")
        assert out == "{:pong, :ping}"
    else:
        out = await beam_eval(beam, "gen_server:call({global, py_server}, ping, 5000)")
        assert out == "{pong,ping}"
    assert await beam_eval(beam, SYNC) == "ok"
    # a second registration of the same pid or the same name is refused, as in OTP
    assert not await py.global_register("py_server2", server.pid)
    assert await beam_eval(beam, "global:register_name(py_server, self())") == "no"

    # the Python process ends: its name vanishes on the BEAM (monitor DOWN)
    server.exit(Atom("shutdown"))
    await wait_for(lambda: py.global_whereis("py_server") is None)
    for _ in range(100):
        if await beam_whereis(beam, "py_server") == "undefined":
            break
        await asyncio.sleep(0.05)
    assert await beam_whereis(beam, "py_server") == "undefined"

    # unregister from Python; re_register over a BEAM-held name
    await py.global_unregister("my_process")
    assert await beam_whereis(beam, "my_process") == "undefined"
    proc2 = py.mailbox()
    await beam_eval(beam, "global:register_name(taken, spawn(fun() -> receive stop -> ok end end))")
    await py.global_re_register("taken", proc2.pid)
    assert pid_text(proc2.pid) in await beam_whereis(beam, "taken")
    assert sorted(a.name for a in py.global_registered_names()) == ["taken"]


async def test_beam_connects_to_python_and_registers(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    beam = beam_node(otp_release)
    p = py.node_atom.name
    assert await beam_eval(beam, f"net_kernel:connect_node('{p}')") == "true"
    assert await beam_eval(beam, SYNC) == "ok"
    out = await beam_eval(beam, """
        Pid = spawn(fun() -> receive {From, Msg} -> From ! {got, Msg} end end),
        {global:register_name(beam_name, Pid), Pid}""")
    assert out.startswith("{yes,")
    assert py.global_whereis("beam_name") is not None
    proc = py.spawn(echo_once)
    assert await py.global_register("py_echo", proc.pid)
    out = await beam_eval(beam, """
        global:send(py_echo, {self(), hello}),
        receive {got, hello} -> ok after 5000 -> timeout end""")
    assert out == "ok"
    # locks through global:trans on the BEAM cover the Python node
    out = await beam_eval(beam, "global:trans({res, self()}, fun() -> inside end)")
    assert out == "inside"
    assert await py.global_trans((Atom("res2"), Atom("me")), _inside) == Atom("inside")


async def _inside() -> Term:
    return Atom("inside")


async def test_concurrent_registrations_from_both_sides_never_hang(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    """BEAM and Python register 20 names each at the same time: the lock transactions
    contend, back off and all complete; every name ends up everywhere."""
    beam = beam_node(otp_release)
    assert await py.connect(beam.name)
    await py.global_sync(timeout=10)
    n = 20
    beam_side = beam_eval(beam, f"""
        Parent = self(),
        [spawn(fun() ->
                   P = spawn(fun() -> receive stop -> ok end end),
                   Name = list_to_atom("b" ++ integer_to_list(I)),
                   Parent ! {{done, global:register_name(Name, P)}}
               end) || I <- lists:seq(1, {n})],
        lists:usort([receive {{done, R}} -> R after 60000 -> timeout end || _ <- lists:seq(1, {n})])
    """, timeout=90)
    procs = [py.mailbox() for _ in range(n)]
    py_side = asyncio.gather(*(py.global_register(f"p{i}", p.pid) for i, p in enumerate(procs)))
    async with asyncio.timeout(90):
        beam_out, py_out = await asyncio.gather(beam_side, py_side)
    assert beam_out == "[yes]"
    assert py_out == [True] * n
    names = sorted(a.name for a in py.global_registered_names())
    assert names == sorted([f"b{i}" for i in range(1, n + 1)] + [f"p{i}" for i in range(n)])
    out = await beam_eval(beam, "length(global:registered_names())")
    assert out == str(2 * n)
    assert await beam_eval(beam, SYNC) == "ok"
