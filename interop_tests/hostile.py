"""Tools for the hostile-peer probes: raw peers, hand-built packets, and the figures measured.

* :class:`RawPeer` is a peer the test drives byte by byte: TCP, a real handshake by our own
  sans-I/O initiator (so the node under test sees an ordinary peer), then packets written by
  hand, including ones no honest encoder produces (docs/protocol/distribution.md §5, §6).
* :func:`packet` builds one header-mode packet (``131, 68, 0`` and no atom cache refs) from a
  control tuple and an already encoded payload: the payload can be a compressed term, a
  bignum or a deep term just as a hostile peer would write it.
* :class:`LoopLag` measures how long the event loop stalls: a task sleeps 10 ms in a loop
  and records its worst lateness. A node whose loop stalls answers nobody, ticks to nobody.
* :func:`rss_kib`, :func:`peak_kib`, :func:`reset_peak` read the memory of a process from
  ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``; writing ``5`` to ``clear_refs`` resets the
  high-water mark, so a peak can be measured per probe).
* :func:`figure` prints one tagged ``FIGURE:`` line (``pytest -s`` shows them), for the
  closing note of the hardening work.
* :func:`challenge_reply` runs a handshake up to the challenge reply with a digest of the
  caller's making (a wrong cookie, or the right digest with one byte changed), to count what
  the node accepts and time how it answers (§3).
* :data:`WATCHDOG` is Erlang source for a registered process on a bystander BEAM node that
  records every ``nodedown`` it sees: a stalled Python node shows up there as a tick timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Final

from pyerl_node.proto.etf import encode
from pyerl_node.proto.flags import default_flags
from pyerl_node.proto.framing import PacketReader, frame
from pyerl_node.proto.handshake import (
    Challenge,
    ChallengeReply,
    HandshakeComplete,
    InitiatorHandshake,
    Role,
    SendName,
    decode_message,
)
from pyerl_node.proto.terms import Atom, Pid, Term

_STEP: Final = 10.0  # bound on every wait for the node in a raw handshake
_REG_SEND: Final = 6
_CREATION: Final = 7
_DIST_HEADER: Final = bytes((131, 68, 0))  # version, normal header, no atom cache refs


def figure(probe: str, **values: object) -> None:
    """Print ``FIGURE: <probe>: key=value ...`` (floats with 3 significant digits)."""
    shown = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in values.items())
    print(f"FIGURE: {probe}: {shown}")


# -- memory ------------------------------------------------------------------------------------

def _status_field(field: str, pid: int | str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(f"{field} not in /proc/{pid}/status")


def rss_kib(pid: int | str = "self") -> int:
    """The resident set size of ``pid`` now, in KiB."""
    return _status_field("VmRSS", pid)


def peak_kib(pid: int | str = "self") -> int:
    """The resident set's high-water mark of ``pid`` since the last :func:`reset_peak`."""
    return _status_field("VmHWM", pid)


def reset_peak(pid: int | str = "self") -> None:
    """Start measuring the peak afresh (Linux: ``5`` in clear_refs resets VmHWM)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


# -- loop stalls -------------------------------------------------------------------------------

class LoopLag:
    """``async with LoopLag() as lag: ...``; then ``lag.worst`` is the worst lateness (s) of
    a 10 ms sleep while the block ran, i.e. the longest time nothing else could run."""

    PERIOD: Final = 0.01

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.PERIOD)
            self.worst = max(self.worst, time.perf_counter() - t0 - self.PERIOD)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._probe())
        await asyncio.sleep(0)  # the probe is running before the block starts
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await asyncio.sleep(self.PERIOD * 2)  # a stall at the very end is seen too
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


# -- raw peers ---------------------------------------------------------------------------------

def packet(ctrl: tuple[Term, ...], payload: bytes | None = None) -> bytes:
    """One length-prefixed header-mode packet: ``ctrl`` encoded here, then ``payload`` as
    given (an external term *with* its leading 131, which the packet leaves out)."""
    body = _DIST_HEADER + encode(ctrl)[1:]
    if payload is not None:
        if payload[:1] != b"\x83":
            raise ValueError("payload must be an external term starting with 131")
        body += payload[1:]
    return struct.pack(">I", len(body)) + body


def reg_send(sender: Pid, name: str) -> tuple[Term, ...]:
    """The control tuple of REG_SEND (6) from ``sender`` to registered ``name``."""
    return (_REG_SEND, sender, Atom(""), Atom(name))


class RawPeer:
    """A hand-driven peer of a node, connected and past the handshake."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 done: HandshakeComplete, name: str) -> None:
        self.reader = reader
        self.writer = writer
        self.done = done
        self.name = name
        #: a pid of ours, as a sender
        self.pid = Pid(Atom(name), 1, 0, _CREATION)

    @classmethod
    async def connect(cls, port: int, target: str, cookie: str) -> RawPeer:
        """Dial ``127.0.0.1:port`` and shake hands with node ``target`` (a hidden peer, so
        the node starts no protocol of its own with it)."""
        name = f"raw{secrets.token_hex(3)}@127.0.0.1"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            hs = InitiatorHandshake(
                local_name=name, peer_name=target, cookie=cookie,
                flags=default_flags(hidden=True),
                creation=_CREATION, challenge_source=lambda: secrets.randbits(32))
            hs.start()
            async with asyncio.timeout(_STEP):
                while True:
                    writer.write(hs.data_to_send())
                    data = await reader.read(4096)
                    if not data:
                        raise ConnectionError(f"{target} closed during the handshake")
                    done = next((e for e in hs.receive_data(data)
                                 if isinstance(e, HandshakeComplete)), None)
                    if done is not None:
                        writer.write(hs.data_to_send())
                        return cls(reader, writer, done, name)
        except BaseException:
            writer.close()
            raise

    def write(self, data: bytes | Iterable[bytes]) -> None:
        if isinstance(data, bytes):
            self.writer.write(data)
        else:
            self.writer.writelines(data)

    async def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """Read (and drop) what the node sends until it hangs up: True, or False when it
        is still connected after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass  # a reset is a hang-up too
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


# -- the bystander -----------------------------------------------------------------------------

#: Erlang: start a registered process ``pyerl_watchdog`` recording every nodedown it sees,
#: of visible and hidden connections alike.
WATCHDOG: Final = """
Self = self(),
Pid = spawn(fun() ->
    net_kernel:monitor_nodes(true, [{node_type, all}]),
    Loop = fun Loop(Downs) ->
        receive
            {nodedown, N, _Info} -> Loop([N | Downs]);
            {get, From} -> From ! {downs, lists:reverse(Downs)}, Loop(Downs)
        end
    end,
    Self ! started,
    Loop([])
end),
register(pyerl_watchdog, Pid),
receive started -> ok after 5000 -> timeout end
"""

#: Erlang: the nodedowns ``pyerl_watchdog`` saw, as a list of node names.
WATCHDOG_DOWNS: Final = """
pyerl_watchdog ! {get, self()},
receive {downs, Downs} -> Downs after 5000 -> timeout end
"""


def ping_source(node: str) -> str:
    """Erlang: ``{Microseconds, Answer}`` of ``net_adm:ping(node)``."""
    return f"timer:tc(net_adm, ping, ['{node}'])"


def parse_ping(text: str) -> tuple[float, str]:
    """``{Microseconds, pong}`` as printed by ``~p`` -> (seconds, "pong")."""
    micros, answer = text.strip("{}").split(",")
    return int(micros) / 1e6, answer


async def challenge_reply(port: int, target: str, digest_for: Callable[[int], bytes]
                          ) -> tuple[bool, float]:
    """One handshake with node ``target`` up to our challenge reply, whose digest of the
    node's challenge is ``digest_for(challenge)``: (whether the node acknowledged it, the
    seconds from sending the reply to its answer or its hang-up)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    packets = PacketReader(2)
    try:
        async with asyncio.timeout(_STEP):
            name = f"cookie{secrets.token_hex(3)}@127.0.0.1"
            writer.write(frame(SendName(default_flags(hidden=True), _CREATION, name).encode(), 2))
            status = await _next_packet(reader, packets)
            challenge = decode_message(await _next_packet(reader, packets), Role.ACCEPTOR)
            if status != b"sok" or not isinstance(challenge, Challenge):
                raise ConnectionError(f"{target} answered {status!r}, then {challenge!r}")
            reply = ChallengeReply(secrets.randbits(32), digest_for(challenge.challenge))
            t0 = time.perf_counter()
            writer.write(frame(reply.encode(), 2))
            try:
                answer = await _next_packet(reader, packets)
            except ConnectionError:
                answer = b""
            return answer[:1] == b"a", time.perf_counter() - t0
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _next_packet(reader: asyncio.StreamReader, packets: PacketReader) -> bytes:
    while (found := packets.next_packet()) is None:
        data = await reader.read(4096)
        if not data:
            raise ConnectionError("closed by the node")
        packets.feed(data)
    return found


# -- an EPMD flooder ---------------------------------------------------------------------------

#: ``python -c FLOODER port count seconds``: one local process holding ``count`` silent
#: connections to the EPMD on ``port`` and opening a new one for each the server closes, for
#: ``seconds`` (or until its stdin closes). It prints ``full`` once all are open, then at the
#: end ``opened closed_by_server``.
FLOODER: Final = """
import asyncio, sys

async def main(port, count, seconds):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    stats = {"opened": 0, "closed": 0}
    full = asyncio.Event()

    async def hold():
        while loop.time() < deadline:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            stats["opened"] += 1
            if stats["opened"] >= count:
                full.set()
            try:
                await asyncio.wait_for(reader.read(1), max(0.0, deadline - loop.time()))
                stats["closed"] += 1
            except (TimeoutError, OSError):
                pass
            writer.close()

    async def until_stdin_closes():
        await loop.run_in_executor(None, sys.stdin.read)

    async def report_full():
        await full.wait()
        print("full", flush=True)

    holders = asyncio.gather(*(hold() for _ in range(count)))
    reporter = loop.create_task(report_full())
    stdin = loop.create_task(until_stdin_closes())
    await asyncio.wait([holders, stdin], return_when=asyncio.FIRST_COMPLETED)
    holders.cancel()
    reporter.cancel()
    await asyncio.gather(holders, reporter, return_exceptions=True)
    print(stats["opened"], stats["closed"], flush=True)

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
"""
