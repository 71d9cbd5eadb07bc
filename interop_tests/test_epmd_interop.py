"""EPMD interop with real OTP 25 and OTP 28.

* Real BEAM nodes (OTP 25, OTP 28, Elixir) register with our Python EPMD, find each other
  and ping; ``net_adm:names/0`` and the real ``epmd -names`` tool read it; a halted node's
  name disappears.
* The daemon (``python -m epmd --daemon``): OTP 25 and OTP 28 nodes meet on it; started by
  ``ensure_epmd`` from a process that then exits, it stays; one local process opening more
  connections than its cap (10 500 and more) does not keep nodes from registering and
  finding each other (the numbers are printed: run with ``-s``).
* Our client against the real ``epmd`` daemon.
* Conformance: one scripted sequence of raw requests (normal, refused, malformed, STOP, KILL)
  sent to the real daemon and to ours; the transcripts must match, up to creations, fds and
  the port numbers each daemon listens on. Likewise the output of the real ``epmd`` tool
  (``-names``, ``-dump``, ``-stop``, ``-kill``) against either daemon.

The Python EPMD runs in-process on an event loop in a background thread, so the blocking
``BeamNode`` helpers can be used from plain test functions. Every daemon and node has its own
port and is stopped by pid; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from epmd import EpmdServer, Registry
from interop_tests.beam import (
    LOCALHOST,
    BeamNode,
    BeamStartError,
    Epmd,
    free_port,
    unique_name,
)
from interop_tests.conftest import require_release
from interop_tests.runtimes import OTP_RELEASES, epmd_binary, find_elixir
from pyerl_node.proto.epmd_wire import Alive2Req, NodeType, encode_request
from pyerl_node.proto.errors import EpmdError, NameInUse
from pyerl_node.runtime import epmd_client
from tests.test_epmd_server import (
    DAEMON_ENV,
    daemon,
    names_over,
    open_fds,
    pid_gone,
    proc_status_kib,
    stop_pid,
)

T = TypeVar("T")
WAIT = 10.0


class ThreadedEpmd:
    """Our EpmdServer on its own event loop in a daemon thread."""

    def __init__(self, *, relaxed_command_check: bool = False) -> None:
        self.server = EpmdServer(port=0, relaxed_command_check=relaxed_command_check)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="py-epmd",
                                        daemon=True)
        self._thread.start()
        self.run(self.server.start())
        self.port = self.server.port

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def wait_for(self, predicate: Callable[[Registry], bool], timeout: float = WAIT) -> None:
        async def waiter() -> None:
            async with asyncio.timeout(timeout):
                await self.server.wait_for(predicate)

        self.run(waiter(), timeout + 1)

    def names(self) -> list[tuple[str, int]]:
        return self.run(self._names())

    async def _names(self) -> list[tuple[str, int]]:
        return self.server.registry.names()

    def stop(self) -> None:
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self.run(self.server.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT)
        if not self._thread.is_alive():
            self._loop.close()


@pytest.fixture
def py_epmd() -> Iterator[ThreadedEpmd]:
    daemon = ThreadedEpmd()
    try:
        yield daemon
    finally:
        daemon.stop()


def _alive(node: BeamNode) -> str:
    return node.name.partition("@")[0]


def _start_nodes(releases: tuple[str, str], epmd_port: int,
                 cookie: str) -> tuple[BeamNode, BeamNode]:
    for release in releases:
        require_release(release)
    a = BeamNode.start(releases[0], f"{unique_name('a')}@{LOCALHOST}", cookie=cookie,
                       epmd_port=epmd_port)
    try:
        b = BeamNode.start(releases[1], f"{unique_name('b')}@{LOCALHOST}", cookie=cookie,
                           epmd_port=epmd_port)
    except BaseException:
        a.stop()
        raise
    return a, b


# --- BEAM nodes on our EPMD -----------------------------------------------------------------


def test_beam_nodes_use_python_epmd(otp_release: str, py_epmd: ThreadedEpmd,
                                    cookie: str) -> None:
    a, b = _start_nodes((otp_release, otp_release), py_epmd.port, cookie)
    try:
        registered = dict(py_epmd.names())
        assert set(registered) == {_alive(a), _alive(b)}
        # The creation the node runs with is the one our EPMD gave it.
        reg_a = py_epmd.run(_lookup(py_epmd.server, _alive(a)))
        assert a.eval("erlang:system_info(creation)") == str(reg_a)
        # They find each other through it and connect.
        assert a.eval(f"net_adm:ping('{b.name}')") == "pong"
        assert b.eval(f"net_adm:ping('{a.name}')") == "pong"
        assert b.eval(f"erl_epmd:port_please(\"{_alive(a)}\", {{127,0,0,1}})") == (
            f"{{port,{registered[_alive(a)]},6}}")
        # net_adm:names/0 parses our NAMES reply (and checks the port in it).
        expected = sorted(f'{{"{n}",{p}}}' for n, p in registered.items())
        listed = a.eval("{ok, L} = net_adm:names(), lists:sort(L)")
        assert listed.replace("\n", "").replace(" ", "") == "[" + ",".join(expected) + "]"
        # So does the real epmd tool of this release.
        tool = _epmd_tool(otp_release, py_epmd.port, "-names")
        assert f"epmd: up and running on port {py_epmd.port} with data:" in tool
        for name, port in registered.items():
            assert f"name {name} at port {port}\n" in tool
        # A node that halts disappears.
        b.stop()
        py_epmd.wait_for(lambda reg: reg.lookup(_alive(b)) is None)
        assert a.eval("{ok, L} = net_adm:names(), [N || {N, _} <- L]") == f'["{_alive(a)}"]'
    finally:
        b.stop()
        a.stop()


def test_otp25_and_otp28_meet_on_python_epmd(py_epmd: ThreadedEpmd, cookie: str) -> None:
    old, new = _start_nodes(("25", "28"), py_epmd.port, cookie)
    try:
        assert new.eval(f"net_adm:ping('{old.name}')") == "pong"
        assert old.eval("length(nodes())") == "1"
    finally:
        new.stop()
        old.stop()


def test_elixir_node_on_python_epmd(py_epmd: ThreadedEpmd, cookie: str) -> None:
    require_release("28")
    if find_elixir() is None:
        pytest.skip("elixir is not installed")
    ex = BeamNode.start("25", f"{unique_name('ex')}@{LOCALHOST}", cookie=cookie,
                        epmd_port=py_epmd.port, elixir=True)
    try:
        beam = BeamNode.start("28", f"{unique_name('b')}@{LOCALHOST}", cookie=cookie,
                              epmd_port=py_epmd.port)
        try:
            assert ex.eval_elixir(f"Node.connect(:'{beam.name}')") == "true"
            assert dict(py_epmd.names()).keys() == {_alive(ex), _alive(beam)}
        finally:
            beam.stop()
    finally:
        ex.stop()


def test_same_name_twice_is_refused_by_python_epmd(py_epmd: ThreadedEpmd, cookie: str) -> None:
    require_release("28")
    name = f"{unique_name('twice')}@{LOCALHOST}"
    first = BeamNode.start("28", name, cookie=cookie, epmd_port=py_epmd.port)
    try:
        with pytest.raises(BeamStartError, match="seems to be in use by another Erlang node"):
            BeamNode.start("28", name, cookie=cookie, epmd_port=py_epmd.port, timeout=20)
        assert first.eval("node()") == f"'{name}'"
    finally:
        first.stop()


async def _lookup(server: EpmdServer, name: str) -> int:
    reg = server.registry.lookup(name)
    assert reg is not None
    return reg.creation


def _epmd_tool(release: str, port: int, *args: str) -> str:
    binary = epmd_binary(release)
    if binary is None:
        pytest.skip(f"no epmd binary for OTP {release}")
    out = subprocess.run([str(binary), "-port", str(port), *args], capture_output=True,
                         text=True, timeout=WAIT, check=False)
    return out.stdout + out.stderr


# --- our client against the real daemon ----------------------------------------------------


def test_client_against_real_epmd(otp_release: str, cookie: str) -> None:
    require_release(otp_release)
    daemon = Epmd.start(otp_release)
    node: BeamNode | None = None
    try:
        node = BeamNode.start(otp_release, f"{unique_name('beam')}@{LOCALHOST}", cookie=cookie,
                              epmd_port=daemon.port)
        asyncio.run(_client_session(daemon.port, node))
    finally:
        if node is not None:
            node.stop()
        daemon.stop()


async def _client_session(port: int, node: BeamNode) -> None:
    me = unique_name("py")
    reg = await epmd_client.register(me, 40001, epmd_port=port)
    assert reg.creation > 3
    with pytest.raises(NameInUse, match=f"127.0.0.1:{port}"):
        await epmd_client.register(me, 40002, epmd_port=port)
    mine = await epmd_client.port_please(me, epmd_port=port)
    assert (mine.port, mine.node_type, mine.highest_version, mine.lowest_version) == (
        40001, NodeType.NORMAL, 6, 6)
    beam = await epmd_client.port_please(_alive(node), epmd_port=port)
    assert (beam.highest_version, beam.lowest_version, beam.name) == (6, 5, _alive(node))
    # The BEAM node agrees on where it listens.
    assert await node.eval_async(f'erl_epmd:port_please("{_alive(node)}", {{127,0,0,1}})') == (
        f"{{port,{beam.port},6}}")
    listed = dict(await epmd_client.names(epmd_port=port))
    assert listed == {me: 40001, _alive(node): beam.port}
    dump = await epmd_client.dump(epmd_port=port)
    assert {e.name for e in dump.active} == {me, _alive(node)}
    assert await epmd_client.kill(epmd_port=port) is False  # nodes alive
    with pytest.raises(EpmdError, match="relaxed command check"):
        await epmd_client.stop(me, epmd_port=port)
    hidden = await epmd_client.register(me + "h", 40003, epmd_port=port, hidden=True)
    assert (await epmd_client.port_please(me + "h", epmd_port=port)).node_type == 72
    await hidden.close()
    await reg.close()
    deadline = time.monotonic() + WAIT  # the real daemon: no event to wait on, poll briefly
    while me in dict(await epmd_client.names(epmd_port=port)):
        assert time.monotonic() < deadline, f"{me} still registered"
        await asyncio.sleep(0.05)
    again = await epmd_client.register(me, 40001, epmd_port=port)
    assert again.creation == reg.creation + 1
    await again.close()


# --- conformance: the same raw requests to the real daemon and to ours ----------------------


class _Conn:
    """A raw client socket: send bytes, collect what comes back and whether it closed."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((LOCALHOST, port), timeout=WAIT)

    def send(self, data: bytes, quiet: float = 0.3) -> tuple[bytes, bool]:
        self.sock.sendall(data)
        got = b""
        self.sock.settimeout(quiet)
        try:
            while True:
                chunk = self.sock.recv(4096)
                if not chunk:
                    return got, True
                got += chunk
        except TimeoutError:
            return got, False
        except ConnectionResetError:
            return got, True

    def close(self) -> None:
        self.sock.close()


def _alive2(name: bytes, port: int, *, high: int = 6, low: int = 5, node_type: int = 77,
            extra: bytes = b"") -> bytes:
    body = b"".join((b"x", port.to_bytes(2, "big"), bytes((node_type, 0)),
                     high.to_bytes(2, "big"), low.to_bytes(2, "big"),
                     len(name).to_bytes(2, "big"), name, len(extra).to_bytes(2, "big"), extra))
    return len(body).to_bytes(2, "big") + body


def _req(body: bytes) -> bytes:
    return len(body).to_bytes(2, "big") + body


def _transcript(port: int, relaxed: bool) -> list[tuple[str, bytes, bool]]:
    """Run the script against the daemon on ``port``; normalise what differs legitimately."""
    opened: list[_Conn] = []
    try:
        return _script(port, relaxed, opened)
    finally:
        for conn in opened:
            conn.close()


def _script(port: int, relaxed: bool, opened: list[_Conn]) -> list[tuple[str, bytes, bool]]:
    def connect() -> _Conn:  # the caller closes every connection, even on failure
        conn = _Conn(port)
        opened.append(conn)
        return conn

    steps: list[tuple[str, bytes, bool]] = []
    creations: dict[str, int] = {}

    def record(label: str, reply: bytes, closed: bool) -> None:
        if reply[:2] == b"v\x00" and len(reply) == 6:
            creations[label] = int.from_bytes(reply[2:], "big")
            reply = b"v\x00<creation>"
        elif reply[:2] == b"y\x00" and len(reply) == 4:
            assert 1 <= int.from_bytes(reply[2:], "big") <= 3
            reply = b"y\x00<small creation>"
        if label.startswith(("NAMES", "DUMP")) and len(reply) >= 4:
            assert int.from_bytes(reply[:4], "big") == port
            reply = b"<port>" + re.sub(rb"fd = \d+", b"fd = <fd>", reply[4:])
        steps.append((label, reply, closed))

    def once(label: str, data: bytes) -> None:
        c = connect()
        try:
            record(label, *c.send(data))
        finally:
            c.close()

    def until_gone(name: bytes) -> None:
        deadline = time.monotonic() + WAIT
        while f"name {name.decode()} at".encode() in _names_text(port):
            assert time.monotonic() < deadline
            time.sleep(0.02)

    alpha = connect()
    record("ALIVE2 alpha", *alpha.send(_alive2(b"alpha", 5001)))
    dup = connect()
    record("ALIVE2 alpha again while registered", *dup.send(_alive2(b"alpha", 5009)))
    dup.close()
    beta = connect()
    record("ALIVE2 beta, highest version 5", *beta.send(_alive2(b"beta", 5003, high=5)))
    hid = connect()
    record("ALIVE2 hid, type 72, extra", *hid.send(
        _alive2(b"hid", 5004, node_type=72, extra=b"xyz")))
    for name in (b"alpha", b"hid", b"beta", b"nobody", b"alpha\x00"):
        once(f"PORT_PLEASE2 {name!r}", _req(b"z" + name))
    once("NAMES", b"\x00\x01n")
    once("DUMP", b"\x00\x01d")
    alpha.close()
    until_gone(b"alpha")
    alpha = connect()
    record("ALIVE2 alpha after unregistering", *alpha.send(_alive2(b"alpha", 5001)))
    once("DUMP after re-registration", b"\x00\x01d")
    long_name = connect()
    record("ALIVE2 256-character name", *long_name.send(_alive2(b"n" * 256, 5005)))
    long_name.close()
    for label, data in (
        ("ALIVE2 NUL in name", _alive2(b"a\x00b", 5006)),
        ("ALIVE2 name length beyond request", _req(b"x\x13\x89M\x00\x00\x06\x00\x05\x00\x09ab"
                                                   b"\x00\x00")),
        ("ALIVE2 too short", _req(b"x" + bytes(12))),
        ("PORT_PLEASE2 empty name", _req(b"z")),
        ("unknown request 81", _req(b"Q")),
        ("length 0", b"\x00\x00"),
        ("length 65535", b"\xff\xff" + b"n" * 16),
        ("bytes beyond the request", b"\x00\x01n" + b"junk"),
    ):
        once(label, data)
    # A request on a registration socket: no answer, the registration goes away.
    record("NAMES on hid's registration socket", *hid.send(b"\x00\x01n"))
    hid.close()
    until_gone(b"hid")
    once("NAMES after hid's socket misbehaved", b"\x00\x01n")
    once("STOP beta", _req(b"sbeta"))
    once("STOP nobody", _req(b"snobody"))
    if relaxed:
        until_gone(b"beta")
    once("NAMES after STOP", b"\x00\x01n")
    once("KILL with live nodes", b"\x00\x01k")
    assert creations["ALIVE2 alpha after unregistering"] == creations["ALIVE2 alpha"] + 1
    if relaxed:
        for conn in (alpha, beta):
            conn.close()
        return steps
    for conn in (alpha, beta):
        conn.close()
    until_gone(b"alpha")
    until_gone(b"beta")
    once("KILL with no live nodes", b"\x00\x01k")
    return steps


def _names_text(port: int) -> bytes:
    c = _Conn(port)
    try:
        return c.send(b"\x00\x01n")[0]
    finally:
        c.close()


@pytest.mark.parametrize("relaxed", [False, True], ids=["strict", "relaxed"])
@pytest.mark.parametrize("release", OTP_RELEASES, ids=[f"otp{r}" for r in OTP_RELEASES])
def test_same_transcript_as_real_epmd(release: str, relaxed: bool) -> None:
    require_release(release)
    real = Epmd.start(release, relaxed=relaxed)
    try:
        expected = _transcript(real.port, relaxed)
    finally:
        real.stop()
    ours = ThreadedEpmd(relaxed_command_check=relaxed)
    try:
        got = _transcript(ours.port, relaxed)
        stopped = ours.run(_wait_stopped(ours.server))
    finally:
        ours.stop()
    assert got == expected
    assert stopped  # KILL stopped our server as it stopped epmd


async def _wait_stopped(server: EpmdServer) -> bool:
    async with asyncio.timeout(WAIT):
        await server.serve_forever()
    return True


def test_encoded_alive2_matches_the_script_encoder() -> None:
    # The raw builder used above agrees with epmd_wire (so the script sends what it says).
    assert _alive2(b"hid", 5004, node_type=72, extra=b"xyz") == encode_request(
        Alive2Req(5004, "hid", 72, 0, 6, 5, b"xyz"))


def _tool_session(release: str, port: int, relaxed: bool) -> list[str]:
    """The real ``epmd`` tool's commands against the daemon on ``port``; outputs normalised."""

    def tool(*args: str) -> str:
        text = _epmd_tool(release, port, *args)
        text = text.replace(f"port {port} ", "port <port> ")
        return re.sub(r"fd = \d+", "fd = <fd>", text)

    node = _Conn(port)
    try:
        outputs = [node.send(_alive2(b"alpha", 5001))[0][:2].hex()]
        outputs += [tool("-names"), tool("-dump"), tool("-stop", "alpha"),
                    tool("-stop", "alpha")]
        if not relaxed:
            outputs.append(tool("-kill"))  # refused: alpha is alive
            node.close()
            deadline = time.monotonic() + WAIT
            while b"alpha" in _names_text(port):
                assert time.monotonic() < deadline
                time.sleep(0.02)
        outputs.append(tool("-kill"))
        return outputs
    finally:
        node.close()


@pytest.mark.parametrize("relaxed", [False, True], ids=["strict", "relaxed"])
def test_epmd_tool_sees_the_same_as_with_real_epmd(otp_release: str, relaxed: bool) -> None:
    real = Epmd.start(otp_release, relaxed=relaxed)
    try:
        expected = _tool_session(otp_release, real.port, relaxed)
    finally:
        real.stop()
    ours = ThreadedEpmd(relaxed_command_check=relaxed)
    try:
        got = _tool_session(otp_release, ours.port, relaxed)
    finally:
        ours.stop()
    assert got == expected
    assert any("Killed" in out for out in expected)


# --- the daemon: python -m epmd --daemon, ensure_epmd, a flood ---------------------------------


def test_otp25_and_otp28_on_the_python_epmd_daemon(cookie: str) -> None:
    port = free_port()
    # As epmd: the port from ERL_EPMD_PORT, every interface; the nodes run -start_epmd false.
    with daemon(env=DAEMON_ENV | {"ERL_EPMD_PORT": str(port)}) as pid:
        old, new = _start_nodes(("25", "28"), port, cookie)
        try:
            assert old.eval(f"net_adm:ping('{new.name}')") == "pong"
            assert new.eval(f"net_adm:ping('{old.name}')") == "pong"
            listed = dict(asyncio.run(epmd_client.names(epmd_port=port)))
            assert listed.keys() == {_alive(old), _alive(new)}
            assert new.eval(f"erl_epmd:port_please(\"{_alive(old)}\", {{127,0,0,1}})") == (
                f"{{port,{listed[_alive(old)]},6}}")
            new.stop()  # its registration ends with it
            deadline = time.monotonic() + WAIT
            while _alive(new) in dict(asyncio.run(epmd_client.names(epmd_port=port))):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert not pid_gone(pid)
        finally:
            new.stop()
            old.stop()


_STARTER = ("import asyncio, sys\n"
            "from pyerl_node.runtime.epmd_daemon import ensure_epmd\n"
            "print(asyncio.run(ensure_epmd(int(sys.argv[1]))))\n")


def _ensure_from_a_short_lived_process(port: int) -> str:
    out = subprocess.run([sys.executable, "-c", _STARTER, str(port)], env=DAEMON_ENV,
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_daemon_started_by_ensure_epmd_outlives_its_starter(cookie: str) -> None:
    require_release("28")
    port = free_port()
    pid = int(_ensure_from_a_short_lived_process(port))  # the starter has exited now
    node: BeamNode | None = None
    try:
        time.sleep(0.5)
        assert not pid_gone(pid)
        assert names_over(LOCALHOST, port) == port.to_bytes(4, "big")
        node = BeamNode.start("28", f"{unique_name('late')}@{LOCALHOST}", cookie=cookie,
                              epmd_port=port)
        assert dict(asyncio.run(epmd_client.names(epmd_port=port))).keys() == {_alive(node)}
        # A second starter finds it and starts nothing.
        assert _ensure_from_a_short_lived_process(port) == "None"
    finally:
        if node is not None:
            node.stop()
        stop_pid(pid)
    assert pid_gone(pid)


FLOOD = 10_500  # beyond the daemon's default cap of 10 000 connections
CHURN_MAX = 3_000  # more connections opened, one after another, while the nodes start


@contextlib.contextmanager
def _fd_limit(wanted: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


class _Churn(threading.Thread):
    """Opens connection after connection (and keeps them) until stopped or CHURN_MAX."""

    def __init__(self, port: int) -> None:
        super().__init__(name="epmd-churn", daemon=True)
        self.port = port
        self.socks: list[socket.socket] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set() and len(self.socks) < CHURN_MAX:
            with contextlib.suppress(OSError):
                self.socks.append(socket.create_connection((LOCALHOST, self.port), timeout=5))
            time.sleep(0.001)


async def _client_latencies(port: int, rounds: int = 20) -> tuple[float, float]:
    """Median seconds of our client's register and port_please under the flood."""
    register, lookup = [], []
    for i in range(rounds):
        t0 = time.perf_counter()
        reg = await epmd_client.register(f"probe{i}", 7000 + i, epmd_port=port)
        register.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        assert (await epmd_client.port_please(f"probe{i}", epmd_port=port)).port == 7000 + i
        lookup.append(time.perf_counter() - t0)
        await reg.close()
    return statistics.median(register), statistics.median(lookup)


@pytest.mark.timeout(600)
def test_flood_of_connections_does_not_lock_beam_nodes_out(cookie: str) -> None:
    require_release("25")
    require_release("28")
    port = free_port()
    nums: dict[str, float] = {}
    flood: list[socket.socket] = []
    churn = _Churn(port)
    nodes: list[BeamNode] = []
    # A long deadline: only eviction, not the idle timeout, can make room here.
    with _fd_limit(FLOOD + CHURN_MAX + 1000), \
            daemon("--port", str(port), "--address", LOCALHOST,
                   "--request-timeout", "600") as pid:
        try:
            nums["daemon RSS idle (KiB)"] = proc_status_kib(pid)
            t0 = time.monotonic()
            baseline = BeamNode.start("28", f"{unique_name('base')}@{LOCALHOST}",
                                      cookie=cookie, epmd_port=port)
            nums["OTP 28 node start, no flood (s)"] = time.monotonic() - t0
            baseline.stop()
            nums["client register, no flood (ms)"], nums["client lookup, no flood (ms)"] = (
                1000 * t for t in asyncio.run(_client_latencies(port)))

            t0 = time.monotonic()
            for _ in range(FLOOD):
                flood.append(socket.create_connection((LOCALHOST, port), timeout=WAIT))
            nums[f"open {FLOOD} connections (s)"] = time.monotonic() - t0
            # Accepted sockets beyond the cap live until the daemon evicts for them: settle.
            _wait(lambda: 10_000 <= open_fds(pid) <= 10_000 + 64,
                  "daemon did not settle at its cap of 10 000 connections")
            nums["daemon fds, flooded"] = open_fds(pid)
            nums["daemon RSS flooded (KiB)"] = proc_status_kib(pid)

            churn.start()  # keep flooding while the nodes come up
            t0 = time.monotonic()
            nodes.append(BeamNode.start("28", f"{unique_name('a')}@{LOCALHOST}", cookie=cookie,
                                        epmd_port=port))
            nums["OTP 28 node start, flooded (s)"] = time.monotonic() - t0
            t0 = time.monotonic()
            nodes.append(BeamNode.start("25", f"{unique_name('b')}@{LOCALHOST}", cookie=cookie,
                                        epmd_port=port))
            nums["OTP 25 node start, flooded (s)"] = time.monotonic() - t0
            a, b = nodes
            t0 = time.monotonic()
            assert b.eval(f"net_adm:ping('{a.name}')") == "pong"  # b found a through EPMD
            nums["OTP 25 finds and pings OTP 28, flooded (s)"] = time.monotonic() - t0
            nums["client register, flooded (ms)"], nums["client lookup, flooded (ms)"] = (
                1000 * t for t in asyncio.run(_client_latencies(port)))
            churn.halt.set()
            churn.join(WAIT)
            nums["churn connections"] = len(churn.socks)
            listed = dict(asyncio.run(epmd_client.names(epmd_port=port)))
            assert listed.keys() == {_alive(a), _alive(b)}
            assert open_fds(pid) <= 10_000 + 64  # the cap held
            evicted = sum(_closed_by_peer(s) for s in flood + churn.socks)
            nums["flood connections closed by the daemon"] = evicted
            assert evicted >= FLOOD + len(churn.socks) - 10_000
            assert a.eval(f"net_adm:ping('{b.name}')") == "pong"
        finally:
            for sock in flood + churn.socks:
                sock.close()
            churn.halt.set()
            for node in nodes:
                node.stop()
        _wait(lambda: open_fds(pid) < 100, "daemon kept the flood's sockets")
        nums["daemon RSS after the flood (KiB)"] = proc_status_kib(pid)
        nums["daemon peak RSS (KiB)"] = proc_status_kib(pid, "VmHWM")
        nums["daemon fds after the flood"] = open_fds(pid)
    print("\nEPMD flood numbers:")
    for label, value in nums.items():
        print(f"  {label}: {value:.3g}" if isinstance(value, float) else f"  {label}: {value}")
