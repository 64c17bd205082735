"""Copy a host's Lua scripts into a folder the user also uses, safely, and take them out again.

Shared by the REAPER and Ardour installers. A folder gets the host's scripts, the Lua
module every host's scripts load from their own folder (:data:`SHARED_MODULE`, from
``integrations/common``), a generated config chunk (the command the scripts run,
:func:`config_chunk`) and a record,
``.stembridge-installed.json``, of every file written with its SHA-256. The record is
what makes this safe in a folder the user may also use: a file is replaced or deleted
only while it still holds exactly what we wrote (or what we would write); anything else
is kept and reported, and nothing outside the folder is ever touched.

The config chunk is one Lua statement::

    return { command = { "/abs/path/to/stembridge" } }

or, where no ``stembridge`` console script exists,
``{ "/abs/path/to/python", "-m", "bridge" }``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bridge import __version__, atomic
from bridge.documents import parse_json
from bridge.errors import HostError

CONFIG_NAME = "stembridge_config.lua"
#: The quoting, config and status-file reading that the REAPER and the Ardour libraries
#: share; each loads it from the folder it is in.
SHARED_MODULE = "stembridge_core.lua"
RECORD_NAME = ".stembridge-installed.json"
RECORD_FORMAT = 1
# Stands for something at a script's name that is not a regular file (a folder, say):
# it matches no digest, so it is never overwritten or deleted.
_NOT_A_FILE = "not a file"

Which = Callable[..., str | None]


@dataclass(frozen=True)
class InstallReport:
    """What an install or uninstall did (or, for a dry run, would do).

    File names are relative to ``scripts_folder``; the record file itself is
    bookkeeping and is not listed.

    Attributes:
        action: ``"install"`` or ``"uninstall"``.
        scripts_folder: The folder the host loads the scripts from.
        instructions: What the user does next in the host.
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
    instructions: str = ""
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
            "instructions": self.instructions,
        }


Report = TypeVar("Report", bound=InstallReport)


def find_command(
    *,
    which: Which = shutil.which,
    python: str = sys.executable,
    argv0: str | None = None,
) -> list[str]:
    """The command a host should run to reach this StemBridge, as absolute arguments.

    A host started from a desktop has a minimal ``PATH``, so the command is absolute.
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


def config_chunk(command: Sequence[str], *, installer: str = "stembridge reaper install") -> str:
    """The content of ``stembridge_config.lua``: ``return { command = { ... } }``.

    Args:
        command: The program and its leading arguments.
        installer: The command that wrote it, named in the file's first line.
    """
    if not command:
        raise HostError("the command for the host to run is empty; give at least the program")
    arguments = ", ".join(lua_string(part) for part in command)
    return (
        f"-- Written by `{installer}`; run it again to update this file.\n"
        f"return {{ command = {{ {arguments} }} }}\n"
    )


def read_scripts(source: Path, *, host: str) -> dict[str, bytes]:
    """The files a host's folder gets, by name: every ``*.lua`` script in ``source`` and,
    beside them, the shared module they load (:data:`SHARED_MODULE`). A stray config
    file or copy of the shared module in ``source`` is not copied.

    Raises:
        HostError: A folder or the shared module is missing, or ``source`` holds no scripts.
    """
    if not source.is_dir():
        raise HostError(
            f"the {host} scripts folder {source} does not exist; reinstall StemBridge from "
            "its source tree",
            path=source,
        )
    scripts = {
        path.name: path.read_bytes()
        for path in sorted(source.glob("*.lua"))
        if path.is_file() and path.name not in (CONFIG_NAME, SHARED_MODULE)
    }
    if not scripts:
        raise HostError(
            f"{source} holds no *.lua scripts; reinstall StemBridge from its source tree",
            path=source,
        )
    shared = shared_module_source() / SHARED_MODULE
    try:
        scripts[SHARED_MODULE] = shared.read_bytes()
    except OSError as exc:
        raise HostError(
            f"{shared} cannot be read ({exc.strerror}); reinstall StemBridge from its source tree",
            path=shared,
        ) from exc
    return scripts


def install_files(
    folder: Path,
    wanted: Mapping[str, bytes],
    *,
    dry_run: bool,
    fix: str,
    report_type: type[Report],
    instructions: str,
    command: Sequence[str],
) -> Report:
    """Make ``folder`` hold ``wanted`` (name -> content), as far as it is ours to change.

    Idempotent: files that already hold the right content are not written again. A
    file whose content differs is replaced only if it is one we wrote and the user has
    not changed since; otherwise it is kept and reported. Files that an earlier install
    wrote but this one no longer ships are removed on the same terms.

    Args:
        folder: Where the files go; created when missing.
        wanted: The files by name (plain names, no folders).
        dry_run: Work out what would happen, write nothing.
        fix: What the user can do when the folder cannot be written (ends the error).
        report_type: The host's report class (an :class:`InstallReport`).
        instructions: What the user does next in the host.
        command: The command the scripts run, for the report.

    Returns:
        What was (or would be) written, updated, left unchanged, removed or kept.

    Raises:
        HostError: The record of an earlier install is damaged, or the folder cannot be
            written.
    """
    recorded = _read_record(folder)
    written: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    kept: list[str] = []
    removed: list[str] = []
    to_write: dict[str, bytes] = {}
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
        (removed if current == digest else kept).append(name)

    report = report_type(
        action="install",
        scripts_folder=folder,
        instructions=instructions,
        command=tuple(command),
        dry_run=dry_run,
        written=tuple(written),
        updated=tuple(updated),
        unchanged=tuple(unchanged),
        removed=tuple(removed),
        kept=tuple(kept),
    )
    if dry_run:
        return report
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in to_write.items():
            atomic.write_bytes(folder / name, data)
        for name in removed:
            (folder / name).unlink(missing_ok=True)
        _write_record(folder, record)
    except OSError as exc:
        raise _write_error(folder, exc, fix) from exc
    return report


def uninstall_files(
    folder: Path, *, dry_run: bool, fix: str, report_type: type[Report], instructions: str
) -> Report:
    """Remove what :func:`install_files` wrote into ``folder``, and nothing else.

    Only the files named in the record are candidates, and of those only the ones
    that still hold what was written; files the user changed are kept and reported.
    The folder itself goes only if it is then empty.

    Args:
        folder: The folder an install wrote to.
        dry_run: Work out what would happen, delete nothing.
        fix: What the user can do when a file cannot be deleted (ends the error).
        report_type: The host's report class (an :class:`InstallReport`).
        instructions: What the user does next in the host.

    Returns:
        An ``uninstall`` report; ``nothing_installed`` when there was no record.

    Raises:
        HostError: The record is damaged, or a file cannot be deleted.
    """
    record_path = folder / RECORD_NAME
    if not record_path.is_file():
        return report_type(
            action="uninstall",
            scripts_folder=folder,
            instructions=instructions,
            dry_run=dry_run,
            nothing_installed=True,
        )
    recorded = _read_record(folder)
    removed: list[str] = []
    kept: list[str] = []
    for name, digest in sorted(recorded.items()):
        current = _file_sha256(folder / name)
        if current is None:
            continue
        (removed if current == digest else kept).append(name)
    report = report_type(
        action="uninstall",
        scripts_folder=folder,
        instructions=instructions,
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
        raise _write_error(folder, exc, fix) from exc
    return report


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


def _write_error(folder: Path, exc: OSError, fix: str) -> HostError:
    where = exc.filename or folder
    return HostError(
        f"cannot change {where} ({exc.strerror}); check the permissions of {folder} or {fix}",
        path=Path(where),
    )


def shipped_scripts(host: str, source_tree: tuple[str, ...], packaged: str) -> Path:
    """The folder holding a host's scripts that ship with this StemBridge.

    In a source tree (an editable install) that is ``source_tree`` under the
    repository; an installed wheel carries the same files as package data in
    ``bridge/hosts/<packaged>/`` (a link to that folder in the source tree).

    Raises:
        HostError: Neither folder exists.
    """
    package = Path(__file__).resolve().parent.parent
    candidates = (package.parent.joinpath(*source_tree), package / "hosts" / packaged)
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise HostError(
        f"the {host} scripts are not part of this installation (looked in "
        f"{' and '.join(str(folder) for folder in candidates)}); reinstall StemBridge "
        "(`pip install .` from its source tree)",
        path=candidates[0],
    )


def shared_module_source() -> Path:
    """The folder holding :data:`SHARED_MODULE` as it ships with this StemBridge
    (``integrations/common``; see :func:`shipped_scripts`)."""
    return shipped_scripts("shared Lua", ("integrations", "common"), "common_scripts")
