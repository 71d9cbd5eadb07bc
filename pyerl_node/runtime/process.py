"""Python processes: a pid, a mailbox, links and monitors, and Erlang's exit semantics.

A :class:`Process` is either driven by a coroutine (``Node.spawn``) or by the caller
(``Node.mailbox``). The kernel routes signals to it; this module decides what a signal does to
the process (:func:`exit_action`) and keeps the bookkeeping of links and monitors. A process
reaches its node through :class:`ProcessHost`, the part of the kernel its own verbs need.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from pyerl_node.proto.terms import Atom, Pid, Reference, Term
from pyerl_node.runtime.flush import Flush
from pyerl_node.runtime.mailbox import Mailbox, Matcher

#: Where a message goes: a pid, a registered name, ``(name, node)`` or an alias.
Destination = Pid | Atom | str | Reference | tuple[Atom | str, Atom | str]

NORMAL = Atom("normal")
KILL = Atom("kill")
KILLED = Atom("killed")
EXIT = Atom("EXIT")
DOWN = Atom("DOWN")
PROCESS = Atom("process")
NOPROC = Atom("noproc")
NOCONNECTION = Atom("noconnection")

ProcessBody = Callable[["Process"], Coroutine[Any, Any, Any]]


class ProcessHost(Protocol):
    """What a process and a GenServer need of their node (the kernel implements it)."""

    @property
    def node_atom(self) -> Atom: ...

    async def send(self, dest: Destination, message: Term, *, sender: Pid | None = None,
                   flush: Flush = Flush.SOON) -> None: ...

    def link(self, a: Pid, b: Pid) -> None: ...

    def unlink(self, a: Pid, b: Pid) -> None: ...

    def monitor(self, watcher: Pid, target: Destination, *, ref: Reference | None = None,
                flush: Flush = Flush.SOON) -> Reference: ...

    def monitor_and_send(self, watcher: Pid, target: Destination, message: Term,
                         ref: Reference) -> bool: ...

    def demonitor(self, watcher: Pid, ref: Reference) -> None: ...

    def terminate(self, proc: Process, reason: Term) -> None: ...

    def make_ref(self) -> Reference: ...

    def supports_alias(self, node: Atom) -> bool: ...

    def new_process(self, name: Atom | str | None = None, *, trap_exit: bool = False,
                    mailbox: Mailbox | None = None) -> Process: ...

    def mailbox_full(self, proc: Process) -> None: ...

    def mailbox_long(self, proc: Process) -> None: ...


@dataclass(slots=True)
class MonitorEntry:
    """A monitor held on this process by ``watcher``.

    ``target`` is what the watcher asked for: our pid, or our registered name (then the DOWN
    message names ``{Name, Node}``).
    """

    watcher: Pid
    target: Pid | Atom


@dataclass(eq=False)
class Process:
    """One Erlang-visible process on a Python node."""

    host: ProcessHost
    pid: Pid
    mailbox: Mailbox = field(default_factory=Mailbox)
    trap_exit: bool = False
    name: Atom | None = None
    links: set[Pid] = field(default_factory=set)
    # monitors others hold on us, by reference
    monitored_by: dict[Reference, MonitorEntry] = field(default_factory=dict)
    # monitors we hold on others: reference -> what we monitor (pid, or (name, node))
    monitoring: dict[Reference, Term] = field(default_factory=dict)
    aliases: set[Reference] = field(default_factory=set)
    watched_nodes: set[Atom] = field(default_factory=set)  # monitor_node targets
    group_leader: Pid | None = None
    task: asyncio.Task[Any] | None = None
    exit_reason: Term = None

    @property
    def alive(self) -> bool:
        """Whether the process has not exited yet."""
        return self.exit_reason is None

    # -- the process API (what code running as this process calls) ---------------------------

    def receive(self, match: Matcher | None = None,
                timeout: float | None = None) -> Coroutine[Any, Any, Term]:
        """Selective receive: the first message ``match`` accepts (see :class:`Mailbox`).
        (The mailbox's own coroutine, to await: one coroutine per message, not two.)"""
        return self.mailbox.receive(match, timeout)

    async def send(self, dest: Destination, message: Term) -> None:
        """Send ``message`` to a pid, a registered name, ``(name, node)`` or an alias."""
        await self.host.send(dest, message, sender=self.pid)

    def link(self, other: Pid) -> None:
        """``link/1``: exit signals travel both ways between this process and ``other``."""
        self.host.link(self.pid, other)

    def unlink(self, other: Pid) -> None:
        """``unlink/1``."""
        self.host.unlink(self.pid, other)

    def monitor(self, target: Destination) -> Reference:
        """``monitor(process, Target)``: a ``DOWN`` message when ``target`` ends."""
        return self.host.monitor(self.pid, target)

    def demonitor(self, ref: Reference) -> None:
        """``demonitor/1``."""
        self.host.demonitor(self.pid, ref)

    def exit(self, reason: Term = NORMAL) -> None:
        """End this process with ``reason`` (links and monitors are told)."""
        self.host.terminate(self, reason)

    def __repr__(self) -> str:
        state = "alive" if self.alive else f"exited {self.exit_reason!r}"
        return f"<Process {self.pid!r} {self.name or ''} {state}>"


class ProcessWatch:
    """A mailbox's :class:`~pyerl_node.runtime.mailbox.QueueWatch`: tells the node which
    process passed a bound."""

    __slots__ = ("_proc",)

    def __init__(self, proc: Process) -> None:
        self._proc = proc

    def queue_full(self, mailbox: Mailbox) -> None:
        self._proc.host.mailbox_full(self._proc)

    def queue_long(self, mailbox: Mailbox) -> None:
        self._proc.host.mailbox_long(self._proc)


def exit_action(proc: Process, sender: Pid, reason: Term, *, from_link: bool) -> Term | None:
    """What an exit signal does to ``proc``: the reason it dies with, or None if it survives.

    Trapping processes get ``{'EXIT', From, Reason}`` instead (delivered here). ``kill`` is
    untrappable when sent with exit/2; a linked process dying with ``kill`` sends ``killed``.
    """
    if reason is KILL and not from_link:
        return KILLED
    if proc.trap_exit:
        proc.mailbox.put((EXIT, sender, reason))
        return None
    if reason is NORMAL:
        # exit(self(), normal) kills, a normal exit of a linked process does not
        return NORMAL if (sender == proc.pid and not from_link) else None
    return reason


def python_exit_reason(exc: BaseException) -> Term:
    """``{python_exception, 'TypeName', <<"message">>}``: a Python error as Erlang reads it."""
    return (Atom("python_exception"), Atom(type(exc).__name__), str(exc).encode())
