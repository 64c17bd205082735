"""Separate Audacity's selection and put the stems back as tracks, over the script pipe.

:func:`separate_selection` runs, with the commands that Audacity 3.2 offers (checked on
3.2.4):

1. ``GetInfo: Type=Tracks`` lists the tracks and which are selected. Audacity prints times
   with six significant digits there and has no command that reports the selected time
   range, so the range itself is never read: every step works relative to it.
2. ``SelSave`` stores the time selection; ``Export2`` writes the selected audio (the mix of
   the selected tracks, at the project rate) to a WAV file. The WAV encoding is a
   preference: it is set to 32-bit float for the export, so no dither or rounding touches
   the audio, and put back afterwards.
3. The caller separates that file (see :data:`Separate`).
4. Each stem: ``Import2`` appends a track with the stem at time 0; ``SelectTracks`` selects
   only it, ``SelRestore`` brings back the time selection, ``Align_StartToSelStart`` moves
   it to the selection's start and ``SetTrack`` names it after the stem.
5. The original track selection and time selection are put back, also after a failure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import AudacityCommandFailed, HostError, NothingSelected
from bridge.hosts.audacity_pipe import ScriptPipe

log = logging.getLogger(__name__)

#: Separates the exported selection; returns each stem's name and file, in track order.
Separate = Callable[[Path], Mapping[str, Path]]

# Where Audacity 3.2 keeps the WAV export encoding (libsndfile subtype codes).
_WAV_ENCODING_PREF = "/FileFormats/ExportFormat_SF1_Type/WAV_10000"
_SF_FORMAT_PCM_16 = 2  # Audacity's default for WAV
_SF_FORMAT_FLOAT = 6
_TRANSFER_TIMEOUT_SECONDS = 600.0  # export and import of long selections


@dataclass(frozen=True)
class Track:
    """A track as ``GetInfo: Type=Tracks`` lists it (times to six significant digits)."""

    index: int
    name: str
    kind: str
    selected: bool
    channels: int
    start_seconds: float | None
    end_seconds: float | None


@dataclass(frozen=True)
class PlacedStem:
    """A stem imported as a track."""

    name: str
    path: Path
    track: Track


def tracks(pipe: ScriptPipe) -> list[Track]:
    """Every track in the project, in order."""
    reply = pipe.command("GetInfo: Type=Tracks Format=JSON")
    try:
        items = json.loads(reply)
    except json.JSONDecodeError as exc:
        raise HostError(f"Audacity's track list is not JSON ({exc}): {reply[:200]!r}") from None
    return [
        Track(
            index=index,
            name=str(item.get("name", "")),
            kind=str(item.get("kind", "")),
            selected=bool(item.get("selected", 0)),
            channels=int(item.get("channels", 0)),
            start_seconds=item.get("start"),
            end_seconds=item.get("end"),
        )
        for index, item in enumerate(items)
    ]


def separate_selection(
    pipe: ScriptPipe, *, export_path: Path, separate: Separate
) -> list[PlacedStem]:
    """Export the selection to ``export_path``, separate it and import the stems in place.

    Args:
        pipe: The connection to Audacity.
        export_path: Where the selection is written (a ``.wav`` file that must not exist).
        separate: Turns the exported file into stem files.

    Returns:
        The stem tracks, as Audacity lists them after the import.

    Raises:
        NothingSelected: No audio track is selected, or the time selection is empty.
        OutputError: From ``separate`` when the stems cannot be written.
        AudacityNotAnswering: Audacity closed or stopped answering.
        AudacityCommandFailed: Audacity refused a command.
    """
    before = tracks(pipe)
    selected = [t.index for t in before if t.selected]
    audio = [t for t in before if t.selected and t.kind == "wave"]
    if not audio:
        raise NothingSelected(
            "no audio track is selected in Audacity: select a range of audio (drag across "
            "a track's waveform) and run this again"
        )
    if export_path.suffix.lower() != ".wav" or export_path.exists():
        raise HostError(f"{export_path}: the export must be a new .wav file", path=export_path)
    pipe.command("SelSave:")
    try:
        export_float_wav(pipe, export_path, channels=min(max(t.channels for t in audio), 2))
        if _frames(export_path) == 0:
            export_path.unlink()
            raise NothingSelected(
                "the time selection is empty in Audacity: drag across the audio you want "
                "separated and run this again"
            )
        stems = separate(export_path)
        return [_place(pipe, name, path) for name, path in stems.items()]
    finally:
        _restore_selection(pipe, selected)


def export_float_wav(pipe: ScriptPipe, path: Path, *, channels: int) -> None:
    """Export the selected audio to ``path`` as 32-bit float WAV (exactly what Audacity holds).

    The user's WAV encoding preference is put back afterwards.

    Raises:
        AudacityCommandFailed: Audacity refused the export.
        HostError: Audacity reported success but ``path`` does not exist.
    """
    previous = _preference(pipe, _WAV_ENCODING_PREF)
    pipe.command(f"SetPreference: Name={_WAV_ENCODING_PREF} Value={_SF_FORMAT_FLOAT}")
    try:
        pipe.command(
            f"Export2: Filename={quoted(path)} NumChannels={channels}",
            timeout_seconds=_TRANSFER_TIMEOUT_SECONDS,
        )
    finally:
        restore = previous if previous is not None else str(_SF_FORMAT_PCM_16)
        pipe.command(f"SetPreference: Name={_WAV_ENCODING_PREF} Value={restore}")
    if not path.is_file():
        raise HostError(
            f"Audacity reported exporting the selection to {path}, but the file is not there: "
            "is Audacity running on another machine or in a sandbox that cannot write there?",
            path=path,
        )


def _preference(pipe: ScriptPipe, name: str) -> str | None:
    """A preference's value, or ``None`` when it was never set (Audacity fails the read)."""
    try:
        return pipe.command(f"GetPreference: Name={name}").strip()
    except AudacityCommandFailed:
        return None


def _frames(path: Path) -> int:
    import soundfile as sf

    return int(sf.info(str(path)).frames)


def _place(pipe: ScriptPipe, name: str, path: Path) -> PlacedStem:
    """Import a stem, move it to the selection's start and name it."""
    count = len(tracks(pipe))
    pipe.command(f"Import2: Filename={quoted(path)}", timeout_seconds=_TRANSFER_TIMEOUT_SECONDS)
    after = tracks(pipe)
    if len(after) != count + 1:
        raise HostError(
            f"importing {path} into Audacity added {len(after) - count} tracks, not one",
            path=path,
        )
    pipe.command(f"SelectTracks: Track={count} TrackCount=1 Mode=Set")
    pipe.command("SelRestore:")
    pipe.command("Align_StartToSelStart:")
    pipe.command(f"SetTrack: Track={count} Name={quoted(name)}")
    placed = tracks(pipe)[count]
    log.info(
        "stem %s is track %d (%s s to %s s)", name, count, placed.start_seconds, placed.end_seconds
    )
    return PlacedStem(name=name, path=path, track=placed)


def _restore_selection(pipe: ScriptPipe, selected: list[int]) -> None:
    """Select exactly the tracks ``selected`` (not empty) and the stored time range."""
    pipe.command(f"SelectTracks: Track={selected[0]} TrackCount=1 Mode=Set")
    for index in selected[1:]:
        pipe.command(f"SelectTracks: Track={index} TrackCount=1 Mode=Add")
    pipe.command("SelRestore:")


def quoted(value: object) -> str:
    """A command argument in double quotes (Audacity has no escape for quotes inside)."""
    text = str(value)
    if '"' in text or "\n" in text:
        raise HostError(
            f"{text!r} cannot be passed to Audacity: its script commands cannot carry double "
            "quotes or line breaks; choose a name or folder without them"
        )
    return f'"{text}"'
