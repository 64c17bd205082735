"""A job's stem folder: chosen and reserved before anything is written, with one writer.

Several writers may aim at one folder at once: the daemon's worker, studio workers on
other machines sharing it over a NAS, a ``separate`` run beside them. So before a
single stem is written, a job *reserves* its folder:

* the reservation is a file in the folder, :data:`RESERVATION_NAME`, created with
  ``O_EXCL`` (which holds on network shares where file locks may not), naming the
  writer: job, attempt, run and owner process;
* on one machine, a cross-platform file lock (``filelock``) in the folder's
  ``.stembridge`` companion guards it from reservation to manifest, so a live local
  writer is never taken for a dead one;
* a reservation is taken over only from this very job (an earlier attempt) or from a
  holder that is gone: a process of this machine that has ended, or a writer
  elsewhere that stopped refreshing it for :data:`STALE_SECONDS` (holders refresh it
  while they work);
* whoever takes over first takes back what dead writers left (half-published sets,
  through their journals, and their temporaries), never anything of a live one;
* a folder is free when it has no manifest and none of the job's stem files; one
  that already holds this job's result is used as it is; otherwise ``name (2)``,
  ``name (3)``... are tried, unless the job may overwrite, in which case it waits
  for the folder's writer to finish.

Studio jobs are reserved by the daemon before they are sent (:func:`choose`, then the
worker :func:`adopt`\\s the reservation), so workers on other machines never choose.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from bridge import atomic
from bridge.documents import parse_json
from bridge.errors import JobCancelled, OutputError
from bridge.manifest import MANIFEST_NAME, read_manifest
from bridge.owners import on_this_host, owner_alive, owner_id
from bridge.permissions import private_folder

log = logging.getLogger(__name__)

RESERVATION_NAME = f"{atomic.TEMP_PREFIX}writer{atomic.TEMP_SUFFIX}"
#: Where the folder locks live: beside the status files, in the stem folder's parent.
LOCK_DIR = ".stembridge"
#: A holder on another machine refreshes its reservation at least this often...
REFRESH_SECONDS = 60.0
#: ... and one untouched for this long is taken as abandoned.
STALE_SECONDS = 600.0
#: A reservation that cannot be read (its writer was killed between creating and filling
#: it, which takes microseconds) is taken as abandoned after this long.
UNREADABLE_SECONDS = 10.0
#: Numbered folders tried before giving up.
MAX_NUMBER = 999


class FolderBusy(OutputError):
    """The folder a job may overwrite is being written by another job (raised instead of
    waiting, for callers that must not block)."""


class Superseded(JobCancelled):
    """Another run of the job took its stem folder over (a redelivered studio job, or a
    holder that stopped refreshing): this run stops and keeps nothing."""


@dataclass(frozen=True)
class Writer:
    """Who writes a stem folder: one run of one attempt of one job.

    Attributes:
        job: The job id.
        attempt: The job's attempt (how often it was started).
        owner: The process (:func:`bridge.owners.owner_id`), or ``broker:...`` for a
            studio job the daemon reserved and a worker will adopt.
        run: Tells apart two runs of one attempt (a studio message delivered twice).
    """

    job: str
    attempt: int
    owner: str = field(default_factory=owner_id)
    run: str = field(default_factory=lambda: secrets.token_hex(2))

    @property
    def tag(self) -> str:
        """What this writer's temporary names and journal carry."""
        return f"{self.job}.{self.attempt}.{self.run}"

    def record(self) -> bytes:
        """The reservation file's content."""
        return json.dumps(
            {"job": self.job, "attempt": self.attempt, "tag": self.tag, "owner": self.owner}
        ).encode("utf-8")


@dataclass(frozen=True)
class Holder:
    """A reservation as found on disk (fields ``None`` when it cannot be read)."""

    job: str | None
    tag: str | None
    owner: str | None
    age_seconds: float

    def gone(self) -> bool:
        """Whether its writer has ended (see the module docstring)."""
        if self.owner is None:
            return self.age_seconds > UNREADABLE_SECONDS
        if on_this_host(self.owner):
            return not owner_alive(self.owner)
        return self.age_seconds > STALE_SECONDS


def read_holder(folder: Path) -> Holder | None:
    """The reservation of ``folder``, or ``None`` when it has none."""
    return read_reservation(folder / RESERVATION_NAME)


def read_reservation(path: Path) -> Holder | None:
    """A reservation file, or ``None`` when there is none at ``path``."""
    try:
        age = time.time() - path.lstat().st_mtime
        data = parse_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        data = None
    job, tag, owner = (
        (data.get(key) for key in ("job", "tag", "owner"))
        if isinstance(data, dict)
        else (None, None, None)
    )
    if not (isinstance(job, str) and isinstance(tag, str) and isinstance(owner, str)):
        return Holder(None, None, None, age)
    return Holder(job, tag, owner, age)


class Reservation:
    """A stem folder held by one writer until :meth:`release` or :meth:`abandon`.

    Args:
        folder: The stem folder.
        writer: Who holds it.
        lock: The local folder lock held with it (``None`` where none can be taken).
        created: Folders made for it, innermost last (removed again if left empty).
    """

    def __init__(
        self, folder: Path, writer: Writer, lock: _FolderLock | None, created: list[Path]
    ) -> None:
        self.folder = folder
        self.writer = writer
        self._lock = lock
        self._created = created
        self._refreshed = time.monotonic()

    @property
    def path(self) -> Path:
        """The reservation file."""
        return self.folder / RESERVATION_NAME

    def refresh(self) -> None:
        """Show other machines that the writer is alive (at most every minute)."""
        if time.monotonic() - self._refreshed < REFRESH_SECONDS:
            return
        self._refreshed = time.monotonic()
        try:
            os.utime(self.path)
        except OSError as exc:
            log.debug("cannot refresh %s (%s)", self.path, exc)

    def check_current(self) -> None:
        """Make sure the folder is still this writer's before anything is published.

        Raises:
            Superseded: Another run took it over.
        """
        holder = read_holder(self.folder)
        if holder is None or holder.tag != self.writer.tag:
            raise Superseded(
                f"{self.folder}: another run of job {holder.job if holder else '?'} took this "
                "stem folder over; this run stops and keeps nothing"
            )

    def clean(self) -> None:
        """Take back what dead writers left here: unfinished sets and temporaries."""
        identity = _manifest_identity(self.folder)
        tag = self.writer.tag
        for path in atomic.recover_journals(
            self.folder, is_whole=lambda key: key == identity, keep_tag=tag
        ):
            log.info("removed %s, part of a set an interrupted run did not finish", path)
        for path in atomic.remove_temporaries(
            self.folder, keep=lambda path, owner: owner == tag or path.name == RESERVATION_NAME
        ):
            log.info("removed %s, left by an interrupted run", path)

    def release(self) -> None:
        """The writer is done with the folder (its manifest is written, or it wrote nothing)."""
        try:
            if (holder := read_holder(self.folder)) is not None and holder.tag == self.writer.tag:
                self.path.unlink(missing_ok=True)
                atomic.fsync_dir(self.folder)
        finally:
            self.hand_over()

    def hand_over(self) -> None:
        """Keep the reservation for the writer that will adopt it, but drop the local
        lock (the daemon, once it reserved a studio job's folder; and every release)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def abandon(self) -> None:
        """The writer failed or stopped: remove its own temporaries, the reservation, and
        the folders made for it if they are empty."""
        tag = self.writer.tag
        try:
            atomic.remove_temporaries(self.folder, keep=lambda path, owner: owner != tag)
        except OSError as exc:
            log.warning("cannot clean %s after a failed job (%s)", self.folder, exc)
        self.release()
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:
                break


def choose(
    requested: Path,
    writer: Writer,
    *,
    names: Sequence[str],
    extension: str,
    overwrite: bool,
    holds: Callable[[Path], bool],
    cancel: threading.Event | None = None,
    poll_seconds: float | None = 0.5,
) -> tuple[Path, Reservation | None]:
    """Choose and reserve the stem folder of a job (see the module docstring).

    Args:
        requested: The folder asked for; ``requested (2)``... when it is taken.
        writer: Who will write it.
        names: The job's stem names.
        extension: The stems' file extension.
        overwrite: The job may replace the stems in ``requested`` (then it waits for
            the folder's writer instead of numbering).
        holds: Whether a folder already holds this job's result.
        cancel: Stops a wait for a busy folder.
        poll_seconds: How often a busy folder is looked at again; ``None`` raises
            :class:`FolderBusy` instead of waiting.

    Returns:
        The folder and its reservation; no reservation when the folder already holds
        the result (nothing to write).

    Raises:
        OutputError: The folder cannot be written, or every numbered one is taken.
        FolderBusy: ``overwrite`` and the folder is busy, with ``poll_seconds=None``.
        JobCancelled: ``cancel`` was set while waiting.
    """
    waiting_for: str | None = None
    number = 1
    while number <= MAX_NUMBER:
        candidate = (
            requested if number == 1 else requested.with_name(f"{requested.name} ({number})")
        )
        if candidate.is_symlink():  # writing through it could put stems outside the root
            number += 1
            continue
        reservation = _take(candidate, writer)
        if reservation is None:
            if not overwrite:
                number += 1
                continue
            if poll_seconds is None:
                raise FolderBusy(
                    f"{candidate}: another job is writing it; this job waits to replace its stems",
                    path=candidate,
                )
            if waiting_for != str(candidate):
                waiting_for = str(candidate)
                log.info(
                    "job %s: waiting for %s, which another job is writing", writer.job, candidate
                )
            if (cancel or threading.Event()).wait(poll_seconds):
                raise JobCancelled("cancelled while waiting for the stem folder")
            continue
        reservation.clean()
        if holds(candidate):
            reservation.release()
            return candidate, None
        if overwrite or _free(candidate, names, extension):
            return candidate, reservation
        reservation.release()
        number += 1
    raise OutputError(
        f"{requested}: it and {MAX_NUMBER - 1} numbered folders beside it hold other stems; "
        "choose another output folder",
        path=requested,
    )


def adopt(folder: Path, writer: Writer, *, holds: Callable[[Path], bool]) -> Reservation | None:
    """Take over the reservation the daemon made for this job (a studio worker).

    Returns:
        The reservation, or ``None`` when the folder already holds the result.

    Raises:
        OutputError: The folder is held by another job, or cannot be written.
    """
    reservation = _take(folder, writer)
    if reservation is None:
        holder = read_holder(folder)
        raise OutputError(
            f"{folder}: the stem folder reserved for job {writer.job} is held by job "
            f"{holder.job if holder else '?'}; retry the job to have another folder chosen",
            path=folder,
        )
    reservation.clean()
    if holds(folder):
        reservation.release()
        return None
    return reservation


def reserve_for(folder: Path, writer: Writer) -> None:
    """Reserve ``folder`` for ``writer`` and hand it on (the daemon, before sending a studio
    job: the worker that takes the job adopts the reservation)."""
    reservation = _take(folder, writer)
    if reservation is None:
        raise OutputError(f"{folder}: another job holds it", path=folder)
    reservation.hand_over()


def refresh(folder: Path) -> None:
    """Touch a reservation made with :func:`reserve_for` (the daemon, while its job waits
    for a worker)."""
    try:
        os.utime(folder / RESERVATION_NAME)
    except OSError as exc:
        log.debug("cannot refresh the reservation of %s (%s)", folder, exc)


def holds_result(folder: Path, identity: str, names: Sequence[str], extension: str) -> bool:
    """Whether ``folder``'s manifest records ``identity`` and every stem file is there."""
    return _manifest_identity(folder) == identity and all(
        (folder / f"{name}.{extension}").is_file() for name in names
    )


def _take(folder: Path, writer: Writer) -> Reservation | None:
    """Reserve ``folder`` for ``writer``, taking over an earlier attempt's or a dead
    writer's reservation; ``None`` when a live writer holds it."""
    missing = [path for path in (folder, *folder.parents) if not path.exists()]
    lock = _lock(folder)
    try:
        if lock is not None and not lock.acquire():
            holder = read_holder(folder)
            if holder is None or holder.job != writer.job:
                return None  # a live writer of another job on this machine
            # An earlier run of this very job (a studio message delivered again while the
            # first worker was only paused): it is superseded, and finds out before it
            # publishes anything.
            lock = None
    except OSError:
        lock = None  # a folder no lock can be made for: the reservation file still excludes
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if _create(folder / RESERVATION_NAME, writer.record()):
                return Reservation(folder, writer, lock, list(reversed(missing)))
            holder = read_holder(folder)
            if holder is None:
                continue  # released meanwhile
            if holder.job != writer.job and not holder.gone():
                break
            _take_over(folder, holder)
    except OSError as exc:
        if lock is not None:
            lock.release()
        raise OutputError(
            f"{folder}: cannot write stems here ({exc.strerror or exc}); choose another "
            "output folder with -o, or fix its permissions",
            path=folder,
        ) from exc
    if lock is not None:
        lock.release()
    return None


def _create(path: Path, record: bytes) -> bool:
    """Create the reservation file exclusively; ``False`` when it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, record)
        os.fsync(fd)
    finally:
        os.close(fd)
    atomic.fsync_dir(path.parent)
    return True


def _take_over(folder: Path, holder: Holder) -> None:
    """Remove ``holder``'s reservation, unless another writer replaced it meanwhile.

    Two writers may both find the same dead holder: renaming it away succeeds for one
    of them only, and a reservation that turns out not to be the one judged dead is
    put back.
    """
    path = folder / RESERVATION_NAME
    aside = atomic.temp_path_for(path.with_name("taken-over"))
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    moved = read_reservation(aside)
    if moved is not None and moved.tag != holder.tag:
        try:
            os.link(aside, path)
        except OSError:
            log.debug("%s was reserved again meanwhile", folder)
    else:
        log.info("taking over %s from %s", folder, holder.owner or "an unreadable reservation")
    aside.unlink(missing_ok=True)


class _FolderLock:
    """The local lock of one stem folder: a file in its parent's ``.stembridge``, locked
    with ``filelock`` and removed again on release, with the ``.stembridge`` folder if
    this lock made it (so a refused job leaves nothing behind)."""

    def __init__(self, folder: Path) -> None:
        self._companion = folder.parent / LOCK_DIR
        name = hashlib.sha256(folder.name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        self._made_companion = False
        self._lock = FileLock(self._companion / f"{name}.lock", mode=0o600)

    def acquire(self) -> bool:
        """Take the lock at once; ``False`` when a live local writer holds it."""
        if not self._companion.exists():
            self._made_companion = True
        private_folder(self._companion)  # beside the status files, user-only like them
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    def release(self) -> None:
        """Let go (removing the lock file: the reservation file is what excludes writers;
        a lock file recreated meanwhile only makes two local writers compare it again)."""
        self._lock.release()
        Path(self._lock.lock_file).unlink(missing_ok=True)
        if self._made_companion:
            with contextlib.suppress(OSError):  # status files live there now
                self._companion.rmdir()


def _lock(folder: Path) -> _FolderLock | None:
    """The local lock of ``folder`` (``None`` when its ``.stembridge`` companion is a link,
    which is never followed, or cannot be made)."""
    companion = folder.parent / LOCK_DIR
    if companion.is_symlink():
        return None
    return _FolderLock(folder)


def _free(folder: Path, names: Sequence[str], extension: str) -> bool:
    """No manifest and none of the job's stem files (a folder holds one job's result)."""
    return not (folder / MANIFEST_NAME).exists() and not any(
        (folder / f"{name}.{extension}").exists() for name in names
    )


def _manifest_identity(folder: Path) -> str | None:
    """The identity ``folder``'s manifest records (None without a readable manifest)."""
    try:
        identity: str | None = read_manifest(folder / MANIFEST_NAME).get("identity")
    except OutputError:
        return None
    return identity
