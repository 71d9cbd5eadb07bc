"""The worker threads that run blocking exposed functions."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pyerl_node.runtime.workers import Workers


async def test_results_and_exceptions_come_back() -> None:
    workers = Workers(max_threads=2)
    assert await workers.run(divmod, 7, 2) == (3, 1)
    with pytest.raises(ZeroDivisionError):
        await workers.run(divmod, 1, 0)


async def test_blocking_calls_overlap_and_leave_the_loop_free() -> None:
    # Four calls block until the event loop releases them, which it does only after seeing
    # all four running at once: serial workers or a blocked loop would end in the timeout.
    workers = Workers(max_threads=4)
    started = threading.Semaphore(0)
    release = threading.Event()

    def blocking() -> bool:
        started.release()
        return release.wait(timeout=10)

    calls = [workers.run(blocking) for _ in range(4)]
    for _ in range(4):
        assert await asyncio.to_thread(started.acquire, True, 10)
    release.set()
    assert await asyncio.gather(*calls) == [True] * 4


async def test_thread_count_is_bounded_and_jobs_queue() -> None:
    workers = Workers(max_threads=2)
    names = await asyncio.gather(*(workers.run(_name) for _ in range(20)))
    assert 1 <= len(set(names)) <= 2


def _name() -> str:
    return threading.current_thread().name


async def test_submit_reports_on_the_loop_thread() -> None:
    workers = Workers(max_threads=2)
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[tuple[bool, object, str]] = asyncio.Queue()

    def done(ok: bool, value: object) -> None:
        got.put_nowait((ok, value, threading.current_thread().name))

    workers.submit(divmod, (7, 2), done)
    workers.submit(divmod, (1, 0), done)
    results = [await asyncio.wait_for(got.get(), 10) for _ in range(2)]
    results.sort(key=lambda r: r[0])
    (bad, error, where_bad), (good, value, where_good) = results
    assert good and value == (3, 1)
    assert not bad and isinstance(error, ZeroDivisionError)
    assert where_bad == where_good == threading.current_thread().name  # the loop's thread
    assert loop.is_running()
