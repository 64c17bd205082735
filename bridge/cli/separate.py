"""``stembridge separate``: files in, stem files out, with progress bars."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from bridge import schema
from bridge.cli.common import EXIT_OK, error_entry, print_error
from bridge.errors import StemBridgeError
from bridge.pipeline.spec import JobSpec
from bridge.settings import EffectsSettings, OutputSettings, SeparationSettings, TimeRange

if TYPE_CHECKING:
    from bridge.models.loaded import Model
    from bridge.pipeline.run import Result

log = logging.getLogger(__name__)


def add_model_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """``--model``, ``--stems`` and the engine options (``defaults``: fill in the defaults;
    otherwise unset options are ``None`` and the config decides)."""
    _add_flags(parser, SeparationSettings, defaults=defaults)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--format``, ``--bit-depth``, ``--sample-rate``, lossy quality, dither, ``--overwrite``,
    ``--no-pictures``."""
    _add_flags(parser, OutputSettings)


def add_effects_options(parser: argparse.ArgumentParser) -> None:
    """``--preset``, exact-sum and loudness options (unset ones leave it to the preset)."""
    _add_flags(parser, EffectsSettings)


def add_range_options(parser: argparse.ArgumentParser) -> None:
    """``--start`` and ``--length`` in seconds (as ``args.start`` and ``args.length``)."""
    _add_flags(
        parser,
        TimeRange,
        defaults=True,
        dests={"start_seconds": "start", "length_seconds": "length"},
    )


def _add_flags(
    parser: argparse.ArgumentParser,
    kind: type[Any],
    *,
    defaults: bool = False,
    dests: dict[str, str] | None = None,
) -> None:
    """A flag for each setting of ``kind`` that declares one (see :mod:`bridge.schema`):
    its type, choices and help as declared; stored under the setting's name unless
    ``dests`` says otherwise. Unset flags are ``None`` unless ``defaults``."""
    for field in schema.fields(kind):
        setting, declared = field.setting, field.kind
        if setting.flag is None:
            continue
        dest = (dests or {}).get(field.name, field.name)
        default = field.default if defaults else None
        if declared.base is bool:
            action: Any = "store_true"
            if setting.negatable:
                action = argparse.BooleanOptionalAction
            elif setting.flag.startswith("--no-"):
                action = "store_false"
            parser.add_argument(
                setting.flag, dest=dest, action=action, default=default, help=setting.help
            )
            continue
        if setting.repeat:  # appended to a list: a default would be the list's start
            parser.add_argument(
                setting.flag,
                dest=dest,
                action="append",
                metavar=setting.metavar,
                help=_flag_help(field),
            )
            continue
        choices = declared.choices
        parser.add_argument(
            setting.flag,
            dest=dest,
            type=setting.text or (type(choices[0]) if choices else declared.base),
            choices=choices,
            default=default,
            metavar=setting.metavar,
            help=_flag_help(field),
        )


def _flag_help(field: schema.Field) -> str:
    """The declared help, with the allowed values (unless the help says how to write the
    text the flag reads) and the default."""
    words = field.setting.help
    if field.setting.text is None:
        words += f": {field.kind.allowed}"
    if field.default not in (None, ()):
        words += f" (default {field.default})"
    return words.replace("%", "%%")  # argparse formats help with %


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``separate`` to the command line."""
    parser = commands.add_parser(
        "separate",
        help="separate audio files into stems",
        description="Separate audio files into stems: OUTDIR/<file name>/<stem>.<ext> plus "
        "manifest.json. Stems keep the input's sample rate, channels, bit depth and "
        "exact length unless told otherwise.",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="audio files")
    parser.add_argument(
        "-o", "--output", type=Path, help="output folder (default: each input's own folder)"
    )
    add_model_options(parser, defaults=True)
    add_range_options(parser)
    add_output_options(parser)
    add_effects_options(parser)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON result on stdout, no progress bars"
    )
    parser.set_defaults(command=run)


def separation_settings(
    args: argparse.Namespace, *, base: SeparationSettings | None = None
) -> SeparationSettings:
    """``base`` (default: the built-in defaults) with the flags that were given.

    An ensemble's algorithm and weights go with its models: ``--model`` given alone
    drops those of ``base``."""
    changes = _given(args, SeparationSettings)
    if "model" in changes:
        changes.setdefault("ensemble", None)
        changes.setdefault("ensemble_weights", None)
    return dataclasses.replace(base or SeparationSettings(), **changes)


def output_settings(
    args: argparse.Namespace, *, base: OutputSettings | None = None
) -> OutputSettings:
    """``base`` (default: the built-in defaults) with the output flags that were given."""
    return dataclasses.replace(base or OutputSettings(), **_given(args, OutputSettings))


def effects_settings(
    args: argparse.Namespace, *, base: EffectsSettings | None = None
) -> EffectsSettings:
    """``base`` (default: the built-in defaults) with the effects flags that were given."""
    changes = _given(args, EffectsSettings)
    # A loudness target and match-mix exclude each other: the one given replaces the
    # other wherever base has it from.
    if changes.get("match_mix"):
        changes["loudness_lufs"] = None
    elif changes.get("loudness_lufs") is not None:
        changes["match_mix"] = False
    return dataclasses.replace(base or EffectsSettings(), **changes)


def _given(args: argparse.Namespace, kind: type[Any]) -> dict[str, Any]:
    """The settings of ``kind`` whose flags were given (an unset flag is ``None``)."""
    given = {field.name: getattr(args, field.name, None) for field in schema.fields(kind)}
    given = {
        name: (value[0] if len(value) == 1 else tuple(value)) if isinstance(value, list) else value
        for name, value in given.items()
    }
    return {name: value for name, value in given.items() if value is not None}


def run(args: argparse.Namespace, err: Console) -> int:
    """Separate every input through the job path; the exit code is that of the first failure.

    Each input is one job (:func:`bridge.pipeline.run.run_job`), as a daemon would run
    it: its folder is reserved (``name (2)`` when another job's stems are there), an
    identical result already in it is kept, running out of memory retries smaller.
    """
    from bridge.effects.plan import plan_effects

    settings = separation_settings(args)
    output = output_settings(args)
    effects = effects_settings(args)
    time_range = TimeRange(start_seconds=args.start, length_seconds=args.length)
    # A bad preset or stem list is refused once, before any input is looked at.
    plan_effects(effects, stems=settings.stem_plans, model_sources=settings.sources)

    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    specs = []
    for path in args.inputs:
        try:
            specs.append(_spec(path, args.output, settings, output, effects, time_range))
        except StemBridgeError as exc:
            errors.append(error_entry(path, exc))
            if not args.json:
                print_error(err, "✗", exc)
    if specs:
        _run_jobs(specs, args, err, results, errors)
    if args.json:
        print(json.dumps({"ok": not errors, "results": results, "errors": errors}, indent=2))
    return errors[0]["exit_code"] if errors else EXIT_OK


def _spec(
    path: Path,
    output_dir: Path | None,
    settings: SeparationSettings,
    output: OutputSettings,
    effects: EffectsSettings,
    time_range: TimeRange,
) -> JobSpec:
    from bridge.names import check_path_text, stem_folder

    source = path.expanduser().absolute()
    check_path_text(source)
    root = (output_dir or source.parent).expanduser().absolute()
    return JobSpec(
        input=str(source),
        folder=str(stem_folder(root, source)),
        separation=settings,
        output=output,
        effects=effects,
        time_range=time_range,
        source="separate",
    )


def _run_jobs(
    specs: list[JobSpec],
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

    from bridge.errors import ModelError, SettingsError
    from bridge.jobs.worker import ModelCache
    from bridge.manifest import read_manifest
    from bridge.models.runner import keep_freed_memory_for
    from bridge.pipeline.progress import Progress as JobProgress

    # Before any thread starts (see its docstring), and only for CPU work.
    keep_freed_memory_for(specs[0].separation.device)
    models = ModelCache()
    try:
        models.model(specs[0].separation)  # once, before any progress bar
    except (ModelError, SettingsError) as exc:
        # Every input would fail the same way: said once.
        errors.extend(error_entry(Path(spec.input), exc) for spec in specs)
        if not args.json:
            print_error(err, "stembridge: error:", exc)
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
        for spec in specs:
            name = Path(spec.input).name
            task = bars.add_task(escape(name), total=None, stage="analysing")

            def update(progress: JobProgress, task: Any = task) -> None:
                bars.update(
                    task, completed=progress.done, total=progress.total, stage=progress.stage
                )

            try:
                result = _run_one(spec, models.model, update)
            except StemBridgeError as exc:
                errors.append(error_entry(Path(spec.input), exc))
                bars.update(task, stage="failed")
                if not args.json:
                    print_error(err, "✗", exc)
                continue
            entry = read_manifest(result.manifest)
            entry["folder"] = str(result.folder)
            results.append(entry)
            if not args.json:
                stems = escape(", ".join(stem["path"] for stem in entry["stems"]))
                timings = entry.get("timings", {})
                done = (
                    f"in {timings['total_seconds']:.1f} s "
                    f"({timings['realtime_factor']:.2f}x realtime)"
                    if not (result.kept or result.reused_from)
                    else "(already there)"
                )
                err.print(
                    f"[green]✓[/green] {escape(name)} → {escape(str(result.folder))} ({stems}) "
                    + done,
                    highlight=False,
                )


def _run_one(
    spec: JobSpec, model_for: Callable[[SeparationSettings], Model], on_progress: Any
) -> Result:
    """One input as one job; running out of memory tries again with less (see
    :mod:`bridge.jobs.retry`), as the daemon's worker would."""
    import secrets

    from bridge.jobs.retry import out_of_memory, smaller
    from bridge.pipeline.run import NoResults, run_job

    job_id, attempt = secrets.token_hex(6), 1
    while True:
        try:
            return run_job(
                job_id,
                spec,
                attempt=attempt,
                results=NoResults(),
                model_for=model_for,
                on_progress=on_progress,
            )
        except StemBridgeError:
            raise
        except Exception as exc:
            less = smaller(spec) if out_of_memory(exc) else None
            if less is None:
                raise
            log.warning("%s: out of memory; trying again with %s", spec.input, less.separation)
            spec, attempt = less, attempt + 1
