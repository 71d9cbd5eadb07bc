"""The blocking facade for scripts: the same names as :class:`pyerl_node.node.Node`.

One event loop runs in a background thread; each method submits the matching coroutine to it
and waits. ``with Node("py@127.0.0.1", cookie="c") as node: node.ping("beam@127.0.0.1")``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from pyerl_node.node import Destination
from pyerl_node.node import Node as AsyncNode
from pyerl_node.proto.terms import Atom, Pid, Reference, Term
from pyerl_node.runtime.mailbox import Matcher
from pyerl_node.runtime.process import Process

T = TypeVar("T")


class Mailbox:
    """A caller-driven process of a sync :class:`Node`."""

    def __init__(self, node: Node, proc: Process) -> None:
        self._node = node
        self.process = proc
        self.pid: Pid = proc.pid

    def receive(self, match: Matcher | None = None, timeout: float | None = None) -> Term:
        return self._node._run(self.process.receive(match, timeout))

    def send(self, dest: Destination, message: Term) -> None:
        self._node._run(self.process.send(dest, message))

    def link(self, other: Pid) -> None:
        self._node._call(self.process.link, other)

    def monitor(self, target: Pid | Atom | tuple[Atom, Atom | str]) -> Reference:
        ref: Reference = self._node._call(self.process.monitor, target)
        return ref

    def close(self) -> None:
        self._node._call(self.process.exit, Atom("normal"))


class Node:
    """A :class:`pyerl_node.node.Node` driven from blocking code."""

    def __init__(self, name: str, cookie: str | None = None, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"pyerl_node {name}", daemon=True
        )
        self._thread.start()
        self.node = AsyncNode(name, cookie, **options)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _call(self, fn: Any, *args: Any) -> Any:
        async def invoke() -> Any:
            return fn(*args)

        return self._run(invoke())

    def start(self) -> Node:
        self._run(self.node.start())
        return self

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self.node.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def node_atom(self) -> Atom:
        return self.node.node_atom

    def connect(self, node: Atom | str) -> bool:
        return self._run(self.node.connect(node))

    def ping(self, node: Atom | str, *, timeout: float = 10.0) -> bool:
        return self._run(self.node.ping(node, timeout=timeout))

    def send(self, dest: Destination, message: Term) -> None:
        self._run(self.node.send(dest, message))

    def call(self, dest: Destination, request: Term, *, timeout: float | None = 5.0) -> Term:
        return self._run(self.node.call(dest, request, timeout=timeout))

    def cast(self, dest: Destination, message: Term) -> None:
        self._run(self.node.cast(dest, message))

    def mailbox(self, name: Atom | str | None = None, *, trap_exit: bool = False) -> Mailbox:
        proc: Process = self._call(self.node.mailbox, name)
        proc.trap_exit = trap_exit
        return Mailbox(self, proc)

    def nodes(self, *, hidden: bool = False) -> list[Atom]:
        return self._call(lambda: self.node.nodes(hidden=hidden))  # type: ignore[no-any-return]

    def disconnect(self, node: Atom | str) -> bool:
        return self._call(self.node.disconnect, node)  # type: ignore[no-any-return]

    # -- global --------------------------------------------------------------------------------
    # The blocking forms of Node.global_*; see pyerl_node.services.global_names.

    def global_register(self, name: Term, pid: Pid, method: Term | None = None) -> bool:
        return self._run(self.node.global_register(name, pid, method))

    def global_re_register(self, name: Term, pid: Pid, method: Term | None = None) -> None:
        self._run(self.node.global_re_register(name, pid, method))

    def global_unregister(self, name: Term) -> None:
        self._run(self.node.global_unregister(name))

    def global_whereis(self, name: Term) -> Pid | None:
        return self._call(self.node.global_whereis, name)  # type: ignore[no-any-return]

    def global_registered_names(self) -> list[Term]:
        return self._call(self.node.global_registered_names)  # type: ignore[no-any-return]

    def global_send(self, name: Term, message: Term) -> Pid:
        return self._run(self.node.global_send(name, message))

    def global_sync(self, nodes: list[Atom] | None = None, *,
                    timeout: float | None = None) -> None:
        self._run(self.node.global_sync(nodes, timeout=timeout))

    def global_set_lock(self, lock_id: tuple[Term, Term], nodes: list[Atom] | None = None,
                        retries: int | None = None) -> bool:
        return self._run(self.node.global_set_lock(lock_id, nodes, retries))

    def global_del_lock(self, lock_id: tuple[Term, Term],
                        nodes: list[Atom] | None = None) -> None:
        self._run(self.node.global_del_lock(lock_id, nodes))

    def global_trans(self, lock_id: tuple[Term, Term], fun: Callable[[], T],
                     nodes: list[Atom] | None = None, retries: int | None = None) -> T | Atom:
        """``fun()`` runs in a worker thread while the lock is held (the node keeps serving)."""
        async def in_thread() -> T:
            return await asyncio.to_thread(fun)

        return self._run(self.node.global_trans(lock_id, in_thread, nodes, retries))  # type: ignore[no-any-return]

