"""The generic call protocol both ways: ``gen:call``/``gen_server:cast`` and a GenServer base.

Outbound calls follow docs/protocol/net_kernel_rpc.md §1.3: monitor the server, send
``{'$gen_call', {Me, Mref}, Request}``, wait for ``{Mref, Reply}`` or the DOWN. Inbound calls
(§1.1/1.2) carry a tag that may hold a process alias (``[alias | Ref]`` from OTP 24+ gen:call,
``[[alias | Ref] | Mon]`` from OTP 26+ multi_call); replies go to that alias when the
connection supports ALIAS, as ``gen_server:reply/2`` does, and to the caller's pid otherwise.

A :class:`GenServer` also answers the ``sys`` protocol as OTP's ``gen_server`` does
(``{system, From, Request}``, the messages ``sys:get_state/1``, ``sys:get_status/1``,
``sys:replace_state/2``, ``sys:suspend/1``, ``sys:resume/1``, ``sys:trace/2`` and
``sys:terminate/2`` send; docs/builtins.md, "sys"). While suspended it takes only system
messages; everything else waits in its mailbox, in order, until it is resumed. OTP 26.1
changed what ``get_state`` and ``replace_state`` answer (``{ok, State}`` instead of the bare
state); the node's services tell the servers which form a caller's node reads (the kernel's
``state_reply_probe`` hook; without one, every caller gets the bare state, as OTP 25 reads
it).
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from typing import Any, Final, Protocol

from pyerl_node.proto import etf
from pyerl_node.proto.errors import CallTimeout, EncodeError, NodeDown, NoProc, ProcessExit
from pyerl_node.proto.safe_repr import safe_repr
from pyerl_node.proto.term_syntax import format_term
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
    python_exit_reason,
)

log = logging.getLogger("pyerl_node.gen")

GEN_CALL = Atom("$gen_call")
GEN_CAST = Atom("$gen_cast")
#: the label of ``gen:call`` for the sys protocol: ``{system, From, Request}``
SYSTEM = Atom("system")
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


class _Deadlines:
    """The timeouts of a node's pending calls, on one timer of the loop's: arming and
    cancelling an asyncio timer for each call costs a tenth of a call. The timer is armed
    for the earliest deadline; when it fires, the calls past theirs fail and it is armed for
    the next one."""

    def __init__(self) -> None:
        self._due: dict[asyncio.Future[Term], float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf

    def add(self, waiter: asyncio.Future[Term], timeout: float) -> None:
        loop = waiter.get_loop()
        at = self._due[waiter] = loop.time() + timeout
        if at < self._at:
            if self._timer is not None:
                self._timer.cancel()
            self._at, self._timer = at, loop.call_at(at, self._fire, loop)

    def discard(self, waiter: asyncio.Future[Term]) -> None:
        self._due.pop(waiter, None)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        # (asyncio runs a timer up to its clock's resolution early: a deadline that close
        # counts as reached, or the timer would fire again and again until it is)
        now = loop.time() + _EARLY
        self._timer, self._at = None, math.inf
        due = self._due
        # (in the order of their deadlines, also when the loop was late for several)
        expired = sorted((at, n, w) for n, (w, at) in enumerate(due.items()) if at <= now)
        for _, _, waiter in expired:
            del due[waiter]
            if not waiter.done():
                waiter.set_exception(_ExpiredError())
        if due:
            self._at = min(due.values())
            self._timer = loop.call_at(self._at, self._fire, loop)


_EARLY = 0.001


class _ReplyMailbox(Mailbox):
    """The mailbox of a node's calling process: each reply or DOWN goes straight to its waiter.

    One such process serves every outbound call of a node, so a call costs a monitor, a send
    and a future, not a process. A reply that arrives after its call gave up is dropped.
    """

    __slots__ = ("deadlines", "waiting")

    def __init__(self) -> None:
        super().__init__()
        self.waiting: dict[Reference, asyncio.Future[Term]] = {}
        self.deadlines = _Deadlines()

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


async def call(
    node: ProcessHost, dest: Destination, request: Term, *, timeout: float | None = 5.0,
    label: Atom = GEN_CALL,
) -> Term:
    """``gen_server:call(Dest, Request, Timeout)`` from Python (``gen:call`` with ``label``:
    :data:`SYSTEM` makes it the call ``sys:get_state/1`` and the other sys verbs make).

    Raises :class:`NoProc` if the server does not exist, :class:`NodeDown` if its node is
    unreachable or goes down, :class:`ProcessExit` if it dies before replying, and
    :class:`CallTimeout` after ``timeout`` seconds.
    """
    caller, box = _caller(node)
    mref = node.make_ref()
    answered: asyncio.Future[Term] = asyncio.get_running_loop().create_future()
    box.waiting[mref] = answered  # before the monitor: its DOWN may come at once
    try:
        # The monitor goes out in the same write as the request, which leaves at once.
        message = (label, (caller.pid, mref), request)
        if not node.monitor_and_send(caller.pid, dest, message, mref):
            node.monitor(caller.pid, dest, ref=mref, flush=Flush.LATER)
            await node.send(dest, message, sender=caller.pid, flush=Flush.NOW)
        if timeout is not None:
            # (asyncio.timeout would cost as much again as the rest of the wait)
            box.deadlines.add(answered, timeout)
        answer = await answered
    except _ExpiredError:
        raise CallTimeout(f"call to {dest!r} timed out after {timeout} s") from None
    finally:
        if timeout is not None:
            box.deadlines.discard(answered)
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


SUSPEND = Atom("suspend")
RESUME = Atom("resume")
GET_STATE = Atom("get_state")
GET_STATUS = Atom("get_status")
REPLACE_STATE = Atom("replace_state")
DEBUG = Atom("debug")
TERMINATE = Atom("terminate")
RUNNING = Atom("running")
SUSPENDED = Atom("suspended")
OK = Atom("ok")
TRACE = Atom("trace")
_ERROR = Atom("error")
_STATUS = Atom("status")
_MODULE = Atom("module")
_GEN_SERVER = Atom("gen_server")
_HEADER = Atom("header")
_DATA = Atom("data")
_NO_DEBUG = Atom("no_debug")
_UNKNOWN_DEBUG = Atom("unknown_debug")
_UNKNOWN_SYSTEM_MSG = Atom("unknown_system_msg")
_CALLBACK_FAILED = Atom("callback_failed")
_SYSTEM_REPLACE_STATE = Atom("system_replace_state")
_UNDEF = Atom("undef")
_ANCESTORS = Atom("$ancestors")
_INITIAL_CALL = Atom("$initial_call")
# debug options that are never installed here, so removing them is always ``ok``
_REMOVABLE: Final = frozenset(map(Atom, ("log", "log_to_file", "statistics")))
# attributes of the server object that are its plumbing, not its state
_NOT_STATE: Final = frozenset({"process", "parent"})


def _charlist(text: str) -> list[int]:
    return [ord(ch) for ch in text]


def _is_from(term: Term) -> bool:
    return type(term) is tuple and len(term) == 2 and isinstance(term[0], Pid)


def _is_system(message: Term) -> bool:
    return (type(message) is tuple and len(message) == 3 and message[0] is SYSTEM
            and _is_from(message[1]))


def printable(value: Term) -> Term:
    """``value`` if it can travel to another node, else a copy in which whatever cannot
    (Python objects, NaN...) is its ``repr`` as a binary: the state shown by ``sys``."""
    try:
        etf.encode(value)
    except EncodeError:
        pass
    else:
        return value
    if type(value) is tuple:
        return tuple(printable(v) for v in value)
    if type(value) is list:
        return [printable(v) for v in value]
    if type(value) is dict:
        return {printable(k): printable(v) for k, v in value.items()}
    return repr(value).encode()


async def _wants_ok_tuple(host: ProcessHost, caller: Pid) -> bool:
    # the kernel's hook (NodeServices.state_reply_probe), set by the node's services
    probe = getattr(host, "state_reply_probe", None)
    return probe is not None and bool(await probe(caller))


class GenServer:
    """Base class for Python processes that BEAM code calls with ``GenServer.call/cast``.

    Override ``handle_call`` (return the reply, or :data:`NOREPLY` and answer later with
    ``await self.reply(from_, value)``), ``handle_cast`` and ``handle_info``. Requests are
    handled one at a time, in arrival order, as a gen_server does. Raising ends the server.

    The state ``sys:get_state/1`` shows is :meth:`get_state`: the ``state`` attribute if the
    server has one, else a map of its public attributes; ``sys:replace_state/2`` from Python
    (a Python callable) goes through :meth:`set_state`. Override both to show something else.
    """

    process: Process
    #: the process that started it linked (``start_server(link=...)``); itself otherwise
    parent: Pid | None = None
    _suspended: bool = False
    _trace: bool = False

    async def init(self) -> None:
        """Called once in the new process before the first message."""

    async def handle_call(self, request: Term, from_: From) -> Term:
        """A ``GenServer.call``: the reply, or :data:`NOREPLY` (default: exit ``bad_call``)."""
        raise ProcessExit((Atom("bad_call"), request))

    async def handle_cast(self, message: Term) -> None:
        """A ``GenServer.cast`` (default: logged at DEBUG and dropped)."""
        log.debug("%s: unhandled cast %s", type(self).__name__, safe_repr(message))

    async def handle_info(self, message: Term) -> None:
        """Any other message (default: logged at DEBUG and dropped)."""
        log.debug("%s: unhandled message %s", type(self).__name__, safe_repr(message))

    async def reply(self, from_: From, value: Term, *, flush: Flush = Flush.SOON) -> None:
        """``gen_server:reply/2``: answer a call that ``handle_call`` left open."""
        await reply(self.process.host, from_, value, sender=self.process.pid, flush=flush)

    # -- the state as sys sees it -------------------------------------------------------------

    def get_state(self) -> Term:
        """What ``sys:get_state/1`` answers: ``self.state`` if set, else the public attributes
        as a map with atom keys (``process`` and ``parent`` left out)."""
        if hasattr(self, "state"):
            return self.state
        return {Atom(k): v for k, v in vars(self).items()
                if not k.startswith("_") and k not in _NOT_STATE}

    def set_state(self, state: Term) -> None:
        """Make ``state`` the state (``sys:replace_state/2``): sets ``self.state``."""
        self.state = state

    @property
    def suspended(self) -> bool:
        """Whether ``sys:suspend/1`` holds it (only system messages are taken)."""
        return self._suspended

    def process_dictionary(self) -> list[Term]:
        """What ``process_info(Pid, dictionary)`` and ``sys:get_status/1`` show as the process
        dictionary: ``$ancestors`` and ``$initial_call``, as a gen_server's has."""
        cls = type(self)
        initial = (Atom(f"python:{cls.__module__}"), Atom(f"{cls.__qualname__}.init"), 0)
        return [(_ANCESTORS, [self._parent()]), (_INITIAL_CALL, initial)]

    def _parent(self) -> Pid:
        return self.parent if self.parent is not None else self.process.pid

    # -- the receive loop ---------------------------------------------------------------------

    async def serve(self, proc: Process) -> None:
        """The receive loop (the body of the server's process)."""
        self.process = proc
        _SERVERS[proc] = self
        await self.init()
        while True:
            message = await proc.receive(_is_system if self._suspended else None)
            if self._trace:
                log.info("*DBG* %s got %s", self._name(), format_term(message))
            if type(message) is tuple and len(message) == 3:
                kind, from_ = message[0], message[1]
                if kind is GEN_CALL and _is_from(from_):
                    result = await self.handle_call(message[2], from_)
                    if result is not NOREPLY:
                        # With more requests queued, their answers go out in one write.
                        await self.reply(from_, result,
                                         flush=Flush.SOON if len(proc.mailbox) else Flush.NOW)
                    continue
                if kind is SYSTEM and _is_from(from_):
                    await self._system(message[2], from_)
                    continue
            if type(message) is tuple and len(message) == 2 and message[0] is GEN_CAST:
                await self.handle_cast(message[1])
            else:
                await self.handle_info(message)

    # -- the sys protocol ----------------------------------------------------------------

    async def _system(self, request: Term, from_: From) -> None:
        """One ``{system, From, Request}``, answered as ``sys:handle_system_msg`` and
        gen_server's callbacks answer it."""
        answer: Term
        ends: Term = None
        if request is GET_STATE:
            answer = await self._state_answer(printable(self.get_state()), from_[0])
        elif request is GET_STATUS:
            answer = self._status()
        elif request is SUSPEND or request is RESUME:
            self._suspended = request is SUSPEND
            answer = OK
        elif type(request) is tuple and len(request) == 2 and request[0] is REPLACE_STATE:
            replaced, answer = self._replace_state(request[1])
            if replaced:
                answer = await self._state_answer(answer, from_[0])
        elif type(request) is tuple and len(request) == 2 and request[0] is DEBUG:
            answer = self._debug(request[1])
        elif type(request) is tuple and len(request) == 2 and request[0] is TERMINATE:
            answer, ends = OK, request[1]
        else:
            answer = (_ERROR, (_UNKNOWN_SYSTEM_MSG, request))
        await self.reply(from_, answer, flush=Flush.NOW)
        if ends is not None:
            raise ProcessExit(ends)

    async def _state_answer(self, state: Term, caller: Pid) -> Term:
        """``state`` in the form the caller's node reads (OTP 26.1+: ``{ok, State}``)."""
        return (OK, state) if await _wants_ok_tuple(self.process.host, caller) else state

    def _replace_state(self, fun: Term) -> tuple[bool, Term]:
        """(True, the new state), or (False, the error ``sys`` raises)."""
        if not callable(fun):
            # An Erlang fun cannot run here: it fails as a fun of an unloaded module does.
            return False, (_ERROR, (_CALLBACK_FAILED, (_GEN_SERVER, _SYSTEM_REPLACE_STATE),
                                    (_ERROR, _UNDEF)))
        try:
            new = fun(self.get_state())
        except Exception as exc:
            return False, (_ERROR, (_CALLBACK_FAILED, (_GEN_SERVER, _SYSTEM_REPLACE_STATE),
                                    (_ERROR, python_exit_reason(exc))))
        self.set_state(new)
        return True, printable(new)

    def _debug(self, option: Term) -> Term:
        if option is _NO_DEBUG:
            self._trace = False
            return OK
        if not (type(option) is tuple and len(option) == 2 and type(option[1]) is bool):
            return _UNKNOWN_DEBUG
        if option[0] is TRACE:
            self._trace = option[1]
            return OK
        # log, statistics... are never installed: turning them off is all there is to do
        return OK if option[0] in _REMOVABLE and option[1] is False else _UNKNOWN_DEBUG

    def _status(self) -> Term:
        """``{status, Pid, {module, gen_server}, [PDict, SysState, Parent, Debug, Misc]}``,
        ``Misc`` as gen_server's ``format_status/2`` lays it out."""
        sys_state = SUSPENDED if self._suspended else RUNNING
        parent = self._parent()
        misc = [
            (_HEADER, _charlist(f"Status for generic server {self._name()}")),
            (_DATA, [(_charlist("Status"), sys_state), (_charlist("Parent"), parent),
                     (_charlist("Logged events"), [])]),
            (_DATA, [(_charlist("State"), printable(self.get_state()))]),
        ]
        debug: list[Term] = [(TRACE, True)] if self._trace else []
        return (_STATUS, self.process.pid, (_MODULE, _GEN_SERVER),
                [self.process_dictionary(), sys_state, parent, debug, misc])

    def _name(self) -> str:
        proc = self.process
        if proc.name is not None:
            return proc.name.name
        return f"<0.{proc.pid.id}.{proc.pid.serial}>"


_SERVERS: weakref.WeakKeyDictionary[Process, GenServer] = weakref.WeakKeyDictionary()


def server_of(proc: Process) -> GenServer | None:
    """The GenServer that runs as ``proc``, if it is one (for ``process_info``)."""
    return _SERVERS.get(proc)


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
    """Start ``server`` as a process (registered as ``name`` if given; ``link`` is its
    parent, as for ``gen_server:start_link``)."""
    server.parent = link
    return node.spawn(server.serve, name=name, link=link, trap_exit=trap_exit)
