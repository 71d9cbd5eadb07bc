"""Control messages a connection has already decoded, remembered by their bytes.

A process streaming to another repeats the same control tuple before every payload
(SEND_SENDER from one pid to one pid, REG_SEND to one name), and with the atom cache BEAM
even repeats the same header. ETF is prefix-free: the same bytes at a term's offset, read
with the same atom cache references, decode to the same term and end at the same offset. So
a hit skips decoding and checking the control tuple; only the payload is decoded.

Only tuples whose payload may be any term are remembered (see
:func:`pyerl_node.control.payload_builder`). The references are compared by identity:
:class:`pyerl_node.dist_header.AtomCache` hands out one list per repeated header, so the
same list means the same atoms, and a header that redefines slots gives a new list.
"""

from __future__ import annotations

from typing import Final

from pyerl_node.control import PayloadBuilder
from pyerl_node.terms import Atom

_MAX_ENTRIES: Final = 256
_MAX_LENGTHS: Final = 8


class ControlMemo:
    """Control tuple bytes -> (atom cache references, builder of the message)."""

    __slots__ = ("_entries", "_lengths")

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[list[Atom], PayloadBuilder]] = {}
        # the distinct byte lengths of the remembered tuples, few in practice
        self._lengths: list[int] = []

    def lookup(
        self, buf: bytes, offset: int, refs: list[Atom]
    ) -> tuple[PayloadBuilder, int] | None:
        """The builder for the control tuple at ``buf[offset]`` and the offset after it, or
        None if that tuple is not remembered with these references."""
        entries = self._entries
        for length in self._lengths:
            hit = entries.get(buf[offset:offset + length])
            if hit is not None and (hit[0] is refs or not (refs or hit[0])):
                return hit[1], offset + length
        return None

    def remember(self, buf: bytes, offset: int, end: int, refs: list[Atom],
                 build: PayloadBuilder) -> None:
        """Remember the tuple in ``buf[offset:end]``, read with ``refs``."""
        length = end - offset
        if length not in self._lengths:
            if len(self._lengths) >= _MAX_LENGTHS:
                self.clear()
            self._lengths.append(length)
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()
        self._entries[buf[offset:end]] = (refs, build)

    def clear(self) -> None:
        self._entries.clear()
        self._lengths.clear()
