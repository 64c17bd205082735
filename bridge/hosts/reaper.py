"""Install StemBridge's ReaScripts into REAPER's resource folder, and remove them again.

Everything goes to ``<resource>/Scripts/StemBridge/``: the ``*.lua`` scripts, the
generated ``stembridge_config.lua`` (the command the scripts run) and a record,
``.stembridge-installed.json``, of every file written with its SHA-256. The record
is what makes the installer safe in a folder the user may also use: a file is
replaced or deleted only while it still holds exactly what we wrote (or what we
would write); anything else is kept and reported, and nothing outside that folder
is ever touched.

The config the scripts read is one Lua chunk (see :func:`config_chunk`)::

    return { command = { "/abs/path/to/stembridge" } }

or, where no ``stembridge`` console script exists,
``{ "/abs/path/to/python", "-m", "bridge" }``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge import __version__, atomic
from bridge.documents import parse_json
from bridge.errors import HostError

SCRIPTS_FOLDER = "StemBridge"
CONFIG_NAME = "stembridge_config.lua"
RECORD_NAME = ".stembridge-installed.json"
REGISTER_SCRIPT = "StemBridge - Register actions.lua"
RECORD_FORMAT = 1
# Stands for something at a script's name that is not a regular file (a folder, say):
# it matches no digest, so it is never overwritten or deleted.
_NOT_A_FILE = "not a file"

REGISTER_INSTRUCTIONS = (
    "One time only: in REAPER choose Actions > Show action list..., then New action... > "
    f'Load ReaScript..., pick "{REGISTER_SCRIPT}" in the scripts folder and run it once. '
    "It registers the StemBridge actions (with reaper.AddRemoveReaScript); they then appear "
    'in the action list as "Script: StemBridge - ...". If you installed the scripts '
    "through ReaPack instead, skip this step: ReaPack registers them."
)
UNINSTALL_INSTRUCTIONS = (
    "REAPER keeps the StemBridge entries in its action list until you remove them there: "
    "Actions > Show action list..., filter for StemBridge, select them and press Delete."
)

Which = Callable[..., str | None]


@dataclass(frozen=True)
class InstallReport:
    """What an install or uninstall did (or, for a dry run, would do).

    File names are relative to ``scripts_folder``; the record file itself is
    bookkeeping and is not listed.

    Attributes:
        action: ``"install"`` or ``"uninstall"``.
        scripts_folder: ``<resource>/Scripts/StemBridge``.
        dry_run: Nothing was written; the lists say what would have been.
        written: Files that did not exist and were created.
        updated: Files of ours whose content was replaced.
        unchanged: Files that already held the right content.
        removed: Files of ours that were deleted (uninstall, or scripts no longer shipped).
        kept: Files left alone because the user changed them or they are not ours.
        command: The command written to the config (install only).
        nothing_installed: Uninstall found no record of an install.
    """

    action: str
    scripts_folder: Path
    dry_run: bool = False
    written: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    nothing_installed: bool = False

    @property
    def changed(self) -> bool:
        """Whether any file was (or would be) written or deleted."""
        return bool(self.written or self.updated or self.removed)

    @property
    def register_script(self) -> Path:
        """The script to load once in REAPER to register the actions."""
        return self.scripts_folder / REGISTER_SCRIPT

    @property
    def instructions(self) -> str:
        """What the user does next in REAPER."""
        return REGISTER_INSTRUCTIONS if self.action == "install" else UNINSTALL_INSTRUCTIONS

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {
            "action": self.action,
            "dry_run": self.dry_run,
            "scripts_folder": str(self.scripts_folder),
            "written": list(self.written),
            "updated": list(self.updated),
            "unchanged": list(self.unchanged),
            "removed": list(self.removed),
            "kept": list(self.kept),
            "command": list(self.command),
            "nothing_installed": self.nothing_installed,
            "register_script": str(self.register_script),
            "instructions": self.instructions,
        }


def default_resource_path(
    *,
    system: str | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Path:
    """REAPER's default resource folder on this (or the given) system.

    REAPER shows the folder in use under Options > Show REAPER resource path; portable
    installs keep it beside the program, so pass that one explicitly.

    Args:
        system: ``platform.system()`` style name (``Windows``, ``Darwin``, ``Linux``);
            ``sys.platform`` names (``win32``, ``darwin``) are accepted too.
        env: The environment to read ``APPDATA`` from (default: ``os.environ``).
        home: The home folder (default: ``Path.home()``).

    Returns:
        ``%APPDATA%\\REAPER`` on Windows, ``~/Library/Application Support/REAPER`` on
        macOS, ``~/.config/REAPER`` elsewhere.
    """
    name = (system or platform.system()).lower()
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    if name.startswith("win"):
        appdata = env.get("APPDATA")
        return (Path(appdata) if appdata else home / "AppData" / "Roaming") / "REAPER"
    if name in ("darwin", "macos"):
        return home / "Library" / "Application Support" / "REAPER"
    return home / ".config" / "REAPER"


def scripts_source() -> Path:
    """The folder holding the ReaScripts that ship with this StemBridge.

    In a source tree (an editable install) that is ``integrations/reaper/StemBridge``;
    an installed wheel carries the same files as package data in
    ``bridge/hosts/reaper_scripts/`` (a link to that folder in the source tree).

    Raises:
        HostError: Neither folder exists.
    """
    package = Path(__file__).resolve().parent.parent
    candidates = (
        package.parent / "integrations" / "reaper" / "StemBridge",
        package / "hosts" / "reaper_scripts",
    )
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise HostError(
        "the REAPER scripts are not part of this installation (looked in "
        f"{' and '.join(str(folder) for folder in candidates)}); reinstall StemBridge "
        "(`pip install .` from its source tree)",
        path=candidates[0],
    )


def find_command(
    *,
    which: Which = shutil.which,
    python: str = sys.executable,
    argv0: str | None = None,
) -> list[str]:
    """The command REAPER should run to reach this StemBridge, as absolute arguments.

    REAPER started from a desktop has a minimal ``PATH``, so the command is absolute.
    In order of preference: the ``stembridge`` console script being run now
    (``argv0``), the one installed beside ``python`` (its virtual environment), one
    on ``PATH``, and finally ``python -m bridge``.

    Args:
        which: ``shutil.which``-like lookup, called as ``which(name, path=...)`` too.
        python: The interpreter for the ``-m bridge`` fallback (not resolved, so a
            virtual environment's interpreter stays itself).
        argv0: ``sys.argv[0]`` of the running command, if it may be the console script.

    Returns:
        ``[<abs stembridge>]`` or ``[<python>, "-m", "bridge"]``.
    """
    if argv0:
        script = Path(argv0)
        if script.stem.lower() == "stembridge":
            for candidate in (script, script.with_suffix(".exe")):
                if candidate.is_file():
                    return [str(candidate.resolve())]
    environment = Path(python).parent
    beside = os.pathsep.join((str(environment), str(environment / "Scripts")))
    for found in (which("stembridge", path=beside), which("stembridge")):
        if found:
            return [str(Path(found).resolve())]
    return [python, "-m", "bridge"]


def lua_string(value: str) -> str:
    """``value`` as a double-quoted Lua string literal that reads back byte for byte.

    Backslashes and quotes are escaped, control characters become three-digit
    ``\\ddd`` escapes (three digits, so a following digit cannot join them) and
    non-ASCII text stays as UTF-8, which Lua strings hold unchanged. A byte of a
    path that is not UTF-8 (Python holds it as a lone surrogate, U+DC80 to U+DCFF)
    becomes its own ``\\ddd`` escape, so the script runs that very path.
    """
    parts = ['"']
    for char in value:
        if char in ("\\", '"'):
            parts.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            parts.append(f"\\{ord(char):03d}")
        elif 0xDC80 <= ord(char) <= 0xDCFF:
            parts.append(f"\\{ord(char) - 0xDC00:03d}")
        else:
            parts.append(char)
    parts.append('"')
    return "".join(parts)


def config_chunk(command: Sequence[str]) -> str:
    """The content of ``stembridge_config.lua``: ``return { command = { ... } }``."""
    if not command:
        raise HostError("the command for REAPER to run is empty; give at least the program")
    arguments = ", ".join(lua_string(part) for part in command)
    return (
        "-- Written by `stembridge reaper install`; run it again to update this file.\n"
        f"return {{ command = {{ {arguments} }} }}\n"
    )


def install(
    resource: Path,
    *,
    command: Sequence[str],
    source: Path | None = None,
    dry_run: bool = False,
) -> InstallReport:
    """Copy the ReaScripts and write their config into ``<resource>/Scripts/StemBridge``.

    Idempotent: files that already hold the right content are not written again. A
    file whose content differs is replaced only if it is one we wrote and the user has
    not changed since; otherwise it is kept and reported. Scripts that an earlier
    install wrote but this one no longer ships are removed on the same terms.

    Args:
        resource: REAPER's resource folder; it must exist.
        command: What the scripts run to reach StemBridge (see :func:`find_command`).
        source: Folder of ``*.lua`` scripts (default: :func:`scripts_source`).
        dry_run: Work out what would happen, write nothing.

    Returns:
        What was (or would be) written, updated, left unchanged, removed or kept.

    Raises:
        HostError: The resource folder or the scripts are missing, the record of an
            earlier install is damaged, or the folder cannot be written.
    """
    folder = _scripts_folder(resource)
    source = scripts_source() if source is None else source
    wanted = _read_sources(source)
    wanted[CONFIG_NAME] = config_chunk(command).encode("utf-8")
    recorded = _read_record(folder)

    written: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    kept: list[str] = []
    removed: list[str] = []
    to_write: dict[str, bytes] = {}
    to_remove: list[str] = []
    record: dict[str, str] = {}
    for name, data in sorted(wanted.items()):
        digest = _sha256(data)
        current = _file_sha256(folder / name)
        if current is None:
            written.append(name)
            to_write[name] = data
            record[name] = digest
        elif current == digest:
            unchanged.append(name)
            record[name] = digest
        elif recorded.get(name) == current:
            updated.append(name)
            to_write[name] = data
            record[name] = digest
        else:
            # The user changed it, or it was never ours: theirs to keep.
            kept.append(name)
            if name in recorded:
                record[name] = recorded[name]
    for name, digest in sorted(recorded.items()):
        if name in wanted:
            continue
        current = _file_sha256(folder / name)
        if current is None:
            continue
        if current == digest:
            removed.append(name)
            to_remove.append(name)
        else:
            kept.append(name)

    report = InstallReport(
        action="install",
        scripts_folder=folder,
        dry_run=dry_run,
        written=tuple(written),
        updated=tuple(updated),
        unchanged=tuple(unchanged),
        removed=tuple(removed),
        kept=tuple(kept),
        command=tuple(command),
    )
    if dry_run:
        return report
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in to_write.items():
            atomic.write_bytes(folder / name, data)
        for name in to_remove:
            (folder / name).unlink(missing_ok=True)
        _write_record(folder, record)
    except OSError as exc:
        raise _write_error(folder, exc) from exc
    return report


def uninstall(resource: Path, *, dry_run: bool = False) -> InstallReport:
    """Remove what :func:`install` wrote, and nothing else.

    Only the files named in the record are candidates, and of those only the ones
    that still hold what was written; files the user changed are kept and reported.
    The scripts folder itself goes only if it is then empty.

    Args:
        resource: REAPER's resource folder; it must exist.
        dry_run: Work out what would happen, delete nothing.

    Returns:
        What was (or would be) removed and kept; ``nothing_installed`` when there was
        no record of an install.

    Raises:
        HostError: The resource folder is missing, the record is damaged, or a file
            cannot be deleted.
    """
    folder = _scripts_folder(resource)
    record_path = folder / RECORD_NAME
    if not record_path.is_file():
        return InstallReport(
            action="uninstall", scripts_folder=folder, dry_run=dry_run, nothing_installed=True
        )
    recorded = _read_record(folder)
    removed: list[str] = []
    kept: list[str] = []
    for name, digest in sorted(recorded.items()):
        current = _file_sha256(folder / name)
        if current is None:
            continue
        (removed if current == digest else kept).append(name)
    report = InstallReport(
        action="uninstall",
        scripts_folder=folder,
        dry_run=dry_run,
        removed=tuple(removed),
        kept=tuple(kept),
    )
    if dry_run:
        return report
    try:
        for name in removed:
            (folder / name).unlink(missing_ok=True)
        record_path.unlink(missing_ok=True)
        atomic.fsync_dir(folder)
        if not any(folder.iterdir()):
            folder.rmdir()
    except OSError as exc:
        raise _write_error(folder, exc) from exc
    return report


def _scripts_folder(resource: Path) -> Path:
    """``<resource>/Scripts/StemBridge``, after checking that ``resource`` exists."""
    if not resource.is_dir():
        raise HostError(
            f"REAPER's resource folder {resource} does not exist; start REAPER once so it "
            "creates it, or pass --resource-path DIR with the folder REAPER shows under "
            "Options > Show REAPER resource path",
            path=resource,
        )
    return resource / "Scripts" / SCRIPTS_FOLDER


def _read_sources(source: Path) -> dict[str, bytes]:
    """Every ``*.lua`` script in ``source`` by name (a stray config file is not copied)."""
    if not source.is_dir():
        raise HostError(
            f"the REAPER scripts folder {source} does not exist; reinstall StemBridge from "
            "its source tree",
            path=source,
        )
    scripts = {
        path.name: path.read_bytes()
        for path in sorted(source.glob("*.lua"))
        if path.is_file() and path.name != CONFIG_NAME
    }
    if not scripts:
        raise HostError(
            f"{source} holds no *.lua scripts; reinstall StemBridge from its source tree",
            path=source,
        )
    return scripts


def _read_record(folder: Path) -> dict[str, str]:
    """The record of an earlier install (name -> SHA-256); empty if there is none."""
    path = folder / RECORD_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise HostError(
            f"{path} cannot be read ({exc.strerror}); check its permissions", path=path
        ) from exc
    try:
        data = parse_json(raw)
        entries = data["files"]
        record = {entry["name"]: entry["sha256"] for entry in entries}
    except (ValueError, TypeError, KeyError) as exc:
        raise HostError(
            f"{path} is not a StemBridge install record ({exc}); delete it and run the "
            "install again (files it listed are then treated as yours and left alone)",
            path=path,
        ) from exc
    for name, digest in record.items():
        if not (isinstance(name, str) and _is_plain_name(name) and isinstance(digest, str)):
            raise HostError(
                f"{path} lists {name!r}, which is not a file name in that folder; delete "
                "the record and run the install again",
                path=path,
            )
    return record


def _write_record(folder: Path, record: Mapping[str, str]) -> None:
    """Write the record, unless it already says exactly this."""
    data = {
        "format": RECORD_FORMAT,
        "version": __version__,
        "files": [{"name": name, "sha256": record[name]} for name in sorted(record)],
    }
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    path = folder / RECORD_NAME
    encoded = text.encode("utf-8")
    if _file_sha256(path) != _sha256(encoded):
        atomic.write_bytes(path, encoded)


def _is_plain_name(name: str) -> bool:
    """Whether ``name`` names a file directly inside a folder (no way out of it)."""
    return (
        name not in ("", ".", "..", RECORD_NAME)
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and ":" not in name
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str | None:
    """The SHA-256 of the file at ``path``; None if nothing is there."""
    if not os.path.lexists(path):
        return None
    if not path.is_file():  # a folder, a dangling link: never ours
        return _NOT_A_FILE
    try:
        return _sha256(path.read_bytes())
    except OSError as exc:
        raise HostError(
            f"{path} cannot be read ({exc.strerror}); check its permissions", path=path
        ) from exc


def _write_error(folder: Path, exc: OSError) -> HostError:
    where = exc.filename or folder
    return HostError(
        f"cannot change {where} ({exc.strerror}); check the permissions of {folder} or "
        "pass --resource-path DIR with a folder you can write",
        path=Path(where),
    )
