"""``python -m epmd``: run the EPMD server until KILL_REQ, SIGTERM or Ctrl-C.

Options and environment as the real daemon's (``epmd -help``):

* ``--port`` (default ``$ERL_EPMD_PORT``, else 4369);
* ``--address LIST`` (comma-separated, repeatable; default ``$ERL_EPMD_ADDRESS``, else every
  interface, IPv4 and IPv6); a list always gets the loopback addresses too (``epmd.addresses``);
* ``--relaxed-command-check`` (also ``$ERL_EPMD_RELAXED_COMMAND_CHECK`` set);
* ``--daemon``: detach (``epmd.daemonize``); exits 0 once the daemon listens, else 1 with
  the reason. ``--pidfile`` writes the daemon's pid, ``--print-pid`` prints it.

A port in use, an address that cannot be parsed or bound: one line on stderr and exit status 1.
The server raises its soft limit on open files (up to the hard limit) so that
``--max-connections`` fits in it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from epmd.addresses import ListenAddress, listen_plan, split_address_list
from epmd.daemonize import Readiness, detach, remove_pidfile, write_pidfile
from epmd.server import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT,
    FD_HEADROOM,
    EpmdServer,
)
from pyerl_node.proto.epmd_wire import DEFAULT_EPMD_PORT
from pyerl_node.proto.errors import EpmdError

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m epmd", description="The Erlang Port Mapper Daemon, in Python.",
        epilog="Environment: ERL_EPMD_PORT, ERL_EPMD_ADDRESS, ERL_EPMD_RELAXED_COMMAND_CHECK, "
               "as for epmd.")
    parser.add_argument("--port", type=int, default=None,
                        help=f"TCP port (default: $ERL_EPMD_PORT or {DEFAULT_EPMD_PORT})")
    parser.add_argument("--address", action="append", default=None, metavar="LIST",
                        help="listen only on these IP addresses (comma-separated or repeated) "
                             "and on loopback (default: $ERL_EPMD_ADDRESS, else every "
                             "interface, IPv4 and IPv6)")
    parser.add_argument("--daemon", action="store_true",
                        help="detach and run in the background, as epmd -daemon; exit 0 "
                             "once it listens")
    parser.add_argument("--pidfile", type=Path, default=None,
                        help="write the server's pid to this file (removed at exit)")
    parser.add_argument("--print-pid", action="store_true",
                        help="with --daemon: print the daemon's pid on stdout")
    parser.add_argument("--relaxed-command-check", action="store_true",
                        help="honour KILL with live nodes and STOP, as epmd "
                             "-relaxed_command_check")
    parser.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT,
                        metavar="SECONDS",
                        help="close connections that are not registrations after this long "
                             f"(default {DEFAULT_REQUEST_TIMEOUT:g})")
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                        metavar="N",
                        help="open connections at most; beyond, the oldest that are not "
                             f"registrations are closed (default {DEFAULT_MAX_CONNECTIONS})")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log INFO (-v) or DEBUG (-vv) to stderr")
    args = parser.parse_args(argv)
    if args.request_timeout <= 0 or args.max_connections < 1:
        parser.error("--request-timeout and --max-connections must be positive")
    if args.daemon and not hasattr(os, "fork"):
        parser.error("--daemon needs a POSIX system (fork)")
    return args


def _port(args: argparse.Namespace) -> int:
    if args.port is not None:
        port: int = args.port
        source = "--port"
    else:
        text = os.environ.get("ERL_EPMD_PORT", "")
        source = "ERL_EPMD_PORT"
        try:
            port = int(text) if text else DEFAULT_EPMD_PORT
        except ValueError:
            raise EpmdError(f"ERL_EPMD_PORT={text!r} is not a TCP port number") from None
    if not 0 <= port <= 0xFFFF:
        raise EpmdError(f"{source} {port} is not a TCP port number")
    return port


def _addresses(args: argparse.Namespace) -> list[ListenAddress]:
    if args.address is not None:
        listed = [a for item in args.address for a in split_address_list(item)]
    else:
        listed = split_address_list(os.environ.get("ERL_EPMD_ADDRESS", ""))
    return listen_plan(listed)


def _raise_fd_limit(max_connections: int) -> None:
    """Let ``max_connections`` sockets fit under the soft RLIMIT_NOFILE, as far as allowed."""
    if resource is None:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + FD_HEADROOM
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _run(args: argparse.Namespace, port: int, plan: list[ListenAddress],
               readiness: Readiness | None) -> None:
    server = EpmdServer(
        address=plan, port=port,
        relaxed_command_check=(args.relaxed_command_check
                               or "ERL_EPMD_RELAXED_COMMAND_CHECK" in os.environ),
        request_timeout=args.request_timeout,
        max_connections=args.max_connections,
    )
    await server.start()
    try:
        if args.pidfile is not None:
            write_pidfile(args.pidfile)
        if readiness is not None and not readiness.ready():
            return  # the starter gave up on us: nobody knows this daemon, do not linger
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.request_stop)
        await server.serve_forever()
    finally:
        await server.stop()
        if args.pidfile is not None:
            remove_pidfile(args.pidfile)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        port = _port(args)
        plan = _addresses(args)  # bad input fails here, in the foreground, before detaching
    except EpmdError as exc:
        print(f"epmd: {exc}", file=sys.stderr)
        return 1
    if args.pidfile is not None:
        args.pidfile = args.pidfile.resolve()  # the daemon leaves the working directory
    readiness = detach(print_pid=args.print_pid) if args.daemon else None
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        _raise_fd_limit(args.max_connections)
        asyncio.run(_run(args, port, plan, readiness))
    except (EpmdError, OSError) as exc:
        if readiness is not None:
            readiness.failed(str(exc))
        print(f"epmd: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
