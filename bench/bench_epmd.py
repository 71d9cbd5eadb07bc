"""Benchmark: registrations/s and lookups/s of the Python EPMD vs the real epmd daemons.

Each daemon runs as its own OS process on its own port, listening on 127.0.0.1 (and, as epmd
adds it, ::1): ``python -m epmd`` for ours, the OTP 25 and OTP 28 ``epmd`` binaries for the
reference, started and stopped by pid. One
asyncio load generator drives them in turn (``--rounds`` times, interleaved; the median is
reported) with ``--clients`` concurrent clients for ``--seconds`` per measurement:

* register: connect, ALIVE2_REQ (a fresh name each time), read ALIVE2_X_RESP, close (which
  unregisters);
* lookup: connect, PORT_PLEASE2_REQ for a registered name, read PORT2_RESP until close;
* names: connect, NAMES_REQ, read until close (5 registered names).

The load generator shares the 2-core machine with the daemon under test, so absolute numbers
are a floor; the ratio column (ours / real epmd) is the point. Run:
``python bench/bench_epmd.py [--clients 32] [--seconds 2] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from interop_tests.beam import free_port  # noqa: E402
from interop_tests.runtimes import OTP_RELEASES, epmd_binary  # noqa: E402
from pyerl_node.proto.epmd_wire import (  # noqa: E402
    Alive2Req,
    NamesReq,
    PortPlease2Req,
    encode_request,
)


@dataclass
class Daemon:
    label: str
    port: int
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls, label: str, args: list[str], port: int) -> Daemon:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        daemon = cls(label, port, proc)
        deadline = time.monotonic() + 20
        while not _answers(port):
            if time.monotonic() > deadline or proc.poll() is not None:
                daemon.stop()
                raise RuntimeError(f"{label} did not start on port {port}")
            time.sleep(0.05)
        return daemon

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(encode_request(NamesReq()))
            return len(s.recv(4)) == 4
    except OSError:
        return False


async def _roundtrip(port: int, request: bytes, *, until_close: bool, size: int = 0) -> bytes:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, request)
        got = b""
        while until_close or len(got) < size:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                break
            got += chunk
        return got
    finally:
        sock.close()


async def _hold_registration(port: int, name: str) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, encode_request(Alive2Req(40000, name)))
    reply = await loop.sock_recv(sock, 6)
    if reply[:2] != b"v\x00":
        raise RuntimeError(f"could not register {name}: {reply!r}")
    return sock


async def _measure(clients: int, seconds: float,
                   op: Callable[[int, int], Awaitable[bool]]) -> tuple[float, int]:
    """Run ``op(client, i)`` in ``clients`` loops for ``seconds``; (ok per second, failures)."""
    done = 0
    failed = 0
    stop_at = time.monotonic() + seconds

    async def worker(client: int) -> None:
        nonlocal done, failed
        for i in itertools.count():
            if time.monotonic() >= stop_at:
                return
            try:
                ok = await op(client, i)
            except OSError:
                ok = False
            if ok:
                done += 1
            else:
                failed += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(c) for c in range(clients)))
    return done / (time.monotonic() - started), failed


async def bench_daemon(port: int, clients: int, seconds: float) -> dict[str, tuple[float, int]]:
    held = [await _hold_registration(port, f"held{i}") for i in range(5)]
    lookup = encode_request(PortPlease2Req("held0"))
    names = encode_request(NamesReq())
    tag = os.getpid()

    async def register(client: int, i: int) -> bool:
        req = encode_request(Alive2Req(41000 + client, f"r{tag}c{client}n{i}"))
        return (await _roundtrip(port, req, until_close=False, size=6))[:2] == b"v\x00"

    async def port_please(client: int, i: int) -> bool:
        return (await _roundtrip(port, lookup, until_close=True))[:2] == b"w\x00"

    async def list_names(client: int, i: int) -> bool:
        return (await _roundtrip(port, names, until_close=True)).count(b"\n") == 5

    try:
        return {
            "register/s": await _measure(clients, seconds, register),
            "lookup/s": await _measure(clients, seconds, port_please),
            "names/s": await _measure(clients, seconds, list_names),
        }
    finally:
        for sock in held:
            sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure every daemon this many times, interleaved; report the "
                             "median (the machine is shared, single runs are noisy)")
    args = parser.parse_args()

    commands: dict[str, tuple[list[str], int]] = {}
    port = free_port()
    commands["python epmd"] = (
        [sys.executable, "-m", "epmd", "--port", str(port), "--address", "127.0.0.1"], port)
    for release in OTP_RELEASES:
        binary = epmd_binary(release)
        if binary is None:
            print(f"epmd OTP {release}: not installed, skipped")
            continue
        port = free_port()
        commands[f"epmd OTP {release}"] = (
            [str(binary), "-port", str(port), "-address", "127.0.0.1"], port)

    daemons: list[Daemon] = []
    samples: dict[str, dict[str, list[float]]] = {}
    failures: dict[str, int] = {}
    try:
        for label, (cmd, port) in commands.items():
            daemons.append(Daemon.start(label, cmd, port))
        for _ in range(args.rounds):
            for daemon in daemons:
                result = asyncio.run(bench_daemon(daemon.port, args.clients, args.seconds))
                for metric, (rate, failed) in result.items():
                    samples.setdefault(daemon.label, {}).setdefault(metric, []).append(rate)
                    failures[daemon.label] = failures.get(daemon.label, 0) + failed
    finally:
        for daemon in daemons:
            daemon.stop()

    print(f"\nEPMD throughput (ops/s), {args.clients} concurrent clients, median of "
          f"{args.rounds} x {args.seconds:g}s (load generator on the same "
          f"{os.cpu_count()}-core machine)\n")
    labels = list(samples)
    reals = [lab for lab in labels if lab != "python epmd"]
    header = f"{'metric':<12}" + "".join(f"{lab:>16}" for lab in labels)
    header += "".join(f"{'ours/' + lab.split()[-1]:>14}" for lab in reals)
    print(header)
    for metric in ("register/s", "lookup/s", "names/s"):
        med = {lab: statistics.median(samples[lab][metric]) for lab in labels}
        row = f"{metric:<12}" + "".join(f"{med[lab]:>16.0f}" for lab in labels)
        if "python epmd" in med:
            row += "".join(f"{med['python epmd'] / med[lab]:>14.2f}" for lab in reals)
        print(row)
    if any(failures.values()):
        print(f"\nfailed operations: {failures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
