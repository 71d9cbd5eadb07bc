"""The quick start of the README: a Python node that iex can call, message and rpc into.

Run it::

    $ python examples/quickstart.py
    py@<host> is ready (Ctrl-C stops it)

then, in another terminal (``<host>`` is this machine's short host name)::

    $ iex --sname me --cookie secret
    iex> [_, host] = String.split("#{node()}", "@")
    iex> py = :"py@#{host}"
    iex> Node.ping(py)
    :pong
    iex> GenServer.call({:greeter, py}, "bob")
    "hello bob"
    iex> send({:inbox, py}, {self(), :hi})
    iex> receive do msg -> msg after 5000 -> :timeout end
    :hi
    iex> :rpc.call(py, :statistics, :mean, [[1, 2, 3, 4]])
    2.5

``greeter`` is a GenServer, ``inbox`` a mailbox that sends every ``{pid, msg}`` it gets back to
``pid`` as ``msg``, and ``statistics`` is Python's own module, exposed for ``:rpc.call``.
The node registers with the EPMD on port ``$ERL_EPMD_PORT`` (default 4369), starting one when
none runs.
"""

import asyncio
import contextlib
import statistics
from typing import Any

from pyerl_node import GenServer, Node, Pid, start_server


class Greeter(GenServer):
    async def handle_call(self, request: Any, from_: Any) -> Any:
        return b"hello " + request  # an Elixir string arrives as bytes


async def main() -> None:
    async with Node("py", cookie="secret") as node:
        start_server(node, Greeter(), name="greeter")
        node.expose("statistics", statistics)
        inbox = node.mailbox(name="inbox")
        print(f"{node.node_atom.name} is ready (Ctrl-C stops it)")
        while True:
            match await inbox.receive():
                case (Pid() as pid, msg):
                    await inbox.send(pid, msg)


with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop quietly
    asyncio.run(main())
