"""``manifest.json``: what was separated, how, and where each stem is.

Written last of a set, atomically, beside the stems: its presence means the set is
complete. Stem paths are relative to the manifest's folder so a share mounted at
different paths on different machines still resolves them.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from bridge import __version__
from bridge.documents import parse_json
from bridge.errors import OutputError

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 2
# What a host script's status-file reader takes as a key ("stem.<name>"): no "=" or newline.
_STEM_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class InputEntry:
    """The input file as it was when separated."""

    path: str
    sha256: str
    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int
    size_bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class RangeEntry:
    """The part of the input that was separated, in input frames and seconds."""

    start_samples: int
    length_samples: int
    start_seconds: float
    length_seconds: float


@dataclass(frozen=True)
class StemEntry:
    """One stem file: the model sources summed into it, its effects, its level.

    ``length_samples`` is the output range's length plus ``tail_samples`` (a tail
    kept because the preset asked for it). Loudness and peaks are those of the file
    as written (after effects and gain); ``silent`` stems have no integrated
    loudness (nothing above -70 LUFS), so hosts can skip them. ``pictures`` maps
    ``waveform`` and ``spectrogram`` to PNG files beside the stem (empty when none
    were drawn).
    """

    name: str
    path: str
    sources: list[str]
    length_samples: int = 0
    tail_samples: int = 0
    effects: list[str] = field(default_factory=list)
    gain_db: float | None = 0.0
    limited_by_true_peak: bool = False
    loudness_lufs: float | None = None
    true_peak_dbtp: float | None = None
    silent: bool = False
    clipped_samples: int = 0
    pictures: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputEntry:
    """The format shared by every stem; ``offset_samples`` is the range start at this rate."""

    format: str
    subtype: str
    sample_rate: int
    channels: int
    length_samples: int
    offset_samples: int
    dither: bool = False


@dataclass(frozen=True)
class Manifest:
    """Everything a host or a person needs to use and trust a set of stems."""

    input: InputEntry
    range: RangeEntry
    model: dict[str, Any]
    settings: dict[str, Any]
    output: OutputEntry
    stems: list[StemEntry]
    timings: dict[str, float]
    effects: dict[str, Any] = field(default_factory=dict)
    job_id: str | None = None
    identity: str | None = None
    reused_from: str | None = None
    created: str = ""
    stembridge_version: str = __version__
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


def manifest_bytes(data: dict[str, Any]) -> bytes:
    """The file's content for manifest data (a :class:`Manifest`'s, or one read back); the
    publish stage writes it, last of a set (see :mod:`bridge.pipeline.publish`)."""
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def read_manifest(path: Path) -> dict[str, Any]:
    """Read a manifest back (to reuse stems, skip a done file, list stems in a status file).

    The file lies in a user's folder and may have been edited or damaged, so the parts
    readers rely on are checked: an object with an ``input`` object, an ``identity``
    string (or none), and ``stems`` whose ``name`` a host script can read as a status
    file key and whose ``path`` stays inside the manifest's folder.

    Raises:
        OutputError: The file cannot be read, is not JSON or is not a manifest; the
            message names the file.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise OutputError(
            f"{path}: cannot be read ({exc.strerror}); check its permissions", path=path
        ) from exc
    try:
        data = parse_json(raw)
    except ValueError as exc:
        raise _not_a_manifest(path, f"not JSON: {exc}") from exc
    problem = _manifest_problem(data)
    if problem:
        raise _not_a_manifest(path, problem)
    manifest: dict[str, Any] = data
    return manifest


def _not_a_manifest(path: Path, problem: str) -> OutputError:
    return OutputError(
        f"{path}: not a StemBridge manifest ({problem}); delete it to have the stems made again",
        path=path,
    )


def _manifest_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "not a JSON object"
    if not isinstance(data.get("input"), dict):
        return "no input object"
    if not isinstance(data.get("identity"), str | None):
        return "an identity that is not a string"
    stems = data.get("stems")
    if not isinstance(stems, list):
        return "no stems list"
    for stem in stems:
        if not (isinstance(stem, dict) and isinstance(stem.get("name"), str)):
            return "a stem without a name"
        if not _STEM_NAME.fullmatch(stem["name"]):
            return f"stem name {stem['name'][:80]!r} is not letters, digits, '_', '-' and '.'"
        where = stem.get("path")
        if not (isinstance(where, str) and where and "\0" not in where):
            return f"stem {stem['name']!r} has no path"
        if any(p.anchor or ".." in p.parts for p in (PurePosixPath(where), PureWindowsPath(where))):
            return f"stem path {where[:80]!r} leaves the manifest's folder"
    return None
