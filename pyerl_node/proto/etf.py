"""The External Term Format: Erlang terms <-> bytes (docs/protocol/distribution.md §5.5, erts
``erl_ext_dist``).

Term mapping is docs/design.md's (see :mod:`pyerl_node.proto.terms`). The public API:

* :func:`encode` — a whole external term (version byte 131, optionally zlib-compressed, tag 80);
* :func:`encode_into` — one term appended to a ``bytearray`` without the version byte (how
  distribution frames are built);
* :func:`decode` — a whole external term; trailing bytes are an error;
* :func:`decode_from` — one term at an offset (no version byte), resolving ``ATOM_CACHE_REF``
  through the atom cache of the current distribution header.

How it works. Both directions are *iterative*: the decoder keeps an explicit stack of the
containers it is filling and the encoder a stack of iterators, so a term nested far deeper than
Python's recursion limit (a left-nested iolist, say) costs memory, not a ``RecursionError``.
Nesting beyond ``max_depth`` is an error; the default stays well below the depth at which
CPython's own ``hash()`` of a nested tuple overflows the C stack, so every decoded term can be
hashed and used safely. The hot tags are tested first in one ``if`` chain inside the loop (no
call per term); rare tags go through a table of small functions indexed by tag. Decoded atoms
(and pids, which recur) are interned in bounded tables keyed by their encoded bytes; pids and
references are built by filling their slots, bypassing the slower frozen-dataclass
``__init__``. Binaries are sliced out of the input (one copy); :func:`encode` joins big
binaries into its result instead of copying them into its buffer first (one copy).

The encoder writes what OTP 26+ ``term_to_binary/1`` writes: UTF-8 atoms, ``NEW_FLOAT``,
``NEW_PID``, ``NEWER_REFERENCE``, ``V4_PORT`` (OTP 28 uses it for every port), ``STRING_EXT``
for proper lists of 0..255 up to 65535 long, small/large bignums. Map entries go out in the
dict's order. OTP cannot be imitated there: since OTP 26 a small map (<= 32 keys) stores its
atom keys in atom-table order, i.e. the order in which *that node* first saw those atoms
(``#{zzz => 1, aaa => 2}`` encodes zzz first when zzz is the older atom), and other keys in
term order. The receiver does not care about the order (``binary_to_term`` re-sorts), and
keeping the dict's order makes ``encode(decode(b)) == b`` hold for every map OTP sends.

Hostile input (the bounds are in :mod:`pyerl_node.proto.limits`): every count the input
claims is checked against the bytes that remain before anything is allocated for it (elements
are appended as they are decoded, never preallocated). A compressed term is inflated with an
output bound, ``max_decompressed_size`` (the caller's frame limit), and must inflate to exactly
the size it declares. Nesting is bounded by ``max_depth``. Maps resist hash flooding: keys
whose hashes are equal cost the dict a comparison per pair (50,000 integer keys ``K * (2**61 -
1)`` would take half a minute), so a map of ``HASH_CHECKED_KEYS`` keys or more has its key
hashes counted first (one C-speed pass, no dict is built) and is refused when its groups of
equal hashes would cost more than ``MAX_COLLISION_COST`` comparisons per key; a smaller map
costs at most its size in comparisons per key whatever its keys. A fresh atom beyond the live
atom limit is :class:`~pyerl_node.proto.errors.AtomTableFull`. Any violation is a
:class:`~pyerl_node.proto.errors.DecodeError` carrying the offset and the tag; nothing else
escapes (no RecursionError from Python's own comparison of deep keys either). The decoder's
caches of atoms and pids are bounded and emptied when full, so they pin few atoms. Values that
have no external form raise :class:`~pyerl_node.proto.errors.EncodeError` naming the type.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Final

from pyerl_node.proto.errors import AtomTableFull, DecodeError, EncodeError
from pyerl_node.proto.limits import HASH_CHECKED_KEYS, MAX_COLLISION_COST, MAX_DEPTH, MAX_FRAME
from pyerl_node.proto.native import load as load_native
from pyerl_node.proto.safe_repr import safe_repr
from pyerl_node.proto.terms import (
    Atom,
    BitBinary,
    ExactKey,
    Export,
    FrozenList,
    FrozenMap,
    Fun,
    ImproperList,
    Pid,
    Port,
    Reference,
    Term,
    freeze,
)

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED_SIZE",
    "DEFAULT_MAX_DEPTH",
    "VERSION",
    "decode",
    "decode_from",
    "encode",
    "encode_into",
]

VERSION: Final = 131
DEFAULT_MAX_DEPTH: Final = MAX_DEPTH
DEFAULT_MAX_DECOMPRESSED_SIZE: Final = MAX_FRAME

# Tags (erl_ext_dist). Names as in OTP, minus the _EXT suffix.
NEW_FLOAT: Final = 70
BIT_BINARY: Final = 77
COMPRESSED: Final = 80
_INFLATE_STEP: Final = 4 * 1024 * 1024  # output of one zlib call on a big compressed term
ATOM_CACHE_REF: Final = 82
NEW_PID: Final = 88
NEW_PORT: Final = 89
NEWER_REFERENCE: Final = 90
SMALL_INTEGER: Final = 97
INTEGER: Final = 98
FLOAT: Final = 99
ATOM: Final = 100
REFERENCE: Final = 101
PORT: Final = 102
PID: Final = 103
SMALL_TUPLE: Final = 104
LARGE_TUPLE: Final = 105
NIL: Final = 106
STRING: Final = 107
LIST: Final = 108
BINARY: Final = 109
SMALL_BIG: Final = 110
LARGE_BIG: Final = 111
NEW_FUN: Final = 112
EXPORT: Final = 113
NEW_REFERENCE: Final = 114
SMALL_ATOM: Final = 115
MAP: Final = 116
FUN: Final = 117
ATOM_UTF8: Final = 118
SMALL_ATOM_UTF8: Final = 119
V4_PORT: Final = 120
LOCAL: Final = 121

MAX_ATOM_CHARS: Final = 255
# Bound on the decoded-atom and encoded-atom caches, which are emptied when full: they hold
# their atoms alive, so a peer sending endless fresh atoms must not fill them for good.
_ATOM_CACHE_MAX: Final = 1 << 14

_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_I32 = struct.Struct(">i").unpack_from
_F64 = struct.Struct(">d").unpack_from
_U32_U32 = struct.Struct(">II").unpack_from
_U32_U32_U32 = struct.Struct(">III").unpack_from
_U64_U32 = struct.Struct(">QI").unpack_from
# Reference id words (and creation then id words), by number of words - 1.
_WORDS = tuple(struct.Struct(f">{n}I").unpack_from for n in range(1, 6))
_CREATION_WORDS = tuple(struct.Struct(f">I{n}I").unpack_from for n in range(1, 6))
_PACK_CREATION_WORDS = tuple(struct.Struct(f">I{n}I").pack for n in range(1, 6))
_PACK_U16 = struct.Struct(">H").pack
_PACK_U32 = struct.Struct(">I").pack
_PACK_TAG_U16 = struct.Struct(">BH").pack
_PACK_TAG_U32 = struct.Struct(">BI").pack
_PACK_TAG_I32 = struct.Struct(">Bi").pack
_PACK_TAG_F64 = struct.Struct(">Bd").pack
_PACK_U32_U32_U32 = struct.Struct(">III").pack

# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------

_MISS: Final = object()
_AS_TERM: Final[dict[str, Term]] = {"true": True, "false": False, "nil": None}
# (held here, so that they stay alive and are never made anew)
_SPECIAL_ATOMS: Final[dict[Term, Atom]] = {term: Atom(name) for name, term in _AS_TERM.items()}

# Atom caches keyed by the atom's bytes *with* their length prefix (which is why a slice cut
# short by the end of the input can never hit): -> the decoded term (an Atom, or
# True/False/None). One table per atom tag: the same bytes read with a 1-byte and with a
# 2-byte length are different atoms (or a complete one and a truncated one). And one for
# atoms that must stay atoms (node names, modules), of SMALL_ATOM_UTF8 only.
_UTF8_ATOMS: dict[bytes, Term] = {}
_ATOM_TABLES: Final[dict[int, dict[bytes, Term]]] = {
    SMALL_ATOM_UTF8: _UTF8_ATOMS, ATOM_UTF8: {}, SMALL_ATOM: {}, ATOM: {}}
_NODE_ATOMS: dict[bytes, Atom] = {}
# Pids recur (the callers of a server, linked and monitored processes): the encoded bytes of
# recently seen pids -> the Pid, emptied when full.
_PIDS: dict[bytes, Pid] = {}
_PID_CACHE_MAX: Final = 1 << 14

# Container kinds on the decoder's stack. _TOP is the one-slot container that receives the
# result, so handing a value up never needs a special case.
_TOP: Final = 0
_TUPLE: Final = 1
_LIST: Final = 2
_MAP: Final = 3
_FUN: Final = 4

_AtomCache = Sequence[Atom | None] | None
_Leaf = Callable[[bytes, int, _AtomCache], tuple[Term, int]]

# Pids and references are decoded by the thousand; filling their slots directly skips the
# frozen-dataclass __init__ (which costs three times as much). They have no __post_init__.
_new = object.__new__


def _slot_setters(cls: type, *names: str) -> list[Callable[[object, Term], None]]:
    return [vars(cls)[name].__set__ for name in names]


_set_pid_node, _set_pid_id, _set_pid_serial, _set_pid_creation = _slot_setters(
    Pid, "node", "id", "serial", "creation")
_set_ref_node, _set_ref_creation, _set_ref_ids = _slot_setters(
    Reference, "node", "creation", "ids")


def decode(
    data: bytes | bytearray | memoryview,
    *,
    max_decompressed_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Term:
    """Decode one complete external term (``131`` first, compressed or not, nothing after)."""
    buf = data if type(data) is bytes else bytes(data)
    if len(buf) < 2 or buf[0] != VERSION:
        if not buf:
            raise DecodeError("empty input, expected version byte 131", offset=0)
        if buf[0] != VERSION:
            raise DecodeError(f"expected version byte 131, got {buf[0]}", offset=0, tag=buf[0])
        raise _truncated(1, -1)
    if buf[1] == COMPRESSED:
        term, end = _decode_compressed(buf, 1, None, max_depth, max_decompressed_size)
    else:
        term, end = _decode(buf, 1, None, max_depth)
    if end != len(buf):
        raise DecodeError(f"{len(buf) - end} trailing bytes after the term", offset=end)
    return term


def decode_from(
    buf: bytes | bytearray | memoryview,
    offset: int = 0,
    *,
    atom_cache: Sequence[Atom | None] | None = None,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_decompressed_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE,
) -> tuple[Term, int]:
    """Decode the one term whose tag is at ``buf[offset]``; return it and the offset after it.

    ``ATOM_CACHE_REF`` (82) resolves through ``atom_cache`` (the atoms of the distribution
    header of the current frame). A non-``bytes`` buffer is copied once first.
    """
    data = buf if type(buf) is bytes else bytes(buf)
    if not 0 <= offset < len(data):
        raise DecodeError("no term at this offset (input too short)", offset=offset)
    if data[offset] == COMPRESSED:
        return _decode_compressed(data, offset, atom_cache, max_depth, max_decompressed_size)
    return _decode(data, offset, atom_cache, max_depth)


def _decode_compressed(
    buf: bytes, pos: int, cache: _AtomCache, max_depth: int, max_size: int
) -> tuple[Term, int]:
    inner, end = _inflate(buf, pos, max_size)
    term, inner_end = _decode(inner, 0, cache, max_depth)
    if inner_end != len(inner):
        raise DecodeError(f"{len(inner) - inner_end} trailing bytes inside the compressed term",
                          offset=pos, tag=COMPRESSED)
    return term, end


def _inflate(buf: bytes, pos: int, max_size: int) -> tuple[bytes, int]:
    """The inflated term of the compressed term at ``buf[pos]`` and the offset after it."""
    # 80, UncompressedSize:32, zlib stream of the term (tag first, no version byte).
    if pos + 5 > len(buf):
        raise DecodeError("truncated compressed term header", offset=pos, tag=COMPRESSED)
    (size,) = _U32(buf, pos + 1)
    if size > max_size:
        raise DecodeError(
            f"compressed term claims {size} bytes, limit is {max_size}", offset=pos, tag=COMPRESSED
        )
    inflater = zlib.decompressobj()
    try:
        # max_length bounds the output: a zlib bomb stops at size + 1 bytes.
        inner = inflater.decompress(memoryview(buf)[pos + 5 :], min(size + 1, _INFLATE_STEP))
        if len(inner) == _INFLATE_STEP and not inflater.eof:
            inner = _inflate_rest(inflater, inner, size + 1)
    except zlib.error as exc:
        raise DecodeError(f"bad zlib data: {exc}", offset=pos, tag=COMPRESSED) from None
    if len(inner) != size or not inflater.eof:
        what = "more" if len(inner) > size else "less"
        raise DecodeError(
            f"compressed term inflates to {what} than the {size} bytes it claims",
            offset=pos,
            tag=COMPRESSED,
        )
    if size == 0:
        raise DecodeError("compressed term is empty", offset=pos, tag=COMPRESSED)
    return inner, len(buf) - len(inflater.unused_data)


def _inflate_rest(inflater: zlib._Decompress, first: bytes, most: int) -> bytes:
    """The rest of a big compressed term, after its ``first`` step, up to ``most`` bytes in
    all. In steps: zlib lets other threads run while it inflates but not while it builds
    its output, so one call for a big term would hold the event loop for its whole output."""
    pieces, got = [first], len(first)
    while not inflater.eof and got < most:
        piece = inflater.decompress(inflater.unconsumed_tail, min(most - got, _INFLATE_STEP))
        if not piece:
            break
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)


def _too_many(count: int, what: str, pos: int, tag: int) -> DecodeError:
    return DecodeError(f"{what} claims {count} elements, more than the bytes left", offset=pos,
                       tag=tag)


def _decode(buf: bytes, pos: int, cache: _AtomCache, max_depth: int) -> tuple[Term, int]:
    """The decoder loop: one term from ``buf[pos]`` on, containers on an explicit stack.

    ``pos`` only moves past a term once all of it has been checked, so on any error it is
    the offset of the term at fault.
    """
    blen = len(buf)
    stack: list[tuple[int, list[Term], int]] = []
    # The container being filled: its kind, the elements so far, how many are still to come.
    kind = _TOP
    items: list[Term] = []
    left = 1
    tag = -1
    val: Term
    try:
        while True:
            tag = buf[pos]
            if tag == SMALL_INTEGER:
                val = buf[pos + 1]
                pos += 2
            elif tag == SMALL_ATOM_UTF8:
                end = pos + 2 + buf[pos + 1]
                val = _UTF8_ATOMS.get(buf[pos + 1 : end], _MISS)
                if val is _MISS:
                    val = _new_atom(buf, pos)
                pos = end
            elif tag == ATOM_CACHE_REF:
                # How atoms arrive over distribution: a slot of the frame's atom cache.
                index = buf[pos + 1]
                atom = cache[index] if cache is not None and index < len(cache) else None
                if atom is None:
                    raise _cache_miss(cache, index, pos)
                val = _AS_TERM.get(atom.name, atom)
                pos += 2
            elif tag == SMALL_TUPLE:
                n = buf[pos + 1]
                if n == 0:
                    val = ()
                    pos += 2
                else:
                    # (At most 255 elements: no need to check the claim against the input.)
                    if len(stack) >= max_depth:
                        raise _too_deep(max_depth, pos, tag)
                    stack.append((kind, items, left))
                    kind, items, left = _TUPLE, [], n
                    pos += 2
                    continue
            elif tag == BINARY:
                end = pos + 5 + _U32(buf, pos + 1)[0]
                if end > blen:
                    raise _truncated(pos, tag)
                val = buf[pos + 5 : end]
                pos = end
            elif tag == LIST:
                (n,) = _U32(buf, pos + 1)
                # n elements and a tail, at least one byte each.
                if n >= blen - pos - 5:
                    raise _too_many(n, "list", pos, tag)
                if kind == _LIST and left == 1:
                    # The tail of a list is a list ([1 | [2 | T]], which OTP never writes
                    # but accepts): continue this one, so a chain of them costs no depth
                    # and no repeated copying.
                    left = n + 1
                    pos += 5
                    continue
                if len(stack) >= max_depth:
                    raise _too_deep(max_depth, pos, tag)
                stack.append((kind, items, left))
                kind, items, left = _LIST, [], n + 1
                pos += 5
                continue
            elif tag == NIL:
                val = []
                pos += 1
            elif tag == NEW_PID:
                # A pid seen before (see _pid): one slice and one lookup.
                val = None
                if buf[pos + 1] == SMALL_ATOM_UTF8:
                    end = pos + 15 + buf[pos + 2]
                    val = _PIDS.get(buf[pos:end])
                if val is None:
                    val, end = _pid(buf, pos, cache)
                pos = end
            elif tag == NEWER_REFERENCE:
                val, pos = _reference(buf, pos, cache)
            elif tag == INTEGER:
                (val,) = _I32(buf, pos + 1)
                pos += 5
            elif tag == MAP:
                (n,) = _U32(buf, pos + 1)
                if n == 0:
                    val = {}
                    pos += 5
                else:
                    if 2 * n > blen - pos - 5:
                        raise _too_many(n, "map", pos, tag)
                    if len(stack) >= max_depth:
                        raise _too_deep(max_depth, pos, tag)
                    stack.append((kind, items, left))
                    kind, items, left = _MAP, [], 2 * n
                    pos += 5
                    continue
            elif tag == STRING:
                end = pos + 3 + _U16(buf, pos + 1)[0]
                if end > blen:
                    raise _truncated(pos, tag)
                val = list(buf[pos + 3 : end])
                pos = end
            elif tag == NEW_FLOAT:
                (val,) = _F64(buf, pos + 1)
                if val - val != 0.0:  # inf or nan: the BEAM has neither
                    raise DecodeError("float is not finite", offset=pos, tag=tag)
                pos += 9
            elif tag == LARGE_TUPLE:
                (n,) = _U32(buf, pos + 1)
                if n == 0:
                    val = ()
                    pos += 5
                else:
                    if n > blen - pos - 5:
                        raise _too_many(n, "tuple", pos, tag)
                    if len(stack) >= max_depth:
                        raise _too_deep(max_depth, pos, tag)
                    stack.append((kind, items, left))
                    kind, items, left = _TUPLE, [], n
                    pos += 5
                    continue
            elif tag == NEW_FUN:
                fields, nfree, end = _fun_fields(buf, pos, cache)
                if nfree == 0:
                    val = _make_fun(fields, [], buf, pos, end)
                    pos = end
                else:
                    if nfree > blen - end:
                        raise _too_many(nfree, "fun environment", pos, tag)
                    if len(stack) >= max_depth:
                        raise _too_deep(max_depth, pos, tag)
                    stack.append((kind, items, left))
                    # The fun's fields and offset ride in front of its free variables.
                    kind, items, left = _FUN, [(fields, pos)], nfree
                    pos = end
                    continue
            else:
                leaf = _LEAVES.get(tag)
                if leaf is None:
                    raise _unknown_tag(tag, pos)
                val, pos = leaf(buf, pos, cache)
            # Hand the finished value to its container; complete containers in turn.
            while True:
                items.append(val)
                left -= 1
                if left:
                    break
                if kind == _TUPLE:
                    val = tuple(items)
                elif kind == _LIST:
                    val = _finish_list(items)
                elif kind == _TOP:
                    return val, pos
                elif kind == _MAP:
                    val = _finish_map(items, pos)
                else:
                    fields, start = items[0]
                    val = _make_fun(fields, items[1:], buf, start, pos)
                kind, items, left = stack.pop()
    except (IndexError, struct.error):
        # Cut short inside the term at pos, or before its tag (then there is no tag).
        raise _truncated(pos, tag if pos < blen else -1) from None


def _truncated(pos: int, tag: int) -> DecodeError:
    return DecodeError("input ends inside the term (truncated)", offset=pos,
                       tag=tag if tag >= 0 else None)


def _too_deep(max_depth: int, pos: int, tag: int) -> DecodeError:
    return DecodeError(f"term nested deeper than max_depth={max_depth}", offset=pos, tag=tag)


def _unknown_tag(tag: int, pos: int) -> DecodeError:
    if tag == LOCAL:
        why = "LOCAL_EXT (121) is private to the node that made it and cannot be decoded"
    elif tag == COMPRESSED:
        why = "a compressed term (80) may only appear at the top level"
    elif tag == FUN:
        why = "FUN_EXT (117) was removed in OTP 23 and is not accepted"
    else:
        why = f"unknown tag {tag}"
    return DecodeError(why, offset=pos, tag=tag)


def _finish_list(items: list[Term]) -> Term:
    tail = items.pop()
    if type(tail) is list:
        # [] ends every proper list; a STRING_EXT tail (never sent by OTP) continues it.
        if tail:
            items += tail
        return items
    if not items:
        # LIST_EXT of length 0 is just its tail.
        return tail
    return ImproperList(tuple(items), tail)


def _finish_map(flat: list[Term], pos: int) -> dict[Term, Term]:
    keys = flat[0::2]
    try:
        if len(keys) >= HASH_CHECKED_KEYS:
            _check_hashes(keys, pos)
        result = dict(zip(keys, flat[1::2], strict=True))
    except TypeError:
        pass  # an unhashable key: a list or a map
    except RecursionError:
        # Python compares keys with equal hashes recursively: two very deep equal keys.
        raise _unrepresentable("keys nested too deep to compare", pos) from None
    else:
        if len(result) == len(keys):
            return result
    return _exact_map(keys, flat[1::2], pos)


def _check_hashes(keys: list[Term], pos: int) -> None:
    """Refuse a map whose keys collide in Python's hash beyond what real maps do."""
    distinct = len(set(map(hash, keys)))
    if distinct == len(keys):
        return
    cost = sum(n * n for n in Counter(map(hash, keys)).values() if n > 1)
    if cost > MAX_COLLISION_COST * len(keys):
        raise DecodeError(
            f"map of {len(keys)} keys has only {distinct} distinct key hashes (hash flooding)",
            offset=pos, tag=MAP)


def _unrepresentable(why: object, pos: int) -> DecodeError:
    return DecodeError(f"map key cannot be represented: {why}", offset=pos, tag=MAP)


def _exact_map(keys: list[Term], values: list[Term], pos: int) -> dict[Term, Term]:
    """The slow path: freeze unhashable keys; wrap keys Python cannot tell apart."""
    try:
        frozen = [freeze(k) for k in keys]
        if len(frozen) >= HASH_CHECKED_KEYS:
            _check_hashes(frozen, pos)
        counts: dict[Term, int] = {}
        for key in frozen:
            counts[key] = counts.get(key, 0) + 1
        result = {
            (ExactKey(key) if counts[key] > 1 else key): value
            for key, value in zip(frozen, values, strict=True)
        }
    except (TypeError, RecursionError) as exc:
        raise _unrepresentable(exc, pos) from None
    if len(result) != len(keys):
        raise DecodeError("map has duplicate keys", offset=pos, tag=MAP)
    return result


def _new_atom(buf: bytes, pos: int) -> Term:
    """Decode the atom at ``buf[pos]`` (any of the four atom tags) and cache it."""
    tag = buf[pos]
    if tag in (SMALL_ATOM_UTF8, SMALL_ATOM):
        start = pos + 2
        end = start + buf[pos + 1]
    else:
        start = pos + 3
        end = start + _U16(buf, pos + 1)[0]
    if end > len(buf):
        raise _truncated(pos, tag)
    utf8 = tag in (SMALL_ATOM_UTF8, ATOM_UTF8)
    try:
        name = buf[start:end].decode("utf-8" if utf8 else "latin-1")
    except UnicodeDecodeError:
        raise DecodeError("atom text is not valid UTF-8", offset=pos, tag=tag) from None
    if len(name) > MAX_ATOM_CHARS:
        raise DecodeError(f"atom longer than {MAX_ATOM_CHARS} characters", offset=pos, tag=tag)
    term = _AS_TERM.get(name, _MISS)
    if term is _MISS:
        try:
            term = Atom(name)
        except AtomTableFull as exc:
            limit = exc.limit
        if term is _MISS:
            # (raised outside the except clause: the first error's frames reach back to the
            # decode's, which hold all it built so far, and must not be kept as its context)
            raise AtomTableFull(limit, offset=pos, tag=tag)
    table = _ATOM_TABLES[tag]
    if len(table) >= _ATOM_CACHE_MAX:
        table.clear()
    table[buf[pos + 1 : end]] = term
    return term


def _cache_miss(cache: _AtomCache, index: int, pos: int) -> DecodeError:
    why = "no atom cache given" if cache is None else f"atom cache slot {index} is empty"
    return DecodeError(f"ATOM_CACHE_REF: {why}", offset=pos, tag=ATOM_CACHE_REF)


def _atom_term(buf: bytes, pos: int, cache: _AtomCache) -> tuple[Term, int]:
    """A literal atom at ``buf[pos]`` -> (term, end); true/false/nil come back as bool/None.

    (ATOM_CACHE_REF is resolved where it can occur: in the loop of _decode and in _atom.)
    """
    tag = buf[pos]
    if tag in (SMALL_ATOM_UTF8, SMALL_ATOM):
        end = pos + 2 + buf[pos + 1]
    elif tag in (ATOM_UTF8, ATOM):
        end = pos + 3 + _U16(buf, pos + 1)[0]
    else:
        raise DecodeError(f"expected an atom, got tag {tag}", offset=pos, tag=tag)
    term = _ATOM_TABLES[tag].get(buf[pos + 1 : end], _MISS)
    if term is _MISS:
        term = _new_atom(buf, pos)
    return term, end


def _atom(buf: bytes, pos: int, cache: _AtomCache) -> tuple[Atom, int]:
    """An atom where only an atom may stand (a node name, a module): always an ``Atom``."""
    tag = buf[pos]
    if tag == SMALL_ATOM_UTF8:  # the usual case in term_to_binary output: its own table
        end = pos + 2 + buf[pos + 1]
        atom = _NODE_ATOMS.get(buf[pos + 1 : end])
        if atom is not None:
            return atom, end
    elif tag == ATOM_CACHE_REF:  # the usual case over distribution
        index = buf[pos + 1]
        atom = cache[index] if cache is not None and index < len(cache) else None
        if atom is None:
            raise _cache_miss(cache, index, pos)
        return atom, pos + 2
    return _new_node_atom(buf, pos, cache)


def _new_node_atom(buf: bytes, pos: int, cache: _AtomCache) -> tuple[Atom, int]:
    term, end = _atom_term(buf, pos, cache)
    atom = term if type(term) is Atom else _SPECIAL_ATOMS[term]
    if buf[pos] == SMALL_ATOM_UTF8:
        if len(_NODE_ATOMS) >= _ATOM_CACHE_MAX:
            _NODE_ATOMS.clear()
        _NODE_ATOMS[buf[pos + 1 : end]] = atom
    return atom, end


def _integer(buf: bytes, pos: int, cache: _AtomCache) -> tuple[int, int]:
    """An integer where only an integer may stand (inside a fun)."""
    tag = buf[pos]
    if tag == SMALL_INTEGER:
        return buf[pos + 1], pos + 2
    if tag == INTEGER:
        return _I32(buf, pos + 1)[0], pos + 5
    if tag in (SMALL_BIG, LARGE_BIG):
        return _big(buf, pos, cache)
    raise DecodeError(f"expected an integer, got tag {tag}", offset=pos, tag=tag)


def _big(buf: bytes, pos: int, cache: _AtomCache) -> tuple[int, int]:
    # SMALL_BIG: n:8, sign:8, n little-endian digits; LARGE_BIG: n:32, sign:8, digits.
    if buf[pos] == SMALL_BIG:
        n, sign = buf[pos + 1], buf[pos + 2]
        start = pos + 3
    else:
        (n,) = _U32(buf, pos + 1)
        sign = buf[pos + 5]
        start = pos + 6
    end = start + n
    if end > len(buf):
        raise _too_many(n, "bignum", pos, buf[pos]) if n > len(buf) else _truncated(pos, buf[pos])
    if sign > 1:
        raise DecodeError(f"bignum sign byte must be 0 or 1, got {sign}", offset=pos, tag=buf[pos])
    value = int.from_bytes(buf[start:end], "little")
    return (-value if sign else value), end


def _old_float(buf: bytes, pos: int, cache: _AtomCache) -> tuple[float, int]:
    # FLOAT_EXT: 31 bytes of "%.20e" text padded with NULs.
    end = pos + 32
    if end > len(buf):
        raise _truncated(pos, FLOAT)
    text = buf[pos + 1 : end].rstrip(b"\0")
    try:
        value = float(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise DecodeError("FLOAT_EXT text is not a float", offset=pos, tag=FLOAT) from None
    if not math.isfinite(value):
        raise DecodeError("float is not finite", offset=pos, tag=FLOAT)
    return value, end


def _bit_binary(buf: bytes, pos: int, cache: _AtomCache) -> tuple[Term, int]:
    n, bits = _U32(buf, pos + 1)[0], buf[pos + 5]
    start = pos + 6
    end = start + n
    if end > len(buf):
        raise _truncated(pos, BIT_BINARY)
    data = buf[start:end]
    if n == 0:
        if bits != 0:
            raise DecodeError("empty bitstring with bits != 0", offset=pos, tag=BIT_BINARY)
        return b"", end
    if not 1 <= bits <= 8:
        raise DecodeError(f"bits in last byte must be 1..8, got {bits}", offset=pos,
                          tag=BIT_BINARY)
    if bits == 8:
        return data, end
    # The BEAM ignores the unused low bits; clear them so that equal bitstrings are equal.
    mask = (0xFF << (8 - bits)) & 0xFF
    if data[-1] & ~mask:
        data = data[:-1] + bytes((data[-1] & mask,))
    return BitBinary(data, bits), end


def _pid(buf: bytes, pos: int, cache: _AtomCache) -> tuple[Pid, int]:
    tag = buf[pos]
    node, p = _atom(buf, pos + 1, cache)
    if tag == NEW_PID:
        pid_id, serial, creation = _U32_U32_U32(buf, p)
        end = p + 12
    else:  # PID_EXT: creation is one byte
        pid_id, serial = _U32_U32(buf, p)
        creation = buf[p + 8]
        end = p + 9
    pid: Pid = _new(Pid)
    _set_pid_node(pid, node)
    _set_pid_id(pid, pid_id)
    _set_pid_serial(pid, serial)
    _set_pid_creation(pid, creation)
    if tag == NEW_PID and buf[pos + 1] == SMALL_ATOM_UTF8:
        # The usual form, with the node spelled out (not an atom cache ref, whose meaning
        # changes from frame to frame): the same bytes are always the same pid. A key is
        # 15 + its byte 2 long, so a slice cut short by the end of the input never hits.
        if len(_PIDS) >= _PID_CACHE_MAX:
            _PIDS.clear()
        _PIDS[buf[pos:end]] = pid
    return pid, end


def _port(buf: bytes, pos: int, cache: _AtomCache) -> tuple[Port, int]:
    tag = buf[pos]
    node, p = _atom(buf, pos + 1, cache)
    if tag == V4_PORT:
        port_id, creation = _U64_U32(buf, p)
        return Port(node, port_id, creation), p + 12
    if tag == NEW_PORT:
        port_id, creation = _U32_U32(buf, p)
        return Port(node, port_id, creation), p + 8
    (port_id,) = _U32(buf, p)  # PORT_EXT: creation is one byte
    return Port(node, port_id, buf[p + 4]), p + 5


def _reference(buf: bytes, pos: int, cache: _AtomCache) -> tuple[Term, int]:
    tag = buf[pos]
    if tag == REFERENCE:
        node, p = _atom(buf, pos + 1, cache)
        ids: tuple[int, ...] = _U32(buf, p)
        creation = buf[p + 4]
        end = p + 5
    else:
        n = buf[pos + 2]  # a 16-bit count, but 1..5
        if buf[pos + 1] or not 1 <= n <= 5:
            raise DecodeError(f"reference must have 1..5 id words, got {_U16(buf, pos + 1)[0]}",
                              offset=pos, tag=tag)
        p = pos + 3
        end = p + 2 + buf[p + 1]
        # A reference in every call: the node atom's fast path (see _atom) is inlined here.
        known = _NODE_ATOMS.get(buf[p + 1 : end]) if buf[p] == SMALL_ATOM_UTF8 else None
        if known is None:
            node, end = _atom(buf, p, cache)
        else:
            node = known
        p = end
        # unpack_from raises struct.error (truncated) if the words are not all there.
        if tag == NEWER_REFERENCE:
            words = _CREATION_WORDS[n - 1](buf, p)
            creation, ids = words[0], words[1:]
            end = p + 4 + 4 * n
        else:
            creation = buf[p]
            ids = _WORDS[n - 1](buf, p + 1)
            end = p + 1 + 4 * n
    ref: Reference = _new(Reference)
    _set_ref_node(ref, node)
    _set_ref_creation(ref, creation)
    _set_ref_ids(ref, ids)
    return ref, end


def _export(buf: bytes, pos: int, cache: _AtomCache) -> tuple[Export, int]:
    module, p = _atom(buf, pos + 1, cache)
    function, p = _atom(buf, p, cache)
    if buf[p] != SMALL_INTEGER:
        raise DecodeError("export arity must be a SMALL_INTEGER_EXT", offset=pos, tag=EXPORT)
    return Export(module, function, buf[p + 1]), p + 2


_FunFields = tuple[int, bytes, int, Atom, int, int, Pid]


def _fun_fields(
    buf: bytes, pos: int, cache: _AtomCache
) -> tuple[_FunFields, int, int]:
    # NEW_FUN: Size:32 Arity:8 Uniq:16/bytes Index:32 NumFree:32 Module OldIndex OldUniq Pid
    # then NumFree free variables.
    arity = buf[pos + 5]
    uniq = buf[pos + 6 : pos + 22]
    index, nfree = _U32_U32(buf, pos + 22)
    module, p = _atom(buf, pos + 30, cache)
    old_index, p = _integer(buf, p, cache)
    old_uniq, p = _integer(buf, p, cache)
    if buf[p] not in (NEW_PID, PID):
        raise DecodeError("fun creator must be a pid", offset=pos, tag=NEW_FUN)
    pid, p = _pid(buf, p, cache)
    return (arity, uniq, index, module, old_index, old_uniq, pid), nfree, p


def _make_fun(fields: _FunFields, free: list[Term], buf: bytes, pos: int, end: int) -> Fun:
    (size,) = _U32(buf, pos + 1)
    if size != end - pos - 1:
        raise DecodeError(f"fun size field says {size}, fun is {end - pos - 1} bytes",
                          offset=pos, tag=NEW_FUN)
    arity, uniq, index, module, old_index, old_uniq, pid = fields
    return Fun(arity, uniq, index, module, old_index, old_uniq, pid, tuple(free))


# Tags the loop in _decode does not handle itself (rarer ones), by tag.
_LEAVES: Final[dict[int, _Leaf]] = {
    ATOM_UTF8: _atom_term,
    ATOM: _atom_term,
    SMALL_ATOM: _atom_term,
    SMALL_BIG: _big,
    LARGE_BIG: _big,
    FLOAT: _old_float,
    BIT_BINARY: _bit_binary,
    PID: _pid,
    NEW_PORT: _port,
    V4_PORT: _port,
    PORT: _port,
    NEW_REFERENCE: _reference,
    REFERENCE: _reference,
    EXPORT: _export,
}


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------

_SMALL_INTS: Final = tuple(bytes((SMALL_INTEGER, i)) for i in range(256))
_TUPLE_HEADERS: Final = tuple(bytes((SMALL_TUPLE, i)) for i in range(256))
# Binaries from this size on are not copied into the output buffer by encode().
_BIG_BINARY: Final = 64 * 1024
_ATOM_BYTES: dict[Atom, bytes] = {}
_END: Final = object()
_NIL_TAIL: Final[tuple[list[Term]]] = ([],)  # ends a list: its [] encodes as NIL_EXT


def encode(term: Term, *, compressed: bool | int = False, max_depth: int = DEFAULT_MAX_DEPTH
           ) -> bytes:
    """Encode ``term`` as a complete external term, as ``term_to_binary/1,2`` does.

    ``compressed=True`` (level 6) or a level 0..9 compresses like
    ``term_to_binary(T, [{compressed, Level}])``: the result is only compressed when that is
    smaller.
    """
    out = bytearray(b"\x83")
    chunks: list[bytes | bytearray] = []
    _encode(term, out, max_depth, chunks)
    if chunks:
        chunks.append(out)
        data = b"".join(chunks)
    else:
        data = bytes(out)
    return data if compressed is False else _compress(data, compressed)


def _compress(data: bytes, compressed: bool | int) -> bytes:
    """``data`` (a whole external term) compressed as ``encode(compressed=...)`` asks."""
    level = 6 if compressed is True else compressed
    if type(level) is not int or not 0 <= level <= 9:
        raise EncodeError(f"compression level must be 0..9 or a bool, got {compressed!r}",
                          value=compressed)
    if level == 0:
        return data
    packed = zlib.compress(memoryview(data)[1:], level)
    if len(packed) + 5 >= len(data) - 1:
        return data
    return b"".join((bytes((VERSION, COMPRESSED)), _PACK_U32(len(data) - 1), packed))


def encode_into(term: Term, out: bytearray, *, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Append the encoding of ``term`` to ``out``, without the version byte."""
    mark = len(out)
    try:
        _encode(term, out, max_depth, None)
    except BaseException:
        del out[mark:]  # leave the caller's buffer as it was
        raise


def _encode(
    term: Term, out: bytearray, max_depth: int, chunks: list[bytes | bytearray] | None
) -> None:
    """The encoder loop: one term, containers walked with a stack of iterators.

    With ``chunks``, a big binary is not copied into ``out``: ``out`` so far and the binary
    itself are moved to ``chunks`` (for :func:`encode` to join), so it is copied only once.
    """
    stack: list[Iterator[Term] | None] = []
    it: Iterator[Term] | None = None
    funs = 0  # how many funs are open
    try:
        while True:
            t = type(term)
            if t is Atom:
                b = _ATOM_BYTES.get(term)
                out += b if b is not None else _atom_bytes(term)
            elif t is int:
                if 0 <= term <= 255:
                    out += _SMALL_INTS[term]
                elif -0x80000000 <= term <= 0x7FFFFFFF:
                    out += _PACK_TAG_I32(INTEGER, term)
                else:
                    _encode_big(term, out)
            elif t is tuple:
                n = len(term)
                out += _TUPLE_HEADERS[n] if n < 256 else _PACK_TAG_U32(LARGE_TUPLE, n)
                if n:
                    if len(stack) >= max_depth:
                        raise _encode_too_deep(max_depth, term)
                    stack.append(it)
                    it = iter(term)
            elif t is list:
                if not term:
                    out.append(NIL)
                elif type(term[0]) is not int or not _encode_string(term, out):
                    out += _PACK_TAG_U32(LIST, len(term))
                    if len(stack) >= max_depth:
                        raise _encode_too_deep(max_depth, term)
                    stack.append(it)
                    it = chain(term, _NIL_TAIL)
            elif t is bytes or t is str:
                data = term if t is bytes else term.encode("utf-8")
                out += _PACK_TAG_U32(BINARY, len(data))
                # (Not inside a fun, whose size is the length of its part of ``out``.)
                if chunks is None or len(data) < _BIG_BINARY or funs:
                    out += data
                else:
                    chunks += (bytes(out), data)
                    del out[:]
            elif t is dict:
                n = len(term)
                out += _PACK_TAG_U32(MAP, n)
                if n:
                    if len(stack) >= max_depth:
                        raise _encode_too_deep(max_depth, term)
                    stack.append(it)
                    it = chain.from_iterable(term.items())
            elif t is float:
                if term - term != 0.0:  # inf or nan
                    raise EncodeError(f"Erlang has no float {term!r}", value=term)
                out += _PACK_TAG_F64(NEW_FLOAT, term)
            elif t is Pid:
                out.append(NEW_PID)
                out += _ATOM_BYTES.get(term.node) or _node_bytes(term.node)
                out += _PACK_U32_U32_U32(term.id, term.serial, term.creation)
            elif t is bool or term is None:
                out += _SPECIAL_BYTES[term]
            elif t is Reference:
                n = len(term.ids)
                if not 1 <= n <= 5:
                    raise EncodeError(f"a reference has 1..5 id words, got {n}", value=term)
                out += _PACK_TAG_U16(NEWER_REFERENCE, n)
                out += _ATOM_BYTES.get(term.node) or _node_bytes(term.node)
                out += _PACK_CREATION_WORDS[n - 1](term.creation, *term.ids)
            elif t is ImproperList:
                out += _PACK_TAG_U32(LIST, len(term.items))
                if len(stack) >= max_depth:
                    raise _encode_too_deep(max_depth, term)
                stack.append(it)
                it = chain(term.items, (term.tail,))
            elif t is ExactKey:
                term = term.value
                continue
            elif t is FrozenList:
                term = list(term.items)
                continue
            elif t is FrozenMap:
                term = dict(term)
                continue
            elif t is Fun:
                if len(stack) >= max_depth:
                    raise _encode_too_deep(max_depth, term)
                stack.append(it)
                it = chain(term.free_vars, (_encode_fun_head(term, out),))
                funs += 1
            elif t is _FunEnd:
                out[term.start + 1 : term.start + 5] = _PACK_U32(len(out) - term.start - 1)
                funs -= 1
            else:
                replacement = _encode_other(term, out)
                if replacement is not _END:
                    term = replacement
                    continue
            # Next element of the innermost unfinished container.
            while True:
                if it is None:
                    return
                term = next(it, _END)
                if term is not _END:
                    break
                it = stack.pop()
    except (struct.error, TypeError) as exc:
        raise EncodeError(f"cannot encode {safe_repr(term)}: a field is out of range or of the "
                          f"wrong type ({exc})", value=term) from None
    except UnicodeEncodeError as exc:
        raise EncodeError(f"string cannot be encoded as UTF-8: {exc}", value=term) from None


def _encode_too_deep(max_depth: int, term: Term) -> EncodeError:
    return EncodeError(f"term nested deeper than max_depth={max_depth}", value=type(term))


def _encode_string(term: list[Term], out: bytearray) -> bool:
    """Write ``term`` as STRING_EXT if term_to_binary would (ints 0..255, <= 65535 long)."""
    if len(term) > 0xFFFF:
        return False
    # map(type) rules out bools and int subclasses at C speed; bytes() checks the range.
    if set(map(type, term)) != {int}:
        return False
    try:
        data = bytes(term)
    except ValueError:
        return False
    out += _PACK_TAG_U16(STRING, len(data))
    out += data
    return True


def _atom_bytes(atom: Atom) -> bytes:
    data = atom.name.encode("utf-8")
    if len(atom.name) > MAX_ATOM_CHARS:
        raise EncodeError(f"atom longer than {MAX_ATOM_CHARS} characters", value=atom)
    if len(data) < 256:
        encoded = bytes((SMALL_ATOM_UTF8, len(data))) + data
    else:
        encoded = bytes((ATOM_UTF8,)) + _PACK_U16(len(data)) + data
    if len(_ATOM_BYTES) >= _ATOM_CACHE_MAX:
        _ATOM_BYTES.clear()
    _ATOM_BYTES[atom] = encoded
    return encoded


def _node_bytes(atom: Term) -> bytes:
    if type(atom) is not Atom:
        raise EncodeError(f"expected an Atom, got {type(atom).__name__}", value=atom)
    return _ATOM_BYTES.get(atom) or _atom_bytes(atom)


# true, false and nil: what True, False and None encode as (no atom lookup per value)
_SPECIAL_BYTES: Final[dict[Term, bytes]] = {
    term: _atom_bytes(atom) for term, atom in _SPECIAL_ATOMS.items()}


def _encode_big(term: int, out: bytearray) -> None:
    magnitude = -term if term < 0 else term
    n = (magnitude.bit_length() + 7) // 8
    if n < 256:
        out += bytes((SMALL_BIG, n, term < 0))
    else:
        out.append(LARGE_BIG)
        out += _PACK_U32(n)
        out.append(term < 0)
    out += magnitude.to_bytes(n, "little")


_BASES: Final[tuple[type, ...]] = (int, float, str, bytes, tuple, list, dict)


def _encode_other(term: Term, out: bytearray) -> Term:
    """The rarer leaf types. Returns ``_END`` once ``term`` is written, or, for a subclass of
    a builtin type (IntEnum, namedtuple, OrderedDict...), the value to encode instead."""
    t = type(term)
    if t is Port:
        # OTP 26+ writes every port as V4_PORT_EXT (V4_NC is mandatory since OTP 26).
        out.append(V4_PORT)
        out += _node_bytes(term.node)
        out += struct.pack(">QI", term.id, term.creation)
    elif t is BitBinary:
        out += _PACK_TAG_U32(BIT_BINARY, len(term.data))
        out.append(term.bits)
        out += term.data
    elif t is Export:
        if type(term.arity) is not int or not 0 <= term.arity <= 255:
            raise EncodeError(f"export arity must be 0..255, got {term.arity!r}", value=term)
        out.append(EXPORT)
        out += _node_bytes(term.module)
        out += _node_bytes(term.function)
        out += _SMALL_INTS[term.arity]
    elif t is bytearray or t is memoryview:
        data = bytes(term)
        out += _PACK_TAG_U32(BINARY, len(data))
        out += data
    elif isinstance(term, _BASES):
        base: Callable[[Term], Term] = next(b for b in _BASES if isinstance(term, b))
        return base(term)
    else:
        raise EncodeError(f"cannot encode a value of type {t.__name__}", value=term)
    return _END


class _FunEnd:
    """Marks the end of a fun's free variables, whose size is then known (``start``: the
    offset of the NEW_FUN_EXT tag in the output)."""

    __slots__ = ("start",)

    def __init__(self, start: int) -> None:
        self.start = start


def _encode_fun_head(fun: Fun, out: bytearray) -> _FunEnd:
    """NEW_FUN_EXT up to its free variables, with a placeholder size (see _FunEnd)."""
    if len(fun.uniq) != 16 or type(fun.pid) is not Pid or not 0 <= fun.arity <= 255:
        raise EncodeError("a Fun needs arity 0..255, a 16-byte uniq and a Pid", value=fun)
    start = len(out)
    out += _PACK_TAG_U32(NEW_FUN, 0)  # the size is filled in at the _FunEnd
    out.append(fun.arity)
    out += fun.uniq
    out += struct.pack(">II", fun.index, len(fun.free_vars))
    out += _node_bytes(fun.module)
    for field in (fun.old_index, fun.old_uniq, fun.pid):
        _encode(field, out, 0, None)  # leaves
    return _FunEnd(start)


# ---------------------------------------------------------------------------------------------
# The compiled core
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Codec:
    """The four entry points of one implementation of the codec."""

    decode: Callable[..., Term]
    decode_from: Callable[..., tuple[Term, int]]
    encode: Callable[..., bytes]
    encode_into: Callable[..., None]


#: The pure-Python codec, also while the compiled one is in use (tests compare the two).
PURE: Final = Codec(decode, decode_from, encode, encode_into)


def _compile() -> bool:
    """Put the compiled core (``_cetf``) in place of the four entry points, if it is there.

    The C functions take the same arguments and run the common case; on anything else (a
    rare tag or type, any error, a bound reached) they call the Python function they stand
    in for, so errors and defences are the Python ones (see ``_cetf.c``). They share this
    module's caches and use its helpers for the rare parts.
    """
    native = load_native("_cetf")
    if native is None:
        return False
    native.setup({
        "atom": Atom, "pid": Pid, "reference": Reference, "improper_list": ImproperList,
        "utf8_atoms": _UTF8_ATOMS, "node_atoms": _NODE_ATOMS, "pids": _PIDS,
        "atom_bytes": _ATOM_BYTES, "pid_cache_max": _PID_CACHE_MAX,
        "hash_checked_keys": HASH_CHECKED_KEYS, "max_depth": DEFAULT_MAX_DEPTH,
        "max_decompressed_size": DEFAULT_MAX_DECOMPRESSED_SIZE, "big_binary": _BIG_BINARY,
        "true": _SPECIAL_ATOMS[True], "false": _SPECIAL_ATOMS[False],
        "nil": _SPECIAL_ATOMS[None], "true_bytes": _SPECIAL_BYTES[True],
        "false_bytes": _SPECIAL_BYTES[False], "nil_bytes": _SPECIAL_BYTES[None],
        "new_atom": _new_atom, "new_node_atom": _new_node_atom, "finish_list": _finish_list,
        "finish_map": _finish_map, "leaves": _LEAVES, "inflate": _inflate,
        "atom_bytes_of": _atom_bytes, "encode_big": _encode_big, "compress": _compress,
        "decode": decode, "decode_from": decode_from, "encode": encode,
        "encode_into": encode_into,
    })
    names = globals()
    for name in ("decode", "decode_from", "encode", "encode_into"):
        names[name] = getattr(native, name)
    return True


#: True when the compiled core runs (:mod:`pyerl_node.proto.native`).
COMPILED: Final = _compile()
