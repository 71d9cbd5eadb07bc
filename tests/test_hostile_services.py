"""Legal but hostile messages to the services of a node: each is dropped with at most a
short line, and every service lives on. (The terms are shared with the probes of
interop_tests/test_hostile_peers.py.)

A BEAM process can send any term to ``{global_name_server, Node}``, ``{rex, Node}``... The
services must ignore what they do not expect without formatting it in full: ``str()`` of a
9,600-digit integer raises, ``repr()`` of a term nested 19,999 deep raises RecursionError
(which ``logging`` re-raises, so the service would die of it), a 200,000-item list or a
1 MiB binary would write megabytes per line.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from pyerl_node.node import Node
from pyerl_node.proto.terms import Atom, Term

#: The longest line a message may cause (peer terms are cut by safe_repr).
LINE_LIMIT = 600
BIGNUM = 10**9600 - 1  # 9,600 digits: str() refuses beyond 4,300
LEGAL_DEPTH = 19_999  # just inside MAX_DEPTH


def nested(depth: int) -> Term:
    """``depth`` tuples, one inside the other, around an atom."""
    term: Term = Atom("bottom")
    for _ in range(depth):
        term = (term,)
    return term


def legal_but_hostile() -> dict[str, Term]:
    """Terms a node must take (the BEAM takes them) whose naive formatting is not harmless."""
    return {
        "a 9,600-digit bignum": BIGNUM,
        f"a term {LEGAL_DEPTH} deep": nested(LEGAL_DEPTH),
        "a list of 200,000 integers": list(range(200_000)),
        "a 1 MiB binary": bytes(1 << 20),
    }


TERMS = legal_but_hostile()


@pytest.mark.parametrize("term", TERMS.values(), ids=TERMS.keys())
async def test_every_service_drops_a_hostile_message_with_a_short_line(
        pair: tuple[Node, Node], term: Term, caplog: pytest.LogCaptureFixture) -> None:
    a, b = pair
    assert await b.ping(a.node_atom)
    services = a.registered()
    caplog.set_level(logging.DEBUG)
    for name in services:
        await b.send((name, a.node_atom), term)
    await asyncio.sleep(0.3)
    assert await b.ping(a.node_atom)  # (after every message was handled)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("pyerl_node")]
    assert set(a.registered()) == set(services)  # no service died of it
    assert all(len(line) <= LINE_LIMIT for line in lines), max(map(len, lines))
    assert await b.rpc(a.node_atom, Atom("erlang"), Atom("node"), []) is a.node_atom
