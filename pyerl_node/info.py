"""``pyerl-node info NODE``: what observer's System tab shows about any node, BEAM or Python.

Only the standard rpc surface every node answers is used (``erlang:system_info/1``,
``erlang:memory/0``, ``erlang:registered/0``, ``erlang:nodes/1``, ``erlang:statistics/1``),
so the same report comes from an Erlang, an Elixir or a pyerl_node node. A call a node does not
answer shows as ``?`` rather than failing the whole report.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pyerl_node.node import Node
from pyerl_node.proto.errors import ErlNodeError
from pyerl_node.proto.term_syntax import format_term
from pyerl_node.proto.terms import Atom, Term

ERLANG = Atom("erlang")


@dataclass(frozen=True)
class SystemReport:
    """The figures of one node, as read over rpc (None where the node did not answer)."""

    node: str
    otp_release: Term
    erts_version: Term
    system_version: Term
    schedulers: Term
    process_count: Term
    uptime_ms: Term
    memory: Term
    registered: Term
    visible: Term
    hidden: Term


async def read_report(node: Node, target: str, *, timeout: float = 10.0) -> SystemReport:
    """Ask ``target`` for its figures (the calls run concurrently)."""

    async def ask(function: str, *args: Term) -> Term:
        try:
            return await node.rpc(target, ERLANG, function, list(args), timeout=timeout)
        except ErlNodeError:
            return None

    (release, version, system, schedulers, count, wall, memory, registered, visible,
     hidden) = await asyncio.gather(
        ask("system_info", Atom("otp_release")), ask("system_info", Atom("version")),
        ask("system_info", Atom("system_version")), ask("system_info", Atom("schedulers")),
        ask("system_info", Atom("process_count")), ask("statistics", Atom("wall_clock")),
        ask("memory"), ask("registered"), ask("nodes", Atom("visible")),
        ask("nodes", Atom("hidden")))
    uptime = wall[0] if type(wall) is tuple and len(wall) == 2 else None
    return SystemReport(target, release, version, system, schedulers, count, uptime, memory,
                        registered, visible, hidden)


def _text(value: Term) -> str:
    if value is None:
        return "?"
    if isinstance(value, list) and all(isinstance(c, int) and 0 <= c < 0x110000 for c in value):
        return "".join(chr(c) for c in value).strip()  # an Erlang string
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip()
    return format_term(value)


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def _duration(ms: int) -> str:
    seconds = ms // 1000
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{days}d"] if days else []
    return " ".join([*parts, f"{hours}h", f"{minutes}m", f"{seconds}s"])


def _names(value: Term, *, exclude: Atom | None = None) -> str:
    if not isinstance(value, list):
        return "?"
    names = sorted(a.name for a in value if isinstance(a, Atom) and a is not exclude)
    return f"{len(names)}" + (f": {', '.join(names)}" if names else "")


def format_report(report: SystemReport, *, me: Atom) -> str:
    """The report as aligned lines (our own hidden connection left out of the nodes)."""
    memory = "?"
    if isinstance(report.memory, list):
        kinds = {k.name: v for k, v in (item for item in report.memory
                                         if type(item) is tuple and len(item) == 2)
                 if isinstance(k, Atom) and isinstance(v, int)}
        memory = ", ".join(f"{kind} {_megabytes(kinds[kind])}"
                           for kind in ("total", "processes", "atom", "binary", "code", "ets")
                           if kind in kinds) or "?"
    rows = [
        ("Node", report.node),
        ("OTP release", f"{_text(report.otp_release)} (erts {_text(report.erts_version)})"),
        ("System", _text(report.system_version)),
        ("Uptime", _duration(report.uptime_ms) if isinstance(report.uptime_ms, int) else "?"),
        ("Schedulers", _text(report.schedulers)),
        ("Processes", _text(report.process_count)),
        ("Memory", memory),
        ("Registered", _names(report.registered)),
        ("Visible nodes", _names(report.visible)),
        ("Hidden nodes", _names(report.hidden, exclude=me)),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)
