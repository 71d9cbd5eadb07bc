"""Fixtures for tests against real BEAM peers (see ``interop_tests/beam.py``).

* ``otp_release`` — "25" and "28"; a release that is not installed is skipped with a reason.
* ``epmd`` — the real epmd on a free port of its own, for this test only.
* ``cookie`` — unique per test.
* ``beam_node`` — a factory: ``beam_node("28")``, ``beam_node("25", elixir=True)``; every node
  it started is stopped by pid when the test ends, pass or fail.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence

import pytest

from interop_tests.beam import LOCALHOST, BeamNode, Epmd, unique_name
from interop_tests.runtimes import OTP_RELEASES, epmd_binary, find_elixir, find_erl


def require_release(release: str) -> None:
    """Skip the test, saying why, when that OTP release is not installed here."""
    if find_erl(release) is None:
        pytest.skip(f"OTP {release} is not installed (see interop_tests/runtimes.py)")


@pytest.fixture(params=OTP_RELEASES, ids=[f"otp{r}" for r in OTP_RELEASES])
def otp_release(request: pytest.FixtureRequest) -> str:
    release: str = request.param
    require_release(release)
    return release


@pytest.fixture
def epmd() -> Iterator[Epmd]:
    # Any installed release's epmd will do: the EPMD protocol is the same in both.
    release = next((r for r in OTP_RELEASES if epmd_binary(r) is not None), None)
    if release is None:
        pytest.skip("no epmd binary: neither OTP 25 nor OTP 28 is installed")
    daemon = Epmd.start(release)
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def cookie() -> str:
    return f"cookie_{secrets.token_hex(8)}"


class BeamNodeFactory:
    """Starts BEAM nodes on the test's epmd with the test's cookie; remembers them to stop."""

    def __init__(self, epmd_port: int, cookie: str) -> None:
        self.epmd_port = epmd_port
        self.cookie = cookie
        self.nodes: list[BeamNode] = []

    def __call__(self, release: str, *, prefix: str = "beam", name: str | None = None,
                 cookie: str | None = None, elixir: bool = False,
                 extra_args: Sequence[str] = (), timeout: float = 30.0) -> BeamNode:
        """A running node; ``name`` (full) overrides the unique ``<prefix>_xxxxxx@127.0.0.1``."""
        require_release(release)
        if elixir and find_elixir() is None:
            pytest.skip("elixir is not installed")
        node = BeamNode.start(
            release, name or f"{unique_name(prefix)}@{LOCALHOST}",
            cookie=self.cookie if cookie is None else cookie, epmd_port=self.epmd_port,
            elixir=elixir, extra_args=extra_args, timeout=timeout,
        )
        self.nodes.append(node)
        return node

    def stop_all(self) -> None:
        errors: list[Exception] = []
        for node in reversed(self.nodes):
            try:
                node.stop()
            except Exception as exc:  # stop the others anyway, then report
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def beam_node(epmd: Epmd, cookie: str) -> Iterator[BeamNodeFactory]:
    factory = BeamNodeFactory(epmd.port, cookie)
    try:
        yield factory
    finally:
        factory.stop_all()
