"""Start the Python EPMD daemon when nothing listens on the EPMD port, as ``erl`` starts epmd.

``await ensure_epmd(port)``:

1. If something accepts TCP connections on 127.0.0.1:``port``, that is the host's EPMD:
   return ``None``.
2. Otherwise run ``<this Python> -m epmd --daemon --print-pid --port PORT`` (plus
   ``--address`` when given; without it the daemon honours ``$ERL_EPMD_ADDRESS`` and listens
   like epmd, loopback included). That launcher detaches the daemon (double fork, new
   session: the daemon is not our child, so it outlives this process and never becomes our
   zombie) and exits once the daemon listens, printing its pid, or exits 1 with the reason.
   We wait for the launcher (it is our child, so we reap it) and return the daemon's pid.
3. If the launcher fails but something now accepts on the port (another node started an
   EPMD at the same moment), return ``None``; else raise ``EpmdError`` naming the port,
   the address and the daemon's reason.

Every wait is bounded by ``timeout`` in total and runs on the event loop (an asyncio
subprocess, no blocking call). The daemon is the ``epmd`` package shipped beside this one;
its behaviour is described in ``epmd/server.py``. docs/protocol/distribution.md section 2 is the
protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

from pyerl_node.proto.errors import EpmdError, LocalProtocolError

__all__ = ["ensure_epmd", "epmd_accepts"]

LOOPBACK = "127.0.0.1"
_PROBE_TIMEOUT = 1.0
# The directory holding both pyerl_node and epmd (a checkout, or site-packages).
_PACKAGES_ROOT = Path(__file__).resolve().parents[2]


async def epmd_accepts(port: int, host: str = LOOPBACK, *,
                       timeout: float = _PROBE_TIMEOUT) -> bool:
    """True if a TCP connection to ``host:port`` is accepted within ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _daemon_command(port: int, address: str | None) -> list[str]:
    if not sys.executable:
        raise EpmdError(f"cannot start an EPMD for port {port}: no Python executable known")
    command = [sys.executable, "-m", "epmd", "--daemon", "--print-pid", "--port", str(port)]
    if address is not None:
        command += ["--address", address]
    return command


def _daemon_env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(_PACKAGES_ROOT) + (os.pathsep + path if path else "")
    return env


async def ensure_epmd(port: int, *, address: str | None = None,
                      timeout: float = 5.0) -> int | None:
    """Make sure an EPMD accepts on 127.0.0.1:``port``; the pid of the daemon started for
    that, or ``None`` if one was already there. Raises ``EpmdError`` if none can be had."""
    if not 0 < port <= 0xFFFF:
        raise LocalProtocolError(f"EPMD port {port} is not a TCP port number")
    where = f"port {port}" + ("" if address is None else f" (address {address})")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    if await epmd_accepts(port, timeout=min(_PROBE_TIMEOUT, timeout)):
        return None
    proc = await asyncio.create_subprocess_exec(
        *_daemon_command(port, address), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_daemon_env(),
        start_new_session=True,  # the terminal's Ctrl-C is for the node, not the launcher
    )
    try:
        async with asyncio.timeout_at(deadline):
            out, err = await proc.communicate()
    except TimeoutError:
        # Killing the launcher closes the daemon's report pipe: the daemon then exits too.
        raise EpmdError(f"the Python EPMD for {where} did not start listening within "
                        f"{timeout:g}s") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_PROBE_TIMEOUT):
                    await proc.wait()  # reaped: no zombie
    if proc.returncode == 0:
        try:
            return int(out.split()[0])
        except (IndexError, ValueError):
            raise EpmdError(f"the Python EPMD for {where} started but did not say its pid: "
                            f"{out[:200]!r}") from None
    reason = (err.decode("utf-8", "replace").strip().splitlines() or ["no reason given"])[-1]
    left = max(0.0, deadline - loop.time())
    if await epmd_accepts(port, timeout=min(_PROBE_TIMEOUT, left) or 0.1):
        return None  # another node's EPMD came up meanwhile: use it
    raise EpmdError(f"cannot start the Python EPMD on {where}: {reason.removeprefix('epmd: ')}")
