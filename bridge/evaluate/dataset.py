"""Evaluation datasets: which tracks there are, and their references read and checked.

Three layouts are recognised, by what the folder holds:

* **MUSDB18-HQ**: ``train/`` and ``test/``, each ``<track>/mixture.wav`` plus one WAV per
  source (``vocals``, ``drums``, ``bass``, ``other``); ``--subset`` picks the folder.
* **MUSDB18**: ``train/`` and ``test/`` of ``<track>.stem.mp4`` files (the mixture and
  the sources as streams), listed through the ``musdb`` package and decoded with
  ``stempeg`` (which runs ffmpeg).
* **folders**: any folder of ``<track>/mixture.<ext>`` plus ``<track>/<stem>.<ext>``; the
  stems expected are those the tracks have between them.

A track without its mixture or one of the expected stems is skipped and reported, not
fatal; a reference whose rate, channels or length differ from the mixture's is refused
when the track is read, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

from bridge.atomic import commit, temp_path_for
from bridge.audio.probe import AudioInfo, probe
from bridge.errors import AudioError, DatasetError

log = logging.getLogger(__name__)

Layout = Literal["musdb18hq", "musdb18", "folders"]
SUBSETS = ("test", "train")
#: Files a track folder may hold its mixture and stems in (what the pipeline decodes).
AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".ogg", ".mp3")
MUSDB_SOURCES = ("vocals", "drums", "bass", "other")
STEM_MP4 = ".stem.mp4"


@dataclass(frozen=True)
class Track:
    """One track of a dataset.

    Attributes:
        name: Its folder's name (or the ``.stem.mp4`` file's, without the suffix).
        mixture: The mixture file, or the ``.stem.mp4`` holding everything.
        references: Each stem's file (folder layouts), or, for a ``.stem.mp4``, each
            stem's stream index in it.
    """

    name: str
    mixture: Path
    references: Mapping[str, Path | int]

    @property
    def stems(self) -> tuple[str, ...]:
        return tuple(self.references)

    @property
    def packed(self) -> bool:
        """Whether mixture and stems are streams of one ``.stem.mp4``."""
        return self.mixture.name.endswith(STEM_MP4)

    def fingerprint(self) -> str:
        """The track's files as they are now (path, size, modification time), so that
        separations and scores cached for other files are not taken for these.

        Raises:
            DatasetError: A file is gone or cannot be read.
        """
        files = [self.mixture, *(p for p in self.references.values() if isinstance(p, Path))]
        seen = []
        for path in files:
            try:
                status = path.stat()
            except OSError as exc:
                raise DatasetError(
                    f"{path}: cannot be read ({exc.strerror}); put the file back", path=path
                ) from exc
            seen.append([str(path), status.st_size, status.st_mtime_ns])
        return hashlib.sha256(json.dumps(seen).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Skipped:
    """A track left out of the scores, and why (a sentence naming the file)."""

    track: str
    reason: str


@dataclass(frozen=True)
class Dataset:
    """The tracks to score.

    Attributes:
        root: The folder given.
        layout: Which layout it has.
        subset: ``test`` or ``train`` for the MUSDB layouts, else ``None``.
        tracks: The usable tracks, by name.
        skipped: Tracks found but unusable (no mixture, a stem missing).
    """

    root: Path
    layout: Layout
    subset: str | None
    tracks: tuple[Track, ...]
    skipped: tuple[Skipped, ...] = field(default=())

    @property
    def stems(self) -> tuple[str, ...]:
        """The reference stems, in the first track's order."""
        return self.tracks[0].stems if self.tracks else ()


@dataclass(frozen=True)
class References:
    """One track's reference stems in memory, checked against its mixture.

    Attributes:
        sample_rate: Of every stem.
        audio: Each stem as ``(frames, channels)`` float32, all of one shape.
    """

    sample_rate: int
    audio: Mapping[str, np.ndarray]

    @property
    def frames(self) -> int:
        return next(iter(self.audio.values())).shape[0]


def find_dataset(root: Path, *, subset: str | None = None, tracks: Sequence[str] = ()) -> Dataset:
    """The tracks of the dataset in ``root``.

    Args:
        root: A MUSDB18(-HQ) root, one of its subset folders, or a folder of track folders.
        subset: ``test`` or ``train``; ``None`` means ``test`` where there are subsets.
        tracks: Only these tracks (by name); empty means all.

    Raises:
        DatasetError: ``root`` is not a folder, the subset is missing, it holds no
            tracks, or a name in ``tracks`` is not one of them.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DatasetError(
            f"{root}: no such folder; give a MUSDB18(-HQ) folder or a folder of "
            "<track>/mixture.wav + <track>/<stem>.wav",
            path=root,
        )
    if any((root / name).is_dir() for name in SUBSETS):
        chosen = subset or "test"
        base = root / chosen
        if not base.is_dir():
            raise DatasetError(
                f"{root}: has no {chosen}/ folder; pick another --subset ({', '.join(SUBSETS)})",
                path=base,
            )
    elif subset is not None:
        raise DatasetError(
            f"{root}: --subset {subset} needs train/ and test/ folders (MUSDB18); this folder "
            "has none, so leave --subset out to score the tracks in it",
            path=root,
        )
    else:
        chosen, base = None, root
    layout: Layout
    skipped: list[Skipped]
    if any(base.glob(f"*{STEM_MP4}")):
        found, skipped, layout = _stem_mp4_tracks(root, chosen), [], "musdb18"
    else:
        found, skipped = _folder_tracks(base, expected=MUSDB_SOURCES if chosen else None)
        layout = "musdb18hq" if chosen else "folders"
    if not found and not skipped:
        raise DatasetError(
            f"{base}: holds no tracks; expected <track>/mixture.wav with one <stem>.wav per "
            f"source beside it, or <track>{STEM_MP4} files (MUSDB18)",
            path=base,
        )
    if tracks:
        names = {track.name for track in found} | {skip.track for skip in skipped}
        unknown = [name for name in tracks if name not in names]
        if unknown:
            known = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
            raise DatasetError(
                f"{base}: no track named {', '.join(map(repr, unknown))}; its tracks are {known}",
                path=base,
            )
        found = [track for track in found if track.name in tracks]
        skipped = [skip for skip in skipped if skip.track in tracks]
    return Dataset(root, layout, chosen, tuple(found), tuple(skipped))


def _audio_files(folder: Path) -> dict[str, Path]:
    files = sorted(
        path
        for path in folder.iterdir()
        if path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() in AUDIO_SUFFIXES
    )
    return {path.stem: path for path in files}


def _folder_tracks(
    base: Path, *, expected: Sequence[str] | None
) -> tuple[list[Track], list[Skipped]]:
    """Track folders under ``base``; ``expected``: the stems each must have (``None``: those
    the tracks have between them)."""
    folders = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = {folder.name: _audio_files(folder) for folder in folders}
    if expected is None:
        seen: dict[str, None] = {}
        for stems in files.values():
            seen.update((stem, None) for stem in stems if stem != "mixture")
        expected = tuple(seen)
    found, skipped = [], []
    for folder in folders:
        stems = files[folder.name]
        if not stems:
            continue  # not a track (a folder of something else)
        mixture = stems.pop("mixture", None)
        missing = [stem for stem in expected if stem not in stems]
        if mixture is None:
            skipped.append(
                Skipped(folder.name, f"{folder}: no mixture file; add mixture.wav (or .flac)")
            )
        elif missing:
            skipped.append(
                Skipped(
                    folder.name,
                    f"{folder}: no reference for {', '.join(missing)}; add "
                    + ", ".join(f"{stem}.wav" for stem in missing),
                )
            )
        else:
            found.append(Track(folder.name, mixture, {stem: stems[stem] for stem in expected}))
    return found, skipped


def _stem_mp4_tracks(root: Path, subset: str | None) -> list[Track]:
    """MUSDB18's ``.stem.mp4`` tracks, listed by the ``musdb`` package (with its own
    stream order for the sources)."""
    import musdb

    if subset is None:
        raise DatasetError(
            f"{root}: .stem.mp4 tracks are read as MUSDB18, which keeps them in train/ and "
            "test/; give the folder above them",
            path=root,
        )
    database = musdb.DB(root=str(root), subsets=[subset], is_wav=False)
    ids = database.setup["stem_ids"]
    return [
        Track(
            track.name,
            Path(track.path),
            {source: int(ids[source]) for source in MUSDB_SOURCES},
        )
        for track in database.tracks
    ]


def check_references(track: Track) -> AudioInfo | None:
    """Refuse a track whose references do not line up with its mixture, before any work
    is spent on it (a ``.stem.mp4`` is checked when decoded: ``None``).

    Returns:
        The mixture's description.

    Raises:
        DatasetError: A file is unreadable, or a reference's rate, channels or length
            differ from the mixture's (naming the file and both values).
    """
    return None if track.packed else _check_folder_track(track)


def _check_folder_track(track: Track) -> AudioInfo:
    mixture = _probe(track.mixture)
    for path in track.references.values():
        check_like(_probe(Path(str(path))), mixture, what="the mixture")
    return mixture


def check_like(info: AudioInfo, other: AudioInfo, *, what: str) -> None:
    """Refuse ``info``'s file when its rate, channels or length differ from ``other``'s.

    Raises:
        DatasetError: Naming the file, both values and the fix.
    """
    for label, mine, theirs, fix in (
        ("sample rate", info.sample_rate, other.sample_rate, "resample it"),
        ("channel count", info.channels, other.channels, "give it the same channels"),
        ("length", info.frames, other.frames, "trim or pad it"),
    ):
        if mine != theirs:
            unit = " Hz" if label == "sample rate" else " frames" if label == "length" else ""
            raise DatasetError(
                f"{info.path}: {label} {mine}{unit}, but {what} {other.path} has "
                f"{theirs}{unit}; {fix} to match",
                path=info.path,
            )


def _probe(path: Path) -> AudioInfo:
    try:
        return probe(path)
    except AudioError as exc:
        raise DatasetError(str(exc), path=path) from exc


def read_references(track: Track) -> References:
    """Every reference stem of ``track``, decoded whole (one track at a time is in memory).

    Raises:
        DatasetError: As :func:`check_references`.
    """
    if track.packed:
        streams, rate = _decode_stem_mp4(track.mixture)
        audio = {stem: streams[int(str(index))] for stem, index in track.references.items()}
        return References(rate, audio)
    mixture = _check_folder_track(track)
    audio = {
        stem: sf.read(str(path), dtype="float32", always_2d=True)[0]
        for stem, path in track.references.items()
    }
    return References(mixture.sample_rate, audio)


def decoded_mixture(track: Track, cache: Path) -> Path:
    """The file to separate: a folder track's own mixture, or a ``.stem.mp4``'s mixture
    stream decoded once into ``cache/<track>.wav`` (float, published atomically)."""
    if not track.packed:
        return track.mixture
    final = cache / f"{track.name}.wav"
    if final.exists():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    streams, rate = _decode_stem_mp4(track.mixture)
    temp = temp_path_for(final)
    try:
        sf.write(str(temp), streams[0], rate, subtype="FLOAT", format="WAV")
        commit(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return final


def _decode_stem_mp4(path: Path) -> tuple[np.ndarray, int]:
    """All streams of a ``.stem.mp4``: ``(streams, frames, channels)`` float32 and the rate."""
    import stempeg

    try:
        streams, rate = stempeg.read_stems(str(path), dtype=np.float32, always_3d=True)
    except Exception as exc:  # stempeg raises ffmpeg's own errors (or a plain one)
        raise DatasetError(
            f"{path}: cannot be decoded as a stem file ({exc}); check it plays, and that "
            "ffmpeg is installed",
            path=path,
        ) from exc
    if streams.shape[0] < 1 + len(MUSDB_SOURCES):
        raise DatasetError(
            f"{path}: holds {streams.shape[0]} audio streams; a MUSDB18 stem file has the "
            f"mixture and {', '.join(MUSDB_SOURCES)}",
            path=path,
        )
    return np.asarray(streams), int(rate)


def read_estimates(
    files: Mapping[str, Path], references: References, *, track: str
) -> dict[str, np.ndarray]:
    """Estimated stems, read and checked against the track's references.

    Raises:
        DatasetError: An estimate is unreadable or its rate, channels or length differ
            from the references' (naming the file, both values and the fix).
    """
    estimates = {}
    for stem, path in files.items():
        info = _probe(path)
        frames, channels = references.frames, next(iter(references.audio.values())).shape[1]
        for label, mine, theirs in (
            ("sample rate", info.sample_rate, references.sample_rate),
            ("channel count", info.channels, channels),
            ("length", info.frames, frames),
        ):
            if mine != theirs:
                raise DatasetError(
                    f"{path}: {label} {mine}, but {track}'s references have {theirs}; "
                    f"an estimate must match its reference sample for sample",
                    path=path,
                )
        estimates[stem] = sf.read(str(path), dtype="float32", always_2d=True)[0]
    return estimates


def estimate_files(folder: Path) -> dict[str, Path]:
    """The stem files in an estimates folder (``<stem>.<ext>``), by stem."""
    return _audio_files(folder) if folder.is_dir() else {}
