"""Hostile and malformed input: always a DecodeError with offset and tag, and always fast."""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pyerl_node.proto import etf
from pyerl_node.proto.errors import DecodeError
from pyerl_node.proto.terms import (
    Atom,
    BitBinary,
    FrozenMap,
    ImproperList,
    Pid,
    Port,
    Reference,
)

DEEP = 10**6


@contextmanager
def quickly(limit: float = 2.0) -> Iterator[None]:
    start = time.perf_counter()
    yield
    assert time.perf_counter() - start < limit


def fails(data: bytes, *, offset: int | None = None, tag: int | None = None,
          match: str | None = None, **kwargs: int) -> DecodeError:
    with quickly(), pytest.raises(DecodeError, match=match) as info:
        etf.decode(data, **kwargs)
    if offset is not None:
        assert info.value.offset == offset
    if tag is not None:
        assert info.value.tag == tag
    return info.value


U32 = struct.Struct(">I").pack


@pytest.mark.parametrize(
    ("data", "offset", "tag"),
    [
        (b"\x83\x6c" + U32(2**32 - 1) + b"\x61\x01", 1, etf.LIST),
        (b"\x83\x69" + U32(2**32 - 1) + b"\x61\x01", 1, etf.LARGE_TUPLE),
        (b"\x83\x74" + U32(2**32 - 1) + b"\x61\x01\x61\x01", 1, etf.MAP),
        (b"\x83\x6f" + U32(2**32 - 1) + b"\x00\x01\x02", 1, etf.LARGE_BIG),
        (b"\x83\x6d" + U32(2**32 - 1) + b"abc", 1, etf.BINARY),
        (b"\x83\x4d" + U32(2**32 - 1) + b"\x08abc", 1, etf.BIT_BINARY),
        (b"\x83\x6b\xff\xff" + b"abc", 1, etf.STRING),
        (b"\x83\x76\xff\xff" + b"abc", 1, etf.ATOM_UTF8),
        (b"\x83\x5a\x00\x05\x77\x01a" + U32(1) + U32(7), 1, etf.NEWER_REFERENCE),
    ],
)
def test_claimed_sizes_beyond_the_input(data: bytes, offset: int, tag: int) -> None:
    fails(data, offset=offset, tag=tag)


def test_small_tuple_cut_short() -> None:
    # 255 elements claimed, one present: the input ends where the second should start.
    fails(b"\x83\x68\xff\x61\x01", offset=5, tag=None, match="truncated")


def test_compressed_term_claiming_4_gib() -> None:
    payload = zlib.compress(b"\x6a")
    fails(b"\x83\x50" + U32(2**32 - 1) + payload, offset=1, tag=etf.COMPRESSED, match="limit")


def test_zlib_bomb_stops_at_the_claimed_size() -> None:
    bomb = zlib.compress(b"\x6d" + U32(50_000_000) + bytes(50_000_000), 9)
    assert len(bomb) < 100_000
    fails(b"\x83\x50" + U32(1000) + bomb, tag=etf.COMPRESSED, match="more than")
    # Claiming the true size but above the configured limit is refused before inflating.
    fails(b"\x83\x50" + U32(50_000_005) + bomb, tag=etf.COMPRESSED, match="limit",
          max_decompressed_size=1 << 20)


@pytest.mark.parametrize(
    "data",
    [
        b"\x83\x50" + U32(5) + zlib.compress(b"\x61\x01"),  # inflates to less than claimed
        b"\x83\x50" + U32(2) + b"garbage!",  # not zlib
        b"\x83\x50" + U32(2) + zlib.compress(b"\x61\x01")[:-3],  # stream cut short
        b"\x83\x50" + U32(3) + zlib.compress(b"\x61\x01\x61"),  # trailing bytes inside
        b"\x83\x50" + U32(0) + zlib.compress(b""),  # empty
    ],
)
def test_bad_compressed_terms(data: bytes) -> None:
    fails(data, offset=1, tag=etf.COMPRESSED)


@pytest.mark.parametrize(("opener", "tag"), [
    (b"\x6c\x00\x00\x00\x01", etf.LIST),
    (b"\x68\x01", etf.SMALL_TUPLE),
    (b"\x74\x00\x00\x00\x01\x61\x01", etf.MAP),
])
def test_million_deep_nesting_is_refused_at_max_depth(opener: bytes, tag: int) -> None:
    data = b"\x83" + opener * DEEP + b"\x6a"
    err = fails(data, tag=tag, match="max_depth")
    assert err.offset == 1 + len(opener) * etf.DEFAULT_MAX_DEPTH


def test_deep_but_legal_terms_decode_without_recursion_error() -> None:
    # A left-nested iolist far deeper than Python's recursion limit.
    depth = etf.DEFAULT_MAX_DEPTH - 1
    data = b"\x83" + b"\x6c\x00\x00\x00\x02" * depth + b"\x6a" + b"\x61\x07\x6a" * depth
    with quickly():
        term = etf.decode(data)
    for _ in range(depth):
        assert len(term) == 2 and term[1] == 7
        term = term[0]
    assert term == []
    with quickly():
        assert etf.encode(etf.decode(data)) == data


def test_max_depth_is_a_parameter() -> None:
    data = b"\x83" + b"\x68\x01" * 10 + b"\x6a"
    assert etf.decode(data, max_depth=10) is not None
    fails(data, max_depth=9, match="max_depth", offset=1 + 2 * 9)
    with pytest.raises(DecodeError, match="max_depth"):
        etf.decode_from(data, 1, max_depth=9)


@pytest.mark.parametrize(("data", "offset", "tag", "match"), [
    (b"", 0, None, "empty"),
    (b"\x82\x61\x01", 0, 0x82, "version"),
    (b"\x83", 1, None, "truncated"),
    (b"\x83\x61\x01\x00", 3, None, "trailing"),
    (b"\x83\x79", 1, 121, "LOCAL_EXT"),
    (b"\x83\x75\x00\x00\x00\x00", 1, 117, "FUN_EXT"),
    (b"\x83\x52\x00", 1, 82, "atom cache"),
    (b"\x83\x68\x01\x50\x00\x00\x00\x01\x00", 3, 80, "top level"),
    (b"\x83\x01", 1, 1, "unknown tag 1"),
    (b"\x83\x77\x02\xc3\x28", 1, 119, "UTF-8"),
    (b"\x83\x76\x01\x00" + b"a" * 256, 1, 118, "255"),
    (b"\x83\x46" + struct.pack(">d", float("nan")), 1, 70, "finite"),
    (b"\x83\x46" + struct.pack(">d", float("inf")), 1, 70, "finite"),
    (b"\x83\x63" + b"nan".ljust(31, b"\0"), 1, 99, "finite"),
    (b"\x83\x63" + b"1.0x".ljust(31, b"\0"), 1, 99, "not a float"),
    (b"\x83\x6e\x01\x02\x05", 1, 110, "sign"),
    (b"\x83\x4d\x00\x00\x00\x01\x09\xff", 1, 77, "1..8"),
    (b"\x83\x4d\x00\x00\x00\x00\x03", 1, 77, "empty bitstring"),
    (b"\x83\x5a\x00\x00\x77\x01a\x00\x00\x00\x01", 1, 90, "1..5"),
    (b"\x83\x5a\x00\x06\x77\x01a" + U32(1) * 7, 1, 90, "1..5"),
    (b"\x83\x58\x61\x01" + U32(1) * 3, 2, 97, "expected an atom"),
    (b"\x83\x74\x00\x00\x00\x02\x61\x01\x6a\x61\x01\x6a", 12, 116, "duplicate"),
    (b"\x83\x71\x77\x01m\x77\x01f\x62\x00\x00\x00\x01", 1, 113, "arity"),
])
def test_malformed_input(data: bytes, offset: int, tag: int | None, match: str) -> None:
    fails(data, offset=offset, tag=tag, match=match)


def _fun(size_delta: int = 0, pid: bytes = b"\x58\x77\x03a@b" + U32(1) * 3,
         free: bytes = b"\x61\x2a") -> bytes:
    """A NEW_FUN_EXT (no version byte) of module m with one free variable."""
    body = (b"\x01" + bytes(16) + U32(0) + U32(1) + b"\x77\x01m" + b"\x61\x00" + b"\x61\x00"
            + pid + free)
    return b"\x70" + U32(len(body) + 4 + size_delta) + body


def test_fun_fields_are_checked() -> None:
    fun = etf.decode(b"\x83" + _fun())
    assert fun.free_vars == (42,) and fun.module is Atom("m")
    fails(b"\x83" + _fun(size_delta=1), offset=1, tag=etf.NEW_FUN, match="size")
    fails(b"\x83" + _fun(pid=b"\x61\x01"), offset=1, tag=etf.NEW_FUN, match="pid")


def test_atom_cache_refs() -> None:
    cache = [Atom("node@host"), None, Atom("true")]
    data = b"\x68\x03\x52\x00\x52\x02\x58\x52\x00" + U32(1) + U32(2) + U32(3)
    term, end = etf.decode_from(data, 0, atom_cache=cache)
    assert end == len(data)
    assert term == (Atom("node@host"), True, Pid(Atom("node@host"), 1, 2, 3))
    with pytest.raises(DecodeError, match="slot 1 is empty") as info:
        etf.decode_from(b"\x52\x01", atom_cache=cache)
    assert (info.value.offset, info.value.tag) == (0, etf.ATOM_CACHE_REF)
    with pytest.raises(DecodeError, match="slot 7"):
        etf.decode_from(b"\x52\x07", atom_cache=cache)
    with pytest.raises(DecodeError, match="no atom cache"):
        etf.decode_from(b"\x52\x00")


def test_decode_from_offset_past_the_end() -> None:
    with pytest.raises(DecodeError, match="no term"):
        etf.decode_from(b"\x61\x01", 2)


def test_old_and_latin1_forms_decode() -> None:
    node = b"\x64\x00\x03a@b"
    assert etf.decode(b"\x83\x67" + node + U32(1) + U32(2) + b"\x03") == Pid(
        Atom("a@b"), 1, 2, 3)
    assert etf.decode(b"\x83\x66" + node + U32(9) + b"\x01") == Port(Atom("a@b"), 9, 1)
    assert etf.decode(b"\x83\x65" + node + U32(9) + b"\x01") == Reference(
        Atom("a@b"), 1, (9,))
    assert etf.decode(b"\x83\x72\x00\x02" + node + b"\x02" + U32(5) + U32(6)) == Reference(
        Atom("a@b"), 2, (5, 6))
    assert etf.decode(b"\x83\x73\x03\xe5\xe4\xf6") is Atom("åäö")
    assert etf.decode(b"\x83\x63" + b"1.50000000000000000000e+00".ljust(31, b"\0")) == 1.5
    # Unused low bits of a bitstring are cleared, as the BEAM ignores them.
    assert etf.decode(b"\x83\x4d\x00\x00\x00\x01\x01\xff") == BitBinary(b"\x80", 1)
    assert etf.decode(b"\x83\x4d\x00\x00\x00\x01\x08\xff") == b"\xff"


def test_map_key_types_collision_and_unhashable() -> None:
    # #{[1] => a, 1 => b, 1.0 => c}
    data = (b"\x83\x74\x00\x00\x00\x03" + b"\x6b\x00\x01\x01\x77\x01a" + b"\x61\x01\x77\x01b"
            + b"\x46" + struct.pack(">d", 1.0) + b"\x77\x01c")
    term = etf.decode(data)
    assert len(term) == 3 and term[1] is Atom("b") and term[1.0] is Atom("c")
    assert etf.encode(term) == data


def test_rare_shapes() -> None:
    assert etf.decode(b"\x83\x69\x00\x00\x00\x00") == ()  # LARGE_TUPLE_EXT of arity 0
    assert etf.decode(b"\x83\x6c\x00\x00\x00\x00\x61\x05") == 5  # LIST_EXT [| 5] is 5
    assert etf.decode(b"\x83\x4d\x00\x00\x00\x00\x00") == b""  # an empty bitstring
    deep = b"\x83" + b"\x69\x00\x00\x00\x01" * 30 + b"\x6a"
    fails(deep, max_depth=29, match="max_depth", tag=etf.LARGE_TUPLE)
    nested = _fun()
    for _ in range(3):  # a fun whose free variable is a fun whose ...
        nested = _fun(free=nested)
    assert etf.decode(b"\x83" + nested).free_vars[0].free_vars[0].module is Atom("m")
    fails(b"\x83" + nested, max_depth=3, match="max_depth", tag=etf.NEW_FUN)


def test_fun_fields_must_be_integers() -> None:
    body = (b"\x01" + bytes(16) + U32(0) + U32(0) + b"\x77\x01m" + b"\x77\x01x" + b"\x61\x00"
            + b"\x58\x77\x03a@b" + U32(1) * 3)
    fails(b"\x83\x70" + U32(len(body) + 4) + body, offset=34, tag=etf.SMALL_ATOM_UTF8,
          match="expected an integer")


def test_map_key_too_deep_for_python_to_freeze() -> None:
    # A list key nested deeper than Python's recursion limit: refused, not a RecursionError.
    depth = 5000
    key = b"\x6c\x00\x00\x00\x01" * depth + b"\x6a" * (depth + 1)
    fails(b"\x83\x74\x00\x00\x00\x01" + key + b"\x61\x01", tag=etf.MAP,
          match="cannot be represented")


def test_pid_cache_is_bounded_and_stays_correct() -> None:
    prefix = b"\x83\x58\x77\x03a@b"
    for i in range(etf._PID_CACHE_MAX + 10):
        assert etf.decode(prefix + U32(i) + U32(0) + U32(1)).id == i
    assert len(etf._PIDS) <= etf._PID_CACHE_MAX


def test_chains_of_list_tails_decode_in_linear_time_and_no_depth() -> None:
    # [1 | [1 | [1 | ... ]]] written cell by cell: valid, never sent by OTP, and a classic
    # way to make a naive decoder copy quadratically or recurse once per cell.
    cells = 200_000
    with quickly(1.5):
        proper = etf.decode(b"\x83" + b"\x6c\x00\x00\x00\x01\x61\x01" * cells + b"\x6a")
        improper = etf.decode(b"\x83" + b"\x6c\x00\x00\x00\x01\x61\x01" * cells + b"\x61\x02")
    assert proper == [1] * cells
    assert improper == ImproperList((1,) * cells, 2)


# --- hash flooding, deep keys, caches ----------------------------------------------------------

P61 = 2**61 - 1  # Python hashes an int modulo this: K * P61 all hash to 0


def _int_map(keys: list[int]) -> bytes:
    """The map ``#{K => 1}`` for ``keys``, written without building a dict (which would take
    the quadratic time the decoder avoids)."""
    return b"\x83\x74" + U32(len(keys)) + b"".join(etf.encode(k)[1:] + b"\x61\x01" for k in keys)


def test_a_map_of_colliding_integer_keys_is_refused_quickly() -> None:
    # 50,000 keys with one hash, 0.7 MB: building the dict would take about half a minute.
    data = _int_map([k * P61 for k in range(1, 50_001)])
    with quickly(1.0):
        err = fails(data, tag=etf.MAP, match="hash flooding")
    assert "50000 keys" in str(err)
    # The same behind an unhashable key (the slow path, which freezes keys first).
    flat = _int_map([k * P61 for k in range(1, 40_000)])[6:]
    with_list = b"\x83\x74" + U32(40_000) + b"\x6b\x00\x01\x07\x61\x01" + flat
    with quickly(1.0):
        fails(with_list, tag=etf.MAP, match="hash flooding")


def test_equal_hashes_that_real_maps_have_are_accepted() -> None:
    # Erlang-distinct keys that Python hashes alike come in groups of at most four.
    keys: list[object] = []
    for n in range(2, 500):
        keys += [n, float(n)]
    keys += [0, 0.0, -0.0, False, 1, 1.0, True, -1, -2, -1.0, -2.0]
    body = b"".join(etf.encode(k)[1:] + b"\x6a" for k in keys)
    term = etf.decode(b"\x83\x74" + U32(len(keys)) + body)
    assert len(term) == len(keys) and term[7] == [] and term[-0.0] == []
    # Some colliding keys in a big map cost little and pass; beyond that the map is refused.
    etf.decode(_int_map(list(range(1000)) + [k * P61 for k in range(1, 60)]))
    fails(_int_map(list(range(1000)) + [k * P61 for k in range(1, 70)]), match="flooding")
    # A map below the checked size costs at most its size per key: not checked at all.
    assert len(etf.decode(_int_map([k * P61 for k in range(1, 32)]))) == 31


def test_deep_equal_keys_are_a_decode_error_not_a_recursion_error() -> None:
    key = b"\x68\x01" * 5000 + b"\x6a"
    fails(b"\x83\x74" + U32(2) + key + b"\x61\x01" + key + b"\x61\x02", tag=etf.MAP,
          match="cannot be represented")


def test_python_equal_map_keys_compare_in_linear_time() -> None:
    # #{#{1 => x, ...} => a, #{1.0 => x, ...} => b}: the two keys are equal in Python, so
    # they become ExactKeys, whose comparison must not scan one map per key of the other.
    n = 20_000
    ints = dict.fromkeys(range(n), 0)
    floats = dict.fromkeys(map(float, range(n)), 0)
    data = b"\x83\x74" + U32(2) + etf.encode(ints)[1:] + b"\x61\x01" + etf.encode(
        floats)[1:] + b"\x61\x02"
    with quickly(1.0):
        term = etf.decode(data)
    assert sorted(term.values()) == [1, 2]
    assert etf.encode(term) == data


def test_atom_caches_tell_the_length_forms_apart() -> None:
    # Found by fuzzing: the 15 bytes "\x0e" + 14 text bytes are a whole SMALL_ATOM_UTF8, and
    # also the start of an ATOM_UTF8 (2-byte length 0x0e..) cut short. One cache for both
    # tags decoded the truncated one as the cached atom.
    text = "ünïcödé€".encode()
    assert len(text) == 14
    assert etf.decode(b"\x83\x77\x0e" + text) is Atom("ünïcödé€")
    fails(b"\x83\x76\x0e" + text, tag=etf.ATOM_UTF8, match="truncated")
    # ... and the same bytes read as SMALL (1-byte length) or ATOM (2-byte) are other atoms.
    latin = b"\x00\x05hello"
    assert etf.decode(b"\x83\x64" + latin) is Atom("hello")
    fails(b"\x83\x73" + latin, match="trailing")


def test_compressed_terms_are_bounded_by_the_frame_limit_by_default() -> None:
    assert etf.DEFAULT_MAX_DECOMPRESSED_SIZE == 1 << 30
    payload = zlib.compress(b"\x6a")
    fails(b"\x83\x50" + U32((1 << 30) + 1) + payload, tag=etf.COMPRESSED, match="limit")
    fails(b"\x83\x50" + U32(10) + payload, tag=etf.COMPRESSED, match="less than")


def test_atom_caches_are_bounded_and_emptied_when_full() -> None:
    for i in range(etf._ATOM_CACHE_MAX + 10):
        name = f"cache_fill_{i}".encode()
        assert etf.decode(b"\x83\x77" + bytes((len(name),)) + name).name == name.decode()
    assert 0 < len(etf._UTF8_ATOMS) <= etf._ATOM_CACHE_MAX
    assert etf.decode(b"\x83\x77\x0ccache_fill_0") is Atom("cache_fill_0")


def _colliding_pairs(count: int) -> list[tuple[int, int]]:
    """``count`` pairs ``(a, b)`` of small ints whose tuples all have one hash: CPython's tuple
    hash (xxHash-like) can be inverted lane by lane, so a peer can craft such keys."""
    mask = 2**64 - 1
    prime1, prime2, prime5 = 11400714785074694791, 14029467366897019727, 2870177450012600261
    target = hash((1, 2)) & mask
    before_length = (target - (2 ^ (prime5 ^ 3527539))) & mask
    unmixed = (before_length * pow(prime1, -1, 2**64)) & mask
    unrotated = ((unmixed >> 31) | (unmixed << 33)) & mask
    inverse2 = pow(prime2, -1, 2**64)
    pairs: list[tuple[int, int]] = []
    a = 0
    while len(pairs) < count:
        a += 1
        lane = (prime5 + a * prime2) & mask
        first = (((lane << 31) | (lane >> 33)) * prime1) & mask
        b = ((unrotated - first) * inverse2) & mask
        if b < P61:  # an int whose hash is itself
            pairs.append((a, b))
    assert len({hash(p) for p in pairs}) == 1  # (the a are distinct: so are the pairs)
    return pairs


def test_colliding_tuple_keys_are_refused() -> None:
    pairs = _colliding_pairs(5000)
    data = b"\x83\x74" + U32(len(pairs)) + b"".join(etf.encode(p)[1:] + b"\x6a" for p in pairs)
    with quickly(1.0):
        fails(data, tag=etf.MAP, match="hash flooding")


def test_a_map_key_whose_entries_collide_freezes_in_linear_time() -> None:
    # #{#{A1 => B1, A2 => B2, ...} => ok}: the inner map's keys hash apart, but its entries
    # {Ai, Bi} all hash alike; freezing it (a map used as a key) must not compare them.
    pairs = _colliding_pairs(20_000)
    inner = b"\x74" + U32(len(pairs)) + b"".join(
        etf.encode(a)[1:] + etf.encode(b)[1:] for a, b in pairs)
    data = b"\x83\x74" + U32(1) + inner + b"\x77\x02ok"
    with quickly(1.0):
        term = etf.decode(data)
    (key,) = term
    assert isinstance(key, FrozenMap) and len(key) == 20_000 and term[key] is Atom("ok")


def test_a_big_compressed_term_inflates_in_steps_to_the_same_term_and_end() -> None:
    # Past the inflate step (4 MiB) a term is inflated in pieces, so that other threads run
    # meanwhile; the term, the offset after it and every refusal are those of one piece.
    term = [bytes(3 << 20), b"x" * (3 << 20), list(range(1000))]
    packed = etf.encode(term, compressed=1)
    assert etf.decode_from(packed + b"\x61\x07", 1) == (term, len(packed))
    inner = etf.encode(term)[1:]
    stream = zlib.compress(inner, 1)
    for claim, why in ((len(inner) + (1 << 20), "less"), (len(inner) - (1 << 20), "more")):
        fails(b"\x83\x50" + U32(claim) + stream, tag=etf.COMPRESSED, match=why)
    fails(b"\x83\x50" + U32(len(inner)) + stream[:len(stream) // 2], tag=etf.COMPRESSED)
