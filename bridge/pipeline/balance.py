"""A balance job: a finished stem set mixed with one gain per stem, as a new stem set.

The dashboard's mixer queues one (a :class:`~bridge.pipeline.spec.JobSpec` with
``balance``); :func:`~bridge.pipeline.run.run_job` hands it here instead of separating.
It writes, into a stem folder reserved as a separation's is
(:mod:`~bridge.pipeline.folders`):

* each stem of the set times its gain, in the set's own format, rate, channels, sample
  format and length (a stem left out of the gains keeps gain 1, a muted one is silent);
* ``mix.<ext>``: their sum, as long as the longest stem (what the mixer played).

Samples are read as float, scaled, summed and rounded once, by the writer the separations
use (:class:`~bridge.audio.writer.StemWriter`: clipping counted, no dither), in blocks,
so memory does not grow with the song. The files and then the manifest (the set's own,
with the new files, gains and clipping) are renamed into place through the folder's
journal; a failure or cancellation leaves nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from bridge import atomic
from bridge.audio.formats import OutputFormat
from bridge.audio.writer import StemWriter
from bridge.errors import JobError, UnreadableAudio
from bridge.manifest import MANIFEST_NAME, manifest_bytes, read_manifest
from bridge.pipeline.folders import Writer, choose
from bridge.pipeline.progress import OnProgress, Progress, check_cancel
from bridge.pipeline.spec import BalanceSettings

#: The name of the summed file.
MIX_NAME = "mix"
BLOCK_FRAMES = 1 << 16


def render_balance(
    job_id: str,
    balance: BalanceSettings,
    *,
    folder: Path,
    attempt: int,
    owner: str | None,
    report: OnProgress,
    cancel: threading.Event | None,
) -> Path:
    """Render ``balance`` into ``folder`` (or ``folder (2)``...); returns the folder used.

    Raises:
        OutputError: The manifest cannot be read, or the stems cannot be written.
        JobError: A gain names no stem of the set, or the set has a stem called ``mix``.
        UnreadableAudio: A stem file is missing or differs from the others in format.
        JobCancelled: ``cancel`` was set.
    """
    started = time.monotonic()
    manifest_path = Path(balance.manifest)
    source = read_manifest(manifest_path)
    stems: list[dict[str, Any]] = source["stems"]
    names = [stem["name"] for stem in stems]
    unknown = sorted(set(balance.gains) - set(names))
    if unknown:
        raise JobError(
            f"{manifest_path}: no stem {unknown[0]!r} to give a gain to; its stems are "
            f"{', '.join(names)}"
        )
    if MIX_NAME in names:
        raise JobError(f"{manifest_path}: a stem is called {MIX_NAME!r}, the balance's sum")
    paths = {stem["name"]: manifest_path.parent / stem["path"] for stem in stems}
    fmt = _shared_format(paths)
    gains = {name: balance.gains.get(name, 1.0) for name in names}
    identity = _identity(source, gains)
    writer = Writer(job_id, attempt, **({"owner": owner} if owner else {}))
    outputs = [*names, MIX_NAME]
    chosen, reservation = choose(
        folder,
        writer,
        names=outputs,
        extension=fmt.extension,
        overwrite=False,
        holds=lambda candidate: False,
        cancel=cancel,
    )
    if reservation is None:  # holds() is never true: every render writes anew
        raise JobError(f"{chosen}: the folder could not be reserved")
    try:
        with StemWriter(chosen, outputs, fmt, tag=writer.tag) as stems_out:
            lengths = _mix(paths, gains, stems_out, report=report, cancel=cancel)
            files = stems_out.finish()
            clipped = stems_out.clipped_samples
            reservation.check_current()
            journal = atomic.Journal(chosen, tag=writer.tag, key=identity)
            try:
                journal.publish(files.values())
                entry = {
                    **source,
                    "job_id": job_id,
                    "identity": identity,
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                    "reused_from": None,
                    "stems": [
                        *(_gained(stem, gains[stem["name"]], files, clipped) for stem in stems),
                        {
                            "name": MIX_NAME,
                            "path": files[MIX_NAME][1].name,
                            "sources": sorted({s for stem in stems for s in _sources(stem)}),
                            "length_samples": max(lengths.values()),
                            "clipped_samples": clipped[MIX_NAME],
                            "pictures": {},
                        },
                    ],
                    "balance": {"from": str(manifest_path), "gains": gains},
                    "timings": {"total_seconds": round(time.monotonic() - started, 3)},
                }
                journal.write(chosen / MANIFEST_NAME, manifest_bytes(entry))
            except BaseException:
                journal.undo()
                raise
            journal.close()
        reservation.release()
    except BaseException:
        reservation.abandon()
        raise
    report(Progress("done", 1, 1, 1.0))
    return chosen


def _shared_format(paths: dict[str, Path]) -> OutputFormat:
    """The stems' common format, which the new set keeps."""
    formats = {}
    for name, path in paths.items():
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise UnreadableAudio(
                f"{path}: the stem {name!r} cannot be read ({exc}); separate the song again",
                path=path,
            ) from exc
        formats[name] = OutputFormat(
            extension=path.suffix.lstrip(".").lower(),
            container=info.format,
            subtype=info.subtype,
            sample_rate=int(info.samplerate),
            channels=int(info.channels),
        )
    first = next(iter(formats.values()))
    for name, fmt in formats.items():
        if fmt != first:
            raise UnreadableAudio(
                f"{paths[name]}: the stem {name!r} is {fmt.container} {fmt.subtype} at "
                f"{fmt.sample_rate} Hz, {fmt.channels} channels; the others are "
                f"{first.container} {first.subtype} at {first.sample_rate} Hz, "
                f"{first.channels} channels; separate the song again",
                path=paths[name],
            )
    return first


def _mix(
    paths: dict[str, Path],
    gains: dict[str, float],
    out: StemWriter,
    *,
    report: OnProgress,
    cancel: threading.Event | None,
) -> dict[str, int]:
    """Write each stem times its gain and their sum, block by block; returns the lengths."""
    with ExitStack() as stack:
        readers = {name: stack.enter_context(sf.SoundFile(str(p))) for name, p in paths.items()}
        total = max(reader.frames for reader in readers.values())
        channels = next(iter(readers.values())).channels
        lengths = dict.fromkeys(paths, 0)
        done = 0
        while done < total:
            check_cancel(cancel)
            count = min(BLOCK_FRAMES, total - done)
            mix = np.zeros((channels, count))
            for name, reader in readers.items():
                block = reader.read(count, dtype="float64", always_2d=True).T * gains[name]
                if block.shape[1]:  # a shorter stem has ended: the mix goes on without it
                    out.write(name, block)
                    lengths[name] += block.shape[1]
                    mix[:, : block.shape[1]] += block
            out.write(MIX_NAME, mix)
            done += count
            report(Progress("mixing", done, total, 0.99 * done / total))
    lengths[MIX_NAME] = total
    return lengths


def _gained(
    stem: dict[str, Any],
    gain: float,
    files: dict[str, tuple[Path, Path]],
    clipped: dict[str, int],
) -> dict[str, Any]:
    """A stem's manifest entry after its gain: its levels moved by the gain, no pictures."""
    name = stem["name"]
    change_db = 20 * math.log10(gain) if gain > 0 else None

    def moved(value: object) -> float | None:
        if change_db is None or not isinstance(value, int | float):
            return None
        return round(float(value) + change_db, 2)

    before = stem.get("gain_db")
    return {
        **stem,
        "path": files[name][1].name,
        "gain_db": moved(before if isinstance(before, int | float) else 0.0),
        "loudness_lufs": moved(stem.get("loudness_lufs")),
        "true_peak_dbtp": moved(stem.get("true_peak_dbtp")),
        "silent": bool(stem.get("silent")) or gain == 0,
        "clipped_samples": clipped[name],
        "pictures": {},
    }


def _sources(stem: dict[str, Any]) -> list[str]:
    """The model sources a stem sums (a manifest edited by hand may not say)."""
    sources = stem.get("sources")
    if isinstance(sources, list) and all(isinstance(s, str) for s in sources):
        return sources
    return [stem["name"]]


def _identity(source: dict[str, Any], gains: dict[str, float]) -> str:
    text = json.dumps({"balance_of": source.get("identity"), "gains": gains}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
