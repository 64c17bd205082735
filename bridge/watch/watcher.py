"""Watched folders: observers per rule, supervised, feeding finished files to the queue.

Each rule gets a watchdog observer: OS events where they exist (inotify on Linux,
which also reports close-after-write), or a polling observer (``polling = true``,
needed on SMB/NFS shares where the OS sees nothing). The watcher is supervised
from the daemon's loop: an observer that dies, or whose folder disappears (a
share unmounted), is stopped, logged, and started again once the folder is back,
with a scan for what arrived meanwhile.

Never taken: StemBridge's temporary files, anything in a ``.stembridge`` folder,
anything in a folder that holds a StemBridge manifest or is any job's stem folder
(so an output folder inside a watched folder never loops), files a rule's
patterns do not match, and symbolic links: on a shared folder a link could hand
the daemon a private file from elsewhere (or loop), and a DAW never renders one.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from bridge import atomic
from bridge.config import Config, Rule
from bridge.errors import OutputError
from bridge.jobs.status_file import STATUS_DIR
from bridge.jobs.store import JobStore
from bridge.manifest import MANIFEST_NAME, read_manifest
from bridge.pipeline.spec import PRIORITY_WATCHED, JobSpec
from bridge.watch.finished import FinishedFiles

log = logging.getLogger(__name__)

_NUMBERED = re.compile(r" \(\d+\)$")


@dataclass(frozen=True)
class FolderHealth:
    """How one watched folder's observer is doing (shown by the dashboard).

    Attributes:
        rule: The rule's name.
        folder: The watched folder.
        mode: ``events`` (OS notifications) or ``polling``.
        state: ``watching``, ``missing`` (the folder is gone) or ``stopped`` (the
            observer died and is restarted at the next supervision round).
        restarts: How often its observer died and was started again.
    """

    rule: str
    folder: str
    mode: str
    state: str
    restarts: int


@dataclass
class _Watch:
    rule: Rule
    observer: BaseObserver | None = None
    missing: bool = False
    restarts: int = 0


class FolderWatcher:
    """Turns finished files in the configured folders into queued jobs.

    Args:
        config: Rules and daemon settings.
        store: Where jobs are queued.
        make_observer: Builds an observer for a rule (injectable; default: OS events,
            or polling when the rule asks for it).
    """

    def __init__(
        self,
        config: Config,
        store: JobStore,
        *,
        make_observer: Callable[[Rule, float], BaseObserver] | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._make_observer = make_observer or _default_observer
        self._finished = FinishedFiles(stable_polls=config.daemon.stable_polls)
        self._watches = [_Watch(rule) for rule in config.rules]
        self._outputs: set[Path] = set()
        self._submitted: dict[Path, tuple[int, int]] = {}
        self._links_seen: set[Path] = set()

    def supervise(self) -> None:
        """(Re)start observers as needed, then queue the files that are finished."""
        self._outputs = {Path(folder) for folder in self._store.output_folders()}
        for watch in self._watches:
            self._supervise(watch)
        for path, stat in self._finished.tick():
            self._submit(path, stat)

    def health(self) -> list[FolderHealth]:
        """The state of every watched folder (safe to call from another thread)."""
        folders = []
        for watch in self._watches:
            observer = watch.observer
            if watch.missing:
                state = "missing"
            elif observer is not None and observer.is_alive():
                state = "watching"
            else:
                state = "stopped"
            folders.append(
                FolderHealth(
                    rule=watch.rule.name,
                    folder=str(watch.rule.folder),
                    mode="polling" if watch.rule.polling else "events",
                    state=state,
                    restarts=watch.restarts,
                )
            )
        return folders

    def stop(self) -> None:
        """Stop every observer and wait for their threads."""
        for watch in self._watches:
            self._stop_observer(watch)

    def _supervise(self, watch: _Watch) -> None:
        folder = watch.rule.folder
        if not folder.is_dir():
            if not watch.missing:
                log.warning("watched folder %s is gone; waiting for it to come back", folder)
                watch.missing = True
            self._stop_observer(watch)
            return
        if watch.observer is not None and watch.observer.is_alive():
            return
        if watch.observer is not None:
            log.warning("the observer of %s stopped; starting it again", folder)
            watch.restarts += 1
        elif watch.missing:
            log.warning("watched folder %s is back", folder)
        rescan = watch.missing or watch.observer is not None
        self._stop_observer(watch)
        watch.missing = False
        observer = self._make_observer(watch.rule, self._config.daemon.poll_interval_seconds)
        observer.schedule(_Handler(self, watch.rule), str(folder), recursive=watch.rule.recursive)
        observer.start()
        watch.observer = observer
        log.info("watching %s (%s)", folder, "polling" if watch.rule.polling else "events")
        if self._config.daemon.scan_existing or rescan:
            self._scan(watch.rule)

    def _stop_observer(self, watch: _Watch) -> None:
        if watch.observer is None:
            return
        try:
            watch.observer.stop()
            watch.observer.join(timeout=5)
        except Exception:  # a dead observer may fail to stop; it is replaced either way
            log.debug("stopping the observer of %s failed", watch.rule.folder, exc_info=True)
        watch.observer = None

    def _scan(self, rule: Rule) -> None:
        walker = rule.folder.rglob("*") if rule.recursive else rule.folder.glob("*")
        for path in walker:
            if path.is_file() and self.wanted(rule, path) and not _already_done(rule, path):
                self._finished.touch(path)

    def changed(self, rule: Rule, path: Path, *, closed: bool) -> None:
        """An observer saw ``path`` change (``closed``: closed after writing)."""
        if self.wanted(rule, path):
            self._finished.touch(path, closed=closed)

    def gone(self, path: Path) -> None:
        """An observer saw ``path`` deleted or moved away."""
        self._finished.forget(path)

    def wanted(self, rule: Rule, path: Path) -> bool:
        """Whether ``path`` is a file this rule takes (and not one of ours)."""
        if atomic.is_temporary(path) or not rule.matches(path):
            return False
        try:
            relative = path.relative_to(rule.folder)
        except ValueError:
            return False
        if not rule.recursive and len(relative.parts) != 1:
            return False
        if self._is_link(rule.folder, relative):
            return False
        if STATUS_DIR in relative.parts:
            return False
        folder = path.parent
        if (folder / MANIFEST_NAME).exists():
            return False
        # "name (2)" is where a job for "name" goes when "name" holds other stems.
        unnumbered = folder.with_name(_NUMBERED.sub("", folder.name))
        return not any(
            candidate in self._outputs for candidate in (folder, unnumbered, *folder.parents)
        )

    def _is_link(self, folder: Path, relative: Path) -> bool:
        """Whether the path, or a folder on the way to it, is a symbolic link (logged once)."""
        path = folder
        for part in relative.parts:
            path = path / part
            if path.is_symlink():
                if path not in self._links_seen:
                    self._links_seen.add(path)
                    log.warning("not taking %s: it is a symbolic link", path)
                return True
        return False

    def _submit(self, path: Path, stat: os.stat_result) -> None:
        version = (stat.st_size, stat.st_mtime_ns)
        if self._submitted.get(path) == version:
            return
        rule = next((w.rule for w in self._watches if self.wanted(w.rule, path)), None)
        if rule is None:
            return
        try:
            folder = rule.stem_folder(path)
        except OutputError as exc:
            self._submitted[path] = version
            log.warning("not taking %s: %s", path, exc)
            return
        spec = JobSpec(
            input=str(path),
            folder=str(folder),
            separation=rule.separation,
            output=rule.output_settings,
            effects=rule.effects,
            priority=PRIORITY_WATCHED,
            source=f"watch:{rule.name}",
        )
        key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{rule.name}"
        job, created = self._store.submit(spec, dedupe_key=key)
        self._submitted[path] = version
        if created:
            log.info("queued job %s for %s", job.id, path)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FolderWatcher, rule: Rule) -> None:
        self._watcher = watcher
        self._rule = rule

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if isinstance(event, FileMovedEvent):
            self._watcher.gone(_path(event.src_path))
            self._watcher.changed(self._rule, _path(event.dest_path), closed=True)
        elif isinstance(event, FileDeletedEvent):
            self._watcher.gone(_path(event.src_path))
        elif isinstance(event, FileClosedEvent):
            self._watcher.changed(self._rule, _path(event.src_path), closed=True)
        elif isinstance(event, FileCreatedEvent | FileModifiedEvent):
            self._watcher.changed(self._rule, _path(event.src_path), closed=False)


def _path(raw: str | bytes) -> Path:
    return Path(os.fsdecode(raw))


def _default_observer(rule: Rule, poll_interval_seconds: float) -> BaseObserver:
    if rule.polling:
        # lstat: a plain PollingObserver follows links to folders, and a link loop
        # (``renders/loop -> renders``) would keep it walking forever.
        return PollingObserverVFS(os.lstat, os.scandir, polling_interval=poll_interval_seconds)
    return Observer()


def _already_done(rule: Rule, path: Path) -> bool:
    """The rule's stem folder already has a manifest for this very file (same size and time)."""
    try:
        manifest = read_manifest(rule.stem_folder(path) / MANIFEST_NAME)
        stat = path.stat()
    except (OutputError, OSError):
        return False
    entry = manifest["input"]
    return (
        entry.get("path") == str(path)
        and entry.get("size_bytes") == stat.st_size
        and entry.get("mtime_ns") == stat.st_mtime_ns
    )
