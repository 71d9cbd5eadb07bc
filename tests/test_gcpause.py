"""The cyclic GC paused while decoder threads build big terms (pyerl_node/runtime/gcpause.py)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from pyerl_node.runtime import gcpause
from pyerl_node.runtime.gcpause import run_paused
from pyerl_node.runtime.workers import Workers


@pytest.fixture(autouse=True)
def _gc_enabled() -> Iterator[None]:
    assert gc.isenabled()
    yield
    gc.enable()


def test_a_job_runs_with_the_collector_off_and_it_comes_back_after() -> None:
    assert run_paused(gc.isenabled) is False
    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError):
        run_paused(divmod, 1, 0)
    assert gc.isenabled()  # also after a job that failed


def test_what_a_job_built_skips_the_young_generations_and_its_cycles_are_still_collected(
) -> None:
    class Node:
        other: Node

    def build() -> list[list[int]]:
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle, garbage once the job ends
        return [[i] for i in range(100_000)]

    gc.collect()
    kept = run_paused(build)
    # handed to the oldest generation at once, not left for a young collection to walk
    assert gc.get_count()[0] < 1_000
    assert gc.collect() >= 2  # the cycle is found by the next full collection
    assert len(kept) == 100_000


def test_overlapping_jobs_keep_it_off_until_the_last_ends() -> None:
    first_in, first_go, second_in, second_go = (threading.Event() for _ in range(4))
    seen: dict[str, bool] = {}

    def job(name: str, entered: threading.Event, go: threading.Event) -> None:
        entered.set()
        go.wait(10)
        seen[name] = gc.isenabled()

    one = threading.Thread(target=run_paused, args=(job, "one", first_in, first_go))
    two = threading.Thread(target=run_paused, args=(job, "two", second_in, second_go))
    one.start()
    assert first_in.wait(10)
    two.start()
    assert second_in.wait(10)
    first_go.set()
    one.join(10)
    assert not gc.isenabled()  # the second job still runs
    second_go.set()
    two.join(10)
    assert seen == {"one": False, "two": False} and gc.isenabled()


def test_a_pause_that_lasted_too_long_is_not_extended(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gcpause, "MAX_PAUSE", 0.0)
    entered, go = threading.Event(), threading.Event()

    def long_job() -> None:
        entered.set()
        go.wait(10)

    first = threading.Thread(target=run_paused, args=(long_job,))
    first.start()
    assert entered.wait(10)
    late = threading.Event()
    later = threading.Thread(target=run_paused, args=(lambda: late.wait(10),))
    later.start()  # starts after MAX_PAUSE: runs unpaused, does not hold the pause open
    go.set()
    first.join(10)
    assert gc.isenabled()
    late.set()
    later.join(10)


def test_a_collector_the_application_turned_off_stays_off() -> None:
    gc.disable()
    assert run_paused(gc.isenabled) is False
    assert not gc.isenabled()


async def test_only_workers_asked_to_pause_it_do() -> None:
    assert await Workers(max_threads=1, pause_gc=True).run(gc.isenabled) is False
    assert await Workers(max_threads=1).run(gc.isenabled) is True
