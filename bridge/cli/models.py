"""``stembridge models list|install|path``: what weights are where."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridge.cli.common import EXIT_OK
from bridge.models.catalog import MODELS


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``models`` and its actions to the command line."""
    models = commands.add_parser("models", help="list, install or locate model weights")
    actions = models.add_subparsers(title="models commands", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="each model: installed or not, where, size")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(command=run_list)
    install = actions.add_parser("install", help="copy and verify model files from a folder")
    install.add_argument(
        "--from", dest="source", type=Path, required=True, help="folder holding model files"
    )
    install.add_argument("names", nargs="*", metavar="MODEL", help="only these models")
    install.set_defaults(command=run_install)
    path = actions.add_parser("path", help="where models are installed and searched")
    path.set_defaults(command=run_path)


def run_list(args: argparse.Namespace, err: Console) -> int:
    """Print every known model: family, stems, installed or not, published SDR, licence."""
    from bridge.models.weights import find_installed

    rows: list[dict[str, Any]] = []
    for spec in MODELS.values():
        files = find_installed(spec)
        rows.append(
            {
                "name": spec.name,
                "family": spec.family,
                "stems": list(spec.sources),
                "installed": files is not None,
                "where": files.origin if files else None,
                "size_bytes": files.size_bytes if files else None,
                "scores": [
                    {"stem": score.stem, "sdr_db": score.sdr_db, "source": score.where}
                    for score in spec.scores
                ],
                "licence": spec.licence,
                "files": [
                    {"name": file.name, "urls": list(file.urls), "sha256": file.sha256}
                    for file in spec.files
                ],
                "aliases": list(spec.aliases),
                "description": spec.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = Table(title="StemBridge models")
    for column in ("model", "family", "stems", "installed", "SDR (dB)", "size", "licence"):
        table.add_column(column)
    for row in rows:
        size = f"{row['size_bytes'] / 1e6:.0f} MB" if row["size_bytes"] else "-"
        sdr = ", ".join(f"{s['stem']} {s['sdr_db']:.2f}" for s in row["scores"]) or "-"
        table.add_row(
            row["name"],
            row["family"],
            ", ".join(row["stems"]),
            "[green]yes[/green]" if row["installed"] else "[red]no[/red]",
            escape(sdr),
            size,
            escape(row["licence"]),
        )
    Console().print(table)
    err.print(
        "SDR: as published (see --json for the source of each figure); other names users know "
        "(UVR's file names) work as --model too, as does the path of a model file",
        highlight=False,
    )
    return EXIT_OK


def run_install(args: argparse.Namespace, err: Console) -> int:
    """Copy and verify model files into the install folder."""
    from bridge.models.catalog import get_spec
    from bridge.models.weights import install_from

    for name in args.names:
        get_spec(name)
    for files in install_from(args.source, names=args.names or None):
        print(f"installed {files.spec.name} into {files.origin}")
    return EXIT_OK


def run_path(args: argparse.Namespace, err: Console) -> int:
    """Print the install folder (stdout) and the search order (stderr)."""
    from bridge.models.weights import hf_cache_folder, install_folder, search_folders

    print(install_folder())
    err.print("searched, in order:", highlight=False)
    for folder in search_folders():
        err.print(f"  {escape(str(folder))}", highlight=False)
    err.print(f"  {escape(str(hf_cache_folder()))} (Hugging Face cache)", highlight=False)
    return EXIT_OK
