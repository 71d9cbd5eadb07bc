"""TLS distribution (``-proto_dist inet_tls``) against real OTP 25 nodes, configured like erl.

One ``-ssl_dist_optfile`` file, written by the test with certificates the test made with
openssl, configures the BEAM node and the Python node alike. OTP 28 from the PyPI wheel has no
ssl application, so OTP 25 (Debian's erlang-nox) is the peer here. Every name is
``x@127.0.0.1``; OTP checks the host part against the certificate's DNS names, so each leaf
carries ``DNS:127.0.0.1`` (and ``IP:127.0.0.1``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from interop_tests.beam import LOCALHOST, BeamNode, Epmd, unique_name
from interop_tests.conftest import BeamNodeFactory, require_release
from pyerl_node.node import Node
from pyerl_node.proto.terms import Atom
from tests.tls_certs import Leaf, Pki, erl_string, make_pki, optfile_text

SANS = ("DNS:127.0.0.1", "IP:127.0.0.1")


@dataclass(frozen=True)
class Certs:
    pki: Pki
    good: Leaf
    rogue: Leaf
    directory: Path

    def optfile(self, name: str, leaf: Leaf | None = None, *, ca: Path | None = None) -> Path:
        """Mutual verification with ``leaf`` (the good one by default) and our CA."""
        leaf = leaf or self.good
        side = {"certfile": erl_string(leaf.cert), "keyfile": erl_string(leaf.key),
                "cacertfile": erl_string(ca or self.pki.ca), "verify": "verify_peer"}
        path = self.directory / f"{name}.conf"
        path.write_text(optfile_text({**side, "fail_if_no_peer_cert": "true"}, side))
        return path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    require_release("25")
    directory = tmp_path_factory.mktemp("tls")
    pki = make_pki(directory)
    return Certs(pki, pki.issue("node", sans=SANS), pki.issue("rogue", sans=SANS,
                                                              issuer="rogue"), directory)


def tls_args(optfile: Path) -> tuple[str, ...]:
    return ("-proto_dist", "inet_tls", "-ssl_dist_optfile", str(optfile))


def py_node(epmd: Epmd, cookie: str, optfile: Path | None, prefix: str = "py") -> Node:
    if optfile is None:
        return Node(f"{unique_name(prefix)}@{LOCALHOST}", cookie, epmd_port=epmd.port,
                    start_epmd=False)
    return Node(f"{unique_name(prefix)}@{LOCALHOST}", cookie, epmd_port=epmd.port,
                start_epmd=False, proto_dist="inet_tls", ssl_dist_optfile=optfile)


@pytest.fixture
def tls_beam(beam_node: BeamNodeFactory, certs: Certs) -> BeamNode:
    return beam_node("25", extra_args=tls_args(certs.optfile("beam")))


async def test_both_directions_with_mutual_verification(
        tls_beam: BeamNode, certs: Certs, epmd: Epmd, cookie: str) -> None:
    async with py_node(epmd, cookie, certs.optfile("py")) as py:
        # Python dials the BEAM
        assert await py.ping(tls_beam.name)
        assert await py.rpc(tls_beam.name, "erlang", "node", []) == Atom(tls_beam.name)
        assert py.peer_flags(tls_beam.name) is not None
        py.disconnect(tls_beam.name)
        await asyncio.sleep(0.2)
        # the BEAM dials Python, and sees it over TLS (its connection's driver is tls)
        assert await tls_beam.eval_async(f"net_adm:ping('{py.node_atom.name}')") == "pong"
        # the #net_address{} of the BEAM's connection to us says protocol tls
        assert await tls_beam.eval_async(
            f"{{ok, I}} = net_kernel:node_info('{py.node_atom.name}'), "
            "element(4, proplists:get_value(address, I))") == "tls"
        box = py.mailbox(name="inbox")
        await tls_beam.eval_async(
            f"{{inbox, '{py.node_atom.name}'}} ! {{hello, <<\"over tls\">>}}, ok")
        assert await box.receive(timeout=5) == (Atom("hello"), b"over tls")


async def test_global_and_big_messages_over_tls(tls_beam: BeamNode, certs: Certs, epmd: Epmd,
                                                 cookie: str) -> None:
    async with py_node(epmd, cookie, certs.optfile("py")) as py:
        assert await py.connect(tls_beam.name)
        box = py.mailbox()
        assert await py.global_register("tls_worker", box.pid)
        await py.global_sync()
        assert await tls_beam.eval_async(
            "global:sync(), global:whereis_name(tls_worker) =/= undefined") == "true"
        big = bytes(range(256)) * 8192  # 2 MiB: fragmented, many TLS records
        await tls_beam.eval_async("global:send(tls_worker, {big, binary:copy(<<0:8>>, 1)}), ok")
        assert await box.receive(timeout=5) == (Atom("big"), b"\0")
        echo = py.mailbox(name="echo")
        await tls_beam.eval_async(
            "register(tls_echo, spawn(fun L() -> receive {F, M} -> F ! M, L() end end)), ok")
        await py.send((Atom("tls_echo"), tls_beam.name), (echo.pid, big))
        assert await echo.receive(timeout=10) == big


async def test_a_rogue_certificate_is_refused_both_ways(
        tls_beam: BeamNode, certs: Certs, epmd: Epmd, cookie: str,
        caplog: pytest.LogCaptureFixture) -> None:
    rogue = certs.optfile("rogue", certs.rogue)
    async with py_node(epmd, cookie, rogue, "rogue") as py:
        # the BEAM refuses our rogue certificate
        assert not await py.ping(tls_beam.name, timeout=5)
        # and we refuse the BEAM's real one: it is not signed by the CA our file trusts
        with caplog.at_level(logging.WARNING, "pyerl_node"):
            assert await tls_beam.eval_async(f"net_adm:ping('{py.node_atom.name}')") == "pang"
            await asyncio.sleep(0.3)
        assert "TLS handshake failed" in caplog.text
        assert "127.0.0.1" in caplog.text  # the line names the peer's address
        assert await py.ping(tls_beam.name, timeout=1) is False  # the node lives on


async def test_plain_and_tls_nodes_refuse_each_other(
        tls_beam: BeamNode, beam_node: BeamNodeFactory, certs: Certs, epmd: Epmd, cookie: str,
        caplog: pytest.LogCaptureFixture) -> None:
    plain_beam = beam_node("25", prefix="plain")
    async with py_node(epmd, cookie, certs.optfile("py")) as tls_py, \
            py_node(epmd, cookie, None, "plainpy") as plain_py:
        with caplog.at_level(logging.WARNING, "pyerl_node"):
            # a plain BEAM dials our TLS node: refused, with a line saying why
            assert await plain_beam.eval_async(f"net_adm:ping('{tls_py.node_atom.name}')") == "pang"
            # a TLS BEAM dials our plain node
            assert await tls_beam.eval_async(f"net_adm:ping('{plain_py.node_atom.name}')") == "pang"
            await asyncio.sleep(0.3)
        assert "does not speak TLS" in caplog.text
        assert "the peer speaks TLS, but this node runs plain TCP" in caplog.text
        # our TLS node towards a plain BEAM, and our plain node towards the TLS BEAM
        assert not await tls_py.ping(plain_beam.name, timeout=5)
        assert not await plain_py.ping(tls_beam.name, timeout=5)
        # each still works with its own kind
        assert await tls_py.ping(tls_beam.name)
        assert await plain_py.ping(plain_beam.name)


@pytest.fixture
def cli_env(epmd: Epmd, tmp_path: Path) -> Iterator[dict[str, str]]:
    yield os.environ | {"ERL_EPMD_PORT": str(epmd.port), "HOME": str(tmp_path)}


def test_the_cli_reaches_a_tls_beam(tls_beam: BeamNode, certs: Certs, cookie: str,
                                    cli_env: dict[str, str]) -> None:
    base = [sys.executable, "-m", "pyerl_node"]
    tls = ["--proto-dist", "inet_tls", "--ssl-dist-optfile", str(certs.optfile("cli"))]
    ping = subprocess.run([*base, "ping", tls_beam.name, "--cookie", cookie, *tls],
                          env=cli_env, capture_output=True, text=True, timeout=60, check=False)
    assert (ping.returncode, ping.stdout.strip()) == (0, "pong"), ping.stderr
    rpc = subprocess.run([*base, "rpc", tls_beam.name, "lists", "reverse", "[[1, 2, 3]]",
                          "--cookie", cookie, *tls],
                         env=cli_env, capture_output=True, text=True, timeout=60, check=False)
    assert rpc.stdout.strip() == "[3,2,1]", rpc.stderr


def test_iex_connects_to_a_tls_python_node(beam_node: BeamNodeFactory, certs: Certs,
                                           cookie: str, cli_env: dict[str, str]) -> None:
    optfile = certs.optfile("shared")
    name = f"{unique_name('py')}@{LOCALHOST}"
    server = subprocess.Popen(
        [sys.executable, "-m", "pyerl_node", "run", "--name", name, "--cookie", cookie,
         "--proto-dist", "inet_tls", "--ssl-dist-optfile", str(optfile)],
        env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        assert "listening" in server.stdout.readline()
        iex = beam_node("25", elixir=True, extra_args=tls_args(optfile))
        assert iex.eval_elixir(f"Node.connect(:\"{name}\")") == "true"
        assert iex.eval_elixir(f"Node.ping(:\"{name}\")") == ":pong"
        assert iex.eval_elixir(f":rpc.call(:\"{name}\", :erlang, :node, [])") == f':"{name}"'
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()


def test_a_bad_optfile_stops_run_with_its_position(certs: Certs, tmp_path: Path,
                                                   cli_env: dict[str, str]) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("[{server, [{certfile, \"x.pem\"},\n  {verify verify_peer}]}].\n")
    out = subprocess.run(
        [sys.executable, "-m", "pyerl_node", "run", "--name", f"bad@{LOCALHOST}",
         "--cookie", "c", "--proto-dist", "inet_tls", "--ssl-dist-optfile", str(bad)],
        env=cli_env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1
    assert f"{bad}:2:" in out.stderr
    assert "Traceback" not in out.stderr
    unknown = tmp_path / "unknown.conf"
    unknown.write_text("[{server, [{no_such_option, 1}]}, {client, []}].\n")
    out = subprocess.run(
        [sys.executable, "-m", "pyerl_node", "run", "--name", f"bad@{LOCALHOST}",
         "--cookie", "c", "--proto-dist", "inet_tls", "--ssl-dist-optfile", str(unknown)],
        env=cli_env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1 and "no_such_option" in out.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "pyerl_node", "run", "--name", f"bad@{LOCALHOST}",
         "--cookie", "c", "--proto-dist", "inet_tls", "--ssl-dist-optfile",
         str(tmp_path / "absent.conf")],
        env=cli_env, capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 1 and "absent.conf" in missing.stderr
