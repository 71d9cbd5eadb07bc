"""The Python node as a peer of real BEAM nodes (OTP 25 and 28, Elixir 1.14 on OTP 25).

Every scenario of issue #4 runs from both sides where it applies: the BEAM connects, pings,
sends, calls, monitors and links to Python processes, and Python does the same to BEAM ones.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from interop_tests.beam import LOCALHOST, BeamNode, Epmd
from interop_tests.conftest import BeamNodeFactory
from pyerl_node.gen import From, GenServer, start_server
from pyerl_node.node import Node
from pyerl_node.proto.errors import NoProc
from pyerl_node.proto.terms import Atom, Pid, Term
from pyerl_node.runtime.process import Process

DOWN = Atom("DOWN")
EXIT = Atom("EXIT")


class Echo(GenServer):
    async def handle_call(self, request: Term, from_: From) -> Term:
        return (Atom("echo"), request)

    async def handle_cast(self, message: Term) -> None:
        target, payload = message
        await self.process.send(target, (Atom("casted"), payload))


async def echo_body(proc: Process) -> None:
    """Replies ``{MyPid, Msg}`` to ``{From, Msg}``: the registered echo process."""
    while True:
        msg = await proc.receive()
        if type(msg) is tuple and len(msg) == 2 and isinstance(msg[0], Pid):
            await proc.send(msg[0], (proc.pid, msg[1]))


@pytest.fixture
async def py(epmd: Epmd, cookie: str) -> AsyncIterator[Node]:
    node = Node(
        f"py_{secrets.token_hex(3)}@{LOCALHOST}", cookie, epmd_port=epmd.port, start_epmd=False
    )
    await node.start()
    node.spawn(echo_body, name="echo")
    start_server(node, Echo(), name="gen_echo")
    try:
        yield node
    finally:
        await node.stop()


async def ex_eval(node: BeamNode, code: str) -> str:
    """Elixir evaluation off the event loop (the Python node must keep answering meanwhile)."""
    return await asyncio.to_thread(node.eval_elixir, code)


async def wait_for(predicate: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_beam_connects_pings_sends_and_calls(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    beam = beam_node(otp_release)
    p = py.node_atom.name
    assert await beam.eval_async(f"net_kernel:connect_node('{p}')") == "true"
    assert await beam.eval_async(f"lists:member('{p}', nodes())") == "true"
    assert py.nodes() == [Atom(beam.name)]
    assert await beam.eval_async(f"net_adm:ping('{p}')") == "pong"
    # send to a registered Python process, then to the pid it answered from
    out = await beam.eval_async(
        f"{{echo, '{p}'}} ! {{self(), hello}},"
        "receive {Pid, hello} when node(Pid) =:= "
        f"'{p}' -> Pid ! {{self(), direct}}, receive {{Pid, direct}} -> ok after 5000 -> lost end "
        "after 5000 -> timeout end"
    )
    assert out == "ok"
    assert await beam.eval_async(f"gen_server:call({{gen_echo, '{p}'}}, hi, 5000)") == "{echo,hi}"
    out = await beam.eval_async(
        f"gen_server:cast({{gen_echo, '{p}'}}, {{self(), c}}),"
        "receive {casted, c} -> ok after 5000 -> timeout end"
    )
    assert out == "ok"
    # a call to a name that does not exist fails at once with noproc, not a hang
    out = await beam.eval_async(
        f"catch gen_server:call({{nosuch, '{p}'}}, x, 4000)"
    )
    assert out.startswith("{'EXIT',{noproc,")


async def test_python_connects_pings_and_calls_beam(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    beam = beam_node(otp_release)
    b = Atom(beam.name)
    assert await py.connect(b)
    assert await beam.eval_async(f"lists:member('{py.node_atom.name}', nodes())") == "true"
    assert await py.ping(b)
    apps = await py.call((Atom("application_controller"), b), Atom("which_applications"))
    assert any(app[0] is Atom("kernel") for app in apps)
    with pytest.raises(NoProc):
        await py.call((Atom("no_such_server"), b), Atom("x"), timeout=5)
    # a message to a registered BEAM process, answered to our mailbox
    box = py.mailbox()
    await beam.eval_async(
        "register(pyerl_inbox, spawn(fun() -> receive {From, M} -> From ! {got, M} end end)), ok"
    )
    await py.send((Atom("pyerl_inbox"), b), (box.pid, [1, 2.5, b"bin", Atom("a")]))
    assert await box.receive(timeout=5) == (Atom("got"), [1, 2.5, b"bin", Atom("a")])


async def test_wrong_cookie_both_ways(
    otp_release: str, beam_node: BeamNodeFactory, py: Node, epmd: Epmd
) -> None:
    stranger = beam_node(otp_release, cookie="not_the_cookie")
    assert await stranger.eval_async(f"net_adm:ping('{py.node_atom.name}')") == "pang"
    assert not await py.ping(Atom(stranger.name), timeout=5)
    # nothing crashed: a BEAM node with the right cookie still gets through
    friend = beam_node(otp_release)
    assert await friend.eval_async(f"net_adm:ping('{py.node_atom.name}')") == "pong"
    assert await py.ping(Atom(friend.name))


async def test_elixir_connects_and_calls_python_genserver(
    beam_node: BeamNodeFactory, py: Node
) -> None:
    ex = beam_node("25", elixir=True)
    p = py.node_atom.name
    assert await ex_eval(ex, f'Node.connect(:"{p}")') == "true"
    assert await ex_eval(ex, f':"{p}" in Node.list()') == "true"
    assert await ex_eval(ex, f'Node.ping(:"{p}")') == ":pong"
    assert await ex_eval(ex, f'GenServer.call({{:gen_echo, :"{p}"}}, :hello)') == "{:echo, :hello}"
    out = await ex_eval(ex,
        f'GenServer.cast({{:gen_echo, :"{p}"}}, {{self(), :x}})\n'
        "receive do {:casted, :x} -> :ok after 5000 -> :timeout end"
    )
    assert out == ":ok"


async def test_python_calls_elixir_genserver(beam_node: BeamNodeFactory, py: Node) -> None:
    ex = beam_node("25", elixir=True)
    await ex_eval(ex,
        "defmodule PyerlCounter do\n"
        "  use GenServer\n"
        "  def init(n), do: {:ok, n}\n"
        "  def handle_call(:inc, _from, n), do: {:reply, n + 1, n + 1}\n"
        "end\n"
        "{:ok, _} = GenServer.start(PyerlCounter, 41, name: :pyerl_counter)\n:ok"
    )
    target = (Atom("pyerl_counter"), Atom(ex.name))
    assert await py.call(target, Atom("inc")) == 42
    assert await py.call(target, Atom("inc")) == 43


async def test_beam_monitors_python_process(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    beam = beam_node(otp_release)
    victim = py.mailbox(name="victim")
    watch = asyncio.create_task(beam.eval_async(
        f"Ref = monitor(process, {{victim, '{py.node_atom.name}'}}),"
        "receive {'DOWN', Ref, process, _, Reason} -> Reason after 10000 -> timeout end"
    ))
    await wait_for(lambda: bool(victim.monitored_by))
    victim.exit(Atom("gone_fishing"))
    assert await watch == "gone_fishing"


async def test_python_monitors_and_links_beam_process(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    beam = beam_node(otp_release)
    watcher = py.mailbox(name="watcher", trap_exit=True)
    await beam.eval_async(
        "P = spawn(fun() -> receive {die, R} -> exit(R) end end),"
        f"{{watcher, '{py.node_atom.name}'}} ! {{target, P}}, ok"
    )
    _, target_pid = await watcher.receive(timeout=5)
    assert isinstance(target_pid, Pid)
    ref = watcher.monitor(target_pid)
    watcher.link(target_pid)
    await asyncio.sleep(0.2)
    await py.send(target_pid, (Atom("die"), Atom("boom")))
    got = {await watcher.receive(timeout=5), await watcher.receive(timeout=5)}
    assert got == {(DOWN, ref, Atom("process"), target_pid, Atom("boom")),
                   (EXIT, target_pid, Atom("boom"))}


async def test_links_propagate_from_python_to_beam(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    beam = beam_node(otp_release)
    doomed = py.mailbox(name="doomed")
    linker = asyncio.create_task(beam.eval_async(
        "process_flag(trap_exit, true),"
        f"{{doomed, '{py.node_atom.name}'}} ! {{link_me, self()}},"
        "receive {'EXIT', _, Reason} -> Reason after 10000 -> timeout end"
    ))
    msg = await doomed.receive(timeout=10)
    assert msg[0] is Atom("link_me")
    doomed.link(msg[1])
    await asyncio.sleep(0.2)
    doomed.exit(Atom("python_says_bye"))
    assert await linker == "python_says_bye"


async def test_beam_links_to_python_process_and_kills_it(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    beam = beam_node(otp_release)
    linked = py.mailbox(name="linked")
    beam_side = asyncio.create_task(beam.eval_async(
        "Me = self(),"
        "P = spawn(fun() -> receive {go, Pid} -> link(Pid), Me ! linked,"
        "                   receive die -> exit(crashed) end end end),"
        f"{{linked, '{py.node_atom.name}'}} ! {{pid_please, P}},"
        "receive linked -> P ! die, ok after 10000 -> timeout end"
    ))
    tag, beam_pid = await linked.receive(timeout=5)
    assert tag is Atom("pid_please")
    await py.send(beam_pid, (Atom("go"), linked.pid))
    assert await beam_side == "ok"
    await wait_for(lambda: not linked.alive)
    assert linked.exit_reason is Atom("crashed")


async def test_node_monitor_and_noconnection_when_python_stops(
    otp_release: str, beam_node: BeamNodeFactory, epmd: Epmd, cookie: str
) -> None:
    beam = beam_node(otp_release)
    node = Node(f"py_{secrets.token_hex(3)}@{LOCALHOST}", cookie, epmd_port=epmd.port,
                start_epmd=False)
    await node.start()
    try:
        target = node.mailbox(name="target")
        watch = asyncio.create_task(beam.eval_async(
            f"N = '{node.node_atom.name}', true = net_kernel:connect_node(N),"
            "monitor_node(N, true), Ref = monitor(process, {target, N}),"
            "R1 = receive {'DOWN', Ref, process, _, R} -> R after 10000 -> timeout end,"
            "R2 = receive {nodedown, N} -> nodedown after 10000 -> timeout end,"
            "{R1, R2}"
        ))
        await wait_for(lambda: bool(target.monitored_by))
    finally:
        await node.stop()
    assert await watch == "{noconnection,nodedown}"


async def test_big_messages_both_ways_are_fragmented_and_intact(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    beam = beam_node(otp_release)
    size = 64 * 1024 * 1024
    box = py.mailbox(name="bigbox")
    beam_side = asyncio.create_task(beam.eval_async(
        f"B = binary:copy(<<\"0123456789abcdef\">>, {size // 16}),"
        f"{{bigbox, '{py.node_atom.name}'}} ! {{self(), B}},"
        "receive {back, Got} -> {byte_size(Got), Got =:= B} after 60000 -> timeout end",
        timeout=90,
    ))
    sender, big = await box.receive(timeout=60)
    assert big == b"0123456789abcdef" * (size // 16)
    await py.send(sender, (Atom("back"), big))
    assert await beam_side == f"{{{size},true}}"


async def test_messages_of_every_shape_around_a_big_binary_go_both_ways_intact(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    # A binary that ends the message (joined straight out of the fragments on the way in,
    # cut with the fragments on the way out), one that does not, nested ones, 1 MiB (decoded
    # on the loop) and 40 MiB (in a worker thread), each echoed back and compared by the
    # BEAM; between them, streams of small sends and of gen calls (remembered control
    # messages and MONITOR_P heads).
    beam = beam_node(otp_release)
    start_server(py, Echo(), name="shape_echo")
    box = py.mailbox(name="shapes")
    p = py.node_atom.name
    beam_side = asyncio.create_task(beam.eval_async(
        "B = binary:copy(<<\"0123456789abcdef\">>, 65536), Big = binary:copy(B, 40),"
        "Shapes = [B, {tag, B}, {tag, 7, B}, {a, {b, {c, B}}}, {B, tail}, [B], #{k => B},"
        "          {tag, <<B/binary, 1:3>>}, {tag, Big}, {tag, Big, tail}],"
        f"Ok = [begin {{shapes, '{p}'}} ! {{self(), S}},"
        "        [{shapes, '" + p + "'} ! {self(), {small, N}} || N <- lists:seq(1, 200)],"
        "        R = receive {back, X} -> X =:= S after 60000 -> timeout end,"
        f"        Calls = [gen_server:call({{shape_echo, '{p}'}}, N) || N <- lists:seq(1, 20)],"
        "        {R, Calls =:= [{echo, N} || N <- lists:seq(1, 20)]}"
        "      end || S <- Shapes],"
        "lists:usort(Ok)",
        timeout=180,
    ))
    for _ in range(10):
        sender, shape = await box.receive(timeout=120)
        small = [await box.receive(timeout=30) for _ in range(200)]
        assert small == [(sender, (Atom("small"), n)) for n in range(1, 201)]
        await py.send(sender, (Atom("back"), shape))
    assert await beam_side == "[{true,true}]"


async def test_simultaneous_connect_ends_in_one_connection(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    beam = beam_node(otp_release)
    both = await asyncio.gather(
        py.connect(Atom(beam.name)),
        beam.eval_async(f"net_kernel:connect_node('{py.node_atom.name}')"),
    )
    assert both[0] is True and both[1] == "true"
    await asyncio.sleep(0.5)
    assert py.nodes() == [Atom(beam.name)]
    assert await beam.eval_async("length(nodes())") == "1"
    assert await py.ping(Atom(beam.name))


async def test_dead_peer_detected(
    otp_release: str, beam_node: BeamNodeFactory, epmd: Epmd, cookie: str
) -> None:
    node = Node(f"py_{secrets.token_hex(3)}@{LOCALHOST}", cookie, epmd_port=epmd.port,
                start_epmd=False, net_ticktime=4)
    await node.start()
    try:
        watcher = node.mailbox()
        killed = beam_node(otp_release, prefix="killed")
        frozen = beam_node(
            otp_release, prefix="frozen", extra_args=["-kernel", "net_ticktime", "4"]
        )
        for beam in (killed, frozen):
            assert await node.connect(Atom(beam.name))
            node.monitor_node(watcher.pid, Atom(beam.name))
        killed.kill9()  # the socket closes: noticed at once
        assert await watcher.receive(timeout=5) == (Atom("nodedown"), Atom(killed.name))
        frozen.suspend()  # the socket stays open but silent: noticed by net_ticktime
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await watcher.receive(timeout=15) == (Atom("nodedown"), Atom(frozen.name))
        assert loop.time() - t0 <= 8
        frozen.resume()
    finally:
        await node.stop()




def test_runs_on_uvloop(otp_release: str, epmd: Epmd, cookie: str,
                        beam_node: BeamNodeFactory) -> None:
    """Many asyncio applications run uvloop, whose transports are not asyncio.Transport
    subclasses: the node must connect, serve and move big messages on it too."""
    import uvloop

    beam = beam_node(otp_release)

    async def scenario() -> None:
        async with Node(f"py_{secrets.token_hex(3)}@{LOCALHOST}", cookie, epmd_port=epmd.port,
                        start_epmd=False) as py:
            start_server(py, Echo(), name="gen_echo")
            p = py.node_atom.name
            assert await beam.eval_async(f"net_kernel:connect_node('{p}')") == "true"
            assert await beam.eval_async(
                f"gen_server:call({{gen_echo, '{p}'}}, hi)") == "{echo,hi}"
            box = py.mailbox(name="inbox")
            await beam.eval_async(
                f"{{inbox, '{p}'}} ! {{self(), binary:copy(<<7>>, 3000000)}}, ok")
            _, big = await box.receive(timeout=20)
            assert big == b"\x07" * 3_000_000
            await beam.eval_async("register(sizer, spawn(fun() -> "
                                  "receive {F, B} -> F ! {size, byte_size(B)} end end)), ok")
            await py.send((Atom("sizer"), Atom(beam.name)), (box.pid, big + b"!"))  # fragmented
            assert await box.receive(timeout=20) == (Atom("size"), 3_000_001)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
