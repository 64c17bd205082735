"""``stembridge presets list|show NAME``: the effects presets and what they do."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridge.cli.common import EXIT_OK
from bridge.effects.presets import list_presets, load_preset, user_preset_dir
from bridge.errors import StemBridgeError


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``presets`` and its actions to the command line."""
    presets = commands.add_parser("presets", help="list or show effects presets")
    actions = presets.add_subparsers(title="presets commands", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every preset: bundled and your own")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(command=run_list)
    show = actions.add_parser("show", help="check one preset and show what it does")
    show.add_argument("name", metavar="NAME", help="preset name or .toml path")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(command=run_show)


def run_list(args: argparse.Namespace, err: Console) -> int:
    """Print every preset ``--preset`` can name."""
    rows = []
    for name, path, origin in list_presets():
        try:
            description = load_preset(str(path)).description
            problem = None
        except StemBridgeError as exc:  # a broken user preset is listed, with why
            description, problem = "", str(exc)
        rows.append(
            {
                "name": name,
                "origin": origin,
                "path": str(path),
                "description": description,
                "error": problem,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = Table(title=f"StemBridge presets (yours go in {user_preset_dir()})")
    for column in ("preset", "from", "what it does"):
        table.add_column(column)
    for row in rows:
        if row["error"]:
            what = f"[red]invalid: {escape(str(row['error']))}[/red]"
        else:
            what = escape(str(row["description"]))
        table.add_row(escape(str(row["name"])), str(row["origin"]), what)
    Console(soft_wrap=True).print(table)
    return EXIT_OK


def run_show(args: argparse.Namespace, err: Console) -> int:
    """Validate one preset and print its stems, chains and loudness."""
    preset = load_preset(args.name)
    loudness = preset.loudness
    data = {
        "name": preset.name,
        "path": str(preset.path),
        "description": preset.description,
        "stems": {
            stem: {
                "chain": [spec.describe() for spec in treatment.chain],
                "tail_seconds": treatment.tail_seconds,
            }
            for stem, treatment in preset.stems.items()
        },
        "loudness": None
        if loudness is None
        else {
            "target_lufs": loudness.target_lufs,
            "match_mix": loudness.match_mix,
            "true_peak_dbtp": loudness.true_peak_dbtp,
        },
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    out = Console(soft_wrap=True, highlight=False)
    out.print(f"[bold]{escape(preset.name)}[/bold]: {escape(preset.description)}")
    out.print(f"file: {escape(str(preset.path))}")
    if not preset.stems:
        out.print("stems: unchanged")
    for stem, treatment in preset.stems.items():
        chain = " → ".join(spec.describe() for spec in treatment.chain) or "no effects"
        tail = f" (keeps {treatment.tail_seconds:g} s of tail)" if treatment.tail_seconds else ""
        out.print(f"  {escape(stem)}: {escape(chain)}{tail}")
    if loudness is not None:
        target = "the mix's loudness" if loudness.match_mix else f"{loudness.target_lufs:g} LUFS"
        ceiling = loudness.true_peak_dbtp
        out.print(
            f"loudness: every stem to {target}"
            + (f", true peak at most {ceiling:g} dBTP" if ceiling is not None else "")
        )
    return EXIT_OK
