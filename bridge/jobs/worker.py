"""The worker: takes jobs from the store one at a time and runs them on a warm model.

Failures are sorted by what helps: bad input or settings fail the job at once with
the message; running out of memory retries with half the batch, then on the CPU;
anything unexpected is retried with backoff, then failed. A stop request (SIGTERM)
cancels the running job at its next step and puts it back in the queue, so it runs
again, whole, next time; nothing half-written is left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from bridge.effects.plugin_host import PluginLoader, load_with_pedalboard
from bridge.errors import JobCancelled, StemBridgeError
from bridge.jobs.job import FINAL, Job
from bridge.jobs.retry import RETRY_DELAYS_SECONDS, out_of_memory, smaller
from bridge.jobs.status_file import update_status
from bridge.jobs.store import JobStore
from bridge.models.batching import BatchingOptions
from bridge.models.catalog import ModelSpec
from bridge.models.chunked_model import ChunkedModel
from bridge.models.combined import CombinedModel, member_settings
from bridge.models.loaded import LoadedModel, Model, load_model
from bridge.models.weights import Download, Fetch
from bridge.pipeline.progress import Progress
from bridge.pipeline.run import run_job
from bridge.settings import SeparationSettings

log = logging.getLogger(__name__)


class ModelCache:
    """Keeps the models of the last job loaded; a job for other models or another device
    replaces them (an ensemble's or routed stems' models are loaded when first needed).

    Thread-safe: a studio worker's threads share one cache, so one copy of each model,
    and each job takes its models through a :meth:`session`, which keeps them loaded
    until the job ends whatever the other threads' jobs ask for.

    Args:
        folders: Weight folders to search (default: the standard search order).
        download: Injected Hugging Face downloader for demucs files (tests).
        fetch: Injected downloader for the other families' files (tests).
        offline: Never download.
        batching: Share forward passes between the jobs separating at once on one model
            (see :class:`~bridge.models.loaded.LoadedModel`); ``None``: no sharing.
    """

    def __init__(
        self,
        *,
        folders: Sequence[Path] | None = None,
        download: Download | None = None,
        fetch: Fetch | None = None,
        offline: bool | None = None,
        batching: BatchingOptions | None = None,
    ) -> None:
        self._folders = folders
        self._download = download
        self._fetch = fetch
        self._offline = offline
        self._batching = batching
        self._lock = threading.Lock()
        self._loaded: dict[str, LoadedModel | ChunkedModel] = {}
        self._loading: dict[str, threading.Event] = {}  # set when that load ends
        self._in_use: Counter[str] = Counter()

    def model(self, settings: SeparationSettings) -> Model:
        """A model for ``settings``, reusing the loaded networks when they fit."""
        lineup = settings.lineup
        with self._lock:
            keep = {spec.name for spec in lineup.models} | set(self._in_use)
            self._loaded = {name: m for name, m in self._loaded.items() if name in keep}
        if lineup.single is not None:
            return self._one(lineup.single.name, settings)

        def load(spec: ModelSpec) -> LoadedModel | ChunkedModel:
            return self._one(spec.name, member_settings(settings, spec))

        return CombinedModel(settings, load=load)

    @contextlib.contextmanager
    def session(self) -> Iterator[Callable[[SeparationSettings], Model]]:
        """One job's ``model_for``: the models it hands out stay loaded until the
        ``with`` block ends, while other threads' jobs load theirs."""
        names: list[str] = []

        def model_for(settings: SeparationSettings) -> Model:
            with self._lock:
                taken = [spec.name for spec in settings.lineup.models]
                self._in_use.update(taken)
                names.extend(taken)
            return self.model(settings)

        try:
            yield model_for
        finally:
            with self._lock:
                self._in_use.subtract(names)
                self._in_use = +self._in_use  # drop the names no job uses any more

    def _one(self, name: str, settings: SeparationSettings) -> LoadedModel | ChunkedModel:
        """The model ``name``, loaded outside the lock: a thread whose model is loaded
        never waits for another thread's load (or download); two threads wanting the same
        model load it once, the second waiting for the first's copy."""
        while True:
            with self._lock:
                loaded = self._loaded.get(name)
                if loaded is not None:
                    try:
                        return loaded.with_settings(settings)
                    except StemBridgeError:
                        del self._loaded[name]
                pending = self._loading.get(name)
                if pending is None:
                    ours = self._loading[name] = threading.Event()
                    break
            pending.wait()  # then look again: the load may have failed, or not fit
        try:
            model = load_model(
                settings,
                folders=self._folders,
                download=self._download,
                fetch=self._fetch,
                offline=self._offline,
                batching=self._batching,
            )
            with self._lock:
                self._loaded[name] = model
            return model
        finally:
            with self._lock:
                del self._loading[name]
            ours.set()


class Worker:
    """Runs queued jobs.

    Args:
        store: The job store.
        models: The warm model.
        owner: This process's owner id (see :func:`bridge.owners.owner_id`).
        poll_interval_seconds: How often an idle worker looks for new jobs.
        report_interval_seconds: Least time between two progress writes of a job.
        plugin_loader: Loads third-party effect plugins (in a child process per chain).
    """

    def __init__(
        self,
        store: JobStore,
        *,
        models: ModelCache,
        owner: str,
        poll_interval_seconds: float = 0.5,
        report_interval_seconds: float = 0.25,
        plugin_loader: PluginLoader = load_with_pedalboard,
    ) -> None:
        self._store = store
        self._plugin_loader = plugin_loader
        self._models = models
        self._owner = owner
        self._poll = poll_interval_seconds
        self._report = report_interval_seconds

    def run(self, stop: threading.Event) -> None:
        """Take and run jobs until ``stop`` is set; no single failure ends the loop."""
        while not stop.is_set():
            try:
                job = self._store.claim(self._owner)
                if job is None:
                    stop.wait(self._poll)
                    continue
                self.run_job(job, stop)
            except Exception:  # e.g. the store's disk went away: log, wait, go on
                log.exception("the worker hit an error; going on")
                stop.wait(self._poll)

    def run_job(self, job: Job, stop: threading.Event) -> Job:
        """Run one claimed job to its next state; returns the job as stored afterwards."""
        update_status(job)
        log.info("job %s: %s", job.id, job.spec.input)
        cancel = threading.Event()
        reporter = _Reporter(self._store, job, stop, cancel, self._report)
        try:
            result = run_job(
                job.id,
                job.spec,
                attempt=job.attempts,
                results=reporter,
                model_for=self._models.model,
                on_progress=reporter,
                cancel=cancel,
                plugin_loader=self._plugin_loader,
                owner=self._owner,
            )
        except JobCancelled:
            if reporter.cancel_requested:
                job = self._store.mark_cancelled(job.id)
                log.info("job %s: cancelled", job.id)
            else:
                job = self._store.requeue(job.id)
                log.info("job %s: stopped, queued again", job.id)
        except StemBridgeError as exc:
            job = self._store.fail(job.id, error=str(exc), kind=type(exc).__name__)
            log.info("job %s failed: %s", job.id, exc)
        except Exception as exc:  # anything else is unexpected: retried, then failed
            job = self._retry_or_fail(job, exc)
        else:
            job = self._store.finish(
                job.id,
                manifest=str(result.manifest),
                reused_from=str(result.reused_from) if result.reused_from else None,
            )
            log.info("job %s: done, %s", job.id, result.manifest)
        update_status(job)
        return job

    def run_to_end(self, job_id: str, stop: threading.Event) -> Job:
        """Run one job in this process until it ends, retries included (``submit --wait``
        without a daemon); a job another process runs meanwhile is waited for."""
        while True:
            job = self._store.get(job_id)
            if job.state in FINAL:
                return job
            claimed = self._store.claim(self._owner, job_id=job_id)
            if claimed is None:
                if stop.wait(self._poll):
                    return self._store.get(job_id)
                continue
            self.run_job(claimed, stop)

    def _retry_or_fail(self, job: Job, exc: Exception) -> Job:
        if out_of_memory(exc):
            less = smaller(job.spec)
            if less is not None:
                log.info("job %s: out of memory; retrying with %s", job.id, less.separation)
                return self._store.fail(
                    job.id,
                    error=f"out of memory ({exc}); retrying with less",
                    kind="OutOfMemory",
                    retry_in_seconds=1.0,
                    spec=less,
                )
        log.error("job %s: unexpected error", job.id, exc_info=exc)
        if job.attempts <= len(RETRY_DELAYS_SECONDS):
            delay = RETRY_DELAYS_SECONDS[job.attempts - 1]
            return self._store.fail(
                job.id,
                error=f"unexpected error ({type(exc).__name__}: {exc}); retrying in {delay:g} s",
                kind=type(exc).__name__,
                retry_in_seconds=delay,
            )
        return self._store.fail(
            job.id,
            error=f"failed {job.attempts} times, last with {type(exc).__name__}: {exc}; "
            "see the daemon's log and submit it again",
            kind=type(exc).__name__,
        )


class _Reporter:
    """Writes a job's progress, identity and folder to the store and its status file
    (progress at most every interval); the pipeline's :class:`~bridge.pipeline.run.Results`.

    Also turns a user's cancel request (seen in the store) or the worker's stop into
    the job's cancel event.
    """

    def __init__(
        self,
        store: JobStore,
        job: Job,
        stop: threading.Event,
        cancel: threading.Event,
        interval_seconds: float,
    ) -> None:
        self._store = store
        self._job = job
        self._stop = stop
        self._cancel = cancel
        self._interval = interval_seconds
        self._last = 0.0
        self._stage = ""
        self._status_written = True
        self.cancel_requested = False

    def __call__(self, progress: Progress) -> None:
        if self._stop.is_set():
            self._cancel.set()
        now = time.monotonic()
        if progress.stage == self._stage and now - self._last < self._interval:
            return
        self._last, self._stage = now, progress.stage
        if self._store.progress(self._job.id, progress.fraction, progress.stage):
            self.cancel_requested = True
            self._cancel.set()
        self._job = dataclasses.replace(self._job, progress=progress.fraction, stage=progress.stage)
        # Once refused, not tried again for this run: one warning, not one per step.
        self._status_written = self._status_written and update_status(self._job)

    def set_identity(self, job_id: str, identity: str) -> None:
        self._store.set_identity(job_id, identity)

    def set_folder(self, job_id: str, folder: str) -> None:
        self._store.set_folder(job_id, folder)
        self._job = dataclasses.replace(self._job, folder=folder)

    def find_done(self, identity: str, *, exclude: str) -> str | None:
        return self._store.find_done(identity, exclude=exclude)
