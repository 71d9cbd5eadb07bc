"""Fuzzing the term decoder: random bytes and mutated real OTP encodings (vectors/etf/) are
either decoded or refused with a DecodeError -- anything else (IndexError, RecursionError,
struct.error, MemoryError, a hang) is a bug.

What decodes must also re-encode, stably (encoding the decoded re-encoding gives the same
bytes), and print through safe_repr. The example counts are modest by default (the whole fuzz
suite stays within about 20 s); ``PYERL_FUZZ_EXAMPLES=N`` runs N examples per test instead,
with a per-test timeout that grows with N.
Other fuzz suites take their settings and mutator from here.
"""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyerl_node.proto import etf
from pyerl_node.proto.errors import DecodeError
from pyerl_node.proto.safe_repr import safe_repr
from pyerl_node.proto.terms import Atom, Term

VECTORS = Path(__file__).resolve().parent / "vectors" / "etf"
# A decode that takes longer than this on inputs of a few hundred bytes is a hang.
SLOW = 1.0


_EXAMPLES = os.environ.get("PYERL_FUZZ_EXAMPLES")


def fuzz_settings(default: int) -> settings:
    """``default`` examples, or ``PYERL_FUZZ_EXAMPLES`` of them when that is set."""
    examples = int(_EXAMPLES) if _EXAMPLES else default
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


#: Longer runs get a longer per-test timeout (pytest-timeout's 120 s would cut them short);
#: every fuzz module sets ``pytestmark = FUZZ_TIMEOUT``.
FUZZ_TIMEOUT = pytest.mark.timeout(120 + 0.02 * int(_EXAMPLES) if _EXAMPLES else 120)
pytestmark = FUZZ_TIMEOUT


def _corpus() -> list[bytes]:
    found = set()
    for path in sorted(VECTORS.glob("*.json")):
        for term in json.loads(path.read_text())["terms"]:
            for encoding in term["encodings"].values():
                if isinstance(encoding, dict):
                    found.add(bytes.fromhex(encoding["hex"]))
    # Keep the inputs small enough for many mutations per second.
    return sorted(data for data in found if len(data) <= 4096)


CORPUS = _corpus()

# Bytes that make decoders misbehave: huge counts, every tag, version and container starts.
_SPECIAL = [b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x83",
            b"\x68\x01", b"\x6c\x00\x00\x00\x01", b"\x74\x00\x00\x00\x01", b"\x50"]


@st.composite
def mutated(draw: st.DrawFn, samples: list[bytes], keep_first: int = 0) -> bytes:
    """One of ``samples`` with 1..4 edits (bit flips, inserted or deleted bytes, a cut, a
    duplicated slice, a "special" value written over it); its first ``keep_first`` bytes
    stay as they are."""
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "repeat",
                                     "special"]))
        at = draw(st.integers(min(keep_first, len(data)), max(keep_first, len(data) - 1)))
        if kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 16))] * draw(st.integers(2, 50))
        else:
            special = draw(st.sampled_from(_SPECIAL))
            data[at:at + len(special)] = special
    return bytes(data)


def check_decode(data: bytes) -> Term | None:
    """Decode ``data``: a term, or None after a DecodeError; fail on anything else."""
    start = time.perf_counter()
    try:
        term = etf.decode(data)
    except DecodeError as exc:
        # (an offset inside a compressed term counts in its inflated bytes)
        assert exc.offset >= 0 and (exc.offset <= len(data) or data[1:2] == b"\x50"), exc
        return None
    finally:
        assert time.perf_counter() - start < SLOW, f"decoding {len(data)} bytes hung"
    again = etf.encode(term)
    assert etf.encode(etf.decode(again)) == again
    assert len(safe_repr(term)) <= 200
    return term


@fuzz_settings(300)
@given(st.binary(max_size=300).map(lambda b: b"\x83" + b))
def test_random_bytes(data: bytes) -> None:
    check_decode(data)


@fuzz_settings(1000)
@given(mutated(CORPUS, keep_first=1))
def test_mutated_otp_encodings(data: bytes) -> None:
    check_decode(data)


@fuzz_settings(300)
@given(mutated(CORPUS), st.lists(st.sampled_from([None, Atom("a@b"), Atom("true")]),
                                 max_size=4))
def test_mutated_terms_at_an_offset_with_an_atom_cache(
    data: bytes, cache: list[Atom | None]
) -> None:
    # How terms arrive in distribution packets: decode_from, no version byte, cache refs.
    body = data[1:] if data[:1] == b"\x83" else data
    for offset in range(min(3, len(body))):
        try:
            _, end = etf.decode_from(body, offset, atom_cache=cache)
        except DecodeError:
            continue
        assert offset < end <= len(body)


def test_the_mutator_finds_errors_and_terms() -> None:
    # Guards the fuzzing above against testing only one outcome.
    outcomes = set()

    @settings(max_examples=200, deadline=None, database=None, derandomize=True)
    @given(mutated(CORPUS, keep_first=1))
    def probe(data: bytes) -> None:
        outcomes.add(check_decode(data) is None)

    probe()
    assert outcomes == {True, False}
    assert len(CORPUS) > 100


def test_every_prefix_of_every_vector_is_refused() -> None:
    # No truncation of a valid term is mistaken for another term (nor crashes the decoder).
    for data in CORPUS:
        for cut in range(1, len(data)):
            assert check_decode(data[:cut]) is None, data[:cut]


def test_a_deep_key_inside_a_compressed_map() -> None:
    # Compression, a map, a key nested deeper than Python's recursion limit, a duplicate.
    key = b"\x68\x01" * 3000 + b"\x61\x01"
    inner = b"\x74" + struct.pack(">I", 2) + key + b"\x6a" + key + b"\x6a"
    data = b"\x83" + etf.encode(etf.decode(b"\x83" + key))[1:]
    assert check_decode(data) is not None
    packed = b"\x83\x50" + struct.pack(">I", len(inner)) + zlib.compress(inner)
    assert check_decode(packed) is None
