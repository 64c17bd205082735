"""Separate one file into stem files: the path every front end takes.

``separate_file`` runs, in order:

1. probe the input and settle the range and the output format (fast failures
   before any heavy work),
2. a first pass over the range: sha256 of the file, the exact length at the
   model's rate, and the normalisation statistics of each channel group,
3. a second pass: decode ahead on a thread, separate with the warm
   :class:`~bridge.separation.separator.Separator`, sum sources into stems,
   convert back to the output rate, and write behind on another thread into
   hidden files,
4. publish the stems and then ``manifest.json``.

Memory stays bounded by the block and segment sizes whatever the file's length.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bridge.audio.formats import OutputFormat, resolve_output_format
from bridge.audio.probe import AudioInfo, probe
from bridge.audio.reader import FrameRange, read_blocks, resolve_range
from bridge.audio.resample import StreamResampler, converted_length
from bridge.audio.writer import StemWriter, check_writable_folder, refuse_existing, stem_paths
from bridge.background import Drain, Prefetcher
from bridge.errors import JobCancelled
from bridge.manifest import (
    MANIFEST_NAME,
    InputEntry,
    Manifest,
    OutputEntry,
    RangeEntry,
    StemEntry,
)
from bridge.separation.groups import ChannelGroup, GroupStats, MixStats, channel_groups
from bridge.separation.stems import StemPlan, sources_needed
from bridge.settings import OutputSettings, TimeRange

if TYPE_CHECKING:
    from bridge.separation.separator import Separator

log = logging.getLogger(__name__)

#: Share of the overall progress given to the first (analysis) pass.
_ANALYSIS_SHARE = 0.05


@dataclass(frozen=True)
class Progress:
    """Where one file's separation stands.

    Attributes:
        stage: ``analysing``, ``separating`` or ``writing``.
        done: Units done in this stage (frames while analysing, segments while separating).
        total: Units in this stage.
        fraction: Overall progress of the file, 0 to 1.
    """

    stage: str
    done: int
    total: int
    fraction: float


OnProgress = Callable[[Progress], None]


@dataclass(frozen=True)
class PreparedInput:
    """An input checked and settled before any heavy work."""

    info: AudioInfo
    frames: FrameRange
    output: OutputFormat
    folder: Path
    stems: tuple[StemPlan, ...]
    overwrite: bool


def prepare(
    path: Path,
    *,
    folder: Path,
    stems: tuple[StemPlan, ...],
    output: OutputSettings,
    time_range: TimeRange,
) -> PreparedInput:
    """Check an input and its stem folder without decoding the audio.

    Args:
        path: The input file.
        folder: Where its stems go (``<output dir>/<input name>`` for ``separate``).
        stems: The stem files to write.
        output: Format overrides and whether existing stems may be replaced.
        time_range: The part of the input to separate.

    Raises:
        AudioError: The input is not usable or the range is outside it.
        SettingsError: The output format cannot hold this input.
        OutputError: The destination cannot be written, or stems exist and
            ``output.overwrite`` is off.
    """
    info = probe(path)
    frames = resolve_range(info, time_range)
    fmt = resolve_output_format(info, output)
    check_writable_folder(folder)
    if not output.overwrite:
        names = [plan.name for plan in stems]
        refuse_existing([*stem_paths(folder, names, fmt).values(), folder / MANIFEST_NAME])
    return PreparedInput(info, frames, fmt, folder, stems, output.overwrite)


def separate_file(
    prepared: PreparedInput,
    *,
    separator: Separator,
    job_id: str | None = None,
    sha256: str | None = None,
    identity: str | None = None,
    on_progress: OnProgress | None = None,
    cancel: threading.Event | None = None,
) -> Manifest:
    """Separate a prepared input into its stems and write the manifest.

    Args:
        prepared: From :func:`prepare`.
        separator: The loaded model.
        job_id: Recorded in the manifest.
        sha256: The input file's hash, if already known (it is computed otherwise).
        identity: What the result depends on (see ``JobSpec.identity``), recorded in
            the manifest so later jobs can reuse it.
        on_progress: Called with a :class:`Progress` as work advances.
        cancel: When set, stops at the next block or segment with :class:`JobCancelled`;
            nothing is left behind.

    Returns:
        The manifest that was written.

    Raises:
        AudioError: Decoding failed (damaged file, NaN samples, changed while read).
        OutputError: Writing failed.
        JobCancelled: ``cancel`` was set.
    """
    started = time.monotonic()
    info, frames, fmt = prepared.info, prepared.frames, prepared.output
    plans = prepared.stems
    report = on_progress or (lambda progress: None)
    groups = channel_groups(info.channels, separator.audio_channels)

    file_stat = info.path.stat()
    digest = sha256 or file_sha256(info.path, cancel)
    stats, model_length = _analyse(
        info, frames, separator.samplerate, groups, separator.audio_channels, report, cancel
    )
    analysed = time.monotonic()

    wanted = sources_needed(plans, separator.sources)
    rows = [[wanted.index(source) for source in plan.sources] for plan in plans]
    out_length = converted_length(frames.length, info.sample_rate, fmt.sample_rate)
    back = StreamResampler(
        in_rate=separator.samplerate,
        out_rate=fmt.sample_rate,
        channels=len(plans) * info.channels,
        out_frames=out_length,
    )

    def on_segments(done: int, total: int) -> None:
        share = _ANALYSIS_SHARE + (1 - _ANALYSIS_SHARE) * done / total
        report(Progress("separating", done, total, min(share, 0.99)))

    decoded = _model_rate_blocks(info, frames, separator.samplerate, model_length)
    names = [plan.name for plan in plans]
    with StemWriter(prepared.folder, names, fmt, overwrite=prepared.overwrite) as writer:

        def encode(item: tuple[np.ndarray, bool]) -> None:
            """Sum sources into stems, convert to the output rate, write (on its own thread)."""
            block, last = item
            stems = np.stack([block[row].sum(axis=0) for row in rows])
            flat = back.push(stems.reshape(len(plans) * info.channels, -1), last=last)
            writer.write(flat.reshape(len(plans), info.channels, -1))

        with (
            Prefetcher(decoded, name="decode") as blocks,
            Drain(encode, name="encode") as encoder,
        ):
            for block in separator.separate(
                blocks,
                length=model_length,
                groups=groups,
                stats=stats,
                wanted=wanted,
                on_progress=on_segments,
                cancel=cancel,
            ):
                encoder.put((block, False))
            encoder.put((np.zeros((len(wanted), info.channels, 0), dtype=np.float32), True))
        report(Progress("writing", 0, 1, 0.99))
        paths = writer.commit()
    finished = time.monotonic()

    manifest = Manifest(
        job_id=job_id,
        identity=identity,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        input=InputEntry(
            path=str(info.path),
            sha256=digest,
            format=info.format,
            subtype=info.subtype,
            sample_rate=info.sample_rate,
            channels=info.channels,
            frames=info.frames,
            size_bytes=file_stat.st_size,
            mtime_ns=file_stat.st_mtime_ns,
        ),
        range=RangeEntry(
            start_samples=frames.start,
            length_samples=frames.length,
            start_seconds=frames.start / info.sample_rate,
            length_seconds=frames.length / info.sample_rate,
        ),
        model={
            "name": separator.spec.name,
            "signatures": list(separator.spec.signatures),
            "sources": list(separator.sources),
            "samplerate": separator.samplerate,
        },
        settings={
            **asdict(separator.settings),
            "device": str(separator.device),
            "batch_size": separator.batch_size,
        },
        output=OutputEntry(
            format=fmt.extension,
            subtype=fmt.subtype,
            sample_rate=fmt.sample_rate,
            channels=fmt.channels,
            length_samples=out_length,
            offset_samples=converted_length(frames.start, info.sample_rate, fmt.sample_rate),
        ),
        stems=[
            StemEntry(name=plan.name, path=paths[plan.name].name, sources=list(plan.sources))
            for plan in plans
        ],
        timings={
            "analyse_seconds": round(analysed - started, 3),
            "separate_seconds": round(finished - analysed, 3),
            "total_seconds": round(finished - started, 3),
            "realtime_factor": round(
                (frames.length / info.sample_rate) / max(finished - started, 1e-9), 3
            ),
        },
    )
    manifest.write(prepared.folder)
    report(Progress("done", 1, 1, 1.0))
    log.info("separated %s into %s in %.1f s", info.path, prepared.folder, finished - started)
    return manifest


def file_sha256(path: Path, cancel: threading.Event | None = None) -> str:
    """The SHA-256 of a file's bytes, read in chunks (checks ``cancel`` between them)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 22), b""):
            _check_cancel(cancel)
            digest.update(chunk)
    return digest.hexdigest()


def _model_rate_blocks(
    info: AudioInfo, frames: FrameRange, rate: int, model_length: int
) -> Iterator[np.ndarray]:
    """The range, decoded and converted to the model's rate, block by block."""
    resampler = StreamResampler(
        in_rate=info.sample_rate, out_rate=rate, channels=info.channels, out_frames=model_length
    )
    for block in read_blocks(info, frames):
        yield resampler.push(block)
    yield resampler.finish()


def _analyse(
    info: AudioInfo,
    frames: FrameRange,
    rate: int,
    groups: tuple[ChannelGroup, ...],
    width: int,
    report: OnProgress,
    cancel: threading.Event | None,
) -> tuple[tuple[MixStats, ...], int]:
    """First pass: normalisation statistics and exact length at the model's rate."""
    model_length = converted_length(frames.length, info.sample_rate, rate)
    stats = GroupStats(groups, width=width)
    done = 0
    for block in _model_rate_blocks(info, frames, rate, model_length):
        _check_cancel(cancel)
        stats.update(block, source=str(info.path))
        done += block.shape[-1]
        report(Progress("analysing", done, model_length, _ANALYSIS_SHARE * done / model_length))
    return stats.result(), model_length


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise JobCancelled("separation cancelled")
