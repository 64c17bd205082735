"""Ardour 7 session files for tests: add an audio file the way Ardour stores one, read back.

Headless Ardour (``ardour7-lua``) has no import: ``SourceFactory`` and
``Session::import_files`` are not bound to Lua there. So a test copies the file into the
session's ``interchange/<folder>/audiofiles`` folder and writes what Ardour itself writes
for an imported file, while the session is closed: one ``<Source>`` per channel and a
whole-file ``<Region>``. Ardour then loads that, and everything after (regions on
tracks, their positions) is done by Ardour through Lua and saved by Ardour.

Times in Ardour 7 session files are superclock ticks (``a<ticks>``); a length is
``a<ticks>@<position>``.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf


@dataclass(frozen=True)
class PlacedRegion:
    """A region on a playlist, in samples, as the saved session has it."""

    name: str
    position: int
    start: int
    length: int
    muted: bool
    sources: tuple[str, ...]


@dataclass(frozen=True)
class SavedTrack:
    """A track of the saved session: its group and the regions on its playlist."""

    name: str
    group: str
    regions: tuple[PlacedRegion, ...]


def _superclock_rate(root: ET.Element) -> int:
    tempo_map = root.find("TempoMap")
    if tempo_map is None:
        raise ValueError("the session has no TempoMap (not an Ardour 7 session?)")
    return int(tempo_map.get("superclocks-per-second", "0"))


def _audio_folder(session: Path) -> Path:
    """``interchange/<folder>/audiofiles``; Ardour names ``<folder>`` after the session folder."""
    (folder,) = (session.parent / "interchange").iterdir()
    return folder / "audiofiles"


def _samples(value: str, superclocks: int, rate: int) -> int:
    if not value.startswith("a"):
        raise ValueError(f"{value!r} is not an audio time")
    ticks = int(value[1:])
    samples, rest = divmod(ticks * rate, superclocks)
    if rest:
        raise ValueError(f"{value!r} is not a whole number of samples at {rate} Hz")
    return samples


def add_audio_file(session: Path, audio: Path, *, name: str, split: bool = False) -> str:
    """Copy ``audio`` into the closed session ``session`` (its ``.ardour`` file) as ``name``.

    Args:
        session: The session file.
        audio: The file to add; its rate must be the session's.
        name: The file name in the session.
        split: Store one mono file per channel (``<stem>-<channel>.wav``), as Ardour's own
            import does, instead of the file as it is.

    Returns:
        The id of the whole-file region Ardour will load for it.
    """
    tree = ET.parse(session)
    root = tree.getroot()
    rate = int(root.get("sample-rate", "0"))
    superclocks = _superclock_rate(root)
    data, file_rate = sf.read(str(audio), dtype="float32", always_2d=True)
    if file_rate != rate:
        raise ValueError(f"{audio} is at {file_rate} Hz, the session at {rate} Hz")
    folder = _audio_folder(session)
    frames, channels = data.shape
    if split:
        files = [f"{Path(name).stem}-{channel}.wav" for channel in range(channels)]
        for channel, file in enumerate(files):
            sf.write(str(folder / file), data[:, channel], rate, subtype="FLOAT")
        source_channels = [0] * channels
    else:
        shutil.copyfile(audio, folder / name)
        files = [name] * channels
        source_channels = list(range(channels))
    counter = int(root.get("id-counter", "0"))
    source_ids = [str(counter + 1 + channel) for channel in range(channels)]
    region_id = str(counter + 1 + channels)
    root.set("id-counter", str(counter + 2 + channels))
    sources = root.find("Sources")
    regions = root.find("Regions")
    if sources is None or regions is None:
        raise ValueError(f"{session} has no Sources or Regions section")
    for file, channel, source_id in zip(files, source_channels, source_ids, strict=True):
        ET.SubElement(
            sources,
            "Source",
            {"name": file, "type": "audio", "id": source_id, "channel": str(channel)},
        )
    attributes = {
        "name": Path(name).stem,
        "type": "audio",
        "id": region_id,
        "whole-file": "1",
        "start": "a0",
        "length": f"a{frames * superclocks // rate}@a0",
        "channels": str(channels),
    }
    for channel, source_id in enumerate(source_ids):
        attributes[f"source-{channel}"] = source_id
        attributes[f"master-source-{channel}"] = source_id
    ET.SubElement(regions, "Region", attributes)
    tree.write(session, encoding="UTF-8", xml_declaration=True)
    return region_id


def read_tracks(session: Path) -> dict[str, SavedTrack]:
    """Every track of the saved session by name, with its route group and regions."""
    root = ET.parse(session).getroot()
    rate = int(root.get("sample-rate", "0"))
    superclocks = _superclock_rate(root)
    playlists = {
        playlist.get("id"): playlist for playlist in root.iter("Playlist") if playlist.get("id")
    }
    tracks = {}
    routes = root.find("Routes")
    assert routes is not None
    for route in routes.findall("Route"):
        playlist_id = route.get("audio-playlist")
        if playlist_id is None:
            continue  # the master bus
        placed = []
        for region in playlists[playlist_id].findall("Region"):
            distance, _, position = region.get("length", "").partition("@")
            channels = int(region.get("channels", "0"))
            placed.append(
                PlacedRegion(
                    name=region.get("name", ""),
                    position=_samples(position, superclocks, rate),
                    start=_samples(region.get("start", ""), superclocks, rate),
                    length=_samples(distance, superclocks, rate),
                    muted=region.get("muted") == "1",
                    sources=tuple(region.get(f"source-{i}", "") for i in range(channels)),
                )
            )
        name = route.get("name", "")
        group = route.get("route-group", "")
        tracks[name] = SavedTrack(name=name, group=group, regions=tuple(placed))
    return tracks


def source_files(session: Path) -> dict[str, Path]:
    """The file behind each source id of the saved session."""
    root = ET.parse(session).getroot()
    folder = _audio_folder(session)
    return {
        source.get("id", ""): folder / source.get("name", "")
        for source in root.iter("Source")
        if source.get("type") == "audio"
    }
