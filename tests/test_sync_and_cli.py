"""The blocking facade and the ``pyerl-node`` command line, end to end on loopback."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyerl_node.proto.terms import Atom
from pyerl_node.runtime import malloc_tuning
from pyerl_node.sync import Node
from tests.conftest import free_port


def test_sync_nodes_ping_send_and_receive() -> None:
    port = free_port()
    tag = secrets.token_hex(3)
    with Node(f"s1{tag}@127.0.0.1", "c", epmd_port=port, embedded_epmd=True) as one, Node(
        f"s2{tag}@127.0.0.1", "c", epmd_port=port
    ) as two:
        assert one.ping(two.node_atom)
        box = two.mailbox(name="box")
        one.send((Atom("box"), two.node_atom), (1, "x"))
        assert box.receive(timeout=5) == (1, b"x")
        assert one.nodes() == [two.node_atom]


def _cli(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    with log.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "pyerl_node", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )


def _stop(server: subprocess.Popen[str]) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=10)
    if server.stdout is not None:
        server.stdout.close()


def test_cli_run_ping_names_and_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = os.environ | {"ERL_EPMD_PORT": str(port), "HOME": str(tmp_path)}
    name = f"cli{secrets.token_hex(3)}@127.0.0.1"
    server = _cli("run", "--embedded-epmd", "--name", name, "--cookie", "k", env=env,
                  log=tmp_path / "log")
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert f"pyerl_node {name} listening" in line
        # run tunes glibc's malloc unless the environment chose (tests/test_malloc_tuning.py)
        assert line.rstrip().endswith(", malloc tuned)") is (
            malloc_tuning._glibc() is not None and malloc_tuning._user_chose() is None)
        ping = subprocess.run(
            [sys.executable, "-m", "pyerl_node", "ping", name, "--cookie", "k"],
            env=env, capture_output=True, text=True, timeout=30, check=False,
        )
        assert (ping.returncode, ping.stdout.strip()) == (0, "pong")
        bad = subprocess.run(
            [sys.executable, "-m", "pyerl_node", "ping", name, "--cookie", "wrong",
             "--timeout", "3"],
            env=env, capture_output=True, text=True, timeout=30, check=False,
        )
        assert (bad.returncode, bad.stdout.strip()) == (1, "pang")
        names = subprocess.run(
            [sys.executable, "-m", "pyerl_node", "names"],
            env=env, capture_output=True, text=True, timeout=30, check=False,
        )
        assert f"name {name.split('@', maxsplit=1)[0]} at port" in names.stdout
    finally:
        _stop(server)
    assert server.returncode == 0


def test_cli_cookie_defaults_to_erlang_cookie_file(tmp_path: Path) -> None:
    (tmp_path / ".erlang.cookie").write_text("fromfile\n")
    port = free_port()
    env = os.environ | {"ERL_EPMD_PORT": str(port), "HOME": str(tmp_path)}
    name = f"ck{secrets.token_hex(3)}@127.0.0.1"
    server = _cli("run", "--embedded-epmd", "--name", name, "--no-tune-malloc", env=env,
                  log=tmp_path / "log")
    try:
        assert server.stdout is not None
        assert server.stdout.readline().rstrip().endswith(" event loop)")
        deadline = time.monotonic() + 30
        ping = subprocess.run(
            [sys.executable, "-m", "pyerl_node", "ping", name, "--cookie", "fromfile"],
            env=env, capture_output=True, text=True, timeout=max(1, deadline - time.monotonic()),
            check=False,
        )
        assert ping.stdout.strip() == "pong"
    finally:
        _stop(server)


def test_cli_run_picks_uvloop_unless_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvloop  # a dev dependency: the default loop of ``run`` when installed

    from pyerl_node.cli import LOOP_ENV, build_parser, loop_factory
    monkeypatch.delenv(LOOP_ENV, raising=False)
    parser = build_parser()
    run = ["run", "--sname", "py"]
    assert loop_factory(parser.parse_args(run)) is uvloop.new_event_loop
    assert loop_factory(parser.parse_args([*run, "--no-uvloop"])) is None
    assert loop_factory(parser.parse_args(["ping", "beam"])) is None  # only ``run`` switches
    monkeypatch.setenv(LOOP_ENV, "asyncio")
    assert loop_factory(parser.parse_args(run)) is None
