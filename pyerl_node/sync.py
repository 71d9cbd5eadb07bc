"""The blocking facade for scripts: every verb of :class:`pyerl_node.Node`, same names.

One event loop runs in a background thread; each method submits the matching coroutine (or
the synchronous call) to it and waits. ``with Node("py", cookie="c") as node:
node.ping("beam@host")``. A :class:`Mailbox` is a caller-driven process with the verbs of
:class:`pyerl_node.Process`. ``tests/test_sync_parity.py`` keeps both sets of names equal.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from pyerl_node.node import Node as AsyncNode
from pyerl_node.proto.flags import DistFlag
from pyerl_node.proto.names import NodeName
from pyerl_node.proto.terms import Atom, Pid, Reference, Term
from pyerl_node.pubsub import BlockingPubSub, Dispatcher
from pyerl_node.runtime.flush import Flush
from pyerl_node.runtime.interface import Destination, NodeKind
from pyerl_node.runtime.mailbox import Mailbox as AsyncMailbox
from pyerl_node.runtime.mailbox import Matcher
from pyerl_node.runtime.process import NORMAL, Process, ProcessBody
from pyerl_node.services.pg import DEFAULT_SCOPE

T = TypeVar("T")


class Mailbox:
    """A caller-driven process of a sync :class:`Node` (the verbs of ``pyerl_node.Process``)."""

    def __init__(self, node: Node, proc: Process) -> None:
        self._node = node
        self.process = proc
        self.pid: Pid = proc.pid

    @property
    def alive(self) -> bool:
        """Whether the process is still alive."""
        return self.process.alive

    def receive(self, match: Matcher | None = None, timeout: float | None = None) -> Term:
        """Selective receive: the first message ``match`` accepts (CallTimeout after
        ``timeout`` seconds)."""
        return self._node._run(self.process.receive(match, timeout))

    def send(self, dest: Destination, message: Term) -> None:
        """Send ``message`` from this process."""
        self._node._run(self.process.send(dest, message))

    def link(self, other: Pid) -> None:
        """``link/1``."""
        self._node._call(self.process.link, other)

    def unlink(self, other: Pid) -> None:
        """``unlink/1``."""
        self._node._call(self.process.unlink, other)

    def monitor(self, target: Destination) -> Reference:
        """``monitor(process, Target)``."""
        return self._node._call(self.process.monitor, target)

    def demonitor(self, ref: Reference) -> None:
        """``demonitor/1``."""
        self._node._call(self.process.demonitor, ref)

    def exit(self, reason: Term = NORMAL) -> None:
        """End this process with ``reason``."""
        self._node._call(self.process.exit, reason)


class Node:
    """A :class:`pyerl_node.Node` driven from blocking code; the arguments are the same."""

    def __init__(self, name: str, cookie: str | None = None, **options: Any) -> None:
        self.node = AsyncNode(name, cookie, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"pyerl_node {name}", daemon=True
        )
        self._thread.start()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async def invoke() -> T:
            return fn(*args, **kwargs)

        return self._run(invoke())

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Node:
        """Start the node (see :meth:`pyerl_node.Node.start`)."""
        self._run(self.node.start())
        return self

    def stop(self) -> None:
        """Stop the node and its event loop thread."""
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
    def name(self) -> NodeName:
        """Our node name, split at its ``@``."""
        return self.node.name

    @property
    def node_atom(self) -> Atom:
        """``node()``."""
        return self.node.node_atom

    @property
    def port(self) -> int:
        """The distribution port we listen on."""
        return self.node.port

    @property
    def creation(self) -> int:
        """Our creation."""
        return self.node.creation

    @property
    def hidden(self) -> bool:
        """Whether we are a hidden node."""
        return self.node.hidden

    @property
    def cookie(self) -> str:
        """The magic cookie."""
        return self.node.cookie

    # -- processes ------------------------------------------------------------------------------

    def mailbox(self, name: Atom | str | None = None, *, trap_exit: bool = False,
                mailbox: AsyncMailbox | None = None, max_queue: int | None = None) -> Mailbox:
        """A caller-driven process (see :meth:`pyerl_node.Node.mailbox`)."""
        proc = self._call(self.node.mailbox, name, trap_exit=trap_exit, mailbox=mailbox,
                          max_queue=max_queue)
        return Mailbox(self, proc)

    def spawn(self, body: ProcessBody, *, name: Atom | str | None = None,
              link: Pid | None = None, trap_exit: bool = False,
              max_queue: int | None = None) -> Process:
        """Run the coroutine function ``body(process)`` as a process on the node's loop."""
        return self._call(self.node.spawn, body, name=name, link=link, trap_exit=trap_exit,
                          max_queue=max_queue)

    def register(self, name: Atom | str, pid: Pid) -> None:
        """``register/2``."""
        self._call(self.node.register, name, pid)

    def unregister(self, name: Atom | str) -> None:
        """``unregister/1``."""
        self._call(self.node.unregister, name)

    def whereis(self, name: Atom | str) -> Pid | None:
        """``whereis/1``."""
        return self._call(self.node.whereis, name)

    def registered(self) -> list[Atom]:
        """``registered/0``."""
        return self._call(self.node.registered)

    def make_ref(self) -> Reference:
        """``make_ref/0``."""
        return self._call(self.node.make_ref)

    def alias(self, proc: Process) -> Reference:
        """``alias/0`` run by ``proc``."""
        return self._call(self.node.alias, proc)

    def unalias(self, ref: Reference) -> None:
        """``unalias/1``."""
        self._call(self.node.unalias, ref)

    def link(self, a: Pid, b: Pid) -> None:
        """``link/1`` run by local process ``a``."""
        self._call(self.node.link, a, b)

    def unlink(self, a: Pid, b: Pid) -> None:
        """``unlink/1`` run by local process ``a``."""
        self._call(self.node.unlink, a, b)

    def monitor(self, watcher: Pid, target: Destination) -> Reference:
        """``monitor(process, Target)`` by local ``watcher``."""
        return self._call(self.node.monitor, watcher, target)

    def demonitor(self, watcher: Pid, ref: Reference) -> None:
        """``demonitor/1`` by local ``watcher``."""
        self._call(self.node.demonitor, watcher, ref)

    def monitor_node(self, watcher: Pid, node: Atom | str, enable: bool = True) -> None:
        """``erlang:monitor_node/2``."""
        self._call(self.node.monitor_node, watcher, node, enable)

    def monitor_nodes(self, watcher: Pid, enable: bool = True) -> None:
        """``net_kernel:monitor_nodes/1``."""
        self._call(self.node.monitor_nodes, watcher, enable)

    def exit(self, sender: Pid, target: Pid, reason: Term) -> None:
        """``exit/2``."""
        self._call(self.node.exit, sender, target, reason)

    # -- messages ------------------------------------------------------------------------------

    def send(self, dest: Destination, message: Term, *, sender: Pid | None = None,
             flush: Flush = Flush.SOON) -> None:
        """Erlang's ``!``."""
        self._run(self.node.send(dest, message, sender=sender, flush=flush))

    def call(self, dest: Destination, request: Term, *, timeout: float | None = 5.0) -> Term:
        """``gen_server:call/3``."""
        return self._run(self.node.call(dest, request, timeout=timeout))

    def cast(self, dest: Destination, message: Term) -> None:
        """``gen_server:cast/2``."""
        self._run(self.node.cast(dest, message))

    def ping(self, node: Atom | str, *, timeout: float = 10.0) -> bool:
        """``net_adm:ping/1``."""
        return self._run(self.node.ping(node, timeout=timeout))

    # -- rpc -------------------------------------------------------------------------------------

    def expose(self, name: Atom | str, obj: object, *, threaded: bool = True,
               replace_builtin: bool = False) -> None:
        """Publish ``obj``'s callables as Erlang module ``name`` (a built-in module's name
        only with ``replace_builtin=True``)."""
        self._call(self.node.expose, name, obj, threaded=threaded,
                   replace_builtin=replace_builtin)

    def erpc(self, node: Atom | str, module: Atom | str, function: Atom | str,
             args: list[Term], *, timeout: float | None = 5.0) -> Term:
        """``erpc:call/5``."""
        return self._run(self.node.erpc(node, module, function, args, timeout=timeout))

    def rpc(self, node: Atom | str, module: Atom | str, function: Atom | str,
            args: list[Term], *, timeout: float | None = 5.0) -> Term:
        """``rpc:call/5``."""
        return self._run(self.node.rpc(node, module, function, args, timeout=timeout))

    def multicall(self, nodes: list[Atom | str], module: Atom | str, function: Atom | str,
                  args: list[Term], *,
                  timeout: float | None = 5.0) -> tuple[list[Term], list[Atom]]:
        """``rpc:multicall/5``."""
        return self._run(self.node.multicall(nodes, module, function, args, timeout=timeout))

    # -- nodes ---------------------------------------------------------------------------------

    def nodes(self, kind: NodeKind = "visible") -> list[Atom]:
        """``erlang:nodes/1``."""
        return self._call(self.node.nodes, kind)

    def connect(self, node: Atom | str) -> bool:
        """``net_kernel:connect_node/1``."""
        return self._run(self.node.connect(node))

    def disconnect(self, node: Atom | str) -> bool:
        """``erlang:disconnect_node/1``."""
        return self._call(self.node.disconnect, node)

    def peer_flags(self, node: Atom | str) -> DistFlag | None:
        """The flags negotiated with ``node``."""
        return self._call(self.node.peer_flags, node)

    # -- global --------------------------------------------------------------------------------

    def global_register(self, name: Term, pid: Pid, method: Term | None = None) -> bool:
        """``global:register_name/2,3``."""
        return self._run(self.node.global_register(name, pid, method))

    def global_re_register(self, name: Term, pid: Pid, method: Term | None = None) -> None:
        """``global:re_register_name/2,3``."""
        self._run(self.node.global_re_register(name, pid, method))

    def global_unregister(self, name: Term) -> None:
        """``global:unregister_name/1``."""
        self._run(self.node.global_unregister(name))

    def global_whereis(self, name: Term) -> Pid | None:
        """``global:whereis_name/1``."""
        return self._call(self.node.global_whereis, name)

    def global_registered_names(self) -> list[Term]:
        """``global:registered_names/0``."""
        return self._call(self.node.global_registered_names)

    def global_send(self, name: Term, message: Term, *, sender: Pid | None = None) -> Pid:
        """``global:send/2``."""
        return self._run(self.node.global_send(name, message, sender=sender))

    def global_sync(self, nodes: list[Atom] | None = None, *,
                    timeout: float | None = None) -> None:
        """``global:sync/0,1``."""
        self._run(self.node.global_sync(nodes, timeout=timeout))

    def global_set_lock(self, lock_id: tuple[Term, Term], nodes: list[Atom] | None = None,
                        retries: int | None = None) -> bool:
        """``global:set_lock/1,2,3``."""
        return self._run(self.node.global_set_lock(lock_id, nodes, retries))

    def global_del_lock(self, lock_id: tuple[Term, Term],
                        nodes: list[Atom] | None = None) -> None:
        """``global:del_lock/1,2``."""
        self._run(self.node.global_del_lock(lock_id, nodes))

    def global_trans(self, lock_id: tuple[Term, Term], fun: Callable[[], T],
                     nodes: list[Atom] | None = None, retries: int | None = None) -> T | Atom:
        """``global:trans/2,3,4``: ``fun()`` runs in a worker thread while the lock is held
        (the node keeps serving meanwhile)."""
        async def in_thread() -> T:
            return await asyncio.to_thread(fun)

        result: T | Atom = self._run(self.node.global_trans(lock_id, in_thread, nodes, retries))
        return result

    # -- pg ------------------------------------------------------------------------------------

    def pg_start_scope(self, scope: Atom | str) -> None:
        """``pg:start/1``."""
        self._call(self.node.pg_start_scope, scope)

    def pg_join(self, group: Term, pid_or_pids: Pid | list[Pid], *,
                scope: Atom | str = DEFAULT_SCOPE) -> None:
        """``pg:join/3``."""
        self._run(self.node.pg_join(group, pid_or_pids, scope=scope))

    def pg_leave(self, group: Term, pid_or_pids: Pid | list[Pid], *,
                 scope: Atom | str = DEFAULT_SCOPE) -> bool:
        """``pg:leave/3``: False for ``not_joined``."""
        return self._run(self.node.pg_leave(group, pid_or_pids, scope=scope))

    def pg_get_members(self, group: Term, *,
                       scope: Atom | str = DEFAULT_SCOPE) -> list[Pid]:
        """``pg:get_members/2``."""
        return self._call(self.node.pg_get_members, group, scope=scope)

    def pg_get_local_members(self, group: Term, *,
                             scope: Atom | str = DEFAULT_SCOPE) -> list[Pid]:
        """``pg:get_local_members/2``."""
        return self._call(self.node.pg_get_local_members, group, scope=scope)

    def pg_which_groups(self, *, scope: Atom | str = DEFAULT_SCOPE) -> list[Term]:
        """``pg:which_groups/1``."""
        return self._call(self.node.pg_which_groups, scope=scope)

    def pg_monitor(self, group: Term, watcher: Pid, *,
                   scope: Atom | str = DEFAULT_SCOPE) -> tuple[Reference, list[Pid]]:
        """``pg:monitor/2`` for ``watcher``."""
        return self._run(self.node.pg_monitor(group, watcher, scope=scope))

    def pg_monitor_scope(self, watcher: Pid, *, scope: Atom | str = DEFAULT_SCOPE
                         ) -> tuple[Reference, dict[Any, list[Pid]]]:
        """``pg:monitor_scope/1`` for ``watcher``."""
        return self._run(self.node.pg_monitor_scope(watcher, scope=scope))

    def pg_demonitor(self, ref: Reference, *, scope: Atom | str = DEFAULT_SCOPE) -> bool:
        """``pg:demonitor/2``."""
        return self._run(self.node.pg_demonitor(ref, scope=scope))

    # -- Phoenix.PubSub ------------------------------------------------------------------------

    def pubsub(self, name: Atom | str, *, pool_size: int = 1,
               broadcast_pool_size: int | None = None,
               dispatchers: dict[Atom, Dispatcher] | None = None) -> BlockingPubSub:
        """Join the Phoenix.PubSub ``name``: a :class:`BlockingPubSub` (same verbs, blocking)."""
        ps = self._call(self.node.pubsub, name, pool_size=pool_size,
                        broadcast_pool_size=broadcast_pool_size, dispatchers=dispatchers)
        return BlockingPubSub(ps, self._run)
