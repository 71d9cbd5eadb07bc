"""One ``pg`` scope on one node, as a pure state machine (docs/protocol/pg.md).

``pg`` (OTP 23+) keeps eventually consistent process groups: every node runs a scope process
registered under the scope's name; scope processes find each other with ``discover``, swap
their local members with ``sync`` and then send each other ``join`` and ``leave``. This module
is the bookkeeping of one such scope process and nothing else: each input is a method that
updates the tables and returns the *effects* (sends, monitors, replies, notifications) that
the service process owning the machine must carry out, in order. It does no I/O and creates
no references itself: ``make_ref`` is handed in, and every ``Monitor`` effect names the ref the
service must give that monitor, so DOWNs come back to :meth:`PgScope.down` as ``(ref, pid)``.

The tables mirror OTP's ``pg`` exactly, because a Python node must compute the same
membership as its BEAM peers: the ETS row ``{Group, AllPids, LocalPids}`` (lists, newest
first, a pid once per join), local members with their monitor and groups, and per remote scope
the groups and pids it announced (§3, §4 of the doc). Groups are any term, compared as Erlang
compares them (``1``, ``1.0`` and ``true`` are three groups). Messages from peers are checked
before anything changes: one that OTP would crash on, or that no OTP node sends, gives a single
:class:`Malformed` effect and leaves the state alone (§6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pyerl_node.proto.errors import LocalProtocolError
from pyerl_node.proto.terms import Atom, ExactKey, Pid, Reference, Term, freeze

DISCOVER = Atom("discover")
SYNC = Atom("sync")
JOIN = Atom("join")
LEAVE = Atom("leave")
GEN_CAST = Atom("$gen_cast")
OK = Atom("ok")
NOT_JOINED = Atom("not_joined")

PidOrPids = Pid | list[Pid]


# --- effects --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``message`` to a remote scope: a pid, or ``(ScopeName, Node)`` for discovery.

    OTP sends all of these with ``noconnect``: they only ever go to connected nodes.
    """

    to: Pid | tuple[Atom, Atom]
    message: Term


@dataclass(frozen=True, slots=True)
class Notify:
    """Send a subscriber ``{Ref, join | leave, Group, Pids}`` (``monitor``/``monitor_scope``)."""

    to: Pid
    message: Term


@dataclass(frozen=True, slots=True)
class Monitor:
    """Monitor ``pid`` (a local member or a remote scope) under the reference ``ref``."""

    pid: Pid
    ref: Reference


@dataclass(frozen=True, slots=True)
class Demonitor:
    """Drop the monitor ``ref`` (no flush: a DOWN already queued is ignored by the machine)."""

    ref: Reference


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to the call that caused this input (``ok``, ``not_joined``, ``false``...)."""

    value: Term


@dataclass(frozen=True, slots=True)
class Malformed:
    """A peer's message was refused; nothing changed."""

    reason: str
    message: Term


Effect = Send | Notify | Monitor | Demonitor | Reply | Malformed


# --- tables ---------------------------------------------------------------------------------


class _Group:
    """A group term with Erlang's exact equality, usable as a dict key; keeps the term as given."""

    __slots__ = ("key", "term")
    key: ExactKey
    term: Term

    def __init__(self, term: Term) -> None:
        self.term = term
        self.key = ExactKey(freeze(term))

    def __eq__(self, other: object) -> bool:
        return type(other) is _Group and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


@dataclass(slots=True)
class _Row:
    """OTP's ETS row for a group: every member, and the members on this node."""

    all: list[Pid]
    local: list[Pid]


@dataclass(slots=True)
class _Member:
    """A local member: its monitor and the groups it joined, once per join, newest first."""

    ref: Reference
    groups: list[_Group]


@dataclass(slots=True)
class _Peer:
    """A remote scope: our monitor on it and the members it announced, per group."""

    ref: Reference
    groups: dict[_Group, list[Pid]]


def _as_list(pid_or_pids: PidOrPids) -> list[Pid]:
    return [pid_or_pids] if isinstance(pid_or_pids, Pid) else pid_or_pids


def _subtract(items: list[Pid], removed: Iterable[Pid]) -> list[Pid]:
    """Erlang's ``--``: each element of ``removed`` takes away one occurrence, if any."""
    out = list(items)
    for pid in removed:
        if pid in out:
            out.remove(pid)
    return out


def _pids_problem(term: Term) -> str | None:
    if isinstance(term, Pid):
        return None
    if type(term) is not list:
        return "members are neither a pid nor a proper list"
    if not all(isinstance(p, Pid) for p in term):
        return "a member is not a pid"
    return None


class PgScope:
    """The state of one scope process: feed it inputs, carry out the effects it returns."""

    def __init__(self, scope: Atom, self_pid: Pid, make_ref: Callable[[], Reference]) -> None:
        self.scope = scope
        self.self_pid = self_pid
        self._make_ref = make_ref
        self._rows: dict[_Group, _Row] = {}
        self._local: dict[Pid, _Member] = {}
        self._remote: dict[Pid, _Peer] = {}
        self._scope_monitors: dict[Reference, Pid] = {}
        self._group_monitors: dict[Reference, tuple[Pid, _Group]] = {}
        self._monitored_groups: dict[_Group, list[tuple[Pid, Reference]]] = {}

    # -- queries (OTP reads these from ETS without asking the scope process) ----------------

    def get_members(self, group: Term) -> list[Pid]:
        """Every member on every node, newest join first; a pid once per join."""
        row = self._rows.get(_Group(group))
        return list(row.all) if row else []

    def get_local_members(self, group: Term) -> list[Pid]:
        row = self._rows.get(_Group(group))
        return list(row.local) if row else []

    def which_groups(self) -> list[Term]:
        """Known groups, in creation order (OTP: ETS hash order, i.e. unspecified)."""
        return [g.term for g in self._rows]

    def which_local_groups(self) -> list[Term]:
        return [g.term for g, row in self._rows.items() if row.local]

    @property
    def peers(self) -> list[Pid]:
        """The remote scope processes in the overlay network (OTP's ``maps:keys(Remote)``)."""
        return list(self._remote)

    # -- node events -------------------------------------------------------------------------

    def start(self, connected: Iterable[Atom]) -> list[Effect]:
        """Scope started: ask every connected node whether it runs this scope."""
        return [self._discover_node(node) for node in connected]

    def node_up(self, node: Atom) -> list[Effect]:
        """``{nodeup, Node}`` from ``monitor_nodes``. ``nodedown`` needs no input: the DOWN of
        the peer's scope process does the cleaning."""
        return [] if node is self.self_pid.node else [self._discover_node(node)]

    def _discover_node(self, node: Atom) -> Send:
        return Send((self.scope, node), (DISCOVER, self.self_pid))

    # -- calls from local processes ----------------------------------------------------------

    def join(self, group: Term, pid_or_pids: PidOrPids) -> list[Effect]:
        """``pg:join/3``: local pids (one, or a list that may repeat a pid) join ``group``."""
        pids = self._local_pids(pid_or_pids)
        g = _Group(group)
        effects: list[Effect] = []
        for pid in pids:
            member = self._local.get(pid)
            if member is None:
                ref = self._make_ref()
                self._local[pid] = _Member(ref, [g])
                effects.append(Monitor(pid, ref))
            else:
                member.groups.insert(0, g)
        row = self._rows.setdefault(g, _Row([], []))
        row.all[:0] = pids
        row.local[:0] = pids
        effects += self._notify(JOIN, g, pids)
        announced = pid_or_pids if isinstance(pid_or_pids, Pid) else pids  # the form given
        effects += self._broadcast((JOIN, self.self_pid, group, announced))
        effects.append(Reply(OK))
        return effects

    def leave(self, group: Term, pid_or_pids: PidOrPids) -> list[Effect]:
        """``pg:leave/3``: one join of each pid is undone; ``not_joined`` if none was joined."""
        pids = self._local_pids(pid_or_pids)
        g = _Group(group)
        effects: list[Effect] = []
        changed = False
        for pid in pids:
            member = self._local.get(pid)
            if member is None or g not in member.groups:
                continue
            changed = True
            if len(member.groups) == 1:
                del self._local[pid]
                effects.append(Demonitor(member.ref))
            else:
                member.groups.remove(g)
        if not changed:
            return [Reply(NOT_JOINED)]
        announced = pid_or_pids if isinstance(pid_or_pids, Pid) else pids
        effects += self._leave_rows(g, announced, local=True)
        effects += self._broadcast((LEAVE, self.self_pid, announced, [group]))
        effects.append(Reply(OK))
        return effects

    def _local_pids(self, pid_or_pids: PidOrPids) -> list[Pid]:
        """OTP's ``ensure_local``: a local pid or a list of them, else ``{nolocal, Bad}``."""
        if not isinstance(pid_or_pids, Pid | list):
            raise LocalProtocolError(f"nolocal: {pid_or_pids!r}")
        pids = _as_list(pid_or_pids)
        for pid in pids:
            if not isinstance(pid, Pid) or pid.node is not self.self_pid.node:
                raise LocalProtocolError(f"nolocal: {pid!r}")
        return list(pids)

    def monitor_scope(self, caller: Pid) -> list[Effect]:
        """``pg:monitor_scope/1``: reply ``{Ref, #{Group => AllPids}}``, then notify ``caller``
        of every change under ``Ref``. Map keys are :class:`ExactKey` (they encode as the
        group terms)."""
        ref = self._make_ref()
        self._scope_monitors[ref] = caller
        snapshot = {g.key: list(row.all) for g, row in self._rows.items()}
        return [Monitor(caller, ref), Reply((ref, snapshot))]

    def monitor_group(self, caller: Pid, group: Term) -> list[Effect]:
        """``pg:monitor/2``: reply ``{Ref, AllPids}``, then notify changes of ``group``."""
        g = _Group(group)
        ref = self._make_ref()
        self._group_monitors[ref] = (caller, g)
        self._monitored_groups.setdefault(g, []).insert(0, (caller, ref))
        return [Monitor(caller, ref), Reply((ref, self.get_members(group)))]

    def demonitor(self, ref: Reference) -> list[Effect]:
        """``pg:demonitor/2``: ``ok``, or ``false`` for an unknown ref. The caller flushes its
        own queue of ``{Ref, join | leave, _, _}``."""
        if self._scope_monitors.pop(ref, None) is None and not self._drop_group_monitor(ref):
            return [Reply(False)]
        return [Demonitor(ref), Reply(OK)]

    def _drop_group_monitor(self, ref: Reference) -> bool:
        entry = self._group_monitors.pop(ref, None)
        if entry is None:
            return False
        caller, g = entry
        watchers = self._monitored_groups[g]
        watchers.remove((caller, ref))
        if not watchers:
            del self._monitored_groups[g]
        return True

    # -- DOWN of anything this machine asked to monitor ---------------------------------------

    def down(self, ref: Reference, pid: Pid) -> list[Effect]:
        """``{'DOWN', Ref, process, Pid, _}``: a member died, a remote scope (or its node)
        went away, or a subscriber died. Unknown or stale refs change nothing."""
        member = self._local.get(pid)
        if member is not None and member.ref == ref:
            del self._local[pid]
            effects: list[Effect] = []
            for g in member.groups:
                effects += self._leave_rows(g, pid, local=True)
            groups = [g.term for g in member.groups]
            return effects + self._broadcast((LEAVE, self.self_pid, pid, groups))
        peer = self._remote.get(pid)
        if peer is not None and peer.ref == ref:
            del self._remote[pid]
            effects = []
            for g, pids in peer.groups.items():
                effects += self._leave_rows(g, pids, local=False)
            return effects
        if self._scope_monitors.pop(ref, None) is None:
            self._drop_group_monitor(ref)
        return []

    # -- messages from remote scopes ---------------------------------------------------------

    def receive(self, message: Term) -> list[Effect]:
        """A message that arrived in the scope process's mailbox from a remote scope."""
        if type(message) is tuple and message:
            tag, size = message[0], len(message)
            if tag is DISCOVER and size in (2, 3):  # the 3-tuple: OTP 26+ accept, none send
                return self._on_discover(message)
            if tag is JOIN and size == 4:
                return self._on_join(message)
            if tag is LEAVE and size == 4:
                return self._on_leave(message)
            if tag is GEN_CAST and size == 2:
                cast = message[1]
                if type(cast) is tuple and len(cast) == 3 and cast[0] is SYNC:
                    return self._on_sync(message)
        return [Malformed("not a pg message", message)]

    def _peer_problem(self, peer: Term) -> str | None:
        if not isinstance(peer, Pid):
            return "peer is not a pid"
        if peer.node is self.self_pid.node:
            return "peer is on this node"
        return None

    def _on_discover(self, message: tuple[Term, ...]) -> list[Effect]:
        peer = message[1]
        problem = self._peer_problem(peer)
        if problem:
            return [Malformed(problem, message)]
        effects: list[Effect] = [Send(peer, (GEN_CAST, (SYNC, self.self_pid, self._sync_groups())))]
        if peer not in self._remote:
            ref = self._make_ref()
            self._remote[peer] = _Peer(ref, {})
            effects += [Monitor(peer, ref), Send(peer, (DISCOVER, self.self_pid))]
        return effects

    def _sync_groups(self) -> list[tuple[Term, list[Pid]]]:
        """OTP's ``all_local_pids``: every local member per group, a pid once per join."""
        per_group: dict[_Group, list[Pid]] = {}
        for pid, member in self._local.items():
            for g in member.groups:
                per_group.setdefault(g, []).insert(0, pid)
        return [(g.term, pids) for g, pids in per_group.items()]

    def _on_join(self, message: tuple[Term, ...]) -> list[Effect]:
        _, peer, group, pid_or_pids = message
        problem = self._peer_problem(peer) or _pids_problem(pid_or_pids)
        if problem:
            return [Malformed(problem, message)]
        known = self._remote.get(peer)
        if known is None:  # a peer that left (or never entered) the overlay: OTP ignores it
            return []
        g = _Group(group)
        pids = _as_list(pid_or_pids)
        self._rows.setdefault(g, _Row([], [])).all[:0] = pids
        known.groups[g] = pids + known.groups.get(g, [])
        return self._notify(JOIN, g, pids)

    def _on_leave(self, message: tuple[Term, ...]) -> list[Effect]:
        _, peer, pid_or_pids, groups = message
        problem = self._peer_problem(peer) or _pids_problem(pid_or_pids)
        if not problem and type(groups) is not list:
            problem = "groups are not a proper list"
        if problem:
            return [Malformed(problem, message)]
        known = self._remote.get(peer)
        if known is None:
            return []
        pids = _as_list(pid_or_pids)
        left = dict(known.groups)
        targets = [_Group(group) for group in groups]
        for g in targets:  # OTP's leave_remote: crashes (badkey) on a group it never heard of
            if g not in left:
                return [Malformed("leave from a group the peer has not joined", message)]
            remaining = _subtract(left[g], pids)
            if remaining:
                left[g] = remaining
            else:
                del left[g]
        effects: list[Effect] = []
        for g in targets:
            effects += self._leave_rows(g, pid_or_pids, local=False)
        known.groups = left
        return effects

    def _on_sync(self, message: tuple[Term, ...]) -> list[Effect]:
        _, peer, groups = message[1]
        problem = self._peer_problem(peer) or self._sync_problem(groups)
        if problem:
            return [Malformed(problem, message)]
        effects: list[Effect] = []
        known = self._remote.get(peer)
        if known is None:  # a sync without discover: OTP monitors the peer, sends nothing
            known = _Peer(self._make_ref(), {})
            self._remote[peer] = known
            effects.append(Monitor(peer, known.ref))
        old = dict(known.groups)
        new: dict[_Group, list[Pid]] = {}
        for group, pids in groups:
            g = _Group(group)
            new[g] = pids
            if g not in old:
                self._rows.setdefault(g, _Row([], [])).all[:0] = pids
                effects += self._notify(JOIN, g, pids)
                continue
            old_pids = old.pop(g)
            if old_pids != pids:
                # OTP rewrites the row without notifying anyone (and crashes if the row is
                # gone, which a local leave of an empty-joined group can cause).
                row = self._rows.setdefault(g, _Row([], []))
                row.all = pids + _subtract(row.all, old_pids)
        for g, pids in old.items():
            effects += self._leave_rows(g, pids, local=False)
        known.groups = new
        return effects

    @staticmethod
    def _sync_problem(groups: Term) -> str | None:
        if type(groups) is not list:
            return "sync groups are not a proper list"
        seen: set[_Group] = set()
        for item in groups:
            if type(item) is not tuple or len(item) != 2 or type(item[1]) is not list:
                return "a sync entry is not {Group, [Pid]}"
            if _pids_problem(item[1]):
                return "a sync member is not a pid"
            g = _Group(item[0])
            if g in seen:
                return "a group appears twice in sync"
            seen.add(g)
        return None

    # -- shared steps ------------------------------------------------------------------------

    def _leave_rows(self, g: _Group, pid_or_pids: PidOrPids, *, local: bool) -> list[Effect]:
        """OTP's ``leave_local_update_ets`` / ``leave_remote_update_ets`` for one group.

        A single pid loses one occurrence; a list loses one occurrence per element. The row
        goes when the single pid was its only member (and, for a local pid, its only local
        one), or when a list leaves no member (for a remote list, and no local member); else
        it stays, possibly empty, as in OTP. Subscribers hear of the pids as given, even ones
        that were not members.
        """
        row = self._rows.get(g)
        if row is None:
            return []
        pids = _as_list(pid_or_pids)
        new_all = _subtract(row.all, pids)
        if isinstance(pid_or_pids, Pid):  # OTP matches the exact last-member row
            emptied = row.all == pids and row.local == (pids if local else [])
        else:
            emptied = not new_all and (local or not row.local)
        if emptied:
            del self._rows[g]
        else:
            row.all = new_all
            if local:
                row.local = _subtract(row.local, pids)
        return self._notify(LEAVE, g, pids)

    def _notify(self, action: Atom, g: _Group, pids: list[Pid]) -> list[Effect]:
        """Scope subscribers first, then the group's subscribers (newest first)."""
        out: list[Effect] = [Notify(pid, (ref, action, g.term, list(pids)))
                             for ref, pid in self._scope_monitors.items()]
        out += [Notify(pid, (ref, action, g.term, list(pids)))
                for pid, ref in self._monitored_groups.get(g, [])]
        return out

    def _broadcast(self, message: Term) -> list[Effect]:
        return [Send(peer, message) for peer in self._remote]
