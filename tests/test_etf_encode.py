"""What the encoder emits for each Python type, and how it refuses what it cannot encode."""

from __future__ import annotations

import enum
from collections import namedtuple

import pytest

from pyerl_node.proto import etf
from pyerl_node.proto.errors import EncodeError
from pyerl_node.proto.terms import (
    Atom,
    BitBinary,
    Export,
    Fun,
    ImproperList,
    Pid,
    Port,
    Reference,
    Term,
)

NODE = Atom("a@b")
A_AT_B = b"\x77\x03a@b"


@pytest.mark.parametrize(("term", "hexbytes"), [
    (0, "6100"), (255, "61ff"), (256, "6200000100"), (-1, "62ffffffff"),
    (2**31 - 1, "627fffffff"), (-(2**31), "6280000000"),
    (2**31, "6e040000000080"), (-(2**31) - 1, "6e040101000080"),
    (2**64, "6e0900000000000000000001"),
    (1.5, "463ff8000000000000"), (-0.0, "468000000000000000"),
    (True, "770474727565"), (False, "770566616c7365"), (None, "77036e696c"),
    (Atom(""), "7700"), (Atom("ok"), "77026f6b"),
    ("hé", "6d0000000368c3a9"), (b"\x00\x01", "6d000000020001"),
    (bytearray(b"x"), "6d0000000178"), (BitBinary(b"\xa0", 3), "4d00000001 03a0"),
    ((), "6800"), ([], "6a"), ({}, "7400000000"),
    ([1, 2, 3], "6b0003010203"),
    ([1, 256], "6c00000002610162000001006a"),
    ([True], "6c00000001770474727565" "6a"),
    (ImproperList((1,), 2), "6c0000000161016102"),
    (ImproperList((1,), None), "6c00000001610177036e696c"),
    (Export(Atom("m"), Atom("f"), 2), "71 77016d 770166 6102"),
])
def test_encodings(term: Term, hexbytes: str) -> None:
    assert etf.encode(term) == b"\x83" + bytes.fromhex(hexbytes.replace(" ", ""))


def test_big_and_identifier_encodings() -> None:
    assert etf.encode(1 << 2040)[:7] == b"\x83\x6f\x00\x00\x01\x00\x00"  # 256 digits: LARGE
    assert etf.encode(-(1 << 2039))[:3] == b"\x83\x6e\xff"
    assert etf.encode(Pid(NODE, 1, 2, 3)) == (b"\x83\x58" + A_AT_B
                                              + bytes.fromhex("000000010000000200000003"))
    # OTP 26+ writes every port as V4_PORT_EXT.
    assert etf.encode(Port(NODE, 7, 3)) == (b"\x83\x78" + A_AT_B
                                            + bytes.fromhex("000000000000000700000003"))
    assert etf.encode(Reference(NODE, 3, (1, 2, 3, 4, 5))) == (
        b"\x83\x5a\x00\x05" + A_AT_B + bytes.fromhex("00000003" "00000001000000020000000300000004"
                                                     "00000005"))
    long_name = Atom("€" * 100)  # 300 bytes of UTF-8: ATOM_UTF8_EXT with a 16-bit length
    assert etf.encode(long_name)[:4] == b"\x83\x76\x01\x2c"


def test_string_ext_boundaries() -> None:
    assert etf.encode([0] * 65535)[:4] == b"\x83\x6b\xff\xff"
    assert etf.encode([0] * 65536)[:2] == b"\x83\x6c"
    assert etf.encode([1, True])[:2] == b"\x83\x6c"  # True is the atom, not 1
    assert etf.encode([1, -1])[:2] == b"\x83\x6c"


def test_map_order_is_the_dicts_own() -> None:
    data = etf.encode({Atom("z"): 1, Atom("a"): 2})
    assert data == bytes.fromhex("837400000002" "77017a6101" "7701616102")


def test_subclasses_encode_as_their_base_type() -> None:
    class Color(enum.IntEnum):
        RED = 1

    Point = namedtuple("Point", "x y")
    assert etf.encode(Color.RED) == etf.encode(1)
    assert etf.encode(Point(1, 2)) == etf.encode((1, 2))


@pytest.mark.parametrize(("term", "match"), [
    (object(), "object"),
    ({1: {2, 3}}, "set"),
    (float("nan"), "nan"),
    (float("-inf"), "inf"),
    ("\udc80", "UTF-8"),
    (Atom("x" * 256), "255"),
    (Pid(NODE, 2**32, 0, 0), "range"),
    (Pid("a@b", 1, 0, 0), "Atom"),  # type: ignore[arg-type]
    (Reference(NODE, 0, ()), "1..5"),
    (Export(Atom("m"), Atom("f"), 256), "arity"),
])
def test_unencodable_values(term: Term, match: str) -> None:
    with pytest.raises(EncodeError, match=match):
        etf.encode(term)


def test_encode_into_appends_and_leaves_the_buffer_intact_on_error() -> None:
    buf = bytearray(b"hdr")
    etf.encode_into((Atom("ok"), 1), buf)
    assert buf == b"hdr\x68\x02\x77\x02ok\x61\x01"
    with pytest.raises(EncodeError):
        etf.encode_into([1, 2, object()], buf)
    assert buf == b"hdr\x68\x02\x77\x02ok\x61\x01"


def test_deep_python_terms() -> None:
    term: Term = []
    for _ in range(etf.DEFAULT_MAX_DEPTH + 1):
        term = [term, 1]
    with pytest.raises(EncodeError, match="max_depth"):
        etf.encode(term)
    assert etf.encode(term[0])[:6] == b"\x83\x6c\x00\x00\x00\x02"
    nested: Term = ()
    for _ in range(100):
        nested = (nested,)
    with pytest.raises(EncodeError, match="max_depth"):
        etf.encode(nested, max_depth=99)
    assert etf.decode(etf.encode(nested, max_depth=100)) == nested


@pytest.mark.parametrize("level", [True, 1, 9])
def test_compression(level: bool | int) -> None:
    term = [Atom("same")] * 1000
    packed = etf.encode(term, compressed=level)
    assert packed[:2] == b"\x83\x50" and len(packed) < 100
    assert etf.decode(packed) == term
    # Not worth it: term_to_binary leaves small terms uncompressed too.
    assert etf.encode(1, compressed=level) == etf.encode(1)


@pytest.mark.parametrize("level", [-1, 10, "9"])
def test_bad_compression_level(level: object) -> None:
    with pytest.raises(EncodeError, match="level"):
        etf.encode(1, compressed=level)  # type: ignore[arg-type]


def test_big_binaries_are_joined_not_copied_twice() -> None:
    big = bytes(range(256)) * 400  # 100 KiB, above the size where encode() joins
    term = [big, "ü" * 50_000, (big,)]
    data = etf.encode(term)
    buf = bytearray()
    etf.encode_into(term, buf)
    assert data == b"\x83" + buf
    assert etf.decode(data) == [big, ("ü" * 50_000).encode(), (big,)]


def test_deep_maps_and_improper_lists() -> None:
    for make in (lambda t: {1: t}, lambda t: ImproperList((t,), 1)):
        term: Term = 0
        for _ in range(10):
            term = make(term)
        assert etf.decode(etf.encode(term, max_depth=10)) == term
        with pytest.raises(EncodeError, match="max_depth"):
            etf.encode(term, max_depth=9)


def test_bad_funs() -> None:
    pid = Pid(NODE, 1, 0, 0)
    with pytest.raises(EncodeError, match="16-byte"):
        etf.encode(Fun(0, b"short", 0, Atom("m"), 0, 0, pid, ()))
    fun = Fun(0, bytes(16), 0, Atom("m"), 0, 0, pid, ())
    for _ in range(5):
        fun = Fun(0, bytes(16), 0, Atom("m"), 0, 0, pid, (fun,))
    assert etf.decode(etf.encode(fun)) == fun
    with pytest.raises(EncodeError, match="max_depth"):
        etf.encode(fun, max_depth=3)


def test_deep_subclasses_and_funs_need_no_recursion() -> None:
    class Wrapped(tuple):  # type: ignore[type-arg]
        pass

    plain: Term = ()
    wrapped: Term = Wrapped()
    pid = Pid(NODE, 1, 0, 0)
    fun: Term = 0
    for _ in range(5000):  # far beyond Python's recursion limit
        plain, wrapped = (plain,), Wrapped((wrapped,))
        fun = Fun(1, bytes(16), 0, Atom("m"), 0, 0, pid, (fun,))
    assert etf.encode(wrapped) == etf.encode(plain)
    data = etf.encode(fun)
    assert etf.encode(etf.decode(data)) == data
