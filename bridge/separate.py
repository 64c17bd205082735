"""Separate one file into stem files: the path every front end takes.

``separate_file`` runs, in order:

1. probe the input and settle the range and the output format (fast failures
   before any heavy work),
2. a first pass over the range: sha256 of the file, the exact length at the
   model's rate, and the normalisation statistics of each channel group,
3. a second pass: decode ahead on a thread, separate with the warm
   :class:`~bridge.models.loaded.LoadedModel`, convert the sources back to
   the output rate, and on another thread run the effects stage (exact-sum
   residual, stem sums, effects chains, meters; see :mod:`bridge.effects.stage`)
   and write into hidden files,
4. when stems are loudness-normalised, apply each stem's gain while converting
   the hidden float copies to the output format,
5. publish the stems, draw their pictures (:mod:`bridge.pictures`), then write
   ``manifest.json``.

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

from bridge import atomic
from bridge.audio.formats import OutputFormat, resolve_output_format
from bridge.audio.probe import AudioInfo, probe
from bridge.audio.quantize import wants_dither
from bridge.audio.reader import FrameRange, read_blocks, resolve_range
from bridge.audio.resample import StreamResampler, converted_length
from bridge.audio.writer import StemWriter, check_writable_folder, refuse_existing, stem_paths
from bridge.background import Drain, Prefetcher
from bridge.effects.loudness import GainDecision, Loudness, LoudnessMeter
from bridge.effects.plan import EffectsPlan
from bridge.effects.plugin_host import PluginLoader, load_with_pedalboard
from bridge.effects.stage import EffectsStage
from bridge.errors import JobCancelled
from bridge.manifest import (
    MANIFEST_NAME,
    InputEntry,
    Manifest,
    OutputEntry,
    RangeEntry,
    StemEntry,
)
from bridge.models.groups import ChannelGroup, GroupStats, MixStats, channel_groups
from bridge.pictures import draw_stem_pictures, picture_paths
from bridge.settings import OutputSettings, TimeRange
from bridge.stems import StemPlan, sources_needed

if TYPE_CHECKING:
    from bridge.models.loaded import LoadedModel

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
    effects: EffectsPlan
    dither: bool
    pictures: bool = True


def prepare(
    path: Path,
    *,
    folder: Path,
    stems: tuple[StemPlan, ...],
    output: OutputSettings,
    time_range: TimeRange,
    effects: EffectsPlan,
) -> PreparedInput:
    """Check an input and its stem folder without decoding the audio.

    Args:
        path: The input file.
        folder: Where its stems go (``<output dir>/<input name>`` for ``separate``).
        stems: The stem files to write.
        output: Format overrides and whether existing stems may be replaced.
        time_range: The part of the input to separate.
        effects: What happens to the stems after separation.

    Raises:
        AudioError: The input is not usable or the range is outside it.
        SettingsError: The output format cannot hold this input, or the preset names a
            frequency the output rate cannot hold.
        OutputError: The destination cannot be written, or stems exist and
            ``output.overwrite`` is off.
    """
    info = probe(path)
    frames = resolve_range(info, time_range)
    fmt = resolve_output_format(info, output)
    effects.preset.check_sample_rate(fmt.sample_rate)
    check_writable_folder(folder)
    if not output.overwrite:
        names = [plan.name for plan in stems]
        refuse_existing([*stem_paths(folder, names, fmt).values(), folder / MANIFEST_NAME])
    dither = wants_dither(
        input_subtype=info.subtype, output_subtype=fmt.subtype, mode=output.dither
    )
    return PreparedInput(
        info, frames, fmt, folder, stems, output.overwrite, effects, dither, output.pictures
    )


def separate_file(
    prepared: PreparedInput,
    *,
    separator: LoadedModel,
    job_id: str | None = None,
    sha256: str | None = None,
    identity: str | None = None,
    on_progress: OnProgress | None = None,
    cancel: threading.Event | None = None,
    plugin_loader: PluginLoader = load_with_pedalboard,
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
        plugin_loader: Loads third-party plugins (in their child process).

    Returns:
        The manifest that was written.

    Raises:
        AudioError: Decoding failed (damaged file, NaN samples, changed while read).
        EffectError: An effect or plugin failed (crashed, hung, refused a parameter).
        OutputError: Writing failed.
        JobCancelled: ``cancel`` was set.
    """
    started = time.monotonic()
    info, frames, fmt = prepared.info, prepared.frames, prepared.output
    plans, effects = prepared.stems, prepared.effects
    report = on_progress or (lambda progress: None)
    groups = channel_groups(info.channels, separator.audio_channels)
    match_mix = effects.loudness is not None and effects.loudness.match_mix

    file_stat = info.path.stat()
    digest = sha256 or file_sha256(info.path, cancel)
    stats, model_length, mix_loudness = _analyse(
        info,
        frames,
        separator.samplerate,
        groups,
        separator.audio_channels,
        report,
        cancel,
        meter=match_mix,
    )
    analysed = time.monotonic()

    # Exact-sum needs every source: the residual is the input minus all of them.
    wanted = (
        tuple(separator.sources)
        if effects.residual_source is not None
        else sources_needed(plans, separator.sources)
    )
    out_length = converted_length(frames.length, info.sample_rate, fmt.sample_rate)
    back = StreamResampler(
        in_rate=separator.samplerate,
        out_rate=fmt.sample_rate,
        channels=len(wanted) * info.channels,
        out_frames=out_length,
    )
    mix = (
        _rate_blocks(info, frames, fmt.sample_rate, out_length)
        if effects.residual_source is not None
        else None
    )

    def on_segments(done: int, total: int) -> None:
        share = _ANALYSIS_SHARE + (1 - _ANALYSIS_SHARE) * done / total
        report(Progress("separating", done, total, min(share, 0.99)))

    decoded = _rate_blocks(info, frames, separator.samplerate, model_length)
    names = [plan.name for plan in plans]
    try:
        with (
            StemWriter(
                prepared.folder,
                names,
                fmt,
                overwrite=prepared.overwrite,
                dither=prepared.dither,
                staged=effects.loudness is not None,
            ) as writer,
            EffectsStage(
                effects,
                stems=plans,
                wanted=wanted,
                channels=info.channels,
                sample_rate=fmt.sample_rate,
                mix=mix,
                plugin_loader=plugin_loader,
            ) as stage,
        ):

            def encode(item: tuple[np.ndarray, bool]) -> None:
                """Back to the output rate, effects stage, write (on its own thread)."""
                block, last = item
                flat = back.push(block.reshape(len(wanted) * info.channels, -1), last=last)
                for name, stem in stage.push(flat.reshape(len(wanted), info.channels, -1)).items():
                    writer.write(name, stem)
                if last:
                    rests, tails = stage.finish()
                    for name in names:
                        writer.write(name, rests[name])
                        writer.write(name, tails[name])

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
            measured = stage.loudness()
            gains = stage.gains(measured, mix_loudness)
            # Stems, then pictures, then the manifest appear one by one: the journal lets a
            # later run take back a set that a kill interrupted.
            finals = stem_paths(prepared.folder, names, fmt).values()
            atomic.begin_set(
                prepared.folder,
                [
                    *(stem.name for stem in finals),
                    *(picture.name for stem in finals for picture in picture_paths(stem).values()),
                    MANIFEST_NAME,
                ],
                key=identity or "",
            )
            paths = writer.commit(
                {name: gain.gain_db for name, gain in gains.items()} if gains else None
            )
            lengths = dict(writer.frames)
            clipped = writer.clipped_samples
        committed = time.monotonic()
        pictures = draw_stem_pictures(paths) if prepared.pictures else {}
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
                dither=prepared.dither,
            ),
            stems=[
                _stem_entry(
                    plan,
                    paths[plan.name],
                    effects,
                    measured[plan.name],
                    gains.get(plan.name) if gains else None,
                    length=lengths[plan.name],
                    body=out_length,
                    clipped=clipped[plan.name],
                    pictures=pictures.get(plan.name, {}),
                )
                for plan in plans
            ],
            effects={
                **effects.describe(),
                "mix_loudness_lufs": _rounded(
                    mix_loudness.integrated_lufs if mix_loudness else None
                ),
            },
            timings={
                "analyse_seconds": round(analysed - started, 3),
                "separate_seconds": round(committed - analysed, 3),
                "pictures_seconds": round(finished - committed, 3),
                "total_seconds": round(finished - started, 3),
                "realtime_factor": round(
                    (frames.length / info.sample_rate) / max(finished - started, 1e-9), 3
                ),
            },
        )
        manifest.write(prepared.folder)
        atomic.end_set(prepared.folder)
    except BaseException:
        # Files renamed into place before the failure must not pass for a result.
        atomic.recover_set(prepared.folder, lambda _key: False)
        raise
    report(Progress("done", 1, 1, 1.0))
    log.info("separated %s into %s in %.1f s", info.path, prepared.folder, finished - started)
    return manifest


def _stem_entry(
    plan: StemPlan,
    path: Path,
    effects: EffectsPlan,
    measured: Loudness,
    gain: GainDecision | None,
    *,
    length: int,
    body: int,
    clipped: int,
    pictures: dict[str, str],
) -> StemEntry:
    """A stem's manifest entry; loudness and peaks are those of the file as written."""
    gain_db = gain.gain_db if gain is not None else 0.0

    def shifted(value: float | None) -> float | None:
        return _rounded(value + gain_db if value is not None else None)

    return StemEntry(
        name=plan.name,
        path=path.name,
        sources=list(plan.sources),
        length_samples=length,
        tail_samples=length - body,
        effects=[spec.describe() for spec in effects.treatments[plan.name].chain],
        gain_db=_rounded(gain_db),
        limited_by_true_peak=gain.limited_by_true_peak if gain is not None else False,
        loudness_lufs=shifted(measured.integrated_lufs),
        true_peak_dbtp=shifted(measured.true_peak_dbtp),
        silent=measured.silent,
        clipped_samples=clipped,
        pictures=pictures,
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def file_sha256(path: Path, cancel: threading.Event | None = None) -> str:
    """The SHA-256 of a file's bytes, read in chunks (checks ``cancel`` between them)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 22), b""):
            _check_cancel(cancel)
            digest.update(chunk)
    return digest.hexdigest()


def _rate_blocks(
    info: AudioInfo, frames: FrameRange, rate: int, length: int
) -> Iterator[np.ndarray]:
    """The range, decoded and converted to ``rate`` (``length`` frames), block by block."""
    resampler = StreamResampler(
        in_rate=info.sample_rate, out_rate=rate, channels=info.channels, out_frames=length
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
    *,
    meter: bool,
) -> tuple[tuple[MixStats, ...], int, Loudness | None]:
    """First pass: normalisation statistics, exact length at the model's rate and,
    with ``meter``, the mix's loudness (for match-mix normalisation)."""
    model_length = converted_length(frames.length, info.sample_rate, rate)
    stats = GroupStats(groups, width=width)
    loudness = LoudnessMeter(sample_rate=rate, channels=info.channels) if meter else None
    done = 0
    for block in _rate_blocks(info, frames, rate, model_length):
        _check_cancel(cancel)
        stats.update(block, source=str(info.path))
        if loudness is not None:
            loudness.update(block)
        done += block.shape[-1]
        report(Progress("analysing", done, model_length, _ANALYSIS_SHARE * done / model_length))
    return stats.result(), model_length, loudness.result() if loudness is not None else None


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise JobCancelled("separation cancelled")
