"""The ``stembridge`` command: parse, call the library, print.

Exit codes (also for ``python -m bridge``):

====  =====================================================================
0     everything asked for was done
1     an unexpected internal error (a bug: please report it with the log)
2     a usage or settings error (bad flag value, unknown model or stem, device)
3     the model is not available (weights missing or damaged)
4     an input cannot be used (not audio, truncated, range outside the file)
5     the output cannot be written (permissions, disk full, stems exist)
130   interrupted (Ctrl-C); nothing half-written is left behind
====  =====================================================================

With several inputs every input is attempted; the exit code is that of the first
failure. Heavy modules (numpy, soundfile, torch) are imported only by the
commands that need them.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from bridge import __version__
from bridge.errors import (
    AudioError,
    ModelError,
    OutputError,
    SettingsError,
    StemBridgeError,
)
from bridge.separation.catalog import DEFAULT_MODEL, MODELS
from bridge.settings import (
    BIT_DEPTHS,
    FORMATS,
    PRECISIONS,
    OutputSettings,
    SeparationSettings,
    TimeRange,
)

if TYPE_CHECKING:
    from bridge.separate import PreparedInput

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_INPUT = 4
EXIT_OUTPUT = 5
EXIT_INTERRUPTED = 130

log = logging.getLogger(__name__)


def exit_code_for(error: StemBridgeError) -> int:
    """The documented exit code for an error."""
    if isinstance(error, SettingsError):
        return EXIT_USAGE
    if isinstance(error, ModelError):
        return EXIT_MODEL
    if isinstance(error, AudioError):
        return EXIT_INPUT
    if isinstance(error, OutputError):
        return EXIT_OUTPUT
    return EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    err = Console(stderr=True, soft_wrap=True)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
        force=True,
    )
    command: Callable[[argparse.Namespace, Console], int] = args.command
    try:
        return command(args, err)
    except StemBridgeError as exc:
        _print_error(err, "stembridge: error:", exc)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        err.print("[yellow]stembridge: interrupted; nothing half-written was kept[/yellow]")
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stembridge",
        description="Stem separation (HT Demucs) for the places where music is made.",
    )
    parser.add_argument("--version", action="version", version=f"stembridge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is happening")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    separate = commands.add_parser(
        "separate",
        help="separate audio files into stems",
        description="Separate audio files into stems: OUTDIR/<file name>/<stem>.<ext> plus "
        "manifest.json. Stems keep the input's sample rate, channels, bit depth and "
        "exact length unless told otherwise.",
    )
    separate.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="audio files")
    separate.add_argument(
        "-o", "--output", type=Path, help="output folder (default: each input's own folder)"
    )
    separate.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"one of {', '.join(MODELS)} (default %(default)s)"
    )
    separate.add_argument(
        "--stems",
        help="comma-separated stems: sources (vocals,drums...), instrumental, no_<stem>, "
        "or <name>=<stem>+<stem> (default: every source)",
    )
    separate.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default %(default)s)"
    )
    separate.add_argument(
        "--shifts", type=int, default=0, help="random shifts to average, 0 = deterministic"
    )
    separate.add_argument(
        "--overlap", type=float, default=0.25, help="segment overlap, 0 to 0.99 (default 0.25)"
    )
    separate.add_argument("--segment", type=float, help="segment length in seconds")
    separate.add_argument(
        "--batch-size", type=int, help="segments per forward pass (default: 1 on CPU, more on GPU)"
    )
    separate.add_argument(
        "--precision", default="fp32", choices=PRECISIONS, help="fp16/bf16 need CUDA"
    )
    separate.add_argument("--start", type=float, default=0.0, help="range start in seconds")
    separate.add_argument("--length", type=float, help="range length in seconds (default: to end)")
    separate.add_argument("--format", choices=FORMATS, help="output format (default: the input's)")
    separate.add_argument(
        "--bit-depth", type=int, choices=BIT_DEPTHS, help="16, 24 or 32 (float); default: input's"
    )
    separate.add_argument("--sample-rate", type=int, help="output Hz (default: the input's)")
    separate.add_argument("--overwrite", action="store_true", help="replace existing stems")
    separate.add_argument(
        "--json", action="store_true", help="print one JSON result on stdout, no progress bars"
    )
    separate.set_defaults(command=_cmd_separate)

    models = commands.add_parser("models", help="list, install or locate model weights")
    model_commands = models.add_subparsers(title="models commands", required=True, metavar="ACTION")
    listing = model_commands.add_parser("list", help="each model: installed or not, where, size")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(command=_cmd_models_list)
    install = model_commands.add_parser("install", help="copy and verify model files from a folder")
    install.add_argument(
        "--from", dest="source", type=Path, required=True, help="folder holding model files"
    )
    install.add_argument("names", nargs="*", metavar="MODEL", help="only these models")
    install.set_defaults(command=_cmd_models_install)
    path = model_commands.add_parser("path", help="where models are installed and searched")
    path.set_defaults(command=_cmd_models_path)
    return parser


def _cmd_separate(args: argparse.Namespace, err: Console) -> int:
    from bridge.separate import prepare
    from bridge.separation.stems import parse_stem_list

    settings = SeparationSettings(
        model=args.model,
        stems=parse_stem_list(args.stems) if args.stems else (),
        device=args.device,
        shifts=args.shifts,
        overlap=args.overlap,
        segment_seconds=args.segment,
        batch_size=args.batch_size,
        precision=args.precision,
    )
    output = OutputSettings(
        format=args.format,
        bit_depth=args.bit_depth,
        sample_rate=args.sample_rate,
        overwrite=args.overwrite,
    )
    time_range = TimeRange(start_seconds=args.start, length_seconds=args.length)

    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    prepared: list[PreparedInput] = []
    folders: dict[Path, Path] = {}
    for path in args.inputs:
        try:
            item = prepare(
                path,
                folder=(args.output or path.parent) / path.stem,
                stems=settings.stem_plans,
                output=output,
                time_range=time_range,
            )
            if item.folder in folders:
                raise OutputError(
                    f"{path}: its stems would go to {item.folder}, like those of "
                    f"{folders[item.folder]}; separate them in two runs with different -o",
                    path=item.folder,
                )
            folders[item.folder] = path
            prepared.append(item)
        except StemBridgeError as exc:
            errors.append(_error_entry(path, exc))
            if not args.json:
                _print_error(err, "✗", exc)

    if prepared:
        _separate_prepared(prepared, settings, args, err, results, errors)

    if args.json:
        print(json.dumps({"ok": not errors, "results": results, "errors": errors}, indent=2))
    return errors[0]["exit_code"] if errors else EXIT_OK


def _separate_prepared(
    prepared: list[PreparedInput],
    settings: SeparationSettings,
    args: argparse.Namespace,
    err: Console,
    results: list[dict[str, Any]],
    errors: list[dict[str, Any]],
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from bridge.separate import Progress as FileProgress
    from bridge.separate import separate_file
    from bridge.separation.separator import Separator

    try:
        separator = Separator.load(settings)
    except StemBridgeError as exc:
        errors.extend(_error_entry(item.info.path, exc) for item in prepared)
        if not args.json:
            _print_error(err, "stembridge: error:", exc)
        return

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[stage]}"),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=args.json,
    )
    with bars:
        for item in prepared:
            task = bars.add_task(escape(item.info.path.name), total=None, stage="analysing")

            def update(progress: FileProgress, task: Any = task) -> None:
                bars.update(
                    task,
                    completed=progress.done,
                    total=progress.total,
                    stage=progress.stage,
                )

            try:
                manifest = separate_file(item, separator=separator, on_progress=update)
            except StemBridgeError as exc:
                errors.append(_error_entry(item.info.path, exc))
                bars.update(task, stage="failed")
                if not args.json:
                    _print_error(err, "✗", exc)
                continue
            entry = manifest.to_dict()
            entry["folder"] = str(item.folder)
            results.append(entry)
            if not args.json:
                stems = escape(", ".join(stem.path for stem in manifest.stems))
                err.print(
                    f"[green]✓[/green] {escape(item.info.path.name)} → "
                    f"{escape(str(item.folder))} ({stems}) in "
                    f"{manifest.timings['total_seconds']:.1f} s "
                    f"({manifest.timings['realtime_factor']:.2f}x realtime)",
                    highlight=False,
                )


def _print_error(err: Console, prefix: str, exc: BaseException) -> None:
    err.print(f"[red]{prefix}[/red] {escape(str(exc))}", highlight=False)


def _error_entry(path: Path, exc: StemBridgeError) -> dict[str, Any]:
    return {
        "input": str(path),
        "error": str(exc),
        "kind": type(exc).__name__,
        "exit_code": exit_code_for(exc),
    }


def _cmd_models_list(args: argparse.Namespace, err: Console) -> int:
    from bridge.separation.weights import find_installed

    rows: list[dict[str, Any]] = []
    for spec in MODELS.values():
        files = find_installed(spec)
        rows.append(
            {
                "name": spec.name,
                "stems": list(spec.sources),
                "installed": files is not None,
                "where": files.origin if files else None,
                "size_bytes": files.size_bytes if files else None,
                "description": spec.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = Table(title="StemBridge models")
    for column in ("model", "stems", "installed", "where", "size"):
        table.add_column(column)
    for row in rows:
        size = f"{row['size_bytes'] / 1e6:.0f} MB" if row["size_bytes"] else "-"
        table.add_row(
            row["name"],
            ", ".join(row["stems"]),
            "[green]yes[/green]" if row["installed"] else "[red]no[/red]",
            row["where"] or "-",
            size,
        )
    Console().print(table)
    return EXIT_OK


def _cmd_models_install(args: argparse.Namespace, err: Console) -> int:
    from bridge.separation.catalog import get_spec
    from bridge.separation.weights import install_from

    for name in args.names:
        get_spec(name)
    installed = install_from(args.source, names=args.names or None)
    for files in installed:
        print(f"installed {files.spec.name} into {files.origin}")
    return EXIT_OK


def _cmd_models_path(args: argparse.Namespace, err: Console) -> int:
    from bridge.separation.weights import hf_cache_folder, install_folder, search_folders

    print(install_folder())
    err.print("searched, in order:", highlight=False)
    for folder in search_folders():
        err.print(f"  {escape(str(folder))}", highlight=False)
    err.print(f"  {escape(str(hf_cache_folder()))} (Hugging Face cache)", highlight=False)
    return EXIT_OK
