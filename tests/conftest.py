"""Shared fixtures: Python nodes on loopback with a Python EPMD embedded on a free port."""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator

import pytest

from pyerl_node.node import Node


def free_port() -> int:
    """A TCP port nothing listens on right now (on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    """Two started nodes ``a…@127.0.0.1`` and ``b…@127.0.0.1`` sharing one embedded EPMD."""
    port = free_port()
    tag = secrets.token_hex(3)
    a = Node(f"a{tag}@127.0.0.1", "cookie", epmd_port=port, embedded_epmd=True)
    b = Node(f"b{tag}@127.0.0.1", "cookie", epmd_port=port)
    await a.start()  # nothing listens on the port: a starts the Python EPMD
    await b.start()
    try:
        yield a, b
    finally:
        await b.stop()
        await a.stop()
