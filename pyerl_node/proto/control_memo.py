"""Control messages a connection has already decoded, remembered by their bytes.

A process streaming to another repeats the same control tuple before every payload
(SEND_SENDER from one pid to one pid, REG_SEND to one name), and with the atom cache BEAM
even repeats the same header. ETF is prefix-free: the same bytes at a term's offset, read
with the same atom cache references, decode to the same term and end at the same offset. So
a remembered tuple is not decoded or checked again; only the payload is decoded.

The same holds for the leading elements of a tuple: a gen call's MONITOR_P and DEMONITOR_P
differ from the previous call's only in their last element, the monitor reference, so their
head (everything before it) is remembered too (:func:`head_end` finds where it stops).

A stream of sends is decoded in one call (:func:`decode_sends`, compiled when the core is):
the packets whose header and control message are remembered, one after the other, without a
Python call per packet but the payload's builder.

The references are compared by identity: :class:`pyerl_node.proto.dist_header.AtomCache` hands out
one list per repeated header, so the same list means the same atoms, and a header that
redefines slots gives a new list.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any, Final, Generic, TypeVar

from pyerl_node.proto import etf
from pyerl_node.proto.dist_header import DIST_HEADER
from pyerl_node.proto.errors import DecodeError
from pyerl_node.proto.etf import COMPRESSED, SMALL_TUPLE, VERSION, decode_from
from pyerl_node.proto.native import load as load_native
from pyerl_node.proto.terms import Atom, Term

_MAX_ENTRIES: Final = 256
_MAX_LENGTHS: Final = 8

V = TypeVar("V")


class PrefixMemo(Generic[V]):
    """Values remembered by the bytes they were decoded from (of a few distinct lengths)
    and the atom cache references those bytes were read with."""

    __slots__ = ("entries", "lengths")

    def __init__(self) -> None:
        #: the remembered bytes: the references they were read with, and the value
        self.entries: dict[bytes, tuple[list[Atom], V]] = {}
        #: the distinct byte lengths of the remembered keys, few in practice
        self.lengths: list[int] = []

    def lookup(self, buf: bytes, offset: int, refs: list[Atom]) -> tuple[V, int] | None:
        """The value remembered for the bytes at ``buf[offset]`` and the offset after them,
        or None if nothing is remembered for them with these references."""
        entries = self.entries
        for length in self.lengths:
            hit = entries.get(buf[offset:offset + length])
            if hit is not None and (hit[0] is refs or not (refs or hit[0])):
                return hit[1], offset + length
        return None

    def remember(self, buf: bytes, offset: int, end: int, refs: list[Atom], value: V) -> None:
        """Remember ``value`` for ``buf[offset:end]``, read with ``refs``."""
        length = end - offset
        if length not in self.lengths:
            if len(self.lengths) >= _MAX_LENGTHS:
                self.clear()
            self.lengths.append(length)
        if len(self.entries) >= _MAX_ENTRIES:
            self.entries.clear()
        self.entries[buf[offset:end]] = (refs, value)

    def clear(self) -> None:
        self.entries.clear()
        self.lengths.clear()


def head_end(buf: bytes, offset: int, refs: list[Atom]) -> int | None:
    """Where the last element of the tuple at ``buf[offset]`` starts, None if it is not a
    small tuple. The tuple was decoded already: its elements are known to be well formed."""
    if buf[offset] != SMALL_TUPLE:
        return None
    pos = offset + 2
    for _ in range(buf[offset + 1] - 1):
        _, pos = decode_from(buf, pos, atom_cache=refs)
    return pos


_U32 = struct.Struct(">I").unpack_from
_NO_REFS: Final[list[Atom]] = []  # (what a header without references stands for; not mutated)


def decode_sends(buf: bytes, pos: int, events: list[Any],
                 headers: Mapping[bytes, list[Atom]],
                 entries: Mapping[bytes, tuple[list[Atom], Callable[[Term], Any]]],
                 lengths: list[int], limit: int) -> int:
    """Decode the run of packets from ``buf[pos]`` that a stream of sends is made of, and
    return the offset of the first packet that is not one of them.

    Such a packet is whole, ``limit`` bytes long at most, and holds a distribution header
    (131, 68) whose atom cache part is one of ``headers`` (or has no references), then a
    control message remembered in ``entries`` (a :class:`PrefixMemo` of payload builders
    and its ``lengths``) for the same references, then an uncompressed payload that ends
    the packet. For each one, the builder's message for the payload is appended to
    ``events``; ticks on the way are skipped. What comes next, a packet whose payload does
    not decode too, is for the caller to decode packet by packet (and to refuse, if it is
    wrong). The compiled core stands in for this function when it runs.
    """
    total = len(buf)
    while total - pos >= 4:
        (length,) = _U32(buf, pos)
        if length == 0:
            pos += 4
            continue
        start, end = pos + 4, pos + 4 + length
        if length > limit or length < 4 or end > total:
            break
        if buf[start] != VERSION or buf[start + 1] != DIST_HEADER:
            break
        count = buf[start + 2]
        if count:
            at = start + 4 + count // 2 + count
            refs = headers.get(buf[start + 2:at]) if at <= end else None
            if refs is None:
                break
        else:
            refs, at = _NO_REFS, start + 3
        for size in lengths:
            hit = entries.get(buf[at:at + size])
            if hit is not None and (hit[0] is refs or not (refs or hit[0])):
                after = at + size
                break
        else:
            break
        if after >= end or buf[after] == COMPRESSED:
            break
        try:
            payload, after = decode_from(buf, after, atom_cache=refs,
                                         max_decompressed_size=limit)
        except DecodeError:
            break  # (decoded again packet by packet: that raises)
        if after != end:
            break
        events.append(hit[1](payload))
        pos = end
    return pos


#: The pure-Python function, also while the compiled one stands in for it (tests compare).
PURE_DECODE_SENDS: Final = decode_sends
if etf.COMPILED:
    decode_sends = load_native("_cetf").decode_sends  # type: ignore[union-attr]
