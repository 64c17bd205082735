"""Decode-ahead and write-behind threads: order, errors carried across, clean shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from bridge.background import Drain, Prefetcher


def test_prefetcher_yields_everything_in_order() -> None:
    with Prefetcher(range(100), depth=3) as items:
        assert list(items) == list(range(100))


def test_prefetcher_raises_the_source_error_in_the_consumer() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("decoder broke")

    with Prefetcher(failing()) as items, pytest.raises(ValueError, match="decoder broke"):
        list(items)


def test_leaving_early_stops_the_producer_and_closes_the_source() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    with Prefetcher(endless(), depth=2) as items:
        assert next(items) == 0
    assert closed.is_set()


def test_drain_consumes_everything_before_leaving() -> None:
    seen: list[int] = []
    with Drain(seen.append, depth=2) as drain:
        for n in range(50):
            drain.put(n)
    assert seen == list(range(50))


def test_drain_raises_the_consumer_error() -> None:
    def failing(item: int) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), Drain(failing, depth=1) as drain:
        for n in range(20):
            drain.put(n)


def test_leaving_drain_with_an_error_drops_the_queue() -> None:
    # Given a consumer still busy with the first item when the producer fails
    seen: list[int] = []

    def slow(item: int) -> None:
        threading.Event().wait(0.5)
        seen.append(item)

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="cancelled"), Drain(slow, depth=10) as drain:
        for n in range(5):
            drain.put(n)
        raise RuntimeError("cancelled")
    # Then at most the item in hand was finished; the queued ones were dropped, not waited for
    assert seen in ([], [0])
    assert time.monotonic() - started < 1.5
