"""The Python node looks like a BEAM node from the outside: every call BEAM code and tools
make of any node (``erlang``, ``global``, ``net_adm``, ``net_kernel``, ``os``,
``application``, ``code``) answers, with the shape a real OTP node's answer has.

Each call is made from a BEAM node twice, once of another BEAM node of the same release and
once of the Python node, and the two answers are compared as terms (``same_shape``; exact
equality where nothing node-specific is in them, as for the errors of bad arguments).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import secrets
from collections.abc import AsyncIterator

import pytest

from interop_tests.beam import LOCALHOST, BeamNode, Epmd
from interop_tests.conftest import BeamNodeFactory
from pyerl_node.node import Node
from pyerl_node.proto import etf
from pyerl_node.proto.terms import Atom, Fun, Pid, Port, Reference, Term
from pyerl_node.runtime.process import Process


async def beam_term(beam: BeamNode, expr: str, timeout: float = 30.0) -> Term:
    """The value of the Erlang expression ``expr`` evaluated on ``beam``, as a term."""
    text = await beam.eval_async(
        f"base64:encode(term_to_binary(begin {expr} end))", timeout=timeout)
    return etf.decode(base64.b64decode(re.sub(r"\s|<<\"|\">>", "", text)))


def _kind(term: Term) -> str:
    if isinstance(term, Atom | bool) or term is None:
        return "atom"
    if isinstance(term, list) and term and all(type(c) is int and 0 <= c < 0x110000
                                               for c in term):
        return "string"
    for kind, types in (("int", int), ("float", float), ("binary", bytes), ("pid", Pid),
                        ("ref", Reference), ("port", Port), ("tuple", tuple), ("list", list),
                        ("map", dict)):
        if isinstance(term, types):
            return kind
    return type(term).__name__


def same_shape(beam: Term, py: Term) -> bool:
    """Whether ``py`` has the shape of ``beam``: the same kinds of term at the same places,
    the same key in ``{Key, Value}`` pairs whose key is an atom, and in a list every element
    shaped like one of the BEAM's. An empty list fits any list: a Python process has no heap
    statistics or links where a BEAM's has some."""
    kinds = {_kind(beam), _kind(py)}
    if kinds <= {"list", "string"} and (beam == [] or py == [] or len(kinds) == 1):
        if kinds == {"string"} or beam == [] or py == []:
            return True
        return all(any(same_shape(b, p) for b in beam) for p in py)
    if len(kinds) != 1:
        return False
    if isinstance(beam, tuple) and isinstance(py, tuple):
        if len(beam) != len(py):
            return False
        if len(beam) == 2 and isinstance(beam[0], Atom) and beam[0] is not py[0]:
            return False  # {Key, Value}: the keys must agree
        return all(same_shape(b, p) for b, p in zip(beam, py, strict=True))
    return True


def test_same_shape_can_fail() -> None:
    assert same_shape([(Atom("a"), 1), (Atom("b"), [1, 2])], [(Atom("b"), [])])
    assert not same_shape([(Atom("a"), 1)], [(Atom("c"), 1)])
    assert same_shape((Atom("gen_server"), Atom("loop"), 7), (Atom("python:m"), Atom("f"), 0))
    assert not same_shape((Atom("ok"), 1), (Atom("ok"), Atom("x")))
    assert not same_shape([100, 101], [(Atom("a"),)])
    assert not same_shape((1, 2), (1, 2, 3))


REX = "rpc:call({n}, erlang, whereis, [rex])"

SHAPE_CALLS = [
    "rpc:call({n}, erlang, node, [])",
    "rpc:call({n}, erlang, nodes, [])",
    "rpc:call({n}, erlang, nodes, [[visible, this]])",
    "rpc:call({n}, erlang, nodes, [known])",
    "rpc:call({n}, erlang, nodes, [connected])",
    "rpc:call({n}, erlang, nodes, [hidden])",
    "rpc:call({n}, erlang, whereis, [rex])",
    "rpc:call({n}, erlang, whereis, [no_such_name])",
    "rpc:call({n}, erlang, registered, [])",
    "rpc:call({n}, erlang, processes, [])",
    f"rpc:call({{n}}, erlang, process_info, [{REX}])",
    f"rpc:call({{n}}, erlang, process_info, [{REX}, [registered_name, status, message_queue_len,"
    " links, monitors, monitored_by, dictionary, current_function, memory]])",
    f"[rpc:call({{n}}, erlang, process_info, [{REX}, I]) || I <- [registered_name, status,"
    " message_queue_len, links, monitors, monitored_by, dictionary, current_function, memory]]",
    f"rpc:call({{n}}, erlang, is_process_alive, [{REX}])",
    "[rpc:call({n}, erlang, system_info, [K]) || K <- [otp_release, version, system_version,"
    " process_count, atom_count, atom_limit, schedulers, schedulers_online, logical_processors,"
    " wordsize, creation]]",
    "rpc:call({n}, erlang, memory, [])",
    "rpc:call({n}, erlang, memory, [total])",
    "rpc:call({n}, erlang, memory, [[total, processes, atom]])",
    "[rpc:call({n}, erlang, statistics, [K]) || K <- [wall_clock, runtime, run_queue,"
    " reductions]]",
    "rpc:call({n}, erlang, apply, [erlang, node, []])",
    "rpc:call({n}, erlang, apply, [fun erlang:node/0, []])",
    "rpc:call({n}, erlang, monitor_node, [node(), true])",
    "rpc:call({n}, global, whereis_name, [no_such_name])",
    "rpc:call({n}, global, registered_names, [])",
    "rpc:call({n}, global, sync, [])",
    "rpc:call({n}, global, set_lock, [{builtins_res, me}])",
    "rpc:call({n}, global, del_lock, [{builtins_res, me}])",
    "rpc:call({n}, global, trans, [{builtins_res, me}, fun erlang:node/0])",
    "rpc:call({n}, net_adm, ping, [node()])",
    "rpc:call({n}, net_adm, names, [])",
    "rpc:call({n}, net_adm, localhost, [])",
    "rpc:call({n}, net_kernel, get_net_ticktime, [])",
    "rpc:call({n}, net_kernel, connect_node, [node()])",
    "[Info || {_, Info} <- element(2, rpc:call({n}, net_kernel, nodes_info, []))]",
    "rpc:call({n}, net_kernel, node_info, [node()])",
    "rpc:call({n}, net_kernel, node_info, [node(), type])",
    "rpc:call({n}, os, getpid, [])",
    "rpc:call({n}, os, type, [])",
    "rpc:call({n}, os, timestamp, [])",
    "rpc:call({n}, os, system_time, [])",
    "rpc:call({n}, os, system_time, [millisecond])",
    "rpc:call({n}, application, which_applications, [])",
    "rpc:call({n}, application, which_applications, [1000])",
    "rpc:call({n}, application, loaded_applications, [])",
    "rpc:call({n}, code, which, [no_such_module])",
    "rpc:call({n}, code, is_loaded, [no_such_module])",
    "lists:usort([{is_atom(M), io_lib:printable_list(F) orelse F =:= preloaded}"
    " || {M, F} <- rpc:call({n}, code, all_loaded, [])])",
    "erpc:call({n}, erlang, node, [])",
    "erpc:multicall([{n}], erlang, registered, [])",
    # failures whose frames carry a file and line on the BEAM
    "rpc:call({n}, code, which, [\"str\"])",
    "rpc:call({n}, net_adm, ping, [\"str\"])",
    "rpc:call({n}, net_kernel, connect_node, [\"str\"])",
    "rpc:call({n}, application, which_applications, [bad])",
    "rpc:call({n}, global, register_name, [x, notpid])",
    f"rpc:call({{n}}, erlang, process_info, [{REX}, bogus])",
    "rpc:call({n}, erlang, process_info, [self()])",  # a pid of another node: badarg
]

# failures with nothing node-specific in them: the same term from either node
EXACT_CALLS = [
    "rpc:call({n}, erlang, whereis, [\"str\"])",
    "rpc:call({n}, erlang, nodes, [bogus])",
    "rpc:call({n}, erlang, system_info, [bogus])",
    "rpc:call({n}, erlang, memory, [bogus])",
    "rpc:call({n}, erlang, memory, [[total, bogus]])",
    "rpc:call({n}, erlang, statistics, [bogus])",
    "rpc:call({n}, erlang, node, [notapid])",
    "rpc:call({n}, erlang, is_process_alive, [notpid])",
    "rpc:call({n}, erlang, process_info, [notpid])",
    "rpc:call({n}, erlang, apply, [nomod, nofun, []])",
    "rpc:call({n}, erlang, apply, [fun nomod:nofun/0, []])",
    "rpc:call({n}, erlang, apply, [notfun, []])",
    "rpc:call({n}, erlang, apply, [lists, reverse, bad])",
    "rpc:call({n}, erlang, monitor_node, [node(), sometimes])",
    "rpc:call({n}, os, system_time, [bogus])",
    "rpc:call({n}, code, all_loaded, [1])",
    "rpc:call({n}, net_kernel, node_info, ['nobody@nowhere'])",
    "rpc:call({n}, net_kernel, node_info, [node(), bogus])",
    "rpc:call({n}, net_adm, ping, ['nobody@127.0.0.1'])",
    "catch rpc:call({n}, global, send, [no_such_name, hi])",
]


def pymod_hello() -> Atom:
    return Atom("hi")


@pytest.fixture
async def py(epmd: Epmd, cookie: str) -> AsyncIterator[Node]:
    # "py_..." sorts after "beam_...": BEAM nodes resolve global name conflicts
    node = Node(f"py_{secrets.token_hex(3)}@{LOCALHOST}", cookie, epmd_port=epmd.port,
                start_epmd=False)
    node.expose("pymod", {"hello": pymod_hello})
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


def quoted(name: str) -> str:
    return f"'{name}'"


def at(call: str, node: str) -> str:
    """``call`` made of ``node`` (its ``{n}`` replaced)."""
    return call.replace("{n}", node)


async def connected_trio(beam_node: BeamNodeFactory, release: str,
                         py: Node) -> tuple[BeamNode, BeamNode]:
    """A caller BEAM, a reference BEAM, and the Python node, all connected and synced."""
    beam = beam_node(release)
    other = beam_node(release, prefix="other")
    p, o = quoted(py.node_atom.name), quoted(other.name)
    assert await beam.eval_async(f"{{net_adm:ping({o}), net_adm:ping({p})}}") == "{pong,pong}"
    assert await py.connect(other.name)
    await py.global_sync(timeout=20)
    assert await beam.eval_async("global:sync()") == "ok"
    assert await other.eval_async("global:sync()") == "ok"
    return beam, other


async def test_builtin_calls_answer_with_beam_shapes(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    beam, other = await connected_trio(beam_node, otp_release, py)
    p, o = quoted(py.node_atom.name), quoted(other.name)
    wrong = []
    for call in SHAPE_CALLS:
        reference = await beam_term(beam, at(call, o))
        answer = await beam_term(beam, at(call, p))
        if not same_shape(reference, answer):
            wrong.append((call, reference, answer))
    assert wrong == [], "\n".join(f"{c}\n  BEAM {r!r}\n  PY   {a!r}" for c, r, a in wrong)
    for call in EXACT_CALLS:
        reference = await beam_term(beam, at(call, o))
        assert await beam_term(beam, at(call, p)) == reference, call


async def test_builtin_answers_are_the_python_nodes_own(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    beam, other = await connected_trio(beam_node, otp_release, py)
    me = py.node_atom
    p = quoted(me.name)
    box = py.mailbox("builtins_probe")
    rex = py.whereis("rex")
    assert rex is not None
    box.monitor(rex)

    async def ask(expr: str) -> Term:
        return await beam_term(beam, at(expr, p))

    assert await ask("rpc:call({n}, erlang, node, [])") is me
    assert set(await ask("rpc:call({n}, erlang, nodes, [])")) == {
        Atom(beam.name), Atom(other.name)}
    assert await ask("rpc:call({n}, erlang, nodes, [this])") == [me]
    assert await ask("rpc:call({n}, erlang, whereis, [builtins_probe])") == box.pid
    registered = await ask("rpc:call({n}, erlang, registered, [])")
    assert isinstance(registered, list) and Atom("builtins_probe") in registered
    assert Atom("global_name_server") in registered
    assert box.pid in await ask("rpc:call({n}, erlang, processes, [])")
    box.mailbox.put(Atom("one"))
    box.mailbox.put(Atom("two"))
    info = dict(await ask(
        "rpc:call({n}, erlang, process_info, [rpc:call({n}, erlang, whereis,"
        " [builtins_probe]), [registered_name, message_queue_len, monitors, status]])"))
    assert info[Atom("registered_name")] is Atom("builtins_probe")
    assert info[Atom("message_queue_len")] == 2
    assert info[Atom("monitors")] == [(Atom("process"), rex)]
    assert info[Atom("status")] is Atom("waiting")
    box.exit()
    assert await ask("rpc:call({n}, erlang, process_info, [rpc:call({n}, erlang, whereis,"
                     " [rex]), monitored_by])") == (Atom("monitored_by"), [])
    assert await ask("rpc:call({n}, erlang, system_info, [otp_release])") == list(b"25")
    count = await ask("rpc:call({n}, erlang, system_info, [process_count])")
    processes = len(await ask("rpc:call({n}, erlang, processes, [])"))
    assert count == processes  # (each counts the process that runs the call)
    assert await ask("rpc:call({n}, net_adm, ping, [node()])") is Atom("pong")
    assert await ask("rpc:call({n}, net_adm, ping, ['nobody@127.0.0.1'])") is Atom("pang")
    ok, names = await ask("rpc:call({n}, net_adm, names, [])")
    assert ok is Atom("ok") and (list(me.name.split("@")[0].encode()), py.port) in names
    assert await ask("rpc:call({n}, net_kernel, node_info, [node(), type])") == (
        Atom("ok"), Atom("normal"))
    assert await ask("rpc:call({n}, code, which, [pymod])") == list(
        b"python:interop_tests.test_builtins_beam")
    assert await ask("rpc:call({n}, code, is_loaded, [lists])") is False
    assert await ask("rpc:call({n}, code, which, [lists])") is Atom("non_existing")
    ((app, _desc, _vsn),) = await ask(
        "rpc:call({n}, application, which_applications, [])")
    assert app is Atom("pyerl_node")
    assert await ask("rpc:call({n}, erlang, apply, [pymod, hello, []])") is Atom("hi")
    assert await ask("rpc:call({n}, global, trans, [{t, me}, fun pymod:hello/0])") is Atom("hi")


async def test_multicall_across_the_cluster_has_no_bad_nodes(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    beam, other = await connected_trio(beam_node, otp_release, py)
    everyone: list[Atom | str] = [Atom(beam.name), Atom(other.name), py.node_atom]
    assert await beam_term(beam, "rpc:multicall([node() | nodes()], erlang, node, [])") == (
        everyone, [])
    assert await beam_term(beam, "rpc:multicall(erlang, node, [])") == (everyone, [])
    assert await beam_term(
        beam, "erpc:multicall([node() | nodes()], erlang, system_info, [otp_release])") == [
        (Atom("ok"), list(otp_release.encode())), (Atom("ok"), list(otp_release.encode())),
        (Atom("ok"), list(b"25"))]
    # ... and from the Python node
    good, bad = await py.multicall(everyone, "erlang", "node", [])
    assert (good, bad) == (everyone, [])


async def echo(proc: Process) -> None:
    while True:
        msg = await proc.receive()
        if type(msg) is tuple and len(msg) == 2 and isinstance(msg[0], Pid):
            await proc.send(msg[0], (Atom("echo"), msg[1]))


async def test_seed_example_both_ways(
    otp_release: str, beam_node: BeamNodeFactory, py: Node
) -> None:
    """``send_message(Node, Msg)``: ``rpc:call(Node, global, whereis_name, [shared_process])``
    then send, with the Python node as ``Node``; and a BEAM as ``Node`` from Python."""
    beam, other = await connected_trio(beam_node, otp_release, py)
    p = quoted(py.node_atom.name)
    send_message = ("Pid = rpc:call({node}, global, whereis_name, [{name}]),"
                    " Pid ! {{self(), {msg}}},"
                    " receive {{echo, {msg}}} -> {{ok, node(Pid)}} after 10000 -> timeout end")
    # the Python node registers the name; a BEAM asks the Python node where it is
    server = py.spawn(echo)
    assert await py.global_register("shared_process", server.pid)
    out = await beam.eval_async(send_message.format(node=p, name="shared_process", msg="hi"))
    assert out == f"{{ok,{p}}}"
    # a BEAM registers a name; a BEAM asks the Python node where it is
    await other.eval_async(
        "Pid = spawn(fun Loop() -> receive {From, M} -> From ! {echo, M}, Loop() end end),"
        " yes = global:register_name(beam_shared, Pid), global:sync()")
    await py.global_sync(timeout=10)
    out = await beam.eval_async(send_message.format(node=p, name="beam_shared", msg="yo"))
    assert out == f"{{ok,'{other.name}'}}"
    # Python asks a BEAM node where each name is, then sends
    box = py.mailbox()
    for name in ("shared_process", "beam_shared"):
        pid = await py.rpc(beam.name, "global", "whereis_name", [Atom(name)])
        assert isinstance(pid, Pid)
        await py.send(pid, (box.pid, Atom(name)), sender=box.pid)
        assert await box.receive(timeout=10) == (Atom("echo"), Atom(name))
    # a registration made through rpc into the Python node reaches every node
    out = await beam.eval_async(
        f"P = spawn(fun() -> receive stop -> ok end end),"
        f" {{rpc:call({p}, global, register_name, [via_py, P]), P}}")
    assert out.startswith("{yes,")
    assert await beam.eval_async("global:sync(), node(global:whereis_name(via_py))") == (
        quoted(beam.name))
    assert await other.eval_async("global:sync(), is_pid(global:whereis_name(via_py))") == (
        "true")


def foreign_fun(creator: Pid, arity: int = 0) -> str:
    """Erlang source for a fun of ``only_on_caller``, a module no node has (no compiler
    needed: a BEAM decodes a fun of any module, and fails with undef when it is called)."""
    fun = Fun(arity, bytes(range(16)), 0, Atom("only_on_caller"), 0, 12345, creator, ())
    return f'binary_to_term(base64:decode("{base64.b64encode(etf.encode(fun)).decode()}"))'


async def test_a_fun_spawned_onto_python_is_undef_with_an_error_report(
    otp_release: str, beam_node: BeamNodeFactory, py: Node,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fun of a module the node does not have: ``undef`` as on a BEAM without the module,
    and the error report a BEAM logs, here and in the caller's log."""
    beam, other = await connected_trio(beam_node, otp_release, py)
    p, o = quoted(py.node_atom.name), quoted(other.name)
    fun = foreign_fun(py.mailbox().pid)
    spawn = (f"F = begin {fun} end, {{_, R}} = spawn_monitor({{n}}, F),"
             " receive {'DOWN', R, _, _, Why} -> Why after 10000 -> timeout end")
    caplog.set_level(logging.ERROR, logger="pyerl_node")
    reference = await beam.eval_async(at(spawn, o))
    assert reference.startswith("{undef,[{#Fun<only_on_caller.")
    assert await beam.eval_async(at(spawn, p)) == reference
    erpc = f"F = begin {fun} end, try erpc:call({{n}}, F) catch C:R -> {{C, R}} end"
    reference = await beam.eval_async(at(erpc, o))
    assert "{erlang,apply,2,[]}" in reference
    assert await beam.eval_async(at(erpc, p)) == reference
    assert any("Error in process" in r.getMessage() and beam.name in r.getMessage()
               for r in caplog.records)
    report = f"on node {p} with exit value:"
    for _ in range(100):
        if report in beam.output:
            break
        await asyncio.sleep(0.05)
    assert report in beam.output
    assert "{undef,[{#Fun<only_on_caller." in beam.output.split(report, 1)[1]


async def test_elixir_node_spawn_and_rpc(
    beam_node: BeamNodeFactory, py: Node, caplog: pytest.LogCaptureFixture
) -> None:
    ex = beam_node("25", elixir=True)
    p = py.node_atom.name
    caplog.set_level(logging.ERROR, logger="pyerl_node")
    module = "defmodule OnlyInElixir do\n def f, do: fn -> :ok end\nend\n"
    out = await asyncio.to_thread(ex.eval_elixir, module + (
        f'{{pid, ref}} = :erlang.spawn_monitor(:"{p}", OnlyInElixir.f())\n'
        'receive do {:DOWN, ^ref, _, _, why} -> why after 10000 -> :timeout end'))
    assert out.startswith("{:undef, [{#Function<") and out.endswith(", [], []}]}")
    out = await asyncio.to_thread(ex.eval_elixir, f'is_pid(Node.spawn(:"{p}", OnlyInElixir.f()))')
    assert out == "true"
    report = f'on node :"{p}" raised an exception'  # Elixir's logger words the report so
    for _ in range(100):
        if ex.output.count(report) == 2:
            break
        await asyncio.sleep(0.05)
    assert ex.output.count(report) == 2  # the caller sees both crashes, as from a BEAM
    assert sum("Error in process" in r.getMessage() for r in caplog.records) == 2
    out = await asyncio.to_thread(ex.eval_elixir, f':rpc.multicall([node(), :"{p}"], '
                                  ':erlang, :node, [])')
    assert out == f'{{[:"{ex.name}", :"{p}"], []}}'
    out = await asyncio.to_thread(ex.eval_elixir, f':rpc.call(:"{p}", :erlang, :whereis, [:rex])')
    assert out.startswith("#PID<")
