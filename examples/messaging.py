"""Messages both ways between iex and Python: to a registered name, to a pid, selective receive.

The script registers a mailbox as ``inbox``. It takes only requests ``{pid, text}`` (``text`` a
string) out of it with a selective receive, so anything else stays queued, as in Erlang's
``receive``. For each request it answers the pid it received with ``{:reply, TEXT}`` (upper
case), and sends ``{:by_name, n}`` (the n-th request) to the process registered as
``console`` on the sender's node, by name. Start it::

    $ python examples/messaging.py
    py@<host> is ready: send {self(), "text"} to :inbox (Ctrl-C stops it)

then, in another terminal, iex::

    $ iex --sname me --cookie secret
    iex> [_, host] = String.split("#{node()}", "@")
    iex> py = :"py@#{host}"
    iex> Process.register(self(), :console)
    true
    iex> send({:inbox, py}, :not_a_request)
    :not_a_request
    iex> send({:inbox, py}, {self(), "hi"})
    iex> receive do {:reply, text} -> text after 5000 -> :timeout end
    "HI"
    iex> receive do {:by_name, n} -> n after 5000 -> :timeout end
    1

or erl::

    $ erl -sname me -setcookie secret
    1> [_, Host] = string:split(atom_to_list(node()), "@").
    2> Py = list_to_atom("py@" ++ Host).
    3> register(console, self()).
    true
    4> {inbox, Py} ! not_a_request.
    not_a_request
    5> {inbox, Py} ! {self(), <<"hi">>}.
    6> receive {reply, Text} -> Text after 5000 -> timeout end.
    <<"HI">>
    7> receive {by_name, N} -> N after 5000 -> timeout end.
    1

Meanwhile the script prints what it took and what it left::

    request 1 from me@<host>: 'hi' (1 other message waiting)

PYERL_NAME (default ``py``), PYERL_COOKIE (default ``secret``) and ERL_EPMD_PORT are honoured.
"""

import asyncio
import contextlib
import os

from pyerl_node import Atom, Node, Pid
from pyerl_node.proto.terms import Term

REPLY = Atom("reply")
BY_NAME = Atom("by_name")
CONSOLE = Atom("console")


def is_request(message: Term) -> bool:
    """``{pid, text}``: what the selective receive takes."""
    return (isinstance(message, tuple) and len(message) == 2
            and isinstance(message[0], Pid) and isinstance(message[1], bytes))


async def main() -> None:
    name = os.environ.get("PYERL_NAME", "py")
    cookie = os.environ.get("PYERL_COOKIE", "secret")
    async with Node(name, cookie=cookie) as node:
        inbox = node.mailbox(name="inbox")
        print(f'{node.node_atom} is ready: send {{self(), "text"}} to :inbox (Ctrl-C stops it)')
        count = 0
        while True:
            pid, text = await inbox.receive(match=is_request)
            count += 1
            waiting = len(inbox.mailbox)
            print(f"request {count} from {pid.node}: {text.decode()!r} "
                  f"({waiting} other message{'' if waiting == 1 else 's'} waiting)")
            await inbox.send(pid, (REPLY, text.upper()))  # to the pid that came in the message
            await inbox.send((CONSOLE, pid.node), (BY_NAME, count))  # to a name on its node


with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop quietly
    asyncio.run(main())
