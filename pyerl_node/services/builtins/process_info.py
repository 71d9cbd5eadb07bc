"""``erlang:process_info/1,2`` for the Python node's own processes.

Each item is read from the :class:`~pyerl_node.runtime.process.Process` itself (name, links,
monitors, mailbox, group leader, trap_exit) and, for a :class:`GenServer`, from the server
(suspended by ``sys``, its process dictionary). Python has no heap per process, no reductions
and no stack in the BEAM's sense; docs/builtins.md says what those items answer:

* ``status``: ``suspended`` (a GenServer held by ``sys:suspend``), ``running`` (the process
  asking about itself), else ``waiting`` (every other task of the event loop is parked on an
  ``await``);
* ``current_function`` / ``initial_call``: the innermost coroutine the process awaits (above
  the runtime's receive) and the body it started with, as
  ``{'python:<module>', '<qualname>', Arity}``; ``undefined`` for a process driven by its
  caller (``Node.mailbox``), which runs no code of its own;
* ``memory``: an estimate in bytes (a fixed cost plus the messages waiting in its mailbox);
  ``heap_size`` and ``total_heap_size`` the same in words; ``reductions`` and ``stack_size``
  are 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

from pyerl_node.proto.terms import Atom, Term
from pyerl_node.runtime.genserver import server_of
from pyerl_node.runtime.interface import NodeServices
from pyerl_node.runtime.process import PROCESS, Process
from pyerl_node.services.builtins.common import UNDEFINED
from pyerl_node.services.rpc import GROUP_LEADER_NAME

#: What a process costs before its messages (the Process, its mailbox, its task), roughly.
PROCESS_BYTES: Final = 2048
#: What one queued message costs besides the bytes it came in (a rough average).
MESSAGE_BYTES: Final = 96
WORD: Final = 8

REGISTERED_NAME: Final = Atom("registered_name")
RUNNING: Final = Atom("running")
WAITING: Final = Atom("waiting")
SUSPENDED: Final = Atom("suspended")

Item = Callable[[NodeServices, Process], Term]
_RECEIVE_MODULES: Final = frozenset({"pyerl_node.runtime.mailbox", "pyerl_node.runtime.process"})


def memory(proc: Process) -> int:
    """The estimated bytes of ``proc`` (docs/builtins.md, "process_info")."""
    box = proc.mailbox
    return PROCESS_BYTES + box.queued_bytes + MESSAGE_BYTES * len(box)


def _coroutines(proc: Process) -> list[Any]:
    """The chain of coroutines ``proc``'s task awaits, outermost (the kernel's runner) first."""
    if proc.task is None or proc.task.done():
        return []
    chain = []
    coro: Any = proc.task.get_coro()
    while coro is not None and hasattr(coro, "cr_code"):
        chain.append(coro)
        coro = coro.cr_await
    return chain


def _module_of(coro: Any) -> str:
    frame = coro.cr_frame
    return str(frame.f_globals.get("__name__", "?")) if frame is not None else "?"


def _mfa(coro: Any) -> Term:
    code = coro.cr_code
    return (Atom(f"python:{_module_of(coro)}"), Atom(code.co_qualname), code.co_argcount)


def _current_function(node: NodeServices, proc: Process) -> Term:
    # the code that waits, not the receive it waits in (``status`` says ``waiting``)
    chain = [c for c in _coroutines(proc) if _module_of(c) not in _RECEIVE_MODULES]
    return _mfa(chain[-1]) if chain else UNDEFINED


def _initial_call(node: NodeServices, proc: Process) -> Term:
    chain = _coroutines(proc)
    # chain[0] is the kernel's runner; the body it awaits is what the process was started with
    return _mfa(chain[1] if len(chain) > 1 else chain[0]) if chain else UNDEFINED


def _status(node: NodeServices, proc: Process) -> Term:
    server = server_of(proc)
    if server is not None and server.suspended:
        return SUSPENDED
    task = proc.task
    if task is not None and task is asyncio.current_task():
        return RUNNING
    return WAITING


def _dictionary(node: NodeServices, proc: Process) -> Term:
    server = server_of(proc)
    return [] if server is None else server.process_dictionary()


def _group_leader(node: NodeServices, proc: Process) -> Term:
    return proc.group_leader or node.whereis(GROUP_LEADER_NAME) or proc.pid


ITEMS: Final[dict[Atom, Item]] = {
    REGISTERED_NAME: lambda node, proc: proc.name if proc.name is not None else [],
    Atom("current_function"): _current_function,
    Atom("initial_call"): _initial_call,
    Atom("status"): _status,
    Atom("message_queue_len"): lambda node, proc: len(proc.mailbox),
    Atom("links"): lambda node, proc: list(proc.links),
    Atom("monitors"): lambda node, proc: [(PROCESS, t) for t in proc.monitoring.values()],
    Atom("monitored_by"): lambda node, proc: [e.watcher for e in proc.monitored_by.values()],
    Atom("dictionary"): _dictionary,
    Atom("trap_exit"): lambda node, proc: proc.trap_exit,
    Atom("error_handler"): lambda node, proc: Atom("error_handler"),
    Atom("priority"): lambda node, proc: Atom("normal"),
    Atom("group_leader"): _group_leader,
    Atom("memory"): lambda node, proc: memory(proc),
    Atom("total_heap_size"): lambda node, proc: memory(proc) // WORD,
    Atom("heap_size"): lambda node, proc: memory(proc) // WORD,
    Atom("stack_size"): lambda node, proc: 0,
    Atom("reductions"): lambda node, proc: 0,
    Atom("garbage_collection"): lambda node, proc: [],
    Atom("suspending"): lambda node, proc: [],
}

#: ``process_info/1``'s items, in the BEAM's order (``registered_name`` only when registered).
DEFAULT_ITEMS: Final = [Atom(n) for n in (
    "registered_name", "current_function", "initial_call", "status", "message_queue_len",
    "links", "dictionary", "trap_exit", "error_handler", "priority", "group_leader",
    "total_heap_size", "heap_size", "stack_size", "reductions", "garbage_collection",
    "suspending")]


def all_items(node: NodeServices, proc: Process) -> list[Term]:
    """``process_info(Pid)``."""
    return [(item, ITEMS[item](node, proc)) for item in DEFAULT_ITEMS
            if item is not REGISTERED_NAME or proc.name is not None]


def items(node: NodeServices, proc: Process, wanted: list[Atom]) -> list[Term]:
    """``process_info(Pid, [Item])``: every item known (the caller checked)."""
    return [(item, ITEMS[item](node, proc)) for item in wanted]
