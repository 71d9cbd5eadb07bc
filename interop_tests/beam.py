"""Real BEAM peers for interop tests: the real ``epmd`` and real ``erl``/``elixir`` nodes.

How it works: every node is started as an OS process (``start_new_session=True``, so its pid is
also the id of a process group that holds ``erl_child_setup`` and anything else it spawns). The
``erl`` and ``elixir`` launchers are shell scripts that ``exec`` down to ``beam.smp``, so the pid
we hold is the emulator itself; ``BeamNode.pid`` is checked against ``os:getpid()`` in the
harness tests.

The node boots with ``-eval`` (``elixir -e`` for Elixir) of a tiny bootstrap that evaluates the
driver below, passed in the ``PYERL_BEAM_DRIVER`` environment variable so that no quoting has to
survive the launcher scripts. The driver prints a ``ready`` record (node name, OTP release) and
then reads requests from stdin, one per line: ``<seq> <erl|ex> <base64 source>``. Each request
is evaluated in its own process, so requests run concurrently and one that blocks or times out
does not hold up the next. The result is written to stdout as one line
``@@PYERL@@ <seq> <ok|error> <base64 text>`` (preceded by a newline, in case evaluated code left
a partial line); base64 keeps multi-line results and stray output apart. Everything else the
node prints is kept (the last few hundred lines) for error messages.

Nodes are isolated: ``-name x@127.0.0.1`` on the caller's epmd port (``ERL_EPMD_PORT``,
``-start_epmd false``), the distribution listener bound to 127.0.0.1 only, no crash dump files.

When stdin closes, the driver halts the node: a test process that dies takes its BEAM peers with
it. ``stop()`` uses that first, then SIGTERM, then SIGKILL to the process group, each wait bounded.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import collections
import concurrent.futures
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import IO, Final, TypeVar

from interop_tests.runtimes import epmd_binary, find_elixir, find_erl

LOCALHOST: Final = "127.0.0.1"
_MARKER: Final = b"@@PYERL@@ "
_DRIVER_ENV: Final = "PYERL_BEAM_DRIVER"
_OUTPUT_LINES: Final = 300
_STOP_WAIT: Final = 5.0

# Erlang expressions evaluated by the bootstrap. Requests are evaluated in a worker process
# watched by a monitor, so even a worker killed by its own code produces a reply.
_DRIVER: Final = r"""
Out = fun(Seq, Tag, Text) ->
    B64 = base64:encode(unicode:characters_to_binary(Text)),
    io:put_chars(user, [<<"\n@@PYERL@@ ">>, integer_to_list(Seq), $\s,
                        atom_to_list(Tag), $\s, B64, $\n])
end,
Eval = fun
    (erl, Src) ->
        Toks = case erl_scan:string(Src) of
                   {ok, T, _} -> T;
                   ScanErr -> erlang:error({scan_error, ScanErr})
               end,
        Exprs = case erl_parse:parse_exprs(Toks) of
                    {ok, Es} -> Es;
                    {error, {_, PMod, PDesc}} ->
                        erlang:error({parse_error, lists:flatten(PMod:format_error(PDesc))})
                end,
        {value, V, _} = erl_eval:exprs(Exprs, erl_eval:new_bindings()),
        io_lib:format("~p", [V]);
    (ex, Src) ->
        {V, _} = 'Elixir.Code':eval_string(unicode:characters_to_binary(Src)),
        'Elixir.Kernel':inspect(V, [{limit, infinity}, {printable_limit, infinity}])
end,
Explain = fun
    (ex, Class, Reason) -> 'Elixir.Exception':format_banner(Class, Reason);
    (erl, _Class, Reason) -> io_lib:format("~p", [Reason])
end,
Handle = fun(Seq, Kind, Src) ->
    spawn(fun() ->
        {Pid, Ref} = spawn_monitor(fun() ->
            Res = try {ok, Eval(Kind, Src)}
                  catch Class:Reason ->
                      {error, [atom_to_list(Class), $\n, Explain(Kind, Class, Reason)]}
                  end,
            exit({pyerl_done, Res})
        end),
        receive
            {'DOWN', Ref, process, Pid, {pyerl_done, {Tag, Text}}} -> Out(Seq, Tag, Text);
            {'DOWN', Ref, process, Pid, Why} ->
                Out(Seq, error, ["exit\n", io_lib:format("~p", [Why])])
        end
    end)
end,
Loop = fun Loop() ->
    case io:get_line(user, "") of
        eof -> erlang:halt(0);
        {error, _} -> erlang:halt(0);
        Line ->
            try
                Trimmed = string:trim(unicode:characters_to_list(Line), trailing, "\r\n"),
                [SeqS, KindS, B64] = string:split(Trimmed, " ", all),
                Kind = case KindS of "erl" -> erl; "ex" -> ex end,
                Handle(list_to_integer(SeqS), Kind,
                       unicode:characters_to_list(base64:decode(B64)))
            catch _:_ -> Out(0, garbled, Line)
            end,
            Loop()
    end
end,
spawn(Loop),
Out(0, ready, [atom_to_list(node()), $\n, erlang:system_info(otp_release)]).
"""

_ERL_BOOTSTRAP: Final = (
    f'{{ok,T,_}}=erl_scan:string(os:getenv("{_DRIVER_ENV}")),'
    "{ok,E}=erl_parse:parse_exprs(T),erl_eval:exprs(E,erl_eval:new_bindings())."
)
_ELIXIR_BOOTSTRAP: Final = (
    f'{{:ok, t, _}} = :erl_scan.string(String.to_charlist(System.fetch_env!("{_DRIVER_ENV}")));'
    " {:ok, e} = :erl_parse.parse_exprs(t); :erl_eval.exprs(e, :erl_eval.new_bindings())"
)


class BeamError(Exception):
    """Something went wrong with a BEAM peer started by the test harness."""


class BeamStartError(BeamError):
    """The runtime is missing, or the process did not come up (its output is in the message)."""


class BeamExitedError(BeamError):
    """The BEAM process is gone, so the request cannot be answered."""


class BeamTimeoutError(BeamError, TimeoutError):
    """The node did not answer within the timeout."""


class BeamEvalError(BeamError):
    """The evaluated code raised: ``kind`` is error/exit/throw, ``reason`` as the node put it."""

    def __init__(self, expr: str, kind: str, reason: str) -> None:
        super().__init__(f"{expr!r} raised {kind}: {reason}")
        self.expr = expr
        self.kind = kind
        self.reason = reason


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller must cope with a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def bootstrap_args(*, elixir: bool) -> list[str]:
    """The end of a node's command line that starts the eval driver (see the module doc)."""
    return ["--no-halt", "-e", _ELIXIR_BOOTSTRAP] if elixir else ["-eval", _ERL_BOOTSTRAP]


def short_hostname() -> str:
    """This machine's short host name, as ``erl -sname`` takes it."""
    return socket.gethostname().split(".", 1)[0]


def unique_name(prefix: str) -> str:
    """``prefix`` plus a random suffix, e.g. ``a_3f9c1d``: a valid, unlikely-to-clash name part."""
    return f"{prefix}_{secrets.token_hex(3)}"


_T = TypeVar("_T")

# Everything started here and not yet reaped, so an interpreter exit still cleans up.
_live: set[OsProcess] = set()


class OsProcess:
    """A child in its own session; signals go to its process group while the leader lives."""

    def __init__(self, args: Sequence[str], env: dict[str, str], *, pipes: bool) -> None:
        stdio = subprocess.PIPE if pipes else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            list(args), env=env, stdin=stdio, stdout=stdio,
            stderr=subprocess.STDOUT if pipes else subprocess.DEVNULL,
            start_new_session=True,
        )
        _live.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        # While the leader is unreaped (alive or zombie) its pid, hence the group id, is ours.
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        _live.discard(self)
        return True

    def terminate(self) -> None:
        """SIGTERM, then SIGKILL; every wait bounded. Idempotent."""
        self.signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.signal(signal.SIGTERM)
        if not self.wait(_STOP_WAIT):
            self.kill()

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if not self.wait(_STOP_WAIT):
            raise BeamError(f"pid {self.proc.pid} survived SIGKILL for {_STOP_WAIT}s")


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_live):
        proc.terminate()


class Epmd:
    """The real ``epmd`` daemon, on its own port, bound to 127.0.0.1, stopped by pid."""

    def __init__(self, process: OsProcess, port: int, release: str) -> None:
        self._process = process
        self.port = port
        self.release = release

    @classmethod
    def start(cls, release: str = "25", port: int | None = None, timeout: float = 10.0,
              *, relaxed: bool = False) -> Epmd:
        """Start it; ``relaxed`` adds ``-relaxed_command_check`` (STOP/KILL honoured)."""
        binary = epmd_binary(release)
        if binary is None:
            raise BeamStartError(f"no epmd for OTP {release}")
        # With a chosen port a clash is the caller's problem; with our own, try another one.
        for _attempt in range(1 if port is not None else 3):
            chosen = port if port is not None else free_port()
            args = [str(binary), "-port", str(chosen), "-address", LOCALHOST]
            if relaxed:
                args.append("-relaxed_command_check")
            process = OsProcess(args, clean_env(), pipes=False)
            if _wait_epmd(process, chosen, timeout):
                return cls(process, chosen, release)
            process.terminate()
        raise BeamStartError(f"epmd (OTP {release}) did not start listening")

    @property
    def pid(self) -> int:
        return self._process.pid

    def stop(self) -> None:
        self._process.terminate()


def _wait_epmd(process: OsProcess, port: int, timeout: float) -> bool:
    """True once epmd answers a NAMES request on ``port``; False if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.alive():
        try:
            with socket.create_connection((LOCALHOST, port), timeout=1.0) as sock:
                sock.sendall(b"\x00\x01n")  # NAMES_REQ; the reply starts with epmd's port
                reply = sock.recv(4)
                if len(reply) == 4 and int.from_bytes(reply, "big") == port:
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def clean_env() -> dict[str, str]:
    # Flags in the caller's environment would silently change every node we start.
    env = {k: v for k, v in os.environ.items()
           if k not in ("ERL_AFLAGS", "ERL_FLAGS", "ERL_ZFLAGS", "ELIXIR_ERL_OPTIONS")}
    env.pop("ERL_EPMD_PORT", None)
    return env


class BeamNode:
    """A running ``erl`` (or ``elixir``) node that evaluates code sent by the test."""

    def __init__(self, process: OsProcess, name: str, release: str, elixir: bool) -> None:
        self._process = process
        self.name = name
        self.release = release
        self.elixir = elixir
        self._output: collections.deque[str] = collections.deque(maxlen=_OUTPUT_LINES)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._pending: dict[int, concurrent.futures.Future[tuple[str, str]]] = {}
        self._next_seq = 1
        self._closed = False
        self._ready: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._reader = threading.Thread(
            target=self._read, name=f"beam-reader-{name}", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, release: str, name: str, *, cookie: str, epmd_port: int,
              elixir: bool = False, extra_args: Sequence[str] = (),
              timeout: float = 30.0) -> BeamNode:
        """Start a node called ``name`` and wait until it answers: ``x@127.0.0.1`` (a long
        name, ``-name``) or ``x@<this host's short name>`` (``-sname``, as a user of the
        examples would start it)."""
        short = name.endswith("@" + short_hostname())
        if not (short or name.endswith("@" + LOCALHOST)):
            raise ValueError(f"node name must be x@{LOCALHOST} or x@{short_hostname()}, "
                             f"got {name!r}")
        kernel = ["-start_epmd", "false",
                  "-kernel", "inet_dist_use_interface", "{127,0,0,1}", *extra_args]
        if elixir:
            if release != "25" or find_elixir() is None:
                raise BeamStartError(f"no elixir for OTP {release} (only Debian's, on OTP 25)")
            if any(not a or a.split() != [a] for a in kernel):
                raise ValueError("elixir nodes take extra_args without whitespace")
            args = [str(find_elixir()), "--sname" if short else "--name", name, "--cookie", cookie,
                    "--erl", " ".join(kernel), *bootstrap_args(elixir=True)]
        else:
            erl = find_erl(release)
            if erl is None:
                raise BeamStartError(f"OTP {release} is not installed")
            args = [str(erl), "-sname" if short else "-name", name, "-setcookie", cookie,
                    "-noshell", *kernel, *bootstrap_args(elixir=False)]
        return cls.launch(args, name=name, release=release, elixir=elixir, timeout=timeout,
                          env={"ERL_EPMD_PORT": str(epmd_port)})

    @classmethod
    def launch(cls, args: Sequence[str], *, name: str, release: str, elixir: bool,
               timeout: float = 30.0, env: dict[str, str] | None = None) -> BeamNode:
        """Run ``args`` (a node's command line ending in :func:`bootstrap_args`, possibly
        wrapped, e.g. to run in a network namespace) and wait until the node answers."""
        # No erl_crash.dump files in the working tree when a node fails to boot.
        full_env = clean_env() | {"ERL_CRASH_DUMP_SECONDS": "0", _DRIVER_ENV: _DRIVER,
                                  **(env or {})}
        node = cls(OsProcess(args, full_env, pipes=True), name, release, elixir)
        try:
            node._await_ready(timeout)
        except BaseException:
            node.stop()
            raise
        return node

    @property
    def pid(self) -> int:
        """The OS pid of the emulator (``beam.smp``), also its process group id."""
        return self._process.pid

    @property
    def output(self) -> str:
        """What the node printed outside of replies (the last few hundred lines)."""
        with self._lock:
            return "".join(self._output)

    def eval(self, expr: str, timeout: float = 30.0) -> str:
        """Evaluate Erlang expressions; the value printed with ``~p``. Raises BeamEvalError."""
        return self._call("erl", expr, timeout)

    def eval_elixir(self, code: str, timeout: float = 30.0) -> str:
        """Evaluate Elixir code (elixir nodes only); the value ``inspect``ed."""
        if not self.elixir:
            raise BeamError(f"{self.name} is not an elixir node")
        return self._call("ex", code, timeout)

    async def eval_async(self, expr: str, timeout: float = 30.0) -> str:
        """``eval`` without blocking the event loop; concurrent calls run concurrently."""
        seq, fut = self._submit("erl", expr)
        try:
            async with asyncio.timeout(timeout):
                reply = await asyncio.wrap_future(fut)
        except TimeoutError:
            raise self._timeout(expr, timeout) from None
        finally:
            self._forget(seq)
        return _unpack(expr, reply)

    def stop(self) -> None:
        """Halt politely (close stdin), then SIGTERM, then SIGKILL. Idempotent, bounded."""
        self.resume()  # a suspended node cannot halt
        stdin = self._process.proc.stdin
        if stdin is not None and not stdin.closed:
            with self._write_lock, contextlib.suppress(OSError):
                stdin.close()
        if not self._process.wait(_STOP_WAIT):
            self._process.terminate()
        self._reader.join(_STOP_WAIT)

    def kill9(self) -> None:
        """SIGKILL the node, as a crash would: no goodbye on its connections."""
        self._process.kill()
        self.stop()

    def suspend(self) -> None:
        """SIGSTOP: the node stays connected but silent (for net_ticktime tests)."""
        self._process.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._process.signal(signal.SIGCONT)

    def __repr__(self) -> str:
        return f"<BeamNode {self.name} OTP {self.release} pid {self.pid}>"

    # -- internals -------------------------------------------------------------------------

    def _call(self, kind: str, source: str, timeout: float) -> str:
        seq, fut = self._submit(kind, source)
        try:
            reply = fut.result(timeout)
        except concurrent.futures.TimeoutError:
            raise self._timeout(source, timeout) from None
        finally:
            self._forget(seq)
        return _unpack(source, reply)

    def _submit(self, kind: str, source: str) -> tuple[int, concurrent.futures.Future[
            tuple[str, str]]]:
        source = source.strip()
        if kind == "erl":
            source = source.removesuffix(".")  # the driver adds the final dot
        if not source:
            raise ValueError("nothing to evaluate")
        if kind == "erl":
            source += "\n."
        fut: concurrent.futures.Future[tuple[str, str]] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise BeamExitedError(f"{self.name} has exited\n{''.join(self._output)}")
            seq = self._next_seq
            self._next_seq += 1
            self._pending[seq] = fut
        line = f"{seq} {kind} ".encode() + base64.b64encode(source.encode()) + b"\n"
        stdin = self._process.proc.stdin
        assert stdin is not None
        try:
            with self._write_lock:
                stdin.write(line)
                stdin.flush()
        except (OSError, ValueError):
            self._forget(seq)
            raise BeamExitedError(f"{self.name} no longer reads requests") from None
        return seq, fut

    def _forget(self, seq: int) -> None:
        with self._lock:
            self._pending.pop(seq, None)

    def _timeout(self, source: str, timeout: float) -> BeamTimeoutError:
        return BeamTimeoutError(f"{self.name} did not answer {source!r} within {timeout}s")

    def _await_ready(self, timeout: float) -> None:
        try:
            ready = self._ready.result(timeout)
        except concurrent.futures.TimeoutError:
            raise BeamStartError(
                f"{self.name} not up within {timeout}s; output:\n{self.output}") from None
        except BeamExitedError as exc:
            raise BeamStartError(f"{self.name} failed to start: {exc}") from None
        name, _, release = ready.partition("\n")
        if (name, release) != (self.name, self.release):
            raise BeamStartError(f"expected {self.name} on OTP {self.release}, "
                                 f"got {name} on OTP {release}")

    def _read(self) -> None:
        stdout: IO[bytes] | None = self._process.proc.stdout
        assert stdout is not None
        with stdout:
            for raw in stdout:
                at = raw.find(_MARKER)
                if at < 0:
                    if raw == b"\n":  # the newline the driver writes before each record
                        continue
                    with self._lock:
                        self._output.append(raw.decode("utf-8", "replace"))
                    continue
                self._dispatch(raw[at + len(_MARKER):])
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, {}
        gone = BeamExitedError(f"{self.name} exited (status {self._process.proc.poll()})\n"
                          f"{self.output}")
        _settle(self._ready, gone)
        for fut in pending.values():
            _settle(fut, gone)

    def _dispatch(self, record: bytes) -> None:
        try:
            seq_text, tag, payload = record.rstrip(b"\r\n").decode("ascii").split(" ", 2)
            seq = int(seq_text)
            text = base64.b64decode(payload, validate=True).decode("utf-8", "replace")
        except ValueError:  # evaluated code printed something that looks like a marker
            with self._lock:
                self._output.append(_MARKER.decode() + record.decode("utf-8", "replace"))
            return
        if tag == "ready":
            _settle(self._ready, text)
            return
        if tag == "garbled":  # the driver could not read a request line: our bug
            with self._lock:
                self._output.append(f"driver rejected request line: {text!r}\n")
            return
        with self._lock:
            fut = self._pending.pop(seq, None)
        if fut is not None:
            _settle(fut, (tag, text))


def _settle(fut: concurrent.futures.Future[_T], outcome: _T | BaseException) -> None:
    # The waiter may have given up (timeout, cancellation) a moment ago.
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)


def _unpack(source: str, reply: tuple[str, str]) -> str:
    tag, text = reply
    if tag == "ok":
        return text
    kind, _, reason = text.partition("\n")
    raise BeamEvalError(source.removesuffix("\n."), kind, reason)
