"""The daemon: watched folders in, one warm worker, ordered start and shutdown.

Start: take the state folder's lock (one daemon per job store), queue again the
jobs a dead process left running, start the worker thread (or, for a studio with
a broker, the dispatcher that hands jobs to GPU workers), the watchers, then the
dashboard (when enabled).
Loop: supervise the watchers (restart dead observers, queue finished files) and
recover jobs of processes that died. Stop (SIGTERM, SIGINT; on Windows also
Ctrl-Break, closing the console, logging off, and a stop request file, which is how
a Task Scheduler service is stopped: :func:`stop_signals`, :func:`request_stop`):
stop the watchers first so no new work arrives, then the worker, whose running job
is cancelled at its next step and queued again, then release the lock. The
dashboard stops first of all.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.config import Config
from bridge.extras import require
from bridge.jobs.lock import DaemonLock
from bridge.jobs.status_file import repair_status_files
from bridge.jobs.store import JobStore
from bridge.jobs.worker import ModelCache, Worker
from bridge.owners import owner_alive, owner_id
from bridge.watch.watcher import FolderWatcher

if TYPE_CHECKING:
    from bridge.broker.channel import WorkerInfo
    from bridge.broker.url import BrokerUrl

log = logging.getLogger(__name__)

#: How often jobs left running by dead processes are looked for.
RECOVER_EVERY_SECONDS = 10.0
#: A file in the state folder asking the daemon serving it to stop as on SIGTERM (Windows
#: has no signal another process can send a console-less daemon).
STOP_NAME = "daemon.stop"
#: The signals that stop the daemon gracefully, where the platform has them (SIGBREAK:
#: Ctrl-Break on Windows).
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGBREAK")
#: How long Windows waits for a console handler on close, log-off or shutdown before it
#: ends the process (5 s), less a margin.
CONSOLE_CLOSE_SECONDS = 4.5


class Daemon:
    """Watches the configured folders and runs their jobs, and ``submit``'s, on one model.

    Args:
        config: Rules and daemon settings.
        models: The warm model (injectable: tests point it at test weights).

    Raises:
        MissingExtra: The dashboard or a broker is asked for and the extra it needs is
            not installed (checked before the job store is opened).
    """

    def __init__(self, config: Config, *, models: ModelCache | None = None) -> None:
        if config.dashboard.enabled:
            require(
                "dashboard",
                needed_by="the web dashboard",
                otherwise="or turn it off (--no-dashboard, or [dashboard] enabled = false)",
            )
        if config.daemon.broker is not None:
            require("studio", needed_by="a studio broker (--broker, [daemon] broker)")
        self.config = config
        self.store = JobStore(config.daemon.state_dir)
        self._models = models or ModelCache()
        self._owner = owner_id()

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; returns after an ordered shutdown.

        Raises:
            JobError: Another daemon serves the same state folder.
        """
        with DaemonLock(self.config.daemon.state_dir):
            # A request left by a stop that came while no daemon ran is not for this one.
            (self.config.daemon.state_dir / STOP_NAME).unlink(missing_ok=True)
            recovered = self.store.recover(owner_alive)
            if recovered:
                log.warning("queued again %d job(s) left running: %s", len(recovered), recovered)
            repaired = repair_status_files(self.store.list(limit=1000), now=time.time())
            if repaired:
                log.warning("rewrote %d status file(s) a stopped process left behind", repaired)
            watcher = FolderWatcher(self.config, self.store)
            dashboard = self._dashboard(watcher)  # refuses a bad binding before work starts
            worker_stop = threading.Event()
            thread = threading.Thread(target=self._work_loop(), args=(worker_stop,), name="worker")
            thread.start()
            try:
                with dashboard:
                    log.info(
                        "StemBridge daemon ready: %d watched folder(s), jobs in %s",
                        len(self.config.rules),
                        self.store.path,
                    )
                    self._supervise(watcher, stop)
            finally:
                log.info("stopping: watchers, then the worker")
                watcher.stop()
                worker_stop.set()
                thread.join()
                (self.config.daemon.state_dir / STOP_NAME).unlink(missing_ok=True)
                log.info("stopped")

    def _supervise(self, watcher: FolderWatcher, stop: threading.Event) -> None:
        next_recover = time.monotonic() + RECOVER_EVERY_SECONDS
        stop_file = self.config.daemon.state_dir / STOP_NAME
        while not stop.is_set():
            if stop_file.exists():
                log.info("stop requested through %s", stop_file)
                stop.set()
                break
            try:
                watcher.supervise()
                if time.monotonic() >= next_recover:
                    self.store.recover(owner_alive)
                    next_recover = time.monotonic() + RECOVER_EVERY_SECONDS
            except Exception:  # the daemon outlives any one failure; it is logged
                log.exception("watching failed this round; trying again")
            stop.wait(self.config.daemon.poll_interval_seconds)

    def _dashboard(self, watcher: FolderWatcher) -> AbstractContextManager[object]:
        """The web dashboard serving this daemon's store, folders and workers, if enabled."""
        settings = self.config.dashboard
        if not settings.enabled:
            return nullcontext()
        from bridge.dashboard.intake import JobDefaults
        from bridge.dashboard.server import dashboard_server

        broker = self.config.daemon.broker
        config = self.config
        return dashboard_server(
            settings,
            state_dir=config.daemon.state_dir,
            store=self.store,
            folders=watcher.health,
            workers=None if broker is None else _live_workers(broker),
            defaults=JobDefaults(
                separation=config.separation, output=config.output, effects=config.effects
            ),
        )

    def _work_loop(self) -> Callable[[threading.Event], None]:
        """Jobs run here on the warm model, or go to the studio's workers."""
        broker = self.config.daemon.broker
        if broker is not None:
            from bridge.broker.dispatcher import Dispatcher

            log.info("jobs go to the studio workers through %s", broker.redacted)
            return Dispatcher(self.store, url=broker).run
        from bridge.models.runner import keep_freed_memory_for

        # Before the worker thread starts (see its docstring), and only for CPU work.
        keep_freed_memory_for(self.config.separation.device)
        return Worker(self.store, models=self._models, owner=self._owner).run


def request_stop(state_dir: Path) -> None:
    """Ask the daemon serving ``state_dir`` to stop as on SIGTERM: its running job is
    queued again. It sees the request within its poll interval."""
    import os

    # Only its existence counts, so it is made in place: nothing temporary to leave.
    os.close(os.open(state_dir / STOP_NAME, os.O_WRONLY | os.O_CREAT, 0o600))


@contextlib.contextmanager
def stop_signals(
    stop: threading.Event, *, signals: Any = signal, platform: str = sys.platform
) -> Iterator[None]:
    """Set ``stop`` on the platform's graceful-stop signals while the block runs.

    SIGTERM and SIGINT everywhere, SIGBREAK (Ctrl-Break) on Windows; on Windows also
    a console handler for closing the console, logging off and shutting down, which
    waits (as long as Windows allows) for the block to end so the job is queued again.
    Handlers are put back afterwards.

    Args:
        stop: Set when a stop is asked for.
        signals: The ``signal`` module (tests pass a stand-in).
        platform: ``sys.platform``.
    """

    def handler(signum: int, frame: object) -> None:
        stop.set()

    installed = [getattr(signals, name) for name in STOP_SIGNALS if hasattr(signals, name)]
    previous = {number: signals.signal(number, handler) for number in installed}
    finished = threading.Event()
    console = _console_handler(stop, finished) if platform == "win32" else nullcontext()
    try:
        with console:
            yield
    finally:
        finished.set()
        for number, old in previous.items():
            signals.signal(number, old)


@contextlib.contextmanager
def _console_handler(stop: threading.Event, finished: threading.Event) -> Iterator[None]:
    """Windows: close, log-off and shutdown events (Ctrl-C and Ctrl-Break come as signals)."""
    if sys.platform != "win32":  # for mypy: ctypes.WinDLL exists only there
        yield
        return
    import ctypes
    from ctypes import wintypes

    close_events = {2, 5, 6}  # CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT

    @ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)
    def on_event(event: int) -> bool:
        if event not in close_events:
            return False  # the C runtime turns Ctrl-C and Ctrl-Break into signals
        stop.set()
        finished.wait(CONSOLE_CLOSE_SECONDS)  # Windows ends the process when this returns
        return True

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    if not kernel32.SetConsoleCtrlHandler(on_event, True):
        log.debug("no console handler: error %d", ctypes.get_last_error())
    try:
        yield
    finally:
        kernel32.SetConsoleCtrlHandler(on_event, False)


def _live_workers(url: BrokerUrl) -> Callable[[], Sequence[WorkerInfo]]:
    """The studio's live workers, read from the broker's registry on each call."""
    from redis.exceptions import RedisError

    from bridge.broker.channel import live_workers
    from bridge.broker.dispatcher import connect
    from bridge.errors import BrokerError

    redis = connect(url)  # connects on first use, and again after a failure

    def workers() -> Sequence[WorkerInfo]:
        try:
            return live_workers(redis)
        except RedisError as exc:
            raise BrokerError(
                f"the broker {url.redacted} cannot be reached ({exc}); check that Redis runs"
            ) from exc

    return workers
