"""Phoenix.PubSub for programs: the asyncio :class:`PubSub` and its blocking twin.

``ps = node.pubsub("MyApp.PubSub")`` joins the Phoenix.PubSub of that name in the cluster (how:
:mod:`pyerl_node.services.phoenix`). The blocking :class:`pyerl_node.sync.Node` hands out a
:class:`BlockingPubSub`, whose methods have the same names and arguments and wait for the
result on the node's event loop thread.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from pyerl_node.proto.terms import Atom, Pid, Term
from pyerl_node.services.phoenix import DEFAULT_DISPATCHER, Dispatcher, PubSub

__all__ = ["DEFAULT_DISPATCHER", "BlockingPubSub", "Dispatcher", "PubSub"]

#: Runs a coroutine on the node's loop and waits for its result (``sync.Node``'s runner).
Runner = Callable[[Coroutine[Any, Any, Any]], Any]


class BlockingPubSub:
    """A :class:`PubSub` driven from blocking code (see :class:`pyerl_node.sync.Node`)."""

    def __init__(self, pubsub: PubSub, run: Runner) -> None:
        self.pubsub = pubsub
        self._run = run

    @property
    def name(self) -> Atom:
        """The PubSub's name as an atom (``Elixir.MyApp.PubSub``)."""
        return self.pubsub.name

    def subscribe(self, topic: str | bytes, pid: Pid, *, metadata: Term = None) -> None:
        """``Phoenix.PubSub.subscribe/3`` for the local process ``pid``."""
        self._run(self.pubsub.subscribe(topic, pid, metadata=metadata))

    def unsubscribe(self, topic: str | bytes, pid: Pid) -> None:
        """``Phoenix.PubSub.unsubscribe/2``."""
        self._run(self.pubsub.unsubscribe(topic, pid))

    def subscribers(self, topic: str | bytes) -> list[Pid]:
        """The local subscribers of ``topic``."""
        async def read() -> list[Pid]:
            return self.pubsub.subscribers(topic)
        result: list[Pid] = self._run(read())
        return result

    def broadcast(self, topic: str | bytes, message: Term,
                  dispatcher: Atom = DEFAULT_DISPATCHER) -> None:
        """``Phoenix.PubSub.broadcast/4``."""
        self._run(self.pubsub.broadcast(topic, message, dispatcher))

    def broadcast_from(self, from_: Pid, topic: str | bytes, message: Term,
                       dispatcher: Atom = DEFAULT_DISPATCHER) -> None:
        """``Phoenix.PubSub.broadcast_from/5``."""
        self._run(self.pubsub.broadcast_from(from_, topic, message, dispatcher))

    def local_broadcast(self, topic: str | bytes, message: Term,
                        dispatcher: Atom = DEFAULT_DISPATCHER) -> None:
        """``Phoenix.PubSub.local_broadcast/4``."""
        self._run(self.pubsub.local_broadcast(topic, message, dispatcher))

    def local_broadcast_from(self, from_: Pid, topic: str | bytes, message: Term,
                             dispatcher: Atom = DEFAULT_DISPATCHER) -> None:
        """``Phoenix.PubSub.local_broadcast_from/5``."""
        self._run(self.pubsub.local_broadcast_from(from_, topic, message, dispatcher))

    def direct_broadcast(self, node: Atom | str, topic: str | bytes, message: Term,
                         dispatcher: Atom = DEFAULT_DISPATCHER) -> None:
        """``Phoenix.PubSub.direct_broadcast/5``."""
        self._run(self.pubsub.direct_broadcast(node, topic, message, dispatcher))

    def stop(self) -> None:
        """Leave the PubSub: the workers end and every subscription is forgotten."""
        self._run(self.pubsub.stop())
