"""Built-in ``erlang``: the BIFs BEAM tools call on a node, for this node's processes and
connections (node, nodes, whereis, registered, processes, process_info, is_process_alive,
system_info, memory, statistics, apply, monitor_node).

Answers and failures have the shapes of OTP 25's BIFs: a bad argument is ``badarg`` with
the ``error_info`` frame, a pid of another node is a bad argument (``process_info`` and
``is_process_alive`` only know local processes), a dead process is ``undefined``. ``apply``
runs the modules rpc reaches (built-in and exposed); a fun cannot run here, and fails as a
fun of a module the node does not have fails on a BEAM: ``undef``.
"""

from __future__ import annotations

from typing import Any, Final

from pyerl_node.proto.errors import ProcessExit
from pyerl_node.proto.terms import Atom, Export, Fun, Pid, Port, Reference, Term
from pyerl_node.runtime.interface import NodeKind, NodeServices
from pyerl_node.runtime.process import Process
from pyerl_node.services import rpc as rpc_service
from pyerl_node.services.builtins import process_info as pinfo
from pyerl_node.services.builtins.common import UNDEFINED, badarg
from pyerl_node.services.builtins.names import ERLANG
from pyerl_node.services.builtins.system import SystemFigures
from pyerl_node.services.rpc import APPLY, UNDEF, ErlangError, Exposed, Outcome, Throw

BADFUN: Final = Atom("badfun")
BADARITY: Final = Atom("badarity")
_NODE_KINDS: Final[dict[Atom, NodeKind]] = {
    Atom(k): k for k in ("visible", "hidden", "connected", "this", "known")}
_UNSET: Any = object()  # an argument not given: the lower arity of the function


def is_atom(term: Term) -> bool:
    """Whether ``term`` is an Erlang atom (``true``, ``false`` and ``nil`` are bool/None)."""
    return isinstance(term, Atom | bool) or term is None


def raise_outcome(outcome: Outcome, undef_frame: Term) -> Term:
    """The value of ``outcome``, or its exception raised again; an ``undef`` gets the
    ``erlang:apply`` frame a BEAM puts under it."""
    if outcome.kind is rpc_service.RETURN:
        return outcome.value
    if outcome.kind is rpc_service.THROW:
        raise Throw(outcome.value)
    if outcome.kind is rpc_service.EXIT_CLASS:
        raise ProcessExit(outcome.value)
    stack = [*outcome.stack, undef_frame] if outcome.value is UNDEF else outcome.stack
    raise ErlangError(outcome.value, stack)


class ErlangModule:
    """The functions of built-in ``erlang`` (their names and arities are the Erlang ones)."""

    def __init__(self, node: NodeServices, exposed: Exposed) -> None:
        self._node = node
        self._exposed = exposed
        self._figures = SystemFigures(node)

    # -- nodes -----------------------------------------------------------------------------

    def node(self, arg: Term = _UNSET) -> Term:
        if arg is _UNSET:
            return self._node.node_atom
        if isinstance(arg, Pid | Reference | Port):
            return arg.node
        badarg(ERLANG, "node", [arg])

    def nodes(self, arg: Term = _UNSET) -> list[Atom]:
        if arg is _UNSET:
            return self._node.nodes("visible")
        kinds = arg if isinstance(arg, list) else [arg]
        if not all(isinstance(k, Atom) and k in _NODE_KINDS for k in kinds):
            badarg(ERLANG, "nodes", [arg])
        want = {_NODE_KINDS[k] for k in kinds}
        node = self._node
        visible = set(node.nodes("visible"))
        every = bool(want & {"connected", "known"})
        # connected nodes first, then this node (the BEAM's order)
        found = [n for n in node.nodes("connected")
                 if every or ("visible" in want if n in visible else "hidden" in want)]
        if want & {"this", "known"}:
            found.append(node.node_atom)
        return found

    def monitor_node(self, node: Term, flag: Term) -> bool:
        # The calling process is gone once the call returns, and so would be its monitor.
        if type(flag) is not bool:
            badarg(ERLANG, "monitor_node", [node, flag])
        return True

    # -- processes and names -------------------------------------------------------------

    def whereis(self, name: Term) -> Term:
        if not is_atom(name):
            badarg(ERLANG, "whereis", [name])
        pid = self._node.whereis(name) if isinstance(name, Atom) else None
        return UNDEFINED if pid is None else pid

    def registered(self) -> list[Atom]:
        return self._node.registered()

    def processes(self) -> list[Pid]:
        return [proc.pid for proc in self._node.processes()]

    def is_process_alive(self, pid: Term) -> bool:
        return self._local(pid, "is_process_alive", [pid]) is not None

    def process_info(self, pid: Term, what: Term = _UNSET) -> Term:
        args = [pid] if what is _UNSET else [pid, what]
        wanted = what if isinstance(what, list) else [what]
        if what is not _UNSET and not all(
                isinstance(i, Atom) and i in pinfo.ITEMS for i in wanted):
            badarg(ERLANG, "process_info", args)
        proc = self._local(pid, "process_info", args)
        if proc is None:
            return UNDEFINED
        if what is _UNSET:
            return pinfo.all_items(self._node, proc)
        answer = pinfo.items(self._node, proc, wanted)
        if isinstance(what, list):
            return answer
        if what is pinfo.REGISTERED_NAME and proc.name is None:
            return []  # a single registered_name of an unregistered process: []
        return answer[0]

    def _local(self, pid: Term, function: str, args: list[Term]) -> Process | None:
        """The live local process ``pid``; None if dead; badarg if not a pid of ours."""
        if not isinstance(pid, Pid) or pid.node is not self._node.node_atom:
            badarg(ERLANG, function, args)
        return self._node.process(pid)

    # -- the system -----------------------------------------------------------------------

    def system_info(self, item: Term) -> Term:
        try:
            return self._figures.system_info(item)
        except KeyError:
            badarg(ERLANG, "system_info", [item])

    def memory(self, kind: Term = _UNSET) -> Term:
        figures = dict(self._figures.memory())
        if kind is _UNSET:
            return list(figures.items())
        kinds = kind if isinstance(kind, list) else [kind]
        if not all(isinstance(k, Atom) and k in figures for k in kinds):
            badarg(ERLANG, "memory", [kind])
        if isinstance(kind, list):
            return [(k, figures[k]) for k in kinds]
        return figures[kind]

    def statistics(self, item: Term) -> Term:
        try:
            return self._figures.statistics(item)
        except KeyError:
            badarg(ERLANG, "statistics", [item])

    # -- apply ---------------------------------------------------------------------------

    async def apply(self, fun: Term, args: Term, fargs: Term = _UNSET) -> Term:
        if fargs is not _UNSET:  # apply(Module, Function, Args)
            if not (isinstance(fun, Atom) and isinstance(args, Atom)
                    and isinstance(fargs, list)):
                badarg(ERLANG, "apply", [fun, args, fargs])
            outcome = await rpc_service.apply(self._exposed, fun, args, fargs)
            return raise_outcome(outcome, (ERLANG, APPLY, 3, []))
        if not isinstance(args, list):
            badarg(ERLANG, "apply", [fun, args])
        here: list[Term] = [(ERLANG, APPLY, 2, [])]
        if not isinstance(fun, Export | Fun):
            raise ErlangError((BADFUN, fun), here)
        if fun.arity != len(args):
            raise ErlangError((BADARITY, (fun, args)), here)
        if isinstance(fun, Fun):  # Erlang code, which this node cannot run
            raise ErlangError(UNDEF, [(fun, args, []), *here])
        outcome = await rpc_service.apply(self._exposed, fun.module, fun.function, args)
        return raise_outcome(outcome, here[0])
