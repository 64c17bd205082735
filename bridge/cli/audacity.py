"""``stembridge audacity separate``: the selection in a running Audacity, split into stem tracks."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from bridge.cli.common import EXIT_OK
from bridge.cli.separate import (
    add_effects_options,
    add_model_options,
    add_output_options,
    effects_settings,
    output_settings,
    separation_settings,
)

if TYPE_CHECKING:
    from bridge.effects.plan import EffectsPlan
    from bridge.models.loaded import LoadedModel
    from bridge.settings import OutputSettings, SeparationSettings


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``audacity`` and its actions to the command line."""
    audacity = commands.add_parser("audacity", help="separate the selection in Audacity")
    actions = audacity.add_subparsers(title="audacity commands", required=True, metavar="ACTION")
    parser = actions.add_parser(
        "separate",
        help="separate the selected audio in a running Audacity into new tracks",
        description="Export the selection of a running Audacity (mod-script-pipe enabled) "
        "as 32-bit float WAV, separate it into stems, and import each stem as a new track "
        "named after it, starting at the selection's start. The selection is left as it "
        "was. Files: OUTDIR/selection-<time>.wav and OUTDIR/selection-<time>/<stem>.wav "
        "plus manifest.json.",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="folder for the export and the stems (default: stembridge's data folder, audacity/)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        dest="timeout_seconds",
        metavar="SECONDS",
        help="how long to wait for Audacity to answer a command (default 30; exports and "
        "imports get 600)",
    )
    add_model_options(parser, defaults=True)
    add_output_options(parser)
    add_effects_options(parser)
    parser.set_defaults(command=run)


def default_output() -> Path:
    """``<user data dir>/stembridge/audacity``: Audacity does not tell where its project is."""
    import platformdirs

    return Path(platformdirs.user_data_dir("stembridge")) / "audacity"


def run(args: argparse.Namespace, err: Console) -> int:
    """Connect, separate the selection, place the stems, print what was done."""
    from bridge.effects.plan import plan_effects
    from bridge.hosts.audacity import separate_selection
    from bridge.hosts.audacity_pipe import ScriptPipe
    from bridge.models.catalog import get_spec
    from bridge.models.loaded import LoadedModel

    settings = separation_settings(args)
    output = output_settings(args)
    effects = plan_effects(
        effects_settings(args),
        stems=settings.stem_plans,
        model_sources=get_spec(settings.model).sources,
    )
    folder = (args.output or default_output()).expanduser().resolve()

    with err.status("connecting to Audacity"):
        pipe = ScriptPipe(
            connect_timeout_seconds=args.timeout_seconds,
            command_timeout_seconds=args.timeout_seconds,
        )
    with pipe:
        with err.status(f"loading {settings.model}"):
            separator = LoadedModel.load(settings)
        folder.mkdir(parents=True, exist_ok=True)
        export_path = _new_export_path(folder)

        def separate(path: Path) -> Mapping[str, Path]:
            return _separate_with_progress(path, separator, settings, output, effects, err)

        placed = separate_selection(pipe, export_path=export_path, separate=separate)
    for stem in placed:
        track = stem.track
        err.print(
            f"[green]✓[/green] track {track.index + 1} {escape(track.name)}: "
            f"{track.start_seconds} s to {track.end_seconds} s ({escape(str(stem.path))})",
            highlight=False,
        )
    return EXIT_OK


def _new_export_path(folder: Path) -> Path:
    """``selection-<local time>.wav``, numbered when that name is taken."""
    base = f"selection-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path, number = folder / f"{base}.wav", 1
    while path.exists() or path.with_suffix("").exists():
        number += 1
        path = folder / f"{base}-{number}.wav"
    return path


def _separate_with_progress(
    path: Path,
    separator: LoadedModel,
    settings: SeparationSettings,
    output: OutputSettings,
    effects: EffectsPlan,
    err: Console,
) -> Mapping[str, Path]:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    from bridge.separate import Progress as FileProgress
    from bridge.separate import prepare, separate_file
    from bridge.settings import TimeRange

    prepared = prepare(
        path,
        folder=path.with_suffix(""),
        stems=settings.stem_plans,
        output=output,
        time_range=TimeRange(),
        effects=effects,
    )
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[stage]}"),
        console=err,
    )
    with bars:
        task = bars.add_task("separating the selection", total=1.0, stage="analysing")

        def update(progress: FileProgress) -> None:
            bars.update(task, completed=progress.fraction, stage=progress.stage)

        manifest = separate_file(prepared, separator=separator, on_progress=update)
    return {stem.name: prepared.folder / stem.path for stem in manifest.stems}
