"""``pyerl-node shell``: an interactive Python prompt with a running node and top-level await.

The node's event loop runs in the main thread; the prompt reads lines in a second thread and
hands each compiled statement to the loop, so ``await node.ping("beam@host")`` works as typed
and the node keeps answering its peers while the prompt waits for input. Ctrl-C cancels the
statement that is running; Ctrl-D (or ``exit()``) stops the node and leaves.

Bound names: ``node`` (the :class:`~pyerl_node.Node`), ``me`` (the shell's own process), and
helpers named after erl's shell and BIFs (see :data:`HELP`).
"""

from __future__ import annotations

import ast
import asyncio
import code
import concurrent.futures
import contextlib
import inspect
import os
import pathlib
import signal
import sys
import threading
import traceback
import types
from collections.abc import Callable
from typing import Any

from pyerl_node.node import Node
from pyerl_node.proto.term_syntax import format_term, parse
from pyerl_node.proto.terms import Atom, Pid, Reference, Term
from pyerl_node.runtime.interface import Destination
from pyerl_node.runtime.process import Process

HISTORY = pathlib.Path(os.path.expanduser("~")) / ".pyerl_node_history"

HELP = """\
node                      the running node (every verb of pyerl_node.Node)
me                        this shell's process; self() is its pid
await ping(n)             net_adm:ping/1: True (pong) or False (pang)
await rpc(n, m, f, args)  rpc:call/4
await call(dest, req)     gen_server:call/2
await send(dest, msg)     Dest ! Msg, from me
await receive(timeout=5)  the next message for me (CallTimeout after timeout s)
flush()                   print and drop every message queued for me, as erl's flush()
nodes()                   erlang:nodes(connected)
await connect(n)          net_kernel:connect_node/1
t('{ok, "x"}')            an Erlang term from Erlang syntax; fmt(term) the other way
Atom, Pid, Reference      the term types
"""


class NodeConsole(code.InteractiveConsole):
    """An interactive console whose statements run on the node's event loop."""

    def __init__(self, namespace: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(namespace)
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self.loop = loop
        self.task: asyncio.Task[Any] | None = None  # the running statement, on the loop

    def runcode(self, code_object: types.CodeType) -> None:
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def settle(task: asyncio.Task[Any]) -> None:
            self.task = None
            if task.cancelled():
                result.cancel()
            elif (exc := task.exception()) is not None:
                result.set_exception(exc)
            else:
                result.set_result(task.result())

        def start() -> None:  # on the loop
            try:
                value = types.FunctionType(code_object, self.locals)()
            except BaseException as exc:  # shown below, in the prompt's thread
                result.set_exception(exc)
                return
            if inspect.iscoroutine(value):
                self.task = self.loop.create_task(value)
                self.task.add_done_callback(settle)
            else:
                result.set_result(value)

        self.loop.call_soon_threadsafe(start)
        try:
            failure = result.exception()
        except concurrent.futures.CancelledError:
            self.write("KeyboardInterrupt\n")
            return
        if isinstance(failure, SystemExit):
            raise failure
        if failure is not None:
            self.write("".join(traceback.format_exception(
                type(failure), failure, _typed_frames(failure.__traceback__))))

    def interrupt(self) -> None:
        """Ctrl-C (on the loop): cancel the statement that is running, if any."""
        if self.task is not None:
            self.task.cancel()


def _typed_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback from the first frame of what was typed on: the shell's are noise."""
    while tb is not None and tb.tb_frame.f_code.co_filename != "<console>":
        tb = tb.tb_next
    return tb


def namespace(node: Node, me: Process) -> dict[str, Any]:
    """The names a shell starts with."""

    def flush() -> None:
        while True:
            found, message = me.mailbox.receive_nowait()
            if not found:
                return
            print(f"Shell got {format_term(message)}")

    async def send(dest: Destination, message: Term) -> None:
        await me.send(dest, message)

    async def receive(timeout: float | None = 5.0) -> Term:
        return await me.receive(timeout=timeout)

    def help_shell() -> None:
        print(HELP, end="")

    names: dict[str, Any] = {
        "__name__": "__pyerl_shell__",
        "node": node, "me": me, "self": lambda: me.pid,
        "ping": node.ping, "rpc": node.rpc, "call": node.call, "connect": node.connect,
        "nodes": lambda: node.nodes("connected"), "send": send, "receive": receive,
        "flush": flush, "t": parse, "fmt": format_term, "help_shell": help_shell,
        "Atom": Atom, "Pid": Pid, "Reference": Reference, "asyncio": asyncio,
    }
    return names


def _readline_history() -> Callable[[], None]:
    """Load the history file; the function returned saves it."""
    try:
        import readline
    except ImportError:
        return lambda: None
    with contextlib.suppress(OSError):
        readline.read_history_file(HISTORY)
    readline.set_history_length(2000)

    def save() -> None:
        with contextlib.suppress(OSError):
            readline.write_history_file(HISTORY)

    return save


def run(node: Node, connect: str | None = None) -> int:
    """Start ``node``, run the prompt until it ends, stop the node; the exit status."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(node.start())
        if connect is not None and not loop.run_until_complete(node.connect(connect)):
            print(f"could not connect to {connect}", file=sys.stderr)
        me = node.mailbox()
        console = NodeConsole(namespace(node, me), loop)
        save_history = _readline_history()
        done = threading.Event()

        def prompt() -> None:
            banner = (f"pyerl_node shell on {node.node_atom.name} (Python {sys.version.split()[0]})"
                      "\nawait works at the prompt; help_shell() lists the helpers; "
                      "Ctrl-D leaves.")
            try:
                console.interact(banner=banner, exitmsg="")
            except SystemExit:
                pass
            finally:
                done.set()
                loop.call_soon_threadsafe(loop.stop)

        loop.add_signal_handler(signal.SIGINT, console.interrupt)
        thread = threading.Thread(target=prompt, name="pyerl-shell-prompt", daemon=True)
        thread.start()
        loop.run_forever()
        save_history()
        loop.run_until_complete(node.stop())
        return 0
    finally:
        loop.close()
