"""Stage 5, publish: the stems, their pictures, then the manifest appear in the stem folder.

Each group of files is renamed into place through the writer's
:class:`~bridge.atomic.Journal`, so a failure (or, after a kill, the next writer of
the folder) takes back exactly what this set put there and nothing else. Before the
manifest is written its claims are measured: ``stems_add_up`` says that the stem
files, read back, add up to the input (lossless, no dither, nothing clipped, the sum
checked sample by sample), not merely that they were meant to.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf

from bridge import atomic
from bridge.audio.quantize import pcm_bits
from bridge.audio.resample import converted_length
from bridge.audio.writer import refuse_existing, writing_failed
from bridge.effects.loudness import GainDecision, Loudness
from bridge.effects.plan import EffectsPlan
from bridge.manifest import (
    MANIFEST_NAME,
    InputEntry,
    Manifest,
    OutputEntry,
    RangeEntry,
    StemEntry,
    manifest_bytes,
    read_manifest,
)
from bridge.pictures import stem_pictures
from bridge.pipeline.analyse import Analysis, rate_blocks
from bridge.pipeline.prepare import PreparedInput
from bridge.pipeline.separate import Separated
from bridge.stems import StemPlan

if TYPE_CHECKING:
    from bridge.models.loaded import Model

log = logging.getLogger(__name__)

#: Float stems must null against the input to better than this (dBFS, peak).
FLOAT_NULL_DBFS = -90.0
#: What ``sum_error_dbfs`` says for stems that null exactly.
EXACT_DBFS = -200.0
_LOSSY = ("mp3", "ogg")


@dataclass(frozen=True)
class Provenance:
    """What the manifest says about where the stems came from.

    Attributes:
        job_id: The job.
        identity: What the result depends on (see ``JobSpec.identity``).
        sha256: The input file's hash.
        size_bytes: The input file's size when it was read.
        mtime_ns: Its modification time then.
        started: When the job started (``time.monotonic``).
        analysed: When the first pass ended.
    """

    job_id: str
    identity: str
    sha256: str
    size_bytes: int
    mtime_ns: int
    started: float
    analysed: float


def publish(
    folder: Path,
    *,
    tag: str,
    overwrite: bool,
    prepared: PreparedInput,
    analysis: Analysis,
    separated: Separated,
    model: Model,
    provenance: Provenance,
) -> Manifest:
    """Publish a separated set into its reserved ``folder`` and return its manifest.

    Raises:
        OutputError: A file is in the way (without ``overwrite``) or writing failed;
            what this set had published is taken back.
    """
    finals = {name: final for name, (_, final) in separated.files.items()}
    with _journal(folder, tag=tag, key=provenance.identity) as journal:
        if not overwrite:
            refuse_existing([*finals.values(), folder / MANIFEST_NAME])
        journal.publish(separated.files.values())
        committed = time.monotonic()
        add_up, error_dbfs = _check_sum(prepared, finals, separated.clipped)
        pictures = _publish_pictures(journal, finals, tag) if prepared.pictures else {}
        finished = time.monotonic()
        manifest = _manifest(
            prepared,
            analysis,
            separated,
            model,
            provenance,
            finals=finals,
            pictures=pictures,
            sums={"stems_add_up": add_up, "sum_error_dbfs": error_dbfs},
            timings={
                "analyse_seconds": provenance.analysed - provenance.started,
                "separate_seconds": committed - provenance.analysed,
                "pictures_seconds": finished - committed,
                "total_seconds": finished - provenance.started,
            },
        )
        journal.write(folder / MANIFEST_NAME, manifest_bytes(manifest.to_dict()))
    return manifest


def publish_copy(
    source: Path,
    folder: Path,
    *,
    tag: str,
    names: list[str],
    extension: str,
    job_id: str,
    input_path: Path,
) -> Path:
    """Publish into ``folder`` the stems of an earlier, identical job found in ``source``:
    hard links (or copies) of its stems and pictures, and a manifest naming this job.

    Returns:
        The new manifest's path.

    Raises:
        OutputError: The earlier result cannot be read, or writing failed.
    """
    manifest = read_manifest(source / MANIFEST_NAME)
    with _journal(folder, tag=tag, key=manifest.get("identity") or "") as journal:
        files = [f"{name}.{extension}" for name in names]
        journal.publish(
            (atomic.link_temp(source / f, folder / f, tag=tag), folder / f) for f in files
        )
        pairs: list[tuple[Path, Path]] = []
        for entry in manifest["stems"]:
            pictures = entry.get("pictures") if isinstance(entry.get("pictures"), dict) else {}
            kept = {}
            for kind, name in pictures.items():
                if isinstance(name, str) and Path(name).name == name and (source / name).is_file():
                    pairs.append(
                        (atomic.link_temp(source / name, folder / name, tag=tag), folder / name)
                    )
                    kept[kind] = name
            entry["pictures"] = kept
        journal.publish(pairs)
        manifest["job_id"] = job_id
        manifest["reused_from"] = str(source / MANIFEST_NAME)
        stat = input_path.stat()
        manifest["input"].update(
            path=str(input_path), size_bytes=stat.st_size, mtime_ns=stat.st_mtime_ns
        )
        journal.write(folder / MANIFEST_NAME, manifest_bytes(manifest))
    return folder / MANIFEST_NAME


@contextmanager
def _journal(folder: Path, *, tag: str, key: str) -> Iterator[atomic.Journal]:
    """The set's journal: closed once the set is whole; on any failure, what the set had
    put in place is taken back (a full disk is named as such)."""
    journal = atomic.Journal(folder, tag=tag, key=key)
    try:
        yield journal
    except OSError as exc:
        journal.undo()
        raise writing_failed(folder, exc) from exc
    except BaseException:
        journal.undo()
        raise
    journal.close()


def _publish_pictures(
    journal: atomic.Journal, finals: Mapping[str, Path], tag: str
) -> dict[str, dict[str, str]]:
    """Draw each stem's pictures from its published file and publish them; a picture that
    fails never fails the stems (see :mod:`bridge.pictures`)."""
    listed: dict[str, dict[str, str]] = {}
    pairs: list[tuple[Path, Path]] = []
    for name, images in stem_pictures(finals).items():
        pairs += [
            (atomic.write_temp(target, data, tag=tag), target) for target, data in images.values()
        ]
        listed[name] = {kind: target.name for kind, (target, _) in images.items()}
    journal.publish(pairs)
    return listed


def _check_sum(
    prepared: PreparedInput, finals: Mapping[str, Path], clipped: Mapping[str, int]
) -> tuple[bool, float | None]:
    """Whether the written stems add up to the input, and the peak error measured (dBFS).

    Checked only where it can hold: exact-sum on with every source in one stem, a
    lossless format, no dither and nothing clipped. The input is converted to the
    output rate exactly as the residual was computed against it.
    """
    fmt = prepared.output
    if not prepared.effects.expect_sum or prepared.dither or any(clipped.values()):
        return False, None
    if fmt.extension in _LOSSY:
        return False, None
    info, frames = prepared.info, prepared.frames
    length = converted_length(frames.length, info.sample_rate, fmt.sample_rate)
    peak = 0.0
    files = [sf.SoundFile(str(path)) for path in finals.values()]
    try:
        for mix in rate_blocks(info, frames, fmt.sample_rate, length):
            n = mix.shape[-1]
            total = np.zeros((n, info.channels), dtype=np.float64)
            for file in files:
                total += file.read(n, dtype="float64", always_2d=True)
            if n:
                peak = max(peak, float(np.max(np.abs(total - mix.T))))
    finally:
        for file in files:
            file.close()
    bits = pcm_bits(fmt.subtype)
    if bits is None:
        allowed = 10 ** (FLOAT_NULL_DBFS / 20)
    else:
        # Each stem is rounded to float32 (at most 2**-24 below full scale), then once to the
        # nearest step of its format (8-bit stems are written as 16-bit).
        allowed = len(files) * (0.5 / 2 ** (max(bits, 16) - 1) + 2**-24)
    error_dbfs = round(20 * math.log10(peak), 2) if peak > 0 else EXACT_DBFS
    return peak <= allowed, max(error_dbfs, EXACT_DBFS)


def _manifest(
    prepared: PreparedInput,
    analysis: Analysis,
    separated: Separated,
    model: Model,
    provenance: Provenance,
    *,
    finals: Mapping[str, Path],
    pictures: Mapping[str, dict[str, str]],
    sums: dict[str, Any],
    timings: dict[str, float],
) -> Manifest:
    info, frames, fmt, effects = prepared.info, prepared.frames, prepared.output, prepared.effects
    seconds = frames.length / info.sample_rate
    measured, gains = separated.measured, separated.gains
    lineup = model.settings.lineup
    return Manifest(
        job_id=provenance.job_id,
        identity=provenance.identity,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        input=InputEntry(
            path=str(info.path),
            sha256=provenance.sha256,
            format=info.format,
            subtype=info.subtype,
            sample_rate=info.sample_rate,
            channels=info.channels,
            frames=info.frames,
            size_bytes=provenance.size_bytes,
            mtime_ns=provenance.mtime_ns,
        ),
        range=RangeEntry(
            start_samples=frames.start,
            length_samples=frames.length,
            start_seconds=frames.start / info.sample_rate,
            length_seconds=seconds,
        ),
        model={
            "name": model.spec.name,
            "signatures": list(model.spec.signatures),
            "sources": list(model.sources),
            "samplerate": model.samplerate,
            # Which models gave each source, and how an ensemble combined them.
            **({"stems_from": lineup.describe()} if lineup.single is None else {}),
        },
        settings={
            **asdict(model.settings),
            "device": str(model.device),
            "batch_size": model.batch_size,
        },
        output=OutputEntry(
            format=fmt.extension,
            subtype=fmt.subtype,
            sample_rate=fmt.sample_rate,
            channels=fmt.channels,
            length_samples=separated.out_length,
            offset_samples=converted_length(frames.start, info.sample_rate, fmt.sample_rate),
            dither=prepared.dither,
        ),
        stems=[
            _stem_entry(
                plan,
                finals[plan.name],
                effects,
                measured[plan.name],
                gains.get(plan.name) if gains else None,
                length=separated.lengths[plan.name],
                body=separated.out_length,
                clipped=separated.clipped[plan.name],
                pictures=pictures.get(plan.name, {}),
            )
            for plan in prepared.stems
        ],
        effects={
            **effects.describe(),
            **sums,
            "mix_loudness_lufs": _rounded(
                analysis.mix_loudness.integrated_lufs if analysis.mix_loudness else None
            ),
        },
        timings={
            **{key: round(value, 3) for key, value in timings.items()},
            "realtime_factor": round(seconds / max(timings["total_seconds"], 1e-9), 3),
        },
    )


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
