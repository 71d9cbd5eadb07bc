"""``global`` benchmark: the Python node against BEAM nodes doing the same (issue #6, "Speed").

``python -m bench.bench_global [--quick] [--otp 25 28]`` prints one table.

How it works: for each OTP release, on one private EPMD, a 2-node cluster (BEAM ``a`` + the
Python node) and then a 3-node cluster (+ BEAM ``b``) are formed and synced. ``--held`` names
(default 200) are registered first, so every operation runs against the same table size. Then
each operation runs K times in a row, once from Python and once from BEAM node ``a`` (compiled
code, ``ERL_MODULE``), in the same cluster:

* ``register_name`` of K fresh names (each its own process), then ``unregister_name`` of them:
  each is a lock transaction on every node (boss lock, all-node lock, the change, two releases).
* ``whereis_name`` of a held name: a local table read on both sides. Its target is local-lookup
  speed, so the row also shows the Python node's own ``whereis`` of a locally registered name.

Finally the time a 10-node pure-Python mesh takes to form and sync from a chain of single
connects (median of a few runs). Every BEAM OS process is stopped by pid at the end. Nothing
here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import secrets
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from interop_tests.beam import LOCALHOST, BeamNode, Epmd, free_port, unique_name
from interop_tests.runtimes import OTP_RELEASES, epmd_binary, find_erl
from pyerl_node.node import Node
from pyerl_node.proto.terms import Atom

ERL_MODULE = r"""
-module(pyerl_gbench).
-export([hold/2, reg/2, where/2]).

procs(K) -> [spawn(fun() -> receive stop -> ok end end) || _ <- lists:seq(1, K)].
names(Prefix, K) -> [list_to_atom(Prefix ++ integer_to_list(I)) || I <- lists:seq(1, K)].

hold(Prefix, K) ->
    [yes = global:register_name(N, P) || {N, P} <- lists:zip(names(Prefix, K), procs(K))],
    ok.

reg(Prefix, K) ->
    Names = names(Prefix, K),
    Pids = procs(K),
    T0 = erlang:monotonic_time(microsecond),
    [yes = global:register_name(N, P) || {N, P} <- lists:zip(Names, Pids)],
    T1 = erlang:monotonic_time(microsecond),
    [global:unregister_name(N) || N <- Names],
    T2 = erlang:monotonic_time(microsecond),
    [P ! stop || P <- Pids],
    {T1 - T0, T2 - T1}.

where(Name, K) ->
    T0 = erlang:monotonic_time(microsecond),
    loop(Name, K),
    erlang:monotonic_time(microsecond) - T0.

loop(_, 0) -> ok;
loop(Name, K) -> _ = global:whereis_name(Name), loop(Name, K - 1).
"""


@dataclass(frozen=True)
class Row:
    release: str
    cluster: str
    op: str
    python: float  # ops/s
    beam: float  # ops/s
    target: str

    @property
    def ratio(self) -> float:
        return self.python / self.beam if self.beam else float("nan")


def compile_module(directory: Path) -> Path:
    """``pyerl_gbench.beam`` by the first installed ``erlc`` (OTP 28 here has no compiler;
    it loads the OTP 25 BEAM file)."""
    source = directory / "pyerl_gbench.erl"
    source.write_text(ERL_MODULE)
    for release in OTP_RELEASES:
        erl = find_erl(release)
        if erl is None:
            continue
        erlc = erl.resolve().parent / "erlc"
        done = subprocess.run([str(erlc), "-o", str(directory), str(source)],
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode == 0:
            return directory / "pyerl_gbench.beam"
    raise SystemExit("no erlc could compile the benchmark module")


def load_module(beam: BeamNode, beam_file: Path) -> None:
    out = beam.eval(f'{{ok, Bin}} = file:read_file("{beam_file}"), '
                    f'{{module, _}} = code:load_binary(pyerl_gbench, "{beam_file}", Bin), ok',
                    timeout=60)
    assert out == "ok", out


async def python_reg(py: Node, k: int) -> tuple[float, float]:
    procs = [py.mailbox() for _ in range(k)]
    names = [f"py_fresh_{i}" for i in range(k)]
    t0 = time.perf_counter()
    for name, proc in zip(names, procs, strict=True):
        assert await py.global_register(name, proc.pid)
    t1 = time.perf_counter()
    for name in names:
        await py.global_unregister(name)
    t2 = time.perf_counter()
    for proc in procs:
        proc.exit()
    return k / (t1 - t0), k / (t2 - t1)


def python_where(py: Node, name: str, k: int) -> float:
    atom = Atom(name)
    t0 = time.perf_counter()
    for _ in range(k):
        py.global_whereis(atom)
    return k / (time.perf_counter() - t0)


def python_local_where(py: Node, k: int) -> float:
    atom = Atom("bench_local_name")
    if py.whereis(atom) is None:
        py.mailbox(atom)
    t0 = time.perf_counter()
    for _ in range(k):
        py.whereis(atom)
    return k / (time.perf_counter() - t0)


async def measure(release: str, cluster: str, py: Node, a: BeamNode, *, k: int,
                  where_k: int) -> list[Row]:
    out = await a.eval_async(f'pyerl_gbench:reg("beam_fresh_", {k})', timeout=300)
    beam_reg_us, beam_unreg_us = (int(x) for x in out.strip("{}").split(","))
    py_reg, py_unreg = await python_reg(py, k)
    beam_where_us = int(await a.eval_async(f"pyerl_gbench:where(held_1, {where_k})"))
    py_where = python_where(py, "held_1", where_k)
    local = python_local_where(py, where_k)
    return [
        Row(release, cluster, "register_name", py_reg, k / beam_reg_us * 1e6, "ratio >= 0.5"),
        Row(release, cluster, "unregister_name", py_unreg, k / beam_unreg_us * 1e6,
            "ratio >= 0.5"),
        Row(release, cluster, "whereis_name", py_where, where_k / beam_where_us * 1e6,
            f"local whereis: {local:,.0f}/s"),
    ]


async def sync_all(py: Node, beams: list[BeamNode]) -> None:
    await py.global_sync(timeout=30)
    for beam in beams:
        assert await beam.eval_async("global:sync()") == "ok"


async def bench_release(release: str, k: int, held: int, where_k: int) -> list[Row]:
    epmd = Epmd.start(release)
    cookie = f"bench_{secrets.token_hex(6)}"
    beams: list[BeamNode] = []
    py = Node(f"{unique_name('pyb')}@{LOCALHOST}", cookie, epmd_port=epmd.port,
              start_epmd=False, global_names=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            beam_file = compile_module(Path(tmp))
            for prefix in ("a", "b"):
                beam = BeamNode.start(release, f"{unique_name(prefix)}@{LOCALHOST}",
                                      cookie=cookie, epmd_port=epmd.port)
                beams.append(beam)
                load_module(beam, beam_file)
        a, b = beams
        await py.start()
        assert await py.connect(a.name)
        await sync_all(py, [a])
        assert await a.eval_async(f'pyerl_gbench:hold("held_", {held})', timeout=300) == "ok"
        rows = await measure(release, "2 nodes", py, a, k=k, where_k=where_k)
        assert await b.eval_async(f"net_kernel:connect_node('{a.name}')") == "true"
        await sync_all(py, [a, b])
        rows += await measure(release, "3 nodes", py, a, k=k, where_k=where_k)
        return rows
    finally:
        await py.stop()
        for beam in beams:
            beam.stop()
        epmd.stop()


async def mesh_seconds(n: int) -> float:
    port, tag = free_port(), secrets.token_hex(3)
    nodes = [Node(f"mesh{i}_{tag}@{LOCALHOST}", "c", epmd_port=port, global_names=True,
                  embedded_epmd=True)
             for i in range(n)]
    try:
        for node in nodes:
            await node.start()
        names = {node.node_atom for node in nodes}
        t0 = time.perf_counter()
        for prev, node in itertools.pairwise(nodes):
            assert await node.connect(prev.node_atom)
        while not all(set(x.nodes()) == names - {x.node_atom} for x in nodes):
            await asyncio.sleep(0.005)
        for node in nodes:
            await node.global_sync(timeout=60)
        return time.perf_counter() - t0
    finally:
        for node in reversed(nodes):
            await node.stop()


def print_table(rows: list[Row], mesh: list[float], n: int) -> None:
    header = f"{'OTP':<4} {'cluster':<8} {'operation':<16} {'python/s':>12} {'BEAM/s':>12} " \
             f"{'py/BEAM':>8}  target"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.release:<4} {r.cluster:<8} {r.op:<16} {r.python:>12,.0f} {r.beam:>12,.0f} "
              f"{r.ratio:>8.2f}  {r.target}")
    print()
    print(f"{n}-node Python mesh from a chain of single connects, formed and synced: "
          f"median {statistics.median(mesh):.3f} s over {len(mesh)} runs "
          f"(min {min(mesh):.3f}, max {max(mesh):.3f})")


async def main_async(releases: list[str], k: int, held: int, where_k: int, runs: int) -> None:
    rows: list[Row] = []
    for release in releases:
        if find_erl(release) is None or epmd_binary(release) is None:
            print(f"OTP {release}: not installed, skipped")
            continue
        rows += await bench_release(release, k, held, where_k)
    mesh = [await mesh_seconds(10) for _ in range(runs)]
    print_table(rows, mesh, 10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer operations and runs")
    parser.add_argument("--otp", nargs="+", default=list(OTP_RELEASES))
    parser.add_argument("--held", type=int, default=200, help="names registered beforehand")
    args = parser.parse_args(argv)
    k, where_k, runs = (50, 20_000, 2) if args.quick else (300, 200_000, 5)
    asyncio.run(main_async(args.otp, k, args.held, where_k, runs))


if __name__ == "__main__":
    main()
