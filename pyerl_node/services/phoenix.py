"""Phoenix.PubSub with its default adapter (``Phoenix.PubSub.PG2``), from Python.

What an Elixir node running ``{Phoenix.PubSub, name: MyApp.PubSub}`` does, and what this
module does the same way so that both kinds of node form one PubSub:

* **Workers.** The adapter starts ``pool_size`` worker processes, each registered under a
  group name and joined to that ``pg`` group in the scope ``Phoenix.PubSub``. The names are
  ``Module.concat(name, "Adapter")`` (``Elixir.MyApp.PubSub.Adapter``) for the first worker and
  ``<that>_2``, ``<that>_3``... for the others. The Python node starts the scope (if it does
  not run) and the same workers, so BEAM nodes find them with ``:pg.get_members/2``.
* **Broadcast.** A broadcast picks one of the first ``broadcast_pool_size`` groups by the
  sender (BEAM: ``phash2(self())``) and sends ``{forward_to_local, Topic, Message,
  Dispatcher}`` to every member of that group on *another* node (a pid once per join); then it
  dispatches on its own node. ``broadcast_from`` is the same, except that the local dispatch
  skips the ``from`` pid (remote nodes always dispatch with ``:none``). ``direct_broadcast``
  sends the ``forward_to_local`` to ``{Group, Node}`` by name. ``local_broadcast`` only
  dispatches here.
* **Dispatch.** A worker that receives ``forward_to_local`` dispatches it to its node's
  subscribers of the topic: with the default dispatcher ``Elixir.Phoenix.PubSub`` each gets the
  plain message. Python subscribers are Python processes kept in a table here (topic ->
  ``(pid, metadata)`` once per subscribe, in subscription order); each is monitored and
  dropped when it ends, as Elixir's Registry drops the entries of a dead process.

Choices where the Python node cannot do what the BEAM does:

* The group of a broadcast: a Python broadcast without a sender always uses the first group,
  so all of them reach a remote node through one worker, in order; ``broadcast_from`` picks
  the group by a CRC-32 of the ``from`` pid (not ``phash2``: any fixed choice per sender keeps
  that sender's messages in order, which is what the pool's hash is for).
* Custom dispatchers are Elixir modules and cannot run here. A Python callable can stand in
  for one (``dispatchers={Atom("Elixir.MyDispatcher"): fn}``, called as
  ``fn(entries, from_or_None, message)`` and returning the ``(pid, message)`` deliveries);
  a dispatcher without one is dispatched as the default dispatcher does, and logged once.
* The worker processes dispatch as each message arrives (their mailbox hands it over at once,
  nothing is queued), so messages from one sender reach the subscribers in order.

A member on a node that is not connected (its connection has just gone, or a peer announced a
pid of a third node) is skipped with a warning once per node, never dialled on every broadcast.
A ``forward_to_local`` whose topic is not a binary or whose dispatcher is not an atom (a BEAM
worker crashes on it) is logged once and dropped; other messages to a worker are ignored, as
the Elixir worker ignores them.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from pyerl_node.proto.errors import LocalProtocolError
from pyerl_node.proto.safe_repr import safe_repr
from pyerl_node.proto.terms import Atom, Pid, Reference, Term
from pyerl_node.runtime.interface import NodeServices
from pyerl_node.runtime.mailbox import FlowSource, Mailbox
from pyerl_node.runtime.process import DOWN, NORMAL, Process
from pyerl_node.services.pg import PgScopes, PgScopeService

log = logging.getLogger("pyerl_node.pubsub")

#: The ``pg`` scope of the PG2 adapter.
PUBSUB_SCOPE: Final = Atom("Elixir.Phoenix.PubSub")
#: The default dispatcher: each subscriber gets the plain message.
DEFAULT_DISPATCHER: Final = Atom("Elixir.Phoenix.PubSub")
FORWARD_TO_LOCAL: Final = Atom("forward_to_local")
_ELIXIR: Final = "Elixir."

#: A Python stand-in for an Elixir dispatcher module: ``(entries, from, message)`` to the
#: ``(pid, message)`` deliveries; ``entries`` are ``(pid, metadata)``, ``from`` None for
#: ``:none``.
Dispatcher = Callable[[list[tuple[Pid, Term]], Pid | None, Term], Iterable[tuple[Pid, Term]]]


def pubsub_atom(name: Atom | str) -> Atom:
    """The atom of a PubSub name as Elixir writes it: ``"MyApp.PubSub"`` is the alias
    ``Elixir.MyApp.PubSub``, ``":my_pubsub"`` the atom ``my_pubsub``; an Atom is taken as is."""
    if isinstance(name, Atom):
        return name
    if name.startswith(":"):
        return Atom(name[1:])
    return Atom(name if name.startswith(_ELIXIR) else _ELIXIR + name)


def adapter_groups(name: Atom, pool_size: int) -> tuple[Atom, ...]:
    """The workers' names (also their ``pg`` groups): ``Module.concat(name, "Adapter")``, then
    ``<that>_2`` ... ``<that>_<pool_size>``."""
    adapter = _ELIXIR + name.name.removeprefix(_ELIXIR) + ".Adapter"
    return (Atom(adapter), *(Atom(f"{adapter}_{n}") for n in range(2, pool_size + 1)))


def topic_binary(topic: str | bytes) -> bytes:
    """A topic as Elixir has it: a binary (a ``str`` is taken as UTF-8)."""
    if isinstance(topic, str):
        return topic.encode()
    if isinstance(topic, bytes):
        return topic
    raise LocalProtocolError(f"a topic is a str or bytes, not {topic!r}")


class _WorkerMailbox(Mailbox):
    """A worker's mailbox: every message goes to the PubSub as it arrives, in order."""

    __slots__ = ("_pubsub",)

    def __init__(self, pubsub: PubSub) -> None:
        super().__init__()
        self._pubsub = pubsub

    def put(self, message: Term) -> None:
        self._pubsub.worker_message(message)

    def put_from(self, message: Term, source: FlowSource, size: int) -> None:
        self._pubsub.worker_message(message)  # handled at once: nothing waits to be counted


class PubSub:
    """One Phoenix.PubSub on this node (see the module docstring); ``start()`` joins it."""

    def __init__(
        self, node: NodeServices, scopes: PgScopes, name: Atom | str, *, pool_size: int = 1,
        broadcast_pool_size: int | None = None,
        dispatchers: Mapping[Atom, Dispatcher] | None = None,
    ) -> None:
        broadcast_pool_size = pool_size if broadcast_pool_size is None else broadcast_pool_size
        if not 1 <= broadcast_pool_size <= pool_size:
            raise LocalProtocolError(
                "pool_size must be at least 1 and at least broadcast_pool_size "
                f"(got pool_size={pool_size}, broadcast_pool_size={broadcast_pool_size})")
        self._node = node
        self._scopes = scopes
        self.name = pubsub_atom(name)
        #: every worker's group (``pool_size`` of them); broadcasts use the first
        #: ``broadcast_pool_size``
        self.groups = adapter_groups(self.name, pool_size)
        self.broadcast_groups = self.groups[:broadcast_pool_size]
        self._dispatchers = dict(dispatchers or {})
        self._workers: list[Process] = []
        self._scope: PgScopeService | None = None
        self._topics: dict[bytes, list[tuple[Pid, Term]]] = {}
        self._watched: dict[Pid, Reference] = {}  # subscriber -> our monitor on it
        self._warned: set[Term] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers under the adapter's names and join their groups (starting the
        ``Phoenix.PubSub`` scope if needed); LocalProtocolError if the name is taken here."""
        taken = [g.name for g in self.groups if self._node.whereis(g) is not None]
        if taken:
            raise LocalProtocolError(f"PubSub {self.name.name!r} already runs on this node "
                                     f"({', '.join(taken)} registered)")
        scope = self._scope = self._scopes.ensure(PUBSUB_SCOPE)
        for group in self.groups:
            worker = self._node.new_process(group, mailbox=_WorkerMailbox(self))
            self._workers.append(worker)
            scope.join(group, worker.pid)

    async def stop(self) -> None:
        """End the workers (the scope drops them from their groups everywhere) and forget
        every subscription."""
        self._watched.clear()  # the watcher's monitors end with it
        self._topics.clear()
        for worker in self._workers:
            self._node.terminate(worker, NORMAL)
        self._workers.clear()

    def _watcher(self) -> Process:
        if not self._workers or not self._workers[0].alive:
            raise LocalProtocolError(f"PubSub {self.name.name!r} is not running")
        return self._workers[0]

    # -- subscriptions -----------------------------------------------------------------------

    async def subscribe(self, topic: str | bytes, pid: Pid, *, metadata: Term = None) -> None:
        """``Phoenix.PubSub.subscribe/3`` for the local process ``pid``: it gets every message
        broadcast on ``topic`` from now on (once per subscribe)."""
        watcher = self._watcher()
        if self._node.process(pid) is None:
            raise LocalProtocolError(f"{pid!r} is not a live process of this node")
        self._topics.setdefault(topic_binary(topic), []).append((pid, metadata))
        if pid not in self._watched:
            self._watched[pid] = self._node.monitor(watcher.pid, pid)

    async def unsubscribe(self, topic: str | bytes, pid: Pid) -> None:
        """``Phoenix.PubSub.unsubscribe/2``: every subscription of ``pid`` to ``topic``."""
        key = topic_binary(topic)
        entries = [e for e in self._topics.get(key, []) if e[0] != pid]
        if entries:
            self._topics[key] = entries
        else:
            self._topics.pop(key, None)
        if not any(e[0] == pid for subs in self._topics.values() for e in subs):
            ref = self._watched.pop(pid, None)
            if ref is not None:
                self._node.demonitor(self._watcher().pid, ref)

    def subscribers(self, topic: str | bytes) -> list[Pid]:
        """The local subscribers of ``topic``, once per subscription."""
        return [pid for pid, _ in self._topics.get(topic_binary(topic), [])]

    # -- broadcasts --------------------------------------------------------------------------

    async def broadcast(self, topic: str | bytes, message: Term,
                        dispatcher: Atom = DEFAULT_DISPATCHER) -> None:
        """``Phoenix.PubSub.broadcast/4``: every subscriber on every node."""
        key = topic_binary(topic)
        await self._forward(self.broadcast_groups[0], key, message, dispatcher)
        self._dispatch(key, None, message, dispatcher)

    async def broadcast_from(self, from_: Pid, topic: str | bytes, message: Term,
                             dispatcher: Atom = DEFAULT_DISPATCHER) -> None:
        """``Phoenix.PubSub.broadcast_from/5``: as ``broadcast``, but ``from_`` is skipped by
        this node's dispatch."""
        key = topic_binary(topic)
        await self._forward(self._group_of(from_), key, message, dispatcher)
        self._dispatch(key, from_, message, dispatcher)

    async def local_broadcast(self, topic: str | bytes, message: Term,
                              dispatcher: Atom = DEFAULT_DISPATCHER) -> None:
        """``Phoenix.PubSub.local_broadcast/4``: this node's subscribers only."""
        self._dispatch(topic_binary(topic), None, message, dispatcher)

    async def local_broadcast_from(self, from_: Pid, topic: str | bytes, message: Term,
                                   dispatcher: Atom = DEFAULT_DISPATCHER) -> None:
        """``Phoenix.PubSub.local_broadcast_from/5``."""
        self._dispatch(topic_binary(topic), from_, message, dispatcher)

    async def direct_broadcast(self, node: Atom | str, topic: str | bytes, message: Term,
                               dispatcher: Atom = DEFAULT_DISPATCHER) -> None:
        """``Phoenix.PubSub.direct_broadcast/5``: the subscribers on ``node`` only, through
        its worker registered as the first broadcast group (NodeDown if it cannot be
        reached)."""
        target = node if isinstance(node, Atom) else Atom(node)
        key = topic_binary(topic)
        if target is self._node.node_atom:
            self._dispatch(key, None, message, dispatcher)
            return
        await self._node.send((self.broadcast_groups[0], target),
                              (FORWARD_TO_LOCAL, key, message, dispatcher),
                              sender=self._watcher().pid)

    def _group_of(self, sender: Pid) -> Atom:
        digest = zlib.crc32(f"{sender.node.name}/{sender.id}/{sender.serial}".encode())
        return self.broadcast_groups[digest % len(self.broadcast_groups)]

    async def _forward(self, group: Atom, topic: bytes, message: Term,
                       dispatcher: Atom) -> None:
        scope = self._scope
        if scope is None or not scope.alive:
            raise LocalProtocolError(f"PubSub {self.name.name!r} is not running")
        me, sender = self._node.node_atom, self._watcher().pid
        forward = (FORWARD_TO_LOCAL, topic, message, dispatcher)
        for pid in scope.get_members(group):
            if pid.node is me:
                continue
            if self._node.is_connected(pid.node):
                await self._node.send(pid, forward, sender=sender)
            else:
                # pg lists only members of connected nodes, unless the connection has just
                # gone (the scope has yet to hear) or a peer announced a pid of another node:
                # skipped, rather than dialled on every broadcast
                self._warn_once(("unreachable", pid.node),
                                "PubSub %s: skipping members on %s, which is not connected",
                                self.name.name, pid.node.name)

    # -- the workers' side -------------------------------------------------------------------

    def worker_message(self, message: Term) -> None:
        """A message to one of the workers (their mailbox hands each over at once)."""
        if type(message) is not tuple:
            return
        if len(message) == 4 and message[0] is FORWARD_TO_LOCAL:
            _, topic, payload, dispatcher = message
            if type(topic) is not bytes or type(dispatcher) is not Atom:
                self._warn_once(("forward", type(topic), type(dispatcher)),
                                "PubSub %s: dropped a forward_to_local with topic %.100r and "
                                "dispatcher %.100r", self.name.name, topic, dispatcher)
                return
            self._dispatch(topic, None, payload, dispatcher)
        elif len(message) == 5 and message[0] is DOWN and isinstance(message[3], Pid):
            self._subscriber_down(message[1], message[3])

    def _subscriber_down(self, ref: Term, pid: Pid) -> None:
        if self._watched.get(pid) != ref:
            return
        del self._watched[pid]
        for key in list(self._topics):
            entries = [e for e in self._topics[key] if e[0] != pid]
            if entries:
                self._topics[key] = entries
            else:
                del self._topics[key]

    def _dispatch(self, topic: bytes, from_: Pid | None, message: Term,
                  dispatcher: Atom) -> None:
        entries = self._topics.get(topic)
        if not entries:
            return
        entries = list(entries)  # a delivery may end a subscriber, which edits the table
        custom = None if dispatcher is DEFAULT_DISPATCHER else self._dispatchers.get(dispatcher)
        if custom is None:
            if dispatcher is not DEFAULT_DISPATCHER:
                self._warn_once(dispatcher, "PubSub %s: no Python dispatcher for %s: its "
                                "messages are delivered as Phoenix.PubSub's dispatcher does",
                                self.name.name, dispatcher.name)
            deliveries: Iterable[tuple[Pid, Term]] = [
                (pid, message) for pid, _ in entries if pid != from_]
        else:
            try:
                deliveries = list(custom(entries, from_, message))
            except Exception:
                # it runs inside a worker's delivery: a failure must not reach the connection
                log.exception("PubSub %s: dispatcher %s failed on topic %s",
                    self.name.name, dispatcher.name, safe_repr(topic))
                return
        sender = self._watcher().pid
        for pid, payload in deliveries:
            self._node.send_noconnect(pid, payload, sender=sender)

    def _warn_once(self, key: Term, text: str, *args: object) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        log.warning(text, *args)
