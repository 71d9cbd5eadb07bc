"""Phoenix.PubSub broadcast benchmark: Python <-> BEAM against BEAM <-> BEAM (issue 13).

``python -m bench.bench_pg [--quick]`` prints one table.

How it works: on one private EPMD, two Elixir nodes (OTP 25, Phoenix.PubSub 2.2 compiled from
the peers tree, see interop_tests/test_pubsub_beam.py) and the Python node form one PubSub
``MyApp.PubSub`` (pool_size 1). The Elixir side of each measurement is a compiled module
(``defmodule`` evaluated on the node), not interpreted code.

* **Throughput**: the sender broadcasts K messages in a row on a topic whose only subscriber
  is on the other node; the time runs from the first broadcast to the last delivery, both read
  from the machine's wall clock (shared by every OS process here). Rows: Elixir -> Elixir,
  Elixir -> Python, Python -> Elixir.
* **Latency**: ping-pong through the PubSub: the pinger broadcasts ``ping``, a subscriber on the
  other node re-broadcasts it as ``pong``, the pinger waits for it; the round trip is two
  broadcasts. Median and 99th percentile of N round trips. Rows: Elixir pinger with an Elixir
  echo, with a Python echo, and a Python pinger with an Elixir echo.

The ratio column is each number over the Elixir <-> Elixir one of the same measurement (for
throughput, below 1 is slower; for latency, above 1 is slower). ``--quick`` runs 2,000
messages and 200 round trips instead of 20,000 and 2,000. Every BEAM OS process is
stopped by pid at the end. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from interop_tests.beam import LOCALHOST, BeamNode, Epmd, unique_name
from interop_tests.test_pubsub_beam import compile_phoenix, phoenix_source, start_phoenix
from pyerl_node.node import Node
from pyerl_node.proto.terms import Atom, Term
from pyerl_node.pubsub import PubSub
from pyerl_node.runtime.process import Process
from pyerl_node.services.phoenix import PUBSUB_SCOPE

ELIXIR_MODULE = r"""
defmodule PyBench do
  @ps MyApp.PubSub
  def now, do: System.os_time(:microsecond)

  # a subscriber of topic, registered as name, that counts n messages {:b, _}; then
  # wait_counted(name) answers the times of the first and the last delivery
  def counter(topic, n, name) do
    me = self()
    pid = spawn(fn ->
      :ok = Phoenix.PubSub.subscribe(@ps, topic)
      send(me, :subscribed)
      {first, last} = count(n, nil)
      receive do {:get, from} -> send(from, {:counted, first, last}) end
    end)
    Process.register(pid, name)
    receive do :subscribed -> :ok end
  end

  defp count(0, first), do: {first, now()}
  defp count(n, first) do
    receive do
      {:b, _} -> count(n - 1, first || now())
    end
  end

  def wait_counted(name, timeout) do
    send(name, {:get, self()})
    receive do {:counted, _first, last} -> last after timeout -> :timeout end
  end

  def blast(topic, n) do
    t0 = now()
    for i <- 1..n, do: Phoenix.PubSub.broadcast(@ps, topic, {:b, i})
    t0
  end

  # a subscriber of ping that re-broadcasts every message on pong
  def echo(ping, pong) do
    me = self()
    spawn(fn ->
      :ok = Phoenix.PubSub.subscribe(@ps, ping)
      send(me, :subscribed)
      echo_loop(pong)
    end)
    receive do :subscribed -> :ok end
  end

  defp echo_loop(pong) do
    receive do
      m -> Phoenix.PubSub.broadcast(@ps, pong, m)
    end
    echo_loop(pong)
  end

  # n round trips through ping and pong: the sorted round-trip times in microseconds
  def ping(ping, pong, n) do
    :ok = Phoenix.PubSub.subscribe(@ps, pong)
    rtts =
      for i <- 1..n do
        t = System.monotonic_time(:microsecond)
        Phoenix.PubSub.broadcast(@ps, ping, {:p, i})
        receive do {:p, ^i} -> System.monotonic_time(:microsecond) - t end
      end
    Phoenix.PubSub.unsubscribe(@ps, pong)
    Enum.sort(rtts)
  end
end
:ok
"""


@dataclass(frozen=True)
class Row:
    what: str
    path: str
    value: float
    unit: str
    beam: float  # the Elixir -> Elixir figure of the same measurement

    @property
    def ratio(self) -> float:
        return self.value / self.beam if self.beam else float("nan")


async def ex(beam: BeamNode, code: str, timeout: float = 300) -> str:
    return await asyncio.to_thread(beam.eval_elixir, code, timeout)


def now_us() -> int:
    return time.time_ns() // 1000


async def python_count(proc: Process, k: int) -> tuple[int, int]:
    first = 0
    for i in range(k):
        await proc.receive(timeout=60)
        if i == 0:
            first = now_us()
    return first, now_us()


async def throughput_beam_to(sender: BeamNode, receiver: BeamNode | None, py: Node,
                             ps: PubSub, topic: str, k: int) -> float:
    """Messages per second from ``sender``'s broadcasts to the subscriber on ``receiver``
    (or on the Python node when ``receiver`` is None)."""
    if receiver is not None:
        await ex(receiver, f'PyBench.counter("{topic}", {k}, :{topic}_counter)')
        t0 = int(await ex(sender, f'PyBench.blast("{topic}", {k})'))
        last = int(await ex(receiver, f"PyBench.wait_counted(:{topic}_counter, 120_000)"))
        return k / (last - t0) * 1e6
    proc = py.mailbox()
    await ps.subscribe(topic, proc.pid)
    counting = asyncio.create_task(python_count(proc, k))
    t0 = int(await ex(sender, f'PyBench.blast("{topic}", {k})'))
    _, last = await counting
    await ps.unsubscribe(topic, proc.pid)
    return k / (last - t0) * 1e6


async def throughput_python_to(receiver: BeamNode, ps: PubSub, topic: str, k: int) -> float:
    await ex(receiver, f'PyBench.counter("{topic}", {k}, :{topic}_counter)')
    t0 = now_us()
    for i in range(k):
        await ps.broadcast(topic, (Atom("b"), i))
    last = int(await ex(receiver, f"PyBench.wait_counted(:{topic}_counter, 120_000)"))
    return k / (last - t0) * 1e6


async def python_echo(ps: PubSub, py: Node, ping: str, pong: str) -> Process:
    async def echo(proc: Process) -> None:
        while True:
            await ps.broadcast(pong, await proc.receive())

    proc = py.spawn(echo)
    await ps.subscribe(ping, proc.pid)
    return proc


async def python_ping(ps: PubSub, py: Node, ping: str, pong: str, n: int) -> list[float]:
    me = py.mailbox()
    await ps.subscribe(pong, me.pid)
    rtts: list[float] = []
    for i in range(n):
        t = time.perf_counter()
        await ps.broadcast(ping, (Atom("p"), i))
        got: Term = await me.receive(timeout=30)
        assert got == (Atom("p"), i)
        rtts.append((time.perf_counter() - t) * 1e6)
    await ps.unsubscribe(pong, me.pid)
    return sorted(rtts)


def beam_rtts(out: str) -> list[float]:
    return [float(x) for x in out.replace("\n", "").strip("[]").split(",") if x.strip()]


def summary(rtts: list[float]) -> tuple[float, float]:
    return statistics.median(rtts), rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]


async def run(k: int, n: int) -> list[Row]:
    source = phoenix_source()
    if source is None:
        raise SystemExit("Phoenix.PubSub source not found (PYERL_PHOENIX_PUBSUB)")
    epmd = Epmd.start("25")
    cookie = f"bench_{secrets.token_hex(6)}"
    beams: list[BeamNode] = []
    py = Node(f"{unique_name('pyb')}@{LOCALHOST}", cookie, epmd_port=epmd.port,
              start_epmd=False)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ebin = Path(tmp)
            compile_phoenix(source, ebin)
            for prefix in ("a", "b"):
                beam = BeamNode.start("25", f"{unique_name(prefix)}@{LOCALHOST}",
                                      cookie=cookie, epmd_port=epmd.port, elixir=True,
                                      extra_args=("-pa", str(ebin)))
                beams.append(beam)
                await start_phoenix(beam)
                assert await ex(beam, ELIXIR_MODULE) == ":ok"
            a, b = beams
            await py.start()
            ps = py.pubsub("MyApp.PubSub")
            assert await ex(a, f'Node.connect(:"{b.name}")') == "true"
            assert await py.connect(a.name) and await py.connect(b.name)
            await wait_joined(py, a, b)
            return await measure(py, ps, a, b, k, n)
        finally:
            await py.stop()
            for beam in beams:
                beam.stop()
            epmd.stop()


async def wait_joined(py: Node, a: BeamNode, b: BeamNode) -> None:
    group = Atom("Elixir.MyApp.PubSub.Adapter")
    async with asyncio.timeout(30):
        while {p.node.name for p in py.pg_get_members(group, scope=PUBSUB_SCOPE)} != {
                a.name, b.name, py.node_atom.name}:
            await asyncio.sleep(0.05)
        for beam in (a, b):
            while py.node_atom.name not in await ex(
                    beam, ":pg.get_members(Phoenix.PubSub, MyApp.PubSub.Adapter) "
                          "|> Enum.map(&node/1)"):
                await asyncio.sleep(0.05)


async def measure(py: Node, ps: PubSub, a: BeamNode, b: BeamNode, k: int, n: int
                  ) -> list[Row]:
    # warm up every path once (connections, code loading, atom caches)
    await throughput_beam_to(a, b, py, ps, "warm1", 100)
    await throughput_beam_to(a, None, py, ps, "warm2", 100)
    await throughput_python_to(b, ps, "warm3", 100)

    beam_beam = await throughput_beam_to(a, b, py, ps, "t1", k)
    beam_py = await throughput_beam_to(a, None, py, ps, "t2", k)
    py_beam = await throughput_python_to(b, ps, "t3", k)
    unit = "msg/s"
    rows = [
        Row("throughput", "Elixir -> Elixir", beam_beam, unit, beam_beam),
        Row("throughput", "Elixir -> Python", beam_py, unit, beam_beam),
        Row("throughput", "Python -> Elixir", py_beam, unit, beam_beam),
    ]

    await ex(b, 'PyBench.echo("ping1", "pong1")')
    bb = summary(beam_rtts(await ex(a, f'PyBench.ping("ping1", "pong1", {n})')))
    echo = await python_echo(ps, py, "ping2", "pong2")
    bp = summary(beam_rtts(await ex(a, f'PyBench.ping("ping2", "pong2", {n})')))
    echo.exit()
    await ex(b, 'PyBench.echo("ping3", "pong3")')
    pb = summary(await python_ping(ps, py, "ping3", "pong3", n))
    for label, index in (("latency median", 0), ("latency p99", 1)):
        rows += [
            Row(label, "Elixir pinger, Elixir echo", bb[index], "us RTT", bb[index]),
            Row(label, "Elixir pinger, Python echo", bp[index], "us RTT", bb[index]),
            Row(label, "Python pinger, Elixir echo", pb[index], "us RTT", bb[index]),
        ]
    return rows


def print_table(rows: list[Row]) -> None:
    print(f"{'measure':<16} {'path':<28} {'value':>12} {'unit':<7} {'vs BEAM':>8}")
    for row in rows:
        print(f"{row.what:<16} {row.path:<28} {row.value:>12,.0f} {row.unit:<7} "
              f"{row.ratio:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages and round trips")
    args = parser.parse_args()
    k, n = (2_000, 200) if args.quick else (20_000, 2_000)
    print_table(asyncio.run(run(k, n)))


if __name__ == "__main__":
    main()
