"""The Python node against the BEAM, compiled codec core and pure Python side by side (issue #16).

``python -m bench.bench_speed [--runs 3] [--otp 25] [--uvloop] [--quick]`` prints one table:
metric | unit | BEAM | pure | compiled [| compiled+uvloop | compiled+uvloop+malloc] | the ratios
to the BEAM. The last column is what ``pyerl-node run`` runs: uvloop, and glibc's malloc
thresholds raised by ``pyerl_node.tune_malloc``.

How it works: each path runs in a process of its own, because which codec runs is fixed when
the package is first imported: ``PYERL_NODE_PURE=1`` for the pure path, nothing for the
compiled one (which must be built: ``pip install .`` with a C compiler), and the compiled one
on uvloop's event loop, without and then with ``tune_malloc``, with ``--uvloop``. One run of a
path is ``--worker``: it measures, in one process, everything below with its BEAM twin
started by that run, and prints JSON. The
paths' runs alternate (pure, compiled, pure, ...) so that a burst of load from elsewhere on
the machine hits one run of each rather than all runs of one; the table shows the median of
the ``--runs`` runs and their spread (min-max), the BEAM column the median over all runs.

* messaging: the rows of :mod:`bench.bench_node` (connect, small messages from 1 and 4
  senders, 1 MiB and 16 MiB binaries, both directions, and call p50/p99 both ways) against
  BEAM <-> BEAM, plus ``global`` register/unregister/whereis_name in a 2-node cluster from
  :mod:`bench.bench_global`;
* codec: encode and decode of :mod:`bench.bench_codec`'s workloads (CPU time) against
  ``term_to_binary``/``binary_to_term`` of OTP 28 (``--codec-otp``);
* lookups: ``whereis``, ``global_whereis`` and ``registered`` against ``whereis/1``,
  ``global:whereis_name/1`` and ``registered/0`` in compiled Erlang;
* memory: bytes per idle process (a spawned process waiting in ``receive``: traced Python
  allocations against the ``erlang:memory(processes)`` difference) and per connection
  (traced Python allocations against the connection's owner process, its ticker
  and its distribution port on the BEAM).

The ratios say how the Python node compares, higher is better: python/BEAM for rates,
BEAM/python for times. The messaging geometric mean is over the messaging ratios. Nothing
here asserts a timing; every BEAM OS process is stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench import bench_codec, bench_global, bench_node
from interop_tests.beam import LOCALHOST, BeamNode, Epmd, unique_name
from interop_tests.runtimes import OTP_RELEASES, find_erl
from pyerl_node.node import Node
from pyerl_node.proto import etf
from pyerl_node.proto.native import PURE_ENV
from pyerl_node.proto.terms import Atom
from pyerl_node.runtime.malloc_tuning import tune_malloc

ERL_MODULE = r"""
-module(pyerl_speed).
-export([lookups/2, idle_bytes/1, connect_bytes/1]).

%% {WhereisUs, GlobalWhereisUs, RegisteredUs} for K calls of each on a registered name.
lookups(Name, K) ->
    register(Name, self()),
    yes = global:register_name(Name, self()),
    {T1, _} = timer:tc(fun() -> loop(fun() -> whereis(Name) end, K) end),
    {T2, _} = timer:tc(fun() -> loop(fun() -> global:whereis_name(Name) end, K) end),
    {T3, _} = timer:tc(fun() -> loop(fun() -> registered() end, K) end),
    global:unregister_name(Name),
    unregister(Name),
    {T1, T2, T3}.

loop(_, 0) -> ok;
loop(F, K) -> _ = F(), loop(F, K - 1).

%% Bytes of process memory per idle process (one waiting in receive), over N of them.
idle_bytes(N) ->
    erlang:garbage_collect(),
    Before = erlang:memory(processes),
    Pids = [spawn(fun() -> receive stop -> ok end end) || _ <- lists:seq(1, N)],
    After = erlang:memory(processes),
    [P ! stop || P <- Pids],
    (After - Before) div N.

%% Bytes a connection to Node holds on this node once the handshake is over: the process
%% that owns it (with its ticker) and its distribution controller, the port of a TCP
%% connection with its buffers.
connect_bytes(Node) ->
    true = net_kernel:connect_node(Node),
    timer:sleep(200),
    {ok, Info} = net_kernel:node_info(Node),
    {owner, Owner} = lists:keyfind(owner, 1, Info),
    {links, Links} = process_info(Owner, links),
    Procs = [P || P <- [Owner | Links], is_pid(P), node(P) =:= node()],
    {Node, Ctrl} = lists:keyfind(Node, 1, erlang:system_info(dist_ctrl)),
    {memory, Port} = erlang:port_info(Ctrl, memory),
    Port + lists:sum([element(2, process_info(P, memory)) || P <- Procs]).
"""

TIMEOUT = 300.0
LOOKUPS = 200_000
IDLE_PROCESSES = 5_000
CODEC_WORKLOADS = ("small tuple", "$gen_call", "20-field map", "1000 small tuples",
                   "tree depth 12")

RUN_SIZES = bench_node.Sizes(small=30_000, calls=2_000, connects=5,
                             bulk=((1 << 20, 24), (16 << 20, 4)), reps=1)
QUICK_SIZES = bench_node.Sizes(small=10_000, calls=500, connects=3,
                               bulk=((1 << 20, 8), (16 << 20, 2)), reps=1)


@dataclass(frozen=True)
class Metric:
    """One figure of one run: the Python node's and the BEAM's."""

    group: str
    name: str
    unit: str
    python: float
    beam: float
    higher_is_better: bool

    def ratio(self, python: float | None = None) -> float:
        """How the Python node compares, higher is better."""
        value = self.python if python is None else python
        if not value or not self.beam:
            return math.nan
        return value / self.beam if self.higher_is_better else self.beam / value


# -- one run (the --worker process) -----------------------------------------------------------


def compile_erl(directory: Path, module: str, source: str) -> Path:
    """``module``.beam in ``directory`` by the first installed ``erlc`` that works (OTP 28
    here has no compiler: it loads what OTP 25 compiled)."""
    path = directory / f"{module}.erl"
    path.write_text(source)
    for release in OTP_RELEASES:
        erl = find_erl(release)
        if erl is None:
            continue
        done = subprocess.run([str(erl.resolve().parent / "erlc"), "-o", str(directory),
                               str(path)], capture_output=True, text=True, timeout=120,
                              check=False)
        if done.returncode == 0:
            return directory / f"{module}.beam"
    raise SystemExit(f"no erlc could compile {module}")


async def load(beam: BeamNode, module: str, beam_file: Path) -> None:
    name = bench_node.erl_string(str(beam_file))
    await beam.eval_async(f"{{ok, Bin}} = file:read_file({name}), "
                          f"{{module, {module}}} = code:load_binary({module}, {name}, Bin), ok",
                          TIMEOUT)


async def messaging(release: str, sizes: bench_node.Sizes) -> list[Metric]:
    metrics = []
    epmd = Epmd.start(release)
    try:
        with tempfile.TemporaryDirectory(prefix="pyerl_speed_") as tmp:
            bench_node.compile_module(Path(tmp))
            rows = await bench_node.bench_release(release, epmd.port,
                                                  f"speed_{secrets.token_hex(6)}", sizes,
                                                  Path(tmp))
    finally:
        epmd.stop()
    for row in rows:
        metrics.append(Metric("messaging", row.what, row.unit, row.python, row.beam,
                              row.higher_is_better))
    k, held, where_k = (30, 20, 20_000) if sizes is QUICK_SIZES else (150, 200, 100_000)
    for g in await bench_global.bench_release(release, k, held, where_k):
        if g.cluster == "2 nodes":
            metrics.append(Metric("messaging", f"global {g.op} (2 nodes)", "op/s", g.python,
                                  g.beam, True))
    return metrics


def codec(beam_rates: dict[str, tuple[float, float]]) -> list[Metric]:
    cases = bench_codec.workloads()
    metrics = []
    for name in CODEC_WORKLOADS:
        term = cases[name]
        data = etf.encode(term)
        enc, dec = bench_codec.rates(partial(etf.encode, term), partial(etf.decode, data))
        beam_enc, beam_dec = beam_rates[name]
        metrics.append(Metric("codec", f"encode {name}", "op/s", enc, beam_enc, True))
        metrics.append(Metric("codec", f"decode {name}", "op/s", dec, beam_dec, True))
    return metrics


def _rate(fn: Any, k: int) -> float:
    start = time.perf_counter()
    for _ in range(k):
        fn()
    return k / (time.perf_counter() - start)


async def lookups_and_memory(release: str) -> list[Metric]:
    epmd = Epmd.start(release)
    cookie = f"speed_{secrets.token_hex(6)}"
    beams: list[BeamNode] = []
    py = Node(f"{unique_name('pys')}@{LOCALHOST}", cookie, epmd_port=epmd.port,
              start_epmd=False, global_names=True)
    try:
        with tempfile.TemporaryDirectory(prefix="pyerl_speed_") as tmp:
            beam_file = compile_erl(Path(tmp), "pyerl_speed", ERL_MODULE)
            for role in ("a", "b"):
                beam = await asyncio.to_thread(BeamNode.start, release,
                                               f"{unique_name(role)}@{LOCALHOST}",
                                               cookie=cookie, epmd_port=epmd.port)
                beams.append(beam)
                await load(beam, "pyerl_speed", beam_file)
        a, b = beams
        await py.start()
        # lookups
        out = await a.eval_async(f"pyerl_speed:lookups(speed_name, {LOOKUPS})", TIMEOUT)
        beam_us = [int(x) for x in out.strip("{}").split(",")]
        name = Atom("speed_name")
        proc = py.mailbox(name)
        assert await py.global_register(name, proc.pid)
        ours = [_rate(lambda: py.whereis(name), LOOKUPS),
                _rate(lambda: py.global_whereis(name), LOOKUPS),
                _rate(py.registered, LOOKUPS)]
        metrics = [Metric("lookups", what, "op/s", rate, LOOKUPS / us * 1e6, True)
                   for what, rate, us in zip(("whereis", "global_whereis", "registered"),
                                             ours, beam_us, strict=True)]
        # memory: an idle process, a connection
        beam_idle = int(await a.eval_async(f"pyerl_speed:idle_bytes({IDLE_PROCESSES})", TIMEOUT))
        beam_conn = int(await a.eval_async(f"pyerl_speed:connect_bytes('{b.name}')", TIMEOUT))

        async def idle(process: Any) -> None:
            await process.receive()

        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        procs = [py.spawn(idle) for _ in range(IDLE_PROCESSES)]
        await asyncio.sleep(0.2)  # every process is waiting in receive
        py_idle = (tracemalloc.get_traced_memory()[0] - before) / IDLE_PROCESSES
        for p in procs:
            p.exit()
        await asyncio.sleep(0.2)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        assert await py.connect(a.name)
        await asyncio.sleep(0.2)
        py_conn = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        metrics += [Metric("memory", "bytes per idle process", "B", py_idle, beam_idle, False),
                    Metric("memory", "bytes per connection", "B", py_conn, beam_conn, False)]
        return metrics
    finally:
        await py.stop()
        for beam in beams:
            beam.stop()
        epmd.stop()


async def worker_async(release: str, quick: bool, beam_codec: dict[str, tuple[float, float]]
                       ) -> list[Metric]:
    metrics = await messaging(release, QUICK_SIZES if quick else RUN_SIZES)
    metrics += await lookups_and_memory(release)
    return metrics + codec(beam_codec)


def worker(args: argparse.Namespace) -> None:
    beam_codec = {name: (float(e), float(d)) for name, (e, d) in json.loads(args.beam_codec)}
    if args.tune_malloc and not tune_malloc():
        raise SystemExit("tune_malloc did not apply (not glibc, or MALLOC_*_THRESHOLD_ set)")
    run = worker_async(args.otp, args.quick, beam_codec)
    if args.loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            metrics = runner.run(run)
    else:
        metrics = asyncio.run(run)
    json.dump({"compiled": etf.COMPILED, "metrics": [vars(m) for m in metrics]}, sys.stdout)


# -- the runs and the table -------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column: how its worker processes are started."""

    label: str
    pure: bool
    loop: str
    malloc: bool = False  # tune_malloc first


def run_path(path: Column, args: argparse.Namespace, beam_codec: str) -> list[Metric]:
    env = {k: v for k, v in os.environ.items() if k != PURE_ENV}
    if path.pure:
        env[PURE_ENV] = "1"
    command = [sys.executable, "-m", "bench.bench_speed", "--worker", "--otp", args.otp,
               "--loop", path.loop, "--beam-codec", beam_codec, *(["--quick"] * args.quick),
               *(["--tune-malloc"] * path.malloc)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"{path.label} run failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout)
    if result["compiled"] is path.pure:
        raise SystemExit(f"{path.label}: the worker ran compiled={result['compiled']}; "
                         "build the compiled core first (pip install .)")
    return [Metric(**m) for m in result["metrics"]]


def fmt(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def spread(values: list[float]) -> str:
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def print_table(paths: list[Column], runs: dict[str, list[list[Metric]]], title: str) -> None:
    first = runs[paths[0].label][0]
    header = ["group", "metric", "unit", "BEAM"] + [p.label for p in paths] + [
        f"{p.label}/BEAM" for p in paths]
    lines = [header]
    means: dict[str, list[float]] = {p.label: [] for p in paths}
    for index, metric in enumerate(first):
        beam = [run[index].beam for p in paths for run in runs[p.label]]
        line = [metric.group, metric.name, metric.unit, fmt(statistics.median(beam))]
        ratios = []
        for p in paths:
            values = [run[index].python for run in runs[p.label]]
            line.append(spread(values))
            ratio = Metric(metric.group, metric.name, metric.unit, statistics.median(values),
                           statistics.median(beam), metric.higher_is_better).ratio()
            ratios.append(f"{ratio:.2f}")
            if metric.group == "messaging" and math.isfinite(ratio):
                means[p.label].append(ratio)
        lines.append(line + ratios)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print(title)
    for line in lines:
        print("  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip())
    for p in paths:
        values = means[p.label]
        geo = math.exp(sum(map(math.log, values)) / len(values)) if values else math.nan
        print(f"messaging geometric mean of the {len(values)} ratios, {p.label}: {geo:.2f}"
              f" (lowest {min(values, default=math.nan):.2f})")
    print("ratios: higher is better (python/BEAM for rates, BEAM/python for times and bytes); "
          "cells: median (min-max) of the runs")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per path (default 3)")
    parser.add_argument("--otp", default="25", choices=OTP_RELEASES,
                        help="BEAM release of the messaging twins (default 25)")
    parser.add_argument("--codec-otp", default="28", choices=OTP_RELEASES,
                        help="BEAM release of the codec twin (default 28)")
    parser.add_argument("--uvloop", action="store_true",
                        help="also compiled on uvloop, without and with tune_malloc")
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--tune-malloc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--beam-codec", default="[]", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    paths = [Column("pure", True, "asyncio"), Column("compiled", False, "asyncio")]
    if args.uvloop:
        paths += [Column("compiled+uvloop", False, "uvloop"),
                  Column("compiled+uvloop+malloc", False, "uvloop", malloc=True)]
    samples = {name: etf.encode(term) for name, term in bench_codec.workloads().items()
               if name in CODEC_WORKLOADS}
    runs: dict[str, list[list[Metric]]] = {p.label: [] for p in paths}
    load_before = os.getloadavg()
    for _ in range(args.runs):
        # the BEAM's codec rates, measured once per round and shared by its runs
        beam_codec = json.dumps(list(bench_codec.beam_rates(args.codec_otp, samples).items()))
        for path in paths:
            runs[path.label].append(run_path(path, args, beam_codec))
    loads = " / ".join(" ".join(f"{v:.2f}" for v in avg) for avg in (load_before,
                                                                       os.getloadavg()))
    print_table(paths, runs, f"pyerl_node vs BEAM: Python {platform.python_version()}, "
                f"{os.cpu_count()} CPUs, messaging vs OTP {args.otp}, codec vs OTP "
                f"{args.codec_otp}, {args.runs} runs per path"
                f"{' (--quick)' if args.quick else ''}; load average before / after: {loads}")


if __name__ == "__main__":
    main()
