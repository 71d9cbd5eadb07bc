"""Fixtures of the multi-host suite (see README.md here).

* ``lab`` — four hosts ``h1``..``h4`` in network namespaces, the real epmd on each; built for
  the test and destroyed after it, pass or fail (``make_lab`` builds others). Skips, saying
  why, where namespaces cannot be made (not root, no ``ip``/``unshare``).
* ``cluster`` — starts nodes on the lab's hosts with the test's cookie and net_ticktime
  ``TICKTIME``; stops every one by pid when the test ends (before the lab goes).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from typing import Final

import pytest

from interop_tests.beam import BeamNode
from interop_tests.conftest import require_release
from interop_tests.multihost.netns import EpmdKind, Lab, unavailable_reason
from interop_tests.multihost.nodes import NameKind, NodeSpec, PyAgent, PyCliNode, start_beam
from interop_tests.runtimes import find_elixir

HOSTS: Final = ("h1", "h2", "h3", "h4")
TICKTIME: Final = 4  # seconds, on every node: nodedown within ~4-5 s of a partition


LabFactory = Callable[..., Lab]


@pytest.fixture
def make_lab() -> Iterator[LabFactory]:
    """``make_lab(["h1", "h2"], epmd=EpmdKind.PYTHON)``: labs destroyed when the test ends."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"multi-host suite needs network namespaces: {reason}")
    built: list[Lab] = []

    def build(names: Sequence[str], *, epmd: EpmdKind = EpmdKind.OTP) -> Lab:
        built.append(Lab.build(names, epmd=epmd))
        return built[-1]

    try:
        yield build
    finally:
        for lab in built:
            lab.destroy()


@pytest.fixture
def lab(make_lab: LabFactory) -> Lab:
    return make_lab(HOSTS)


class Cluster:
    """Starts nodes on lab hosts; ``alive`` parts get a random suffix unless ``exact``."""

    def __init__(self, lab: Lab, cookie: str) -> None:
        self.lab = lab
        self.cookie = cookie
        self._nodes: list[BeamNode | PyAgent | PyCliNode] = []

    def spec(self, host: str, alive: str, *, names: NameKind = NameKind.SHORT,
             inet6: bool = False) -> NodeSpec:
        return NodeSpec(host, f"{alive}{secrets.token_hex(2)}", self.cookie, TICKTIME,
                        names, inet6)

    def beam(self, host: str, release: str, alive: str, *, elixir: bool = False,
             names: NameKind = NameKind.SHORT, inet6: bool = False,
             extra_args: tuple[str, ...] = ()) -> BeamNode:
        require_release(release)
        if elixir and find_elixir() is None:
            pytest.skip("elixir is not installed")
        node = start_beam(self.lab, self.spec(host, alive, names=names, inet6=inet6),
                          release, elixir=elixir, extra_args=extra_args)
        self._nodes.append(node)
        return node

    def agent(self, host: str, alive: str = "py", *, names: NameKind = NameKind.SHORT,
              inet6: bool = False, listen_host: str | None = None,
              extra_args: tuple[str, ...] = ()) -> PyAgent:
        node = PyAgent(self.lab, self.spec(host, alive, names=names, inet6=inet6),
                       listen_host=listen_host, extra_args=extra_args)
        self._nodes.append(node)
        return node

    def cli(self, host: str, alive: str = "py", *, names: NameKind = NameKind.SHORT,
            listen_host: str | None = None, extra_args: tuple[str, ...] = ()) -> PyCliNode:
        node = PyCliNode(self.lab, self.spec(host, alive, names=names),
                         listen_host=listen_host, extra_args=extra_args)
        self._nodes.append(node)
        return node

    def stop_all(self) -> None:
        errors: list[Exception] = []
        for node in reversed(self._nodes):
            try:
                node.stop()
            except Exception as exc:  # stop the others anyway, then report
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def cluster(lab: Lab, cookie: str) -> Iterator[Cluster]:
    started = Cluster(lab, cookie)
    try:
        yield started
    finally:
        started.stop_all()
