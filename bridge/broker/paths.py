"""Paths between machines that mount the same share at different places.

The daemon names files as it sees them (``/mnt/nas/Song A/mix.wav``); a worker on
Windows sees the same file as ``Z:\\Song A\\mix.wav``. A :class:`PathMap` holds the
configured prefix pairs (the ``[paths]`` table) and rewrites a path's prefix and
separators, both ways. It is string logic only: the other machine's paths need not
exist here, and nothing depends on the OS this runs on.

Prefixes are absolute POSIX paths (``/mnt/nas``), Windows drive paths (``Z:\\``,
``Z:\\Studio``, ``Z:/Studio``) or UNC shares (``\\\\server\\share``,
``//server/share``). They match whole path components only, Windows ones ignoring
case; names are compared in Unicode NFC so a macOS-decomposed ``é`` still matches.
The rest of the path is kept as it is, only its separators change.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from bridge.errors import SettingsError

_DRIVE = re.compile(r"[A-Za-z]:")
_ALLOWED = r"an absolute path: /mnt/nas, Z:\ or Z:\Studio, or \\server\share"


@dataclass(frozen=True)
class _Place:
    """A path split into its root and its names."""

    windows: bool
    anchor: str  # "/", "Z:\" or "\\server\share", as written but with "\" on Windows
    parts: tuple[str, ...]
    trailing: bool = False  # ended with a separator

    @property
    def separator(self) -> str:
        return "\\" if self.windows else "/"

    def key(self) -> tuple[bool, str, tuple[str, ...]]:
        """What two places are compared by."""
        return (
            self.windows,
            _comparable(self.anchor, self.windows),
            tuple(_comparable(part, self.windows) for part in self.parts),
        )

    def starts(self, path: _Place) -> bool:
        """Whether ``path`` is this place or lies below it."""
        mine = self.key()
        theirs = path.key()
        return mine[:2] == theirs[:2] and theirs[2][: len(mine[2])] == mine[2]

    def joined(self, rest: tuple[str, ...], *, trailing: bool) -> str:
        """This place's text with ``rest`` appended, in this place's style."""
        sep = self.separator
        names = self.parts + rest
        if self.anchor.endswith(sep):
            text = self.anchor + sep.join(names)
        else:
            text = self.anchor + "".join(sep + name for name in names)
        if trailing and not text.endswith(sep):
            text += sep
        return text


@dataclass(frozen=True)
class PathMap:
    """Prefix pairs that translate paths between the daemon and this machine.

    Args:
        pairs: ``(daemon_prefix, local_prefix)`` pairs as configured; each side is a
            POSIX path, a Windows drive path or a UNC share. A trailing separator is
            ignored (``Z:\\`` stays the drive's root).

    Raises:
        SettingsError: A side that is not a non-empty string or not an absolute path,
            or a daemon prefix given twice (the key is the daemon prefix).
    """

    pairs: tuple[tuple[str, str], ...] = ()
    _places: tuple[tuple[_Place, _Place], ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        places: list[tuple[_Place, _Place]] = []
        seen: dict[tuple[bool, str, tuple[str, ...]], str] = {}
        for pair in self.pairs:
            if not (isinstance(pair, tuple | list) and len(pair) == 2):
                raise SettingsError(
                    f"path map entry {pair!r} is not a pair; give (daemon path, local path)",
                    key="paths",
                    value=pair,
                )
            daemon, local = pair
            daemon_place = _prefix(daemon, daemon, local, "the daemon's path")
            local_place = _prefix(local, daemon, local, "the path on this machine")
            if daemon_place.key() in seen:
                raise SettingsError(
                    f"path map entry {daemon!r} names the same place as "
                    f"{seen[daemon_place.key()]!r}; "
                    "keep one of them",
                    key=daemon,
                    value=local,
                )
            seen[daemon_place.key()] = daemon
            places.append((daemon_place, local_place))
        object.__setattr__(self, "pairs", tuple((daemon, local) for daemon, local in self.pairs))
        object.__setattr__(self, "_places", tuple(places))

    def to_local(self, path: str) -> str:
        """A path as the daemon sees it, as this machine sees it (unchanged if no prefix matches).

        The longest matching daemon prefix wins; the rest of the path gets this
        machine's separators.
        """
        return _translate(path, self._places)

    def to_daemon(self, path: str) -> str:
        """A path as this machine sees it, as the daemon sees it (the reverse of :meth:`to_local`).

        The longest matching local prefix wins; where two daemon prefixes share a local
        one, the first configured is used.
        """
        return _translate(path, tuple((local, daemon) for daemon, local in self._places))


def _prefix(text: object, daemon: object, local: object, side: str) -> _Place:
    if not isinstance(text, str) or not text.strip():
        raise SettingsError(
            f"path map entry {daemon!r} = {local!r}: {side} must be a non-empty string; "
            f"write {_ALLOWED}",
            key=str(daemon),
            value=local,
        )
    place = _split(text, windows=_looks_windows(text))
    if place is None:
        raise SettingsError(
            f"path map entry {daemon!r} = {local!r}: {side} {text!r} is not {_ALLOWED}",
            key=str(daemon),
            value=local,
        )
    return place


def _looks_windows(text: str) -> bool:
    return bool(_DRIVE.match(text)) or text.startswith(("\\\\", "//"))


def _split(text: str, *, windows: bool) -> _Place | None:
    """``text`` as an absolute path in one style, or ``None`` when it is not one."""
    if windows:
        text = text.replace("/", "\\")
        if _DRIVE.match(text):
            rest = text[2:]
            if rest and not rest.startswith("\\"):
                return None  # "Z:Song" is relative to the drive's current folder
            anchor, body = text[:2] + "\\", rest[1:]
        elif text.startswith("\\\\"):
            server, _, after = text[2:].partition("\\")
            share, _, body = after.partition("\\")
            if not (server and share):
                return None
            anchor = f"\\\\{server}\\{share}"
        else:
            return None
        sep = "\\"
    else:
        if not text.startswith("/"):
            return None
        anchor, body, sep = "/", text[1:], "/"
    # Doubled separators mean the same as single ones on both systems.
    parts = tuple(part for part in body.split(sep) if part)
    return _Place(windows, anchor, parts, trailing=bool(parts) and body.endswith(sep))


def _comparable(name: str, windows: bool) -> str:
    name = unicodedata.normalize("NFC", name)
    return name.lower() if windows else name


def _translate(path: str, places: tuple[tuple[_Place, _Place], ...]) -> str:
    split: dict[bool, _Place | None] = {}
    best: tuple[_Place, _Place, _Place] | None = None
    for source, target in places:
        if source.windows not in split:
            split[source.windows] = _split(path, windows=source.windows)
        place = split[source.windows]
        if place is None or not source.starts(place):
            continue
        if best is None or len(source.parts) > len(best[0].parts):
            best = (source, target, place)
    if best is None:
        return path
    source, target, place = best
    return target.joined(place.parts[len(source.parts) :], trailing=place.trailing)
