"""Distribution headers (docs/protocol/distribution.md §5.3, §5.4): the atom cache header parser,
fragment ids, the fragment assembler and outbound fragmentation.

``build_atom_cache_header`` is an independent writer of the header layout (used here for
round trips and by the other test modules to pre-load cache slots).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyerl_node.proto.dist_header import (
    ATOM_CACHE_SIZE,
    AtomCache,
    FragmentAssembler,
    fragment_headers,
    read_fragment_ids,
)
from pyerl_node.proto.errors import RemoteProtocolError
from pyerl_node.proto.terms import Atom


def build_atom_cache_header(
    entries: list[tuple[int, str, bool]], *, long_atoms: bool | None = None
) -> bytes:
    """NumberOfAtomCacheRefs, Flags and AtomCacheRefs for ``(slot, atom, new)`` entries."""
    count = len(entries)
    if count == 0:
        return b"\x00"
    texts = [atom.encode() for _, atom, _ in entries]
    if long_atoms is None:
        long_atoms = any(len(t) > 255 for t in texts)
    nibbles = [(8 if new else 0) | (slot >> 8) for slot, _, new in entries]
    nibbles.append(1 if long_atoms else 0)
    flags = bytearray(count // 2 + 1)
    for i, nibble in enumerate(nibbles):
        flags[i >> 1] |= nibble << ((i & 1) * 4)
    out = bytearray((count,)) + flags
    for (slot, _, new), text in zip(entries, texts, strict=True):
        out.append(slot & 0xFF)
        if new:
            out += len(text).to_bytes(2 if long_atoms else 1, "big") + text
    return bytes(out)


# --- the atom cache header ------------------------------------------------------------------

# docs/protocol/distribution.md §5.3 worked example (dist/two_25_25.json, connection 1, b -> a).
WORKED = bytes.fromhex(
    "04" "8fdc00" "dc046240766d" "0500" "7703726578" "071066656174757265735f72657175657374"
    "68"
)


EMPTY = [None] * ATOM_CACHE_SIZE


def test_worked_example() -> None:
    cache = AtomCache()
    refs, end = cache.read_header(WORKED, 0, len(WORKED))
    assert refs == [Atom("b@vm"), Atom(""), Atom("rex"), Atom("features_request")]
    assert WORKED[end] == 0x68  # the control tuple starts right after the header
    assert {i: a for i, a in enumerate(cache.slots) if a is not None} == {
        2012: Atom("b@vm"), 5: Atom(""), 1143: Atom("rex"), 1287: Atom("features_request"),
    }


def test_no_refs() -> None:
    cache = AtomCache()
    assert cache.read_header(b"\x00\x68", 0, 2) == ([], 1)
    assert cache.slots == EMPTY


def test_old_entries_resolve_through_the_cache() -> None:
    cache = AtomCache()
    cache.read_header(WORKED, 0, len(WORKED))
    again = build_atom_cache_header([(1143, "", False), (2012, "", False), (7, "new", True)])
    refs, end = cache.read_header(again, 0, len(again))
    assert refs == [Atom("rex"), Atom("b@vm"), Atom("new")]
    assert end == len(again)


def test_a_new_entry_overwrites_its_slot() -> None:
    cache = AtomCache()
    for atom in ("first", "second"):
        header = build_atom_cache_header([(300, atom, True)])
        cache.read_header(header, 0, len(header))
    assert cache.slots[300] is Atom("second")


def test_a_repeated_header_follows_redefined_slots() -> None:
    # The same reuse-only header bytes mean other atoms once a slot was redefined.
    cache = AtomCache()
    reuse = build_atom_cache_header([(300, "", False), (5, "", False)]) + b"\x68"
    for first in ("one", "two", "one"):
        define = build_atom_cache_header([(300, first, True), (5, "five", True)])
        cache.read_header(define, 0, len(define))
        for _ in range(2):
            assert cache.read_header(reuse, 0, len(reuse)) == (
                [Atom(first), Atom("five")], len(reuse) - 1)
    # ... and a remembered header still has to fit in its packet.
    with pytest.raises(RemoteProtocolError, match="truncated"):
        cache.read_header(reuse, 0, len(reuse) - 2)


def test_long_atoms() -> None:
    text = "ü" * 255  # 510 bytes of UTF-8: needs the 2-byte length
    header = build_atom_cache_header([(1, text, True), (2, "x", True)])
    refs, end = AtomCache().read_header(header, 0, len(header))
    assert refs == [Atom(text), Atom("x")] and end == len(header)


slots = st.integers(0, ATOM_CACHE_SIZE - 1)
atom_texts = st.text(max_size=20) | st.sampled_from(["", "ü" * 255, "x" * 255])


@settings(max_examples=200, deadline=None)
@given(
    defined=st.dictionaries(slots, atom_texts, min_size=1, max_size=12),
    data=st.data(),
    long_atoms=st.booleans(),
)
def test_round_trip(
    defined: dict[int, str], data: st.DataObject, long_atoms: bool
) -> None:
    cache = AtomCache()
    first = build_atom_cache_header([(s, a, True) for s, a in defined.items()])
    refs, _ = cache.read_header(first, 0, len(first))
    assert refs == [Atom(a) for a in defined.values()]
    # A later header mixes references to those slots with new definitions.
    mixed = data.draw(st.lists(
        st.one_of(st.sampled_from(sorted(defined)).map(lambda s: (s, "", False)),
                  st.tuples(slots, atom_texts, st.just(True))),
        max_size=255,
    ))
    if any(len(a.encode()) > 255 for _, a, _ in mixed):
        long_atoms = True
    prefix = b"\xaa\xbb"
    header = prefix + build_atom_cache_header(mixed, long_atoms=long_atoms) + b"\x68"
    expected_cache = list(cache.slots)
    expected_refs = []
    for slot, atom, new in mixed:
        if new:
            expected_cache[slot] = Atom(atom)
        expected_refs.append(expected_cache[slot])
    # Read a reuse-only header twice: the second time it is a remembered one.
    for _ in range(1 if any(new for _, _, new in mixed) else 2):
        refs, end = cache.read_header(header, len(prefix), len(header))
        assert refs == expected_refs
        assert end == len(header) - 1
        assert cache.slots == expected_cache


def test_every_truncation_fails_cleanly_and_leaves_the_cache_alone() -> None:
    header = build_atom_cache_header(
        [(2012, "b@vm", True), (5, "", True), (1143, "rex", True), (1, "x", True)]
    )
    for cut in range(len(header)):
        cache = AtomCache()
        with pytest.raises(RemoteProtocolError, match="truncated"):
            cache.read_header(header + b"\x68\x00", 0, cut)
        assert cache.slots == EMPTY


def test_reusing_an_undefined_slot() -> None:
    header = build_atom_cache_header([(9, "fine", True), (10, "", False)])
    cache = AtomCache()
    with pytest.raises(RemoteProtocolError, match="slot 10, which no header defined"):
        cache.read_header(header, 0, len(header))
    assert cache.slots[9] is None  # nothing of a bad header is kept


def test_bad_atom_text() -> None:
    header = build_atom_cache_header([(3, "ab", True)])[:-1] + b"\xff"
    with pytest.raises(RemoteProtocolError, match="not UTF-8"):
        AtomCache().read_header(header, 0, len(header))
    too_long = build_atom_cache_header([(3, "y" * 256, True)])
    with pytest.raises(RemoteProtocolError, match="256 characters"):
        AtomCache().read_header(too_long, 0, len(too_long))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_random_headers_give_refs_or_a_typed_error(data: bytes) -> None:
    cache = AtomCache()
    cache.slots[0] = Atom("zero")
    try:
        refs, end = cache.read_header(data, 0, len(data))
    except RemoteProtocolError:
        return
    assert end <= len(data)
    assert all(type(a) is Atom for a in refs)


# --- fragment ids ---------------------------------------------------------------------------


def test_fragment_ids() -> None:
    data = b"\x83\x45" + (309237645459).to_bytes(8, "big") + (2).to_bytes(8, "big") + b"\x00"
    assert read_fragment_ids(data, 2, len(data)) == (309237645459, 2, 18)
    with pytest.raises(RemoteProtocolError, match="truncated"):
        read_fragment_ids(data, 2, 17)
    zero = data[:10] + bytes(8)
    with pytest.raises(RemoteProtocolError, match="fragment id 0"):
        read_fragment_ids(zero, 2, len(zero))


# --- the assembler --------------------------------------------------------------------------


def test_assembles_in_order_and_interleaved() -> None:
    asm = FragmentAssembler(max_bytes=1000, max_sequences=4)
    refs_a, refs_b = [Atom("a")], [Atom("b")]
    asm.first(1, 3, refs_a, b"A1")
    asm.first(2, 2, refs_b, b"B1")
    assert asm.add(1, 2, b"A2") is None
    assert asm.pending_bytes == 6 and asm.pending_sequences == 2
    done = asm.add(2, 1, b"B2")
    assert done is not None and (done.joined(), done.refs) == (b"B1B2", refs_b)
    done = asm.add(1, 1, b"A3")
    assert done is not None and (done.joined(), done.refs) == (b"A1A2A3", refs_a)
    assert asm.pending_bytes == 0 and asm.pending_sequences == 0


def test_out_of_order_and_unknown_fragments() -> None:
    asm = FragmentAssembler(max_bytes=1000, max_sequences=4)
    with pytest.raises(RemoteProtocolError, match="sequence 7, which is not open"):
        asm.add(7, 1, b"x")
    asm.first(7, 3, [], b"x")
    with pytest.raises(RemoteProtocolError, match="fragment 1 of sequence 7 arrived, expected 2"):
        asm.add(7, 1, b"y")
    assert asm.pending_sequences == 0 and asm.pending_bytes == 0  # the sequence is gone
    with pytest.raises(RemoteProtocolError, match="not open"):
        asm.add(7, 2, b"z")


def test_bounds() -> None:
    asm = FragmentAssembler(max_bytes=10, max_sequences=2)
    asm.first(1, 5, [], b"12345")
    asm.first(2, 5, [], b"123")
    with pytest.raises(RemoteProtocolError, match="2 already open"):
        asm.first(3, 5, [], b"")
    with pytest.raises(RemoteProtocolError, match="would hold 11 bytes, the limit is 10"):
        asm.add(1, 4, b"123")
    # The sequence that broke the bound is dropped, the other one is intact.
    assert asm.pending_sequences == 1 and asm.pending_bytes == 3
    assert asm.add(2, 4, b"4567") is None
    with pytest.raises(RemoteProtocolError, match="would hold 11"):
        asm.first(4, 2, [], b"1234")
    assert asm.discard(2) and not asm.discard(2)
    assert asm.pending_bytes == 0


# --- outbound fragmentation -----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 5000), fragment_size=st.integers(1, 1200), seq_id=st.integers(
    1, 2**64 - 1))
def test_fragment_headers_cover_the_body(size: int, fragment_size: int, seq_id: int) -> None:
    pieces = list(fragment_headers(seq_id, size, fragment_size))
    count = len(pieces)
    assert count == max(1, -(-size // fragment_size))
    assert [start for _, start, _ in pieces] == [i * fragment_size for i in range(count)]
    assert pieces[-1][2] == size
    assert all(0 < end - start <= fragment_size for _, start, end in pieces) or size == 0
    for index, (header, _, _) in enumerate(pieces):
        kind = 69 if index == 0 else 70
        assert header[:2] == bytes((131, kind))
        assert read_fragment_ids(header, 2, len(header))[:2] == (seq_id, count - index)
        # the first fragment carries an empty atom cache header
        assert len(header) == (19 if index == 0 else 18)
        if index == 0:
            assert header[18] == 0
