"""Distribution capability flags (docs/protocol/distribution.md §4).

Each side of a handshake announces 64 flag bits; the connection uses their bitwise AND.
``DistFlag`` carries OTP's names and values from ``kernel/include/dist.hrl`` (internal bits
that never travel on the wire -- ETS_COMPRESSED, PENDING_CONNECT, LOCAL_EXT -- are left out).

Mandatory checks work as in ``dist_util:check_dflags``: the peer's flags are first expanded
(a set MANDATORY_25_DIGEST stands for every OTP-25 mandatory bit, §4.2), then every required
bit must be present. Note that the official documentation gives MANDATORY_25_DIGEST as
``1 bsl 36``; every runtime uses ``1 bsl 26``, as here.
"""

from __future__ import annotations

from enum import IntFlag


class DistFlag(IntFlag):
    """One bit of the distribution capability set (values from OTP's ``dist.hrl``)."""

    PUBLISHED = 0x1
    ATOM_CACHE = 0x2
    EXTENDED_REFERENCES = 0x4
    DIST_MONITOR = 0x8
    FUN_TAGS = 0x10
    DIST_MONITOR_NAME = 0x20
    HIDDEN_ATOM_CACHE = 0x40
    NEW_FUN_TAGS = 0x80
    EXTENDED_PIDS_PORTS = 0x100
    EXPORT_PTR_TAG = 0x200
    BIT_BINARIES = 0x400
    NEW_FLOATS = 0x800
    UNICODE_IO = 0x1000
    DIST_HDR_ATOM_CACHE = 0x2000
    SMALL_ATOM_TAGS = 0x4000
    UTF8_ATOMS = 0x10000
    MAP_TAG = 0x20000
    BIG_CREATION = 0x40000
    SEND_SENDER = 0x80000
    BIG_SEQTRACE_LABELS = 0x100000
    EXIT_PAYLOAD = 0x400000
    FRAGMENTS = 0x800000
    HANDSHAKE_23 = 0x1000000
    UNLINK_ID = 0x2000000
    MANDATORY_25_DIGEST = 0x4000000
    SPAWN = 1 << 32
    NAME_ME = 1 << 33
    V4_NC = 1 << 34
    ALIAS = 1 << 35
    ALTACT_SIG = 1 << 37


_F = DistFlag

#: ``MANDATORY_DFLAGS_25`` of dist.hrl: what OTP 25 demands (0x1070f94).
MANDATORY_25 = (
    _F.EXTENDED_REFERENCES | _F.FUN_TAGS | _F.EXTENDED_PIDS_PORTS | _F.NEW_FUN_TAGS
    | _F.EXPORT_PTR_TAG | _F.BIT_BINARIES | _F.NEW_FLOATS | _F.UTF8_ATOMS | _F.MAP_TAG
    | _F.BIG_CREATION | _F.HANDSHAKE_23
)
#: OTP 26 adds UNLINK_ID and V4_NC (0x403070f94); OTP 27 and 28 demand exactly the same.
MANDATORY_26 = MANDATORY_25 | _F.UNLINK_ID | _F.V4_NC
MANDATORY_27 = MANDATORY_26
MANDATORY_28 = MANDATORY_26

#: What we demand of every peer. OTP 25 does not require the OTP 26 bits, but every real
#: OTP 25 node announces them (0xd07df7fbd), and requiring them lets the codec always use
#: the V4_NC pid/port/reference encodings and the UNLINK_ID link protocol.
REQUIRED = MANDATORY_26

# The set docs/protocol/distribution.md §4.3 recommends, without PUBLISHED and SPAWN (those depend
# on the caller), plus the atom-cache header and fragments.
_ADVERTISED = (
    _F.EXTENDED_REFERENCES | _F.DIST_MONITOR | _F.FUN_TAGS | _F.DIST_MONITOR_NAME
    | _F.NEW_FUN_TAGS | _F.EXTENDED_PIDS_PORTS | _F.EXPORT_PTR_TAG | _F.BIT_BINARIES
    | _F.NEW_FLOATS | _F.UNICODE_IO | _F.DIST_HDR_ATOM_CACHE | _F.SMALL_ATOM_TAGS
    | _F.UTF8_ATOMS | _F.MAP_TAG | _F.BIG_CREATION | _F.SEND_SENDER | _F.BIG_SEQTRACE_LABELS
    | _F.EXIT_PAYLOAD | _F.FRAGMENTS | _F.HANDSHAKE_23 | _F.UNLINK_ID
    | _F.MANDATORY_25_DIGEST | _F.V4_NC | _F.ALIAS
)


def default_flags(*, hidden: bool = False, spawn: bool = False) -> DistFlag:
    """The flags we announce: PUBLISHED unless ``hidden``, SPAWN only when ``spawn``.

    With both switched on this is exactly what a real OTP 25 node announces (0xd07df7fbd).
    """
    flags = _ADVERTISED
    if not hidden:
        flags |= _F.PUBLISHED
    if spawn:
        flags |= _F.SPAWN
    return flags


def expand(flags: DistFlag) -> DistFlag:
    """``flags`` with MANDATORY_25_DIGEST replaced by what it stands for (it stays set)."""
    if flags & _F.MANDATORY_25_DIGEST:
        return flags | MANDATORY_25
    return flags


def missing(required: DistFlag, offered: DistFlag) -> DistFlag:
    """The bits of ``required`` that ``offered`` lacks, after expanding ``offered``."""
    # Plain ints: IntFlag's ``~`` only inverts up to the highest known bit.
    return DistFlag(int(required) & ~int(expand(offered)))


def flag_names(flags: DistFlag | int) -> list[str]:
    """The names of the set bits, lowest bit first; unnamed bits as ``UNKNOWN<hex>``.

    The spelling follows ``dist_util:dflag2str``, so the names match BEAM's log messages.
    """
    names: list[str] = []
    value = int(flags)
    bit = 1
    while bit <= value:
        if value & bit:
            names.append(DistFlag(bit).name or f"UNKNOWN<{bit:X}>")
        bit <<= 1
    return names
