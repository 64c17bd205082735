"""Run one job: settle its stem folder, reuse an identical earlier result, or separate.

The order is fixed so that nothing is lost or done twice:

1. remove temporary files a killed run left in the stem folder,
2. check the input (fast failures) and hash it: the job's identity is the audio's
   content plus every setting that shapes the result,
3. if the stem folder already holds this identity's stems, the job is done; if
   another folder does, its stems are linked or copied here (no second
   separation); if the folder holds other stems, a new ``name (2)`` folder is used
   unless the job may overwrite,
4. otherwise separate, writing stems and then the manifest atomically.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bridge import atomic
from bridge.audio.writer import check_writable_folder
from bridge.effects.plan import plan_effects
from bridge.effects.plugin_host import PluginLoader, load_with_pedalboard
from bridge.errors import OutputError, UnsupportedName
from bridge.manifest import MANIFEST_NAME, read_manifest, write_manifest
from bridge.models.catalog import get_spec
from bridge.pictures import copy_pictures
from bridge.separate import OnProgress, file_sha256, prepare, separate_file
from bridge.settings import SeparationSettings

if TYPE_CHECKING:
    from bridge.jobs.spec import JobSpec
    from bridge.jobs.store import Job
    from bridge.models.loaded import LoadedModel

log = logging.getLogger(__name__)


class Results(Protocol):
    """Where identities are recorded and earlier results looked up: the job store, or
    (on a studio worker) a stand-in that reports to the daemon."""

    def set_identity(self, job_id: str, identity: str) -> None:
        """Record what ``job_id``'s result depends on."""

    def find_done(self, identity: str, *, exclude: str) -> Job | None:
        """A finished job with that identity, other than ``exclude``."""


@dataclass(frozen=True)
class Result:
    """What a finished job produced."""

    manifest: Path
    reused_from: Path | None = None


def execute(
    job_id: str,
    spec: JobSpec,
    *,
    store: Results,
    separator_for: Callable[[SeparationSettings], LoadedModel],
    on_progress: OnProgress,
    cancel: threading.Event,
    plugin_loader: PluginLoader = load_with_pedalboard,
) -> Result:
    """Run job ``job_id`` (``spec``) to its result (see the module docstring for the order).

    Raises:
        StemBridgeError: The job cannot succeed (bad input, settings, output).
        JobCancelled: ``cancel`` was set.
    """
    check_one_line(spec.input)
    stems = spec.separation.stem_plans
    names = [plan.name for plan in stems]
    requested = Path(spec.folder)
    remove_stale_temps(requested)
    effects = plan_effects(
        spec.effects, stems=stems, model_sources=get_spec(spec.separation.model).sources
    )
    # Checked as if overwriting: which folder the stems really go to is settled below.
    prepared = prepare(
        Path(spec.input),
        folder=requested,
        stems=stems,
        output=dataclasses.replace(spec.output, overwrite=True),
        time_range=spec.time_range,
        effects=effects,
    )
    digest = file_sha256(prepared.info.path, cancel)
    identity = spec.identity(digest, effects.preset.sha256)
    store.set_identity(job_id, identity)
    extension = prepared.output.extension

    folder = choose_folder(requested, identity, names, extension, overwrite=spec.output.overwrite)
    if _holds(folder, identity, names, extension):
        log.info("job %s: %s already holds these stems", job_id, folder)
        return Result(folder / MANIFEST_NAME)
    earlier = store.find_done(identity, exclude=job_id)
    if earlier is not None and earlier.manifest:
        source = Path(earlier.manifest).parent
        if _holds(source, identity, names, extension):
            remove_stale_temps(folder)
            manifest = reuse(source, folder, names, extension, job_id=job_id, input_path=spec.input)
            log.info("job %s: reused the stems of job %s (%s)", job_id, earlier.id, source)
            return Result(manifest, reused_from=source / MANIFEST_NAME)

    if folder != requested:
        check_writable_folder(folder)
        remove_stale_temps(folder)
    separate_file(
        dataclasses.replace(prepared, folder=folder, overwrite=spec.output.overwrite),
        separator=separator_for(spec.separation),
        job_id=job_id,
        sha256=digest,
        identity=identity,
        on_progress=on_progress,
        cancel=cancel,
        plugin_loader=plugin_loader,
    )
    return Result(folder / MANIFEST_NAME)


def check_one_line(input_path: str) -> None:
    """Refuse paths that status files (one ``key=value`` per line) cannot carry.

    Raises:
        UnsupportedName: The path holds a line break or another control character.
    """
    if any(ord(char) < 32 or ord(char) == 127 for char in input_path):
        raise UnsupportedName(
            f"{input_path!r}: the path holds a line break or control character, which host "
            "scripts cannot read back from status files; rename the file without it",
            path=Path(input_path),
        )


def choose_folder(
    folder: Path, identity: str, names: list[str], extension: str, *, overwrite: bool
) -> Path:
    """The stem folder to use: ``folder``, or ``folder (2)``... when it holds other stems.

    A folder is free when it has neither a manifest nor any of the stem files; one
    that already holds this identity's stems is used as is. A symbolic link is never
    used: writing through it could put stems outside the output root.
    """
    candidate, number = folder, 1
    while True:
        if not candidate.is_symlink() and (
            overwrite
            or _holds(candidate, identity, names, extension)
            or _free(candidate, names, extension)
        ):
            return candidate
        number += 1
        candidate = folder.with_name(f"{folder.name} ({number})")


def reuse(
    source: Path, folder: Path, names: list[str], extension: str, *, job_id: str, input_path: str
) -> Path:
    """Link (or copy) the stems of ``source`` and their pictures into ``folder`` and write
    its manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(source / MANIFEST_NAME)
    files = [f"{name}.{extension}" for name in names]
    pictures = [name for entry in manifest["stems"] for name in entry.get("pictures", {}).values()]
    atomic.begin_set(folder, [*files, *pictures, MANIFEST_NAME], key=manifest.get("identity") or "")
    try:
        for stem in files:
            atomic.copy_file(source / stem, folder / stem, link=True)
        for entry in manifest["stems"]:
            entry["pictures"] = copy_pictures(source, folder, entry.get("pictures", {}))
        manifest["job_id"] = job_id
        manifest["reused_from"] = str(source / MANIFEST_NAME)
        stat = Path(input_path).stat()
        manifest["input"].update(
            path=input_path, size_bytes=stat.st_size, mtime_ns=stat.st_mtime_ns
        )
        path = write_manifest(folder, manifest)
    except BaseException:
        atomic.recover_set(folder, lambda _key: False)
        raise
    atomic.end_set(folder)
    return path


def remove_stale_temps(folder: Path) -> None:
    """Delete what an interrupted run left in ``folder``: temporary files, and the stems
    of a set that was being renamed into place when it was killed."""
    if folder.is_dir():
        for path in atomic.recover_set(folder, lambda key: _manifest_identity(folder) == key):
            log.info("removing %s, part of a set an interrupted run did not finish", path)
        for path in atomic.remove_temporaries(folder):
            log.info("removed %s, left by an interrupted run", path)


def _manifest_identity(folder: Path) -> str | None:
    """The identity ``folder``'s manifest records (None without a readable manifest)."""
    try:
        identity: str | None = read_manifest(folder / MANIFEST_NAME).get("identity")
    except OutputError:
        return None
    return identity


def _holds(folder: Path, identity: str, names: list[str], extension: str) -> bool:
    return _manifest_identity(folder) == identity and all(
        (folder / f"{name}.{extension}").is_file() for name in names
    )


def _free(folder: Path, names: list[str], extension: str) -> bool:
    return not (folder / MANIFEST_NAME).exists() and not any(
        (folder / f"{name}.{extension}").exists() for name in names
    )
