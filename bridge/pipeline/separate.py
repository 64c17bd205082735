"""Stage 3, separate: the model over the whole range, streamed, with post-processing behind it.

Decoding runs ahead on one thread, the model separates on this one, and the
post-process stage (:mod:`bridge.pipeline.postprocess`) writes the stems on a third;
memory stays bounded by the block and segment sizes whatever the file's length.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.audio.writer import StemWriter
from bridge.background import Drain, Prefetcher
from bridge.effects.loudness import GainDecision, Loudness
from bridge.effects.plugin_host import PluginLoader
from bridge.pipeline.analyse import ANALYSIS_SHARE, Analysis, rate_blocks
from bridge.pipeline.postprocess import PostProcess
from bridge.pipeline.prepare import PreparedInput
from bridge.pipeline.progress import OnProgress, Progress
from bridge.stems import sources_needed

if TYPE_CHECKING:
    from bridge.models.loaded import Model


@dataclass(frozen=True)
class Separated:
    """Stems written and ready to publish.

    Attributes:
        files: Each stem's complete temporary file and its final path.
        lengths: Frames written per stem (the range plus any kept tail).
        out_length: Frames of the range at the output rate.
        clipped: Samples clipped per stem.
        measured: Loudness and peaks per stem, before any gain.
        gains: The normalisation gain per stem (``None`` without normalisation).
    """

    files: dict[str, tuple[Path, Path]]
    lengths: dict[str, int]
    out_length: int
    clipped: dict[str, int]
    measured: dict[str, Loudness]
    gains: dict[str, GainDecision] | None


def wanted_sources(prepared: PreparedInput, model: Model) -> tuple[str, ...]:
    """The model sources to compute: all of them for exact-sum (the residual is the input
    minus every source), otherwise only those the stems use."""
    if prepared.effects.residual_source is not None:
        return tuple(model.sources)
    return sources_needed(prepared.stems, model.sources)


def separate(
    prepared: PreparedInput,
    analysis: Analysis,
    *,
    model: Model,
    writer: StemWriter,
    report: OnProgress,
    cancel: threading.Event | None,
    plugin_loader: PluginLoader,
) -> Separated:
    """Separate the prepared range into ``writer``'s temporary files.

    Raises:
        AudioError: Decoding failed (damaged file, NaN samples, changed while read).
        EffectError: An effect or plugin failed.
        OutputError: Writing failed.
        JobCancelled: ``cancel`` was set.
    """
    info, frames = prepared.info, prepared.frames
    wanted = wanted_sources(prepared, model)

    def on_segments(done: int, total: int) -> None:
        share = ANALYSIS_SHARE + (1 - ANALYSIS_SHARE) * done / total
        report(Progress("separating", done, total, min(share, 0.99)))

    decoded = rate_blocks(info, frames, model.samplerate, analysis.model_length)
    with PostProcess(
        prepared,
        wanted=wanted,
        model_rate=model.samplerate,
        writer=writer,
        plugin_loader=plugin_loader,
    ) as post:
        with Prefetcher(decoded, name="decode") as blocks, Drain(post.push, name="encode") as out:
            for block in model.separate(
                blocks,
                length=analysis.model_length,
                groups=analysis.groups,
                stats=analysis.stats,
                wanted=wanted,
                on_progress=on_segments,
                cancel=cancel,
            ):
                out.put((block, False))
            out.put(post.last_block())
        report(Progress("writing", 0, 1, 0.99))
        measured = post.loudness()
        gains = post.gains(measured, analysis.mix_loudness)
    files = writer.finish({name: gain.gain_db for name, gain in gains.items()} if gains else None)
    return Separated(
        files=files,
        lengths=dict(writer.frames),
        out_length=post.out_length,
        clipped=writer.clipped_samples,
        measured=measured,
        gains=gains,
    )
