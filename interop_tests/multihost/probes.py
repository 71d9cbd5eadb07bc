"""Erlang snippets the multi-host scenarios evaluate on BEAM nodes, and their parsed results.

* A watcher process, registered as ``mh_watch``: ``net_kernel:monitor_nodes(true)`` plus any
  process monitors it is asked to hold; it keeps every ``nodeup``/``nodedown``/``DOWN`` with
  ``os:system_time(millisecond)``, the wall clock the test and the Python agents stamp with too.
* A pid's identity as ``{Node, Id, Serial}``: how a BEAM prints a remote pid (``<N.Id.S>``)
  depends on the printing node, the identity does not; the agents report pids the same way.

Results come back as ``~p`` text and are read with ``pyerl_node.proto.term_syntax.parse``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from interop_tests.beam import BeamNode
from pyerl_node.proto.term_syntax import parse
from pyerl_node.proto.terms import Atom, Term

_WATCHER: Final = """
W = spawn(fun() ->
    ok = net_kernel:monitor_nodes(true),
    Now = fun() -> os:system_time(millisecond) end,
    Loop = fun L(Evs) ->
        receive
            {nodeup, N} -> L([{nodeup, N, Now()} | Evs]);
            {nodedown, N} -> L([{nodedown, N, Now()} | Evs]);
            {watch, P, From} -> erlang:monitor(process, P), From ! watching, L(Evs);
            {'DOWN', _, process, P, R} -> L([{down, node(P), R, Now()} | Evs]);
            {events, From} -> From ! {events, lists:reverse(Evs)}, L(Evs)
        end
    end,
    Loop([])
end),
true = register(mh_watch, W),
ok"""

# Fun that turns a pid into {Node, Id, Serial}
IDENT_FUN: Final = ("fun(P) -> [_, I, S] = string:lexemes(pid_to_list(P), \"<.>\"), "
                    "{node(P), list_to_integer(I), list_to_integer(S)} end")


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # nodeup, nodedown or down
    node: str
    t: float  # seconds, wall clock
    reason: Term = None  # of a DOWN


def start_watcher(node: BeamNode) -> None:
    assert node.eval(_WATCHER) == "ok"


def watch_global(node: BeamNode, name: str) -> tuple[str, int, int]:
    """Make the watcher monitor the pid global ``name`` has now; that pid's identity."""
    out = node.eval(f"P = global:whereis_name({name}), mh_watch ! {{watch, P, self()}}, "
                    f"receive watching -> ({IDENT_FUN})(P) after 5000 -> timeout end")
    return ident(out)


def watcher_events(node: BeamNode) -> list[WatchEvent]:
    out = parse(node.eval("mh_watch ! {events, self()}, "
                          "receive {events, E} -> E after 5000 -> timeout end"))
    assert isinstance(out, list), out
    events: list[WatchEvent] = []
    for entry in out:
        assert isinstance(entry, tuple) and isinstance(entry[0], Atom), entry
        kind, node_atom, *rest = entry
        assert isinstance(node_atom, Atom) and isinstance(rest[-1], int), entry
        events.append(WatchEvent(kind.name, node_atom.name, rest[-1] / 1000.0,
                                 rest[0] if kind.name == "down" else None))
    return events


def global_ident(node: BeamNode, name: str) -> tuple[str, int, int] | None:
    """``global:whereis_name(name)`` on ``node`` as an identity, None for undefined."""
    out = node.eval(f"case global:whereis_name({name}) of undefined -> undefined; "
                    f"P -> ({IDENT_FUN})(P) end")
    return None if out == "undefined" else ident(out)


def ident(text: str) -> tuple[str, int, int]:
    term = parse(text)
    assert isinstance(term, tuple) and len(term) == 3, text
    node, pid_id, serial = term
    assert isinstance(node, Atom) and isinstance(pid_id, int) and isinstance(serial, int), text
    return node.name, pid_id, serial


def agent_ident(pid: dict[str, object] | None) -> tuple[str, int, int] | None:
    """The identity of a pid as a Python agent reports it."""
    if pid is None:
        return None
    node, pid_id, serial = pid["node"], pid["id"], pid["serial"]
    assert isinstance(node, str) and isinstance(pid_id, int) and isinstance(serial, int)
    return node, pid_id, serial


def visible_nodes(node: BeamNode) -> list[str]:
    out = parse(node.eval("lists:sort(nodes())"))
    assert isinstance(out, list), out
    return [n.name for n in out if isinstance(n, Atom)]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.05) -> float:
    """Poll ``predicate`` until true; the seconds it took. AssertionError naming ``what``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - start
