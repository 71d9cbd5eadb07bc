"""rpc/erpc between two Python nodes: both sides of distributed spawn, over loopback."""

from __future__ import annotations

import asyncio
import math

import pytest

from pyerl_node.node import Node
from pyerl_node.proto.errors import ProcessExit, RpcError
from pyerl_node.proto.term_syntax import format_term, parse
from pyerl_node.proto.terms import Atom, ImproperList, Term
from pyerl_node.services.rpc import ErlangError, Exposed, Throw


async def slow(seconds: float) -> Atom:
    await asyncio.sleep(seconds)
    return Atom("done")


def fail(kind: bytes) -> Term:
    if kind == b"throw":
        raise Throw(Atom("thrown"))
    if kind == b"exit":
        raise ProcessExit(Atom("bye"))
    if kind == b"error":
        raise ErlangError(Atom("badarg"))
    return 1 / 0


def returns_coroutine(x: int) -> object:
    return slow_value(x)  # a plain function (run by a worker) handing back a coroutine


async def slow_value(x: int) -> int:
    await asyncio.sleep(0.01)
    return x + 1


def leaves(code: int) -> None:
    raise SystemExit(code)


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self, by: int) -> int:
        self.n += by
        return self.n

    def _hidden(self) -> None:
        raise AssertionError("never callable")


@pytest.fixture
async def rpc_pair(pair: tuple[Node, Node]) -> tuple[Node, Node]:
    """(caller, server): the server exposes ``math``, ``py`` and ``counter``."""
    caller, server = pair
    server.expose("math", math)
    server.expose("py", {"slow": slow, "fail": fail, "echo": lambda x: x,
                         "returns_coroutine": returns_coroutine, "leaves": leaves})
    server.expose("counter", Counter())
    return caller, server


async def test_rpc_and_erpc_return_values(rpc_pair: tuple[Node, Node]) -> None:
    caller, server = rpc_pair
    s = server.node_atom
    assert await caller.rpc(s, "math", "sqrt", [16.0]) == 4.0
    assert await caller.erpc(s, "math", "gcd", [12, 18]) == 6
    assert await caller.erpc(s, "py", "echo", [[1, b"x", (Atom("a"),)]]) == [1, b"x", (Atom("a"),)]
    assert await caller.rpc(s, "py", "slow", [0.01]) is Atom("done")
    assert await caller.rpc(s, "counter", "incr", [2]) == 2
    assert await caller.rpc(s, "counter", "incr", [3]) == 5


async def test_undefined_functions_are_undef(rpc_pair: tuple[Node, Node]) -> None:
    caller, server = rpc_pair
    s = server.node_atom
    for mod, fun, args in [
        ("nomod", "f", [1]),
        ("math", "sqrt", [1, 2]),  # wrong arity
        ("counter", "_hidden", []),
        ("math", "pi", []),  # not callable
    ]:
        with pytest.raises(RpcError) as info:
            await caller.rpc(s, mod, fun, args)
        assert info.value.reason == (
            Atom("EXIT"), (Atom("undef"), [(Atom(mod), Atom(fun), args, [])])
        )
        with pytest.raises(RpcError) as info:
            await caller.erpc(s, mod, fun, args)
        assert info.value.kind == "error"
        assert info.value.reason[0] is Atom("undef")


async def test_exceptions_map_to_erlang_classes(rpc_pair: tuple[Node, Node]) -> None:
    caller, server = rpc_pair
    s = server.node_atom
    assert await caller.rpc(s, "py", "fail", [b"throw"]) is Atom("thrown")  # rpc returns throws
    with pytest.raises(RpcError) as info:
        await caller.erpc(s, "py", "fail", [b"throw"])
    assert (info.value.kind, info.value.reason) == ("throw", Atom("thrown"))
    with pytest.raises(RpcError) as info:
        await caller.erpc(s, "py", "fail", [b"exit"])
    assert (info.value.kind, info.value.reason) == ("exit", Atom("bye"))
    with pytest.raises(RpcError) as info:
        await caller.rpc(s, "py", "fail", [b"error"])
    assert info.value.reason[0] is Atom("EXIT") and info.value.reason[1][0] is Atom("badarg")
    with pytest.raises(RpcError) as info:
        await caller.erpc(s, "py", "fail", [b"zero"])
    error, stack = info.value.reason
    assert error == (Atom("python_exception"), Atom("ZeroDivisionError"), b"division by zero")
    assert any(frame[1] is Atom("fail") for frame in stack)


async def test_timeout_then_node_still_healthy(rpc_pair: tuple[Node, Node]) -> None:
    caller, server = rpc_pair
    s = server.node_atom
    with pytest.raises(RpcError) as info:
        await caller.rpc(s, "py", "slow", [2.0], timeout=0.1)
    assert info.value.reason is Atom("timeout")
    assert await caller.rpc(s, "math", "sqrt", [4.0]) == 2.0


async def test_concurrent_calls_and_multicall(rpc_pair: tuple[Node, Node]) -> None:
    caller, server = rpc_pair
    s = server.node_atom
    results = await asyncio.gather(*(caller.rpc(s, "py", "echo", [i]) for i in range(300)))
    assert results == list(range(300))
    caller.expose("py", {"echo": lambda x: (Atom("local"), x)})
    good, bad = await caller.multicall(
        [s, caller.node_atom, Atom("ghost@127.0.0.1")], "py", "echo", [7], timeout=3
    )
    assert good == [7, (Atom("local"), 7)]
    assert bad == [Atom("ghost@127.0.0.1")]


async def test_unreachable_node_is_nodedown(rpc_pair: tuple[Node, Node]) -> None:
    caller, _ = rpc_pair
    with pytest.raises(RpcError) as info:
        await caller.rpc("ghost@127.0.0.1", "m", "f", [], timeout=3)
    assert info.value.reason is Atom("nodedown")


def test_exposed_lookup_rules() -> None:
    exposed = Exposed()
    exposed.expose("m", {"f": lambda a, b=1: a})
    assert exposed.lookup(Atom("m"), Atom("f"), 1) is not None
    assert exposed.lookup(Atom("m"), Atom("f"), 2) is not None
    exposed.expose("quick", {"g": len}, threaded=False)
    assert exposed.lookup(Atom("quick"), Atom("g"), 1) == (len, False)
    assert exposed.lookup(Atom("m"), Atom("f"), 3) is None
    assert exposed.lookup(Atom("other"), Atom("f"), 1) is None


def test_term_syntax_round_trip() -> None:
    text = "[1, -2, 3.5, foo, 'Quoted atom', \"str\", <<\"bin\">>, {a, [b | c]}, #{k => v}, true]"
    term = parse(text)
    assert term == [
        1, -2, 3.5, Atom("foo"), Atom("Quoted atom"), [115, 116, 114], b"bin",
        (Atom("a"), ImproperList((Atom("b"),), Atom("c"))), {Atom("k"): Atom("v")}, True,
    ]
    assert parse(format_term(term)) == term
    assert parse("16#ff.") == 255 and parse("$a") == 97


async def test_worker_functions_that_return_a_coroutine_or_leave(
    rpc_pair: tuple[Node, Node]
) -> None:
    caller, server = rpc_pair
    s = server.node_atom
    assert await caller.erpc(s, "py", "returns_coroutine", [41]) == 42
    # SystemExit in a worker thread: the caller gets an error, not a hang
    with pytest.raises(RpcError) as info:
        await caller.erpc(s, "py", "leaves", [3], timeout=10)
    assert "SystemExit" in repr(info.value.reason)
    assert await caller.erpc(s, "py", "echo", [1]) == 1  # the node serves on
