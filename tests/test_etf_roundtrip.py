"""Property tests: every term type round-trips; prefixes and random bytes fail cleanly."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pyerl_node.proto import etf
from pyerl_node.proto.errors import DecodeError
from pyerl_node.proto.terms import Atom, ExactKey, FrozenList, FrozenMap, ImproperList, Term, freeze
from tests import strategies as ts

SETTINGS = settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow],
                    deadline=None)


@SETTINGS
@given(ts.terms())
def test_round_trip(term: Term) -> None:
    data = etf.encode(term)
    assert etf.decode(data) == term
    # Encoding is a function of the term: re-encoding the decoded term gives the same bytes.
    assert etf.encode(etf.decode(data)) == data


@SETTINGS
@given(ts.terms(), st.binary(max_size=8), st.binary(max_size=8))
def test_encode_into_and_decode_from_inside_a_buffer(term: Term, before: bytes,
                                                     after: bytes) -> None:
    buf = bytearray(before)
    etf.encode_into(term, buf)
    assert bytes(buf[len(before):]) == etf.encode(term)[1:]
    buf += after
    decoded, end = etf.decode_from(memoryview(buf), len(before))
    assert decoded == term
    assert end == len(buf) - len(after)


@SETTINGS
@given(ts.terms(), st.sampled_from([True, 1, 6, 9]))
def test_compressed_round_trip(term: Term, level: bool | int) -> None:
    data = etf.encode(term, compressed=level)
    assert etf.decode(data) == term


@SETTINGS
@given(ts.terms(), st.data())
def test_every_proper_prefix_is_a_decode_error(term: Term, data: st.DataObject) -> None:
    encoded = etf.encode(term)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    try:
        etf.decode(encoded[:cut])
    except DecodeError as exc:
        assert 0 <= exc.offset <= cut
    else:
        raise AssertionError(f"prefix of length {cut} decoded")


@SETTINGS
@given(ts.terms())
def test_all_prefixes_of_compressed_terms_fail(term: Term) -> None:
    encoded = etf.encode(term, compressed=9)
    for cut in range(len(encoded)):
        try:
            etf.decode(encoded[:cut])
        except DecodeError:
            continue
        raise AssertionError(f"prefix of length {cut} decoded")


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
@example(b"\x83\x6c\x00\x00\x00\x01\x6a\x6a")
@example(b"\x83\x74\x00\x00\x00\x02\x61\x01\x6a\x61\x01\x6a")
def test_random_bytes_give_a_term_or_decode_error(data: bytes) -> None:
    for payload in (b"\x83" + data, data):
        _decodes_or_fails_cleanly(payload)


@settings(max_examples=500, deadline=None)
@given(ts.terms(), st.data())
def test_mutated_encodings_give_a_term_or_decode_error(term: Term, data: st.DataObject) -> None:
    encoded = bytearray(etf.encode(term))
    index = data.draw(st.integers(min_value=1, max_value=len(encoded) - 1))
    encoded[index] = data.draw(st.integers(min_value=0, max_value=255))
    _decodes_or_fails_cleanly(bytes(encoded))


def _decodes_or_fails_cleanly(payload: bytes) -> None:
    try:
        term = etf.decode(payload)
    except DecodeError:
        return
    # Whatever decodes is a term we can send back.
    assert etf.decode(etf.encode(term)) == term


def test_unhashable_and_colliding_keys_survive() -> None:
    key_list, key_map = freeze([1, [2]]), FrozenMap({Atom("k"): FrozenList([])})
    term = {key_list: 1, key_map: 2, ExactKey(1): b"int", ExactKey(1.0): b"float",
            ExactKey(True): b"atom"}
    decoded = etf.decode(etf.encode(term))
    assert decoded == term
    assert decoded[1] == b"int" and decoded[1.0] == b"float" and decoded[True] == b"atom"
    # The key [1, [2]] came back frozen, nested list included.
    assert FrozenList([1, FrozenList([2])]) in decoded


def test_keys_that_differ_only_in_nested_types_or_the_sign_of_zero() -> None:
    # OTP 27+ keeps 0.0 and -0.0 apart; {1} and {1.0} are different keys in every release.
    term = {ExactKey(0.0): 1, ExactKey(-0.0): 2, ExactKey((1,)): 3, ExactKey((1.0,)): 4}
    data = etf.encode(term)
    decoded = etf.decode(data)
    assert len(decoded) == 4 and etf.encode(decoded) == data
    assert [decoded[k] for k in (0.0, -0.0, (1,), (1.0,))] == [1, 2, 3, 4]


def test_improper_list_tail_that_is_a_list_merges() -> None:
    # [1 | [2 | 3]] is [1, 2 | 3] in Erlang; OTP never sends it nested, but it is valid.
    nested = b"\x83\x6c\x00\x00\x00\x01\x61\x01\x6c\x00\x00\x00\x01\x61\x02\x61\x03"
    assert etf.decode(nested) == ImproperList((1, 2), 3)
    proper = b"\x83\x6c\x00\x00\x00\x01\x61\x01\x6b\x00\x02\x02\x03"
    assert etf.decode(proper) == [1, 2, 3]
