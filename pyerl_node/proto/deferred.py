"""A received message whose payload is left compressed, for the runtime to inflate off the loop.

A compressed term (tag 80) declares the size it inflates to; a small packet may hold one of
up to the frame limit (1000 times its size with zeros). The
:class:`~pyerl_node.proto.connection.Connection` decodes the control message and the
compressed bytes' header, and, when the declared size passes its ``inline_inflate_limit``,
hands out a :class:`DeferredMessage` instead of inflating it: the runtime calls
:meth:`DeferredMessage.resolve` in a worker thread and counts the message by its inflated
size. ``resolve`` is pure (bytes in, a control message out), with every check the inline
decoding makes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyerl_node.proto.control import ControlMessage
from pyerl_node.proto.errors import RemoteProtocolError, without_frames
from pyerl_node.proto.etf import decode_from
from pyerl_node.proto.terms import Atom, Term

#: What makes the control message of its payload (a memoized builder, or the generic one).
Builder = Callable[[Term], ControlMessage]


class DeferredMessage:
    """A control message whose payload, a compressed term, is not inflated yet.

    ``size`` is the size the payload declares it inflates to (at most the frame limit).
    """

    __slots__ = ("_build", "_data", "_limit", "_refs", "size")

    def __init__(self, build: Builder, data: bytes, refs: Sequence[Atom | None], limit: int,
                 size: int) -> None:
        self._build = build
        self._data = data
        self._refs = refs
        self._limit = limit
        self.size = size

    def resolve(self) -> ControlMessage:
        """Inflate and decode the payload; return the control message (raises
        :class:`~pyerl_node.proto.errors.RemoteProtocolError` as the inline decoding would)."""
        data = self._data
        payload: Term = None
        try:
            payload, after = decode_from(data, 0, atom_cache=self._refs,
                                         max_decompressed_size=self._limit)
            if after != len(data):
                raise end_error(after, len(data))
            return self._build(payload)
        except RemoteProtocolError as exc:
            error = exc
        # Raised here, with nothing of the decode (see without_frames), so that what it built
        # is freed in this worker thread, not on the event loop.
        payload = None
        raise without_frames(error)


def end_error(offset: int, end: int) -> RemoteProtocolError:
    """The error for terms of a packet that end at ``offset`` instead of its ``end``."""
    if offset > end:
        return RemoteProtocolError(f"the terms run {offset - end} bytes past the packet's end")
    return RemoteProtocolError(f"{end - offset} bytes after the payload")
