"""The harness itself, against real OTP 25, OTP 28 and Elixir: nodes come up on the test's own
epmd, talk to each other, evaluate code, report errors, and leave no process behind."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from interop_tests.beam import (
    LOCALHOST,
    BeamError,
    BeamEvalError,
    BeamExitedError,
    BeamNode,
    BeamStartError,
    BeamTimeoutError,
    Epmd,
)
from interop_tests.conftest import BeamNodeFactory, require_release


def _gone(pid: int, timeout: float = 5.0) -> bool:
    """True once no process is left in the process group ``pid`` leads (or led)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def _epmd_names(port: int) -> str:
    """The NAMES reply of the epmd on ``port``, read over a raw socket."""
    with socket.create_connection((LOCALHOST, port), timeout=5) as sock:
        sock.sendall(b"\x00\x01n")
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)[4:].decode()


def _alive_part(node: BeamNode) -> str:
    return node.name.partition("@")[0]


def test_nodes_of_one_release_ping_each_other(
        otp_release: str, beam_node: BeamNodeFactory, epmd: Epmd) -> None:
    a = beam_node(otp_release, prefix="a")
    b = beam_node(otp_release, prefix="b")
    assert a.eval(f"net_adm:ping('{b.name}')") == "pong"
    assert b.eval(f"net_adm:ping('{a.name}')") == "pong"
    assert b.eval("nodes()") == f"['{a.name}']"
    names = _epmd_names(epmd.port)  # registered with the test's own epmd
    assert f"name {_alive_part(a)} at port" in names
    assert f"name {_alive_part(b)} at port" in names
    # The distribution port listens on 127.0.0.1 only (another loopback address is refused).
    dist_port = int(names.split(f"name {_alive_part(a)} at port ")[1].split()[0])
    socket.create_connection((LOCALHOST, dist_port), timeout=5).close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", dist_port), timeout=5).close()


def test_otp25_and_otp28_ping_each_other(beam_node: BeamNodeFactory) -> None:
    old = beam_node("25", prefix="old")
    new = beam_node("28", prefix="new")
    assert old.eval("erlang:system_info(otp_release)") == '"25"'
    assert new.eval("erlang:system_info(otp_release)") == '"28"'
    assert new.eval(f"net_adm:ping('{old.name}')") == "pong"
    assert old.eval(f"net_adm:ping('{new.name}')") == "pong"


def test_a_wrong_cookie_is_refused(otp_release: str, beam_node: BeamNodeFactory) -> None:
    a = beam_node(otp_release, prefix="a")
    b = beam_node(otp_release, prefix="b", cookie="not_the_same")
    assert a.eval(f"net_adm:ping('{b.name}')") == "pang"


def test_pid_is_the_running_emulator(otp_release: str, beam_node: BeamNodeFactory) -> None:
    node = beam_node(otp_release)
    assert node.eval("os:getpid()") == f'"{node.pid}"'
    assert Path(f"/proc/{node.pid}/exe").resolve().name == "beam.smp"
    assert os.getpgid(node.pid) == node.pid


def test_stop_leaves_no_process(otp_release: str, beam_node: BeamNodeFactory) -> None:
    node = beam_node(otp_release)
    node.stop()
    assert _gone(node.pid)
    node.stop()  # idempotent
    with pytest.raises(BeamExitedError):
        node.eval("ok")


def test_kill9_is_seen_by_peers(otp_release: str, beam_node: BeamNodeFactory) -> None:
    victim = beam_node(otp_release, prefix="victim")
    watcher = beam_node(otp_release, prefix="watcher")
    assert watcher.eval(f"net_adm:ping('{victim.name}')") == "pong"
    watcher.eval("register(watcher, spawn(fun() -> "
                 f"monitor_node('{victim.name}', true), "
                 "receive {nodedown, N} -> persistent_term:put(down, N) end end))")
    victim.kill9()
    assert _gone(victim.pid)
    assert watcher.eval(
        "(fun W(0) -> timeout; W(I) -> case persistent_term:get(down, none) of "
        "none -> timer:sleep(20), W(I - 1); N -> N end end)(250)") == f"'{victim.name}'"


def test_a_suspended_node_is_silent_until_resumed(
        otp_release: str, beam_node: BeamNodeFactory) -> None:
    node = beam_node(otp_release)
    node.suspend()
    with pytest.raises(BeamTimeoutError):
        node.eval("ok", timeout=0.5)
    node.resume()
    assert node.eval("ok") == "ok"
    node.suspend()
    started = time.monotonic()
    node.stop()  # stopping does not wait for a frozen node to halt by itself
    assert time.monotonic() - started < 3.0
    assert _gone(node.pid)


def test_eval_results_and_errors(otp_release: str, beam_node: BeamNodeFactory) -> None:
    node = beam_node(otp_release)
    # ~p breaks long terms over lines; the result must come back whole.
    printed = node.eval("lists:seq(1, 40).")
    assert "\n" in printed
    assert printed.replace("\n ", "") == str(list(range(1, 41))).replace(" ", "")
    assert node.eval("X = 20,\nY = 22,\nX + Y") == "42"
    # What evaluated code prints does not get mixed into results.
    assert node.eval('io:format("no newline"), ok') == "ok"
    assert "no newline" in node.output
    for expr, kind, reason in [
        ("1 / 0", "error", "badarith"),
        ("throw(oops)", "throw", "oops"),
        ("exit(self(), kill)", "exit", "killed"),
        ("foo(", "error", "parse_error"),
    ]:
        with pytest.raises(BeamEvalError) as caught:
            node.eval(expr)
        assert (caught.value.kind, caught.value.reason.split(",")[0].lstrip("{")) == (
            kind, reason)
    assert node.eval("ok") == "ok"  # and the node still answers


def test_a_timeout_does_not_block_later_evals(
        otp_release: str, beam_node: BeamNodeFactory) -> None:
    node = beam_node(otp_release)
    with pytest.raises(BeamTimeoutError):
        node.eval("receive never -> ok end", timeout=0.3)
    assert node.eval("node()") == f"'{node.name}'"


async def test_eval_async_runs_concurrently(
        otp_release: str, beam_node: BeamNodeFactory) -> None:
    node = beam_node(otp_release)
    started = time.monotonic()
    results = await asyncio.gather(
        *(node.eval_async(f"timer:sleep(700), {i}") for i in range(3)))
    assert results == ["0", "1", "2"]
    assert time.monotonic() - started < 2.0  # not 3 x 0.7 s one after another


def test_a_name_in_use_fails_to_start(otp_release: str, beam_node: BeamNodeFactory) -> None:
    first = beam_node(otp_release)
    with pytest.raises(BeamStartError):
        beam_node(otp_release, name=first.name, timeout=20)
    assert first.eval("ok") == "ok"


def test_elixir_node(beam_node: BeamNodeFactory) -> None:
    ex = beam_node("25", prefix="ex", elixir=True)
    erl = beam_node("25", prefix="erl")
    assert ex.eval_elixir("Enum.map(1..3, &(&1 * 2))") == "[2, 4, 6]"
    assert ex.eval_elixir('%{name: "pyerl"}') == '%{name: "pyerl"}'
    assert ex.eval_elixir(f'Node.connect(:"{erl.name}")') == "true"
    assert erl.eval("nodes()") == f"['{ex.name}']"
    assert ex.eval("lists:reverse([1, 2, 3])") == "[3,2,1]"  # Erlang works there too
    with pytest.raises(BeamEvalError) as caught:
        ex.eval_elixir('raise "boom"')
    assert caught.value.reason == "** (RuntimeError) boom"
    with pytest.raises(BeamError):
        erl.eval_elixir(":ok")
    ex.stop()
    assert _gone(ex.pid)


def test_epmd_stops_by_pid() -> None:
    require_release("25")
    daemon = Epmd.start("25")
    assert _epmd_names(daemon.port) == ""  # answers, and nobody else registered there
    daemon.stop()
    assert _gone(daemon.pid)
    with pytest.raises(OSError):
        _epmd_names(daemon.port)
