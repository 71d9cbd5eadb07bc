"""A Python node driven over stdin/stdout: the Python side of the multi-host scenarios.

``python -m interop_tests.multihost.py_agent --sname py --cookie C [--net-ticktime 4]
[--inet6 | --proto-dist P] [--ssl-dist-optfile F] [--listen-host H]`` starts a
:class:`pyerl_node.node.Node` (global on, never starting an EPMD: the lab runs one per host;
``--inet6`` is short for ``--proto-dist inet6_tcp``; ``inet_tls`` takes the
``-ssl_dist_optfile`` file) and prints ``{"event": "ready", "node": ...}``.

Requests are JSON lines ``{"id": N, "op": OP, ...}``; each runs in its own task and is answered
``{"id": N, "ok": VALUE}`` or ``{"id": N, "error": TEXT}``. Events the node sees are printed
when they happen, stamped with the wall clock ``t`` (the test compares it with its own):
``nodeup``/``nodedown`` (``net_kernel:monitor_nodes``) and ``down`` (a monitor's DOWN).

Ops: ``register name`` (a new echo process: ``{From, Msg}`` is answered ``{got, Msg,
node()}``; ``global:register_name``), ``whereis name``, ``names``, ``nodes``, ``connect node``,
``sync``, ``send name text`` (``global:send`` of ``{Self, <<text>>}``, the answer's node back),
``monitor name`` (monitor the pid the global name has now), ``alive name`` (whether the echo
process registered under that name here is still running). Pids travel as
``{"node", "id", "serial"}``. Closing stdin stops the node and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pyerl_node.node import PROTO_DISTS, Node
from pyerl_node.proto.term_syntax import format_term
from pyerl_node.proto.terms import Atom, Pid, Term
from pyerl_node.runtime.process import Process

GOT = Atom("got")
DOWN = Atom("DOWN")
NODEUP = Atom("nodeup")
NODEDOWN = Atom("nodedown")

Json = Any


def emit(record: dict[str, Json]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def pid_json(pid: Pid | None) -> Json:
    return None if pid is None else {"node": pid.node.name, "id": pid.id, "serial": pid.serial}


async def echo(proc: Process) -> None:
    """Answer ``{From, Msg}`` with ``{got, Msg, node()}`` until killed."""
    while True:
        msg = await proc.receive()
        if type(msg) is tuple and len(msg) == 2 and isinstance(msg[0], Pid):
            await proc.send(msg[0], (GOT, msg[1], proc.pid.node))


class Agent:
    """The request handlers, on one running node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.echoes: dict[str, Process] = {}
        self.watcher = node.mailbox()
        node.monitor_nodes(self.watcher.pid)

    async def watch(self) -> None:
        """Print node and monitor events as they arrive at the watcher process."""
        while True:
            msg = await self.watcher.receive()
            now = time.time()
            if type(msg) is tuple and len(msg) == 2 and msg[0] in (NODEUP, NODEDOWN):
                assert isinstance(msg[0], Atom) and isinstance(msg[1], Atom)
                emit({"event": msg[0].name, "node": msg[1].name, "t": now})
            elif type(msg) is tuple and len(msg) == 5 and msg[0] is DOWN:
                target = msg[3]
                emit({"event": "down", "pid": pid_json(target if isinstance(target, Pid)
                                                        else None),
                      "reason": format_term(msg[4]), "t": now})

    async def op_register(self, name: str) -> Json:
        proc = self.node.spawn(echo)
        self.echoes[name] = proc
        ok = await self.node.global_register(Atom(name), proc.pid)
        return {"registered": ok, "pid": pid_json(proc.pid)}

    async def op_whereis(self, name: str) -> Json:
        return pid_json(self.node.global_whereis(Atom(name)))

    async def op_names(self) -> Json:
        return sorted(format_term(n) for n in self.node.global_registered_names())

    async def op_nodes(self) -> Json:
        return sorted(n.name for n in self.node.nodes())

    async def op_connect(self, node: str) -> Json:
        return await self.node.connect(node)

    async def op_sync(self) -> Json:
        await self.node.global_sync(timeout=15)
        return True

    async def op_send(self, name: str, text: str) -> Json:
        box = self.node.mailbox()
        try:
            await self.node.global_send(Atom(name), (box.pid, text.encode()), sender=box.pid)
            reply: Term = await box.receive(timeout=10)
        finally:
            box.exit()
        if not (type(reply) is tuple and len(reply) == 3 and reply[0] is GOT
                and isinstance(reply[2], Atom)):
            raise ValueError(f"unexpected reply {format_term(reply)}")
        return {"text": reply[1].decode() if isinstance(reply[1], bytes) else None,
                "node": reply[2].name}

    async def op_monitor(self, name: str) -> Json:
        pid = self.node.global_whereis(Atom(name))
        if pid is None:
            raise LookupError(f"no global name {name}")
        self.watcher.monitor(pid)
        return pid_json(pid)

    async def op_alive(self, name: str) -> Json:
        return self.echoes[name].alive


async def serve(agent: Agent, stop: asyncio.Event) -> None:
    """Read requests until stdin closes (then set ``stop``)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()
    while line := await reader.readline():
        task = loop.create_task(answer(agent, json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    stop.set()


async def answer(agent: Agent, request: dict[str, Json]) -> None:
    seq = request.pop("id")
    handler: Callable[..., Awaitable[Json]] = getattr(agent, f"op_{request.pop('op')}")
    try:
        emit({"id": seq, "ok": await handler(**request)})
    except Exception as exc:  # the test reads the error; the agent serves on
        emit({"id": seq, "error": f"{type(exc).__name__}: {exc}"})


async def main(args: argparse.Namespace) -> None:
    node = Node(args.sname or args.name, args.cookie, net_ticktime=args.net_ticktime,
                listen_host=args.listen_host, start_epmd=False,
                proto_dist="inet6_tcp" if args.inet6 else args.proto_dist,
                ssl_dist_optfile=args.ssl_dist_optfile)
    await node.start()
    agent = Agent(node)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [loop.create_task(agent.watch()), loop.create_task(serve(agent, stop))]
    emit({"event": "ready", "node": node.node_atom.name})
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await node.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="py_agent")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--sname")
    group.add_argument("--name")
    parser.add_argument("--cookie", required=True)
    parser.add_argument("--net-ticktime", type=float, default=60.0)
    parser.add_argument("--listen-host", default=None)
    dist = parser.add_mutually_exclusive_group()
    dist.add_argument("--inet6", action="store_true")
    dist.add_argument("--proto-dist", choices=PROTO_DISTS, default="inet_tcp")
    parser.add_argument("--ssl-dist-optfile", default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
