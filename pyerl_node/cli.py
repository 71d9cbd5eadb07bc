"""``pyerl-node``: run a node, ping a node, list EPMD names.

``pyerl-node run --name py@127.0.0.1 --cookie C`` serves until SIGINT/SIGTERM, logging
connections; it starts the Python EPMD in-process when nothing listens on the EPMD port.
The cookie defaults to ``~/.erlang.cookie`` and ``--sname``/``--name`` follow ``erl``'s rules.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import sys

from pyerl_node import epmd_client
from pyerl_node.errors import ErlNodeError
from pyerl_node.names import make_node_name, parse_node_name
from pyerl_node.node import Node

log = logging.getLogger("pyerl_node.cli")


def _add_node_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--name", help="long node name (name@host.domain or name@IP)")
    group.add_argument("--sname", help="short node name (name or name@host)")
    parser.add_argument("--cookie", help="magic cookie (default: ~/.erlang.cookie)")
    parser.add_argument("--epmd-port", type=int, help="EPMD port (default $ERL_EPMD_PORT or 4369)")
    parser.add_argument(
        "--net-ticktime", type=float, default=60.0, help="seconds of silence before nodedown"
    )
    parser.add_argument("--hidden", action="store_true", help="connect as a hidden node")


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
        net_ticktime=args.net_ticktime,
    )


async def _run(args: argparse.Namespace) -> int:
    node = _make_node(args, _node_name(args, "py@127.0.0.1", long=True))
    await node.start()
    print(f"pyerl_node {node.node_atom.name} listening on port {node.port}", flush=True)
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
    target = parse_node_name(args.node)
    # Without --name/--sname, take the target's host: it is reachable from here by definition.
    name = _node_name(args, f"ping_{secrets.token_hex(3)}@{target.host}", long=target.is_long)
    async with _make_node(args, name, hidden=True) as node:
        ok = await node.ping(args.node, timeout=args.timeout)
    print("pong" if ok else "pang")
    return 0 if ok else 1


async def _names(args: argparse.Namespace) -> int:
    for name, port in await epmd_client.names(args.host, epmd_port=args.epmd_port):
        print(f"name {name} at port {port}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyerl-node", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a node until SIGINT/SIGTERM")
    _add_node_options(run, required=False)
    run.set_defaults(handler=_run)

    ping = sub.add_parser("ping", help="ping a node: prints pong or pang")
    ping.add_argument("node")
    ping.add_argument("--timeout", type=float, default=10.0)
    _add_node_options(ping, required=False)
    ping.set_defaults(handler=_ping)

    names = sub.add_parser("names", help="list the names registered in EPMD")
    names.add_argument("--host", default="127.0.0.1")
    names.add_argument("--epmd-port", type=int)
    names.set_defaults(handler=_names)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    base = logging.INFO if args.command == "run" else logging.WARNING
    logging.basicConfig(
        level=max(base - 10 * args.verbose, logging.DEBUG),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(args.handler(args))
    except ErlNodeError as exc:
        print(f"pyerl-node: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
