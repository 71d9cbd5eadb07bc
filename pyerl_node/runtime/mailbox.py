"""A process mailbox with Erlang's selective receive, queue bounds and flow accounting.

Messages queue in arrival order. ``receive(match, timeout)`` takes the first message for which
``match`` returns true and leaves the others in place, as Erlang's ``receive`` does. A waiting
receive only looks at messages that arrived since it last looked, so a long queue of
non-matching messages is scanned once, not once per arrival.

Bounds: a mailbox may have a ``max_queue``; the message that would exceed it makes its
:class:`QueueWatch` end the process (reason ``max_queue``, as ``max_heap_size`` ends a BEAM
process). Past :data:`LONG_QUEUE` messages or :data:`LONG_QUEUE_BYTES` bytes the watch is told
too (the kernel warns, once a minute per process).

Flow: a message that came from a connection is put with ``put_from(message, source, size)``;
the mailbox tells ``source`` when the message leaves (received, or dropped with the mailbox),
so a connection knows how many of its bytes still wait in mailboxes and can stop reading while
that is too much (:class:`FlowSource`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Protocol

from pyerl_node.proto.errors import CallTimeout, ProcessExit
from pyerl_node.proto.terms import Term

Matcher = Callable[[Term], bool]

#: A queue this long, or holding this many bytes from connections, is worth a warning.
LONG_QUEUE = 10_000
LONG_QUEUE_BYTES = 100 * 1024 * 1024


class FlowSource(Protocol):
    """Where messages come from that are accounted while they wait (a connection)."""

    def queued(self, size: int) -> None: ...

    def delivered(self, size: int) -> None: ...


class QueueWatch(Protocol):
    """Who is told when a mailbox passes its bounds (the kernel, for the owning process)."""

    def queue_full(self, mailbox: Mailbox) -> None: ...

    def queue_long(self, mailbox: Mailbox) -> None: ...


class Mailbox:
    """The message queue of one process. Not thread-safe: used from the node's event loop."""

    __slots__ = ("_check_at", "_closed", "_messages", "_origins", "_waiter", "max_queue",
                 "queued_bytes", "watch")

    def __init__(self, max_queue: int | None = None) -> None:
        self._messages: deque[Term] = deque()
        # (source, size) of each queued message that came from a connection, None otherwise
        self._origins: deque[tuple[FlowSource, int] | None] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed: ProcessExit | None = None
        self.max_queue = max_queue
        self.queued_bytes = 0
        self.watch: QueueWatch | None = None
        # one comparison per put until a bound is near
        self._check_at = LONG_QUEUE if max_queue is None else min(LONG_QUEUE, max_queue + 1)

    def __len__(self) -> int:
        return len(self._messages)

    def put(self, message: Term) -> None:
        """Deliver a message (dropped silently once the mailbox is closed, as for a dead pid)."""
        if self._closed is not None:
            return
        self._messages.append(message)
        self._origins.append(None)
        if len(self._messages) >= self._check_at:
            self._check_bounds()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def put_from(self, message: Term, source: FlowSource, size: int) -> None:
        """Deliver a message that came from ``source``: its ``size`` bytes count against the
        source until the message leaves the mailbox."""
        if self._closed is not None:
            return
        self._messages.append(message)
        self._origins.append((source, size))
        self.queued_bytes += size
        source.queued(size)
        if len(self._messages) >= self._check_at or self.queued_bytes > LONG_QUEUE_BYTES:
            self._check_bounds()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _check_bounds(self) -> None:
        watch = self.watch
        if watch is None:
            return
        if self.max_queue is not None and len(self._messages) > self.max_queue:
            watch.queue_full(self)
        elif len(self._messages) >= LONG_QUEUE or self.queued_bytes > LONG_QUEUE_BYTES:
            watch.queue_long(self)

    def close(self, reason: ProcessExit) -> None:
        """The owning process died: pending and future receives raise ``reason``."""
        self._closed = reason
        self._messages.clear()
        for origin in self._origins:
            if origin is not None:
                origin[0].delivered(origin[1])
        self._origins.clear()
        self.queued_bytes = 0
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _left(self, origin: tuple[FlowSource, int] | None) -> None:
        if origin is not None:
            self.queued_bytes -= origin[1]
            origin[0].delivered(origin[1])

    def _take(self, match: Matcher | None, start: int) -> tuple[bool, Term, int]:
        messages = self._messages
        if match is None:
            if messages:
                origin = self._origins.popleft()
                if origin is not None:
                    self._left(origin)
                return True, messages.popleft(), 0
            return False, None, 0
        for index in range(start, len(messages)):
            message = messages[index]
            if match(message):
                del messages[index]
                origin = self._origins[index]
                del self._origins[index]
                if origin is not None:
                    self._left(origin)
                return True, message, 0
        return False, None, len(messages)

    def receive_nowait(self, match: Matcher | None = None) -> tuple[bool, Term]:
        """``(True, message)`` for the first matching message, ``(False, None)`` if none."""
        if self._closed is not None:
            raise self._closed
        found, message, _ = self._take(match, 0)
        return found, message

    async def receive(self, match: Matcher | None = None, timeout: float | None = None) -> Term:
        """Wait for the first message ``match`` accepts (any message when ``match`` is None).

        Raises :class:`CallTimeout` after ``timeout`` seconds (None waits forever) and
        :class:`ProcessExit` when the owning process dies while waiting.
        """
        if self._closed is not None:
            raise self._closed
        found, message, scanned = self._take(match, 0)
        if found:
            return message
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._waiter is not None and not self._waiter.done():
                raise RuntimeError("another coroutine is already receiving on this mailbox")
            waiter = self._waiter = loop.create_future()
            try:
                if deadline is None:
                    await waiter
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise CallTimeout(f"no matching message within {timeout} s")
                    try:
                        async with asyncio.timeout(remaining):
                            await waiter
                    except TimeoutError:
                        raise CallTimeout(f"no matching message within {timeout} s") from None
            finally:
                self._waiter = None
            if self._closed is not None:
                raise self._closed
            found, message, scanned = self._take(match, scanned)
            if found:
                return message
