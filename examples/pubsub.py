"""A Python node in a cluster's Phoenix.PubSub: it subscribes, echoes and broadcasts.

Run it::

    $ python examples/pubsub.py
    py@<host> is in MyApp.PubSub (Ctrl-C stops it)

The Python node subscribes a process to ``"room:lobby"`` of the PubSub ``MyApp.PubSub``;
everything broadcast there, from any node, reaches it as the plain message, and it broadcasts
each back on ``"echoes"`` as ``{:echo, message}``. Every five seconds it also broadcasts
``{:python_says, "tick N"}`` on ``"echoes"``, and its process is a member of the group
``:py_workers`` of the default ``pg`` scope.

In a Phoenix application (``{Phoenix.PubSub, name: MyApp.PubSub}`` in its supervision tree)
that is all there is to it: once the nodes are connected, ``Phoenix.PubSub.subscribe(MyApp.PubSub,
"echoes")`` and ``Phoenix.PubSub.broadcast(MyApp.PubSub, "room:lobby", {:hello, "from iex"})``
get the echo. Without Phoenix at hand, a plain ``iex`` can do by hand what Phoenix's PG2
adapter does (join the adapter's ``pg`` group, send ``{:forward_to_local, Topic, Message,
Dispatcher}`` to the other nodes' members); ``<host>`` is this machine's short host name::

    $ iex --sname me --cookie secret
    iex> {:ok, _} = :pg.start(Phoenix.PubSub)
    iex> {:ok, _} = :pg.start(:pg)
    iex> [_, host] = String.split("#{node()}", "@")
    iex> py = :"py@#{host}"
    iex> Node.connect(py)
    true
    iex> :ok = :pg.join(Phoenix.PubSub, MyApp.PubSub.Adapter, self())
    iex> Process.sleep(500)
    iex> :pg.get_members(:py_workers) |> Enum.map(&node/1)
    [:py@<host>]
    iex> members = :pg.get_members(Phoenix.PubSub, MyApp.PubSub.Adapter)
    iex> [worker] = Enum.filter(members, &(node(&1) == py))
    iex> send(worker, {:forward_to_local, "room:lobby", {:hello, "from iex"}, Phoenix.PubSub})
    iex> receive do {:forward_to_local, "echoes", {:echo, m}, _} -> m after 5000 -> :timeout end
    {:hello, "from iex"}

Its output::

    got (Atom('hello'), b'from iex')
"""

import asyncio
import contextlib

from pyerl_node import Atom, Node, Process


async def main() -> None:
    async with Node("py", cookie="secret") as node:
        ps = node.pubsub("MyApp.PubSub")

        async def echo(proc: Process) -> None:
            while True:
                message = await proc.receive()
                print("got", message)
                await ps.broadcast("echoes", (Atom("echo"), message))

        listener = node.spawn(echo)
        await ps.subscribe("room:lobby", listener.pid)
        await node.pg_join(Atom("py_workers"), listener.pid)
        print(f"{node.node_atom.name} is in {ps.name.name.removeprefix('Elixir.')} "
              "(Ctrl-C stops it)")
        tick = 0
        while True:
            await asyncio.sleep(5)
            tick += 1
            await ps.broadcast("echoes", (Atom("python_says"), f"tick {tick}".encode()))


with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop quietly
    asyncio.run(main())
