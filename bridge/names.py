"""What StemBridge calls the folders it makes, and which paths it takes in.

A stem folder is named after its input file, and the input's name is whatever a
host, a user or someone with write access to a watched folder chose: ``...wav``
(whose stem ``..`` would climb out of the output folder), ``~user.wav``, ``CON.wav``
(a device on Windows), names with ``:`` or ``?``. :func:`folder_name` turns any
such name into one safe path component, and :func:`inside` checks that a folder
built from it stays under its root.

Paths travel to host scripts in status files, one ``key=value`` per line, so a
path holding a line break or control character cannot be carried:
:func:`check_path_text` refuses them, Unicode's line and paragraph separators and
NEL included (Python's ``str.splitlines`` breaks on those).

Windows opens no path of 260 characters or more unless long paths are enabled
(``LongPathsEnabled``; Python itself is marked long-path aware): :func:`inside`
refuses a stem folder whose files would not fit, naming both fixes, rather than let
a job fail half-written (:class:`PathLimit`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import OutputError, UnsupportedName

#: Characters Windows forbids in file names, and the separators of every platform.
FORBIDDEN = frozenset('<>:"/\\|?*')
#: Names Windows keeps for devices, with or without an extension (the superscript digits
#: count as digits there, and ``COM0``/``LPT0`` are refused by some of its APIs).
RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in (*"0123456789", "¹", "²", "³")}
)
#: Longest folder name, in UTF-8 bytes: 255 is the common limit, and `` (99)`` must fit.
MAX_NAME_BYTES = 240
#: The name of a folder whose input's name has nothing usable left.
FALLBACK = "untitled"


#: Room left in a stem folder's path for the longest name put inside it: a picture's
#: temporary, ``.stembridge-<tag>-<random>-<stem>.spectrogram.png.part``.
LONGEST_INSIDE = 100
#: Windows' MAX_PATH: 260 characters with the terminating NUL.
WINDOWS_MAX_PATH = 259


@dataclass(frozen=True)
class PathLimit:
    """The longest path this machine's programs can open.

    Attributes:
        max_chars: ``None`` where there is no practical limit (POSIX, Windows with long
            paths enabled).
    """

    max_chars: int | None = None

    @classmethod
    def here(cls) -> PathLimit:
        """This machine's: Windows' MAX_PATH unless ``LongPathsEnabled`` is set."""
        if sys.platform != "win32":
            return cls()
        import winreg

        try:
            with winreg.OpenKey(
                winreg.HKEY_LOCAL_MACHINE, r"SYSTEM\CurrentControlSet\Control\FileSystem"
            ) as key:
                enabled, _ = winreg.QueryValueEx(key, "LongPathsEnabled")
        except OSError:
            enabled = 0
        return cls() if enabled == 1 else cls(WINDOWS_MAX_PATH)


def windows_reserved(name: str) -> bool:
    """Whether Windows takes the file name ``name`` for a device (``con.wav``, ``NUL``)."""
    return name.split(".", 1)[0].rstrip(" ").upper() in RESERVED


def breaks_lines(char: str) -> bool:
    """Whether ``char`` is a control character or something a reader may take as a line end."""
    code = ord(char)
    return code < 32 or 127 <= code <= 159 or code in (0x2028, 0x2029)


def folder_name(text: str) -> str:
    """One safe path component made from ``text`` (an input file's name, extension removed).

    Separators, characters Windows forbids and control characters become ``_``;
    leading dots, spaces and ``~`` (hidden folders, ``.``/``..``, home folders) and
    trailing dots and spaces (Windows drops them) go; a Windows device name gets a
    ``_`` in front; long names are cut at a character boundary. Never empty.
    """
    name = "".join("_" if char in FORBIDDEN or breaks_lines(char) else char for char in text)
    name = name.lstrip(" .~").rstrip(" .")
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        name = encoded[:MAX_NAME_BYTES].decode("utf-8", errors="ignore").rstrip(" .")
    if not name:
        return FALLBACK
    if windows_reserved(name):
        return f"_{name}"
    return name


def inside(root: Path, folder: Path, *, limit: PathLimit | None = None) -> Path:
    """``folder``, normalised, after checking that it lies strictly under ``root`` and
    that the files put in it fit the path limit (default: this machine's).

    Raises:
        OutputError: It does not (a template or name that climbs out of its root), or
            its files' paths would be too long to open.
    """
    base = Path(os.path.normpath(os.path.abspath(root)))
    target = Path(os.path.normpath(os.path.abspath(folder)))
    if target == base or not target.is_relative_to(base):
        raise OutputError(
            f"{target}: a stem folder must lie inside {base}; fix the output template or "
            "the output folder",
            path=target,
        )
    limit = PathLimit.here() if limit is None else limit
    if limit.max_chars is not None and len(str(target)) + LONGEST_INSIDE > limit.max_chars:
        raise OutputError(
            f"{target}: {len(str(target))} characters, and the files in it would pass "
            f"Windows' {limit.max_chars + 1}-character path limit; choose a shorter output "
            "folder, or enable long paths (LongPathsEnabled, in the Group Policy 'Enable "
            "Win32 long paths') and sign in again",
            path=target,
        )
    return target


def stem_folder(root: Path, source: Path) -> Path:
    """Where the stems of ``source`` go under ``root``: ``root/<folder_name(source's stem)>``."""
    return inside(root, root / folder_name(source.stem))


def check_path_text(path: str | Path) -> None:
    """Refuse a path that status files (one ``key=value`` per line) cannot carry.

    Raises:
        UnsupportedName: The path holds a line break, a line or paragraph separator,
            or another control character.
    """
    text = str(path)
    if any(breaks_lines(char) for char in text):
        raise UnsupportedName(
            f"{text!r}: the path holds a line break or control character, which host "
            "scripts cannot read back from status files; rename the file without it",
            path=Path(text),
        )
