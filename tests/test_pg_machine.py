"""The ``pg`` scope machine (docs/protocol/pg.md): the captured OTP 28 / OTP 25 exchange replayed
into two machines (same outgoing messages, same membership as the BEAM nodes), OTP's exact
list semantics, subscriptions, malformed input, and clusters of 2-3 machines wired in memory
that must converge whatever the interleaving, disconnects and exits.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyerl_node.proto import control as c
from pyerl_node.proto.errors import LocalProtocolError
from pyerl_node.proto.pg import (
    DISCOVER,
    GEN_CAST,
    JOIN,
    LEAVE,
    NOT_JOINED,
    OK,
    SYNC,
    Demonitor,
    Effect,
    Malformed,
    Monitor,
    Notify,
    PgScope,
    Reply,
    Send,
)
from pyerl_node.proto.terms import Atom, ExactKey, Pid, Reference, Term, freeze
from tests.strategies import terms
from tests.test_connection import _directions, conn

SCOPE = Atom("my_scope")
NODE = Atom("py@h")
OTHER = Atom("erl@h")
ME = Pid(NODE, 1, 0, 1)
PEER = Pid(OTHER, 7, 0, 1)
G = Atom("g")


def ref_maker(node: Atom = NODE) -> Callable[[], Reference]:
    counter = itertools.count(1)
    return lambda: Reference(node, 1, (next(counter), 0, 0))


def scope(self_pid: Pid = ME) -> PgScope:
    return PgScope(SCOPE, self_pid, ref_maker(self_pid.node))


def local(n: int) -> Pid:
    return Pid(NODE, 100 + n, 0, 1)


def remote(n: int) -> Pid:
    return Pid(OTHER, 200 + n, 0, 1)


def with_peer(s: PgScope, groups: list[tuple[Term, list[Pid]]] | None = None) -> PgScope:
    """``s`` with PEER in its overlay (discovered, then synced with ``groups``)."""
    s.receive((DISCOVER, PEER))
    s.receive((GEN_CAST, (SYNC, PEER, groups or [])))
    return s


def sends(effects: list[Effect]) -> list[tuple[Any, Term]]:
    return [(e.to, e.message) for e in effects if isinstance(e, Send)]


def state_of(s: PgScope) -> Any:
    """Everything the machine holds, in comparable form (white box: 'changes nothing')."""
    return (
        [(g.term, list(r.all), list(r.local)) for g, r in s._rows.items()],
        {p: (m.ref, [g.term for g in m.groups]) for p, m in s._local.items()},
        {p: (q.ref, [(g.term, list(v)) for g, v in q.groups.items()]) for p, q in
         s._remote.items()},
        dict(s._scope_monitors),
        {r: (p, g.term) for r, (p, g) in s._group_monitors.items()},
        [(g.term, list(v)) for g, v in s._monitored_groups.items()],
    )


# --- the captured exchange: a@vm (OTP 28) and b@vm (OTP 25), scope my_scope -----------------

VECTOR = "dist/pg_28a_25b.json"


def _captured() -> dict[str, list[Any]]:
    """Per sending node, its decoded control messages in wire order."""
    out: dict[str, list[Any]] = {}
    for flags, frames in _directions(VECTOR):
        receiver = conn(flags)
        events: list[Any] = []
        for frame in frames:
            events += receiver.receive_data(bytes.fromhex(frame["hex"]), 0.0)
        out[frames[0]["sender"]] = events
    return out


def _pg_part(events: list[Any], scope_pids: set[Pid]) -> list[tuple[str, Term, Term]]:
    """The scope process's traffic: sends to a scope (by name or pid) and its monitors."""
    out: list[tuple[str, Term, Term]] = []
    for e in events:
        if isinstance(e, c.RegSend) and e.to_name is SCOPE:
            out.append(("send", SCOPE, e.message))
        elif isinstance(e, c.SendSender) and e.to_pid in scope_pids:
            out.append(("send", e.to_pid, e.message))
        elif isinstance(e, c.MonitorP) and e.from_pid in scope_pids:
            out.append(("monitor", e.to_proc, None))
    return out


def _as_wire(effects: list[Effect], peer_node: Atom) -> list[tuple[str, Term, Term]]:
    out: list[tuple[str, Term, Term]] = []
    for e in effects:
        if isinstance(e, Send):
            if isinstance(e.to, tuple):
                assert e.to == (SCOPE, peer_node)
                out.append(("send", SCOPE, e.message))
            else:
                out.append(("send", e.to, e.message))
        elif isinstance(e, Monitor) and e.pid.node is peer_node:
            out.append(("monitor", e.pid, None))
    return out


def test_vector_replay_gives_the_beam_nodes_messages_and_membership() -> None:
    captured = _captured()
    discovers = [e for events in captured.values() for e in events
                 if isinstance(e, c.RegSend) and e.to_name is SCOPE]
    pid_a, pid_b = (next(e.from_pid for e in discovers if e.from_pid.node.name == n)
                    for n in ("a@vm", "b@vm"))
    node_a, node_b = pid_a.node, pid_b.node
    traffic = {n: _pg_part(captured[n], {pid_a, pid_b}) for n in ("a@vm", "b@vm")}
    member_b = traffic["b@vm"][1][2][1][2][0][1][0]  # sync {grp_b, [Pid]}: b's member
    join_msg = traffic["a@vm"][-2][2]
    member_a = join_msg[3]
    grp_a, grp_b = Atom("grp_a"), Atom("grp_b")
    assert join_msg == (JOIN, pid_a, grp_a, member_a)

    a = PgScope(SCOPE, pid_a, ref_maker(node_a))
    b = PgScope(SCOPE, pid_b, ref_maker(node_b))
    b.join(grp_b, member_b)  # done before the nodes connected

    def incoming(sender: str) -> list[Term]:
        return [msg for kind, _, msg in traffic[sender] if kind == "send"]

    out_b = b.node_up(node_a)
    for number, msg in enumerate(incoming("a@vm")):
        out_b += b.receive(msg)
        if msg == join_msg:
            assert b.get_members(grp_a) == [member_a]
            assert number == len(incoming("a@vm")) - 2
    out_a = a.node_up(node_b)
    for msg in incoming("b@vm"):
        out_a += a.receive(msg)
    out_a += a.join(grp_a, member_a) + a.leave(grp_a, member_a)

    assert _as_wire(out_a, node_b) == traffic["a@vm"]
    assert _as_wire(out_b, node_a) == traffic["b@vm"]
    # a@vm's own console printed `members grp_b [<…88.0>]`; b@vm ends with grp_a gone.
    assert a.get_members(grp_b) == [member_b] and a.get_local_members(grp_b) == []
    assert b.get_members(grp_b) == b.get_local_members(grp_b) == [member_b]
    assert b.which_groups() == [grp_b] and b.get_members(grp_a) == []
    assert a.peers == [pid_b] and b.peers == [pid_a]
    assert not any(isinstance(e, Malformed) for e in out_a + out_b)


# --- OTP's list semantics ---------------------------------------------------------------------


def test_join_prepends_and_a_pid_may_join_many_times() -> None:
    s = with_peer(scope())
    effects = s.join(G, [local(1), local(2)])
    assert effects == [Monitor(local(1), effects[0].ref), Monitor(local(2), effects[1].ref),  # type: ignore[union-attr]
                       Send(PEER, (JOIN, ME, G, [local(1), local(2)])), Reply(OK)]
    effects = s.join(G, local(1))
    assert effects == [Send(PEER, (JOIN, ME, G, local(1))), Reply(OK)]  # no second monitor
    assert s.get_members(G) == [local(1), local(1), local(2)]
    assert s.leave(G, local(1)) == [Send(PEER, (LEAVE, ME, local(1), [G])), Reply(OK)]
    assert s.get_members(G) == [local(1), local(2)]
    leave = s.leave(G, [local(1), local(3)])  # one of them joined: ok, the list goes out as is
    assert isinstance(leave[0], Demonitor)
    assert leave[1:] == [Send(PEER, (LEAVE, ME, [local(1), local(3)], [G])), Reply(OK)]
    assert s.leave(G, local(1)) == [Reply(NOT_JOINED)]
    assert s.get_members(G) == s.get_local_members(G) == [local(2)]


def test_same_answers_as_a_beam_node() -> None:
    # The same calls made on an OTP 25.3 and an OTP 28 node (pg:start(s), three processes)
    # printed: order [1,3,1,2], after leave [3,1,2], leave of [P1,P1,P1] ok -> [3,2], an
    # empty join makes a listed empty group, 1 and 1.0 are two groups, the leave
    # notification carries the pids as given, and an exit empties the group.
    s = scope()
    p1, p2, p3 = local(1), local(2), local(3)
    s.join(G, [p1, p2])
    watch_p3 = s.join(G, p3)[0]
    s.join(G, p1)
    assert s.get_members(G) == [p1, p3, p1, p2]
    s.leave(G, p1)
    assert s.get_members(G) == [p3, p1, p2]
    assert s.leave(G, [p1, p1, p1])[-1] == Reply(OK)
    assert s.get_members(G) == [p3, p2]
    s.join(Atom("empty"), [])
    assert s.which_groups() == [G, Atom("empty")] and s.get_members(Atom("empty")) == []
    assert s.leave(Atom("empty"), []) == [Reply(NOT_JOINED)]
    s.join(1, p1)
    s.join(1.0, p2)
    assert s.get_members(1) == [p1] and s.get_members(1.0) == [p2]
    sub = s.monitor_scope(local(9))
    ref = sub[0].ref  # type: ignore[union-attr]
    assert sub[1] == Reply((ref, {ExactKey(G): [p3, p2], ExactKey(Atom("empty")): [],
                                  ExactKey(1): [p1], ExactKey(1.0): [p2]}))
    assert Notify(local(9), (ref, LEAVE, G, [p2, p1])) in s.leave(G, [p2, p1])
    assert isinstance(watch_p3, Monitor)
    s.down(watch_p3.ref, p3)
    assert s.get_members(G) == []


def test_member_exit_leaves_every_joined_group_once_per_join() -> None:
    s = with_peer(scope(), [(G, [remote(1)])])
    mon = s.join(G, local(1))[0]
    assert isinstance(mon, Monitor)
    s.join(Atom("h"), local(1))
    s.join(G, local(1))
    assert s.get_members(G) == [local(1), local(1), remote(1)]
    effects = s.down(mon.ref, local(1))
    assert effects == [Send(PEER, (LEAVE, ME, local(1), [G, Atom("h"), G]))]
    assert s.get_members(G) == [remote(1)] and s.which_groups() == [G]
    assert s.down(mon.ref, local(1)) == []  # a second DOWN is stale


def test_stale_down_after_leave_and_rejoin_is_ignored() -> None:
    s = scope()
    old = s.join(G, local(1))[0]
    s.leave(G, local(1))
    s.join(G, local(1))
    assert isinstance(old, Monitor)
    assert s.down(old.ref, local(1)) == []
    assert s.get_members(G) == [local(1)]


def test_joining_no_pids_makes_an_empty_group_as_otp_does() -> None:
    s = with_peer(scope())
    assert s.join(G, []) == [Send(PEER, (JOIN, ME, G, [])), Reply(OK)]
    assert s.which_groups() == [G] and s.get_members(G) == []
    assert s.leave(G, []) == [Reply(NOT_JOINED)]


def test_remote_join_leave_and_peer_down() -> None:
    s = with_peer(scope(), [(G, [remote(1)])])
    s.join(G, local(1))
    assert s.receive((JOIN, PEER, G, [remote(2), remote(3)])) == []
    assert s.receive((JOIN, PEER, Atom("h"), remote(2))) == []
    assert s.get_members(G) == [remote(2), remote(3), local(1), remote(1)]  # newest first
    assert s.receive((LEAVE, PEER, remote(2), [G, Atom("h")])) == []
    assert s.get_members(G) == [remote(3), local(1), remote(1)]
    assert s.which_groups() == [G]
    peer_ref = s._remote[PEER].ref
    s.down(peer_ref, PEER)
    assert s.get_members(G) == [local(1)] and s.peers == []
    # Once the peer is gone its late messages are ignored (OTP's flicker race).
    assert s.receive((JOIN, PEER, G, remote(9))) == []
    assert s.receive((LEAVE, PEER, remote(9), [G])) == []
    assert s.get_members(G) == [local(1)]


def test_discover_answers_with_sync_and_discovers_back_once() -> None:
    s = scope()
    s.join(G, [local(1), local(2)])
    s.join(Atom("h"), local(1))
    first = s.receive((DISCOVER, PEER))
    sync = (GEN_CAST, (SYNC, ME, [(Atom("h"), [local(1)]), (G, [local(2), local(1)])]))
    assert sends(first) == [(PEER, sync), (PEER, (DISCOVER, ME))]
    assert [e.pid for e in first if isinstance(e, Monitor)] == [PEER]
    again = s.receive((DISCOVER, PEER, 1))  # OTP 26+ accept a version field
    assert again == [Send(PEER, sync)]


def test_sync_from_unknown_peer_monitors_without_discovering_back() -> None:
    s = scope()
    effects = s.receive((GEN_CAST, (SYNC, PEER, [(G, [remote(1)])])))
    assert [type(e) for e in effects] == [Monitor] and s.peers == [PEER]
    assert s.get_members(G) == [remote(1)]


def test_resync_replaces_what_the_peer_said_before() -> None:
    s = with_peer(scope(), [(G, [remote(1), remote(2)]), (Atom("h"), [remote(3)])])
    s.join(G, local(1))
    sub = s.monitor_scope(local(9))[0]
    assert isinstance(sub, Monitor)
    effects = s.receive((GEN_CAST, (SYNC, PEER, [(G, [remote(2), remote(4)]), (1, [remote(5)])])))
    # Changed pids of a known group: row rewritten (new ++ (all -- old)), nobody notified.
    assert s.get_members(G) == [remote(2), remote(4), local(1)]
    assert s.get_members(1) == [remote(5)] and s.get_members(Atom("h")) == []
    assert effects == [Notify(local(9), (sub.ref, JOIN, 1, [remote(5)])),
                       Notify(local(9), (sub.ref, LEAVE, Atom("h"), [remote(3)]))]


def test_groups_compare_as_erlang_terms() -> None:
    s = scope()
    for n, group in enumerate([1, 1.0, True, [1, 2], {Atom("k"): [1]}, (1,), (1.0,)]):
        s.join(group, local(n))
    assert s.get_members(1) == [local(0)] and s.get_members(1.0) == [local(1)]
    assert s.get_members(True) == [local(2)] and s.get_members([1, 2]) == [local(3)]
    assert s.get_members({Atom("k"): [1]}) == [local(4)] and s.get_members((1.0,)) == [local(6)]
    assert len(s.which_groups()) == 7


def test_local_calls_take_only_local_pids() -> None:
    s = scope()
    for bad in (remote(1), [local(1), remote(1)], Atom("x"), [Atom("x")]):
        with pytest.raises(LocalProtocolError, match="nolocal"):
            s.join(G, bad)  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError, match="nolocal"):
            s.leave(G, bad)  # type: ignore[arg-type]
    assert state_of(s) == state_of(scope())


def test_node_up_and_start_discover_by_name() -> None:
    s = scope()
    assert s.node_up(OTHER) == [Send((SCOPE, OTHER), (DISCOVER, ME))]
    assert s.node_up(NODE) == []
    assert s.start([OTHER, Atom("x@h")]) == [Send((SCOPE, OTHER), (DISCOVER, ME)),
                                            Send((SCOPE, Atom("x@h")), (DISCOVER, ME))]


# --- subscriptions (OTP 25.1+) --------------------------------------------------------------


def test_monitor_scope_and_group_notifications() -> None:
    s = with_peer(scope())
    s.join(G, local(1))
    scope_sub = s.monitor_scope(local(8))
    assert isinstance(scope_sub[0], Monitor) and scope_sub[0].pid == local(8)
    ref_s = scope_sub[0].ref
    assert scope_sub[1] == Reply((ref_s, {ExactKey(G): [local(1)]}))
    assert scope_sub[1].value[1][G] == [local(1)]
    group_sub = s.monitor_group(local(9), Atom("h"))
    ref_g = group_sub[0].ref  # type: ignore[union-attr]
    assert group_sub[1] == Reply((ref_g, []))
    effects = s.join(Atom("h"), [local(2)])
    assert [e for e in effects if isinstance(e, Notify)] == [
        Notify(local(8), (ref_s, JOIN, Atom("h"), [local(2)])),
        Notify(local(9), (ref_g, JOIN, Atom("h"), [local(2)]))]
    effects = s.receive((JOIN, PEER, G, remote(1)))
    assert effects == [Notify(local(8), (ref_s, JOIN, G, [remote(1)]))]
    assert s.demonitor(ref_g) == [Demonitor(ref_g), Reply(OK)]
    assert s.demonitor(ref_g) == [Reply(False)]
    assert s.down(ref_s, local(8)) == []  # the subscriber died: dropped
    assert s.leave(Atom("h"), local(2))[-1] == Reply(OK)
    assert not any(isinstance(e, Notify) for e in s.join(G, local(3)))
    assert s._scope_monitors == {} and s._monitored_groups == {}


# --- malformed input ------------------------------------------------------------------------

MALFORMED: list[Term] = [
    Atom("hello"),
    (),
    (DISCOVER,),
    (DISCOVER, Atom("pg")),
    (DISCOVER, ME),  # ourselves
    (DISCOVER, local(1)),  # another process of this node
    (DISCOVER, PEER, 1, 2),
    (JOIN, PEER, G),
    (JOIN, PEER, G, Atom("notapid")),
    (JOIN, PEER, G, [remote(1), 3]),
    (JOIN, Atom("p"), G, remote(1)),
    (LEAVE, PEER, remote(1), G),
    (LEAVE, PEER, [1], [G]),
    (LEAVE, PEER, remote(1), [Atom("never")]),  # OTP crashes (badkey)
    (LEAVE, PEER, remote(1), [G, G]),  # the second G: peer's group already emptied
    (GEN_CAST, (SYNC, PEER)),
    (GEN_CAST, (SYNC, PEER, Atom("x"))),
    (GEN_CAST, (SYNC, PEER, [(G,)])),
    (GEN_CAST, (SYNC, PEER, [(G, remote(1))])),
    (GEN_CAST, (SYNC, PEER, [(G, [Atom("x")])])),
    (GEN_CAST, (SYNC, PEER, [(G, [remote(1)]), (G, [])])),
    (GEN_CAST, (DISCOVER, PEER)),
    [JOIN, PEER, G, remote(1)],
    (Atom("nodeup"), OTHER),
]


def _populated() -> PgScope:
    s = with_peer(scope(), [(G, [remote(1)])])
    s.join(G, [local(1), local(2)])
    s.monitor_scope(local(8))
    s.monitor_group(local(9), G)
    return s


@pytest.mark.parametrize("message", MALFORMED, ids=repr)
def test_malformed_changes_nothing(message: Term) -> None:
    s = _populated()
    before = state_of(s)
    effects = s.receive(message)
    assert len(effects) == 1 and isinstance(effects[0], Malformed)
    assert effects[0].message is message
    assert state_of(s) == before


_pg_shaped = st.tuples(
    st.sampled_from([DISCOVER, JOIN, LEAVE, GEN_CAST, SYNC, Atom("x")]),
    st.lists(st.one_of(terms(), st.sampled_from([PEER, ME, remote(1), local(1), G, [remote(1)],
                                                 [G], (SYNC, PEER, [(G, [remote(2)])])])),
             max_size=4),
).map(lambda t: (t[0], *t[1]))


@settings(max_examples=150, deadline=None)
@given(message=st.one_of(terms(), _pg_shaped))
def test_any_message_is_handled_or_refused_without_a_trace(message: Term) -> None:
    s = _populated()
    before = state_of(s)
    effects = s.receive(message)
    if any(isinstance(e, Malformed) for e in effects):
        assert len(effects) == 1 and state_of(s) == before


# --- clusters of machines wired to each other -------------------------------------------------

GROUPS: list[Term] = [Atom("g0"), Atom("g1"), 1, 1.0, [1, 2]]


class Cluster:
    """2-3 scopes, FIFO links per direction, monitors, member exits, disconnects; the truth is
    what each node's processes joined."""

    def __init__(self, size: int) -> None:
        self.nodes = [Atom(f"n{i}@h") for i in range(size)]
        refs = ref_maker(Atom("sim@h"))
        self.scopes = {n: PgScope(SCOPE, Pid(n, 1, 0, 1), refs) for n in self.nodes}
        self.queues: dict[tuple[Atom, Atom], deque[Term]] = {
            (a, b): deque() for a in self.nodes for b in self.nodes if a is not b}
        self.connected: set[frozenset[Atom]] = set()
        self.members: dict[Atom, dict[Pid, Reference]] = {n: {} for n in self.nodes}
        self.peer_refs: dict[Atom, dict[Pid, Reference]] = {n: {} for n in self.nodes}
        self.dead: set[Pid] = set()
        self.truth: dict[tuple[Atom, int], Counter[Pid]] = {}
        self.views: dict[Atom, dict[Term, Counter[Pid]]] = {n: {} for n in self.nodes}
        self.sub_ref: dict[Atom, Reference] = {}
        for n in self.nodes:
            sub = self.scopes[n].monitor_scope(self.subscriber(n))
            self.sub_ref[n] = sub[0].ref  # type: ignore[union-attr]

    @staticmethod
    def subscriber(node: Atom) -> Pid:
        return Pid(node, 50, 0, 1)

    @staticmethod
    def pid(node: Atom, k: int) -> Pid:
        return Pid(node, 100 + k, 0, 1)

    def apply(self, node: Atom, effects: list[Effect]) -> None:
        for e in effects:
            assert not isinstance(e, Malformed), e
            if isinstance(e, Send):
                dest = e.to[1] if isinstance(e.to, tuple) else e.to.node
                if frozenset((node, dest)) in self.connected:
                    self.queues[(node, dest)].append(e.message)
            elif isinstance(e, Monitor):
                if e.pid.node is node:
                    if e.pid != self.subscriber(node):
                        self.members[node][e.pid] = e.ref
                elif frozenset((node, e.pid.node)) in self.connected:
                    self.peer_refs[node][e.pid] = e.ref
                else:
                    self.apply(node, self.scopes[node].down(e.ref, e.pid))
            elif isinstance(e, Demonitor):
                self.members[node] = {p: r for p, r in self.members[node].items() if r != e.ref}
            elif isinstance(e, Notify):
                ref, action, group, pids = e.message
                assert ref == self.sub_ref[node] and e.to == self.subscriber(node)
                view = self.views[node].setdefault(ExactKey(freeze(group)), Counter())
                if action is JOIN:
                    view.update(pids)
                else:
                    view.subtract(pids)
                    for p in [p for p, k in view.items() if k <= 0]:
                        del view[p]

    def joined(self, node: Atom, g: int) -> Counter[Pid]:
        return self.truth.setdefault((node, g), Counter())

    def join(self, node: Atom, g: int, ks: list[int], as_list: bool) -> None:
        pids = [self.pid(node, k) for k in ks if self.pid(node, k) not in self.dead]
        pids = pids if as_list else pids[:1]
        if not pids:
            return
        self.joined(node, g).update(pids)
        self.apply(node, self.scopes[node].join(GROUPS[g], pids if as_list else pids[0]))

    def leave(self, node: Atom, g: int, ks: list[int], as_list: bool) -> None:
        pids = [self.pid(node, k) for k in ks]
        pids = pids if as_list else pids[:1]
        joined = self.joined(node, g)
        expected = OK if any(joined[p] for p in pids) else NOT_JOINED
        for p in pids:
            if joined[p]:
                joined[p] -= 1
        effects = self.scopes[node].leave(GROUPS[g], pids if as_list else pids[0])
        assert effects[-1] == Reply(expected)
        self.apply(node, effects)

    def exit(self, node: Atom, k: int) -> None:
        pid = self.pid(node, k)
        self.dead.add(pid)
        for (n, _), joined in self.truth.items():
            if n is node:
                del joined[pid]
        ref = self.members[node].pop(pid, None)
        if ref is not None:
            self.apply(node, self.scopes[node].down(ref, pid))

    def deliver(self, src: Atom, dst: Atom) -> None:
        queue = self.queues[(src, dst)]
        if queue:
            self.apply(dst, self.scopes[dst].receive(queue.popleft()))

    def disconnect(self, a: Atom, b: Atom) -> None:
        if frozenset((a, b)) not in self.connected:
            return
        self.connected.discard(frozenset((a, b)))
        self.queues[(a, b)].clear()
        self.queues[(b, a)].clear()
        for side, other in ((a, b), (b, a)):
            other_pid = self.scopes[other].self_pid
            ref = self.peer_refs[side].pop(other_pid, None)
            if ref is not None:
                self.apply(side, self.scopes[side].down(ref, other_pid))

    def connect(self, a: Atom, b: Atom) -> None:
        if a is b or frozenset((a, b)) in self.connected:
            return
        self.connected.add(frozenset((a, b)))
        self.apply(a, self.scopes[a].node_up(b))
        self.apply(b, self.scopes[b].node_up(a))

    def settle(self) -> None:
        for a, b in itertools.combinations(self.nodes, 2):
            self.connect(a, b)
        for _ in range(100_000):
            busy = [key for key, q in self.queues.items() if q]
            if not busy:
                return
            for src, dst in busy:
                self.deliver(src, dst)
        raise AssertionError("the cluster did not go quiet")

    def check_converged(self) -> None:
        for n in self.nodes:
            s = self.scopes[n]
            nonempty = set()
            for g, group in enumerate(GROUPS):
                everyone = sum((self.joined(m, g) for m in self.nodes), Counter())
                everyone = +everyone
                assert Counter(s.get_members(group)) == everyone, (n, group)
                assert Counter(s.get_local_members(group)) == +self.joined(n, g), (n, group)
                assert self.views[n].get(ExactKey(freeze(group)), Counter()) == everyone, (n, group)
                if everyone:
                    nonempty.add(ExactKey(freeze(group)))
            assert {ExactKey(freeze(g)) for g in s.which_groups()} == nonempty, n
            assert set(s.peers) == {self.scopes[m].self_pid for m in self.nodes if m is not n}


@st.composite
def cluster_runs(draw: st.DrawFn) -> tuple[int, list[tuple[Any, ...]]]:
    size = draw(st.integers(2, 3))
    node = st.integers(0, size - 1)
    ks = st.lists(st.integers(0, 3), min_size=1, max_size=3)
    op = st.one_of(
        st.tuples(st.just("join"), node, st.integers(0, len(GROUPS) - 1), ks, st.booleans()),
        st.tuples(st.just("leave"), node, st.integers(0, len(GROUPS) - 1), ks, st.booleans()),
        st.tuples(st.just("exit"), node, st.integers(0, 3)),
        st.tuples(st.just("deliver"), node, node),
        st.tuples(st.just("deliver"), node, node),
        st.tuples(st.just("deliver"), node, node),
        st.tuples(st.just("connect"), node, node),
        st.tuples(st.just("disconnect"), node, node),
    )
    return size, draw(st.lists(op, max_size=60))


@settings(max_examples=120, deadline=None)
@given(run=cluster_runs())
def test_clusters_converge_to_what_was_joined(run: tuple[int, list[tuple[Any, ...]]]) -> None:
    size, ops = run
    cluster = Cluster(size)
    for a, b in itertools.combinations(cluster.nodes, 2):
        cluster.connect(a, b)
    for name, *args in ops:
        if name in ("deliver", "connect", "disconnect"):
            a, b = (cluster.nodes[i] for i in args)
            if a is not b:
                getattr(cluster, name)(a, b)
        else:
            getattr(cluster, name)(cluster.nodes[args[0]], *args[1:])
    cluster.settle()
    cluster.check_converged()


def test_cluster_harness_sees_a_partition() -> None:
    # Guards the property above: while split, a node must not see the other side's members.
    cluster = Cluster(2)
    a, b = cluster.nodes
    cluster.connect(a, b)
    cluster.settle()
    cluster.join(a, 0, [0, 0], True)
    cluster.disconnect(a, b)
    assert cluster.scopes[b].get_members(GROUPS[0]) == []
    cluster.exit(a, 0)
    cluster.join(a, 1, [1], False)
    cluster.settle()
    cluster.check_converged()
    assert cluster.scopes[b].get_members(GROUPS[1]) == [cluster.pid(a, 1)]
