"""Messaging over TLS distribution against BEAM<->BEAM over TLS, with plain TCP beside it.

``python -m bench.bench_tls [--quick] [--rounds N] [--tls-version 1.2|1.3]`` prints one table.

How it works: the measurements of ``bench/bench_node.py`` (its ``Bench``, same Erlang module,
same twins: each Python figure next to two BEAM nodes doing the same work in the same run) on
two sets of nodes that live side by side on one private EPMD: a Python node and BEAM nodes
``a``, ``b`` over plain TCP, and another three over ``-proto_dist inet_tls``. OTP 25 only: the
OTP 28 runtime of the PyPI wheel has no ssl application. The TLS nodes share one
``-ssl_dist_optfile`` (docs/protocol/tls.md §2) with mutual verification: ``verify_peer`` both
ways, ``fail_if_no_peer_cert``, one EC P-256 leaf made by ``tests/tls_certs.py`` into a temporary
directory, carrying ``DNS:127.0.0.1`` for the host name rule (docs/protocol/tls.md §4.1).

What is measured, in each round and for each transport: connect (handshake included), small
messages one way then the other, 16 MB binaries, and sequential calls (p50, p99). A round does
every measurement once over each transport (TCP first in odd rounds, TLS first in even ones),
so a burst of load from elsewhere on the machine hits one round of both rather than all
rounds of one. Each figure is the median over
the rounds (at least 3), shown with its spread: half the range of the rounds, in percent of the
median. The ratio to the BEAM and its target are ``bench_node``'s; "TLS cost" is how many times
worse a figure is over TLS than over TCP (throughput: TCP / TLS; times: TLS / TCP), for the
Python node and for the BEAM, so the encryption's own share is visible next to the node's.

The benchmark is a script that reports; nothing in it asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import os
import platform
import secrets
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bench.bench_node import (
    SMALL_ERL,
    SMALL_PY,
    TAG,
    Bench,
    Row,
    Sizes,
    Traffic,
    bench_nodes,
    compile_module,
    format_value,
)
from interop_tests.beam import LOCALHOST, Epmd
from interop_tests.runtimes import find_erl
from tests.tls_certs import erl_string, make_pki, optfile_text

RELEASE = "25"
BULK = 16 << 20  # bytes per bulk message

FULL = Sizes(small=50_000, calls=3_000, connects=5, bulk=((BULK, 6),), reps=1)
QUICK = Sizes(small=10_000, calls=500, connects=3, bulk=((BULK, 2),), reps=1)


class Transport(enum.Enum):
    TCP = "tcp"
    TLS = "tls"


@dataclass(frozen=True)
class Summary:
    """One measure on one transport: medians over the rounds, and how far the rounds spread."""

    transport: Transport
    row: Row  # the medians
    python_spread: float  # half the range of the rounds / the median
    beam_spread: float


def write_optfile(directory: Path, tls_version: str) -> Path:
    """The option file every TLS node of the run uses: our CA, one leaf, verify both ways."""
    pki = make_pki(directory)
    leaf = pki.issue("node", sans=("DNS:127.0.0.1", "IP:127.0.0.1"))
    side = {"certfile": erl_string(leaf.cert), "keyfile": erl_string(leaf.key),
            "cacertfile": erl_string(pki.ca), "verify": "verify_peer",
            "versions": f"['tlsv{tls_version}']"}
    path = directory / "dist.conf"
    path.write_text(optfile_text({**side, "fail_if_no_peer_cert": "true"}, side))
    return path


def traffic(sizes: Sizes) -> tuple[Traffic, Traffic]:
    """Small messages and 16 MB binaries, as ``Bench.throughput`` builds them."""
    small = Traffic("small msgs", "msg/s", 1, SMALL_ERL, SMALL_PY, sizes.small, 1, 0.3)
    (size, count), = sizes.bulk
    bulk = Traffic(f"{size >> 20} MB binaries x{count}", "MB/s", size / 1e6,
                   f"{{pyerl_bench, 0, binary:copy(<<7>>, {size})}}", (TAG, 0, bytes([7]) * size),
                   count, 1, 0.5)
    return small, bulk


async def warm_up(bench: Bench) -> None:
    """One short run of each kind of traffic, whose rows are dropped."""
    small, bulk = traffic(bench.sizes)
    await bench.connect_all()
    await bench.flow(replace(small, count=small.count // 10))
    await bench.flow(replace(bulk, count=1))
    bench.rows.clear()


async def one_round(bench: Bench) -> list[Row]:
    """Every measurement once; the rows of this round."""
    small, bulk = traffic(bench.sizes)
    await bench.connect()
    await bench.connect_all()
    await bench.flow(small)
    await bench.flow(bulk)
    await bench.calls()
    rows = list(bench.rows)
    bench.rows.clear()
    return rows


def spread(values: Sequence[float]) -> float:
    middle = statistics.median(values)
    return (max(values) - min(values)) / 2 / middle if middle else 0.0


def summarize(transport: Transport, rounds: list[list[Row]]) -> list[Summary]:
    """Per measure, the median of the rounds' Python, BEAM and CPU figures."""
    summaries = []
    for same in zip(*rounds, strict=True):
        first = same[0]
        if any(r.what != first.what for r in same):
            raise RuntimeError(f"the rounds measured different things: {same}")
        pythons = [r.python for r in same]
        beams = [r.beam for r in same]
        cpus = [r.cpu_us for r in same if r.cpu_us is not None]
        row = replace(first, python=statistics.median(pythons), beam=statistics.median(beams),
                      cpu_us=statistics.median(cpus) if cpus else None)
        summaries.append(Summary(transport, row, spread(pythons), spread(beams)))
    return summaries


def tls_cost(tls: Row, tcp: Row, *, python: bool) -> str:
    """How many times worse ``tls`` is than ``tcp`` (>1: TLS costs)."""
    over, plain = (tls.python, tcp.python) if python else (tls.beam, tcp.beam)
    if not (over and plain):
        return "-"
    return f"{plain / over if tls.higher_is_better else over / plain:.2f}x"


def print_table(summaries: list[Summary], title: list[str]) -> None:
    print("\n".join(title))
    header = ("measure", "unit", "dist", "python", "+-", "beam<->beam", "+-", "py/beam",
              "target", "", "py CPU us/op", "TLS cost py", "TLS cost beam")
    tcp = {s.row.what: s.row for s in summaries if s.transport is Transport.TCP}
    lines = [header]
    for s in sorted(summaries, key=lambda s: (list(tcp).index(s.row.what), s.transport.value)):
        r = s.row
        plain = tcp[r.what] if s.transport is Transport.TLS else None
        lines.append((
            r.what, r.unit, s.transport.value, format_value(r.python),
            f"{s.python_spread:.0%}", format_value(r.beam), f"{s.beam_spread:.0%}",
            r.ratio_text(), r.target_text(), r.verdict(),
            "" if r.cpu_us is None else f"{r.cpu_us:.1f}",
            "" if plain is None else tls_cost(r, plain, python=True),
            "" if plain is None else tls_cost(r, plain, python=False)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip())


async def main_async(sizes: Sizes, rounds: int, tls_version: str, title: str) -> None:
    epmd = Epmd.start(RELEASE)
    load_before = os.getloadavg()
    results: dict[Transport, list[list[Row]]] = {t: [] for t in Transport}
    try:
        with tempfile.TemporaryDirectory(prefix="pyerl_bench_tls_") as tmp:
            directory = Path(tmp)
            compile_module(directory)
            optfile = write_optfile(directory, tls_version)
            cookie = f"bench_{secrets.token_hex(8)}"
            async with bench_nodes(RELEASE, epmd.port, cookie, directory) as tcp_nodes, \
                    bench_nodes(RELEASE, epmd.port, cookie, directory, optfile) as tls_nodes:
                benches = {Transport.TCP: Bench(RELEASE, *tcp_nodes, sizes),
                           Transport.TLS: Bench(RELEASE, *tls_nodes, sizes)}
                for bench in benches.values():
                    await warm_up(bench)
                for number in range(1, rounds + 1):
                    # which transport goes first alternates: neither always runs warmer
                    order = list(benches.items())[::1 if number % 2 else -1]
                    for transport, bench in order:
                        results[transport].append(await one_round(bench))
                    print(f"round {number}/{rounds} done", file=sys.stderr)
    finally:
        epmd.stop()
    loads = " / ".join(" ".join(f"{v:.2f}" for v in avg) for avg in (load_before, os.getloadavg()))
    summaries = [s for t in Transport for s in summarize(t, results[t])]
    print_table(summaries, [
        f"{title} ({sizes.small} small msgs, {sizes.calls} calls per round; median of {rounds} "
        "rounds, +- = half their range)",
        f"load average before / after: {loads}; py CPU = this process's CPU time per message "
        "or call; TLS cost = how many times worse than over TCP",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_tls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer messages and rounds")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds to take the median of (default 5, --quick 3; at least 3)")
    parser.add_argument("--tls-version", choices=("1.2", "1.3"), default="1.2",
                        help="the one TLS version the nodes allow (default 1.2, the version "
                             "inet_tls_dist uses when the option file names none)")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 5)
    if rounds < 3:
        parser.error("--rounds must be at least 3: a spread needs a few samples")
    if find_erl(RELEASE) is None:
        raise SystemExit(f"OTP {RELEASE} (with its ssl application) is not installed")
    sizes = QUICK if args.quick else FULL
    title = (f"pyerl_node TLS distribution benchmark: Python {platform.python_version()} vs "
             f"BEAM<->BEAM (OTP {RELEASE}), TLS {args.tls_version} and plain TCP in the same "
             f"run, {os.cpu_count()} CPUs, {'--quick' if args.quick else 'full'} run, "
             f"names @{LOCALHOST}")
    asyncio.run(main_async(sizes, rounds, args.tls_version, title))


if __name__ == "__main__":
    main()
