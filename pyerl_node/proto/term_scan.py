"""How many bytes of an encoded message are binary contents, read off its first bytes
without decoding anything.

Decoding copies a binary at memory speed, while every other term costs a Python object: a
16 MiB binary decodes in a few milliseconds, 16 MiB of small tuples in a quarter of a second
with the compiled codec. The runtime weighs a big message by what its decoding costs
(docs/guide/limits.md) and reads that here, from the first fragment of a fragmented message:
the terms are walked in the order they are encoded, each container's elements right after
its header, and the body of a ``BINARY_EXT`` or ``BIT_BINARY_EXT`` is jumped over and
counted. The walk ends at the end of the bytes it is given (a binary may reach past it: that
is the usual case, a big binary near the start of a message), after ``budget`` terms, or at
a tag it does not skip (a compressed term, a bad byte: the decoder will say what is wrong).

Bytes that a binary's header claims are never parsed as terms by the decoder either, so a
peer cannot make a message look cheaper than its decoding is; the caller bounds the count by
the message's real size. The walk reads term headers the way the decoder does, so when the
bytes up to the binary that reaches past ``end`` decode, they decode to the same terms,
whatever binary follows (what the connection relies on to join a big binary straight out
of its fragments).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, NamedTuple

from pyerl_node.proto.etf import (
    ATOM,
    ATOM_CACHE_REF,
    ATOM_UTF8,
    BINARY,
    BIT_BINARY,
    EXPORT,
    FLOAT,
    INTEGER,
    LARGE_BIG,
    LARGE_TUPLE,
    LIST,
    MAP,
    NEW_FLOAT,
    NEW_FUN,
    NEW_PID,
    NEW_PORT,
    NEW_REFERENCE,
    NEWER_REFERENCE,
    NIL,
    PID,
    PORT,
    REFERENCE,
    SMALL_ATOM,
    SMALL_ATOM_UTF8,
    SMALL_BIG,
    SMALL_INTEGER,
    SMALL_TUPLE,
    STRING,
    V4_PORT,
)

#: Terms walked at most: enough to pass a message's control tuple and reach a payload's
#: binary, little enough (tens of microseconds) to spend on every big message.
BUDGET: Final = 256

_U16: Final[Callable[[bytes, int], tuple[int]]] = struct.Struct(">H").unpack_from
_U32: Final[Callable[[bytes, int], tuple[int]]] = struct.Struct(">I").unpack_from

# Tags followed by a fixed number of bytes (containers' headers: their elements follow).
_FIXED: Final = {
    SMALL_INTEGER: 1, INTEGER: 4, NEW_FLOAT: 8, FLOAT: 31, NIL: 0, ATOM_CACHE_REF: 1,
    SMALL_TUPLE: 1, LARGE_TUPLE: 4, LIST: 4, MAP: 4, EXPORT: 0,
}
# Tags followed by a length of 1, 2 or 4 bytes and that many bytes.
_SIZED: Final = {SMALL_ATOM_UTF8: 1, SMALL_ATOM: 1, ATOM_UTF8: 2, ATOM: 2, STRING: 2}
# Identifiers: a node atom, then this many bytes.
_AFTER_NODE: Final = {PID: 9, NEW_PID: 12, PORT: 5, NEW_PORT: 8, V4_PORT: 12}


def _atom_end(buf: bytes, pos: int) -> int:
    """The offset after the atom at ``buf[pos]``, or -1 if it is not an atom."""
    tag = buf[pos]
    if tag == ATOM_CACHE_REF:
        return pos + 2
    if tag in (SMALL_ATOM_UTF8, SMALL_ATOM):
        return pos + 2 + buf[pos + 1]
    if tag in (ATOM_UTF8, ATOM):
        return pos + 3 + _U16(buf, pos + 1)[0]
    return -1


class Binaries(NamedTuple):
    """What :func:`scan_binaries` found."""

    #: the total length of the binaries
    size: int
    #: the offset of the tag of the ``BINARY_EXT`` whose body reaches past the bytes given
    #: (where the walk ended), -1 if none does
    last_at: int
    #: that binary's length
    last_size: int


def scan_binaries(buf: bytes, pos: int, end: int, budget: int = BUDGET) -> Binaries:
    """The binaries whose headers lie among the first ``budget`` terms encoded in
    ``buf[pos:end]``: their total length, and the one whose body reaches past ``end``."""
    found = 0
    at = last = -1
    try:
        while pos < end and budget > 0:
            budget -= 1
            tag = buf[pos]
            fixed = _FIXED.get(tag)
            if fixed is not None:
                pos += 1 + fixed
            elif tag == BINARY:
                if pos + 5 > end:
                    break  # (its length lies past the bytes given)
                size = _U32(buf, pos + 1)[0]
                found += size
                at, last = pos, size
                pos += 5 + size
            elif tag == BIT_BINARY:
                if pos + 6 > end:
                    break
                size = _U32(buf, pos + 1)[0]
                found += size
                pos += 6 + size
            elif tag in _SIZED:
                width = _SIZED[tag]
                size = buf[pos + 1] if width == 1 else _U16(buf, pos + 1)[0]
                pos += 1 + width + size
            elif tag in _AFTER_NODE:
                node_end = _atom_end(buf, pos + 1)
                if node_end < 0:
                    break
                pos = node_end + _AFTER_NODE[tag]
            elif tag in (NEWER_REFERENCE, NEW_REFERENCE):
                words = _U16(buf, pos + 1)[0]
                node_end = _atom_end(buf, pos + 3)
                if node_end < 0:
                    break
                pos = node_end + (4 if tag == NEWER_REFERENCE else 1) + 4 * words
            elif tag == REFERENCE:
                node_end = _atom_end(buf, pos + 1)
                if node_end < 0:
                    break
                pos = node_end + 5
            elif tag == SMALL_BIG:
                pos += 3 + buf[pos + 1]
            elif tag == LARGE_BIG:
                pos += 6 + _U32(buf, pos + 1)[0]
            elif tag == NEW_FUN:  # its size counts itself, not the tag
                pos += 1 + _U32(buf, pos + 1)[0]
            else:
                break
    except (IndexError, struct.error):
        pass  # a header cut by ``buf``'s end: what was found so far
    if pos > end and at >= 0 and pos == at + 5 + last:  # (the walk ended in this binary)
        return Binaries(found, at, last)
    return Binaries(found, -1, 0)
