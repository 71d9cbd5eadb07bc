"""``pyerl-node info`` and ``pyerl-node shell`` against real BEAM nodes.

The shell is driven through a pseudo-terminal, as a person at a keyboard drives it: lines go in,
the prompt's echo and answers come out.
"""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from interop_tests.beam import LOCALHOST, Epmd, unique_name
from interop_tests.conftest import BeamNodeFactory

ECHO = ("register(echo, spawn(fun Loop() -> receive {From, M} -> From ! {echoed, M}, Loop() end"
        " end)), ok")


def _env(epmd: Epmd, home: Path) -> dict[str, str]:
    return os.environ | {"ERL_EPMD_PORT": str(epmd.port), "HOME": str(home)}


def test_info_reports_a_beam_node(beam_node: BeamNodeFactory, otp_release: str, epmd: Epmd,
                                  cookie: str, tmp_path: Path) -> None:
    beam = beam_node(otp_release)
    out = subprocess.run(
        [sys.executable, "-m", "pyerl_node", "info", beam.name, "--cookie", cookie],
        env=_env(epmd, tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    fields = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1)
                  for line in out.stdout.splitlines())
    assert fields["Node"] == beam.name
    assert fields["OTP release"].startswith(f"{otp_release} (erts ")
    assert int(fields["Processes"]) > 10
    assert "code_server" in fields["Registered"]
    assert fields["Memory"].startswith("total ")
    assert fields["Hidden nodes"] == "0"  # our own connection is left out


def test_info_of_an_unreachable_node_fails_cleanly(epmd: Epmd, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pyerl_node", "info", f"nobody@{LOCALHOST}", "--cookie", "c"],
        env=_env(epmd, tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1
    assert "cannot connect to nobody@127.0.0.1" in out.stderr
    assert "Traceback" not in out.stderr


class Terminal:
    """A process on a pseudo-terminal: type lines, read until a pattern shows."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.fd, child = pty.openpty()
        # A session of its own whose controlling terminal is the pty (util-linux setsid
        # --ctty, which execs the command: the pid stays ours), so ^C there is SIGINT.
        self.proc = subprocess.Popen(["setsid", "--ctty", *args], stdin=child, stdout=child,
                                     stderr=child, env=env)
        os.close(child)
        self.seen = ""

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def expect(self, pattern: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.seen):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not seen; got:\n{self.seen[-2000:]}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096).decode(errors="replace")
                except OSError:  # the child closed the terminal
                    break
        match = re.search(pattern, self.seen)
        assert match is not None, f"{pattern!r} not seen; got:\n{self.seen[-2000:]}"
        return match.group(0)

    def at_prompt(self, timeout: float = 20.0) -> None:
        """Wait for a fresh prompt: keys typed before it (an EOF above all) can be lost when
        readline switches the terminal's mode."""
        self.expect(r">>> $", timeout)

    def close(self) -> int | None:
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return None
        finally:
            os.close(self.fd)


def test_shell_pings_sends_and_receives(beam_node: BeamNodeFactory, epmd: Epmd, cookie: str,
                                        tmp_path: Path) -> None:
    beam = beam_node("25")
    beam.eval(ECHO)
    me = f"{unique_name('sh')}@{LOCALHOST}"
    term = Terminal([sys.executable, "-m", "pyerl_node", "shell", "--name", me,
                     "--cookie", cookie, "--connect", beam.name], _env(epmd, tmp_path))
    try:
        term.expect(r"pyerl_node shell on " + re.escape(me))
        term.expect(r">>> ")
        term.type(f"await ping('{beam.name}')\n")
        term.expect(r"\nTrue\r?\n")
        term.type(f"await send((Atom('echo'), '{beam.name}'), (self(), 'hi'))\n")
        term.type("m = await receive()\n")
        term.type("m\n")
        term.expect(r"\(Atom\('echoed'\), b'hi'\)")
        term.type(f"await send((Atom('echo'), '{beam.name}'), (self(), 42))\n")
        term.type("await asyncio.sleep(0.5); flush()\n")
        term.expect(r"Shell got \{echoed,\s*42\}")
        term.type("1 / 0\n")
        # the shell's own frames are not shown: the traceback starts at what was typed
        term.expect(r"Traceback \(most recent call last\):\r?\n\s+File \"<console>\", line 1,"
                    r" in <module>\r?\nZeroDivisionError: division by zero")
        term.type("await asyncio.sleep(30)\n")
        time.sleep(0.5)
        term.type("\x03")  # Ctrl-C cancels the running statement, the shell lives on
        term.expect(r"KeyboardInterrupt")
        term.type("sorted(a.name for a in nodes())\n")
        term.expect(re.escape(f"['{beam.name}']"))
        term.at_prompt()
        term.type("\x04")  # Ctrl-D leaves
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
            term.proc.wait(timeout=10)
    assert (tmp_path / ".pyerl_node_history").is_file()


async def test_info_reports_a_python_node_through_the_same_surface(
        epmd: Epmd, cookie: str, tmp_path: Path) -> None:
    from pyerl_node.node import Node

    async with Node(f"{unique_name('py')}@{LOCALHOST}", cookie, epmd_port=epmd.port,
                    start_epmd=False) as py:
        py.mailbox(name="some_service")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pyerl_node", "info", py.node_atom.name, "--cookie", cookie,
            env=_env(epmd, tmp_path), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    fields = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1)
                  for line in out.decode().splitlines())
    assert fields["Node"] == py.node_atom.name
    assert fields["OTP release"].startswith("25 (erts ")  # what the node answers as
    assert "pyerl_node" in fields["System"]
    assert int(fields["Processes"]) >= 5
    assert "some_service" in fields["Registered"] and "net_kernel" in fields["Registered"]
    assert fields["Memory"].startswith("total ")
