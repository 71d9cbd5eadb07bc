"""Scenarios a and b: nodes on different hosts find each other by short and long names.

a. BEAM only, OTP 25 Elixir on h2 and OTP 28 erl on h3: ``Node.connect(:"b@h3")`` with short
   names; with long names, one node named by its FQDN (``a@h2.multihost.test``, from the hosts
   file) and one by its IP (``b@10.213.X.3``), each dialling the other.
b. The Elixir node dials ``pyerl-node run --sname py`` on h1: ``Node.connect``, ``Node.list``,
   ``:net_adm.ping``; listening on every interface (the default) and with ``--listen-host
   0.0.0.0``. Listening on 127.0.0.1 only makes the node unreachable, and it says so at start.
"""

from __future__ import annotations

import pytest

from interop_tests.multihost.conftest import Cluster
from interop_tests.multihost.nodes import NameKind
from interop_tests.multihost.probes import visible_nodes

NODE_LIST = "Node.list() |> Enum.map(&Atom.to_string/1)"  # Elixir quotes some atoms, not all


def test_beam_short_names_across_hosts(cluster: Cluster) -> None:
    ex = cluster.beam("h2", "25", "a", elixir=True)
    erl = cluster.beam("h3", "28", "b")
    assert ex.name.endswith("@h2") and erl.name.endswith("@h3")
    assert ex.eval_elixir(f'Node.connect(:"{erl.name}")') == "true"
    assert ex.eval_elixir(NODE_LIST) == f'["{erl.name}"]'
    assert visible_nodes(erl) == [ex.name]
    assert erl.eval(f"net_adm:ping('{ex.name}')") == "pong"


def test_beam_long_names_fqdn_and_ip(cluster: Cluster) -> None:
    ex = cluster.beam("h2", "25", "a", elixir=True, names=NameKind.FQDN)
    erl = cluster.beam("h3", "28", "b", names=NameKind.IP)
    assert ex.name.endswith("@h2.multihost.test")
    assert erl.name.endswith("@" + cluster.lab.host("h3").ipv4)
    # the FQDN node dials the IP-named one...
    assert ex.eval_elixir(f'Node.connect(:"{erl.name}")') == "true"
    assert visible_nodes(erl) == [ex.name]
    assert ex.eval_elixir(f'Node.disconnect(:"{erl.name}")') == "true"
    # ...and the IP-named one dials the FQDN, resolved through h3's /etc/hosts
    assert erl.eval(f"net_kernel:connect_node('{ex.name}')") == "true"
    assert visible_nodes(ex) == [erl.name]


@pytest.mark.parametrize("listen_host", [None, "0.0.0.0"], ids=["default", "all_v4"])
def test_elixir_reaches_python_by_short_name(cluster: Cluster, listen_host: str | None) -> None:
    py = cluster.cli("h1", "py", listen_host=listen_host)
    ex = cluster.beam("h2", "25", "e", elixir=True)
    assert py.name.endswith("@h1")
    assert ex.eval_elixir(f'Node.connect(:"{py.name}")') == "true"
    assert ex.eval_elixir(NODE_LIST) == f'["{py.name}"]'
    # ping is a gen_server call to the Python node's net_kernel: traffic both ways
    assert ex.eval_elixir(f':net_adm.ping(:"{py.name}")') == ":pong"


def test_python_on_loopback_only_is_unreachable_and_warns(cluster: Cluster) -> None:
    py = cluster.cli("h1", "py", listen_host="127.0.0.1")
    ex = cluster.beam("h2", "25", "e", elixir=True)
    assert "peers cannot reach it" in py.output
    assert ex.eval_elixir(f':net_adm.ping(:"{py.name}")') == ":pang"
