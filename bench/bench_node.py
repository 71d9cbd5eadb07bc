"""Messaging benchmark of the Python node against BEAM<->BEAM on this machine (issue #4, "Speed").

``python -m bench.bench_node [--quick] [--otp 28 25]`` prints one table of ratios python / BEAM.

How it works: for each OTP release, two real BEAM nodes ``a`` and ``b`` and the Python node run on
one private EPMD; every BEAM OS process is stopped by pid at the end. A small Erlang module
(``ERL_MODULE``, compiled once by ``erlc``) is loaded on both BEAM nodes, so the BEAM side of every
measurement is compiled code, not ``erl_eval``. Each Python measurement has a BEAM <-> BEAM twin
doing the same work with the same message and count:

* connect: the time for ``net_kernel:connect_node/1`` (BEAM) or ``Node.connect`` (Python) to
  return, EPMD lookup and handshake included; the median of a few connect/disconnect rounds.
* throughput: K senders (1 or 4) send N messages in total to one receiver that counts them. The
  sender notes the OS wall clock (CLOCK_REALTIME, shared by every process on the host) before the
  first send, the receiver notes it at the N-th arrival; elapsed = the difference. That is
  delivery, including the sender's encoding and the receiver's decoding, not just enqueueing.
* calls: N sequential ``gen_server:call``s (BEAM, to a raw process that answers
  ``{'$gen_call', {From, Tag}, Req}`` with ``From ! {Tag, Req}`` or to a Python ``GenServer``) or
  ``Node.call`` (Python, to the same raw BEAM process); p50 and p99 of the round trips.

Every Python row also shows the CPU time the Python process spent per message or call: the part
of the cost that is the node's own work, without the waits for the BEAM side (still noisy when
other work shares the cores). ``--profile N`` runs the same under cProfile (CPU clock) and prints
the N costliest functions.

The benchmark is a script that reports; nothing in it asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import math
import os
import platform
import pstats
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from interop_tests.beam import LOCALHOST, BeamNode, Epmd, unique_name
from interop_tests.runtimes import OTP_RELEASES, epmd_binary, find_erl
from pyerl_node.gen import From, GenServer, start_server
from pyerl_node.node import Node
from pyerl_node.proto.terms import Atom, Pid, Term

ERL_MODULE = r"""
-module(pyerl_bench).
-export([sink/2, wait_sink/2, blast/4, echo/1, call_lat/3, connect_us/1]).

%% A registered receiver that counts N {pyerl_bench, _, _} messages, then waits to be asked
%% for the wall-clock time (us) of the N-th arrival. It returns once the name is registered.
%% Its queue is off-heap, so a burst that queues up is not copied by every garbage collection.
sink(Name, N) ->
    Parent = self(),
    Pid = spawn_opt(fun() ->
                        register(Name, self()),
                        Parent ! {registered, self()},
                        count(N),
                        Last = os:system_time(microsecond),
                        receive {report, From} -> From ! {sink_done, Last} end
                    end, [{message_queue_data, off_heap}]),
    receive {registered, Pid} -> ok end.

count(0) -> ok;
count(N) -> receive {pyerl_bench, _, _} -> count(N - 1) end.

wait_sink(Name, Timeout) ->
    Name ! {report, self()},
    receive {sink_done, Last} -> Last after Timeout -> timeout end.

%% K processes send N messages in total to Dest; returns the wall-clock time (us) of the start.
blast(Dest, Msg, N, K) ->
    Parent = self(),
    Start = os:system_time(microsecond),
    Pids = [spawn(fun() -> send_n(Dest, Msg, N div K), Parent ! {sent, self()} end)
            || _ <- lists:seq(1, K)],
    [receive {sent, P} -> ok end || P <- Pids],
    Start.

send_n(_, _, 0) -> ok;
send_n(Dest, Msg, N) -> Dest ! Msg, send_n(Dest, Msg, N - 1).

%% A registered process that answers the gen_server call protocol with the request.
echo(Name) ->
    Parent = self(),
    Pid = spawn(fun() -> register(Name, self()), Parent ! {registered, self()}, echo_loop() end),
    receive {registered, Pid} -> ok end.

echo_loop() ->
    receive {'$gen_call', {From, Tag}, Req} -> From ! {Tag, Req} end,
    echo_loop().

%% N sequential gen_server:calls; the round trips in ns, sorted.
call_lat(Dest, Req, N) ->
    lists:sort([begin
                    T0 = erlang:monotonic_time(nanosecond),
                    Req = gen_server:call(Dest, Req, 5000),
                    erlang:monotonic_time(nanosecond) - T0
                end || _ <- lists:seq(1, N)]).

%% The time (us) net_kernel:connect_node/1 takes; 'already' if Node is connected.
connect_us(Node) ->
    case lists:member(Node, nodes(connected)) of
        true -> already;
        false ->
            {Us, true} = timer:tc(net_kernel, connect_node, [Node]),
            Us
    end.
"""

_T = TypeVar("_T")

TAG = Atom("pyerl_bench")
SMALL_ERL = '{pyerl_bench, 12345, <<"small message">>}'
SMALL_PY: Term = (TAG, 12345, b"small message")
TIMEOUT = 120.0  # seconds: every wait of the benchmark is bounded by this


def now_us() -> int:
    """The wall clock in microseconds, the same clock as ``os:system_time(microsecond)``."""
    return time.time_ns() // 1000


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    small: int  # small messages per throughput run
    calls: int  # calls per latency run
    connects: int  # connect/disconnect rounds
    bulk: tuple[tuple[int, int], ...]  # (binary size in bytes, messages) per bulk run
    reps: int  # throughput runs per measurement; the median is reported


FULL = Sizes(small=50_000, calls=3_000, connects=9, bulk=((1 << 20, 48), (16 << 20, 6)), reps=5)
QUICK = Sizes(small=10_000, calls=500, connects=5, bulk=((1 << 20, 12), (16 << 20, 2)), reps=1)


@dataclass(frozen=True)
class Traffic:
    """What one throughput measurement sends: the same message from Erlang and from Python."""

    label: str
    unit: str
    unit_per_message: float  # how much of ``unit`` (per second) one message is
    erl: str  # the message as an Erlang expression
    py: Term  # the same message as a Python term
    count: int  # messages in total
    senders: int  # concurrent senders sharing the count
    target: float  # minimum python / beam ratio


@dataclass(frozen=True)
class Row:
    """One line of the table: a Python figure, its BEAM twin and the target on their ratio."""

    release: str
    what: str
    unit: str
    python: float
    beam: float
    higher_is_better: bool
    target: float | None  # bound on python / beam: minimum if higher is better, else maximum
    cpu_us: float | None = None  # the Python process's CPU time per message or call

    @property
    def ratio(self) -> float:
        return self.python / self.beam if self.beam else math.inf

    def ratio_text(self) -> str:
        # Rounded towards "worse", so that a shown ratio never seems to meet a missed target.
        if not math.isfinite(self.ratio):
            return "-"
        rounding = math.floor if self.higher_is_better else math.ceil
        return f"{rounding(self.ratio * 100) / 100:.2f}x"

    def verdict(self) -> str:
        if self.target is None:
            return ""
        met = self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target
        return "met" if met else "MISSED"

    def target_text(self) -> str:
        if self.target is None:
            return ""
        return f"{'>=' if self.higher_is_better else '<='} {self.target:g}x"


class Echo(GenServer):
    """The Python twin of the Erlang echo server."""

    async def handle_call(self, request: Term, from_: From) -> Term:
        return request


async def with_cpu(run: Awaitable[_T]) -> tuple[_T, float]:
    """The result of ``run`` and the CPU time this process spent meanwhile (all of it: the
    node, the benchmark's own bookkeeping, the idle threads that read the BEAM nodes' output)."""
    cpu = time.process_time()
    result = await run
    return result, time.process_time() - cpu


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _quoted(text: str, quote: str) -> str:
    return quote + text.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


def erl_atom(name: str) -> str:
    return _quoted(name, "'")


def erl_string(text: str) -> str:
    return _quoted(text, '"')


class Bench:
    """The nodes of one OTP release and the measurements between them."""

    def __init__(self, release: str, py: Node, a: BeamNode, b: BeamNode, sizes: Sizes) -> None:
        self.release = release
        self.py = py
        self.a = a
        self.b = b
        self.sizes = sizes
        self.rows: list[Row] = []
        self._names = 0

    def _fresh(self, prefix: str) -> str:
        self._names += 1
        return f"{prefix}{self._names}"

    def _row(self, what: str, unit: str, python: float, beam: float, *,
             higher_is_better: bool, target: float | None, cpu_us: float | None = None) -> None:
        self.rows.append(
            Row(self.release, what, unit, python, beam, higher_is_better, target, cpu_us))

    # -- connect --------------------------------------------------------------------------------
    # A sample is a connect from a disconnected state. Right after a disconnect, the other side
    # may connect back on its own (a late message, global's mesh); then the sample is retaken.

    async def _beam_connect_ms(self, src: BeamNode, dst: str) -> float | None:
        out = await src.eval_async(f"pyerl_bench:connect_us({erl_atom(dst)})", TIMEOUT)
        await src.eval_async(f"erlang:disconnect_node({erl_atom(dst)})", TIMEOUT)
        return None if out == "already" else int(out) / 1000

    async def _py_connect_ms(self, dst: str) -> float | None:
        if Atom(dst) in self.py.nodes("connected"):
            self.py.disconnect(dst)
            return None
        start = time.perf_counter()
        if not await self.py.connect(dst):
            raise RuntimeError(f"the Python node could not connect to {dst}")
        elapsed = (time.perf_counter() - start) * 1000
        self.py.disconnect(dst)
        return elapsed

    async def _median_connect(self, once: Callable[[], Awaitable[float | None]]) -> float:
        samples: list[float] = []
        for _ in range(4 * self.sizes.connects):
            sample = await once()
            if sample is not None:
                samples.append(sample)
                if len(samples) == self.sizes.connects:
                    return statistics.median(samples)
            await asyncio.sleep(0.2)  # let both ends finish tearing the connection down
        raise RuntimeError("the nodes kept reconnecting by themselves: no clean connect sample")

    async def connect(self) -> None:
        py_name = self.py.node_atom.name
        beam = await self._median_connect(lambda: self._beam_connect_ms(self.a, self.b.name))
        py_out = await self._median_connect(lambda: self._py_connect_ms(self.b.name))
        py_in = await self._median_connect(lambda: self._beam_connect_ms(self.a, py_name))
        self._row("connect python -> beam", "ms", py_out, beam,
                  higher_is_better=False, target=1.5)
        self._row("connect beam -> python", "ms", py_in, beam,
                  higher_is_better=False, target=1.5)

    async def connect_all(self) -> None:
        """Connect every pair, so that no later measurement pays for a handshake."""
        for beam in (self.a, self.b):
            if not await self.py.connect(beam.name):
                raise RuntimeError(f"the Python node could not connect to {beam.name}")
        await self.a.eval_async(f"true = net_kernel:connect_node({erl_atom(self.b.name)})")

    # -- throughput -----------------------------------------------------------------------------

    async def _start_beam_sink(self, count: int) -> str:
        sink = self._fresh("sink")
        await self.b.eval_async(f"pyerl_bench:sink({sink}, {count})", TIMEOUT)
        return sink

    async def _beam_sink_last(self, sink: str) -> int:
        return int(await self.b.eval_async(f"pyerl_bench:wait_sink({sink}, 60000)", TIMEOUT))

    async def _beam_blast(self, dest: str, traffic: Traffic) -> int:
        return int(await self.a.eval_async(
            f"pyerl_bench:blast({dest}, {traffic.erl}, {traffic.count}, {traffic.senders})",
            TIMEOUT))

    async def _beam_to_beam(self, traffic: Traffic) -> float:
        sink = await self._start_beam_sink(traffic.count)
        start = await self._beam_blast(f"{{{sink}, {erl_atom(self.b.name)}}}", traffic)
        return (await self._beam_sink_last(sink) - start) / 1e6

    async def _beam_to_py(self, traffic: Traffic) -> float:
        name = self._fresh("pysink")
        box = self.py.mailbox(name=name)

        async def count() -> int:
            for _ in range(traffic.count):
                msg = await box.receive()
                if type(msg) is not tuple or msg[0] is not TAG:
                    raise RuntimeError(f"unexpected message {msg!r}")
            return now_us()

        try:
            async with asyncio.timeout(TIMEOUT), asyncio.TaskGroup() as group:
                counter = group.create_task(count())
                start = await self._beam_blast(
                    f"{{{name}, {erl_atom(self.py.node_atom.name)}}}", traffic)
        finally:
            box.exit()
        return (counter.result() - start) / 1e6

    async def _py_to_beam(self, traffic: Traffic) -> float:
        sink = await self._start_beam_sink(traffic.count)
        dest = (Atom(sink), Atom(self.b.name))
        senders = [self.py.mailbox() for _ in range(traffic.senders)]

        async def send_share(sender: Pid) -> None:
            for _ in range(traffic.count // traffic.senders):
                await self.py.send(dest, traffic.py, sender=sender)

        try:
            start = now_us()
            async with asyncio.timeout(TIMEOUT):
                await asyncio.gather(*(send_share(proc.pid) for proc in senders))
        finally:
            for proc in senders:
                proc.exit()
        return (await self._beam_sink_last(sink) - start) / 1e6

    async def flow(self, traffic: Traffic) -> None:
        """Both directions of one kind of traffic, and its BEAM <-> BEAM twin.

        The three runs alternate, so a burst of load from elsewhere on the machine hits one
        repetition of each rather than all repetitions of one; medians are reported.
        """
        runs: list[tuple[float, float, float, float, float]] = []
        for _ in range(self.sizes.reps):
            beam = await self._beam_to_beam(traffic)
            b2p, b2p_cpu = await with_cpu(self._beam_to_py(traffic))
            p2b, p2b_cpu = await with_cpu(self._py_to_beam(traffic))
            runs.append((beam, b2p, b2p_cpu, p2b, p2b_cpu))
        beam, b2p, b2p_cpu, p2b, p2b_cpu = (
            statistics.median(column) for column in zip(*runs, strict=True))
        amount = traffic.count * traffic.unit_per_message
        for direction, seconds, cpu in (("beam -> python", b2p, b2p_cpu),
                                        ("python -> beam", p2b, p2b_cpu)):
            self._row(f"{traffic.label} {direction}", traffic.unit, amount / seconds,
                      amount / beam, higher_is_better=True, target=traffic.target,
                      cpu_us=cpu / traffic.count * 1e6)

    async def throughput(self) -> None:
        n = self.sizes.small
        small = Traffic("small msgs", "msg/s", 1, SMALL_ERL, SMALL_PY, n, 1, 0.3)
        warm_up = Traffic("warm-up", "msg/s", 1, SMALL_ERL, SMALL_PY, n // 10, 1, 0.3)
        for run in (self._beam_to_beam, self._beam_to_py, self._py_to_beam):
            await run(warm_up)
        await self.flow(small)
        await self.flow(Traffic("small msgs, 4 senders", "msg/s", 1, SMALL_ERL, SMALL_PY, n, 4,
                                0.3))
        for size, count in self.sizes.bulk:
            await self.flow(Traffic(
                f"{size >> 20} MB binaries x{count}", "MB/s", size / 1e6,
                f"{{pyerl_bench, 0, binary:copy(<<7>>, {size})}}", (TAG, 0, bytes([7]) * size),
                count, 1, 0.5))

    # -- calls ----------------------------------------------------------------------------------

    async def _beam_calls(self, dest: str, n: int) -> list[float]:
        out = await self.a.eval_async(f"pyerl_bench:call_lat({dest}, {SMALL_ERL}, {n})", TIMEOUT)
        return [int(v) / 1000 for v in re.findall(r"\d+", out)]

    async def _py_calls(self, dest: tuple[Atom, Atom], n: int) -> list[float]:
        samples = []
        for _ in range(n):
            start = time.perf_counter_ns()
            answer = await self.py.call(dest, SMALL_PY, timeout=5.0)
            samples.append((time.perf_counter_ns() - start) / 1000)
            if answer != SMALL_PY:
                raise RuntimeError(f"the echo server answered {answer!r}")
        return samples

    async def calls(self) -> None:
        n = self.sizes.calls
        py_server = self._fresh("pyecho")
        start_server(self.py, Echo(), name=py_server)
        beam_server = self._fresh("echo")
        await self.b.eval_async(f"pyerl_bench:echo({beam_server})", TIMEOUT)
        beam_dest = f"{{{beam_server}, {erl_atom(self.b.name)}}}"
        py_dest = f"{{{py_server}, {erl_atom(self.py.node_atom.name)}}}"
        to_beam = (Atom(beam_server), Atom(self.b.name))
        # warm-up
        await self._beam_calls(beam_dest, n // 10)
        await self._beam_calls(py_dest, n // 10)
        await self._py_calls(to_beam, n // 10)
        # Rounds that alternate, as for throughput; the samples of all rounds are pooled.
        share = n // self.sizes.reps
        beam: list[float] = []
        pooled: dict[str, tuple[list[float], list[float]]] = {
            "call python -> beam": ([], []), "call beam -> python": ([], [])}
        for _ in range(self.sizes.reps):
            beam += await self._beam_calls(beam_dest, share)
            for label, run in (("call beam -> python", self._beam_calls(py_dest, share)),
                               ("call python -> beam", self._py_calls(to_beam, share))):
                samples, cpu = await with_cpu(run)
                pooled[label][0].extend(samples)
                pooled[label][1].append(cpu)
        for label, (lat, cpus) in pooled.items():
            self._row(f"{label} p50", "us", percentile(lat, 50), percentile(beam, 50),
                      higher_is_better=False, target=3.0, cpu_us=sum(cpus) / len(lat) * 1e6)
            self._row(f"{label} p99", "us", percentile(lat, 99), percentile(beam, 99),
                      higher_is_better=False, target=None)


def compile_module(directory: Path) -> None:
    """``pyerl_bench.beam`` in ``directory``, by the first installed ``erlc`` that works.

    OTP 28 here is a runtime without the compiler application, so its nodes load the module
    compiled by OTP 25 (a BEAM file loads in later releases).
    """
    source = directory / "pyerl_bench.erl"
    source.write_text(ERL_MODULE)
    errors = []
    for release in OTP_RELEASES:
        erl = find_erl(release)
        if erl is None:
            continue
        erlc = erl.resolve().parent / "erlc"
        result = subprocess.run([str(erlc), "-o", str(directory), str(source)],
                                capture_output=True, text=True, timeout=TIMEOUT, check=False)
        if result.returncode == 0:
            return
        errors.append(f"OTP {release} erlc: {result.stdout}{result.stderr}".strip())
    raise SystemExit("cannot compile the benchmark module:\n" + "\n".join(errors))


@contextlib.asynccontextmanager
async def bench_nodes(release: str, epmd_port: int, cookie: str, module_dir: Path,
                      optfile: Path | None = None) -> AsyncIterator[tuple[Node, BeamNode,
                                                                          BeamNode]]:
    """The Python node and BEAM nodes ``a`` and ``b``, the module loaded on both; over TLS
    distribution (``-proto_dist inet_tls``) configured by ``optfile`` when one is given.
    Every node started here is stopped here."""
    beams: list[BeamNode] = []
    tls_args = () if optfile is None else ("-proto_dist", "inet_tls",
                                           "-ssl_dist_optfile", str(optfile))
    py = Node(f"{unique_name('py')}@{LOCALHOST}", cookie, epmd_port=epmd_port, start_epmd=False,
              proto_dist="inet_tcp" if optfile is None else "inet_tls", ssl_dist_optfile=optfile)
    try:
        for role in ("a", "b"):
            beams.append(await asyncio.to_thread(
                BeamNode.start, release, f"{unique_name(role)}@{LOCALHOST}",
                cookie=cookie, epmd_port=epmd_port, extra_args=tls_args))
        beam_file = erl_string(str(module_dir / "pyerl_bench.beam"))
        for beam in beams:
            await beam.eval_async(
                f"{{ok, Bin}} = file:read_file({beam_file}),"
                f"{{module, pyerl_bench}} = code:load_binary(pyerl_bench, {beam_file}, Bin), ok",
                TIMEOUT)
        await py.start()
        yield py, beams[0], beams[1]
    finally:
        await py.stop()
        for beam in beams:
            beam.stop()


async def bench_release(release: str, epmd_port: int, cookie: str, sizes: Sizes,
                        module_dir: Path) -> list[Row]:
    """All measurements against one OTP release."""
    async with bench_nodes(release, epmd_port, cookie, module_dir) as (py, a, b):
        bench = Bench(release, py, a, b, sizes)
        await bench.connect()
        await bench.connect_all()
        await bench.throughput()
        await bench.calls()
        return bench.rows


def format_value(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def print_table(rows: list[Row], title: list[str]) -> None:
    print("\n".join(title))
    header = ("OTP", "measure", "unit", "python", "beam<->beam", "py/beam", "target", "",
              "py CPU us/op")
    table = [header] + [
        (r.release, r.what, r.unit, format_value(r.python), format_value(r.beam),
         r.ratio_text(), r.target_text(), r.verdict(),
         "" if r.cpu_us is None else f"{r.cpu_us:.1f}")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip())


async def main_async(releases: list[str], sizes: Sizes, title: str) -> None:
    epmd_release = next((r for r in releases if epmd_binary(r) is not None), None)
    if epmd_release is None:
        raise SystemExit("no epmd binary for the requested releases")
    epmd = Epmd.start(epmd_release)
    rows: list[Row] = []
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="pyerl_bench_") as tmp:
            compile_module(Path(tmp))
            for release in releases:
                cookie = f"bench_{secrets.token_hex(8)}"
                rows += await bench_release(release, epmd.port, cookie, sizes, Path(tmp))
    finally:
        epmd.stop()
    loads = " / ".join(" ".join(f"{v:.2f}" for v in avg) for avg in (load_before, os.getloadavg()))
    print_table(rows, [
        f"{title} ({sizes.small} small msgs, {sizes.calls} calls, median of {sizes.reps} runs)",
        f"load average before / after: {loads}; py CPU = this process's CPU time per message "
        "or call",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_node", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer messages and repetitions")
    parser.add_argument("--otp", nargs="+", default=["28", "25"], choices=OTP_RELEASES,
                        help="BEAM releases to compare with (default: 28 25)")
    parser.add_argument("--profile", type=int, metavar="N", default=0,
                        help="profile the Python side (CPU time) and print its N costliest "
                             "functions to stderr; the timings are then inflated")
    args = parser.parse_args(argv)
    releases = [r for r in args.otp if find_erl(r) is not None]
    for missing in sorted(set(args.otp) - set(releases)):
        print(f"OTP {missing} is not installed: skipped", file=sys.stderr)
    if not releases:
        raise SystemExit("none of the requested OTP releases is installed")
    sizes = QUICK if args.quick else FULL
    title = (f"pyerl_node messaging benchmark: Python {platform.python_version()} vs BEAM<->BEAM, "
             f"{os.cpu_count()} CPUs, {'--quick' if args.quick else 'full'} run"
             f"{', PROFILED' if args.profile else ''}")
    if not args.profile:
        asyncio.run(main_async(releases, sizes, title))
        return
    profiler = cProfile.Profile(time.process_time)
    try:
        profiler.runcall(asyncio.run, main_async(releases, sizes, title))
    finally:
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()
