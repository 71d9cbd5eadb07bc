"""Two Python nodes over TLS distribution on loopback: what each side says when TLS refuses."""

from __future__ import annotations

import logging
import secrets
import ssl
from pathlib import Path

import pytest

from pyerl_node.node import Node
from tests.conftest import free_port
from tests.tls_certs import Leaf, Pki, erl_string, make_pki, optfile_text

SANS = ("DNS:127.0.0.1", "IP:127.0.0.1")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def optfile(directory: Path, pki: Pki, leaf: Leaf, name: str) -> Path:
    side = {"certfile": erl_string(leaf.cert), "keyfile": erl_string(leaf.key),
            "cacertfile": erl_string(pki.ca), "verify": "verify_peer"}
    path = directory / f"{name}.conf"
    path.write_text(optfile_text({**side, "fail_if_no_peer_cert": "true"}, side))
    return path


async def test_a_refused_client_hears_why(pki: Pki, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    good = optfile(tmp_path, pki, pki.issue("good", sans=SANS), "good")
    rogue = optfile(tmp_path, pki, pki.issue("rogue", sans=SANS, issuer="rogue"), "rogue")
    port, tag = free_port(), secrets.token_hex(3)
    async with Node(f"a{tag}@127.0.0.1", "c", epmd_port=port, embedded_epmd=True,
                    proto_dist="inet_tls", ssl_dist_optfile=good) as a, \
            Node(f"b{tag}@127.0.0.1", "c", epmd_port=port, proto_dist="inet_tls",
                 ssl_dist_optfile=rogue) as b:
        with caplog.at_level(logging.WARNING, "pyerl_node"):
            assert not await b.connect(a.node_atom)
        refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cannot")]
        assert refused and "TLS" in refused[0]  # the alert came back: not "cookie mismatch"
        assert "cookie mismatch" not in refused[0]


def _contexts(pki: Pki, leaf: Leaf) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(leaf.cert, leaf.key)
    server.load_verify_locations(pki.ca)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname on
    client.load_cert_chain(leaf.cert, leaf.key)
    client.load_verify_locations(pki.ca)
    return server, client


async def test_ready_contexts_check_the_host_they_dial(pki: Pki) -> None:
    right = _contexts(pki, pki.issue("right", sans=SANS))
    wrong = _contexts(pki, pki.issue("wrong", sans=("DNS:elsewhere",)))
    port, tag = free_port(), secrets.token_hex(3)
    async with Node(f"a{tag}@127.0.0.1", "c", epmd_port=port, embedded_epmd=True,
                    proto_dist="inet_tls", ssl_server_context=right[0],
                    ssl_client_context=right[1]) as a, \
            Node(f"b{tag}@127.0.0.1", "c", epmd_port=port, proto_dist="inet_tls",
                 ssl_server_context=wrong[0], ssl_client_context=wrong[1]) as b, \
            Node(f"c{tag}@127.0.0.1", "c", epmd_port=port, proto_dist="inet_tls",
                 ssl_server_context=right[0], ssl_client_context=right[1]) as c:
        assert await c.ping(a.node_atom)  # 127.0.0.1 is in a's certificate
        assert not await a.connect(b.node_atom)  # b's certificate names another host
