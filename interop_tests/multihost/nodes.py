"""Nodes on lab hosts: real ``erl``/``elixir`` (OTP 25 and 28) and Python nodes.

Every node is a child process started through :meth:`Lab.command` (its host's namespace,
``/etc/hosts`` and host name) with the process handling of ``interop_tests/beam.py``: its own
session, stopped by pid, SIGTERM then SIGKILL, every wait bounded, leftovers at exit.

* :func:`start_beam` boots a BEAM node with the eval driver of ``interop_tests/beam.py`` and
  hands back a :class:`BeamNode`: ``eval``/``eval_elixir`` work as on loopback.
* :class:`PyCliNode` is ``pyerl-node run``, the command a user types; ready once it prints
  the port it listens on.
* :class:`PyAgent` is ``interop_tests/multihost/py_agent.py``: a Python node the test drives
  over JSON lines (global names, node list, connect, monitors) and whose events (nodeup,
  nodedown, DOWN) arrive stamped with the wall clock.

Nodes take net_ticktime from the caller (the scenarios use a small one everywhere).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import enum
import itertools
import json
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from interop_tests import beam
from interop_tests.beam import BeamNode, BeamStartError, BeamTimeoutError
from interop_tests.multihost.netns import Lab
from interop_tests.runtimes import find_elixir, find_erl

REPO: Final = Path(__file__).resolve().parents[2]
PYERL_NODE: Final = Path(sys.executable).parent / "pyerl-node"
_OUTPUT_LINES: Final = 300
_STOP_WAIT: Final = 5.0

Json = Any


class NameKind(enum.Enum):
    """How a node is named: ``-sname x`` (x@h2), ``-name x@h2.multihost.test`` or
    ``-name x@10.213.X.2`` (``x@fd..::2`` with IPv6)."""

    SHORT = "short"
    FQDN = "fqdn"
    IP = "ip"


@dataclass(frozen=True)
class NodeSpec:
    """Where and how to start a node."""

    host: str
    alive: str
    cookie: str
    ticktime: int = 4
    names: NameKind = NameKind.SHORT
    inet6: bool = False

    def full_name(self, lab: Lab) -> str:
        host = lab.host(self.host)
        if self.names is NameKind.SHORT:
            return f"{self.alive}@{host.name}"
        if self.names is NameKind.FQDN:
            return f"{self.alive}@{host.fqdn}"
        return f"{self.alive}@{host.ipv6 if self.inet6 else host.ipv4}"


def start_beam(lab: Lab, spec: NodeSpec, release: str, *, elixir: bool = False,
               extra_args: Sequence[str] = (), timeout: float = 40.0) -> BeamNode:
    """A BEAM node on ``spec.host`` answering evals (raises BeamStartError with its output);
    ``extra_args`` are emulator flags such as ``-proto_dist inet_tls`` (no whitespace inside
    one, for elixir's ``--erl``)."""
    name = spec.full_name(lab)
    emu = ["-start_epmd", "false", "-kernel", "net_ticktime", str(spec.ticktime)]
    if spec.inet6:
        emu += ["-proto_dist", "inet6_tcp"]
    emu += extra_args
    flag = "sname" if spec.names is NameKind.SHORT else "name"
    # -sname takes the bare alive part, as a user types it: erl adds the host name
    arg = spec.alive if spec.names is NameKind.SHORT else name
    if elixir:
        exe = find_elixir()
        if release != "25" or exe is None:
            raise BeamStartError(f"no elixir for OTP {release} (only Debian's, on OTP 25)")
        argv = [str(exe), f"--{flag}", arg, "--cookie", spec.cookie, "--erl", " ".join(emu),
                *beam.bootstrap_args(elixir=True)]
    else:
        erl = find_erl(release)
        if erl is None:
            raise BeamStartError(f"OTP {release} is not installed")
        argv = [str(erl), f"-{flag}", arg, "-setcookie", spec.cookie, "-noshell", *emu,
                *beam.bootstrap_args(elixir=False)]
    return BeamNode.launch(lab.command(spec.host, argv), name=name, release=release,
                           elixir=elixir, timeout=timeout)


class _PyProcess:
    """A Python node process whose output lines go to ``on_line`` (the rest is kept)."""

    #: whether closing stdin ends the program (the agent's way; the CLI waits for SIGTERM)
    stops_on_eof = False

    def __init__(self, lab: Lab, host: str, argv: Sequence[str], name: str) -> None:
        env = os.environ | {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self.name = name
        self._output: collections.deque[str] = collections.deque(maxlen=_OUTPUT_LINES)
        self._lock = threading.Lock()
        self._exited = threading.Event()  # its output closed: it is gone or going
        self._process = beam.OsProcess(lab.command(host, argv), env, pipes=True)
        self._reader = threading.Thread(target=self._read, name=f"py-reader-{name}",
                                        daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def output(self) -> str:
        with self._lock:
            return "".join(self._output)

    def stop(self) -> None:
        """Close stdin, SIGTERM if that is not enough, then SIGKILL; idempotent, bounded."""
        stdin = self._process.proc.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.close()
        if not self.stops_on_eof or not self._process.wait(_STOP_WAIT):
            self._process.terminate()
        self._reader.join(_STOP_WAIT)

    def on_line(self, line: str) -> bool:
        """Take a line meant for the harness; False keeps it as output."""
        return False

    def on_exit(self) -> None:
        """The process closed its output."""

    def _read(self) -> None:
        stdout: IO[bytes] | None = self._process.proc.stdout
        assert stdout is not None
        with stdout:
            for raw in stdout:
                line = raw.decode("utf-8", "replace")
                if not self.on_line(line.rstrip("\n")):
                    with self._lock:
                        self._output.append(line)
        self._exited.set()
        self.on_exit()

    def _wait_for(self, ready: threading.Event, what: str, timeout: float) -> None:
        if not ready.wait(timeout) or self._exited.is_set():
            self.stop()
            gone = "it exited" if self._exited.is_set() else f"not within {timeout}s"
            raise BeamStartError(f"{self.name}: no {what} ({gone}); output:\n{self.output}")


class PyCliNode(_PyProcess):
    """``pyerl-node run`` on a host; ready when it says which port it listens on."""

    def __init__(self, lab: Lab, spec: NodeSpec, *, listen_host: str | None = None,
                 extra_args: Sequence[str] = (), timeout: float = 20.0) -> None:
        name = spec.full_name(lab)
        flag = ["--sname", spec.alive] if spec.names is NameKind.SHORT else ["--name", name]
        argv = [str(PYERL_NODE), "run", *flag, "--cookie", spec.cookie,
                "--net-ticktime", str(spec.ticktime), *extra_args]
        if listen_host is not None:
            argv += ["--listen-host", listen_host]
        self._ready = threading.Event()
        self._banner = f"pyerl_node {name} listening on port "
        super().__init__(lab, spec.host, argv, name)
        self._wait_for(self._ready, f"{self._banner!r}", timeout)

    def on_line(self, line: str) -> bool:
        if line.startswith(self._banner):
            self._ready.set()
        return False

    def on_exit(self) -> None:
        self._ready.set()  # a node that exits early is not ready: _wait_for says so


class AgentError(Exception):
    """The agent answered a request with an error."""


class PyAgent(_PyProcess):
    """A Python node on a host, driven over JSON lines (see ``py_agent.py``)."""

    stops_on_eof = True

    def __init__(self, lab: Lab, spec: NodeSpec, *, listen_host: str | None = None,
                 extra_args: Sequence[str] = (), timeout: float = 20.0) -> None:
        name = spec.full_name(lab)
        flag = ["--sname", spec.alive] if spec.names is NameKind.SHORT else ["--name", name]
        argv = [sys.executable, "-m", "interop_tests.multihost.py_agent", *flag,
                "--cookie", spec.cookie, "--net-ticktime", str(spec.ticktime), *extra_args]
        if listen_host is not None:
            argv += ["--listen-host", listen_host]
        if spec.inet6:
            argv.append("--inet6")
        self._ready = threading.Event()
        self._pending: dict[int, concurrent.futures.Future[Json]] = {}
        self._seq = itertools.count(1)
        self._events: list[dict[str, Json]] = []
        self._state = threading.Lock()  # pending replies and events
        super().__init__(lab, spec.host, argv, name)
        self._wait_for(self._ready, "ready event", timeout)

    def request(self, op: str, timeout: float = 20.0, **args: Json) -> Json:
        """Run ``op`` on the agent; AgentError if it raised, BeamTimeoutError if silent."""
        seq = next(self._seq)
        fut: concurrent.futures.Future[Json] = concurrent.futures.Future()
        with self._state:
            self._pending[seq] = fut
        stdin = self._process.proc.stdin
        assert stdin is not None
        stdin.write((json.dumps({"id": seq, "op": op, **args}) + "\n").encode())
        stdin.flush()
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            raise BeamTimeoutError(f"{self.name} did not answer {op} {args} within "
                                   f"{timeout}s; output:\n{self.output}") from None
        finally:
            with self._state:
                self._pending.pop(seq, None)

    def events(self, kind: str | None = None) -> list[dict[str, Json]]:
        with self._state:
            return [e for e in self._events if kind is None or e["event"] == kind]

    def on_line(self, line: str) -> bool:
        if not line.startswith("{"):
            return False
        try:
            record = json.loads(line)
        except ValueError:
            return False
        with self._state:
            if "id" in record:
                fut = self._pending.pop(record["id"], None)
                if fut is not None:
                    if "error" in record:
                        fut.set_exception(AgentError(record["error"]))
                    else:
                        fut.set_result(record["ok"])
            elif record.get("event") == "ready":
                self._ready.set()
            else:
                self._events.append(record)
        return True

    def on_exit(self) -> None:
        self._ready.set()
        with self._state:
            for fut in self._pending.values():
                fut.set_exception(AgentError(f"{self.name} exited; output:\n{self.output}"))
            self._pending.clear()
