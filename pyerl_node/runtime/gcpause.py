"""Pausing the cyclic garbage collector while a worker thread builds a big decoded term.

A collection holds the GIL, so one that runs in a decoder thread stalls the event loop as if
it ran there. Decoding a big message allocates millions of containers, and the collector
answers with full collections of the whole, growing heap (300,000 records: seven in one
decode, the last 88 ms with the C codec, 160 ms with the Python one). So a decode runs with
the collector paused, and at its end every object is handed to the oldest generation in O(1)
(``gc.freeze`` then ``gc.unfreeze``) rather than left to the next young collections, which
would walk them all at once (a gen0 collection after that decode: 76 ms). Nothing stays
frozen: the next full collection sees these objects, and a cycle among them or among anything
made meanwhile is collected then (CPython's trigger of full collections does not count them).

``gc.disable``/``gc.enable`` are process-wide: the pause is counted, so that the collector comes
back when the last overlapping decode ends, and bounded: a decode that starts when a pause has
lasted MAX_PAUSE already runs unpaused, so overlapping decodes cannot keep it off for good.
A collector the application turned off stays off, and its frozen objects stay frozen.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

T = TypeVar("T")

#: A decode that starts after the current pause has lasted this long does not extend it.
MAX_PAUSE: Final = 2.0

class _Pause:
    """The process's one pause: how many jobs run in it, since when."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs = 0
        self.since = 0.0  # (time.monotonic)

    def enter(self) -> bool:
        with self.lock:
            if self.jobs == 0:
                if not gc.isenabled():  # turned off by the application: not ours to resume
                    return False
                gc.disable()
                self.since = time.monotonic()
            elif time.monotonic() - self.since > MAX_PAUSE:
                return False  # the pause ends with the jobs already in it
            self.jobs += 1
            return True

    def leave(self) -> None:
        with self.lock:
            self.jobs -= 1
            if self.jobs:
                return
            if gc.get_freeze_count() == 0:
                # freeze + unfreeze: every tracked object into the oldest generation, in O(1)
                # (unfreeze puts the permanent generation there). Not when the application
                # froze objects: those must stay frozen.
                gc.freeze()
                gc.unfreeze()
            gc.enable()


_PAUSE = _Pause()


def run_paused(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with the cyclic GC paused (see the module's docstring)."""
    if not _PAUSE.enter():
        return fn(*args)
    try:
        return fn(*args)
    finally:
        _PAUSE.leave()
