"""rpc/erpc round trips into the Python node vs into a BEAM node, measured from a BEAM caller.

``python -m bench.bench_rpc [--calls N]``: one real BEAM node (OTP 28, and OTP 25 when present)
calls ``erlang:abs(1)`` through ``rpc:call`` and ``erpc:call`` on (a) a second BEAM node and
(b) the Python node (which exposes ``abs`` as ``erlang:abs``), with 1 and 8 concurrent callers,
the Python function run in the thread pool (the default) and inline (``threaded=False``).
The caller times each call with ``erlang:monotonic_time``; the table gives p50/p99 latency and
calls/s, and the Python/BEAM ratios (issue #5 target: p50 within 3x of the BEAM node).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import secrets

from interop_tests.beam import LOCALHOST, BeamNode, Epmd
from interop_tests.runtimes import find_erl
from pyerl_node.node import Node

# Runs on the calling BEAM node: Callers processes each make N calls; returns
# {P50us, P99us, CallsPerSecond}.
_CALLER = """
Run = fun(Kind, Target, Callers, N) ->
    Call = case Kind of
        rpc -> fun() -> 1 = rpc:call(Target, erlang, abs, [-1]) end;
        erpc -> fun() -> 1 = erpc:call(Target, erlang, abs, [-1]) end
    end,
    Self = self(),
    T0 = erlang:monotonic_time(microsecond),
    [spawn_link(fun() ->
        Ts = [begin S = erlang:monotonic_time(microsecond), Call(),
                    erlang:monotonic_time(microsecond) - S end || _ <- lists:seq(1, N)],
        Self ! {times, Ts} end) || _ <- lists:seq(1, Callers)],
    All = lists:sort(lists:append([receive {times, Ts} -> Ts end || _ <- lists:seq(1, Callers)])),
    Elapsed = erlang:monotonic_time(microsecond) - T0,
    Len = length(All),
    {lists:nth(max(1, Len div 2), All), lists:nth(max(1, (Len * 99) div 100), All),
     round(Len * 1000000 / Elapsed)}
end,
"""


async def _measure(caller: BeamNode, kind: str, target: str, callers: int, n: int) -> tuple[
    int, int, int
]:
    out = await caller.eval_async(
        _CALLER + f"Run({kind}, '{target}', {callers}, {n}).", timeout=300
    )
    p50, p99, rate = (int(x) for x in out.strip("{}").split(","))
    return p50, p99, rate


async def bench_release(release: str, calls: int) -> list[str]:
    epmd = Epmd.start(release)
    cookie = secrets.token_hex(8)
    nodes: list[BeamNode] = []
    rows: list[str] = []
    try:
        caller = BeamNode.start(release, f"caller_{secrets.token_hex(3)}@{LOCALHOST}",
                                cookie=cookie, epmd_port=epmd.port)
        nodes.append(caller)
        callee = BeamNode.start(release, f"callee_{secrets.token_hex(3)}@{LOCALHOST}",
                                cookie=cookie, epmd_port=epmd.port)
        nodes.append(callee)
        async with Node(f"py_{secrets.token_hex(3)}@{LOCALHOST}", cookie,
                        epmd_port=epmd.port, start_epmd=False) as py:
            for threaded, kind, callers in itertools.product(
                (True, False), ("rpc", "erpc"), (1, 8)
            ):
                py.expose("erlang", {"abs": abs}, threaded=threaded, replace_builtin=True)
                n = max(10, calls // callers)
                await _measure(caller, kind, callee.name, callers, 50)  # warm up
                await _measure(caller, kind, py.node_atom.name, callers, 50)
                b = await _measure(caller, kind, callee.name, callers, n)
                p = await _measure(caller, kind, py.node_atom.name, callers, n)
                mode = "thread" if threaded else "inline"
                rows.append(
                    f"OTP {release:>2} {kind:<4} x{callers} {mode}  "
                    f"BEAM p50 {b[0]:>6} us p99 {b[1]:>6} us {b[2]:>7}/s | "
                    f"Python p50 {p[0]:>6} us p99 {p[1]:>6} us {p[2]:>7}/s | "
                    f"p50 x{p[0] / max(b[0], 1):.2f}  rate x{p[2] / max(b[2], 1):.2f}"
                )
    finally:
        for node in nodes:
            node.stop()
        epmd.stop()
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    print("rpc/erpc round trip to erlang:abs(-1): BEAM callee vs Python callee")
    print("(ratios: Python/BEAM; p50 ratio target <= 3)")
    for release in ("28", "25"):
        if find_erl(release) is None:
            print(f"OTP {release}: not installed, skipped")
            continue
        for row in await bench_release(release, args.calls):
            print(row)


if __name__ == "__main__":
    asyncio.run(main())
