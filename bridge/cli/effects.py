"""``stembridge effects``: every effect a preset may name, with its parameters' ranges."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridge.cli.common import EXIT_OK
from bridge.effects.catalog import EFFECTS, REFUSED, Parameter


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``effects`` to the command line."""
    effects = commands.add_parser(
        "effects",
        help="every effect a preset may use, with its parameters and their ranges",
        description="List the built-in effects a preset chain may name (`effect = NAME`), "
        "each parameter with the values allowed. Third-party plugins (`plugin = PATH`) "
        "take their own parameters, checked when the plugin is loaded.",
    )
    effects.add_argument("--json", action="store_true", help="print JSON instead of a table")
    effects.set_defaults(command=run_effects)


def parameter_range(parameter: Parameter) -> dict[str, Any]:
    """One parameter's range as ``--json`` output gives it."""
    return {
        "minimum": parameter.minimum,
        "maximum": parameter.maximum,
        "below_nyquist": parameter.below_nyquist,
    }


def run_effects(args: argparse.Namespace, err: Console) -> int:
    """Print every effect, its parameters and their ranges, and the refused effects."""
    if args.json:
        data = {
            "effects": {
                effect: {name: parameter_range(p) for name, p in parameters.items()}
                for effect, parameters in EFFECTS.items()
            },
            "refused": dict(REFUSED),
        }
        print(json.dumps(data, indent=2))
        return EXIT_OK
    table = Table(title="Effects a preset chain may name")
    for column in ("effect", "parameter", "allowed"):
        table.add_column(column)
    for effect, parameters in EFFECTS.items():
        if not parameters:
            table.add_row(effect, "-", "no parameters")
        for index, (name, parameter) in enumerate(parameters.items()):
            table.add_row(effect if index == 0 else "", name, parameter.describe())
        table.add_section()
    for effect, reason in REFUSED.items():
        table.add_row(effect, "-", f"[red]refused: {escape(reason)}[/red]")
    out = Console(soft_wrap=True, highlight=False)
    out.print(table)
    out.print(
        "Third-party plugins: { plugin = PATH, parameters = { ... } } (VST3; AU on macOS); "
        "their parameters are checked when the plugin is loaded."
    )
    return EXIT_OK
