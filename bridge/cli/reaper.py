"""``stembridge reaper install``: put the ReaScripts where REAPER finds them (or take them out)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bridge.cli.common import EXIT_OK
from bridge.hosts.reaper import (
    InstallReport,
    default_resource_path,
    find_command,
    install,
    uninstall,
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``reaper`` and its actions to the command line."""
    reaper = commands.add_parser("reaper", help="install the REAPER scripts")
    actions = reaper.add_subparsers(title="reaper commands", required=True, metavar="ACTION")
    parser = actions.add_parser(
        "install",
        help="copy the StemBridge ReaScripts into REAPER's resource folder",
        description="Copy the StemBridge ReaScripts into <resource>/Scripts/StemBridge and "
        "write the command they run. Files you changed or added there are never replaced "
        "or deleted.",
    )
    parser.add_argument(
        "--resource-path",
        type=Path,
        metavar="DIR",
        help="REAPER's resource folder (default: the platform's; REAPER shows it under "
        "Options > Show REAPER resource path)",
    )
    parser.add_argument(
        "--uninstall", action="store_true", help="remove what install wrote (changed files stay)"
    )
    parser.add_argument(
        "--print", action="store_true", help="show what would be done, write nothing"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    parser.set_defaults(command=run_install)


def run_install(args: argparse.Namespace, err: Console) -> int:
    """Install (or uninstall) the scripts and print what changed."""
    resource = (args.resource_path or default_resource_path()).expanduser().resolve()
    if args.uninstall:
        report = uninstall(resource, dry_run=args.print)
    else:
        command = find_command(argv0=sys.argv[0])
        report = install(resource, command=command, dry_run=args.print)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
        return EXIT_OK
    _print_summary(report)
    return EXIT_OK


_LABELS = {
    # field: (done, dry run)
    "written": ("written", "would write"),
    "updated": ("updated", "would update"),
    "unchanged": ("unchanged", "unchanged"),
    "removed": ("removed", "would remove"),
    "kept": ("kept", "would keep"),
}
_STYLES = {"written": "green", "updated": "green", "removed": "yellow", "kept": "red"}


def _print_summary(report: InstallReport) -> None:
    out = Console(soft_wrap=True)
    heading = "REAPER scripts folder" + (" (dry run: nothing written)" if report.dry_run else "")
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
        out.print(f"register script: {escape(str(report.register_script))}", highlight=False)
    out.print(escape(report.instructions), highlight=False)
