"""The sys protocol on Python GenServers, driven by real BEAM nodes: ``sys:get_state/1``,
``sys:get_status/1``, ``sys:suspend/1``/``resume/1``, ``sys:replace_state/2``,
``sys:trace/2`` and ``sys:terminate/2`` from erl (OTP 25, 28) and from Elixir
(``:sys.get_state/1``...), compared with what a BEAM gen_server answers."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from interop_tests.beam import LOCALHOST, Epmd
from interop_tests.conftest import BeamNodeFactory
from interop_tests.test_builtins_beam import beam_term, foreign_fun, quoted, same_shape
from pyerl_node.gen import From, GenServer, start_server
from pyerl_node.node import Node
from pyerl_node.proto.terms import Atom, Term

GET = Atom("get")


class Counter(GenServer):
    """State ``#{count => N}``; ``incr`` adds one, ``get`` answers the count."""

    def __init__(self) -> None:
        self.state: Term = {Atom("count"): 0}

    async def handle_call(self, request: Term, from_: From) -> Term:
        if request is Atom("incr"):
            self.state = {Atom("count"): self.state[Atom("count")] + 1}
        return self.state[Atom("count")]


@pytest.fixture
async def py(epmd: Epmd, cookie: str) -> AsyncIterator[Node]:
    node = Node(f"py_{secrets.token_hex(3)}@{LOCALHOST}", cookie, epmd_port=epmd.port,
                start_epmd=False)
    await node.start()
    start_server(node, Counter(), name="py_counter")
    try:
        yield node
    finally:
        await node.stop()


# the status without the state: a BEAM gen_server's and ours differ in what the state is
STATUS_FRAME = ("{status, P, M, [PD, SS, Par, Dbg, Misc]} = sys:get_status({dest}),"
                " {status, P, M, [PD, SS, Par, Dbg, lists:sublist(Misc, 2)]}")


async def test_sys_from_erl(otp_release: str, beam_node: BeamNodeFactory, py: Node) -> None:
    beam = beam_node(otp_release)
    other = beam_node(otp_release, prefix="other")
    dest = f"{{py_counter, {quoted(py.node_atom.name)}}}"
    ref = f"{{rex, {quoted(other.name)}}}"
    assert await beam.eval_async(f"gen_server:call({dest}, incr)") == "1"
    assert await beam.eval_async(f"sys:get_state({dest})") == "#{count => 1}"
    reference = await beam_term(beam, STATUS_FRAME.replace("{dest}", ref))
    status = await beam_term(beam, STATUS_FRAME.replace("{dest}", dest))
    assert same_shape(reference, status), (reference, status)
    out = await beam.eval_async(f"{{status, _, _, [_, running, _, [], Misc]}} ="
                                f" sys:get_status({dest}), lists:last(Misc)")
    assert out == '{data,[{"State",#{count => 1}}]}'
    # suspended: calls wait in the mailbox, system messages are still answered
    assert await beam.eval_async(f"sys:suspend({dest})") == "ok"
    out = await beam.eval_async(f"catch gen_server:call({dest}, incr, 300)")
    assert out.startswith("{'EXIT',{timeout,")
    assert await beam.eval_async(f"lists:nth(2, element(4, sys:get_status({dest})))") == (
        "suspended")
    assert await beam.eval_async(f"sys:resume({dest})") == "ok"
    assert await beam.eval_async(f"gen_server:call({dest}, get)") == "2"  # the queued incr
    # an Erlang fun cannot run here: replace_state fails as with a fun of an unloaded module
    fun = foreign_fun(py.mailbox().pid, arity=1)
    replace = f"catch sys:replace_state({{dest}}, {fun})"
    expected = await beam.eval_async(replace.replace("{dest}", ref))
    assert "callback_failed" in expected
    got = await beam.eval_async(replace.replace("{dest}", dest))
    assert got.split("{sys,replace_state")[0] == expected.split("{sys,replace_state")[0]
    assert await beam.eval_async(f"sys:get_state({dest})") == "#{count => 2}"
    assert await beam.eval_async(f"{{sys:trace({dest}, true), sys:trace({dest}, false),"
                                 f" sys:no_debug({dest})}}") == "{ok,ok,ok}"
    assert await beam.eval_async(f"sys:terminate({dest}, normal)") == "ok"
    for _ in range(100):
        if py.whereis("py_counter") is None:
            break
        await asyncio.sleep(0.02)
    assert py.whereis("py_counter") is None


async def test_sys_from_elixir(beam_node: BeamNodeFactory, py: Node) -> None:
    ex = beam_node("25", elixir=True)
    dest = f'{{:py_counter, :"{py.node_atom.name}"}}'

    async def run(code: str) -> str:
        return await asyncio.to_thread(ex.eval_elixir, code)

    assert await run(f"GenServer.call({dest}, :incr)") == "1"
    assert await run(f":sys.get_state({dest})") == "%{count: 1}"
    out = await run(f"{{:status, pid, {{:module, :gen_server}}, [_pd, :running, parent, [],"
                    f" misc]}} = :sys.get_status({dest}); {{pid == parent, List.last(misc)}}")
    assert out == "{true, {:data, [{'State', %{count: 1}}]}}"
    assert await run(f":sys.suspend({dest})") == ":ok"
    out = await run(f"try do GenServer.call({dest}, :incr, 300) catch :exit, r -> "
                    "elem(r, 0) end")
    assert out == ":timeout"
    assert await run(f":sys.resume({dest})") == ":ok"
    assert await run(f":sys.get_state({dest})") == "%{count: 2}"
    assert await run(f":sys.trace({dest}, false)") == ":ok"
    out = await run(f"try do :sys.replace_state({dest}, fn s -> s end) rescue e -> "
                    "Exception.message(e) end")
    assert "callback_failed" in out
