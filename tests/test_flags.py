"""Distribution flags: values, the sets we announce and require, digest expansion, and the
mandatory-flag experiments of docs/protocol/distribution.md §4.2 replayed against ``missing``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyerl_node.proto.flags import (
    MANDATORY_25,
    MANDATORY_26,
    MANDATORY_27,
    MANDATORY_28,
    REQUIRED,
    DistFlag,
    default_flags,
    expand,
    flag_names,
    missing,
)

HANDSHAKES = sorted((Path(__file__).resolve().parent / "vectors" / "handshake").glob("*.json"))

F = DistFlag
OTP25_ANNOUNCED = 0xD07DF7FBD
OTP28_ANNOUNCED = 0x2D07DF7FBD
RECOMMENDED = 0xD075F5FBD  # docs/protocol/distribution.md §4.3

flags_st = st.integers(min_value=0, max_value=(1 << 64) - 1).map(DistFlag)


def test_values_are_otps() -> None:
    # dist.hrl; MANDATORY_25_DIGEST is 1 bsl 26, not the documented 1 bsl 36.
    assert F.MANDATORY_25_DIGEST == 1 << 26
    assert F.SPAWN == 1 << 32 and F.NAME_ME == 1 << 33 and F.V4_NC == 1 << 34
    assert F.ALIAS == 1 << 35 and F.ALTACT_SIG == 1 << 37
    assert int(F.BIG_CREATION) == 0x40000 and int(F.FRAGMENTS) == 0x800000


def test_mandatory_sets() -> None:
    assert MANDATORY_25 == 0x1070F94
    assert MANDATORY_26 == MANDATORY_27 == MANDATORY_28 == 0x403070F94
    assert REQUIRED == MANDATORY_26


def test_default_flags() -> None:
    # With SPAWN the set is exactly what a real OTP 25 node announces.
    assert default_flags(spawn=True) == OTP25_ANNOUNCED
    assert default_flags(spawn=True) == RECOMMENDED | F.DIST_HDR_ATOM_CACHE | F.FRAGMENTS
    assert default_flags() == OTP25_ANNOUNCED & ~F.SPAWN
    assert default_flags(hidden=True) == default_flags() & ~F.PUBLISHED
    assert not default_flags() & (F.NAME_ME | F.ALTACT_SIG | F.ATOM_CACHE)
    assert isinstance(default_flags(), DistFlag)


def test_we_satisfy_what_every_release_requires() -> None:
    for hidden in (False, True):
        for mandatory in (MANDATORY_25, MANDATORY_28, REQUIRED):
            assert missing(mandatory, default_flags(hidden=hidden)) == 0


def test_expand() -> None:
    assert expand(F.MANDATORY_25_DIGEST) == MANDATORY_25 | F.MANDATORY_25_DIGEST
    assert expand(F.PUBLISHED) == F.PUBLISHED
    # The digest stands for the OTP 25 set only, not for the OTP 26 additions.
    assert missing(MANDATORY_28, F.MANDATORY_25_DIGEST) == F.UNLINK_ID | F.V4_NC


@given(flags_st)
def test_expand_only_adds_and_is_idempotent(flags: DistFlag) -> None:
    assert expand(flags) & flags == flags
    assert expand(expand(flags)) == expand(flags)
    assert missing(flags, flags) == 0


@given(flags_st, flags_st)
def test_missing_is_required_minus_expanded_offer(required: DistFlag, offered: DistFlag) -> None:
    lacking = missing(required, offered)
    assert int(lacking) == int(required) & ~int(expand(offered))


def test_missing_sees_bits_above_the_named_ones() -> None:
    assert missing(DistFlag(1 << 50), F.PUBLISHED) == 1 << 50


# docs/protocol/distribution.md §4.2, "Experiment": what real OTP 25.2.3 / 28.5 did with each offer.
# (offer, refused by OTP 25, refused by OTP 28)
_EXPERIMENTS = [
    ("recommended", RECOMMENDED, [], []),
    ("without UNLINK_ID", RECOMMENDED & ~F.UNLINK_ID, [], ["UNLINK_ID"]),
    ("without V4_NC", RECOMMENDED & ~F.V4_NC, [], ["V4_NC"]),
    ("without BIG_CREATION and DIGEST",
     RECOMMENDED & ~(F.BIG_CREATION | F.MANDATORY_25_DIGEST), ["BIG_CREATION"], ["BIG_CREATION"]),
    ("without BIG_CREATION, with DIGEST", RECOMMENDED & ~F.BIG_CREATION, [], []),
    ("PUBLISHED DIGEST V4_NC UNLINK_ID",
     F.PUBLISHED | F.MANDATORY_25_DIGEST | F.V4_NC | F.UNLINK_ID, [], []),
    ("without HANDSHAKE_23, with DIGEST", RECOMMENDED & ~F.HANDSHAKE_23, [], []),
    ("without HANDSHAKE_23 and DIGEST",
     RECOMMENDED & ~(F.HANDSHAKE_23 | F.MANDATORY_25_DIGEST), ["HANDSHAKE_23"], ["HANDSHAKE_23"]),
    ("without UTF8_ATOMS and DIGEST",
     RECOMMENDED & ~(F.UTF8_ATOMS | F.MANDATORY_25_DIGEST), ["UTF8_ATOMS"], ["UTF8_ATOMS"]),
    ("without DIST_MONITOR(_NAME)", RECOMMENDED & ~(F.DIST_MONITOR | F.DIST_MONITOR_NAME), [], []),
    ("exactly the 25 set", MANDATORY_25, [], ["UNLINK_ID", "V4_NC"]),
    ("25 set + 26 bits, no digest", MANDATORY_26, [], []),
]


@pytest.mark.parametrize(("offer", "refused_25", "refused_28"),
                         [e[1:] for e in _EXPERIMENTS], ids=[e[0] for e in _EXPERIMENTS])
def test_missing_reproduces_beams_decisions(
        offer: DistFlag, refused_25: list[str], refused_28: list[str]) -> None:
    assert flag_names(missing(MANDATORY_25, offer)) == refused_25
    assert flag_names(missing(MANDATORY_28, offer)) == refused_28


def test_flag_names() -> None:
    assert flag_names(DistFlag(0)) == []
    assert flag_names(F.PUBLISHED | F.ALTACT_SIG) == ["PUBLISHED", "ALTACT_SIG"]
    # Bits that are not ours get dist_util's UNKNOWN<hex> spelling.
    assert flag_names(DistFlag(0x8000 | 1 << 40)) == ["UNKNOWN<8000>", "UNKNOWN<10000000000>"]


def _announced_flags() -> list[tuple[str, dict[str, object]]]:
    found = []
    for path in HANDSHAKES:
        for frame in json.loads(path.read_text())["handshake"]:
            if "flag_names" in frame["decoded"]:
                found.append((f"{path.stem}:{frame['from']}", frame["decoded"]))
    return found


@pytest.mark.parametrize("decoded", [d for _, d in _announced_flags()],
                         ids=[i for i, _ in _announced_flags()])
def test_flag_names_match_the_capture_tools(decoded: dict[str, object]) -> None:
    flags = decoded["flags"]
    assert isinstance(flags, int)
    assert flag_names(DistFlag(flags)) == decoded["flag_names"]


def test_every_real_node_meets_our_requirement() -> None:
    real = {OTP25_ANNOUNCED, OTP28_ANNOUNCED, OTP25_ANNOUNCED & ~F.PUBLISHED}
    seen = {d["flags"] for _, d in _announced_flags()}
    assert real <= seen  # the vectors hold them
    for flags in real:
        assert missing(REQUIRED, DistFlag(flags)) == 0
