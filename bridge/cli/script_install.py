"""What `reaper install` and `ardour install` share: their flags and the summary they print."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape

from bridge.hosts.script_install import InstallReport

_LABELS = {
    # field: (done, dry run)
    "written": ("written", "would write"),
    "updated": ("updated", "would update"),
    "unchanged": ("unchanged", "unchanged"),
    "removed": ("removed", "would remove"),
    "kept": ("kept", "would keep"),
}
_STYLES = {"written": "green", "updated": "green", "removed": "yellow", "kept": "red"}


def add_install_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every ``<host> install`` command takes: --uninstall, --print, --json."""
    parser.add_argument(
        "--uninstall", action="store_true", help="remove what install wrote (changed files stay)"
    )
    parser.add_argument(
        "--print", action="store_true", help="show what would be done, write nothing"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a summary")


def print_install_report(
    report: InstallReport, *, folder_label: str, extra: dict[str, str] | None = None
) -> None:
    """Print ``report``: the folder, one line per file, the command and the next step.

    Args:
        report: What the install or uninstall did.
        folder_label: How the folder is called in the host ("REAPER scripts folder").
        extra: More ``label: value`` lines shown after the command (install only).
    """
    out = Console(soft_wrap=True)
    heading = folder_label + (" (dry run: nothing written)" if report.dry_run else "")
    out.print(f"{heading}: {escape(str(report.scripts_folder))}", highlight=False)
    if report.nothing_installed:
        out.print("nothing of StemBridge's is installed there; nothing to remove", highlight=False)
        return
    for field, (done, planned) in _LABELS.items():
        label = planned if report.dry_run else done
        style = _STYLES.get(field)
        for name in getattr(report, field):
            tag = f"[{style}]{label:>12}[/{style}]" if style else f"{label:>12}"
            out.print(f"{tag}  {escape(name)}", highlight=False)
    if report.kept and report.action == "install":
        out.print(
            "kept: changed by you or not written by stembridge, so left as they are; move "
            "them away and run this again to get StemBridge's versions",
            highlight=False,
        )
    elif report.kept:
        out.print(
            "kept: changed by you since the install, so left as they are; delete them "
            "yourself if you do not need them",
            highlight=False,
        )
    if report.action == "install":
        out.print(f"scripts run: {escape(' '.join(report.command))}", highlight=False)
        for label, value in (extra or {}).items():
            out.print(f"{label}: {escape(value)}", highlight=False)
    out.print(escape(report.instructions), highlight=False)
