"""``pg`` process groups on this node: one scope process per scope (docs/protocol/pg.md).

Every scope is a process registered under the scope's name, as OTP's scope ``gen_server`` is, so
that BEAM scopes reach it with ``{discover, Self}`` sent to ``{Scope, Node}``. All the protocol
is decided by the pure machine :class:`pyerl_node.proto.pg.PgScope` (§8 of the doc); this module
only feeds it and carries out the effects it returns:

* inputs: ``{nodeup, Node}`` (the process watches every visible node), the ``'DOWN'`` of each
  monitor the machine asked for, and every other message of the mailbox (``discover``,
  ``join``, ``leave``, the ``sync`` cast), taken in arrival order by the process's loop; and
  the local calls (``join``, ``leave``, subscriptions), applied at once by the caller. Both run
  on the node's event loop and never await between the machine's step and its effects, so
  each step is atomic, as one ``handle_call`` of OTP's scope is;
* effects: sends go out with ``noconnect`` (as OTP sends them: only to connected nodes, never
  dialling one); a monitor of a pid whose node is not connected is answered at once with a
  ``noconnection`` DOWN into the scope's own mailbox, instead of dialling for it.

Membership queries read the machine's tables without going through the process, as OTP reads
its ETS table. A peer message the machine refuses is logged (at WARNING the first time for
each kind of fault in a scope, then at DEBUG) and ignored: the scope never crashes on input.

:class:`PgScopes` is the node's set of scopes (the default ``pg`` is started with the node)
and :class:`PgModule` serves ``pg:which_groups/0,1``, ``pg:which_local_groups/0,1``,
``pg:get_members/1,2`` and ``pg:get_local_members/1,2`` to rpc callers.
"""

from __future__ import annotations

import logging
from typing import Final

from pyerl_node.proto import etf
from pyerl_node.proto.errors import EncodeError, LocalProtocolError
from pyerl_node.proto.pg import (
    JOIN,
    LEAVE,
    OK,
    Demonitor,
    Effect,
    Malformed,
    Monitor,
    Notify,
    PgScope,
    PidOrPids,
    Reply,
    Send,
)
from pyerl_node.proto.safe_repr import safe_repr
from pyerl_node.proto.terms import Atom, ExactKey, Pid, Reference, Term
from pyerl_node.runtime.interface import NodeServices
from pyerl_node.runtime.process import DOWN, NOCONNECTION, PROCESS, Process
from pyerl_node.services.builtins import pg as pg_builtin
from pyerl_node.services.builtins.common import badarg, function_clause
from pyerl_node.services.rpc import Exposed

log = logging.getLogger("pyerl_node.pg")

#: The scope ``pg:join/2`` and the other arity-less calls use.
DEFAULT_SCOPE: Final = Atom("pg")
NODEUP: Final = Atom("nodeup")
NODEDOWN: Final = Atom("nodedown")
_ETS: Final = Atom("ets")
_PG: Final = Atom("pg")
_ERL_STDLIB_ERRORS: Final = Atom("erl_stdlib_errors")
# the ets patterns OTP's which_groups/which_local_groups use: the arguments of their badarg
_MATCH_ROW: Final = (Atom("$1"), Atom("_"), Atom("_"))
_LOCAL_SPEC: Final[list[Term]] = [
    ((Atom("$1"), Atom("_"), Atom("$2")), [(Atom("=/="), Atom("$2"), [])], [Atom("$1")])]


class PgScopeService:
    """One running scope: the registered process and the machine it owns."""

    def __init__(self, node: NodeServices, scope: Atom) -> None:
        self._node = node
        self.scope = scope
        self._proc: Process | None = None
        self._machine: PgScope | None = None
        # subscription ref -> the subscriber, whose queue pg_demonitor flushes
        self._subscribers: dict[Reference, Pid] = {}
        self._faults_seen: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Register the scope's process, discover the connected nodes, serve the mailbox."""
        node = self._node
        if node.whereis(self.scope) is not None:
            raise LocalProtocolError(f"{self.scope.name!r} is already registered on this node")
        proc = self._proc = node.new_process(self.scope)
        self._machine = PgScope(self.scope, proc.pid, node.make_ref)
        # watch first, then list: a node that comes up in between is seen either way
        node.monitor_nodes(proc.pid)
        self._apply(self._machine.start(node.nodes("visible")))
        node.run_process(proc, self._serve)

    @property
    def alive(self) -> bool:
        """Whether the scope's process runs."""
        return self._proc is not None and self._proc.alive

    @property
    def pid(self) -> Pid:
        """The scope process's pid."""
        return self._running()[0].pid

    def _running(self) -> tuple[Process, PgScope]:
        if self._proc is None or self._machine is None or not self._proc.alive:
            raise LocalProtocolError(f"pg scope {self.scope.name!r} is not running")
        return self._proc, self._machine

    async def _serve(self, proc: Process) -> None:
        while True:
            message = await proc.receive()
            try:
                self.handle(message)
            except Exception:  # a bug of ours must not take every group of the node with it
                log.exception("pg scope %s failed on %s", self.scope.name, safe_repr(message))

    def handle(self, message: Term) -> None:
        """One message of the scope's mailbox (the loop's step; tests feed it directly)."""
        _, machine = self._running()
        if type(message) is tuple and len(message) == 2 and type(message[1]) is Atom:
            if message[0] is NODEUP:
                self._apply(machine.node_up(message[1]))
                return
            if message[0] is NODEDOWN:
                return  # the DOWN of that node's scope process does the cleaning (§2)
        if (type(message) is tuple and len(message) == 5 and message[0] is DOWN
                and isinstance(message[1], Reference) and isinstance(message[3], Pid)):
            self._subscribers.pop(message[1], None)
            self._apply(machine.down(message[1], message[3]))
            return
        self._apply(machine.receive(message))

    # -- effects -----------------------------------------------------------------------------

    def _apply(self, effects: list[Effect]) -> Term:
        """Carry out ``effects`` in order; the value of the ``Reply`` among them, if any."""
        proc = self._running()[0]
        answer: Term = None
        for effect in effects:
            if isinstance(effect, Send | Notify):
                self._node.send_noconnect(effect.to, effect.message, sender=proc.pid)
            elif isinstance(effect, Monitor):
                self._monitor(proc, effect.pid, effect.ref)
            elif isinstance(effect, Demonitor):
                self._node.demonitor(proc.pid, effect.ref)
            elif isinstance(effect, Reply):
                answer = effect.value
            elif isinstance(effect, Malformed):
                self._refused(effect)
        return answer

    def _monitor(self, proc: Process, pid: Pid, ref: Reference) -> None:
        if pid.node is not self._node.node_atom and not self._node.is_connected(pid.node):
            # its node went away after the message that named it arrived: the DOWN it would
            # get, without dialling the node again as a plain monitor would
            proc.mailbox.put((DOWN, ref, PROCESS, pid, NOCONNECTION))
            return
        self._node.monitor(proc.pid, pid, ref=ref)

    def _refused(self, fault: Malformed) -> None:
        first = fault.reason not in self._faults_seen
        self._faults_seen.add(fault.reason)
        log.log(logging.WARNING if first else logging.DEBUG,
                "pg scope %s ignored a message (%s): %s%s", self.scope.name, fault.reason,
                safe_repr(fault.message),
                "" if not first else "; further ones of this kind at DEBUG")

    # -- local calls (pg:join/3, pg:leave/3, the subscriptions) --------------------------------

    def join(self, group: Term, pid_or_pids: PidOrPids) -> None:
        """``pg:join/3``: LocalProtocolError for a pid that is not of this node, or for a
        group that cannot travel to other nodes (checked before anything changes)."""
        try:
            etf.encode(group)
        except EncodeError as exc:
            raise LocalProtocolError(f"a pg group must be an Erlang term: {exc}") from None
        self._apply(self._running()[1].join(group, pid_or_pids))

    def leave(self, group: Term, pid_or_pids: PidOrPids) -> bool:
        """``pg:leave/3``: True (``ok``), or False (``not_joined``) when none had joined."""
        return self._apply(self._running()[1].leave(group, pid_or_pids)) is OK

    def monitor_scope(self, watcher: Pid) -> tuple[Reference, dict[ExactKey, list[Pid]]]:
        """``pg:monitor_scope/1`` for ``watcher``: the ref and every group's members."""
        ref, groups = self._subscribe(self._running()[1].monitor_scope(watcher), watcher)
        assert isinstance(groups, dict)
        return ref, groups

    def monitor(self, watcher: Pid, group: Term) -> tuple[Reference, list[Pid]]:
        """``pg:monitor/2`` for ``watcher``: the ref and the group's members."""
        ref, members = self._subscribe(self._running()[1].monitor_group(watcher, group),
                                       watcher)
        assert isinstance(members, list)
        return ref, members

    def _subscribe(self, effects: list[Effect], watcher: Pid) -> tuple[Reference, Term]:
        answer = self._apply(effects)
        assert type(answer) is tuple and isinstance(answer[0], Reference)
        self._subscribers[answer[0]] = watcher
        return answer[0], answer[1]

    def demonitor(self, ref: Reference) -> bool:
        """``pg:demonitor/2``: False for an unknown ref. The subscriber's queued
        ``{Ref, join | leave, _, _}`` are dropped, as OTP's client side flushes them."""
        if self._apply(self._running()[1].demonitor(ref)) is not OK:
            return False
        watcher = self._subscribers.pop(ref, None)
        proc = None if watcher is None else self._node.process(watcher)
        if proc is not None:
            def queued(message: Term) -> bool:
                return (type(message) is tuple and len(message) == 4 and message[0] == ref
                        and message[1] in (JOIN, LEAVE))
            while proc.mailbox.receive_nowait(queued)[0]:
                pass
        return True

    # -- queries (table reads) ---------------------------------------------------------------

    def get_members(self, group: Term) -> list[Pid]:
        """Every member on every node the scope shares, newest join first."""
        return self._running()[1].get_members(group)

    def get_local_members(self, group: Term) -> list[Pid]:
        """The members on this node."""
        return self._running()[1].get_local_members(group)

    def which_groups(self) -> list[Term]:
        """Every group with a row."""
        return self._running()[1].which_groups()

    def which_local_groups(self) -> list[Term]:
        """The groups with a member on this node."""
        return self._running()[1].which_local_groups()


class PgScopes:
    """The scopes running on this node."""

    def __init__(self, node: NodeServices) -> None:
        self._node = node
        self._scopes: dict[Atom, PgScopeService] = {}

    def start_scope(self, scope: Atom) -> PgScopeService:
        """``pg:start(Scope)``: LocalProtocolError if it runs already (or the name is taken)."""
        running = self.running(scope)
        if running is not None:
            raise LocalProtocolError(f"pg scope {scope.name!r} is already started")
        service = PgScopeService(self._node, scope)
        service.start()
        self._scopes[scope] = service
        return service

    def ensure(self, scope: Atom) -> PgScopeService:
        """The scope, started if it does not run yet."""
        return self.running(scope) or self.start_scope(scope)

    def running(self, scope: Atom) -> PgScopeService | None:
        """The scope if its process runs, else None."""
        service = self._scopes.get(scope)
        return service if service is not None and service.alive else None

    def get(self, scope: Atom) -> PgScopeService:
        """The running scope; LocalProtocolError if there is none of that name."""
        service = self.running(scope)
        if service is None:
            raise LocalProtocolError(f"no pg scope {scope.name!r} runs on this node "
                                     "(start it with pg_start_scope)")
        return service


_MISSING: Final = object()


class PgModule:
    """Built-in ``pg`` for rpc callers: the queries, with OTP's answers for unknown scopes
    (``[]`` from the member lookups, ``badarg`` from ``ets:match`` for ``which_groups``)."""

    def __init__(self, scopes: PgScopes) -> None:
        self._scopes = scopes

    def which_groups(self, scope: Term = DEFAULT_SCOPE) -> list[Term]:
        """``pg:which_groups/0,1``."""
        if type(scope) is not Atom:
            function_clause(_PG, "which_groups", [scope])
        service = self._scopes.running(scope)
        if service is None:
            badarg(_ETS, "match", [scope, _MATCH_ROW], explained_by=_ERL_STDLIB_ERRORS)
        return service.which_groups()

    def which_local_groups(self, scope: Term = DEFAULT_SCOPE) -> list[Term]:
        """``pg:which_local_groups/0,1``: the groups with a member on this node."""
        if type(scope) is not Atom:
            function_clause(_PG, "which_local_groups", [scope])
        service = self._scopes.running(scope)
        if service is None:
            badarg(_ETS, "select", [scope, _LOCAL_SPEC], explained_by=_ERL_STDLIB_ERRORS)
        return service.which_local_groups()

    def get_members(self, scope_or_group: Term, group: Term = _MISSING) -> list[Pid]:
        """``pg:get_members/1,2``."""
        service, key = self._lookup(scope_or_group, group)
        return [] if service is None else service.get_members(key)

    def get_local_members(self, scope_or_group: Term, group: Term = _MISSING) -> list[Pid]:
        """``pg:get_local_members/1,2``."""
        service, key = self._lookup(scope_or_group, group)
        return [] if service is None else service.get_local_members(key)

    def _lookup(self, first: Term, second: Term) -> tuple[PgScopeService | None, Term]:
        if second is _MISSING:
            return self._scopes.running(DEFAULT_SCOPE), first
        return (self._scopes.running(first) if type(first) is Atom else None), second


def start_pg(node: NodeServices, exposed: Exposed) -> PgScopes:
    """Start the default scope ``pg`` and serve built-in ``pg`` (called once the node runs)."""
    scopes = PgScopes(node)
    scopes.start_scope(DEFAULT_SCOPE)
    pg_builtin.provide(exposed, PgModule(scopes))
    return scopes
