"""``pyerl-node run`` refuses what cannot work with one line naming the thing, exit status 1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port


def _run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyerl_node", "run", "--cookie", "c", *args],
        env=os.environ | {"HOME": str(home)}, capture_output=True, text=True, timeout=60,
        check=False)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something that is not a node listens on (and never answers)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _one_clear_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    return out.stderr.strip().splitlines()[-1]


def test_a_host_that_does_not_resolve(tmp_path: Path) -> None:
    out = _run("--name", "py@no-such-host.invalid", "--embedded-epmd",
               "--epmd-port", str(free_port()), home=tmp_path)
    assert _one_clear_line(out) == ("pyerl-node: the node's host 'no-such-host.invalid' does "
                                    "not resolve to an IPv4 address (Name or service not known)")


def test_a_port_range_with_no_free_port(tmp_path: Path, busy_port: int) -> None:
    out = _run("--name", "py@127.0.0.1", "--embedded-epmd", "--epmd-port", str(free_port()),
               "--dist-port-min", str(busy_port), "--dist-port-max", str(busy_port),
               home=tmp_path)
    assert _one_clear_line(out) == (
        f"pyerl-node: cannot listen on '0.0.0.0': port {busy_port} in use")


def test_an_epmd_port_taken_by_something_else(tmp_path: Path, busy_port: int) -> None:
    out = _run("--name", "py@127.0.0.1", "--epmd-port", str(busy_port), home=tmp_path)
    assert _one_clear_line(out) == (f"pyerl-node: EPMD at 127.0.0.1:{busy_port} did not answer "
                                    "ALIVE2_REQ within 5s")
