"""Our frames in every format a BEAM may negotiate (docs/protocol/distribution.md §5.1), against OTP
25 and 28.

Leaving DIST_HDR_ATOM_CACHE and/or FRAGMENTS out of our flags switches the connection between
131/68 headers, fragments and pass-through 112 packets; small and fragment-sized messages must
cross intact both ways in each mode.
"""

from __future__ import annotations

import secrets

import pytest

from interop_tests.beam import LOCALHOST, Epmd
from interop_tests.conftest import BeamNodeFactory
from pyerl_node.node import Node
from pyerl_node.proto.flags import DistFlag
from pyerl_node.proto.terms import Atom

HEADER_FLAGS = DistFlag.DIST_HDR_ATOM_CACHE | DistFlag.FRAGMENTS
MODES = {
    "cache_and_fragments": DistFlag(0),
    "cache_only": DistFlag.FRAGMENTS,
    "fragments_only": DistFlag.DIST_HDR_ATOM_CACHE,
    "pass_through": HEADER_FLAGS,
}


@pytest.mark.parametrize("mode", list(MODES))
async def test_messages_cross_in_every_frame_mode(
    mode: str, otp_release: str, beam_node: BeamNodeFactory, epmd: Epmd, cookie: str
) -> None:
    beam = beam_node(otp_release)
    await beam.eval_async(
        "register(echo, spawn(fun Loop() -> receive {From, M} -> From ! {self(), M},"
        " Loop() end end)), ok"
    )
    node = Node(f"py_{secrets.token_hex(3)}@{LOCALHOST}", cookie, epmd_port=epmd.port,
                start_epmd=False)
    node._kernel.flags = DistFlag(node._kernel.flags & ~MODES[mode])
    async with node:
        box = node.mailbox()
        big = bytes(range(256)) * 1200  # 300 KB: fragmented both ways when FRAGMENTS is on
        for payload in (b"small", big, [big, Atom("x"), big], list(range(100))):
            await node.send((Atom("echo"), beam.name), (box.pid, payload))
            _, got = await box.receive(timeout=10)
            assert got == payload
        negotiated = node.peer_flags(Atom(beam.name))
        assert negotiated is not None
        assert negotiated & HEADER_FLAGS == HEADER_FLAGS & ~MODES[mode]
