"""``pyerl-node``: run a node; ping, rpc, send to or report on a node; a shell; EPMD names.

``pyerl-node run --sname py --cookie C`` serves until SIGINT/SIGTERM, logging connections. As
``erl`` does, it listens on every interface (``--listen-host`` narrows it) and starts an EPMD
daemon (the Python one) when nothing listens on the EPMD port. The cookie defaults to
``~/.erlang.cookie``; ``--sname``/``--name`` and node arguments follow ``erl``'s rules (a bare
``beam`` means ``beam@<this host>``).

``run`` drives the node on uvloop's event loop when uvloop is installed (``pip install
pyerl-node[speed]``: faster socket I/O and timers), on asyncio's own loop otherwise, or when
``--no-uvloop`` or ``PYERL_NODE_LOOP=asyncio`` asks for it. It also raises glibc's malloc
thresholds so that big messages reuse freed pages (``pyerl_node.tune_malloc``; not with
``--no-tune-malloc``, nor when the environment sets them). Its first line says which loop runs
and whether malloc is tuned.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from pyerl_node import __version__, info, shell
from pyerl_node.node import PROTO_DISTS, Node, own_node_name
from pyerl_node.proto.errors import ErlNodeError, RpcError
from pyerl_node.proto.names import make_node_name
from pyerl_node.proto.term_syntax import TermSyntaxError, format_term, parse
from pyerl_node.proto.terms import Atom, Term, set_atom_limit
from pyerl_node.runtime import epmd_client
from pyerl_node.runtime.malloc_tuning import tune_malloc

log = logging.getLogger("pyerl_node.cli")

#: ``asyncio`` here keeps ``run`` on asyncio's own event loop even when uvloop is installed.
LOOP_ENV = "PYERL_NODE_LOOP"


def _add_node_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--name", help="long node name (name@host.domain or name@IP)")
    group.add_argument("--sname", help="short node name (name, or name@host)")
    parser.add_argument("--cookie", help="magic cookie (default: ~/.erlang.cookie)")
    parser.add_argument("--epmd-port", type=int, help="EPMD port (default $ERL_EPMD_PORT or 4369)")
    parser.add_argument("--embedded-epmd", action="store_true",
                        help="when no EPMD runs, run one inside this process (it ends with it)"
                             " instead of starting the EPMD daemon")
    parser.add_argument(
        "--net-ticktime", type=float, default=60.0, help="seconds of silence before nodedown"
    )
    parser.add_argument("--hidden", action="store_true", help="connect as a hidden node")
    parser.add_argument("--listen-host", default=None,
                        help="address to accept connections on (default: every interface)")
    parser.add_argument("--dist-port-min", type=int, default=0, metavar="PORT",
                        help="lowest distribution port (erl's inet_dist_listen_min)")
    parser.add_argument("--dist-port-max", type=int, default=0, metavar="PORT",
                        help="highest distribution port (erl's inet_dist_listen_max)")
    parser.add_argument("--proto-dist", choices=PROTO_DISTS, default="inet_tcp",
                        help="distribution transport (erl's -proto_dist)")
    parser.add_argument("--ssl-dist-optfile", metavar="FILE",
                        help="TLS options for inet_tls, in erl's -ssl_dist_optfile format")


def _node_name(args: argparse.Namespace, default_alive: str, long: bool) -> str:
    if args.name:
        return str(make_node_name(args.name, long=True))
    if args.sname:
        return str(make_node_name(args.sname, long=False))
    return str(make_node_name(default_alive, long=long))


def _make_node(args: argparse.Namespace, name: str, *, hidden: bool | None = None) -> Node:
    return Node(
        name,
        args.cookie,
        hidden=args.hidden if hidden is None else hidden,
        epmd_port=args.epmd_port,
        embedded_epmd=args.embedded_epmd,
        net_ticktime=args.net_ticktime,
        listen_host=args.listen_host,
        dist_port_min=args.dist_port_min,
        dist_port_max=args.dist_port_max or args.dist_port_min,
        proto_dist=args.proto_dist,
        ssl_dist_optfile=args.ssl_dist_optfile,
    )


def _target(text: str) -> str:
    """A node argument as erl reads it: ``beam`` is ``beam@<this host>``."""
    return str(own_node_name(text))


def _expose_all(node: Node, specs: list[str]) -> None:
    """``--expose MODULE[=ALIAS]``: import a Python module and publish it for rpc."""
    for spec in specs:
        module_name, _, alias = spec.partition("=")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise SystemExit(f"pyerl-node: cannot import {module_name!r}: {exc}") from exc
        node.expose(alias or module_name, module)


async def _run(args: argparse.Namespace) -> int:
    if args.atom_limit is not None:
        if args.atom_limit < 1:
            raise SystemExit("pyerl-node: --atom-limit must be a positive count")
        set_atom_limit(args.atom_limit)
    tuned = not args.no_tune_malloc and tune_malloc()
    node = _make_node(args, _node_name(args, "py", long=False))
    _expose_all(node, args.expose)
    await node.start()
    loop_name = "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") \
        else "asyncio"
    print(f"pyerl_node {node.node_atom.name} listening on port {node.port} ({loop_name} "
          f"event loop{', malloc tuned' if tuned else ''})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await node.stop()
    return 0


async def _ping(args: argparse.Namespace) -> int:
    target = _target(args.node)
    async with _make_node(args, _client_name(args, target), hidden=True) as node:
        ok = await node.ping(target, timeout=args.timeout)
    print("pong" if ok else "pang")
    return 0 if ok else 1


def _parse_term(text: str, as_json: bool) -> Term:
    try:
        return json.loads(text) if as_json else parse(text)
    except (ValueError, TermSyntaxError) as exc:
        raise SystemExit(f"pyerl-node: cannot parse {text!r}: {exc}") from exc


def _client_name(args: argparse.Namespace, target: str) -> str:
    # Without --name/--sname, take the target's host: it is reachable from here by definition.
    host = own_node_name(target)
    return _node_name(args, f"cli_{secrets.token_hex(3)}@{host.host}", long=host.is_long)


async def _rpc(args: argparse.Namespace) -> int:
    call_args = _parse_term(args.args, args.json)
    if not isinstance(call_args, list):
        raise SystemExit("pyerl-node: ARGS must be a list, e.g. '[1, 2]'")
    target = _target(args.node)
    async with _make_node(args, _client_name(args, target), hidden=True) as node:
        try:
            result = await node.rpc(
                target, args.module, args.function, call_args, timeout=args.timeout
            )
        except RpcError as exc:
            print(format_term((Atom("badrpc"), exc.reason)))
            return 1
    print(format_term(result))
    return 0


async def _send(args: argparse.Namespace) -> int:
    message = _parse_term(args.message, args.json)
    target = _target(args.node)
    async with _make_node(args, _client_name(args, target), hidden=True) as node:
        await node.send((Atom(args.name_to), Atom(target)), message)
        await asyncio.sleep(0.1)  # let the frame leave before the connection closes
    return 0


async def _info(args: argparse.Namespace) -> int:
    target = _target(args.node)
    async with _make_node(args, _client_name(args, target), hidden=True) as node:
        if not await node.connect(target):
            print(f"pyerl-node: cannot connect to {target}", file=sys.stderr)
            return 1
        report = await info.read_report(node, target, timeout=args.timeout)
    print(info.format_report(report, me=node.node_atom))
    return 0


def _shell(args: argparse.Namespace) -> int:
    name = _node_name(args, f"shell_{secrets.token_hex(3)}", long=False)
    return shell.run(_make_node(args, name), _target(args.connect) if args.connect else None)


async def _names(args: argparse.Namespace) -> int:
    for name, port in await epmd_client.names(args.host, epmd_port=args.epmd_port):
        print(f"name {name} at port {port}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyerl-node", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("--version", action="version", version=f"pyerl-node {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a node until SIGINT/SIGTERM")
    _add_node_options(run, required=False)
    run.add_argument("--atom-limit", type=int, metavar="N",
                     help="most atoms alive at once (erl's +t; default 1048576)")
    run.add_argument(
        "--expose", action="append", default=[], metavar="MODULE[=ALIAS]",
        help="publish a Python module for rpc (repeatable)",
    )
    run.add_argument("--no-uvloop", action="store_true",
                     help=f"asyncio's own event loop even if uvloop is installed "
                          f"(also {LOOP_ENV}=asyncio)")
    run.add_argument("--no-tune-malloc", action="store_true",
                     help="keep glibc's malloc thresholds (run raises them so that big "
                          "messages reuse freed pages)")
    run.set_defaults(handler=_run, loop_choice=True)

    ping = sub.add_parser("ping", help="ping a node: prints pong or pang")
    ping.add_argument("node")
    ping.add_argument("--timeout", type=float, default=10.0)
    _add_node_options(ping, required=False)
    ping.set_defaults(handler=_ping)

    rpc = sub.add_parser("rpc", help="rpc:call a function on a node and print the result")
    rpc.add_argument("node")
    rpc.add_argument("module")
    rpc.add_argument("function")
    rpc.add_argument("args", nargs="?", default="[]", help="argument list, e.g. '[1, foo]'")
    rpc.add_argument("--json", action="store_true", help="ARGS is JSON instead of Erlang syntax")
    rpc.add_argument("--timeout", type=float, default=10.0)
    _add_node_options(rpc, required=False)
    rpc.set_defaults(handler=_rpc)

    send = sub.add_parser("send", help="send a message to a registered name on a node")
    send.add_argument("node")
    send.add_argument("name_to", metavar="NAME")
    send.add_argument("message", help="the message in Erlang syntax (or JSON with --json)")
    send.add_argument("--json", action="store_true")
    _add_node_options(send, required=False)
    send.set_defaults(handler=_send)

    info_cmd = sub.add_parser("info", help="what observer's System tab shows about a node")
    info_cmd.add_argument("node")
    info_cmd.add_argument("--timeout", type=float, default=10.0)
    _add_node_options(info_cmd, required=False)
    info_cmd.set_defaults(handler=_info)

    shell_cmd = sub.add_parser("shell", help="an interactive Python prompt with a running node")
    shell_cmd.add_argument("--connect", metavar="NODE", help="connect to NODE at start")
    _add_node_options(shell_cmd, required=False)
    shell_cmd.set_defaults(handler=_shell, blocking=True)

    names = sub.add_parser("names", help="list the names registered in EPMD")
    names.add_argument("--host", default="127.0.0.1")
    names.add_argument("--epmd-port", type=int)
    names.set_defaults(handler=_names)
    return parser


def loop_factory(args: argparse.Namespace) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop for ``run`` when it is installed and not refused; None: asyncio's own."""
    if not getattr(args, "loop_choice", False) or getattr(args, "no_uvloop", False):
        return None
    if os.environ.get(LOOP_ENV, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _run_on_loop(main: Coroutine[Any, Any, int],
                 factory: Callable[[], asyncio.AbstractEventLoop] | None) -> int:
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    base = logging.INFO if args.command == "run" else logging.WARNING
    logging.basicConfig(
        level=max(base - 10 * args.verbose, logging.DEBUG),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if getattr(args, "blocking", False):  # runs its own event loop
            result: int = args.handler(args)
            return result
        code = _run_on_loop(args.handler(args), loop_factory(args))
        return code
    except ErlNodeError as exc:
        print(f"pyerl-node: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
