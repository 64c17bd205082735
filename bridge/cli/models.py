"""``stembridge models list|install|import|path``: what weights are where."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridge.cli.common import EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``models`` and its actions to the command line."""
    models = commands.add_parser("models", help="list, install or locate model weights")
    actions = models.add_subparsers(title="models commands", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="each model: installed or not, where, size")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.add_argument(
        "--installed",
        action="store_true",
        help="only the installed models (a named ensemble: when all its models are)",
    )
    listing.set_defaults(command=run_list)
    install = actions.add_parser("install", help="copy and verify model files from a folder")
    install.add_argument(
        "--from", dest="source", type=Path, required=True, help="folder holding model files"
    )
    install.add_argument("names", nargs="*", metavar="MODEL", help="only these models")
    install.set_defaults(command=run_install)
    imports = actions.add_parser(
        "import",
        help=(
            "register the models in a UVR, python-audio-separator, MSST, Open-Unmix or "
            "Spleeter model folder"
        ),
    )
    imports.add_argument("folder", type=Path, metavar="FOLDER", help="the model folder")
    imports.add_argument(
        "--copy", action="store_true", help="copy the files into the install folder"
    )
    imports.add_argument("--json", action="store_true", help="print JSON instead of a table")
    imports.set_defaults(command=run_import)
    path = actions.add_parser("path", help="where models are installed and searched")
    path.set_defaults(command=run_path)


def run_list(args: argparse.Namespace, err: Console) -> int:
    """Print every known model: family, stems, installed or not, published SDR, licence;
    then the models only an import registered (``--installed``: only what is installed)."""
    from bridge.models.listing import model_rows

    rows = model_rows(installed_only=args.installed)
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


def run_import(args: argparse.Namespace, err: Console) -> int:
    """Register (or copy) the models of another tool's folder; say what was skipped."""
    from bridge.models.importer import import_folder

    result = import_folder(args.folder, copy=args.copy)
    entry = result.entry
    if args.json:
        document = {
            "folder": str(entry.folder),
            "copied_to": None if entry.copied_to is None else str(entry.copied_to),
            "registry": str(result.registry),
            "models": [
                {
                    "name": model.name,
                    "family": model.family,
                    "stems": list(model.stems),
                    "catalog": model.catalog,
                    "files": [str(path) for path in model.files],
                    "found": model.found,
                }
                for model in entry.models
            ],
            "skipped": [{"path": str(item.path), "reason": item.reason} for item in result.skipped],
        }
        print(json.dumps(document, indent=2))
        return EXIT_OK
    table = Table(title=f"Models in {escape(str(entry.folder))}")
    for column in ("--model", "family", "stems", "catalog model", "found"):
        table.add_column(column)
    for model in entry.models:
        table.add_row(
            escape(model.name),
            model.family,
            escape(", ".join(model.stems)),
            model.catalog or "-",
            escape(model.found),
        )
    Console().print(table)
    for item in result.skipped:
        err.print(f"skipped {escape(str(item.path))}: {escape(item.reason)}", highlight=False)
    where = f"copied into {entry.copied_to}, " if entry.copied_to else ""
    err.print(
        f"{len(entry.models)} model(s) {escape(where)}registered in {escape(str(result.registry))}",
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
    from bridge.models.registry import read_registry, registry_path
    from bridge.models.weights import hf_cache_folder, install_folder, search_folders

    print(install_folder())
    err.print("searched, in order:", highlight=False)
    for folder in search_folders():
        err.print(f"  {escape(str(folder))}", highlight=False)
    err.print(f"  {escape(str(hf_cache_folder()))} (Hugging Face cache)", highlight=False)
    for imported in read_registry():
        err.print(f"  {escape(str(imported.folder))} (imported)", highlight=False)
    err.print(f"imported folders are listed in {escape(str(registry_path()))}", highlight=False)
    return EXIT_OK
