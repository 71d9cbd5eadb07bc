"""What the built-in modules share: Erlang strings, and failures shaped as a BEAM's.

A BEAM BIF given a bad argument fails with ``badarg`` and a one-frame stack whose location
names the module that explains the error (``[{erlang, F, Args, [{error_info,
#{module => erl_erts_errors}}]}]``); a library function whose clauses do not match fails with
``function_clause`` and its arguments in the frame. The helpers here raise exactly those, so
that ``{badrpc, {'EXIT', {badarg, ...}}}`` reads the same from either kind of node.
"""

from __future__ import annotations

from typing import Final, NoReturn

from pyerl_node.proto.terms import Atom, Term
from pyerl_node.services.rpc import ErlangError

UNDEFINED: Final = Atom("undefined")
OK: Final = Atom("ok")
ERROR: Final = Atom("error")
BADARG: Final = Atom("badarg")
FUNCTION_CLAUSE: Final = Atom("function_clause")
ERL_ERTS_ERRORS: Final = Atom("erl_erts_errors")
ERL_KERNEL_ERRORS: Final = Atom("erl_kernel_errors")
_ERROR_INFO: Final = Atom("error_info")
_MODULE: Final = Atom("module")


def charlist(text: str) -> list[int]:
    """An Erlang string (a list of code points), as ``"25"`` is in Erlang."""
    return [ord(ch) for ch in text]


def text_of(term: Term) -> str | None:
    """The text of an Erlang string, binary or atom; None for any other term."""
    if isinstance(term, Atom):
        return term.name
    if isinstance(term, bytes):
        return term.decode("utf-8", "replace")
    if isinstance(term, list) and all(type(c) is int and 0 <= c < 0x110000 for c in term):
        return "".join(chr(c) for c in term)
    return None


def badarg(module: Atom, function: str, args: list[Term],
           explained_by: Atom = ERL_ERTS_ERRORS) -> NoReturn:
    """Fail as a BIF does with a bad argument."""
    location = [(_ERROR_INFO, {_MODULE: explained_by})]
    raise ErlangError(BADARG, [(module, Atom(function), args, location)])


def function_clause(module: Atom, function: str, args: list[Term]) -> NoReturn:
    """Fail as a library function does when no clause matches its arguments."""
    raise ErlangError(FUNCTION_CLAUSE, [(module, Atom(function), args, [])])
