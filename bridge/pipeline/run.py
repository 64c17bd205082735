"""One job from input file to published stems: the entry point every front end calls.

``stembridge separate``, the daemon's worker, ``submit --wait``, studio workers and
``audacity separate`` all run a job through :func:`run_job`, in this order:

1. **prepare** the input (:mod:`~bridge.pipeline.prepare`): fast checks, before any
   folder is touched or model loaded;
2. hash it: the job's *identity* is the audio's content plus every setting that
   shapes the result;
3. reserve the stem folder (:mod:`~bridge.pipeline.folders`): one writer per folder;
   a folder that already holds this identity's stems means the job is done, and an
   identical earlier job elsewhere is reused (linked) instead of separated again;
4. **analyse** (:mod:`~bridge.pipeline.analyse`), **separate** with **post-process**
   behind it (:mod:`~bridge.pipeline.separate`, :mod:`~bridge.pipeline.postprocess`),
   and **publish** (:mod:`~bridge.pipeline.publish`): stems, pictures, manifest;
5. release the folder. A failure or cancellation at any point removes what this run
   wrote, and only that.

A spec with ``balance`` (the dashboard mixer's balance of a finished set) is rendered
by :mod:`~bridge.pipeline.balance` instead, into a folder reserved the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bridge.audio.writer import StemWriter
from bridge.effects.plan import plan_effects
from bridge.effects.plugin_host import PluginLoader, load_with_pedalboard
from bridge.manifest import MANIFEST_NAME
from bridge.models.groups import channel_groups
from bridge.pipeline.analyse import analyse, file_sha256
from bridge.pipeline.balance import render_balance
from bridge.pipeline.folders import Reservation, Superseded, Writer, adopt, choose, holds_result
from bridge.pipeline.prepare import prepare
from bridge.pipeline.progress import OnProgress, Progress
from bridge.pipeline.publish import Provenance, publish, publish_copy
from bridge.pipeline.separate import separate
from bridge.pipeline.spec import JobSpec
from bridge.settings import SeparationSettings

if TYPE_CHECKING:
    from bridge.models.loaded import Model

log = logging.getLogger(__name__)

ModelFor = Callable[[SeparationSettings], "Model"]


class Results(Protocol):
    """Where a job's identity and folder are recorded and earlier results looked up: the
    job store, or (for a run outside any store) :class:`NoResults`."""

    def set_identity(self, job_id: str, identity: str) -> None:
        """Record what ``job_id``'s result depends on."""

    def set_folder(self, job_id: str, folder: str) -> None:
        """Record the stem folder ``job_id`` reserved."""

    def find_done(self, identity: str, *, exclude: str) -> str | None:
        """The manifest of a finished job with that identity, other than ``exclude``."""


class NoResults:
    """Results of a run outside any job store (``separate``, ``audacity separate``): a
    folder that holds the same result is still found through its manifest."""

    def set_identity(self, job_id: str, identity: str) -> None:
        """Nothing to record."""

    def set_folder(self, job_id: str, folder: str) -> None:
        """Nothing to record."""

    def find_done(self, identity: str, *, exclude: str) -> str | None:
        """No earlier jobs are known."""
        return None


@dataclass(frozen=True)
class Result:
    """What a finished job produced.

    Attributes:
        manifest: The manifest of its stems.
        folder: The stem folder (the requested one, or ``name (2)``...).
        reused_from: The manifest of the identical earlier job whose stems were linked.
        kept: The folder already held these very stems: nothing was written.
    """

    manifest: Path
    folder: Path
    reused_from: Path | None = None
    kept: bool = False


def run_job(
    job_id: str,
    spec: JobSpec,
    *,
    attempt: int = 1,
    results: Results,
    model_for: ModelFor,
    on_progress: OnProgress | None = None,
    cancel: threading.Event | None = None,
    plugin_loader: PluginLoader = load_with_pedalboard,
    reserved: Path | None = None,
    owner: str | None = None,
    still_current: Callable[[], bool] | None = None,
) -> Result:
    """Run job ``job_id`` (``spec``) to its result (see the module docstring for the order).

    Args:
        job_id: The job; with ``attempt`` it names this run's temporary files.
        spec: What to do.
        attempt: How often the job was started.
        results: Records identity and folder, finds earlier results.
        model_for: Loads (or hands back the warm) model for the job's settings.
        on_progress: Called with a :class:`Progress` as work advances.
        cancel: When set, the job stops at its next step; nothing is left behind.
        plugin_loader: Loads third-party plugins (in their child process).
        reserved: A folder already reserved for this job (a studio job, reserved by the
            daemon); ``None`` chooses and reserves ``spec.folder`` or a numbered one.
        owner: The process writing, for the reservation (default: this one).
        still_current: Asked before anything is published: ``False`` means another run
            of this job took over (a studio message delivered twice).

    Raises:
        StemBridgeError: The job cannot succeed (bad input, settings, output).
        JobCancelled: ``cancel`` was set, or another run took the job over
            (:class:`~bridge.pipeline.folders.Superseded`).
    """
    started = time.monotonic()
    report = on_progress or (lambda progress: None)
    if spec.balance is not None:  # a mix of finished stems, not a separation
        folder = render_balance(
            job_id,
            spec.balance,
            folder=Path(spec.folder),
            attempt=attempt,
            owner=owner,
            report=report,
            cancel=cancel,
        )
        return Result(folder / MANIFEST_NAME, folder)
    source = Path(spec.input)
    plans = spec.separation.stem_plans
    effects = plan_effects(spec.effects, stems=plans, model_sources=spec.separation.sources)
    prepared = prepare(
        source, stems=plans, output=spec.output, time_range=spec.time_range, effects=effects
    )
    stat = source.stat()
    digest = file_sha256(source, cancel)
    identity = spec.identity(digest, effects.preset.sha256)
    results.set_identity(job_id, identity)

    names, extension = prepared.names, prepared.output.extension
    writer = Writer(job_id, attempt, **({"owner": owner} if owner else {}))

    def holds(folder: Path) -> bool:
        return holds_result(folder, identity, names, extension)

    if reserved is not None:
        folder, reservation = reserved, adopt(reserved, writer, holds=holds)
    else:
        folder, reservation = choose(
            Path(spec.folder),
            writer,
            names=names,
            extension=extension,
            overwrite=spec.output.overwrite,
            holds=holds,
            cancel=cancel,
        )
    results.set_folder(job_id, str(folder))
    if reservation is None:
        log.info("job %s: %s already holds these stems", job_id, folder)
        report(Progress("done", 1, 1, 1.0))
        return Result(folder / MANIFEST_NAME, folder, kept=True)

    def check_current() -> None:
        reservation.check_current()
        if still_current is not None and not still_current():
            raise Superseded(f"job {job_id}: another run of this job took it over")

    def progress(update: Progress) -> None:
        reservation.refresh()
        report(update)

    try:
        earlier = results.find_done(identity, exclude=job_id)
        if earlier is not None and Path(earlier).parent != folder:
            reused = _reuse(
                Path(earlier),
                reservation,
                spec,
                identity=identity,
                names=names,
                extension=extension,
                check_current=check_current,
            )
            if reused is not None:
                reservation.release()
                report(Progress("done", 1, 1, 1.0))
                return reused
        model = model_for(spec.separation)
        analysis = analyse(
            prepared.info,
            prepared.frames,
            rate=model.samplerate,
            groups=channel_groups(prepared.info.channels, model.audio_channels),
            width=model.audio_channels,
            report=progress,
            cancel=cancel,
            meter=effects.loudness is not None and effects.loudness.match_mix,
        )
        analysed = time.monotonic()
        with StemWriter(
            folder,
            names,
            prepared.output,
            tag=writer.tag,
            dither=prepared.dither,
            staged=effects.loudness is not None,
        ) as stems:
            separated = separate(
                prepared,
                analysis,
                model=model,
                writer=stems,
                report=progress,
                cancel=cancel,
                plugin_loader=plugin_loader,
            )
            check_current()
            manifest = publish(
                folder,
                tag=writer.tag,
                overwrite=spec.output.overwrite,
                prepared=prepared,
                analysis=analysis,
                separated=separated,
                model=model,
                provenance=Provenance(
                    job_id=job_id,
                    identity=identity,
                    sha256=digest,
                    size_bytes=stat.st_size,
                    mtime_ns=stat.st_mtime_ns,
                    started=started,
                    analysed=analysed,
                ),
            )
        reservation.release()
    except BaseException:
        reservation.abandon()
        raise
    report(Progress("done", 1, 1, 1.0))
    log.info(
        "job %s: separated %s into %s in %.1f s",
        job_id,
        source,
        folder,
        manifest.timings["total_seconds"],
    )
    return Result(folder / MANIFEST_NAME, folder)


def _reuse(
    earlier: Path,
    reservation: Reservation,
    spec: JobSpec,
    *,
    identity: str,
    names: list[str],
    extension: str,
    check_current: Callable[[], None],
) -> Result | None:
    """Link the stems of an identical earlier job into the reserved folder; ``None`` when
    that result is no longer whole (then the job separates)."""
    source = earlier.parent
    if not holds_result(source, identity, names, extension):
        return None
    check_current()
    manifest = publish_copy(
        source,
        reservation.folder,
        tag=reservation.writer.tag,
        names=names,
        extension=extension,
        job_id=reservation.writer.job,
        input_path=Path(spec.input),
    )
    log.info("job %s: reused the stems of %s", reservation.writer.job, source)
    return Result(manifest, reservation.folder, reused_from=earlier)
