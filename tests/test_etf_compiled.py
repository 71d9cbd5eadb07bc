"""The compiled codec core (``pyerl_node.proto._cetf``) against the pure-Python codec.

The compiled functions must be indistinguishable from the Python ones they stand in for: the
same bytes out of ``encode``/``encode_into``, the same terms out of ``decode``/``decode_from``,
and for every input the Python codec refuses, the same exception with the same message,
offset and tag (so every hostile-input defence is the Python one). Checked on random terms,
on mutated real OTP encodings and on the corner cases of the fast paths (atom cache
references, compressed terms, big binaries, improper lists, depth bounds, arguments).

These tests run where the compiled core is built and not turned off by ``PYERL_NODE_PURE``;
the switch itself is tested in a subprocess either way.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given

import pyerl_node
from pyerl_node.proto import etf
from pyerl_node.proto.errors import DecodeError, EncodeError
from pyerl_node.proto.native import PURE_ENV, pure_requested
from pyerl_node.proto.terms import Atom, ImproperList, Pid, Reference, Term
from tests.strategies import terms
from tests.test_fuzz_etf import CORPUS, FUZZ_TIMEOUT, fuzz_settings, mutated

pytestmark = FUZZ_TIMEOUT

compiled_only = pytest.mark.skipif(not etf.COMPILED, reason="the compiled core is not in use")
PURE = etf.PURE
NOT_AN_ATOM: Any = "not an atom"

Outcome = tuple[str, Any, Any, Any, Any]


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Outcome:
    """What a call gives: its result (bytes, or a decoded term by its encoding and repr), or
    its exception by type, message, offset and tag."""
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:
        return ("raised", type(exc), str(exc), getattr(exc, "offset", None),
                getattr(exc, "tag", None))
    if type(result) is bytes:
        return ("bytes", result, None, None, None)
    if type(result) is tuple and len(result) == 2 and type(result[1]) is int:
        term, end = result  # decode_from
        return ("term", PURE.encode(term), repr(term), end, None)
    return ("term", PURE.encode(result), repr(result), None, None)


def same(name: str, *args: Any, **kwargs: Any) -> Outcome:
    """Call the compiled and the Python ``name`` alike; they must agree. Returns the outcome."""
    got = outcome(getattr(etf, name), *args, **kwargs)
    assert got == outcome(getattr(PURE, name), *args, **kwargs)
    return got


def test_the_flag_says_which_codec_runs() -> None:
    assert pyerl_node.compiled is etf.COMPILED
    assert (etf.decode is not PURE.decode) is etf.COMPILED
    assert (etf.encode_into is not PURE.encode_into) is etf.COMPILED


@pytest.mark.parametrize("value", ["1", "0"])
def test_pyerl_node_pure_keeps_the_compiled_core_out(value: str) -> None:
    env = {**os.environ, PURE_ENV: value}
    out = subprocess.run(
        [sys.executable, "-c", "import pyerl_node; print(pyerl_node.compiled)"],
        env=env, capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    if value == "1":
        assert out == "False"
    elif not pure_requested():  # this process loaded whatever is built, as the child did
        assert out == str(etf.COMPILED)


@compiled_only
@fuzz_settings(300)
@given(terms())
def test_same_bytes_and_terms_as_the_python_codec(term: Term) -> None:
    kind, data, *_ = same("encode", term)
    assert kind == "bytes"
    same("decode", data)
    same("decode_from", data, 1)
    out, pure_out = bytearray(b"head"), bytearray(b"head")
    etf.encode_into(term, out)
    PURE.encode_into(term, pure_out)
    assert out == pure_out


@compiled_only
@fuzz_settings(1000)
@given(mutated(CORPUS))
def test_same_results_and_errors_on_mutated_otp_encodings(data: bytes) -> None:
    same("decode", data)
    if len(data) > 1:
        same("decode_from", data, 1)


def _cache_ref(index: int) -> bytes:
    return bytes((etf.ATOM_CACHE_REF, index))


@compiled_only
def test_atom_cache_references() -> None:
    cache = [Atom("send"), Atom("true"), None, Atom("n@h")]
    # {send, true, <pid on n@h>, [send]}: atoms, a bool, a pid's node from the cache
    pid = b"\x58" + _cache_ref(3) + bytes(12)
    body = b"\x68\x04" + _cache_ref(0) + _cache_ref(1) + pid + b"\x6c\x00\x00\x00\x01" \
        + _cache_ref(0) + b"\x6a"
    kind, *_ = same("decode_from", body, 0, atom_cache=cache)
    term, end = etf.decode_from(body, 0, atom_cache=cache)
    assert kind == "term" and end == len(body)
    assert term == (Atom("send"), True, Pid(Atom("n@h"), 0, 0, 0), [Atom("send")])
    for bad in (_cache_ref(2), _cache_ref(9), b"\x58" + _cache_ref(2) + bytes(12)):
        assert same("decode_from", bad, 0, atom_cache=cache)[0] == "raised"
    assert same("decode_from", _cache_ref(0), 0)[0] == "raised"  # no cache at all
    same("decode_from", _cache_ref(1), 0, atom_cache=tuple(cache))  # any sequence


@compiled_only
def test_compressed_terms_and_levels() -> None:
    term = [(Atom("item"), i, b"payload" * 3) for i in range(200)]
    for level in (True, 1, 9, 0, False):
        _, data, *_ = same("encode", term, compressed=level)
        same("decode", data)
    assert same("encode", term, compressed=10)[1] is EncodeError
    packed = etf.encode(term, compressed=True)
    assert packed[1] == etf.COMPRESSED
    same("decode_from", packed, 1)
    same("decode", packed, max_decompressed_size=100)  # refused: inflates past the bound
    inner = zlib.compress(b"\x61\x01\x61\x02")  # a term and a trailing byte
    same("decode", b"\x83\x50\x00\x00\x00\x04" + inner)


@compiled_only
def test_big_binaries_and_strings() -> None:
    big = os.urandom(100_000)
    term = [big, (big, "text" * 30_000), b"x" * 70_000, "\u00e9" * 10]
    assert same("encode", term)[0] == "bytes"
    same("decode", etf.encode(term))
    assert same("encode", "\ud800")[1] is EncodeError  # a lone surrogate is no UTF-8


@compiled_only
def test_rarer_types_and_values_go_to_the_python_codec() -> None:
    ref = Reference(Atom("n@h"), 7, (1, 2, 3))
    for term in (ImproperList((1, Atom("a")), ref), 2**300, -(2**40), float("inf"),
                 Pid(Atom("n@h"), 2**32, 0, 0), Reference(Atom("n@h"), 1, ()),
                 Pid(NOT_AN_ATOM, 1, 2, 3), bytearray(b"ba"), memoryview(b"mv"), object(),
                 [True, 1], list(range(300)), [1] * 70_000, {(1, 2): [3]}, (1,) * 300):
        same("encode", term)
    out = bytearray(b"keep")
    with pytest.raises(EncodeError):
        etf.encode_into([1, object()], out)
    assert out == b"keep"


@compiled_only
def test_depth_bounds_and_arguments() -> None:
    deep: Term = 0
    for _ in range(10):
        deep = (deep,)
    same("encode", deep, max_depth=10)
    same("encode", deep, max_depth=9)
    data = etf.encode(deep)
    same("decode", data, max_depth=10)
    same("decode", data, max_depth=9)
    same("decode_from", data, 1, max_depth=9)
    # misuse: the Python functions report it
    assert same("decode", data, bogus=1)[1] is TypeError
    assert same("decode_from", data, "1")[1] is TypeError
    assert same("encode", 1, 2)[1] is TypeError
    same("encode_into", 1, b"not a bytearray")
    same("decode", bytearray(data))
    same("decode", memoryview(data))
    same("decode_from", data, len(data))  # past the end
    same("decode", b"\x83")
    same("decode", b"")


@compiled_only
def test_decoded_tuples_of_leaves_leave_the_cyclic_gc() -> None:
    leafy, holds_list = etf.decode(etf.encode(((Atom("a"), 1, b"x", (2.5, None)), ([],))))
    assert not gc.is_tracked(leafy) and not gc.is_tracked(leafy[3])
    # a tuple that holds a list may end up in a cycle: the collector keeps it
    assert gc.is_tracked(holds_list)


@compiled_only
def test_errors_name_offsets_and_tags_as_the_python_codec_does() -> None:
    for data in (b"\x83\x68\x02\x61\x01", b"\x83\x6d\x00\x00\x00\x09abc",
                 b"\x83\x74\x00\x00\x00\x01", b"\x83\x77\x03ab",
                 b"\x83\x46" + b"\x7f\xf0" + bytes(6), b"\x83\x79",
                 b"\x83\x5a\x00\x06\x77\x01a" + bytes(30)):
        kind, error, _, offset, _ = same("decode", data)
        assert kind == "raised" and issubclass(error, DecodeError) and offset is not None


@compiled_only
def test_a_long_decode_lets_other_threads_and_signal_handlers_run() -> None:
    # The compiled loop runs no bytecode of its own: it calls into the eval loop now and
    # then, so that a thread waiting for the GIL gets it and a signal handler runs (and
    # what it raises comes out of decode, as from Python code).
    import signal
    import threading
    import time

    data = etf.encode([(Atom("row"), n, [n], float(n)) for n in range(200_000)])
    ticks: list[float] = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        time.sleep(0.01)
        start = time.perf_counter()
        etf.decode(data)
        end = time.perf_counter()
    finally:
        stop.set()
        thread.join(10)
    during = [t for t in ticks if start < t < end]
    assert end - start > 0.02 and len(during) >= 3, (end - start, len(during))

    class AlarmError(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise AlarmError

    previous = signal.signal(signal.SIGALRM, handler)
    completed = 0
    gc.disable()  # (else the handler may run inside a gc callback, which swallows its error)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.005)
        with pytest.raises(AlarmError):
            for _ in range(50):
                etf.decode(data)
                completed += 1
        assert completed == 0  # raised inside the first decode, not after it
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        gc.enable()
