"""Control messages a connection has already decoded, remembered by their bytes.

A process streaming to another repeats the same control tuple before every payload
(SEND_SENDER from one pid to one pid, REG_SEND to one name), and with the atom cache BEAM
even repeats the same header. ETF is prefix-free: the same bytes at a term's offset, read
with the same atom cache references, decode to the same term and end at the same offset. So
a remembered tuple is not decoded or checked again; only the payload is decoded.

The same holds for the leading elements of a tuple: a gen call's MONITOR_P and DEMONITOR_P
differ from the previous call's only in their last element, the monitor reference, so their
head (everything before it) is remembered too (:func:`head_end` finds where it stops).

The references are compared by identity: :class:`pyerl_node.proto.dist_header.AtomCache` hands out
one list per repeated header, so the same list means the same atoms, and a header that
redefines slots gives a new list.
"""

from __future__ import annotations

from typing import Final, Generic, TypeVar

from pyerl_node.proto.etf import SMALL_TUPLE, decode_from
from pyerl_node.proto.terms import Atom

_MAX_ENTRIES: Final = 256
_MAX_LENGTHS: Final = 8

V = TypeVar("V")


class PrefixMemo(Generic[V]):
    """Values remembered by the bytes they were decoded from (of a few distinct lengths)
    and the atom cache references those bytes were read with."""

    __slots__ = ("_entries", "_lengths")

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[list[Atom], V]] = {}
        # the distinct byte lengths of the remembered keys, few in practice
        self._lengths: list[int] = []

    def lookup(self, buf: bytes, offset: int, refs: list[Atom]) -> tuple[V, int] | None:
        """The value remembered for the bytes at ``buf[offset]`` and the offset after them,
        or None if nothing is remembered for them with these references."""
        entries = self._entries
        for length in self._lengths:
            hit = entries.get(buf[offset:offset + length])
            if hit is not None and (hit[0] is refs or not (refs or hit[0])):
                return hit[1], offset + length
        return None

    def remember(self, buf: bytes, offset: int, end: int, refs: list[Atom], value: V) -> None:
        """Remember ``value`` for ``buf[offset:end]``, read with ``refs``."""
        length = end - offset
        if length not in self._lengths:
            if len(self._lengths) >= _MAX_LENGTHS:
                self.clear()
            self._lengths.append(length)
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()
        self._entries[buf[offset:end]] = (refs, value)

    def clear(self) -> None:
        self._entries.clear()
        self._lengths.clear()


def head_end(buf: bytes, offset: int, refs: list[Atom]) -> int | None:
    """Where the last element of the tuple at ``buf[offset]`` starts, None if it is not a
    small tuple. The tuple was decoded already: its elements are known to be well formed."""
    if buf[offset] != SMALL_TUPLE:
        return None
    pos = offset + 2
    for _ in range(buf[offset + 1] - 1):
        _, pos = decode_from(buf, pos, atom_cache=refs)
    return pos
