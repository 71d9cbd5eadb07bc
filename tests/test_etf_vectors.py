"""The codec against real OTP 25 and OTP 28 ``term_to_binary`` output (vectors/etf/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pyerl_node.proto import etf
from pyerl_node.proto.errors import DecodeError
from pyerl_node.proto.terms import Atom, Export

VECTORS = Path(__file__).resolve().parent / "vectors" / "etf"
RELEASES = ("25", "28")


def _cases() -> list[Any]:
    cases = []
    for release in RELEASES:
        corpus = json.loads((VECTORS / f"etf_corpus_otp{release}.json").read_text())
        for term in corpus["terms"]:
            for option, enc in term["encodings"].items():
                if isinstance(enc, dict):  # otherwise "same as default"
                    cases.append(pytest.param(release, option, bytes.fromhex(enc["hex"]),
                                              id=f"otp{release}-{term['name']}-{option}"))
    return cases


CASES = _cases()


def test_corpus_is_complete() -> None:
    # 79 terms, 2 releases; most encodings differ from the default for at least one term.
    assert len(CASES) > 79 * 2
    assert {c.values[1] for c in CASES} == {
        "default", "minor_version_0", "minor_version_1", "minor_version_2", "compressed",
        "compressed_9", "deterministic"}


@pytest.mark.parametrize(("release", "option", "data"), CASES)
def test_vector_round_trip(release: str, option: str, data: bytes) -> None:
    term = etf.decode(data)
    again = etf.encode(term)
    if release == "28" and option in ("default", "minor_version_2", "deterministic"):
        # What OTP 26+ term_to_binary/1 emits is exactly what we emit.
        assert again == data
    else:
        assert etf.decode(again) == term
    if option.startswith("compressed"):
        packed = etf.encode(term, compressed=9)
        assert etf.decode(packed) == term
        # Like term_to_binary: compressed exactly when that is smaller.
        assert (packed[1] == etf.COMPRESSED) == (data[1] == etf.COMPRESSED)


@pytest.mark.parametrize(("release", "option", "data"), CASES)
def test_vector_decode_from_inside_a_frame(release: str, option: str, data: bytes) -> None:
    # decode_from starts at the tag (no version byte) and reports where the term ended.
    frame = b"\x70junk" + data[1:] + b"\x00more"
    term, end = etf.decode_from(frame, 5)
    assert end == len(frame) - 5
    assert term == etf.decode(data)


def _term(name: str, release: str = "28") -> Any:
    corpus = json.loads((VECTORS / f"etf_corpus_otp{release}.json").read_text())
    entry = next(t for t in corpus["terms"] if t["name"] == name)
    return etf.decode(bytes.fromhex(entry["encodings"]["default"]["hex"]))


def test_vector_values_map_as_designed() -> None:
    assert _term("atom_true") is True
    assert _term("list_string") == list(b"hello")
    assert _term("bin_utf8") == "ünïcödé€".encode()
    assert _term("float_neg_zero") == 0.0 and str(_term("float_neg_zero")) == "-0.0"
    assert _term("int_neg_large_big") == -(1 << 2100)
    improper = _term("list_improper_atom")
    assert (improper.items, improper.tail) == ((Atom("a"), Atom("b")), Atom("c"))
    assert len(_term("list_string_70000")) == 70000
    assert _term("tuple_300_large") == tuple(range(1, 301))
    assert _term("map_33_keys_hash") == {k: k * k for k in range(1, 34)}
    assert len(_term("ref_alias").ids) == 5 and len(_term("ref_alias", "25").ids) == 3
    assert _term("fun_export") == Export(Atom("lists"), Atom("reverse"), 1)
    closure = _term("fun_erl_eval_closure")
    assert closure.module == Atom("erl_eval") and closure.arity == 1


@pytest.mark.parametrize(("release", "option", "data"),
                         [c for c in CASES if c.values[1] in ("default", "minor_version_0")])
def test_every_prefix_of_a_vector_is_a_decode_error(release: str, option: str,
                                                    data: bytes) -> None:
    # Every cut of short vectors; for long ones (up to 140 KB) 300 cuts spread over them.
    step = max(1, len(data) // 300)
    for cut in [*range(0, len(data), step), len(data) - 1]:
        with pytest.raises(DecodeError):
            etf.decode(data[:cut])
