"""Run one end of a stream on its own thread: decode ahead, or write behind.

Decoding, resampling and encoding then overlap with the model, which matters on
a GPU. Both helpers are context managers with a bounded queue, a stop sentinel,
exceptions carried across to the caller, and a join on the way out.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")

_DONE = object()
_POLL_SECONDS = 0.1


class Prefetcher(Generic[T]):
    """Iterate ``source`` on a background thread, up to ``depth`` items ahead.

    Use ``with Prefetcher(source) as items: for item in items: ...``; an exception
    raised by ``source`` is raised again in the consuming thread, and leaving the
    block early stops the producer.
    """

    def __init__(self, source: Iterable[T], *, depth: int = 4, name: str = "prefetch") -> None:
        self._source = source
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)

    def __enter__(self) -> Iterator[T]:
        self._thread.start()
        return self._consume()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _produce(self) -> None:
        items = iter(self._source)
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, who raises it
            self._put(_Failure(exc))
            return
        finally:
            # A generator holding a file is closed here, on the thread that ran it.
            close = getattr(items, "close", None)
            if close is not None:
                close()
        self._put(_DONE)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _consume(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]


class Drain(Generic[T]):
    """Hand items to ``consume`` on a background thread, up to ``depth`` queued.

    ``put`` raises the consumer's exception as soon as it is known; leaving the
    ``with`` block normally waits until every queued item is consumed, leaving it
    with an exception drops what is still queued.
    """

    def __init__(
        self, consume: Callable[[T], None], *, depth: int = 4, name: str = "drain"
    ) -> None:
        self._consume_item = consume
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._abandoned = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Drain[T]:
        self._thread.start()
        return self

    def put(self, item: T) -> None:
        """Queue one item; raises the consumer's error if it has failed."""
        while True:
            self._raise_error()
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None:
            self._abandoned.set()
        while self._thread.is_alive():
            try:
                self._queue.put(_DONE, timeout=_POLL_SECONDS)
                break
            except queue.Full:
                continue
        self._thread.join()
        if exc is None:
            self._raise_error()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is not None or self._abandoned.is_set():
                continue
            try:
                self._consume_item(item)  # type: ignore[arg-type]
            except BaseException as exc:  # raised again in the producing thread
                self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error
