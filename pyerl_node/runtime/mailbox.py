"""A process mailbox with Erlang's selective receive.

Messages queue in arrival order. ``receive(match, timeout)`` takes the first message for which
``match`` returns true and leaves the others in place, as Erlang's ``receive`` does. A waiting
receive only looks at messages that arrived since it last looked, so a long queue of
non-matching messages is scanned once, not once per arrival.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from pyerl_node.proto.errors import CallTimeout, ProcessExit
from pyerl_node.proto.terms import Term

Matcher = Callable[[Term], bool]


class Mailbox:
    """The message queue of one process. Not thread-safe: used from the node's event loop."""

    __slots__ = ("_closed", "_messages", "_waiter")

    def __init__(self) -> None:
        self._messages: deque[Term] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed: ProcessExit | None = None

    def __len__(self) -> int:
        return len(self._messages)

    def put(self, message: Term) -> None:
        """Deliver a message (dropped silently once the mailbox is closed, as for a dead pid)."""
        if self._closed is not None:
            return
        self._messages.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self, reason: ProcessExit) -> None:
        """The owning process died: pending and future receives raise ``reason``."""
        self._closed = reason
        self._messages.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _take(self, match: Matcher | None, start: int) -> tuple[bool, Term, int]:
        messages = self._messages
        if match is None:
            if messages:
                return True, messages.popleft(), 0
            return False, None, 0
        for index in range(start, len(messages)):
            message = messages[index]
            if match(message):
                del messages[index]
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
