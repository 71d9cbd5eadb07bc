"""Threads that run blocking Python functions for the event loop (exposed rpc functions).

A job travels through one ``queue.SimpleQueue`` to whichever worker is idle, and its result
comes back with ``call_soon_threadsafe``: on the machines we measured this hand-off costs about
a third of ``loop.run_in_executor``'s, which matters when it is most of an rpc round trip.
Workers are started on demand, up to a bound, and are daemon threads so that a function that
never returns cannot keep the process alive. Workers that build big terms (the decoders) run
their jobs with the cyclic GC paused (:mod:`pyerl_node.runtime.gcpause`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any

from pyerl_node.runtime.gcpause import run_paused

Done = Callable[[bool, Any], None]
_Job = tuple[asyncio.AbstractEventLoop, Done, Callable[..., Any], tuple[Any, ...]]


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # the caller gave up (its task was cancelled)
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class Workers:
    """A bounded, lazily grown set of threads fed from one queue."""

    def __init__(self, max_threads: int = 32, name: str = "pyerl-worker", *,
                 pause_gc: bool = False) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0
        self._max = max_threads
        self._name = name
        # Only for jobs that end (decodes): a paused collector holds no GIL in their thread.
        self._pause_gc = pause_gc

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Call ``fn(*args)`` in a worker; the future (of the running loop) gets its outcome."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.submit(fn, args, functools.partial(_settle, fut))
        return fut

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], done: Done) -> None:
        """Call ``fn(*args)`` in a worker, then ``done(True, result)`` or
        ``done(False, exception)`` on the running loop: no future, no task to wake."""
        loop = asyncio.get_running_loop()
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
        self._jobs.put((loop, done, fn, args))

    def _work(self) -> None:
        while True:
            loop, done, fn, args = self._jobs.get()
            try:
                outcome: tuple[bool, Any] = (
                    True, run_paused(fn, *args) if self._pause_gc else fn(*args))
            except BaseException as exc:
                outcome = (False, exc)
            # A closed loop raises RuntimeError: nobody is waiting for this result any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(done, *outcome)
            # An idle worker must not keep its last job alive: a big decoded read, its atoms,
            # or an exception whose frames hold all of that.
            del loop, done, fn, args, outcome
            with self._lock:
                self._idle += 1
