"""The BEAM as the oracle for the codec: OTP 25 and OTP 28 check thousands of generated terms.

For every hypothesis-generated term, Python sends a real ``erl`` (``-noshell``, not
distributed, talking over stdin/stdout, one hex line per term) two things: the term encoded by
``pyerl_node.proto.etf.encode``, and an Erlang-syntax rendering of the same term. The BEAM
builds the term from the source with ``erl_scan``/``erl_parse``/``erl_eval`` (pids, ports and
references, which have no syntax, by funs that assemble their external format from the
fields), checks ``binary_to_term(OurBytes) =:= Built`` and answers with
``term_to_binary(Built)``, which Python decodes and compares with the original term. Where our
encoding is canonical (no maps, whose order OTP 26+ takes from its atom table; on OTP 25 also
no ports, which it writes as NEW_PORT_EXT) the BEAM's bytes must equal ours exactly.

Local funs (closures) cannot be written as source; they are covered by the captured vectors.
"""

from __future__ import annotations

import math
import queue
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interop_tests.runtimes import OTP_RELEASES, find_erl
from pyerl_node.proto import etf
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
)
from tests import strategies as ts

BATCH = 20
BATCHES = 400  # 8000 generated terms per release
REPLY_TIMEOUT = 30.0

# Pids, ports and references are assembled from their fields in their external format (by
# Erlang code, independently of our encoder): there is no other way to make a remote one.
_ORACLE = r"""
P = fun(N, I, S, C) -> binary_to_term(<<131, 88, 119, (byte_size(N)), N/binary,
                                          I:32, S:32, C:32>>) end,
Po = fun(N, I, C) -> binary_to_term(<<131, 120, 119, (byte_size(N)), N/binary, I:64, C:32>>) end,
R = fun(N, C, Ids) -> binary_to_term(<<131, 90, (length(Ids)):16, 119, (byte_size(N)),
                                       N/binary, C:32, << <<X:32>> || X <- Ids >>/binary>>) end,
Bindings = lists:foldl(fun({K, V}, B) -> erl_eval:add_binding(K, V, B) end,
                       erl_eval:new_bindings(), [{'P', P}, {'Po', Po}, {'R', R}]),
Build = fun(Src) ->
    {ok, Tokens, _} = erl_scan:string(Src),
    {ok, Exprs} = erl_parse:parse_exprs(Tokens),
    {value, Value, _} = erl_eval:exprs(Exprs, Bindings),
    Value
end,
Hex = fun(S) -> binary:decode_hex(list_to_binary(S)) end,
Loop = fun Loop() ->
    case io:get_line(standard_io, "") of
        eof -> halt(0);
        Line ->
            [Ours, Src] = string:lexemes(string:trim(Line), " "),
            Reply = try
                Built = Build(unicode:characters_to_list(Hex(Src)) ++ "."),
                Same = binary_to_term(Hex(Ours)) =:= Built,
                [atom_to_list(Same), " ",
                 binary:encode_hex(term_to_binary(Built, [{minor_version, 2}]))]
            catch Class:Reason:Stack ->
                Why = io_lib:format("~0tp", [{Class, Reason, hd(Stack)}]),
                ["error ", binary:encode_hex(unicode:characters_to_binary(Why))]
            end,
            io:put_chars([Reply, "\n"]),
            Loop()
    end
end,
Loop().
"""


class Oracle:
    """One ``erl`` process answering one line per term; stopped by pid."""

    def __init__(self, release: str) -> None:
        erl = find_erl(release)
        if erl is None:
            pytest.skip(f"OTP {release} is not installed")
        self.release = release
        self.checked = 0
        self.proc = subprocess.Popen(
            [str(erl), "-noshell", "-eval", _ORACLE],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, bufsize=1,
        )
        # A reader thread, so that every wait for a reply can be bounded.
        self.replies: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.replies.put(line.strip())
        self.replies.put("")  # the BEAM exited

    def ask(self, lines: list[str]) -> list[str]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(lines))
        self.proc.stdin.flush()
        replies = []
        for _ in lines:
            try:
                reply = self.replies.get(timeout=REPLY_TIMEOUT)
            except queue.Empty:
                raise TimeoutError(f"OTP {self.release}: no answer in {REPLY_TIMEOUT}s") from None
            if not reply:
                raise ConnectionError(f"OTP {self.release} exited ({self.proc.poll()})")
            replies.append(reply)
        return replies

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # eof: the loop halts
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="module", params=OTP_RELEASES)
def oracle(request: pytest.FixtureRequest) -> Iterator[Oracle]:
    beam = Oracle(request.param)
    yield beam
    beam.stop()
    print(f"\nOTP {beam.release}: {beam.checked} terms checked by the BEAM oracle")


# --- Python term -> Erlang source ------------------------------------------------------------

def _atom_source(name: str) -> str:
    body = "".join(
        ch if ch.isprintable() and ch not in "'\\" else f"\\x{{{ord(ch):X}}}" for ch in name
    )
    return f"'{body}'"


def _float_source(value: float) -> str:
    text = repr(value)
    mantissa, _, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{int(exponent)}" if exponent else mantissa


def _binary_source(data: bytes) -> str:
    return "<<" + ",".join(map(str, data)) + ">>"


def to_erlang(term: Term) -> str:
    """Erlang source text that evaluates to the term ``term`` encodes to."""
    t = type(term)
    if t is bool or term is None:
        return "nil" if term is None else str(term).lower()
    if t is int:
        return str(term)
    if t is float:
        return _float_source(term)
    if t is Atom:
        return _atom_source(term.name)
    if t is bytes:
        return _binary_source(term)
    if t is str:
        return _binary_source(term.encode())
    if t is BitBinary:
        head = ",".join(map(str, term.data[:-1]))
        last = f"{term.data[-1] >> (8 - term.bits)}:{term.bits}"
        return f"<<{head + ',' if head else ''}{last}>>"
    if t is tuple:
        return "{" + ",".join(map(to_erlang, term)) + "}"
    if t is list or t is FrozenList:
        return "[" + ",".join(map(to_erlang, term)) + "]"
    if t is ImproperList:
        return "[" + ",".join(map(to_erlang, term.items)) + "|" + to_erlang(term.tail) + "]"
    if t is dict or t is FrozenMap:
        pairs = (f"{to_erlang(k)} => {to_erlang(v)}" for k, v in term.items())
        return "#{" + ",".join(pairs) + "}"
    if t is ExactKey:
        return to_erlang(term.value)
    if t is Pid:
        return f"P(<<\"{term.node.name}\">>,{term.id},{term.serial},{term.creation})"
    if t is Port:
        return f"Po(<<\"{term.node.name}\">>,{term.id},{term.creation})"
    if t is Reference:
        ids = ",".join(map(str, term.ids))
        return f"R(<<\"{term.node.name}\">>,{term.creation},[{ids}])"
    if t is Export:
        return (f"fun {_atom_source(term.module.name)}:{_atom_source(term.function.name)}"
                f"/{term.arity}")
    raise TypeError(f"no Erlang source for {t.__name__}")


# --- What the oracle can judge ---------------------------------------------------------------

def _sourceable(term: Term, release: str) -> Term:
    """``term`` with local funs (no source syntax) replaced by their pid; on OTP 25, where
    ``0.0 =:= -0.0``, negative zeros made positive (they would merge map keys there)."""
    t = type(term)
    if t is Fun:
        return term.pid
    if t is float and release == "25" and term == 0.0:
        return 0.0
    if t is tuple:
        return tuple(_sourceable(x, release) for x in term)
    if t is list:
        return [_sourceable(x, release) for x in term]
    if t is ImproperList:
        return ImproperList(tuple(_sourceable(x, release) for x in term.items),
                            _sourceable(term.tail, release))
    if t is dict:
        return {_sourceable(k, release): _sourceable(v, release) for k, v in term.items()}
    if t is ExactKey:
        return ExactKey(_sourceable(term.value, release))
    if t is FrozenList:
        return FrozenList(_sourceable(x, release) for x in term)
    if t is FrozenMap:
        return FrozenMap({_sourceable(k, release): _sourceable(v, release)
                          for k, v in term.items()})
    return term


def _canonical(term: Term, release: str) -> bool:
    """Whether term_to_binary must produce exactly our bytes (see the module docstring)."""
    t = type(term)
    if t in (dict, FrozenMap) or (t is Port and release == "25"):
        return False
    if t is ExactKey:
        return _canonical(term.value, release)
    if t in (tuple, list, FrozenList):
        return all(_canonical(x, release) for x in term)
    if t is ImproperList:
        return _canonical(term.items, release) and _canonical(term.tail, release)
    return True


def _check_batch(oracle: Oracle, terms: list[Term]) -> None:
    lines = [f"{etf.encode(t).hex()} {to_erlang(t).encode().hex()}\n" for t in terms]
    for term, reply in zip(terms, oracle.ask(lines), strict=True):
        verdict, _, payload = reply.partition(" ")
        if verdict == "error":
            raise AssertionError(f"BEAM failed on {term!r}: {bytes.fromhex(payload).decode()}")
        beam_bytes = bytes.fromhex(payload)
        assert verdict == "true", f"binary_to_term(encode(t)) =/= t on the BEAM for {term!r}"
        assert etf.decode(beam_bytes) == term
        if _canonical(term, oracle.release):
            assert etf.encode(term) == beam_bytes
        oracle.checked += 1


@settings(max_examples=BATCHES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_beam_agrees_with_the_codec(oracle: Oracle, data: st.DataObject) -> None:
    batch = data.draw(st.lists(ts.terms(), min_size=BATCH, max_size=BATCH))
    _check_batch(oracle, [_sourceable(t, oracle.release) for t in batch])


EDGE_CASES: list[Any] = [
    0, 255, 256, -1, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 2**64, -(2**64),
    2**2040, -(2**2040), 2**2048 - 1, (1 << 8 * 255) - 1, 1 << 8 * 255,
    0.0, 1.5, -2.5e-10, 5e-324, 1.7976931348623157e308, math.pi,
    Atom(""), Atom("a" * 255), Atom("€" * 255), Atom("it's"), Atom("back\\slash"),
    Atom("\x00\n"), True, False, None, b"", bytes(range(256)),
    BitBinary(b"\x80", 1), BitBinary(b"\xff\xfe", 7),
    (), tuple(range(256)), [], [0] * 65535, [0] * 65536, list(range(256)), [256],
    ImproperList((1,), 2), ImproperList((Atom("a"),), b"tail"),
    {}, {ExactKey(1): 1, ExactKey(1.0): 2, ExactKey(True): 3},
    {FrozenList([1]): {Atom("v"): 1}, FrozenMap({Atom("k"): FrozenList([])}): 2},
    {k: k for k in range(100)},
    Export(Atom("lists"), Atom("reverse"), 1), Export(Atom("erlang"), Atom("+"), 2),
    Pid(Atom("n@h"), 0, 0, 0), Pid(Atom("n@h"), 2**32 - 1, 2**32 - 1, 2**32 - 1),
    Port(Atom("n@h"), 0, 1), Port(Atom("n@h"), 2**64 - 1, 2**32 - 1),
    Reference(Atom("n@h"), 1, (1,)), Reference(Atom("n@h"), 2**32 - 1, (1, 2, 3, 4, 5)),
]


def test_edge_cases(oracle: Oracle) -> None:
    terms = [_sourceable(t, oracle.release) for t in EDGE_CASES]
    for start in range(0, len(terms), BATCH):
        _check_batch(oracle, terms[start : start + BATCH])
