"""Codec throughput: pyerl_node.proto.etf against erlang-py and against the BEAM itself.

Run ``python -m bench.bench_codec`` (about a minute). For each workload the same ETF bytes are
decoded and the decoded term re-encoded by

* ``pyerl_node.proto.etf`` (``encode`` / ``decode``),
* erlang-py (``erlang.term_to_binary`` / ``erlang.binary_to_term``, on its own term objects),
* a real ``erl`` of OTP 25 and of OTP 28 (``term_to_binary/1`` / ``binary_to_term/1``), timed
  inside the VM around ``lists:foreach`` of the BIF as an external fun, so that the loop
  itself is compiled code (OTP 28's bundled runtime has no compiler).

Times are CPU times (``time.thread_time`` in Python; ``statistics(runtime)`` in a BEAM with
one scheduler and no busy waiting), best of several rounds, pyerl_node and erlang-py
interleaved: the machine may be shared, and wall-clock ratios would mostly measure the
neighbours. It prints ops/s and MB/s (of ETF bytes) per workload and the ratios: ``x erlpy``
is our speed over erlang-py's, ``x BEAM25`` / ``x BEAM28`` the BEAM's speed over ours.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from interop_tests.runtimes import find_erl
from pyerl_node.proto import etf
from pyerl_node.proto.terms import Atom, Pid, Reference, Term

ROUND_SECONDS = 0.04
ROUNDS = 5


def workloads() -> dict[str, Term]:
    node = Atom("beam@127.0.0.1")
    pid = Pid(node, 123, 0, 1_700_000_000)
    ref = Reference(node, 1_700_000_000, (81723, 2_000_000_001, 3_000_000_002))

    def tree(depth: int) -> Term:
        if depth == 0:
            return depth
        return (Atom("node"), depth, tree(depth - 1), tree(depth - 1))

    return {
        "small int": 42,
        "atom": Atom("hello_world"),
        "small tuple": (Atom("ok"), 42, Atom("done")),
        "bigint": 2**200 + 12345,
        "$gen_call": (Atom("$gen_call"), (pid, ref), (Atom("some"), Atom("request"))),
        "20-field map": {
            Atom(f"field_{i:02}"): (i, f"value {i}".encode(), Atom("flag"), i * 1.5)[i % 4]
            for i in range(20)
        },
        "1000 small tuples": [(Atom("item"), i, b"payload") for i in range(1000)],
        "tree depth 12": tree(12),
        "1 MB binary": os.urandom(1 << 20),
    }


def _seconds(fn: Callable[[], Any], n: int) -> float:
    start = time.thread_time()
    for _ in range(n):
        fn()
    return time.thread_time() - start


def _calibrate(fn: Callable[[], Any]) -> int:
    """How many calls of ``fn`` take about ROUND_SECONDS of CPU."""
    n = 1
    while (elapsed := _seconds(fn, n)) < ROUND_SECONDS:
        n = max(n * 2, int(n * ROUND_SECONDS / max(elapsed, 1e-6) * 1.1))
    return n


def rates(*fns: Callable[[], Any]) -> list[float]:
    """Best calls per CPU second of each of ``fns``, measured in interleaved rounds."""
    counts = [_calibrate(fn) for fn in fns]
    best = [0.0] * len(fns)
    for _ in range(ROUNDS):
        for i, (fn, n) in enumerate(zip(fns, counts, strict=True)):
            best[i] = max(best[i], n / _seconds(fn, n))
    return best


_BEAM_SCRIPT = r"""
{ok, Bin} = file:read_file(os:getenv("BENCH_FILE")),
Items = binary_to_term(Bin),
Target = 100,
Cpu = fun(F, L) ->
    statistics(runtime),
    ok = lists:foreach(F, L),
    element(2, statistics(runtime))
end,
Rate = fun(F, Arg) ->
    Loop = fun Loop(N) ->
        L = lists:duplicate(N, Arg),
        case Cpu(F, L) of
            T when T >= Target -> N * 1000 / lists:min([T, Cpu(F, L), Cpu(F, L)]);
            T -> Loop(max(N * 2, round(N * Target / max(T, 1) * 1.1)))
        end
    end,
    Loop(1)
end,
lists:foreach(fun({Name, Etf}) ->
    Term = binary_to_term(Etf),
    Enc = Rate(fun erlang:term_to_binary/1, Term),
    Dec = Rate(fun erlang:binary_to_term/1, Etf),
    io:format("~ts\t~f\t~f~n", [Name, Enc, Dec])
end, Items),
halt().
"""


def beam_rates(release: str, samples: dict[str, bytes]) -> dict[str, tuple[float, float]]:
    """(encode/s, decode/s) per workload measured inside OTP ``release``; {} if not installed."""
    erl = find_erl(release)
    if erl is None:
        return {}
    items = [(name.encode(), data) for name, data in samples.items()]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "workloads.etf"
        path.write_bytes(etf.encode(items))
        out = subprocess.run(
            [str(erl), "+S", "1", "+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none",
             "-noshell", "-noinput", "-eval", _BEAM_SCRIPT],
            env={**os.environ, "BENCH_FILE": str(path)},
            capture_output=True, text=True, timeout=300, check=True,
        ).stdout
    rates = {}
    for line in out.splitlines():
        name, enc, dec = line.split("\t")
        rates[name] = (float(enc), float(dec))
    return rates


def main() -> None:
    import erlang  # erlang-py, a dev dependency

    cases = workloads()
    samples = {name: etf.encode(term) for name, term in cases.items()}
    beam = {release: beam_rates(release, samples) for release in ("25", "28")}

    header = (f"{'workload':<18}{'op':<5}{'bytes':>9}{'pyerl ops/s':>13}{'MB/s':>9}"
              f"{'erlpy ops/s':>13}{'x erlpy':>9}{'BEAM25 ops/s':>14}{'x BEAM25':>10}"
              f"{'BEAM28 ops/s':>14}{'x BEAM28':>10}")
    print(header)
    print("-" * len(header))
    for name, term in cases.items():
        data = samples[name]
        assert etf.decode(data) == term
        their_term = erlang.binary_to_term(data)
        enc, their_enc = rates(partial(etf.encode, term),
                               partial(erlang.term_to_binary, their_term))
        dec, their_dec = rates(partial(etf.decode, data), partial(erlang.binary_to_term, data))
        ours, theirs = (enc, dec), (their_enc, their_dec)
        for i, op in enumerate(("enc", "dec")):
            cols = [f"{name if i == 0 else '':<18}{op:<5}{len(data):>9}",
                    f"{ours[i]:>13,.0f}{ours[i] * len(data) / 1e6:>9.1f}",
                    f"{theirs[i]:>13,.0f}{ours[i] / theirs[i]:>9.1f}"]
            for release in ("25", "28"):
                got = beam[release].get(name)
                cols.append(f"{got[i]:>14,.0f}{got[i] / ours[i]:>10.1f}" if got
                            else f"{'n/a':>14}{'':>10}")
            print("".join(cols))
    print("\nx erlpy: pyerl_node speed / erlang-py speed (higher is better for us);"
          " x BEAM: BEAM speed / pyerl_node speed.")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
