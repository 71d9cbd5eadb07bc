"""A name registered in ``global`` from Python, found and called from iex or erl.

The script starts a GenServer and registers it in ``global`` as ``py_service``. ``global``
shares names between connected nodes, so once iex connects to the Python node,
``:global.whereis_name(:py_service)`` answers on the iex side too, ``send`` to that pid
reaches the server and ``GenServer.call({:global, :py_service}, ...)`` calls it. The server
answers the call ``:ping`` with ``:pong`` and a message ``{pid, term}`` with ``{:got, term}``.
Start it::

    $ python examples/global_name.py
    py_service is registered in global on py@<host> (Ctrl-C stops it)

then, in another terminal, iex::

    $ iex --sname me --cookie secret
    iex> [_, host] = String.split("#{node()}", "@")
    iex> py = :"py@#{host}"
    iex> Node.connect(py)
    true
    iex> :global.sync()
    :ok
    iex> pid = :global.whereis_name(:py_service)
    #PID<12345.90.0>
    iex> node(pid) == py
    true
    iex> send(pid, {self(), :hi})
    iex> receive do reply -> reply after 5000 -> :timeout end
    {:got, :hi}
    iex> GenServer.call({:global, :py_service}, :ping)
    :pong

or erl::

    $ erl -sname me -setcookie secret
    1> [_, Host] = string:split(atom_to_list(node()), "@").
    2> Py = list_to_atom("py@" ++ Host).
    3> net_kernel:connect_node(Py).
    true
    4> global:sync().
    ok
    5> Pid = global:whereis_name(py_service).
    <12345.90.0>
    6> node(Pid) =:= Py.
    true
    7> global:send(py_service, {self(), hi}).
    <12345.90.0>
    8> receive Reply -> Reply after 5000 -> timeout end.
    {got,hi}
    9> gen_server:call({global, py_service}, ping).
    pong

PYERL_NAME (default ``py``), PYERL_COOKIE (default ``secret``) and ERL_EPMD_PORT are honoured.
"""

import asyncio
import contextlib
import os

from pyerl_node import Atom, GenServer, Node, Pid, start_server
from pyerl_node.gen import From
from pyerl_node.proto.terms import Term

PING = Atom("ping")
GOT = Atom("got")


class Service(GenServer):
    async def handle_call(self, request: Term, from_: From) -> Term:
        if request is PING:
            return Atom("pong")
        return await super().handle_call(request, from_)  # exits with {bad_call, Request}

    async def handle_info(self, message: Term) -> None:
        match message:
            case (Pid() as sender, term):
                await self.process.send(sender, (GOT, term))


async def main() -> None:
    name = os.environ.get("PYERL_NAME", "py")
    cookie = os.environ.get("PYERL_COOKIE", "secret")
    async with Node(name, cookie=cookie) as node:
        server = start_server(node, Service())
        if not await node.global_register(Atom("py_service"), server.pid):
            raise SystemExit("py_service is already registered in global")
        print(f"py_service is registered in global on {node.node_atom} (Ctrl-C stops it)")
        await asyncio.Event().wait()


with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop quietly
    asyncio.run(main())
