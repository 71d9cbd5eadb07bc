"""Peer-provoked log lines: once per key per interval, with the count of those left out."""

from __future__ import annotations

import logging

import pytest

from pyerl_node.runtime.ratelimit import MAX_KEYS, OncePer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_once_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limiter = OncePer(logging.getLogger("t"), 60, clock=clock)
    with caplog.at_level(logging.WARNING, "t"):
        assert limiter.log("peer", logging.WARNING, "bad cookie from %s", "a")
        for _ in range(5):
            clock.now += 1
            assert not limiter.log("peer", logging.WARNING, "bad cookie from %s", "a")
        assert limiter.log("other", logging.WARNING, "bad cookie from %s", "b")
        clock.now = 61
        assert limiter.log("peer", logging.WARNING, "bad cookie from %s", "a")
    assert [r.getMessage() for r in caplog.records] == [
        "bad cookie from a", "bad cookie from b",
        "bad cookie from a (5 more like this in the last 60 s)"]


def test_a_flood_of_keys_stays_bounded() -> None:
    limiter = OncePer(logging.getLogger("t.quiet"), 60, clock=Clock())
    for key in range(MAX_KEYS * 3):
        limiter.log(key, logging.DEBUG, "x")
    assert len(limiter._last) == MAX_KEYS
    assert limiter.log(0, logging.DEBUG, "x")  # forgotten: logged again
