"""Per-job status files that host scripts read with plain file I/O.

A REAPER or Ardour Lua script polls these in its UI loop instead of starting a
process. The file is replaced atomically on every change, so a reader sees a
whole old version or a whole new one. Format: UTF-8 text, one ``key=value`` per
line ended by LF, no quoting, values on one line (CR and LF in an error become spaces;
paths with line breaks are refused before a job is made, see :mod:`bridge.names`)::

    stembridge_status=1
    job=3f9a1c2b7d10
    state=running              queued | running | done | failed | cancelled
    progress=0.4213            0 to 1
    stage=separating           analysing | separating | writing | done | ...
    folder=/renders/Stems/chorus   where the stems are (or will be)
    manifest=                  the manifest's path once done
    stem.vocals=/renders/Stems/chorus/vocals.wav   one line per stem, once done
    error=                     one line a person can act on, once failed
    error_kind=                e.g. UnreadableAudio
    origin=<JSON>              what the host passed with --origin, as JSON

Lua: ``for line in io.lines(p) do local k, v = line:match("^([%w_]+)=(.*)$") end``.
Files live in ``<stem folder's parent>/.stembridge/<job id>.status``; ``submit``
prints the path.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Iterable
from pathlib import Path

from bridge import atomic
from bridge.errors import OutputError
from bridge.jobs.job import Job
from bridge.manifest import read_manifest
from bridge.permissions import private_folder

log = logging.getLogger(__name__)

STATUS_DIR = ".stembridge"
FORMAT_VERSION = 1


def status_path(folder: Path, job_id: str) -> Path:
    """The status file of job ``job_id`` whose stems go to ``folder``."""
    return folder.parent / STATUS_DIR / f"{job_id}.status"


def render_status(job: Job) -> str:
    """The file's text for ``job``."""
    folder, stems = job.folder, {}
    if job.state == "done" and job.manifest:
        manifest = Path(job.manifest)
        folder = str(manifest.parent)
        try:
            entries = read_manifest(manifest)["stems"]
        except OutputError as exc:
            log.info("job %s: no stems listed in its status file (%s)", job.id, exc)
            entries = []
        stems = {f"stem.{e['name']}": str(manifest.parent / e["path"]) for e in entries}
    fields = {
        "stembridge_status": str(FORMAT_VERSION),
        "job": job.id,
        "state": job.state,
        "progress": f"{job.progress:.4f}",
        "stage": job.stage,
        "folder": folder,
        "manifest": job.manifest or "",
        "error": job.error or "" if job.state != "done" else "",
        "error_kind": job.error_kind or "" if job.state != "done" else "",
        "origin": json.dumps(job.spec.origin, separators=(",", ":")),
        **stems,
    }
    return "".join(f"{key}={_one_line(value)}\n" for key, value in fields.items())


def write_status(job: Job) -> Path:
    """Replace the job's status file atomically; returns its path."""
    path = job.status_file
    if path.parent.is_symlink():
        # Following it would write outside the output root.
        raise OSError(errno.ELOOP, "the status folder is a symbolic link", str(path.parent))
    # User-only: a status file carries paths and whatever the host passed as origin.
    private_folder(path.parent)
    atomic.write_bytes(path, render_status(job).encode("utf-8"), mode=0o600)
    return path


def update_status(job: Job) -> bool:
    """:func:`write_status`, logging instead of raising: a folder that refuses the status
    file must not stop the job. Returns whether the file was written."""
    try:
        write_status(job)
    except OSError as exc:
        log.warning("job %s: cannot write %s (%s)", job.id, job.status_file, exc.strerror)
        return False
    return True


def repair_status_files(jobs: Iterable[Job], *, now: float | None = None) -> int:
    """After a crash: rewrite the status files that disagree with the store (a kill during
    the last write would leave a host waiting on "running" forever), and delete the
    temporary files of writers that are gone (see :func:`bridge.atomic.writer_gone`).
    Returns the number of files rewritten."""
    rewritten, folders = 0, set()
    for job in jobs:
        folders.add(job.status_file.parent)
        try:
            state = read_status(job.status_file).get("state")
        except (OSError, UnicodeDecodeError):
            state = None
        if state != job.state and update_status(job):
            rewritten += 1
    for folder in folders:
        try:
            atomic.remove_temporaries(
                folder, keep=lambda path, tag: not atomic.writer_gone(path, tag, now=now)
            )
        except OSError:
            continue
    return rewritten


def read_status(path: Path) -> dict[str, str]:
    """Parse a status file (what a host script does, for Python hosts and tests).

    Lines end at LF only (a CR before it is dropped), as the Lua readers split them:
    a value is every other byte up to there, so U+2028 or NEL in a value stays in it.
    Bytes that are not UTF-8 (a damaged file) become U+FFFD, as a Lua host reading
    bytes would show them, instead of failing the poll.
    """
    values = {}
    for line in path.read_bytes().decode("utf-8", errors="replace").split("\n"):
        key, sep, value = line.removesuffix("\r").partition("=")
        if sep:
            values[key] = value
    return values


def _one_line(value: str) -> str:
    """``value`` on one line: what a reader splits lines at (LF, and CR) becomes a space."""
    return value.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
