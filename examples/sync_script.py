"""A plain blocking script: ``from pyerl_node.sync import Node``, no asyncio in sight.

The blocking facade runs the node's event loop in a background thread; every verb of
``pyerl_node.Node`` is there under the same name and simply returns its result. The
script pings a BEAM node, asks it for its OTP release, sends ``{pid, "hello from a script"}``
to the process registered there as ``waiter``, prints the answer and exits. The node is the
first argument (default ``me@<this host>``). In iex, first register the shell as ``waiter``::

    $ iex --sname me --cookie secret
    iex> Process.register(self(), :waiter)
    true

run the script in another terminal::

    $ python examples/sync_script.py

and answer its message from iex (the script waits up to 30 seconds)::

    iex> receive do {pid, text} -> send(pid, String.upcase(text)); text after 30_000 -> :timeout end
    "hello from a script"

The same with erl::

    $ erl -sname me -setcookie secret
    1> register(waiter, self()).
    true

::

    $ python examples/sync_script.py

::

    2> receive {Pid, Text} -> Pid ! string:uppercase(Text), Text after 30000 -> timeout end.
    <<"hello from a script">>

The script prints::

    ping me@<host>: pong
    me@<host> runs OTP ...
    waiter answered: HELLO FROM A SCRIPT

PYERL_NAME (default ``py``), PYERL_COOKIE (default ``secret``) and ERL_EPMD_PORT are honoured.
"""

import os
import sys

from pyerl_node import Atom
from pyerl_node.sync import Node

name = os.environ.get("PYERL_NAME", "py")
cookie = os.environ.get("PYERL_COOKIE", "secret")

with Node(name, cookie=cookie) as node:
    beam = sys.argv[1] if len(sys.argv) > 1 else f"me@{node.name.host}"
    print(f"ping {beam}:", "pong" if node.ping(beam) else "pang")
    release = node.rpc(beam, "erlang", "system_info", [Atom("otp_release")])
    print(f"{beam} runs OTP {bytes(release).decode()}")
    box = node.mailbox()
    node.send((Atom("waiter"), beam), (box.pid, "hello from a script"), sender=box.pid)
    answer = box.receive(timeout=30)
    print("waiter answered:", answer.decode())
