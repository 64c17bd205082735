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
"""

from __future__ import annotations

import os
from pathlib import Path

from bridge.errors import OutputError, UnsupportedName

#: Characters Windows forbids in file names, and the separators of every platform.
FORBIDDEN = frozenset('<>:"/\\|?*')
#: Names Windows keeps for devices, with or without an extension.
RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{n}" for n in range(1, 10)}
    | {f"LPT{n}" for n in range(1, 10)}
)
#: Longest folder name, in UTF-8 bytes: 255 is the common limit, and `` (99)`` must fit.
MAX_NAME_BYTES = 240
#: The name of a folder whose input's name has nothing usable left.
FALLBACK = "untitled"


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
    if name.split(".", 1)[0].rstrip(" ").upper() in RESERVED:
        return f"_{name}"
    return name


def inside(root: Path, folder: Path) -> Path:
    """``folder``, normalised, after checking that it lies strictly under ``root``.

    Raises:
        OutputError: It does not (a template or name that climbs out of its root).
    """
    base = Path(os.path.normpath(os.path.abspath(root)))
    target = Path(os.path.normpath(os.path.abspath(folder)))
    if target == base or not target.is_relative_to(base):
        raise OutputError(
            f"{target}: a stem folder must lie inside {base}; fix the output template or "
            "the output folder",
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
