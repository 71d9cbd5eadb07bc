"""``erlang:system_info/1``, ``erlang:memory/0,1`` and ``erlang:statistics/1`` of this node.

The release the node answers is the oldest OTP release it interoperates with (25: see
docs/builtins.md, "otp_release", for why), with the erts version of that release;
``system_version`` says what actually runs. Figures a BEAM measures and Python does not are
estimated or fixed, each as docs/builtins.md describes: one scheduler (one event loop),
memory from the OS (resident size) and per-process estimates, reductions as CPU time in
microseconds, an empty run queue.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import resource
import struct
import sys
import time
from collections.abc import Callable
from typing import Final

from pyerl_node.proto.terms import Atom, Term, atom_count, atom_limit
from pyerl_node.runtime.interface import NodeServices
from pyerl_node.services.builtins.common import charlist
from pyerl_node.services.builtins.process_info import memory as process_memory

#: The release we answer as: the oldest the node interoperates with (docs/builtins.md).
OTP_RELEASE: Final = "25"
#: The erts version of OTP 25.0.
ERTS_VERSION: Final = "13.0"
#: Bytes an atom costs, roughly (the object, its name, its slot in the intern table).
ATOM_BYTES: Final = 100


def package_version() -> str:
    """This package's version (what the node says it runs)."""
    try:
        return importlib.metadata.version("pyerl-node")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def _cpus() -> int:
    return os.cpu_count() or 1


def resident_bytes() -> int:
    """The resident memory of this OS process (the BEAM's ``total`` counts the same)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # kB elsewhere


def system_version() -> str:
    """What the banner says: the release we answer as, and what really runs."""
    bits = struct.calcsize("P") * 8
    return (f"Erlang/OTP {OTP_RELEASE} [pyerl_node {package_version()}] "
            f"[{platform.python_implementation()} {platform.python_version()}] "
            f"[{bits}-bit] [smp:1:1] [ds:1:1:0] [async-threads:0]\n")


class SystemFigures:
    """The figures of one node; ``statistics`` keeps the "since last call" marks a BEAM keeps."""

    def __init__(self, node: NodeServices) -> None:
        self._node = node
        self._started = time.monotonic()
        self._last_wall = self._started
        self._last_cpu = time.process_time()
        self._last_reductions = 0
        self._info: dict[Atom, Callable[[], Term]] = {
            Atom("otp_release"): lambda: charlist(OTP_RELEASE),
            Atom("version"): lambda: charlist(ERTS_VERSION),
            Atom("system_version"): lambda: charlist(system_version()),
            Atom("process_count"): lambda: sum(1 for _ in node.processes()),
            Atom("atom_count"): atom_count,
            Atom("atom_limit"): atom_limit,
            Atom("schedulers"): lambda: 1,
            Atom("schedulers_online"): lambda: 1,
            Atom("logical_processors"): _cpus,
            Atom("logical_processors_online"): _cpus,
            Atom("logical_processors_available"): _cpus,
            Atom("wordsize"): lambda: struct.calcsize("P"),
            Atom("creation"): lambda: node.creation,
            Atom("smp_support"): lambda: True,
            Atom("threads"): lambda: True,
            Atom("port_count"): lambda: 0,
            Atom("ets_count"): lambda: 0,
        }
        self._statistics: dict[Atom, Callable[[], Term]] = {
            Atom("wall_clock"): self._wall_clock,
            Atom("runtime"): self._runtime,
            Atom("reductions"): self._reductions,
            Atom("exact_reductions"): self._reductions,
            Atom("run_queue"): lambda: 0,
            Atom("total_run_queue_lengths"): lambda: 0,
            Atom("run_queue_lengths"): lambda: [0],
            Atom("garbage_collection"): lambda: (
                sum(s["collections"] for s in gc.get_stats()), 0, 0),
        }

    # -- system_info ---------------------------------------------------------------------

    def system_info(self, item: Term) -> Term:
        """The value of ``item``; KeyError for an item we do not answer (a badarg)."""
        if not isinstance(item, Atom):
            raise KeyError(item)
        return self._info[item]()

    # -- memory ----------------------------------------------------------------------------

    def memory(self) -> list[tuple[Atom, int]]:
        """``erlang:memory/0``: the BEAM's kinds, in its order."""
        procs = list(self._node.processes())
        processes = sum(process_memory(p) for p in procs)
        binary = sum(p.mailbox.queued_bytes for p in procs)
        total = max(resident_bytes(), processes)
        atoms = atom_count() * ATOM_BYTES
        return [(Atom(kind), value) for kind, value in (
            ("total", total), ("processes", processes), ("processes_used", processes),
            ("system", total - processes), ("atom", atoms), ("atom_used", atoms),
            ("binary", binary), ("code", 0), ("ets", 0))]

    # -- statistics ----------------------------------------------------------------------

    def statistics(self, item: Term) -> Term:
        """The value of ``item``; KeyError for an item we do not answer (a badarg)."""
        if not isinstance(item, Atom):
            raise KeyError(item)
        return self._statistics[item]()

    def _wall_clock(self) -> Term:
        now = time.monotonic()
        since, self._last_wall = now - self._last_wall, now
        return (int((now - self._started) * 1000), int(since * 1000))

    def _runtime(self) -> Term:
        now = time.process_time()
        since, self._last_cpu = now - self._last_cpu, now
        return (int(now * 1000), int(since * 1000))

    def _reductions(self) -> Term:
        total = int(time.process_time() * 1_000_000)
        since, self._last_reductions = total - self._last_reductions, total
        return (total, since)
