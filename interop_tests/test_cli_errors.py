"""What the command line says when it cannot reach a node: one clear line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from interop_tests.beam import LOCALHOST, Epmd
from interop_tests.conftest import BeamNodeFactory


def _pyerl(*args: str, epmd: Epmd, home: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"ERL_EPMD_PORT": str(epmd.port), "HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "pyerl_node", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_wrong_cookie_is_named_as_the_likely_cause(beam_node: BeamNodeFactory,
                                                     otp_release: str, epmd: Epmd,
                                                     tmp_path: Path) -> None:
    beam = beam_node(otp_release)
    out = _pyerl("ping", beam.name, "--cookie", "not-the-cookie", "--timeout", "5",
                 epmd=epmd, home=tmp_path)
    assert (out.returncode, out.stdout.strip()) == (1, "pang")
    assert "closed the connection during the handshake" in out.stderr
    assert "a cookie mismatch is the usual cause" in out.stderr
    assert out.stderr.count("WARNING") == 1  # once per peer, not once per attempt
    assert "Traceback" not in out.stderr


def test_an_unknown_node_says_what_epmd_answered(epmd: Epmd, tmp_path: Path) -> None:
    out = _pyerl("ping", f"nobody@{LOCALHOST}", "--cookie", "c", epmd=epmd, home=tmp_path)
    assert (out.returncode, out.stdout.strip()) == (1, "pang")
    assert f"node 'nobody' is not registered with EPMD at 127.0.0.1:{epmd.port}" in out.stderr
    assert "Traceback" not in out.stderr
