"""Scenarios c and d: ``global`` across hosts with the Python node in the cluster.

c. ``Node.list()`` is transitive through global: the Elixir node on h2 and the OTP 28 node on
   h3 each connect only to the Python node on h1, and global's connect_all introduces them to
   each other (every node ends up seeing the other two).
d. A global name registered from Python (``Node.global_register``, through the agent) is found
   by ``:global.whereis_name`` on every host, as the same pid, and a message sent to it from
   every host (Elixir, erl, the second Python node on h4, h1 itself) is answered by h1.
"""

from __future__ import annotations

import secrets

from interop_tests.beam import BeamNode
from interop_tests.multihost.conftest import Cluster
from interop_tests.multihost.nodes import PyAgent
from interop_tests.multihost.probes import (
    agent_ident,
    global_ident,
    visible_nodes,
    wait_until,
)

MESH_WAIT = 15.0


def full_mesh(beams: list[BeamNode], agents: list[PyAgent]) -> bool:
    """Whether every node sees every other one."""
    names = {n.name for n in beams} | {a.name for a in agents}
    return (all(set(visible_nodes(b)) == names - {b.name} for b in beams)
            and all(set(a.request("nodes")) == names - {a.name} for a in agents))


def test_node_list_is_transitive_through_global(cluster: Cluster) -> None:
    py = cluster.agent("h1")
    ex = cluster.beam("h2", "25", "ex", elixir=True)
    erl = cluster.beam("h3", "28", "erl")
    assert ex.eval_elixir(f'Node.connect(:"{py.name}")') == "true"
    assert erl.eval(f"net_kernel:connect_node('{py.name}')") == "true"
    # neither BEAM node dialled the other: global on the Python node has to introduce them
    wait_until(lambda: full_mesh([ex, erl], [py]), MESH_WAIT, "h2 and h3 see each other")
    assert ex.eval_elixir("Node.list() |> Enum.map(&Atom.to_string/1) |> Enum.sort()") == (
        str(sorted([py.name, erl.name])).replace("'", '"'))


def test_python_global_name_found_and_messaged_from_every_host(cluster: Cluster) -> None:
    py = cluster.agent("h1")
    ex = cluster.beam("h2", "25", "ex", elixir=True)
    erl = cluster.beam("h3", "28", "erl")
    py2 = cluster.agent("h4", "pyb")
    for beam in (ex, erl):
        assert beam.eval(f"net_kernel:connect_node('{py.name}')") == "true"
    assert py2.request("connect", node=py.name) is True
    wait_until(lambda: full_mesh([ex, erl], [py, py2]), MESH_WAIT, "four nodes meshed")
    for beam in (ex, erl):
        assert beam.eval("global:sync()") == "ok"
    assert py2.request("sync") is True

    name = f"mh_py_{secrets.token_hex(3)}"
    reg = py.request("register", name=name)
    assert reg["registered"] is True
    pid = agent_ident(reg["pid"])
    assert pid is not None and pid[0] == py.name
    # global:register_name returns once every node has the name: no waiting here
    assert global_ident(ex, name) == pid
    assert global_ident(erl, name) == pid
    assert agent_ident(py2.request("whereis", name=name)) == pid
    assert ex.eval_elixir(f"node(:global.whereis_name(:{name})) |> Atom.to_string()") == (
        f'"{py.name}"')

    assert ex.eval_elixir(f"""
        send(:global.whereis_name(:{name}), {{self(), "from h2"}})
        receive do
          {{:got, msg, node}} -> {{msg, Atom.to_string(node)}}
        after 5000 -> :timeout
        end""") == f'{{"from h2", "{py.name}"}}'
    assert erl.eval(f"""
        global:send({name}, {{self(), <<"from h3">>}}),
        receive {{got, Msg, Node}} -> {{Msg, atom_to_list(Node)}} after 5000 -> timeout end
        """) == f'{{<<"from h3">>,"{py.name}"}}'
    for agent, text in ((py2, "from h4"), (py, "from h1")):
        assert agent.request("send", name=name, text=text) == {"text": text, "node": py.name}
