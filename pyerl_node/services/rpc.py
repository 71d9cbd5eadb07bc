"""rpc/erpc both ways: serving distributed spawn into Python functions, and calling BEAM nodes.

Inbound (docs/protocol/net_kernel_rpc.md §3.2): OTP 25+ ``rpc:call``/``erpc:call`` send
SPAWN_REQUEST for ``erpc:execute_call/4`` with ``[ResRef, M, F, A]``; we answer SPAWN_REPLY
with a new pid, run the exposed Python function in that process and let it exit with
``{ResRef, return, V}``, ``{ResRef, throw, T}``, ``{ResRef, exit, R}`` or
``{ResRef, error, E, Stack}``; the caller's
monitor turns that exit reason into its result. ``execute_cast/3`` runs without a monitor. A
spawn of any other MFA runs the exposed function of that name as a plain process, or crashes
with ``undef`` as a BEAM process would.

Outbound (§3.4): the same SPAWN_REQUEST towards a BEAM node, with the request id as monitor
reference; the DOWN reason carries the outcome.

Nothing is callable unless exposed (``Node.expose``) or built in: the node's own modules
(``erlang``, ``global``, ``os``..., :mod:`pyerl_node.services.builtins`) answer the calls BEAM
code and tools make of any node. A user module cannot take a built-in's name by accident
(``replace_builtin=True`` says it is meant), and the functions the node's own protocols call
(``global:resolve_it``) stay built-in even then. Synchronous functions run in a thread pool so
that a slow one does not stall the node; ``async def`` functions are awaited.

A plain spawn (not erpc) that ends in an error logs the BEAM's error report, here and on the
node of its group leader (the caller's node), as the emulator does for a crashed process.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
import traceback
import types
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Final, overload

from pyerl_node.proto import etf
from pyerl_node.proto.errors import (
    CallTimeout,
    EncodeError,
    ErlNodeError,
    LocalProtocolError,
    ProcessExit,
    RpcError,
)
from pyerl_node.proto.term_syntax import format_term
from pyerl_node.proto.terms import Atom, Pid, Reference, Term
from pyerl_node.runtime.interface import NodeServices, SpawnHandler
from pyerl_node.runtime.process import DOWN, NORMAL, Process, python_exit_reason
from pyerl_node.runtime.workers import Workers
from pyerl_node.services.builtins.names import BUILTIN_MODULES, ERLANG

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
TIMEOUT = Atom("timeout")
NOCONNECTION = Atom("noconnection")
NODEDOWN = Atom("nodedown")
SPAWN_REPLY_TAG = Atom("spawn_reply")
BADARG = Atom("badarg")
GROUP_LEADER_NAME = Atom("pyerl_group_leader")
APPLY = Atom("apply")
NOCATCH = Atom("nocatch")
_APPLY_2: Final[Term] = (ERLANG, APPLY, 2, [])
# the error report's message to the caller's logger_proxy
LOGGER_PROXY = Atom("logger_proxy")
LOG = Atom("log")
ERROR_LOGGER = Atom("error_logger")
EMULATOR = Atom("emulator")
TAG = Atom("tag")
GL = Atom("gl")
PID = Atom("pid")
TIME = Atom("time")

_WORKERS = Workers(max_threads=32, name="pyerl-rpc")

log = logging.getLogger("pyerl_node")


class Throw(Exception):  # noqa: N818 -- named after the Erlang exception class it raises
    """Raise in an exposed function to ``throw(Term)`` on the Erlang side."""

    def __init__(self, term: Term) -> None:
        super().__init__(term)
        self.term = term


class ErlangError(Exception):
    """Raise in an exposed function to ``error(Reason)`` on the Erlang side.

    ``stacktrace`` replaces the Python traceback in the Erlang stack, for functions that fail
    the way a BEAM function does (``[{erlang, node, [X], [{error_info, ...}]}]``).
    """

    def __init__(self, reason: Term, stacktrace: list[Term] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stacktrace = stacktrace


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
    origin: str  # where the code comes from, as ``code:which/1`` names it


def _origin(obj: object) -> str:
    """``python:<where>``: the Python module, class or functions behind an exposed module."""
    if isinstance(obj, types.ModuleType):
        where = obj.__name__
    elif isinstance(obj, Mapping):
        first = next((fn for fn in obj.values() if callable(fn)), None)
        where = getattr(first, "__module__", None) or "mapping"
    else:
        cls = type(obj)
        where = f"{cls.__module__}.{cls.__qualname__}"
    return f"python:{where}"


def _finder(obj: object) -> Callable[[str], Any]:
    if isinstance(obj, Mapping):
        return dict(obj).get

    def find(fn: str) -> Any:
        return None if fn.startswith("_") else getattr(obj, fn, None)

    return find


class Exposed:
    """The callables published under Erlang module names: the node's built-in modules and
    the user's (``Node.expose``)."""

    def __init__(self) -> None:
        self._modules: dict[Atom, _Module] = {}
        self._builtins: dict[Atom, _Module] = {}
        # functions of a built-in the node's own protocols call: never taken over by a user
        self._internal: dict[Atom, frozenset[str]] = {}

    def expose(self, name: Atom | str, obj: object, *, threaded: bool = True,
               replace_builtin: bool = False) -> None:
        """Publish ``obj``'s public callables as module ``name``.

        ``obj`` is a Python module, a mapping of function names to callables, or any object
        whose public attributes are callables (a class instance). Synchronous functions run
        in a thread pool (``threaded``) so that a slow one cannot stall the node; pass
        ``threaded=False`` for quick functions to save the thread hand-off (~0.1 ms a call).

        The name of a built-in module (``erlang``, ``global``, ``os``...) is refused with
        :class:`LocalProtocolError` unless ``replace_builtin=True``: then rpc calls of that
        module run ``obj`` (functions it lacks are undef), except the functions the node's
        own protocols call (``global:resolve_it``), which stay built-in.
        """
        atom = name if isinstance(name, Atom) else Atom(name)
        if atom in BUILTIN_MODULES and not replace_builtin:
            raise LocalProtocolError(
                f"{atom.name!r} is a built-in module of the node: BEAM code and tools call "
                f"it on every node (see docs/builtins.md). Expose your module under another "
                f"name, or pass replace_builtin=True to serve rpc calls of {atom.name!r} "
                f"from it instead")
        self._modules[atom] = _Module(_finder(obj), threaded, _origin(obj))

    def provide(self, name: Atom, obj: object, *, internal: frozenset[str] = frozenset()
                ) -> None:
        """Serve ``obj`` as the built-in module ``name`` (a service of the node; its
        functions run inline: they must be quick, or ``async``). ``internal``: the functions
        the node's own protocols call, which a user module never takes over."""
        self._builtins[name] = _Module(_finder(obj), False, _origin(obj))
        self._internal[name] = internal

    def modules(self) -> list[Atom]:
        """Every module name rpc calls reach (built-in and user), without repeats."""
        return list(dict.fromkeys([*self._builtins, *self._modules]))

    def origin(self, module: Atom) -> str | None:
        """``python:<where>`` of the code that serves ``module``, None if nothing does."""
        entry = self._modules.get(module) or self._builtins.get(module)
        return None if entry is None else entry.origin

    def lookup(
        self, module: Atom, function: Atom, arity: int
    ) -> tuple[Callable[..., Any], bool] | None:
        """``(callable, threaded)`` for ``module:function/arity``; None where Erlang says undef."""
        entry = self._modules.get(module)
        if entry is None or function.name in self._internal.get(module, ()):
            entry = self._builtins.get(module)
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
        stack = _stacktrace(exc) if exc.stacktrace is None else exc.stacktrace
        return Outcome(ERROR, exc.reason, stack)
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


def spawn_handler(node: NodeServices, exposed: Exposed) -> SpawnHandler:
    """What a distributed spawn into ``node`` runs: erpc's call/cast protocol (§3.2), or a
    plain ``spawn(Node, M, F, A)`` of an exposed or built-in function (undef for anything
    else: a fun, ``erlang:apply/2`` of one, cannot run here). A plain spawn that fails logs
    the error report a BEAM logs, here and on its group leader's node."""

    def handle(proc: Process, module: Atom, function: Atom, args: list[Term],
               finish: Callable[[Term], None]) -> None:
        call = _requested_call(module, function, args)
        if isinstance(call, Outcome):  # a malformed erpc request fails as erpc's would
            finish(_exit_reason(module, function, args[0], call))
            return
        res_ref, m, f, a = call

        def done(outcome: Outcome) -> None:
            reason = _exit_reason(module, function, res_ref, outcome)
            if module is not ERPC and (outcome.kind is ERROR or outcome.kind is THROW):
                report_crash(node, proc, reason)
            finish(reason)

        started = start_apply(exposed, m, f, a, done)
        if isinstance(started, Outcome):
            done(started)  # over already: the exit leaves in the same write as the reply
        elif started is not None:
            running = started

            async def run(proc: Process) -> None:
                done(await running)

            node.run_process(proc, run)

    return handle


def _requested_call(
    module: Atom, function: Atom, args: list[Term]
) -> tuple[Term, Atom, Atom, list[Term]] | Outcome:
    """``(ResRef or None, M, F, Args)`` of a spawn; the failure of a malformed erpc one."""
    if module is ERPC and function is EXECUTE_CALL and len(args) == 4:
        res_ref, m, f, fargs = args
    elif module is ERPC and function is EXECUTE_CAST and len(args) == 3:
        res_ref = None
        m, f, fargs = args
    else:  # a plain spawn(Node, M, F, A): run the exposed function of that name
        return None, module, function, args
    if type(m) is Atom and type(f) is Atom and type(fargs) is list:
        return res_ref, m, f, fargs
    return Outcome(ERROR, BADARG, [(m, f, fargs, [])])


def _exit_reason(module: Atom, function: Atom, res_ref: Term, outcome: Outcome) -> Term:
    """How the spawned process ends: erpc's encoded result, or a plain process's exit."""
    if module is ERPC:
        return NORMAL if res_ref is None else erpc_exit_reason(res_ref, outcome)
    if outcome.kind is ERROR:
        stack = outcome.stack
        if module is ERLANG and function is APPLY and stack and stack[-1] == _APPLY_2:
            stack = stack[:-1]  # a process that starts in erlang:apply/2 is the fun itself
        return (outcome.value, stack)
    if outcome.kind is THROW:
        return ((NOCATCH, outcome.value), outcome.stack)
    return NORMAL if outcome.kind is RETURN else outcome.value


_REPORT_FORMAT: Final = [ord(c) for c in "Error in process ~p on node ~p with exit value:~n~p~n"]


def report_crash(node: NodeServices, proc: Process, reason: Term) -> None:
    """The emulator's error report for a process that crashed: logged here and, when its
    group leader is on another node (the node that spawned it), sent to that node's
    ``logger_proxy`` as ``{log, error, Format, Args, Meta}``, as a BEAM sends it."""
    me = node.node_atom
    leader = proc.group_leader
    caller = None if leader is None or leader.node is me else leader.node
    log.error("Error in process %r on node %s with exit value: %s%s", proc.pid, me.name,
              format_term(reason), "" if caller is None else f" (spawned from {caller.name})")
    if leader is None or caller is None:
        return
    meta = {ERROR_LOGGER: {EMULATOR: True, TAG: ERROR}, GL: leader, PID: proc.pid,
            TIME: time.time_ns() // 1000}
    report = (LOG, ERROR, _REPORT_FORMAT, [proc.pid, me, reason], meta)

    async def send() -> None:
        try:
            await node.send((LOGGER_PROXY, caller), report)
        except (ErlNodeError, OSError) as exc:
            log.debug("error report for %r not delivered to %s: %s", proc.pid, caller.name,
                      exc)

    node.spawn_task(send())


# -- calling BEAM nodes --------------------------------------------------------------------


async def erpc_call(
    node: NodeServices,
    target: Atom,
    module: Atom,
    function: Atom,
    args: list[Term],
    *,
    timeout: float | None,
) -> Outcome:
    """``erpc:call`` to ``target``: the raw outcome (``RpcError`` for transport failures)."""
    caller = node.new_process()
    req_id = node.make_ref()
    res_ref = node.make_ref()
    # A placeholder until SPAWN_REPLY names the pid, so that nodedown fires a DOWN too.
    caller.monitoring[req_id] = (Atom("undefined"), target)
    try:
        node.send_spawn_request(caller, target, req_id, ERPC, EXECUTE_CALL,
                                [res_ref, module, function, args], [MONITOR],
                                group_leader_pid(node))

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
        node.terminate(caller, NORMAL)


async def call_outcome(
    node: NodeServices, exposed: Exposed, target: Atom, module: Atom, function: Atom,
    args: list[Term], *, timeout: float | None,
) -> Outcome:
    """How ``module:function(args)`` ended on ``target`` (run here when it is this node)."""
    if target is node.node_atom:
        return await apply(exposed, module, function, list(args))
    return await erpc_call(node, target, module, function, list(args), timeout=timeout)


async def rpc_call(
    node: NodeServices, exposed: Exposed, target: Atom, module: Atom, function: Atom,
    args: list[Term], *, timeout: float | None,
) -> Term:
    """``rpc:call/5``: the value (or thrown term); ``RpcError(Reason)`` for ``{badrpc, R}``."""
    try:
        outcome = await call_outcome(node, exposed, target, module, function, args,
                                     timeout=timeout)
    except RpcError as exc:
        reason = NODEDOWN if exc.kind in ("noconnection", "nodedown") else exc.reason
        raise RpcError(reason) from exc
    return raise_for_rpc(outcome)


def group_leader_pid(node: NodeServices) -> Pid:
    """The group leader we name in spawn requests: it answers the I/O protocol."""
    pid = node.whereis(GROUP_LEADER_NAME)
    if pid is None:
        raise LocalProtocolError("the node's group leader is not running")
    return pid


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
