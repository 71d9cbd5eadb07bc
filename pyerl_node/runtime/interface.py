"""The runtime as services see it: the narrow interface a service process uses of its node.

Services (net_kernel, rex, global, pg, the built-in modules) are ordinary processes; they get an
object of type :class:`NodeServices` (the kernel) and use nothing else of the runtime. Where
the runtime must call a service back, the service registers a hook here (the spawn handler
that decides what a distributed spawn runs, the probe that tells GenServers which ``sys``
answer form a caller reads); the runtime never imports a service.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Literal, Protocol

from pyerl_node.proto.terms import Atom, Pid, Reference, Term
from pyerl_node.runtime.process import Destination, Process, ProcessBody, ProcessHost

__all__ = ["Destination", "NodeKind", "NodeServices", "SpawnHandler", "StateReplyProbe"]

#: ``erlang:nodes/1`` kinds.
NodeKind = Literal["visible", "hidden", "connected", "this", "known"]

#: What a distributed spawn runs: ``handler(proc, module, function, args, finish)`` starts
#: ``module:function(args)`` as ``proc`` and calls ``finish(exit_reason)`` once it is over
#: (at once, or later from the event loop).
SpawnHandler = Callable[[Process, Atom, Atom, list[Term], Callable[[Term], None]], None]

#: Whether the node of a ``sys`` caller (this pid) reads ``sys:get_state``/``replace_state``
#: answers as ``{ok, State}`` (OTP 26.1 and later) rather than as the bare state (OTP 25).
StateReplyProbe = Callable[[Pid], Awaitable[bool]]


class NodeServices(ProcessHost, Protocol):
    """The node as a service process sees it."""

    @property
    def creation(self) -> int: ...

    @property
    def hidden(self) -> bool: ...

    @property
    def net_ticktime(self) -> float: ...

    spawn_handler: SpawnHandler
    state_reply_probe: StateReplyProbe | None

    # processes and names
    def spawn(self, body: ProcessBody, *, name: Atom | str | None = None,
              link: Pid | None = None, trap_exit: bool = False) -> Process: ...

    def run_process(self, proc: Process, body: ProcessBody) -> None: ...

    def process(self, pid: Pid) -> Process | None: ...

    def processes(self) -> Iterator[Process]: ...

    def register(self, name: Atom | str, pid: Pid) -> None: ...

    def unregister(self, name: Atom | str) -> None: ...

    def whereis(self, name: Atom | str) -> Pid | None: ...

    def registered(self) -> list[Atom]: ...

    def spawn_task(self, coro: Coroutine[Any, Any, Any]) -> None: ...

    # signals
    def exit(self, sender: Pid, target: Pid, reason: Term) -> None: ...

    def send_spawn_request(self, caller: Process, node: Atom, req_id: Reference,
                           module: Atom, function: Atom, args: list[Term],
                           options: list[Term], group_leader: Pid) -> None: ...

    def send_noconnect(self, dest: Destination, message: Term, *,
                       sender: Pid | None = None) -> bool: ...

    # nodes
    def monitor_node(self, watcher: Pid, node: Atom | str, enable: bool = True) -> None: ...

    def monitor_nodes(self, watcher: Pid, enable: bool = True) -> None: ...

    def nodes(self, kind: NodeKind = "visible") -> list[Atom]: ...

    def is_connected(self, node: Atom) -> bool: ...

    def peer_address(self, node: Atom) -> tuple[str, int] | None: ...

    async def connect(self, node: Atom | str) -> bool: ...

    def disconnect(self, node: Atom | str) -> bool: ...

    async def epmd_names(self, host: str = "127.0.0.1") -> list[tuple[str, int]]: ...
