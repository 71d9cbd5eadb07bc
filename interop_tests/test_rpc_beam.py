"""rpc/erpc between real BEAM nodes (OTP 25, 28, Elixir 1.14) and the Python node, both ways."""

from __future__ import annotations

import asyncio
import math
import re
import secrets
from collections.abc import AsyncIterator

import pytest

from interop_tests.beam import LOCALHOST, BeamNode, Epmd
from interop_tests.conftest import BeamNodeFactory
from pyerl_node.node import Node
from pyerl_node.proto.errors import RpcError
from pyerl_node.proto.terms import Atom, Term
from pyerl_node.services.rpc import Throw

CASTS: list[Term] = []


async def slow(seconds: float) -> Atom:
    await asyncio.sleep(seconds)
    return Atom("done")


def fail(kind: bytes) -> Term:
    if kind == b"throw":
        raise Throw(Atom("thrown"))
    return 1 / 0


@pytest.fixture
async def py(epmd: Epmd, cookie: str) -> AsyncIterator[Node]:
    node = Node(
        f"py_{secrets.token_hex(3)}@{LOCALHOST}", cookie, epmd_port=epmd.port, start_epmd=False
    )
    node.expose("math", math)
    node.expose("py", {"slow": slow, "fail": fail, "echo": lambda x: x, "note": CASTS.append})
    node.expose("lists", {"reverse": lambda xs: list(reversed(xs))})
    await node.start()
    node.mailbox(name="sb_target")
    try:
        yield node
    finally:
        await node.stop()


async def ev(beam: BeamNode, expr: str, timeout: float = 30.0) -> str:
    """The result on one line (``~p`` breaks long terms after commas)."""
    return re.sub(r"\n\s*", "", await beam.eval_async(expr, timeout=timeout))


async def test_rpc_and_erpc_into_python(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    beam = beam_node(otp_release)
    other = beam_node(otp_release, prefix="other")
    p = f"'{py.node_atom.name}'"
    o = f"'{other.name}'"
    assert await ev(beam, f"rpc:call({p}, math, sqrt, [2.0])") == repr(math.sqrt(2.0))
    assert await ev(beam, f"erpc:call({p}, math, sqrt, [16.0])") == "4.0"
    assert await ev(beam, f"rpc:call({p}, py, slow, [0.01])") == "done"  # async def
    # a Python exception is an error in the called function
    out = await ev(beam, f"rpc:call({p}, py, fail, [<<\"zero\">>])")
    assert out.startswith(
        "{badrpc,{'EXIT',{{python_exception,'ZeroDivisionError',<<\"division by zero\">>},"
    )
    out = await ev(
        beam, f"try erpc:call({p}, py, fail, [<<\"zero\">>]) catch error:{{exception, E, S}} ->"
        " {E, is_list(S)} end"
    )
    assert out == "{{python_exception,'ZeroDivisionError',<<\"division by zero\">>},true}"
    assert await ev(beam, f"rpc:call({p}, py, fail, [<<\"throw\">>])") == "thrown"
    out = await ev(beam, f"catch erpc:call({p}, py, fail, [<<\"throw\">>])")
    assert out == "thrown"
    # undefined functions answer exactly as a BEAM node does
    for call in ("rpc:call({n}, nomod, f, [1])",
                 "try erpc:call({n}, nomod, f, [1]) catch C:R -> {{C, R}} end",
                 "rpc:call({n}, math, sqrt, [1, 2])"):
        assert await ev(beam, call.format(n=p)) == await ev(beam, call.format(n=o))
    # timeouts behave as with a BEAM peer, and the node stays healthy
    assert await ev(beam, f"rpc:call({p}, py, slow, [2.0], 200)") == "{badrpc,timeout}"
    out = await ev(beam, f"try erpc:call({p}, py, slow, [2.0], 200) catch C:R -> {{C, R}} end")
    assert out == "{error,{erpc,timeout}}"
    assert await ev(beam, f"net_adm:ping({p})") == "pong"


async def test_multicall_cast_async_and_rex_forms(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    beam = beam_node(otp_release)
    other = beam_node(otp_release, prefix="other")
    p = f"'{py.node_atom.name}'"
    nodes = f"['{other.name}', {p}]"
    assert await ev(beam, f"rpc:multicall({nodes}, lists, reverse, [[1,2,3]])") == (
        "{[[3,2,1],[3,2,1]],[]}"
    )
    assert await ev(beam, f"erpc:multicall({nodes}, lists, reverse, [[1,2]])") == (
        "[{ok,[2,1]},{ok,[2,1]}]"
    )
    marker = secrets.token_hex(4).encode()
    assert await ev(beam, f"rpc:cast({p}, py, note, [<<\"{marker.decode()}\">>])") == "true"
    assert await ev(beam, f"erpc:cast({p}, py, note, [<<\"e{marker.decode()}\">>])") == "ok"
    for _ in range(100):
        if marker in CASTS and b"e" + marker in CASTS:
            break
        await asyncio.sleep(0.05)
    assert marker in CASTS and b"e" + marker in CASTS
    assert await ev(beam, f"rpc:yield(rpc:async_call({p}, math, sqrt, [9.0]))") == "3.0"
    assert await ev(beam, f"rpc:block_call({p}, math, sqrt, [25.0])") == "5.0"
    assert await ev(beam, f"rpc:block_call({p}, nomod, f, [])") == (
        "{badrpc,{'EXIT',{undef,[{nomod,f,[],[]}]}}}"
    )
    assert await ev(beam, f"rpc:sbcast([{p}], sb_target, hello)") == (
        f"{{[{p}],[]}}"
    )
    assert await ev(beam, f"rpc:sbcast([{p}], no_such_name, hello)") == (
        f"{{[],[{p}]}}"
    )


async def test_thousand_concurrent_rpc_calls(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    beam = beam_node(otp_release)
    out = await ev(
        beam,
        "Self = self(),"
        f"[spawn(fun() -> Self ! {{r, rpc:call('{py.node_atom.name}', py, echo, [I])}} end)"
        " || I <- lists:seq(1, 1000)],"
        "lists:sort([receive {r, X} -> X after 30000 -> timeout end"
        " || _ <- lists:seq(1, 1000)]) =:= lists:seq(1, 1000)",
        timeout=60,
    )
    assert out == "true"


async def test_elixir_rpc_into_python(beam_node: BeamNodeFactory, py: Node) -> None:
    ex = beam_node("25", elixir=True)
    p = py.node_atom.name
    assert await asyncio.to_thread(
        ex.eval_elixir, f':rpc.call(:"{p}", :math, :sqrt, [2.0])'
    ) == repr(math.sqrt(2.0))
    assert await asyncio.to_thread(
        ex.eval_elixir, f':erpc.call(:"{p}", :lists, :reverse, [[1, 2]])'
    ) == "[2, 1]"


async def test_python_calls_beam(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    beam = beam_node(otp_release)
    b = beam.name
    assert await py.rpc(b, "erlang", "node", []) is Atom(b)
    assert await py.erpc(b, "lists", "reverse", [[1, 2, 3]]) == [3, 2, 1]
    with pytest.raises(RpcError) as info:
        await py.erpc(b, "erlang", "error", [Atom("boom")])
    assert info.value.kind == "error" and info.value.reason[0] is Atom("boom")
    with pytest.raises(RpcError) as info:
        await py.rpc(b, "nomod", "f", [1])
    undef: Term = (Atom("undef"), [(Atom("nomod"), Atom("f"), [1], [])])
    assert info.value.reason == (Atom("EXIT"), undef)
    with pytest.raises(RpcError) as info:
        await py.rpc(b, "timer", "sleep", [2000], timeout=0.2)
    assert info.value.reason is Atom("timeout")
    assert await py.rpc(b, "erlang", "throw", [Atom("t")]) is Atom("t")
    # io from the called code goes to our group leader and does not hang the call
    assert await py.rpc(b, "io", "format", [b"hello ~p~n", [1]]) is Atom("ok")
    good, bad = await py.multicall([b, py.node_atom], "lists", "reverse", [[1, 2]])
    assert (good, bad) == ([[2, 1], [2, 1]], [])
    assert await py.ping(b)


async def test_python_calls_elixir(beam_node: BeamNodeFactory, py: Node) -> None:
    ex = beam_node("25", elixir=True)
    assert await py.rpc(ex.name, "Elixir.String", "upcase", [b"abc"]) == b"ABC"
