"""A counter GenServer in Python, called and cast from Elixir or Erlang.

``counter`` answers ``GenServer.call(c, :get)`` with the count and ``GenServer.call(c,
:increment)`` with the count after adding one; ``GenServer.cast(c, {:add, n})`` adds ``n``.
Requests are handled one at a time, in order, as a gen_server handles them, so the cast is
counted before the call that follows it. ``:sys.get_state`` shows the server's public
attributes. Start it::

    $ python examples/genserver_counter.py
    counter is ready on py@<host> (Ctrl-C stops it)

then, in another terminal, iex::

    $ iex --sname me --cookie secret
    iex> [_, host] = String.split("#{node()}", "@")
    iex> counter = {:counter, :"py@#{host}"}
    iex> GenServer.call(counter, :get)
    0
    iex> GenServer.call(counter, :increment)
    1
    iex> GenServer.cast(counter, {:add, 41})
    :ok
    iex> GenServer.call(counter, :get)
    42
    iex> :sys.get_state(counter)
    %{count: 42}

or erl::

    $ erl -sname me -setcookie secret
    1> [_, Host] = string:split(atom_to_list(node()), "@").
    2> Counter = {counter, list_to_atom("py@" ++ Host)}.
    3> gen_server:call(Counter, get).
    0
    4> gen_server:call(Counter, increment).
    1
    5> gen_server:cast(Counter, {add, 41}).
    ok
    6> gen_server:call(Counter, get).
    42
    7> sys:get_state(Counter).
    #{count => 42}

PYERL_NAME (default ``py``), PYERL_COOKIE (default ``secret``) and ERL_EPMD_PORT are honoured.
"""

import asyncio
import contextlib
import os

from pyerl_node import Atom, GenServer, Node, start_server
from pyerl_node.gen import From
from pyerl_node.proto.terms import Term

GET = Atom("get")
INCREMENT = Atom("increment")
ADD = Atom("add")


class Counter(GenServer):
    def __init__(self) -> None:
        self.count = 0

    async def handle_call(self, request: Term, from_: From) -> Term:
        if request is GET:
            return self.count
        if request is INCREMENT:
            self.count += 1
            return self.count
        return await super().handle_call(request, from_)  # exits with {bad_call, Request}

    async def handle_cast(self, message: Term) -> None:
        match message:
            case (Atom() as tag, int(n)) if tag is ADD:
                self.count += n


async def main() -> None:
    name = os.environ.get("PYERL_NAME", "py")
    cookie = os.environ.get("PYERL_COOKIE", "secret")
    async with Node(name, cookie=cookie) as node:
        start_server(node, Counter(), name="counter")
        print(f"counter is ready on {node.node_atom} (Ctrl-C stops it)")
        await asyncio.Event().wait()


with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop quietly
    asyncio.run(main())
