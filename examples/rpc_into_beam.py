"""Python calling into a BEAM node: ``rpc:call``, ``erpc:call`` and ``rpc:multicall``.

Start a node to call into, then run the script in another terminal; it calls ``:erlang``,
``:lists`` and Elixir's ``String.upcase``, shows each failure as the ``RpcError`` it raises,
and exits. The node to call is the first argument (default ``me@<this host>``)::

    $ iex --sname me --cookie secret
    $ python examples/rpc_into_beam.py
    node() -> Atom('me@<host>')
    system_info(otp_release) -> '25'
    lists:reverse([1, 2, 3]) -> [3, 2, 1]
    String.upcase("hello") -> b'HELLO'
    multicall: [Atom('me@<host>')], no answer from [Atom('nobody@<host>')]
    erpc error: error badarith
    rpc error: EXIT undef
    rpc timeout: timeout

Against a plain Erlang node, ``Elixir.String`` does not exist and the call fails with
``undef``::

    $ erl -sname me -setcookie secret
    $ python examples/rpc_into_beam.py
    node() -> Atom('me@<host>')
    system_info(otp_release) -> '28'
    lists:reverse([1, 2, 3]) -> [3, 2, 1]
    String.upcase("hello") failed: error undef

``node.rpc`` follows ``rpc:call``: a ``{badrpc, Reason}`` raises ``RpcError(Reason)``.
``node.erpc`` follows ``erpc:call``: ``RpcError.kind`` is the class of the exception
(``error``, ``exit``, ``throw``) or ``timeout`` / ``noconnection``. PYERL_NAME (default ``py``),
PYERL_COOKIE (default ``secret``) and ERL_EPMD_PORT are honoured.
"""

import asyncio
import os
import sys

from pyerl_node import Atom, Node, RpcError


async def main() -> None:
    name = os.environ.get("PYERL_NAME", "py")
    cookie = os.environ.get("PYERL_COOKIE", "secret")
    async with Node(name, cookie=cookie) as node:
        host = node.name.host
        beam = sys.argv[1] if len(sys.argv) > 1 else f"me@{host}"

        print("node() ->", repr(await node.rpc(beam, "erlang", "node", [])))
        release = await node.rpc(beam, "erlang", "system_info", [Atom("otp_release")])
        print("system_info(otp_release) ->", repr(bytes(release).decode()))  # a charlist
        print("lists:reverse([1, 2, 3]) ->", await node.rpc(beam, "lists", "reverse", [[1, 2, 3]]))
        try:
            upper = await node.erpc(beam, "Elixir.String", "upcase", ["hello"])
        except RpcError as exc:  # an Erlang node has no Elixir modules
            print(f'String.upcase("hello") failed: {exc.kind} {exc.reason[0]}')
            return
        print('String.upcase("hello") ->', upper)

        results, bad = await node.multicall([beam, f"nobody@{host}"], "erlang", "node", [])
        print(f"multicall: {results}, no answer from {bad}")
        try:
            await node.erpc(beam, "erlang", "+", [1, Atom("one")])
        except RpcError as exc:  # kind: error, exit or throw; reason: (reason, stacktrace)
            print("erpc error:", exc.kind, exc.reason[0])
        try:
            await node.rpc(beam, "lists", "no_such_function", [])
        except RpcError as exc:  # rpc:call's {badrpc, {'EXIT', {undef, Stack}}}
            print("rpc error:", exc.reason[0], exc.reason[1][0])
        try:
            await node.erpc(beam, "timer", "sleep", [5000], timeout=0.5)
        except RpcError as exc:
            print("rpc timeout:", exc.kind)


asyncio.run(main())
