"""The generic call protocol both ways: ``gen:call``/``gen_server:cast`` and a GenServer base.

Outbound calls follow NET_KERNEL_RPC.md §1.3: monitor the server, send
``{'$gen_call', {Me, Mref}, Request}``, wait for ``{Mref, Reply}`` or the DOWN. Inbound calls
(§1.1/1.2) carry a tag that may hold a process alias (``[alias | Ref]`` from OTP 24+ gen:call,
``[[alias | Ref] | Mon]`` from OTP 26+ multi_call); replies go to that alias when the
connection supports ALIAS, as ``gen_server:reply/2`` does, and to the caller's pid otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Protocol

from pyerl_node.proto.errors import CallTimeout, NodeDown, NoProc, ProcessExit
from pyerl_node.proto.terms import Atom, ImproperList, Pid, Reference, Term
from pyerl_node.runtime.flush import Flush
from pyerl_node.runtime.mailbox import FlowSource, Mailbox
from pyerl_node.runtime.process import (
    DOWN,
    NOCONNECTION,
    NOPROC,
    Destination,
    Process,
    ProcessBody,
    ProcessHost,
)

log = logging.getLogger("pyerl_node.gen")

GEN_CALL = Atom("$gen_call")
GEN_CAST = Atom("$gen_cast")
_ALIAS = Atom("alias")

From = tuple[Pid, Term]


class _NoReply:
    """Returned by ``handle_call`` when the reply is sent later with :func:`reply`."""

    def __repr__(self) -> str:
        return "NOREPLY"


NOREPLY: Any = _NoReply()


def alias_of(tag: Term) -> Reference | None:
    """The alias inside a call tag ``[alias | Ref]`` or ``[[alias | Ref] | Mon]``, if any."""
    if type(tag) is ImproperList and len(tag.items) == 1:
        head = tag.items[0]
        if head is _ALIAS and isinstance(tag.tail, Reference):
            return tag.tail
        if type(head) is ImproperList:
            return alias_of(head)
    return None


async def reply(
    node: ProcessHost, from_: From, value: Term, *, sender: Pid | None = None,
    flush: Flush = Flush.SOON,
) -> None:
    """Answer a ``$gen_call``: ``{Tag, Value}`` to the alias in the tag, else to the caller."""
    caller, tag = from_
    alias = alias_of(tag)
    if alias is not None and alias.node is not node.node_atom and node.supports_alias(alias.node):
        await node.send(alias, (tag, value), sender=sender, flush=flush)
        return
    await node.send(caller, (tag, value), sender=sender, flush=flush)


class _ReplyMailbox(Mailbox):
    """The mailbox of a node's calling process: each reply or DOWN goes straight to its waiter.

    One such process serves every outbound call of a node, so a call costs a monitor, a send
    and a future, not a process. A reply that arrives after its call gave up is dropped.
    """

    __slots__ = ("waiting",)

    def __init__(self) -> None:
        super().__init__()
        self.waiting: dict[Reference, asyncio.Future[Term]] = {}

    def put(self, message: Term) -> None:
        if type(message) is not tuple:
            return
        if len(message) == 2:
            key = message[0]
        elif len(message) == 5 and message[0] is DOWN:
            key = message[1]
        else:
            return
        if type(key) is Reference:
            waiter = self.waiting.pop(key, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message)

    def put_from(self, message: Term, source: FlowSource, size: int) -> None:
        self.put(message)  # handed over at once: nothing waits here to be accounted


_CALLERS: weakref.WeakKeyDictionary[ProcessHost, Process] = weakref.WeakKeyDictionary()


def _caller(node: ProcessHost) -> tuple[Process, _ReplyMailbox]:
    proc = _CALLERS.get(node)
    if proc is None or not proc.alive:
        proc = _CALLERS[node] = node.new_process(mailbox=_ReplyMailbox())
    box = proc.mailbox
    assert isinstance(box, _ReplyMailbox)
    return proc, box


class _ExpiredError(Exception):
    """A call's timer ran out before its answer came."""


def _expire(answered: asyncio.Future[Term]) -> None:
    if not answered.done():
        answered.set_exception(_ExpiredError())


async def call(
    node: ProcessHost, dest: Destination, request: Term, *, timeout: float | None = 5.0
) -> Term:
    """``gen_server:call(Dest, Request, Timeout)`` from Python.

    Raises :class:`NoProc` if the server does not exist, :class:`NodeDown` if its node is
    unreachable or goes down, :class:`ProcessExit` if it dies before replying, and
    :class:`CallTimeout` after ``timeout`` seconds.
    """
    caller, box = _caller(node)
    mref = node.make_ref()
    answered: asyncio.Future[Term] = asyncio.get_running_loop().create_future()
    box.waiting[mref] = answered  # before the monitor: its DOWN may come at once
    timer = None
    try:
        # The monitor goes out in the same write as the request, which leaves at once.
        node.monitor(caller.pid, dest, ref=mref, flush=Flush.LATER)
        await node.send(dest, (GEN_CALL, (caller.pid, mref), request), sender=caller.pid,
                        flush=Flush.NOW)
        if timeout is not None:
            # (a plain timer: asyncio.timeout costs as much again as the rest of the wait)
            timer = answered.get_loop().call_later(timeout, _expire, answered)
        answer = await answered
    except _ExpiredError:
        raise CallTimeout(f"call to {dest!r} timed out after {timeout} s") from None
    finally:
        if timer is not None:
            timer.cancel()
        box.waiting.pop(mref, None)
        node.demonitor(caller.pid, mref)
    if len(answer) == 2:
        return answer[1]
    reason = answer[4]
    if reason is NOCONNECTION:
        raise NodeDown(f"{dest!r}: node down during call")
    if reason is NOPROC:
        raise NoProc(f"no process {dest!r}")
    raise ProcessExit(reason)


async def cast(node: ProcessHost, dest: Destination, message: Term) -> None:
    """``gen_server:cast(Dest, Message)``: fire and forget."""
    await node.send(dest, (GEN_CAST, message))


class GenServer:
    """Base class for Python processes that BEAM code calls with ``GenServer.call/cast``.

    Override ``handle_call`` (return the reply, or :data:`NOREPLY` and answer later with
    ``await self.reply(from_, value)``), ``handle_cast`` and ``handle_info``. Requests are
    handled one at a time, in arrival order, as a gen_server does. Raising ends the server.
    """

    process: Process

    async def init(self) -> None:
        """Called once in the new process before the first message."""

    async def handle_call(self, request: Term, from_: From) -> Term:
        raise ProcessExit((Atom("bad_call"), request))

    async def handle_cast(self, message: Term) -> None:
        log.debug("%s: unhandled cast %r", type(self).__name__, message)

    async def handle_info(self, message: Term) -> None:
        log.debug("%s: unhandled message %r", type(self).__name__, message)

    async def reply(self, from_: From, value: Term, *, flush: Flush = Flush.SOON) -> None:
        await reply(self.process.host, from_, value, sender=self.process.pid, flush=flush)

    async def serve(self, proc: Process) -> None:
        """The receive loop (the body of the server's process)."""
        self.process = proc
        await self.init()
        while True:
            message = await proc.receive()
            if type(message) is tuple and len(message) == 3 and message[0] is GEN_CALL:
                from_ = message[1]
                if not (type(from_) is tuple and len(from_) == 2 and isinstance(from_[0], Pid)):
                    await self.handle_info(message)
                    continue
                result = await self.handle_call(message[2], from_)
                if result is not NOREPLY:
                    # With more requests queued, their answers go out in one write.
                    await self.reply(from_, result,
                                     flush=Flush.SOON if len(proc.mailbox) else Flush.NOW)
            elif type(message) is tuple and len(message) == 2 and message[0] is GEN_CAST:
                await self.handle_cast(message[1])
            else:
                await self.handle_info(message)


class Spawner(Protocol):
    """Anything that spawns processes: the kernel, or the public ``Node``."""

    def spawn(self, body: ProcessBody, *, name: Atom | str | None = None,
              link: Pid | None = None, trap_exit: bool = False) -> Process: ...


def start_server(
    node: Spawner,
    server: GenServer,
    *,
    name: Atom | str | None = None,
    link: Pid | None = None,
    trap_exit: bool = False,
) -> Process:
    """Start ``server`` as a process (registered as ``name`` if given)."""
    return node.spawn(server.serve, name=name, link=link, trap_exit=trap_exit)
