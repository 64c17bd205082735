"""Forward passes shared by the jobs that run at once on one copy of the networks.

A studio worker runs several jobs on threads over one loaded model. Each job's engine
asks for one forward pass at a time (``run_batch(member, batch)``, see
:mod:`bridge.models.engine`); :class:`SharedPasses` gathers the requests of the jobs
that are separating, concatenates those for the same bag member and segment shape along
the batch axis (up to ``max_segments``), runs them as one pass and hands each job its
own rows back, in order. Several short renders thus fill one GPU pass instead of each
taking a nearly empty one.

Waiting is bounded: a request waits for the other jobs only while some joined job has
no request pending yet, and never longer than ``wait_seconds`` after it could run; a job
alone, or one whose partners are all waiting already, runs at once. A job takes part
(:meth:`SharedPasses.join`) only while its model separates, from its first block to its
last (its decoding and encoding run on threads of their own meanwhile, so between two
passes it mostly adds up the last one), and a job analysing its input, writing its files
or finished makes nobody wait. Passes run one at a time (the networks, and a compiled core's
per-shape state, are not called from two threads at once); requests that arrive during
a pass make the next one. A pass that raises gives that exception to every job in it;
the next pass runs normally. A job's cancellation is its own: it stops between passes,
its partners carry on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from bridge.errors import SettingsError
from bridge.models.engine import RunBatch

log = logging.getLogger(__name__)

#: How long a request waits at most for another job's requests to join its pass: short
#: beside a GPU pass of a few segments (tens of milliseconds), negligible beside a CPU one.
DEFAULT_WAIT_SECONDS = 0.005


@dataclass(frozen=True)
class BatchingOptions:
    """How jobs share forward passes (``stembridge worker --cross-job-batch``).

    Attributes:
        max_segments: Most segments one pass carries, all jobs together (a job's own
            batch larger than this still runs, alone). 1: passes are not shared.
        wait_seconds: Longest a request waits for other jobs' requests.

    Raises:
        SettingsError: ``max_segments`` below 1 or a negative wait.
    """

    max_segments: int
    wait_seconds: float = DEFAULT_WAIT_SECONDS

    def __post_init__(self) -> None:
        if self.max_segments < 1:
            raise SettingsError(
                f"cross-job batch {self.max_segments} is not allowed; use 1 (no sharing) or "
                "more segments per forward pass",
                key="cross_job_batch",
                value=self.max_segments,
            )
        if self.wait_seconds < 0:
            raise SettingsError(
                f"cross-job wait {self.wait_seconds} s is not allowed; use 0 or more",
                key="cross_job_wait_seconds",
                value=self.wait_seconds,
            )


@dataclass(eq=False)
class _Request:
    job: object
    member: int
    batch: np.ndarray
    ready: float | None = None  # when it could first have run: no pass running, none older
    outcome: np.ndarray | BaseException | None = None
    key: tuple[object, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.member, self.batch.shape[1:], self.batch.dtype)


class SharedPasses:
    """One ``run_batch`` shared by the jobs separating at once (see the module docstring).

    Args:
        run_batch: Runs one member's forward pass (a
            :class:`~bridge.models.runner.TorchRunner`).
        options: Largest pass and longest wait.
        clock: Monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        run_batch: RunBatch,
        options: BatchingOptions,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run = run_batch
        self._options = options
        self._clock = clock
        self._changed = threading.Condition()
        self._pending: list[_Request] = []
        self._joined = 0
        self._running = False

    @contextmanager
    def join(self) -> Iterator[RunBatch]:
        """Take part for one separation: yields that job's ``run_batch``; leaving (at the
        end, on an error or a cancel) stops the others waiting for it."""
        job = object()
        with self._changed:
            self._joined += 1
        try:
            yield lambda member, batch: self._submit(job, member, batch)
        finally:
            with self._changed:
                self._joined -= 1
                self._changed.notify_all()

    def _submit(self, job: object, member: int, batch: np.ndarray) -> np.ndarray:
        request = _Request(job, member, batch)
        with self._changed:
            self._pending.append(request)
            self._changed.notify_all()
            while True:
                if request.outcome is not None:
                    return _outcome(request.outcome)
                if not self._running and self._pending[0] is request:
                    chosen, wait = self._gather(request)
                    if not wait:
                        break
                    self._changed.wait(wait)
                else:
                    self._changed.wait()
            for taken in chosen:
                self._pending.remove(taken)
            self._running = True
        self._pass(chosen)
        return _outcome(request.outcome)

    def _gather(self, head: _Request) -> tuple[list[_Request], float]:
        """The requests the next pass carries, and how long to wait for more first (0:
        run now). Called with the lock held; ``head`` is the oldest pending request."""
        limit = self._options.max_segments
        chosen = [head]
        segments = len(head.batch)
        full = segments >= limit
        for request in self._pending[1:]:
            if request.key != head.key:
                continue
            if segments + len(request.batch) > limit:
                full = True
                break
            chosen.append(request)
            segments += len(request.batch)
        asking = len({request.job for request in self._pending})
        now = self._clock()
        if head.ready is None:
            # Counted from here, not from its arrival: one that came during a pass still
            # gives the job of that pass its moment to ask again.
            head.ready = now
        left = head.ready + self._options.wait_seconds - now
        if full or asking >= self._joined or left <= 0:
            return chosen, 0.0
        return chosen, left

    def _pass(self, chosen: list[_Request]) -> None:
        """Run one pass outside the lock and hand every request its rows (or the error)."""
        started = self._clock()
        result: np.ndarray | None = None
        error: BaseException | None = None
        try:
            batch = (
                chosen[0].batch
                if len(chosen) == 1
                else np.concatenate([request.batch for request in chosen])
            )
            result = self._run(chosen[0].member, batch)
        except BaseException as exc:  # every job in the pass gets it, whatever it is
            error = exc
        with self._changed:
            first = 0
            for request in chosen:
                if result is None:
                    request.outcome = error
                else:
                    request.outcome = result[first : first + len(request.batch)]
                    first += len(request.batch)
            self._running = False
            self._changed.notify_all()
        log.debug(
            "forward pass of member %d: %d segments from %d jobs in %.3f s%s",
            chosen[0].member,
            sum(len(request.batch) for request in chosen),
            len({request.job for request in chosen}),
            self._clock() - started,
            "" if error is None else f", failed ({type(error).__name__})",
        )


def _outcome(outcome: np.ndarray | BaseException | None) -> np.ndarray:
    """A request's rows, or its pass's exception raised (the same one in every job)."""
    if isinstance(outcome, BaseException):
        raise outcome
    return cast(np.ndarray, outcome)  # _pass sets it before anyone reads it


class PassSharing:
    """The shared passes of one copy of a bag's networks on its device: one
    :class:`SharedPasses` per precision, so fp16 and fp32 jobs never share a pass.

    Args:
        options: How passes are shared.
    """

    def __init__(self, options: BatchingOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._by_precision: dict[str, SharedPasses] = {}

    def passes(self, precision: str, run_batch: RunBatch) -> SharedPasses:
        """The shared passes of ``precision``; ``run_batch`` runs them if it is the first."""
        with self._lock:
            if precision not in self._by_precision:
                self._by_precision[precision] = SharedPasses(run_batch, self.options)
            return self._by_precision[precision]
