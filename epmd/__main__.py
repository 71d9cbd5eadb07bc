"""``python -m epmd``: run the EPMD server until KILL_REQ or Ctrl-C.

Options mirror the real daemon's: ``--port`` (default ``$ERL_EPMD_PORT`` or 4369),
``--address`` (comma-separated or repeated; default 127.0.0.1, add ``::1`` for IPv6) and
``--relaxed-command-check``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from epmd.server import EpmdServer
from pyerl_node.proto.errors import EpmdError
from pyerl_node.runtime.epmd_client import default_epmd_port


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m epmd", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None,
                        help="TCP port (default: $ERL_EPMD_PORT or 4369)")
    parser.add_argument("--address", action="append", default=None,
                        help="address to listen on, comma-separated or repeated "
                             "(default 127.0.0.1)")
    parser.add_argument("--relaxed-command-check", action="store_true",
                        help="honour KILL with live nodes and STOP, as epmd "
                             "-relaxed_command_check")
    parser.add_argument("--request-timeout", type=float, default=60.0,
                        help="close connections that send no complete request in this "
                             "many seconds (default 60)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log INFO (-v) or DEBUG (-vv) to stderr")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> None:
    server = EpmdServer(
        address=",".join(args.address or ["127.0.0.1"]),
        port=default_epmd_port() if args.port is None else args.port,
        relaxed_command_check=args.relaxed_command_check,
        request_timeout=args.request_timeout,
    )
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_stop)
    try:
        await server.serve_forever()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(_run(args))
    except EpmdError as exc:
        print(f"epmd: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
