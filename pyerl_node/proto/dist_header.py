"""Distribution headers: the atom cache and fragmented messages (docs/protocol/distribution.md §5.3,
§5.4).

When DIST_HDR_ATOM_CACHE or FRAGMENTS is negotiated, every packet starts with a header:

* ``131, 68, AtomCacheHeader`` -- a whole message;
* ``131, 69, SequenceId:64, FragmentId:64, AtomCacheHeader`` -- the first fragment of one;
* ``131, 70, SequenceId:64, FragmentId:64`` -- a continuation fragment.

The atom cache header (:meth:`AtomCache.read_header`) lists the atoms that the terms after
it refer to with ``ATOM_CACHE_REF`` (82, index into this list). Each entry names a slot of
the receiver's per-direction cache of 2048 atoms (segment * 256 + internal index) and either
defines it (new entry: the atom's text follows) or reuses what an earlier header put there.
The header is parsed whole before the cache changes, so a malformed one leaves the cache as
it was.

Fragments carry the bytes of one message (control message + payload, no 131 bytes) cut in
pieces; FragmentId counts down to 1, the last piece. :class:`FragmentAssembler` joins them
per sequence id (sequences may interleave) with a bound on the bytes held and on the number
of open sequences. The atom references of a fragmented message are resolved when its first
fragment arrives: later headers may redefine the slots before the message is complete.

Outbound we never populate the peer's cache: a whole message goes out behind
:data:`NORMAL_HEADER` (``131, 68, 0``, what BEAM itself sends when only FRAGMENTS is
negotiated) and a big one is cut by :func:`fragment_headers`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, TypeAlias

from pyerl_node.proto.errors import RemoteProtocolError
from pyerl_node.proto.terms import Atom

Buffer: TypeAlias = bytes | bytearray | memoryview

VERSION: Final = 131
DIST_HEADER: Final = 68
DIST_FRAG_HEADER: Final = 69
DIST_FRAG_CONT: Final = 70

#: Slots in one direction's atom cache (8 segments of 256).
ATOM_CACHE_SIZE: Final = 2048
#: A whole message without atom cache references.
NORMAL_HEADER: Final = bytes((VERSION, DIST_HEADER, 0))

_MAX_ATOM_CHARS = 255
_IDS = struct.Struct(">QQ")
_U16 = struct.Struct(">H")

def _truncated(what: str, offset: int) -> RemoteProtocolError:
    return RemoteProtocolError(f"distribution header truncated in {what} at offset {offset}")


class AtomCache:
    """The atom cache of one direction of one connection, and its header parser.

    ``slots`` holds the 2048 entries. BEAM repeats the same few headers that only reuse
    entries (the same node names and atoms, message after message), so those headers are
    remembered by their bytes with the atoms they stand for; any new entry forgets them all.
    """

    __slots__ = ("known", "slots")

    _KNOWN_MAX = 1024

    def __init__(self) -> None:
        self.slots: list[Atom | None] = [None] * ATOM_CACHE_SIZE
        #: the headers without new entries seen since the last new entry, by their bytes
        #: (count, flags, index bytes): the atoms they stand for
        self.known: dict[bytes, list[Atom]] = {}

    def read_header(self, buf: bytes, offset: int, end: int) -> tuple[list[Atom], int]:
        """Parse the atom cache header at ``buf[offset]`` (its NumberOfAtomCacheRefs byte).

        The header must end before ``end``. Returns the atoms of this header's references,
        in reference order, and the offset just after the header; records new entries.
        Raises RemoteProtocolError if the header is truncated or malformed, or reuses a slot
        that no earlier header defined; the cache is unchanged then.
        """
        if offset >= end:
            raise _truncated("the number of atom cache refs", offset)
        count = buf[offset]
        if count == 0:
            return [], offset + 1
        # A header without new entries is: count, flags, one index byte per ref.
        reuse_end = offset + 2 + count // 2 + count
        key = buf[offset:reuse_end]
        known = self.known.get(key)
        if known is not None and reuse_end <= end:
            return known, reuse_end
        refs, after, fresh = self._parse(buf, offset + 1, end, count)
        if fresh:
            for slot, atom in fresh.items():
                self.slots[slot] = atom
            self.known.clear()
        else:
            if len(self.known) >= self._KNOWN_MAX:
                self.known.clear()
            self.known[key] = refs
        return refs, after

    def _parse(
        self, buf: bytes, offset: int, end: int, count: int
    ) -> tuple[list[Atom], int, dict[int, Atom]]:
        flags_end = offset + count // 2 + 1
        if flags_end > end:
            raise _truncated("the atom cache flags", offset)
        flags = buf[offset:flags_end]
        offset = flags_end
        # The nibble after the last reference holds LongAtoms in its lowest bit.
        long_atoms = (flags[count >> 1] >> ((count & 1) << 2)) & 1
        refs: list[Atom] = []
        fresh: dict[int, Atom] = {}
        for i in range(count):
            nibble = (flags[i >> 1] >> ((i & 1) << 2)) & 0xF
            if offset >= end:
                raise _truncated(f"atom cache ref {i}", offset)
            slot = ((nibble & 7) << 8) | buf[offset]
            offset += 1
            if nibble & 8:  # NewEntry: the atom's text follows
                if long_atoms:
                    if offset + 2 > end:
                        raise _truncated(f"the length of atom cache ref {i}", offset)
                    (size,) = _U16.unpack_from(buf, offset)
                    offset += 2
                else:
                    if offset >= end:
                        raise _truncated(f"the length of atom cache ref {i}", offset)
                    size = buf[offset]
                    offset += 1
                if offset + size > end:
                    raise _truncated(f"the text of atom cache ref {i}", offset)
                atom = fresh[slot] = _atom(buf[offset:offset + size], i, offset)
                offset += size
            else:
                found = fresh.get(slot) if fresh else None
                if found is None:
                    found = self.slots[slot]
                    if found is None:
                        raise RemoteProtocolError(
                            f"atom cache ref {i} reuses slot {slot}, which no header defined"
                        )
                atom = found
            refs.append(atom)
        return refs, offset, fresh


def _atom(raw: bytes, ref: int, offset: int) -> Atom:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(
            f"atom cache ref {ref} at offset {offset} is not UTF-8: {exc.reason}"
        ) from None
    if len(text) > _MAX_ATOM_CHARS:
        raise RemoteProtocolError(
            f"atom cache ref {ref} at offset {offset} has {len(text)} characters "
            f"(at most {_MAX_ATOM_CHARS})"
        )
    return Atom(text)


def read_fragment_ids(buf: Buffer, offset: int, end: int) -> tuple[int, int, int]:
    """SequenceId and FragmentId at ``buf[offset]`` (before ``end``), and the offset after.

    Raises RemoteProtocolError if they are truncated or FragmentId is 0 (the last fragment
    is 1).
    """
    if offset + _IDS.size > end:
        raise _truncated("the fragment ids", offset)
    seq_id, frag_id = _IDS.unpack_from(buf, offset)
    if frag_id == 0:
        raise RemoteProtocolError(f"fragment id 0 in sequence {seq_id} (the last one is 1)")
    return seq_id, frag_id, offset + _IDS.size


@dataclass(slots=True)
class Fragments:
    """The fragments of one message, as they came; what the first one announced."""

    expected: int  # the FragmentId that must come next
    refs: list[Atom]
    chunks: list[Buffer]
    size: int
    #: bytes of binary contents, as the first fragment says (term_scan)
    binary: int = 0
    #: where in the message the BINARY_EXT begins that the first fragment ends inside, and
    #: its length (-1, 0: none)
    tail_at: int = -1
    tail_size: int = 0

    def joined(self) -> bytes:
        """The whole message."""
        return b"".join(self.chunks)


class FragmentAssembler:
    """Joins the fragments of messages, per sequence id, within memory bounds.

    ``max_bytes`` bounds the bytes held for all incomplete messages together and
    ``max_sequences`` the number of incomplete messages. A fragment that would break a
    bound, arrives out of order or belongs to no open sequence raises RemoteProtocolError;
    the sequence it belonged to is dropped, everything else goes on.
    """

    def __init__(self, *, max_bytes: int, max_sequences: int) -> None:
        self._max_bytes = max_bytes
        self._max_sequences = max_sequences
        self._partials: dict[int, Fragments] = {}
        self._held = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes held for incomplete messages."""
        return self._held

    @property
    def pending_sequences(self) -> int:
        """Number of incomplete messages."""
        return len(self._partials)

    def discard(self, seq_id: int) -> bool:
        """Drop the incomplete message of ``seq_id``; True if there was one."""
        partial = self._partials.pop(seq_id, None)
        if partial is None:
            return False
        self._held -= partial.size
        return True

    def held(self, seq_id: int) -> tuple[int, int]:
        """The bytes held for sequence ``seq_id`` and how many bytes of binaries its first
        fragment announced, ``(0, 0)`` if it is not open."""
        partial = self._partials.get(seq_id)
        return (0, 0) if partial is None else (partial.size, partial.binary)

    def first(self, seq_id: int, frag_id: int, refs: list[Atom], chunk: Buffer,
              binary: int = 0, tail_at: int = -1, tail_size: int = 0) -> None:
        """Open sequence ``seq_id`` with its first fragment (``frag_id`` > 1 pieces), which
        announces ``binary`` bytes of binaries (see :class:`Fragments` for the tail)."""
        if seq_id in self._partials:
            raise RemoteProtocolError(f"fragment sequence {seq_id} is already open")
        if len(self._partials) >= self._max_sequences:
            raise RemoteProtocolError(
                f"fragment sequence {seq_id} refused: {self._max_sequences} already open"
            )
        self._check_room(seq_id, len(chunk))
        self._partials[seq_id] = Fragments(frag_id - 1, refs, [chunk], len(chunk), binary,
                                           tail_at, tail_size)
        self._held += len(chunk)

    def add(self, seq_id: int, frag_id: int, chunk: Buffer, *more: Buffer) -> Fragments | None:
        """Append a continuation fragment (``chunk``, or ``chunk`` and ``more`` when it came
        in pieces); all of the message's after the last."""
        partial = self._partials.get(seq_id)
        if partial is None:
            raise RemoteProtocolError(
                f"continuation fragment {frag_id} for sequence {seq_id}, which is not open"
            )
        if frag_id != partial.expected:
            self.discard(seq_id)
            raise RemoteProtocolError(
                f"fragment {frag_id} of sequence {seq_id} arrived, expected {partial.expected}"
            )
        size = len(chunk) + sum(map(len, more))
        try:
            self._check_room(seq_id, size)
        except RemoteProtocolError:
            self.discard(seq_id)
            raise
        partial.chunks.append(chunk)
        partial.chunks += more
        partial.size += size
        self._held += size
        if frag_id > 1:
            partial.expected = frag_id - 1
            return None
        self.discard(seq_id)
        return partial

    def _check_room(self, seq_id: int, size: int) -> None:
        if self._held + size > self._max_bytes:
            raise RemoteProtocolError(
                f"fragment sequence {seq_id} dropped: incomplete messages would hold "
                f"{self._held + size} bytes, the limit is {self._max_bytes}"
            )


def fragment_headers(
    seq_id: int, size: int, fragment_size: int
) -> Iterator[tuple[bytes, int, int]]:
    """Cut a message body of ``size`` bytes into fragments of at most ``fragment_size``.

    Yields ``(header, start, end)`` per fragment: the header bytes (131, 69 with an empty
    atom cache header for the first, 131, 70 for the rest) and the slice of the body that
    follows it.
    """
    count = max(1, -(-size // fragment_size))
    for index in range(count):
        frag_id = count - index
        start = index * fragment_size
        end = min(size, start + fragment_size)
        if index == 0:
            header = bytes((VERSION, DIST_FRAG_HEADER)) + _IDS.pack(seq_id, frag_id) + b"\x00"
        else:
            header = bytes((VERSION, DIST_FRAG_CONT)) + _IDS.pack(seq_id, frag_id)
        yield header, start, end
