"""A worker thread keeps nothing of a job once its outcome is delivered.

The decoder threads of the channels (``runtime/channel.py``) run on
:class:`~pyerl_node.runtime.workers.Workers`: whatever a finished job still references while
its thread waits for the next one stays alive, i.e. the last big read a connection had
decoded off the loop, every message decoded from it and their atoms (which count against
the atom limit). Each case holds a weak reference to what the job touched and drops every
strong one the test has.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import Callable

import pytest

from pyerl_node.runtime.workers import Workers


class Payload:
    """Something a weak reference can watch (a stand-in for a read or a decoded message)."""


class RefusedError(Exception):
    def __init__(self, payload: Payload) -> None:
        super().__init__("refused")
        self.payload = payload


def _returns(payload: Payload) -> Payload:
    return payload


def _takes(payload: Payload) -> None:
    return None


def _raises(payload: Payload) -> None:
    raise RefusedError(payload)


@pytest.mark.parametrize("job", [_returns, _takes, _raises],
                         ids=["its result", "its argument", "its exception"])
async def test_a_finished_job_leaves_nothing_alive(job: Callable[[Payload], object]) -> None:
    workers = Workers(max_threads=1, name="pyerl-test-worker")
    payload = Payload()
    watch = weakref.ref(payload)
    outcome = workers.run(job, payload)
    del payload
    with contextlib.suppress(RefusedError):
        await outcome
    del outcome
    # (the worker may let go a moment after the loop got the outcome: give it that moment)
    for _ in range(50):
        if watch() is None:
            return
        await asyncio.sleep(0.01)
    gc.collect()
    assert watch() is None, "the idle worker still holds what its last job touched"
