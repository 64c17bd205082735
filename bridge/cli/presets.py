"""``stembridge presets list|show NAME``: the effects presets and what they do."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridge.cli.common import EXIT_OK
from bridge.cli.effects import parameter_range
from bridge.effects.catalog import EFFECTS
from bridge.effects.presets import (
    EffectSpec,
    PluginValue,
    list_presets,
    load_preset,
    user_preset_dir,
)
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
    """Validate one preset and print its stems, chains (each value with its allowed
    range) and loudness."""
    preset = load_preset(args.name)
    loudness = preset.loudness
    data = {
        "name": preset.name,
        "path": str(preset.path),
        "description": preset.description,
        "stems": {
            stem: {
                "chain": [spec.describe() for spec in treatment.chain],
                "effects": [_link_entry(spec) for spec in treatment.chain],
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
        tail = f" (keeps {treatment.tail_seconds:g} s of tail)" if treatment.tail_seconds else ""
        out.print(f"  {escape(stem)}:{' no effects' if not treatment.chain else ''}{tail}")
        for number, spec in enumerate(treatment.chain, start=1):
            out.print(f"    {number}. {escape(_link_line(spec))}")
    if loudness is not None:
        target = "the mix's loudness" if loudness.match_mix else f"{loudness.target_lufs:g} LUFS"
        ceiling = loudness.true_peak_dbtp
        out.print(
            f"loudness: every stem to {target}"
            + (f", true peak at most {ceiling:g} dBTP" if ceiling is not None else "")
        )
    if any(treatment.chain for treatment in preset.stems.values()):
        out.print("every effect and its parameters: stembridge effects")
    return EXIT_OK


def _link_entry(spec: EffectSpec) -> dict[str, Any]:
    """One link of a chain for ``--json``: its parameters with their values and ranges."""
    if spec.is_plugin:
        return {
            "plugin": spec.plugin_path,
            "name": spec.plugin_name,
            # A plugin declares its own ranges; they are checked when it is loaded.
            "parameters": {name: {"value": value} for name, value in spec.parameters},
        }
    ranges = EFFECTS[spec.effect]
    return {
        "effect": spec.effect,
        "parameters": {
            name: {"value": value, **parameter_range(ranges[name])}
            for name, value in spec.parameters
        },
    }


def _link_line(spec: EffectSpec) -> str:
    """``Compressor: threshold_db = -20 (-60 to 0), ratio = 3 (1 to 30)``."""
    if spec.plugin_path is not None:
        label = Path(spec.plugin_path).name + (f":{spec.plugin_name}" if spec.plugin_name else "")
        values = ", ".join(f"{name} = {value!r}" for name, value in spec.parameters)
        return f"plugin {label}: {values or 'its defaults'} (its own ranges, checked when loaded)"
    ranges = EFFECTS[spec.effect]
    values = ", ".join(
        f"{name} = {_number(value)} ({ranges[name].describe()})" for name, value in spec.parameters
    )
    return f"{spec.effect}: {values or 'no parameters'}"


def _number(value: PluginValue) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value)
