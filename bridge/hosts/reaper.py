"""Install StemBridge's ReaScripts into REAPER's resource folder, and remove them again.

Everything goes to ``<resource>/Scripts/StemBridge/``: the ``*.lua`` scripts, the shared
``stembridge_core.lua`` beside them, the generated ``stembridge_config.lua`` (the command
the scripts run) and the install record; :mod:`bridge.hosts.script_install` does the safe
copying and removing.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import HostError
from bridge.hosts.script_install import (
    CONFIG_NAME,
    RECORD_NAME,
    find_command,
    install_files,
    read_scripts,
    shipped_scripts,
    uninstall_files,
)
from bridge.hosts.script_install import InstallReport as _InstallReport
from bridge.hosts.script_install import config_chunk as _config_chunk

__all__ = [
    "CONFIG_NAME",
    "RECORD_NAME",
    "InstallReport",
    "config_chunk",
    "default_resource_path",
    "find_command",
    "install",
    "scripts_source",
    "uninstall",
]

SCRIPTS_FOLDER = "StemBridge"
REGISTER_SCRIPT = "StemBridge - Register actions.lua"
INSTALLER = "stembridge reaper install"
_FIX = "pass --resource-path DIR with a folder you can write"

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


@dataclass(frozen=True)
class InstallReport(_InstallReport):
    """What a REAPER install or uninstall did, with the script that registers the actions."""

    @property
    def register_script(self) -> Path:
        """The script to load once in REAPER to register the actions."""
        return self.scripts_folder / REGISTER_SCRIPT

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values, with the register script."""
        return {**super().as_dict(), "register_script": str(self.register_script)}


def config_chunk(command: Sequence[str]) -> str:
    """The content of ``stembridge_config.lua``: ``return { command = { ... } }``."""
    return _config_chunk(command, installer=INSTALLER)


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
    """The folder holding the REAPER scripts that ship with this StemBridge (see
    :func:`~bridge.hosts.script_install.shipped_scripts`)."""
    return shipped_scripts("REAPER", ("integrations", "reaper", "StemBridge"), "reaper_scripts")


def install(
    resource: Path,
    *,
    command: Sequence[str],
    source: Path | None = None,
    dry_run: bool = False,
) -> InstallReport:
    """Copy the ReaScripts and the shared module, and write their config, into
    ``<resource>/Scripts/StemBridge``.

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
    wanted = read_scripts(source, host="REAPER")
    wanted[CONFIG_NAME] = config_chunk(command).encode("utf-8")
    return install_files(
        folder,
        wanted,
        dry_run=dry_run,
        fix=_FIX,
        report_type=InstallReport,
        instructions=REGISTER_INSTRUCTIONS,
        command=command,
    )


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
    return uninstall_files(
        _scripts_folder(resource),
        dry_run=dry_run,
        fix=_FIX,
        report_type=InstallReport,
        instructions=UNINSTALL_INSTRUCTIONS,
    )


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
