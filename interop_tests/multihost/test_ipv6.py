"""Scenario f: distribution over IPv6 (``-proto_dist inet6_tcp``) on the lab's ULA addresses.

Long names by FQDN: ``x@h2.multihost.test`` resolves, through the host's /etc/hosts, to both
of h2's addresses; an inet6_tcp node looks up only the IPv6 one, so the connection must be
between the ULA addresses (checked on the connection itself, ``net_kernel:node_info/1``).

* BEAM <-> BEAM: OTP 25 Elixir on h2, OTP 28 erl on h3.
* Python: ``pyerl-node run --proto-dist inet6_tcp`` on h1 accepts the Elixir node, and the
  agent (``Node(inet6=True)``) on h4 dials it. A CLI without ``--proto-dist`` makes the test
  xfail with that reason.
"""

from __future__ import annotations

import ipaddress

import pytest

from interop_tests.beam import BeamNode, BeamStartError
from interop_tests.multihost.conftest import Cluster
from interop_tests.multihost.nodes import NameKind
from interop_tests.multihost.probes import visible_nodes

V6 = NameKind.FQDN


def peer_address(beam: BeamNode, peer: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address ``beam``'s connection to ``peer`` goes to, from the connection itself."""
    out = beam.eval(f"""
        {{ok, Info}} = net_kernel:node_info('{peer}'),
        {{address, {{net_address, {{Ip, _Port}}, _, _, _}}}} = lists:keyfind(address, 1, Info),
        inet:ntoa(Ip)""")
    return ipaddress.ip_address(out.strip('"'))


def test_beam_to_beam_over_ipv6(cluster: Cluster) -> None:
    ex = cluster.beam("h2", "25", "a", elixir=True, names=V6, inet6=True)
    erl = cluster.beam("h3", "28", "b", names=V6, inet6=True)
    assert ex.eval_elixir(f'Node.connect(:"{erl.name}")') == "true"
    assert visible_nodes(erl) == [ex.name]
    h3 = ipaddress.ip_address(cluster.lab.host("h3").ipv6)
    assert peer_address(ex, erl.name) == h3


def test_python_over_ipv6(cluster: Cluster) -> None:
    try:
        py = cluster.cli("h1", "py", names=V6, extra_args=("--proto-dist", "inet6_tcp"))
    except BeamStartError as exc:
        if "unrecognized arguments: --proto-dist" in str(exc):
            pytest.xfail("pyerl-node run has no --proto-dist inet6_tcp")
        raise
    ex = cluster.beam("h2", "25", "e", elixir=True, names=V6, inet6=True)
    assert ex.eval_elixir(f':net_adm.ping(:"{py.name}")') == ":pong"
    assert peer_address(ex, py.name) == ipaddress.ip_address(cluster.lab.host("h1").ipv6)
    # and the Python side dials: the agent on h4 reaches the Elixir node over IPv6
    py4 = cluster.agent("h4", "pyd", names=V6, inet6=True)
    assert py4.request("connect", node=ex.name) is True
    assert peer_address(ex, py4.name) == ipaddress.ip_address(cluster.lab.host("h4").ipv6)
    assert sorted(visible_nodes(ex)) == sorted([py.name, py4.name])
