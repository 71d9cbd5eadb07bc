"""The sys protocol of Python GenServers, driven from Python (``gen:call`` with the label
``system``, as ``sys:get_state/1`` and the other sys verbs send it); real BEAM callers are in
interop_tests/test_sys_beam.py."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pyerl_node.gen import From, GenServer, start_server
from pyerl_node.node import Node
from pyerl_node.proto.errors import CallTimeout
from pyerl_node.proto.terms import Atom, Fun, Pid, Term
from pyerl_node.runtime import genserver
from pyerl_node.runtime.genserver import SYSTEM, printable
from pyerl_node.services import rpc as rpc_service
from pyerl_node.services.builtins import peer_release

OK = Atom("ok")


class Counter(GenServer):
    """No ``state`` attribute: its state is its public attributes."""

    def __init__(self) -> None:
        self.count = 0
        self.label = b"counter"
        self._private = "not shown"

    async def handle_call(self, request: Term, from_: From) -> Term:
        self.count += 1
        return self.count


class Holder(GenServer):
    def __init__(self, state: Term) -> None:
        self.state = state


async def sys(node: Node, dest: Pid | str, request: Term, timeout: float = 5.0) -> Term:
    return await genserver.call(node._kernel, dest, request, timeout=timeout, label=SYSTEM)


async def test_get_state_and_status(pair: tuple[Node, Node]) -> None:
    a, b = pair
    server = start_server(b, Counter(), name="counter")
    assert await a.call((Atom("counter"), b.node_atom), Atom("bump")) == 1
    state = {Atom("count"): 1, Atom("label"): b"counter"}
    for caller in (a, b):  # from another node and from its own
        assert await sys(caller, server.pid, Atom("get_state")) == state
    status, pid, module, (pdict, sys_state, parent, debug, misc) = await sys(
        a, server.pid, Atom("get_status"))
    assert (status, pid, module) == (Atom("status"), server.pid,
                                     (Atom("module"), Atom("gen_server")))
    assert (sys_state, parent, debug) == (Atom("running"), server.pid, [])
    assert dict(pdict)[Atom("$initial_call")] == (
        Atom("python:tests.test_sys_protocol"), Atom("Counter.init"), 0)
    header, data, state_data = misc
    assert header == (Atom("header"), list(b"Status for generic server counter"))
    assert data == (Atom("data"), [(list(b"Status"), Atom("running")),
                                   (list(b"Parent"), server.pid),
                                   (list(b"Logged events"), [])])
    assert state_data == (Atom("data"), [(list(b"State"), state)])


async def test_a_state_that_cannot_travel_is_shown_by_repr(pair: tuple[Node, Node]) -> None:
    a, b = pair
    server = start_server(b, Holder({Atom("x"): {1, 2}, Atom("ok"): [1, float("nan")]}))
    assert await sys(a, server.pid, Atom("get_state")) == {
        Atom("x"): b"{1, 2}", Atom("ok"): [1, b"nan"]}
    assert printable((1, [Atom("a")])) == (1, [Atom("a")])


async def test_suspend_holds_everything_but_system_messages(pair: tuple[Node, Node]) -> None:
    a, b = pair
    server = start_server(b, Counter())
    assert await sys(a, server.pid, Atom("suspend")) is OK
    with pytest.raises(CallTimeout):
        await a.call(server.pid, Atom("bump"), timeout=0.2)
    assert (await sys(a, server.pid, Atom("get_status")))[3][1] is Atom("suspended")
    assert (await sys(a, server.pid, Atom("get_state")))[Atom("count")] == 0
    assert await a.rpc(b.node_atom, "erlang", "process_info",
                       [server.pid, Atom("status")]) == (Atom("status"), Atom("suspended"))
    assert await sys(a, server.pid, Atom("resume")) is OK
    assert await a.call(server.pid, Atom("bump")) == 2  # the held call ran first, in order


async def test_replace_state(pair: tuple[Node, Node]) -> None:
    a, b = pair
    server = start_server(b, Holder(41))
    # a Python callable (a local caller only: it cannot travel)
    assert await sys(b, server.pid, (Atom("replace_state"), lambda s: s + 1)) == 42
    assert await sys(a, server.pid, Atom("get_state")) == 42
    erlang_fun = Fun(1, bytes(16), 0, Atom("m"), 0, 1, a.mailbox().pid, ())
    failed = (Atom("error"), (Atom("callback_failed"),
                              (Atom("gen_server"), Atom("system_replace_state"))))
    answer = await sys(a, server.pid, (Atom("replace_state"), erlang_fun))
    assert answer == (*failed[:1], (*failed[1], (Atom("error"), Atom("undef"))))
    answer = await sys(b, server.pid, (Atom("replace_state"), lambda s: 1 / 0))
    assert answer[1][2] == (Atom("error"), (Atom("python_exception"),
                                            Atom("ZeroDivisionError"), b"division by zero"))
    assert await sys(a, server.pid, Atom("get_state")) == 42


async def test_debug_options_and_unknown_requests(
    pair: tuple[Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = pair
    server = start_server(b, Counter(), name="traced")
    trace = Atom("trace")
    caplog.set_level(logging.INFO, logger="pyerl_node.gen")
    assert await sys(a, server.pid, (Atom("debug"), (trace, True))) is OK
    assert (await sys(a, server.pid, Atom("get_status")))[3][3] == [(trace, True)]
    await a.call(server.pid, Atom("bump"))
    assert any(r.getMessage().startswith("*DBG* traced got") for r in caplog.records)
    assert await sys(a, server.pid, (Atom("debug"), (trace, False))) is OK
    assert (await sys(a, server.pid, Atom("get_status")))[3][3] == []
    assert await sys(a, server.pid, (Atom("debug"), Atom("no_debug"))) is OK
    assert await sys(a, server.pid, (Atom("debug"), (Atom("log"), False))) is OK
    assert await sys(a, server.pid, (Atom("debug"), (Atom("log"), True))) is Atom(
        "unknown_debug")
    assert await sys(a, server.pid, (Atom("debug"), (trace, 1))) is Atom("unknown_debug")
    assert await sys(a, server.pid, Atom("bogus")) == (
        Atom("error"), (Atom("unknown_system_msg"), Atom("bogus")))


async def test_terminate(pair: tuple[Node, Node]) -> None:
    a, b = pair
    server = start_server(b, Counter())
    watcher = a.mailbox()
    ref = watcher.monitor(server.pid)
    assert await sys(a, server.pid, (Atom("terminate"), Atom("shutdown"))) is OK
    down = await watcher.receive(timeout=5)
    assert down == (Atom("DOWN"), ref, Atom("process"), server.pid, Atom("shutdown"))


async def test_callers_that_read_ok_tuples(pair: tuple[Node, Node]) -> None:
    """OTP 26.1+ reads ``{ok, State}``: the node's probe decides per caller."""
    a, b = pair
    server = start_server(b, Holder(7))
    asked: list[Pid] = []

    async def probe(caller: Pid) -> bool:
        asked.append(caller)
        return True

    b._kernel.state_reply_probe = probe
    assert await sys(a, server.pid, Atom("get_state")) == (OK, 7)
    assert await sys(b, server.pid, (Atom("replace_state"), lambda s: s * 2)) == (OK, 14)
    erlang_fun = Fun(1, bytes(16), 0, Atom("m"), 0, 1, a.mailbox().pid, ())
    answer = await sys(a, server.pid, (Atom("replace_state"), erlang_fun))
    assert answer[0] is Atom("error")  # errors are not wrapped
    assert await sys(a, server.pid, Atom("get_status")) != (OK, 7)
    assert asked and all(isinstance(p, Pid) for p in asked)


async def test_the_node_asks_a_peer_once_what_it_runs(
    pair: tuple[Node, Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Python peer says OTP 25: bare states; the answer is kept per incarnation."""
    a, b = pair
    server = start_server(b, Holder(1))
    asked: list[Term] = []
    real = rpc_service.rpc_call

    async def counting(*args: Any, **kwargs: Any) -> Term:
        asked.append(args[5])
        return await real(*args, **kwargs)

    monkeypatch.setattr(peer_release, "rpc_call", counting)
    for _ in range(3):
        assert await sys(a, server.pid, Atom("get_state")) == 1
    assert asked == [[Atom("otp_release")], [Atom("version")]]
    releases = peer_release.PeerReleases(b._kernel, b._exposed)
    assert not await releases.reads_ok_tuple(b.mailbox().pid)  # its own node: never asked
    assert len(asked) == 2
