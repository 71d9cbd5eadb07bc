"""The built-in modules between two Python nodes: each answers for the called node's own
processes, names and connections, fails with a BEAM's error shapes, and cannot be taken over
by a user module by accident (interop_tests/test_builtins_beam.py compares with real OTP)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import pytest

from pyerl_node.gen import From, GenServer, start_server
from pyerl_node.node import Node
from pyerl_node.proto.errors import LocalProtocolError, ProcessExit, RpcError
from pyerl_node.proto.terms import Atom, Export, Fun, Pid, Term
from pyerl_node.services.builtins.net_adm import host_text
from pyerl_node.services.builtins.net_kernel import ip_tuple
from pyerl_node.services.builtins.os import TIME_UNITS
from pyerl_node.services.builtins.peer_release import reads_ok_tuple
from pyerl_node.services.rpc import Exposed, Throw

ERROR_INFO = [(Atom("error_info"), {Atom("module"): Atom("erl_erts_errors")})]
UNDEF = Atom("undef")


def charlist(text: str) -> list[int]:
    return [ord(c) for c in text]


def badarg(function: str, args: list[Term]) -> Term:
    """``rpc:call``'s reason for a BIF's badarg."""
    return (Atom("EXIT"), (Atom("badarg"), [(Atom("erlang"), Atom(function), args, ERROR_INFO)]))


async def rpc_error(caller: Node, node: Atom, module: str, function: str,
                    args: list[Term]) -> Term:
    with pytest.raises(RpcError) as info:
        await caller.rpc(node, module, function, args)
    return info.value.reason


def a_fun(creator: Pid, arity: int = 0) -> Fun:
    return Fun(arity, bytes(16), 0, Atom("some_erlang_module"), 0, 1, creator, ())


async def test_erlang_nodes_names_and_processes(pair: tuple[Node, Node]) -> None:
    a, b = pair
    s = b.node_atom
    box = b.mailbox("probe")
    assert await a.rpc(s, "erlang", "node", []) is s
    assert await a.rpc(s, "erlang", "node", [box.pid]) is s
    assert await a.rpc(s, "erlang", "nodes", []) == [a.node_atom]
    assert await a.rpc(s, "erlang", "nodes", [Atom("this")]) == [s]
    assert await a.rpc(s, "erlang", "nodes", [[Atom("visible"), Atom("this")]]) == [
        a.node_atom, s]
    assert await a.rpc(s, "erlang", "nodes", [Atom("known")]) == [a.node_atom, s]
    assert await a.rpc(s, "erlang", "nodes", [Atom("hidden")]) == []
    assert await a.rpc(s, "erlang", "nodes", [[]]) == []
    assert await a.rpc(s, "erlang", "whereis", [Atom("probe")]) == box.pid
    assert await a.rpc(s, "erlang", "whereis", [Atom("nobody")]) is Atom("undefined")
    assert await a.rpc(s, "erlang", "whereis", [True]) is Atom("undefined")  # an atom too
    registered = await a.rpc(s, "erlang", "registered", [])
    assert set(registered) == set(b.registered()) and Atom("probe") in registered
    processes = await a.rpc(s, "erlang", "processes", [])
    assert box.pid in processes and all(p.node is s for p in processes)
    assert await a.rpc(s, "erlang", "is_process_alive", [box.pid])
    box.exit()
    assert not await a.rpc(s, "erlang", "is_process_alive", [box.pid])
    assert await a.rpc(s, "erlang", "monitor_node", [a.node_atom, True]) is True
    cases: list[tuple[str, list[Term]]] = [
        ("nodes", [Atom("bogus")]), ("nodes", [[Atom("visible"), 1]]), ("whereis", [b"probe"]),
        ("node", [1]), ("is_process_alive", [Atom("x")]),
        ("is_process_alive", [a.mailbox().pid]),  # another node's pid
        ("monitor_node", [a.node_atom, Atom("maybe")])]
    for function, args in cases:
        assert await rpc_error(a, s, "erlang", function, args) == badarg(function, args)


class Waiter(GenServer):
    async def handle_call(self, request: Term, from_: From) -> Term:
        return request


async def test_process_info(pair: tuple[Node, Node]) -> None:
    a, b = pair
    s = b.node_atom
    watcher = b.mailbox()
    server = start_server(b, Waiter(), name="waiter", link=watcher.pid)
    ref = watcher.monitor(server.pid)
    other = a.mailbox()
    other_ref = other.monitor((Atom("waiter"), s))
    await asyncio.sleep(0.05)
    server.mailbox.put(Atom("queued"))  # handled at once: only the next look is certain
    everything = dict(await a.rpc(s, "erlang", "process_info", [server.pid]))
    assert everything[Atom("registered_name")] is Atom("waiter")
    assert everything[Atom("links")] == [watcher.pid]
    assert everything[Atom("trap_exit")] is False
    assert everything[Atom("priority")] is Atom("normal")
    assert everything[Atom("group_leader")] == b.whereis("pyerl_group_leader")
    module, function, _arity = everything[Atom("initial_call")]
    assert (module, function) == (Atom("python:pyerl_node.runtime.genserver"),
                                  Atom("GenServer.serve"))
    assert everything[Atom("current_function")][1] is Atom("GenServer.serve")
    assert everything[Atom("dictionary")] == [
        (Atom("$ancestors"), [watcher.pid]),
        (Atom("$initial_call"), (Atom("python:tests.test_builtins"), Atom("Waiter.init"), 0))]
    items = [Atom(n) for n in ("status", "message_queue_len", "monitored_by", "monitors",
                               "memory", "registered_name")]
    info = dict(await a.rpc(s, "erlang", "process_info", [server.pid, items]))
    assert info[Atom("status")] is Atom("waiting")
    assert sorted(info[Atom("monitored_by")], key=repr) == sorted(
        [watcher.pid, other.pid], key=repr)
    assert info[Atom("monitors")] == []
    assert isinstance(info[Atom("memory")], int) and info[Atom("memory")] > 0
    assert dict(await a.rpc(s, "erlang", "process_info", [watcher.pid, [Atom("monitors")]])
                ) == {Atom("monitors"): [(Atom("process"), server.pid)]}
    # one item: {Item, Value}; an unregistered process's registered_name is []
    assert await a.rpc(s, "erlang", "process_info", [server.pid, Atom("links")]) == (
        Atom("links"), [watcher.pid])
    assert await a.rpc(s, "erlang", "process_info", [watcher.pid, Atom("registered_name")]) == []
    assert await a.rpc(s, "erlang", "process_info", [watcher.pid, [Atom("registered_name")]]
                       ) == [(Atom("registered_name"), [])]
    box = b.mailbox()
    box.mailbox.put(1)
    box.mailbox.put(2)
    assert await a.rpc(s, "erlang", "process_info", [box.pid, Atom("message_queue_len")]) == (
        Atom("message_queue_len"), 2)
    assert await a.rpc(s, "erlang", "process_info", [box.pid, Atom("current_function")]) == (
        Atom("current_function"), Atom("undefined"))  # driven by its caller: no code of its own
    box.exit()
    assert await a.rpc(s, "erlang", "process_info", [box.pid]) is Atom("undefined")
    assert await a.rpc(s, "erlang", "process_info", [box.pid, Atom("status")]) is Atom(
        "undefined")
    for args in ([server.pid, Atom("bogus")], [server.pid, [Atom("links"), Atom("bogus")]],
                 [other.pid], [Atom("waiter")]):
        assert await rpc_error(a, s, "erlang", "process_info", args) == badarg(
            "process_info", args)
    watcher.demonitor(ref)
    other.demonitor(other_ref)


async def test_system_info_memory_statistics(pair: tuple[Node, Node]) -> None:
    a, b = pair
    s = b.node_atom

    async def info(item: str) -> Term:
        return await a.rpc(s, "erlang", "system_info", [Atom(item)])

    assert await info("otp_release") == charlist("25")
    assert await info("version") == charlist("13.0")
    version = "".join(map(chr, await info("system_version")))
    assert version.startswith("Erlang/OTP 25 [pyerl_node ") and version.endswith("\n")
    assert await info("process_count") == len(await a.rpc(s, "erlang", "processes", []))
    assert await info("schedulers") == 1
    assert await info("wordsize") == 8
    assert await info("creation") == b.creation
    assert isinstance(await info("atom_count"), int)
    assert await rpc_error(a, s, "erlang", "system_info", [Atom("bogus")]) == badarg(
        "system_info", [Atom("bogus")])
    memory = dict(await a.rpc(s, "erlang", "memory", []))
    assert list(memory) == [Atom(k) for k in ("total", "processes", "processes_used",
                                              "system", "atom", "atom_used", "binary", "code",
                                              "ets")]
    assert memory[Atom("total")] >= memory[Atom("processes")] > 0
    assert memory[Atom("total")] == memory[Atom("processes")] + memory[Atom("system")]
    assert isinstance(await a.rpc(s, "erlang", "memory", [Atom("total")]), int)
    assert [k for k, _ in await a.rpc(s, "erlang", "memory", [[Atom("atom"), Atom("ets")]])
            ] == [Atom("atom"), Atom("ets")]
    assert await rpc_error(a, s, "erlang", "memory", [Atom("bogus")]) == badarg(
        "memory", [Atom("bogus")])
    total, since = await a.rpc(s, "erlang", "statistics", [Atom("wall_clock")])
    await asyncio.sleep(0.05)
    total2, since2 = await a.rpc(s, "erlang", "statistics", [Atom("wall_clock")])
    assert total2 >= total + 50 and since2 >= 50 and 0 <= since <= total
    cpu, _ = await a.rpc(s, "erlang", "statistics", [Atom("runtime")])
    assert cpu >= 0
    assert await a.rpc(s, "erlang", "statistics", [Atom("run_queue")]) == 0
    reductions, _ = await a.rpc(s, "erlang", "statistics", [Atom("reductions")])
    assert reductions > 0
    assert await rpc_error(a, s, "erlang", "statistics", [Atom("bogus")]) == badarg(
        "statistics", [Atom("bogus")])


async def test_erlang_apply(pair: tuple[Node, Node]) -> None:
    a, b = pair
    s = b.node_atom
    b.expose("pymod", {"add": lambda x, y: x + y})
    assert await a.rpc(s, "erlang", "apply", [Atom("pymod"), Atom("add"), [1, 2]]) == 3
    assert await a.rpc(s, "erlang", "apply", [Atom("erlang"), Atom("node"), []]) is s
    assert await a.rpc(s, "erlang", "apply", [Export(Atom("pymod"), Atom("add"), 2), [2, 3]]
                       ) == 5
    apply2: Term = (Atom("erlang"), Atom("apply"), 2, [])
    fun = a_fun(a.mailbox().pid)
    assert await rpc_error(a, s, "erlang", "apply", [fun, []]) == (
        Atom("EXIT"), (UNDEF, [(fun, [], []), apply2]))
    assert await rpc_error(a, s, "erlang", "apply", [fun, [1]]) == (
        Atom("EXIT"), ((Atom("badarity"), (fun, [1])), [apply2]))
    assert await rpc_error(a, s, "erlang", "apply", [Atom("notfun"), []]) == (
        Atom("EXIT"), ((Atom("badfun"), Atom("notfun")), [apply2]))
    assert await rpc_error(a, s, "erlang", "apply", [Atom("nomod"), Atom("f"), []]) == (
        Atom("EXIT"), (UNDEF, [(Atom("nomod"), Atom("f"), [], []),
                               (Atom("erlang"), Atom("apply"), 3, [])]))
    args = [Atom("pymod"), Atom("add"), Atom("notalist")]
    assert await rpc_error(a, s, "erlang", "apply", args) == badarg("apply", args)
    with pytest.raises(RpcError) as info:
        await a.erpc(s, "erlang", "apply", [fun, []])
    assert info.value.kind == "error" and info.value.reason == (UNDEF, [(fun, [], []), apply2])


async def test_global_through_rpc(pair: tuple[Node, Node]) -> None:
    a, b = pair
    s = b.node_atom
    await a.global_sync(timeout=10)
    box = a.mailbox()
    assert await a.rpc(s, "global", "register_name", [Atom("g1"), box.pid]) is Atom("yes")
    assert await a.rpc(s, "global", "register_name", [Atom("g1"), box.pid]) is Atom("no")
    assert await a.rpc(s, "global", "whereis_name", [Atom("g1")]) == box.pid
    for _ in range(200):  # the registration is cluster-wide
        if a.global_whereis("g1") == box.pid:
            break
        await asyncio.sleep(0.02)
    assert a.global_whereis("g1") == box.pid
    assert await a.rpc(s, "global", "registered_names", []) == [Atom("g1")]
    assert await a.rpc(s, "global", "send", [Atom("g1"), Atom("hello")]) == box.pid
    assert await box.receive(timeout=5) is Atom("hello")
    with pytest.raises(RpcError) as info:
        await a.rpc(s, "global", "send", [Atom("nobody"), Atom("x")])
    assert info.value.reason == (Atom("EXIT"), (Atom("badarg"), (Atom("nobody"), Atom("x"))))
    other = a.mailbox()
    assert await a.rpc(s, "global", "re_register_name", [Atom("g1"), other.pid]) is Atom("yes")
    assert await a.rpc(s, "global", "whereis_name", [Atom("g1")]) == other.pid
    assert await a.rpc(s, "global", "unregister_name", [Atom("g1")]) is Atom("ok")
    assert await a.rpc(s, "global", "whereis_name", [Atom("g1")]) is Atom("undefined")
    assert await a.rpc(s, "global", "sync", []) is Atom("ok")
    assert await a.rpc(s, "global", "sync", [[a.node_atom]]) is Atom("ok")
    lock = (Atom("res"), Atom("me"))
    assert await a.rpc(s, "global", "set_lock", [lock]) is True
    assert await a.rpc(s, "global", "set_lock", [lock, [s], 0]) is True
    assert await a.rpc(s, "global", "del_lock", [lock]) is True
    assert await a.rpc(s, "global", "trans", [lock, Export(Atom("erlang"), Atom("node"), 0)]
                       ) is s
    fun = a_fun(box.pid)
    with pytest.raises(RpcError) as info:
        await a.rpc(s, "global", "trans", [lock, fun, [s], 1])
    assert info.value.reason[1][0] is UNDEF
    assert await a.rpc(s, "global", "set_lock", [lock]) is True  # released after the failure
    assert await a.rpc(s, "global", "del_lock", [lock, [s]]) is True
    reason = await rpc_error(a, s, "global", "register_name", [Atom("x"), Atom("notpid")])
    assert reason[1][0] is Atom("function_clause")
    reason = await rpc_error(a, s, "global", "set_lock", [Atom("notalock")])
    assert reason[1][0] is Atom("function_clause")


async def test_net_adm_net_kernel(pair: tuple[Node, Node]) -> None:
    a, b = pair
    s = b.node_atom
    assert await a.rpc(s, "net_adm", "ping", [a.node_atom]) is Atom("pong")
    assert await a.rpc(s, "net_adm", "ping", [s]) is Atom("pong")
    assert await a.rpc(s, "net_adm", "ping", [Atom("nobody@127.0.0.1")]) is Atom("pang")
    ok, names = await a.rpc(s, "net_adm", "names", [])
    assert ok is Atom("ok")
    assert (charlist(b.name.alive), b.port) in names and (charlist(a.name.alive), a.port) in names
    assert await a.rpc(s, "net_adm", "names", [charlist("127.0.0.1")]) == (ok, names)
    assert await a.rpc(s, "net_adm", "names", [(1, 2)]) == (Atom("error"), Atom("address"))
    assert await a.rpc(s, "net_adm", "localhost", []) == charlist(socket.gethostname())
    assert await a.rpc(s, "net_kernel", "get_net_ticktime", []) == 60
    assert await a.rpc(s, "net_kernel", "connect_node", [s]) is True
    assert await a.rpc(s, "net_kernel", "connect_node", [Atom("nobody@127.0.0.1")]) is False
    ok, infos = await a.rpc(s, "net_kernel", "nodes_info", [])
    ((peer, info),) = infos
    assert peer is a.node_atom
    info = dict(info)
    assert info[Atom("owner")] == b.whereis("net_kernel")
    assert info[Atom("state")] is Atom("up") and info[Atom("type")] is Atom("normal")
    net_address, (ip, port), host, tcp, family = info[Atom("address")]
    assert (net_address, ip, tcp, family) == (Atom("net_address"), (127, 0, 0, 1), Atom("tcp"),
                                              Atom("inet"))
    assert isinstance(port, int) and host == charlist("127.0.0.1")
    assert await a.rpc(s, "net_kernel", "node_info", [a.node_atom, Atom("type")]) == (
        Atom("ok"), Atom("normal"))
    assert await a.rpc(s, "net_kernel", "node_info", [a.node_atom, Atom("bogus")]) == (
        Atom("error"), Atom("invalid_key"))
    assert await a.rpc(s, "net_kernel", "node_info", [Atom("x@y")]) == (
        Atom("error"), Atom("bad_node"))
    reason = await rpc_error(a, s, "net_kernel", "connect_node", [b"str"])
    assert reason == (Atom("EXIT"), (Atom("function_clause"), [
        (Atom("net_kernel"), Atom("connect_node"), [b"str"], [])]))
    # disconnect: the caller's node goes away (the reply cannot come back)
    box = a.mailbox()
    a.monitor_nodes(box.pid)
    with pytest.raises(RpcError):
        await a.rpc(s, "net_kernel", "disconnect", [a.node_atom])
    assert await box.receive(timeout=5) == (Atom("nodedown"), s)


async def test_os_application_code(pair: tuple[Node, Node]) -> None:
    a, b = pair
    s = b.node_atom
    b.expose("pymod", os)
    assert await a.rpc(s, "os", "getpid", []) == charlist(str(os.getpid()))
    assert await a.rpc(s, "os", "type", []) == (Atom("unix"), Atom("linux"))
    mega, sec, micro = await a.rpc(s, "os", "timestamp", [])
    assert abs(mega * 1_000_000 + sec + micro / 1e6 - __import__("time").time()) < 5
    now = await a.rpc(s, "os", "system_time", [])
    assert abs(now / 1e9 - await a.rpc(s, "os", "system_time", [Atom("second")])) < 5
    assert abs(await a.rpc(s, "os", "system_time", [1000]) -
               await a.rpc(s, "os", "system_time", [Atom("millisecond")])) < 5000
    assert set(TIME_UNITS) >= {Atom("native"), Atom("perf_counter"), Atom("milli_seconds")}
    assert await rpc_error(a, s, "os", "system_time", [Atom("bogus")]) == (
        Atom("EXIT"), (Atom("badarg"), [(Atom("os"), Atom("system_time"), [Atom("bogus")], [
            (Atom("error_info"), {Atom("module"): Atom("erl_kernel_errors")})])]))
    ((app, description, vsn),) = await a.rpc(s, "application", "which_applications", [])
    assert app is Atom("pyerl_node") and description and vsn
    assert await a.rpc(s, "application", "which_applications", [Atom("infinity")]) == [
        (app, description, vsn)]
    assert await a.rpc(s, "application", "loaded_applications", []) == [(app, description, vsn)]
    assert await a.rpc(s, "code", "which", [Atom("pymod")]) == charlist("python:os")
    assert await a.rpc(s, "code", "is_loaded", [Atom("pymod")]) == (
        Atom("file"), charlist("python:os"))
    assert await a.rpc(s, "code", "which", [Atom("lists")]) is Atom("non_existing")
    assert await a.rpc(s, "code", "is_loaded", [Atom("lists")]) is False
    assert await a.rpc(s, "code", "which", [Atom("erlang")]) == charlist(
        "python:pyerl_node.services.builtins.erlang.ErlangModule")
    loaded = dict(await a.rpc(s, "code", "all_loaded", []))
    assert set(loaded) >= {Atom("erlang"), Atom("global"), Atom("os"), Atom("pymod")}
    assert (await rpc_error(a, s, "code", "which", [b"x"]))[1][0] is Atom("function_clause")


async def test_multicall_of_builtins_has_no_bad_nodes(pair: tuple[Node, Node]) -> None:
    a, b = pair
    nodes: list[Atom | str] = [a.node_atom, b.node_atom]
    assert await a.multicall(nodes, "erlang", "node", []) == (nodes, [])


def test_builtin_names_are_reserved() -> None:
    exposed = Exposed()
    for name in ("erlang", "global", "net_adm", "net_kernel", "os", "application", "code",
                 "pg"):
        with pytest.raises(LocalProtocolError, match="replace_builtin=True"):
            exposed.expose(name, {"f": len})
    exposed.expose("mine", {"f": len})  # any other name is the user's
    assert exposed.lookup(Atom("mine"), Atom("f"), 1) is not None


def test_replacing_a_builtin_keeps_internal_functions() -> None:
    exposed = Exposed()

    def builtin_resolve(a: Term, b: Term, c: Term, d: Term) -> Atom:
        return Atom("builtin")

    def builtin_whereis(name: Term) -> Atom:
        return Atom("builtin")

    exposed.provide(Atom("global"), {"resolve_it": builtin_resolve,
                                     "whereis_name": builtin_whereis},
                    internal=frozenset({"resolve_it"}))
    exposed.expose("global", {"whereis_name": len, "resolve_it": len, "mine": len},
                   replace_builtin=True)
    g = Atom("global")
    assert exposed.lookup(g, Atom("whereis_name"), 1) == (len, True)  # the user's
    assert exposed.lookup(g, Atom("mine"), 1) == (len, True)
    assert exposed.lookup(g, Atom("resolve_it"), 4) == (builtin_resolve, False)  # internal
    assert exposed.origin(g) == "python:builtins"


async def test_node_expose_refuses_builtin_names(pair: tuple[Node, Node]) -> None:
    a, b = pair
    s = b.node_atom
    with pytest.raises(LocalProtocolError, match="built-in module"):
        b.expose("erlang", {"node": lambda: Atom("mine")})
    assert await a.rpc(s, "erlang", "node", []) is s
    b.expose("erlang", {"node": lambda: Atom("mine")}, replace_builtin=True, threaded=False)
    assert await a.rpc(s, "erlang", "node", []) is Atom("mine")
    with pytest.raises(RpcError):  # the user's module has no registered/0
        await a.rpc(s, "erlang", "registered", [])
    b.expose("global", {}, replace_builtin=True)
    with pytest.raises(RpcError):
        await a.rpc(s, "global", "whereis_name", [Atom("x")])
    # global's conflict resolution still reaches the node's own resolve_it
    p1, p2 = a.mailbox().pid, b.mailbox().pid
    low = p1 if p1.node.name < p2.node.name else p2
    method = Export(Atom("global"), Atom("random_notify_name"), 3)
    assert await a.rpc(s, "global", "resolve_it", [method, Atom("n"), p1, p2]) == low


async def test_spawned_fun_is_undef_with_an_error_report(
    pair: tuple[Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    """``spawn(Node, Fun)`` as a BEAM sends it: ``erlang:apply(Fun, [])``. The process ends
    with ``{undef, [{Fun, [], []}]}``; the node logs the BEAM's error report and sends it to
    the ``logger_proxy`` of the caller's node."""
    a, b = pair
    caplog.set_level(logging.ERROR, logger="pyerl_node")
    proxy = a.mailbox("logger_proxy")
    caller = a.mailbox()
    fun = a_fun(caller.pid)
    req = a.make_ref()
    kernel = a._kernel
    gl = a.whereis("pyerl_group_leader")
    assert gl is not None
    caller.monitoring[req] = b.mailbox().pid  # the monitor the request asks for (rpc does so)
    kernel.send_spawn_request(caller, b.node_atom, req, Atom("erlang"), Atom("apply"),
                              [fun, []], [Atom("monitor")], gl)
    reply = await caller.receive(lambda m: m[0] is Atom("spawn_reply"), timeout=5)
    pid = reply[3]
    down = await caller.receive(lambda m: m[0] is Atom("DOWN"), timeout=5)
    assert down[4] == (UNDEF, [(fun, [], [])])
    log, level, fmt, args, meta = await proxy.receive(timeout=5)
    assert (log, level) == (Atom("log"), Atom("error"))
    assert "".join(map(chr, fmt)) == "Error in process ~p on node ~p with exit value:~n~p~n"
    assert args == [pid, b.node_atom, (UNDEF, [(fun, [], [])])]
    assert meta[Atom("gl")] == gl and meta[Atom("pid")] == pid
    assert meta[Atom("error_logger")] == {Atom("emulator"): True, Atom("tag"): Atom("error")}
    assert any(r.getMessage().startswith(f"Error in process {pid!r} on node "
                                         f"{b.node_atom.name}")
               and a.node_atom.name in r.getMessage() for r in caplog.records)


def test_helpers() -> None:
    assert host_text((127, 0, 0, 1)) == "127.0.0.1"
    assert host_text((0, 0, 0, 0, 0, 0, 0, 1)) == "::1"
    assert host_text(charlist("localhost")) == "localhost"
    assert host_text((1, 2)) is None
    assert ip_tuple("::1") == ((0, 0, 0, 0, 0, 0, 0, 1), Atom("inet6"))
    assert ip_tuple("10.0.0.5") == ((10, 0, 0, 5), Atom("inet"))
    assert reads_ok_tuple("28", "16.4")
    assert reads_ok_tuple("26", "14.1.2")
    assert not reads_ok_tuple("26", "14.0.4")
    assert not reads_ok_tuple("25", "13.1.5")
    assert not reads_ok_tuple(None, None)


async def test_plain_spawns_end_as_beam_processes(
    pair: tuple[Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    """``spawn(Node, M, F, A)`` of exposed functions: a throw ends the process with
    ``{{nocatch, T}, Stack}`` and is reported; an exit is not; a return is ``normal``."""
    a, b = pair
    caplog.set_level(logging.ERROR, logger="pyerl_node")

    def leave(how: Atom) -> Term:
        if how is Atom("throw"):
            raise Throw(Atom("ball"))
        if how is Atom("exit"):
            raise ProcessExit(Atom("bye"))
        return how

    b.expose("spawned", {"leave": leave}, threaded=False)
    gl = a.whereis("pyerl_group_leader")
    assert gl is not None
    reasons = []
    for how in ("throw", "exit", "return"):
        caller = a.mailbox()
        req = a.make_ref()
        caller.monitoring[req] = b.mailbox().pid
        a._kernel.send_spawn_request(caller, b.node_atom, req, Atom("spawned"), Atom("leave"),
                                     [Atom(how)], [Atom("monitor")], gl)
        down = await caller.receive(lambda m: m[0] is Atom("DOWN"), timeout=5)
        reasons.append(down[4])
    assert reasons == [((Atom("nocatch"), Atom("ball")), []), Atom("bye"), Atom("normal")]
    assert sum("Error in process" in r.getMessage() for r in caplog.records) == 1
