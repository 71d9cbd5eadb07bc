"""Three Python nodes in one process become a full mesh, as BEAM nodes do, through ``global``.

The script starts ``mesh_a``, ``mesh_b`` and ``mesh_c`` and connects only ``a`` to ``b`` and
``c`` to ``b``. ``global`` on ``b`` tells ``c`` about ``a`` and ``c`` connects to it, so every
node ends up connected to both others (``-connect_all true``, erl's default). It then pings
across, registers a process on ``a`` in ``global`` as ``mesh_worker`` and finds and messages it
from ``c``::

    $ python examples/mesh.py
    mesh_a@<host> is connected to mesh_b@<host> mesh_c@<host>
    mesh_b@<host> is connected to mesh_a@<host> mesh_c@<host>
    mesh_c@<host> is connected to mesh_a@<host> mesh_b@<host>
    mesh_c@<host> pings mesh_a@<host>: pong
    mesh_c@<host> finds mesh_worker on mesh_a@<host>
    mesh_worker got 'hello from mesh_c' from mesh_c@<host>
    the mesh is up (Ctrl-C stops it)

A BEAM node that connects to any one of them joins the whole mesh and sees the same global
names::

    $ iex --sname me --cookie secret
    iex> [_, host] = String.split("#{node()}", "@")
    iex> Node.connect(:"mesh_b@#{host}")
    true
    iex> Process.sleep(1000)  # meanwhile global connects iex to the other two
    :ok
    iex> Enum.sort(Node.list())
    [:mesh_a@<host>, :mesh_b@<host>, :mesh_c@<host>]
    iex> send(:global.whereis_name(:mesh_worker), {self(), "hi from iex"})
    iex> receive do reply -> reply after 5000 -> :timeout end
    {:mesh_a@<host>, "hi from iex"}

PYERL_NAME is the prefix of the three names (default ``mesh``); PYERL_COOKIE (default
``secret``) and ERL_EPMD_PORT are honoured.
"""

import asyncio
import contextlib
import os

from pyerl_node import Atom, Node, Pid, Process


async def worker(proc: Process) -> None:
    """``mesh_worker``: prints each ``{pid, text}`` and sends ``{node(), text}`` back."""
    while True:
        match await proc.receive():
            case (Pid() as sender, bytes(text)):
                print(f"mesh_worker got {text.decode()!r} from {sender.node}")
                await proc.send(sender, (proc.host.node_atom, text))


async def full_mesh(nodes: list[Node], timeout: float = 10.0) -> None:
    """Wait until every node is connected to every other one."""
    async with asyncio.timeout(timeout):
        while any(len(node.nodes()) < len(nodes) - 1 for node in nodes):
            await asyncio.sleep(0.05)


async def main() -> None:
    prefix = os.environ.get("PYERL_NAME", "mesh")
    cookie = os.environ.get("PYERL_COOKIE", "secret")
    a, b, c = (Node(f"{prefix}_{x}", cookie=cookie) for x in "abc")
    for node in (a, b, c):
        await node.start()
    try:
        await a.connect(b.node_atom)
        await c.connect(b.node_atom)  # no connection to a: global makes it
        await full_mesh([a, b, c])
        for node in (a, b, c):
            others = " ".join(sorted(str(n) for n in node.nodes()))
            print(f"{node.node_atom} is connected to {others}")
        pong = await c.ping(a.node_atom)
        print(f"{c.node_atom} pings {a.node_atom}: {'pong' if pong else 'pang'}")

        await a.global_register(Atom("mesh_worker"), a.spawn(worker).pid)
        await c.global_sync()
        found = c.global_whereis(Atom("mesh_worker"))
        assert found is not None
        print(f"{c.node_atom} finds mesh_worker on {found.node}")
        inbox = c.mailbox()
        await c.global_send(Atom("mesh_worker"), (inbox.pid, "hello from mesh_c"),
                            sender=inbox.pid)
        await inbox.receive(timeout=5)
        print("the mesh is up (Ctrl-C stops it)")
        await asyncio.Event().wait()
    finally:
        for node in (c, b, a):
            await node.stop()


with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop quietly
    asyncio.run(main())
