"""Scenario g: distribution over TLS (``-proto_dist inet_tls``) between lab hosts.

Every host gets its own certificate from one test CA (``tests/tls_certs.py``), naming it as
``DNS:<host>``, ``DNS:<host>.multihost.test`` and ``IP:<its IPv4>``, and its own
``-ssl_dist_optfile`` with mutual verification (``verify_peer`` on both sides,
``fail_if_no_peer_cert``); the same file format configures the OTP 25 Elixir node (OTP 28 from
the wheel has no ssl) and the Python agent (``--proto-dist inet_tls --ssl-dist-optfile F``).

* Both ways, short and FQDN names: the agent on h1 dials Elixir on h2, then Elixir dials the
  agent; each connection is TLS (``net_kernel:node_info/1`` says ``tls``) and carries global
  messages and rpc in both directions.
* A Python node whose certificate comes from another CA (same subject) is refused both ways.
* Plain TCP nodes and TLS nodes refuse each other, and the Python side logs why.
* The host name rule (docs/protocol/tls.md §4.1): the dialler checks the host part of the node
  name it dials against the certificate's DNS names. A certificate without the FQDN is refused
  for an FQDN-named node, and an IP-named node needs ``DNS:<ip>``: the IP SAN does not count.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path

import pytest

from interop_tests.beam import BeamNode
from interop_tests.conftest import require_release
from interop_tests.multihost.conftest import Cluster
from interop_tests.multihost.netns import Lab
from interop_tests.multihost.nodes import NameKind, PyAgent
from interop_tests.multihost.probes import visible_nodes, wait_until
from tests.tls_certs import Pki, erl_string, make_pki, optfile_text

LOG_WAIT = 5.0  # seconds for a refusal's log line to reach the agent's output


class HostCerts:
    """A CA for the lab, and per node a certificate plus the option file that uses it."""

    def __init__(self, lab: Lab, directory: Path) -> None:
        self.lab = lab
        self.directory = directory
        self.pki: Pki = make_pki(directory)

    def host_sans(self, host: str) -> tuple[str, ...]:
        h = self.lab.host(host)
        return (f"DNS:{h.name}", f"DNS:{h.fqdn}", f"IP:{h.ipv4}")

    def optfile(self, node: str, host: str, *, issuer: str = "root",
                sans: Sequence[str] | None = None) -> Path:
        """Mutual verification with a fresh leaf for ``host`` (its names unless ``sans``)."""
        leaf = self.pki.issue(node, sans=self.host_sans(host) if sans is None else sans,
                              issuer=issuer)
        side = {"certfile": erl_string(leaf.cert), "keyfile": erl_string(leaf.key),
                "cacertfile": erl_string(self.pki.ca), "verify": "verify_peer"}
        path = self.directory / f"{node}.conf"
        path.write_text(optfile_text({**side, "fail_if_no_peer_cert": "true"}, side))
        return path


@pytest.fixture
def certs(lab: Lab, tmp_path: Path) -> HostCerts:
    require_release("25")
    return HostCerts(lab, tmp_path)


def beam_tls(optfile: Path) -> tuple[str, ...]:
    return ("-proto_dist", "inet_tls", "-ssl_dist_optfile", str(optfile))


def agent_tls(optfile: Path) -> tuple[str, ...]:
    return ("--proto-dist", "inet_tls", "--ssl-dist-optfile", str(optfile))


def tls_elixir(cluster: Cluster, certs: HostCerts, host: str, *,
               names: NameKind = NameKind.SHORT, sans: Sequence[str] | None = None) -> BeamNode:
    return cluster.beam(host, "25", "ex", elixir=True, names=names,
                        extra_args=beam_tls(certs.optfile(f"ex-{host}", host, sans=sans)))


def tls_agent(cluster: Cluster, certs: HostCerts, host: str, alive: str = "py", *,
              names: NameKind = NameKind.SHORT, issuer: str = "root",
              sans: Sequence[str] | None = None) -> PyAgent:
    optfile = certs.optfile(f"{alive}-{host}", host, issuer=issuer, sans=sans)
    return cluster.agent(host, alive, names=names, extra_args=agent_tls(optfile))


def protocol(beam: BeamNode, peer: str) -> str:
    """The protocol of ``beam``'s connection to ``peer`` (``tls`` or ``tcp``)."""
    return beam.eval(f"{{ok, I}} = net_kernel:node_info('{peer}'), "
                     "element(4, proplists:get_value(address, I))")


def logged(agent: PyAgent, text: str) -> None:
    wait_until(lambda: text in agent.output, LOG_WAIT, f"{agent.name} logs {text!r}")


@pytest.mark.parametrize("names", [NameKind.SHORT, NameKind.FQDN], ids=["short", "fqdn"])
def test_python_and_elixir_over_tls_both_ways(cluster: Cluster, certs: HostCerts,
                                              names: NameKind) -> None:
    py = tls_agent(cluster, certs, "h1", names=names)
    ex = tls_elixir(cluster, certs, "h2", names=names)
    echo = f"tls_echo_{secrets.token_hex(3)}"
    # the agent dials: the Elixir node's certificate must name the host part of its name
    assert py.request("connect", node=ex.name) is True
    assert protocol(ex, py.name) == "tls"
    assert py.request("register", name=echo)["registered"] is True
    assert ex.eval("global:sync()") == "ok"
    assert ex.eval(f"global:send({echo}, {{self(), <<\"over tls\">>}}), "
                   f"receive {{got, M, N}} -> {{M, N =:= '{py.name}'}} after 5000 -> timeout end"
                   ) == '{<<"over tls">>,true}'
    # Elixir dials the agent, which shows its own certificate as the server now
    assert ex.eval_elixir(f'Node.disconnect(:"{py.name}")') == "true"
    wait_until(lambda: py.request("nodes") == [], 10.0, "the agent sees the disconnect")
    assert ex.eval_elixir(f'Node.connect(:"{py.name}")') == "true"
    assert protocol(ex, py.name) == "tls"
    assert ex.eval(f"rpc:call('{py.name}', erlang, node, []) =:= '{py.name}'") == "true"
    beam_echo = f"ex_echo_{secrets.token_hex(3)}"
    assert ex.eval(f"P = spawn(fun L() -> receive {{F, M}} -> F ! {{got, M, node()}}, L() end "
                   f"end), yes = global:register_name({beam_echo}, P), global:sync()") == "ok"
    assert py.request("sync") is True
    assert py.request("send", name=beam_echo, text="back") == {"text": "back", "node": ex.name}


def test_a_rogue_certificate_is_refused_both_ways(cluster: Cluster, certs: HostCerts) -> None:
    ex = tls_elixir(cluster, certs, "h2")
    # same CA subject, other key: the chain does not verify with the lab's CA
    rogue = tls_agent(cluster, certs, "h3", "rogue", issuer="rogue")
    assert ex.eval(f"net_adm:ping('{rogue.name}')") == "pang"
    logged(rogue, "TLS handshake failed")
    assert cluster.lab.host("h2").ipv4 in rogue.output  # the line names the peer's address
    assert rogue.request("connect", node=ex.name) is False
    assert visible_nodes(ex) == []
    # a node with the real CA's certificate gets in
    py = tls_agent(cluster, certs, "h1")
    assert py.request("connect", node=ex.name) is True
    assert visible_nodes(ex) == [py.name]


def test_plain_and_tls_nodes_refuse_each_other(cluster: Cluster, certs: HostCerts) -> None:
    ex = tls_elixir(cluster, certs, "h2")
    py = tls_agent(cluster, certs, "h1")
    plain = cluster.agent("h3", "plain")
    plain_erl = cluster.beam("h4", "25", "plainerl")
    # (each refusal is logged once a minute per peer address: the telling direction first)
    assert ex.eval(f"net_adm:ping('{plain.name}')") == "pang"
    logged(plain, "the peer speaks TLS, but this node runs plain TCP")
    assert plain.request("connect", node=ex.name) is False
    assert plain_erl.eval(f"net_adm:ping('{py.name}')") == "pang"
    logged(py, "does not speak TLS")
    assert py.request("connect", node=plain_erl.name) is False
    # each still reaches its own kind
    assert py.request("connect", node=ex.name) is True
    assert plain.request("connect", node=plain_erl.name) is True
    assert visible_nodes(ex) == [py.name]
    assert visible_nodes(plain_erl) == [plain.name]


@pytest.mark.parametrize("names", [NameKind.FQDN, NameKind.IP], ids=["fqdn", "ip"])
def test_the_dialled_name_must_be_a_dns_name_of_the_certificate(
        cluster: Cluster, certs: HostCerts, names: NameKind) -> None:
    sans_of: dict[str, tuple[str, ...]]
    if names is NameKind.FQDN:
        sans_of = {h: (f"DNS:{h}",) for h in ("h1", "h2")}  # the short names only
    else:
        sans_of = {h: certs.host_sans(h) for h in ("h1", "h2")}  # an IP SAN, no DNS:<ip>
    py = tls_agent(cluster, certs, "h1", names=names, sans=sans_of["h1"])
    ex = tls_elixir(cluster, certs, "h2", names=names, sans=sans_of["h2"])
    host = ex.name.split("@", 1)[1]
    assert py.request("connect", node=ex.name) is False
    logged(py, f"the server's certificate has no DNS name {host!r}")
    assert ex.eval(f"net_adm:ping('{py.name}')") == "pang"
    assert visible_nodes(ex) == []
    # the same nodes with certificates that name the dialled host get in
    good = tls_agent(cluster, certs, "h3", "good", names=names,
                     sans=(*certs.host_sans("h3"), f"DNS:{cluster.lab.host('h3').ipv4}"))
    assert ex.eval(f"net_adm:ping('{good.name}')") == "pong"
