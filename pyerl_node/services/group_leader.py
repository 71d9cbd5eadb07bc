"""A group leader for code that runs on BEAM nodes on our behalf (erpc, spawn).

Remote code sends its output to the group leader named in the spawn request as Erlang I/O
protocol requests; a call blocks until it gets an ``io_reply``. Output is logged (logger
``pyerl_node.io``); input is not available (``{error, enotsup}``).
"""

from __future__ import annotations

import logging

from pyerl_node.proto.safe_repr import safe_repr
from pyerl_node.proto.terms import Atom, Pid, Term
from pyerl_node.runtime.genserver import GenServer

log = logging.getLogger("pyerl_node.io")

IO_REQUEST = Atom("io_request")
IO_REPLY = Atom("io_reply")
PUT_CHARS = Atom("put_chars")
REQUESTS = Atom("requests")
OK = Atom("ok")
ENOTSUP = (Atom("error"), Atom("enotsup"))


def _text(chars: Term) -> str:
    if isinstance(chars, bytes):
        return chars.decode("utf-8", "replace")
    if isinstance(chars, list):
        return "".join(_text(c) if not isinstance(c, int) else chr(c) for c in chars)
    return repr(chars)


def answer(request: Term) -> Term:
    """The io_reply value for one I/O request (logging what is written)."""
    if type(request) is not tuple or not request:
        return (Atom("error"), Atom("request"))
    if request[0] is PUT_CHARS:
        if len(request) in (2, 3):
            log.info("%s", _text(request[-1]))
        else:  # {put_chars, Enc, M, F, A}: we cannot apply M:F here, show the raw request
            log.info("%s", safe_repr(request[2:]))
        return OK
    if request[0] is REQUESTS and len(request) == 2 and isinstance(request[1], list):
        result: Term = OK
        for sub in request[1]:
            result = answer(sub)
        return result
    return ENOTSUP


class GroupLeader(GenServer):
    async def handle_info(self, message: Term) -> None:
        if (
            type(message) is tuple
            and len(message) == 4
            and message[0] is IO_REQUEST
            and isinstance(message[1], Pid)
        ):
            await self.process.send(message[1], (IO_REPLY, message[2], answer(message[3])))
