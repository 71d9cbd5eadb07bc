"""rpc/erpc both ways: serving distributed spawn into Python functions, and calling BEAM nodes.

Inbound (NET_KERNEL_RPC.md §3.2): OTP 25+ ``rpc:call``/``erpc:call`` send SPAWN_REQUEST for
``erpc:execute_call/4`` with ``[ResRef, M, F, A]``; we answer SPAWN_REPLY with a new pid, run
the exposed Python function in that process and let it exit with ``{ResRef, return, V}``,
``{ResRef, throw, T}``, ``{ResRef, exit, R}`` or ``{ResRef, error, E, Stack}``; the caller's
monitor turns that exit reason into its result. ``execute_cast/3`` runs without a monitor. A
spawn of any other MFA runs the exposed function of that name as a plain process, or crashes
with ``undef`` as a BEAM process would.

Outbound (§3.4): the same SPAWN_REQUEST towards a BEAM node, with the request id as monitor
reference; the DOWN reason carries the outcome.

Nothing is callable unless exposed (``Node.expose``). Synchronous functions run in a thread
pool so that a slow one does not stall the node; ``async def`` functions are awaited.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import traceback
import types
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, overload

from pyerl_node.proto import control as c
from pyerl_node.proto import etf
from pyerl_node.proto.errors import CallTimeout, EncodeError, ProcessExit, RpcError
from pyerl_node.proto.terms import Atom, Pid, Reference, Term
from pyerl_node.runtime.process import DOWN, NORMAL, MonitorEntry, Process, python_exit_reason
from pyerl_node.runtime.workers import Workers

if TYPE_CHECKING:
    from pyerl_node.node import Node
    from pyerl_node.runtime.channel import Channel

ERPC = Atom("erpc")
EXECUTE_CALL = Atom("execute_call")
EXECUTE_CAST = Atom("execute_cast")
RETURN = Atom("return")
THROW = Atom("throw")
EXIT_CLASS = Atom("exit")
ERROR = Atom("error")
UNDEF = Atom("undef")
BADRPC = Atom("badrpc")
EXIT_TAG = Atom("EXIT")
MONITOR = Atom("monitor")
LINK = Atom("link")
TIMEOUT = Atom("timeout")
NOCONNECTION = Atom("noconnection")
SPAWN_REPLY_TAG = Atom("spawn_reply")

_WORKERS = Workers(max_threads=32, name="pyerl-rpc")


class Throw(Exception):  # noqa: N818 -- named after the Erlang exception class it raises
    """Raise in an exposed function to ``throw(Term)`` on the Erlang side."""

    def __init__(self, term: Term) -> None:
        super().__init__(term)
        self.term = term


class ErlangError(Exception):
    """Raise in an exposed function to ``error(Reason)`` on the Erlang side."""

    def __init__(self, reason: Term) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a call ended: ``kind`` is return/throw/exit/error; ``stack`` only for errors."""

    kind: Atom
    value: Term
    stack: list[Term]


@dataclass(frozen=True, slots=True)
class _Module:
    find: Callable[[str], Any]
    threaded: bool


class Exposed:
    """The Python callables published under Erlang module names."""

    def __init__(self) -> None:
        self._modules: dict[Atom, _Module] = {}

    def expose(self, name: Atom | str, obj: object, *, threaded: bool = True) -> None:
        """Publish ``obj``'s public callables as module ``name``.

        ``obj`` is a Python module, a mapping of function names to callables, or any object
        whose public attributes are callables (a class instance). Synchronous functions run
        in a thread pool (``threaded``) so that a slow one cannot stall the node; pass
        ``threaded=False`` for quick functions to save the thread hand-off (~0.1 ms a call).
        """
        atom = name if isinstance(name, Atom) else Atom(name)
        if isinstance(obj, Mapping):
            find: Callable[[str], Any] = dict(obj).get
        else:
            def find(fn: str) -> Any:
                return None if fn.startswith("_") else getattr(obj, fn, None)
        self._modules[atom] = _Module(find, threaded)

    def modules(self) -> list[Atom]:
        return list(self._modules)

    def lookup(
        self, module: Atom, function: Atom, arity: int
    ) -> tuple[Callable[..., Any], bool] | None:
        """``(callable, threaded)`` for ``module:function/arity``; None where Erlang says undef."""
        entry = self._modules.get(module)
        if entry is None:
            return None
        fn = entry.find(function.name)
        if fn is None or not callable(fn) or isinstance(fn, type | types.ModuleType):
            return None
        return (fn, entry.threaded) if _accepts(fn, arity) else None


@functools.lru_cache(maxsize=4096)
def _accepts(fn: Callable[..., Any], arity: int) -> bool:
    """Whether ``fn`` takes ``arity`` positional arguments (wrong arity is undef in Erlang).

    Cached: signatures of builtins are parsed from text, which costs more than the call.
    """
    try:
        inspect.signature(fn).bind(*([None] * arity))
    except TypeError:
        return False
    except ValueError:
        pass  # no signature available: let the call decide
    return True


def _stacktrace(exc: BaseException) -> list[Term]:
    """A readable Erlang stacktrace term: ``[{Module, Function, Arity, [{file,F},{line,L}]}]``."""
    frames = traceback.extract_tb(exc.__traceback__)
    stack: list[Term] = []
    for frame in reversed(frames[-20:]):
        module = inspect.getmodulename(frame.filename) or frame.filename
        location = [
            (Atom("file"), [ord(ch) for ch in frame.filename]),
            (Atom("line"), frame.lineno or 0),
        ]
        stack.append((Atom(module), Atom(frame.name), 0, location))
    return stack


@overload
def start_apply(
    exposed: Exposed, module: Atom, function: Atom, args: list[Term], done: None = None
) -> Outcome | Coroutine[Any, Any, Outcome]: ...


@overload
def start_apply(
    exposed: Exposed, module: Atom, function: Atom, args: list[Term],
    done: Callable[[Outcome], None],
) -> Outcome | Coroutine[Any, Any, Outcome] | None: ...


def start_apply(
    exposed: Exposed, module: Atom, function: Atom, args: list[Term],
    done: Callable[[Outcome], None] | None = None,
) -> Outcome | Coroutine[Any, Any, Outcome] | None:
    """Start ``module:function(args...)`` among the exposed callables.

    The outcome itself when the call is already over (undef, or an inline synchronous
    function), else a coroutine that finishes it: callers on the hot path avoid a task.
    With ``done``, a function for the worker threads is handed to them and None returned:
    its outcome goes to ``done`` on the loop, without a task either.
    """
    found = exposed.lookup(module, function, len(args))
    if found is None:
        return Outcome(ERROR, UNDEF, [(module, function, args, [])])
    fn, threaded = found
    is_async = inspect.iscoroutinefunction(fn)
    if threaded and done is not None and not is_async:
        _WORKERS.submit(fn, tuple(args), functools.partial(_worker_done, done))
        return None
    if threaded or is_async:
        return _finish(fn, args, threaded)
    try:
        value = fn(*args)
    except Exception as exc:
        return _failure(exc)
    if inspect.isawaitable(value):
        return _finish(lambda: value, [], False)
    return _returned(value)


async def apply(exposed: Exposed, module: Atom, function: Atom, args: list[Term]) -> Outcome:
    """Run ``module:function(args...)`` among the exposed callables."""
    started = start_apply(exposed, module, function, args)
    return started if isinstance(started, Outcome) else await started


_AWAITING: set[asyncio.Task[Outcome]] = set()


def _worker_done(done: Callable[[Outcome], None], ok: bool, value: Any) -> None:
    if ok and inspect.isawaitable(value):  # a plain function that returned a coroutine
        task = asyncio.ensure_future(_finish(lambda: value, [], False))
        _AWAITING.add(task)  # (the loop keeps only a weak reference to a task)
        task.add_done_callback(_AWAITING.discard)
        task.add_done_callback(lambda finished: done(finished.result()))
    elif ok:
        done(_returned(value))
    elif isinstance(value, Exception):
        done(_failure(value))
    else:  # SystemExit, KeyboardInterrupt... in a worker: still an answer for the caller
        done(_failure(RuntimeError(f"{type(value).__name__} in an rpc worker: {value}")))


async def _finish(fn: Callable[..., Any], args: list[Term], threaded: bool) -> Outcome:
    try:
        if threaded:
            value = await _WORKERS.run(fn, *args)
        else:
            value = fn(*args)
        if inspect.isawaitable(value):
            value = await value
    except Exception as exc:
        return _failure(exc)
    return _returned(value)


# Results that need no trial encoding (no float: inf and nan have no external form).
_ALWAYS_ENCODABLE: Final = frozenset({int, bytes, Atom, bool, type(None)})


def _returned(value: Term) -> Outcome:
    if type(value) in _ALWAYS_ENCODABLE:
        return Outcome(RETURN, value, [])
    try:
        etf.encode(value)  # fail here, as the function's error, not later in the connection
    except EncodeError as exc:
        return Outcome(ERROR, python_exit_reason(exc), [])
    return Outcome(RETURN, value, [])


def _failure(exc: Exception) -> Outcome:
    """How a Python exception reads as an Erlang exception class and reason."""
    if isinstance(exc, Throw):
        return Outcome(THROW, exc.term, [])
    if isinstance(exc, ProcessExit):
        return Outcome(EXIT_CLASS, exc.reason, [])
    if isinstance(exc, ErlangError):
        return Outcome(ERROR, exc.reason, _stacktrace(exc))
    return Outcome(ERROR, python_exit_reason(exc), _stacktrace(exc))


def erpc_exit_reason(res_ref: Term, outcome: Outcome) -> Term:
    """The exit reason of an ``erpc:execute_call`` process (§3.2 table)."""
    if outcome.kind is ERROR:
        return (res_ref, ERROR, outcome.value, outcome.stack)
    return (res_ref, outcome.kind, outcome.value)


def rpc_result(outcome: Outcome) -> Term:
    """What ``rpc:call`` returns for an outcome: the value, or ``{badrpc, {'EXIT', ...}}``."""
    if outcome.kind is RETURN or outcome.kind is THROW:
        return outcome.value
    if outcome.kind is EXIT_CLASS:
        return (BADRPC, (EXIT_TAG, outcome.value))
    return (BADRPC, (EXIT_TAG, (outcome.value, outcome.stack)))


# -- serving SPAWN_REQUEST --------------------------------------------------------------------


_MONITOR_SET: Final = int(c.SpawnReplyFlag.MONITOR)
_LINK_SET: Final = int(c.SpawnReplyFlag.LINK)


def serve_spawn_request(node: Node, channel: Channel, req: c.SpawnRequest) -> None:
    """Answer a distributed spawn: SPAWN_REPLY first, then run the call as the new process."""
    call = _requested_call(req)
    if call is None:
        channel.send(c.SpawnReply(req.req_id, req.from_pid, 0, Atom("badarg")))
        return
    proc = node.mailbox()
    proc.group_leader = req.group_leader
    flags = 0  # (plain ints: IntFlag arithmetic costs microseconds, on every rpc)
    if MONITOR in req.options:
        proc.monitored_by[req.req_id] = MonitorEntry(req.from_pid, proc.pid)
        flags |= _MONITOR_SET
    if LINK in req.options:
        proc.links.add(req.from_pid)
        flags |= _LINK_SET
    channel.send(c.SpawnReply(req.req_id, req.from_pid, flags, proc.pid))
    res_ref, module, function, args = call

    def done(outcome: Outcome) -> None:
        node.terminate(proc, _exit_reason(req, res_ref, outcome))  # (nothing if killed)
        channel.flush()  # the caller is waiting for this exit: no need to wait for the loop

    started = start_apply(node.exposed, module, function, args, done)
    if isinstance(started, Outcome):
        # Over already: the exit leaves in the same write as the reply, no task needed.
        node.terminate(proc, _exit_reason(req, res_ref, started))
    elif started is not None:
        running = started

        async def finish(proc: Process) -> None:
            done(await running)

        node.run_process(proc, finish)


def _requested_call(req: c.SpawnRequest) -> tuple[Term, Atom, Atom, list[Term]] | None:
    """``(ResRef or None, M, F, Args)`` of a spawn request; None when it is malformed."""
    args = req.args
    if req.module is ERPC and req.function is EXECUTE_CALL and req.arity == 4 and len(args) == 4:
        res_ref, module, function, fargs = args
    elif req.module is ERPC and req.function is EXECUTE_CAST and req.arity == 3 and len(args) == 3:
        res_ref = None
        module, function, fargs = args
    else:  # a plain spawn(Node, M, F, A): run the exposed function of that name
        return None, req.module, req.function, args
    if type(module) is Atom and type(function) is Atom and type(fargs) is list:
        return res_ref, module, function, fargs
    return None


def _exit_reason(req: c.SpawnRequest, res_ref: Term, outcome: Outcome) -> Term:
    """How the spawned process ends: erpc's encoded result, or a plain process's exit."""
    if req.module is ERPC:
        return NORMAL if res_ref is None else erpc_exit_reason(res_ref, outcome)
    if outcome.kind is ERROR:
        return (outcome.value, outcome.stack)
    return NORMAL if outcome.kind is RETURN else outcome.value


# -- calling BEAM nodes --------------------------------------------------------------------


async def erpc_call(
    node: Node,
    target: Atom,
    module: Atom,
    function: Atom,
    args: list[Term],
    *,
    timeout: float | None,
) -> Outcome:
    """``erpc:call`` to ``target``: the raw outcome (``RpcError`` for transport failures)."""
    channel = await node.connect_channel(target)
    caller = node.mailbox()
    req_id = node.make_ref()
    res_ref = node.make_ref()
    # A placeholder until SPAWN_REPLY names the pid, so that nodedown fires a DOWN too.
    caller.monitoring[req_id] = (Atom("undefined"), target)
    try:
        channel.send(
            c.SpawnRequest(
                req_id, caller.pid, node.group_leader_pid(), ERPC, EXECUTE_CALL, 4,
                [MONITOR], [res_ref, module, function, args],
            )
        )

        def mine(msg: Term) -> bool:
            return type(msg) is tuple and len(msg) >= 2 and msg[1] == req_id

        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                msg = await caller.receive(mine, remaining)
            except CallTimeout:
                raise RpcError(TIMEOUT, kind="timeout") from None
            if msg[0] is SPAWN_REPLY_TAG:
                result = msg[3]
                if not isinstance(result, Pid):
                    caller.monitoring.pop(req_id, None)
                    raise RpcError(result, kind="spawn")
                caller.monitoring[req_id] = result
                continue
            if msg[0] is DOWN:
                return _decode_down(msg[4], res_ref)
    finally:
        node.terminate(caller, Atom("normal"))



def _decode_down(reason: Term, res_ref: Reference) -> Outcome:
    if reason is NOCONNECTION:
        raise RpcError(NOCONNECTION, kind="noconnection")
    if type(reason) is tuple and len(reason) >= 3 and reason[0] == res_ref:
        kind = reason[1]
        if kind is ERROR and len(reason) == 4:
            return Outcome(ERROR, reason[2], reason[3])
        if kind in (RETURN, THROW, EXIT_CLASS) and len(reason) == 3:
            return Outcome(kind, reason[2], [])
    # the process died for another reason: exit({signal, R}) on the BEAM side
    return Outcome(EXIT_CLASS, reason, [])


def raise_for_erpc(outcome: Outcome) -> Term:
    """The value of a successful erpc outcome; ``RpcError(kind=class)`` otherwise."""
    if outcome.kind is RETURN:
        return outcome.value
    if outcome.kind is ERROR:
        raise RpcError((outcome.value, outcome.stack), kind="error")
    raise RpcError(outcome.value, kind=outcome.kind.name)


def raise_for_rpc(outcome: Outcome) -> Term:
    """``rpc:call`` semantics: value or thrown term; ``RpcError({'EXIT', ...})`` otherwise."""
    result = rpc_result(outcome)
    if type(result) is tuple and len(result) == 2 and result[0] is BADRPC:
        raise RpcError(result[1])
    return result
