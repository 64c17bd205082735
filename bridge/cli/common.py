"""What every command shares: exit codes, error printing, the config and the store.

Exit codes (also for ``python -m bridge``):

====  =====================================================================
0     everything asked for was done
1     an unexpected internal error (a bug: please report it with the log)
2     a usage or settings error (bad flag or config value, unknown model, stem,
      device or job id)
3     the model is not available (weights missing or damaged)
4     an input cannot be used (not audio, truncated, range outside the file)
5     the output cannot be written (permissions, disk full, stems exist)
6     the job was cancelled
7     an effect or plugin failed while processing a stem
8     a host integration cannot be installed (REAPER's resource folder missing)
9     the studio broker (Redis) cannot be reached or refuses the credentials
130   interrupted (Ctrl-C); nothing half-written is left behind
====  =====================================================================
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from bridge import errors
from bridge.config import Config, load_config

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_INPUT = 4
EXIT_OUTPUT = 5
EXIT_CANCELLED = 6
EXIT_EFFECT = 7
EXIT_HOST = 8
EXIT_BROKER = 9
EXIT_INTERRUPTED = 130

_EXIT_BY_CLASS: tuple[tuple[type[errors.StemBridgeError], int], ...] = (
    (errors.SettingsError, EXIT_USAGE),
    (errors.JobError, EXIT_USAGE),
    (errors.ModelError, EXIT_MODEL),
    (errors.AudioError, EXIT_INPUT),
    (errors.OutputError, EXIT_OUTPUT),
    (errors.JobCancelled, EXIT_CANCELLED),
    (errors.EffectError, EXIT_EFFECT),
    (errors.HostError, EXIT_HOST),
    (errors.BrokerError, EXIT_BROKER),
)


def exit_code_for(error: errors.StemBridgeError) -> int:
    """The documented exit code for an error."""
    return exit_code_for_kind(type(error).__name__)


def exit_code_for_kind(kind: str | None) -> int:
    """The exit code for an error class name (as a failed job records it)."""
    klass = getattr(errors, kind or "", None)
    if isinstance(klass, type) and issubclass(klass, errors.StemBridgeError):
        for base, code in _EXIT_BY_CLASS:
            if issubclass(klass, base):
                return code
    return EXIT_INTERNAL


def print_error(err: Console, prefix: str, exc: BaseException | str) -> None:
    """One red line on stderr (paths escaped: a file may be called ``[final].wav``)."""
    err.print(f"[red]{prefix}[/red] {escape(str(exc))}", highlight=False)


def error_entry(path: Path, exc: errors.StemBridgeError) -> dict[str, Any]:
    """A failure as it appears in ``--json`` output."""
    return {
        "input": str(path),
        "error": str(exc),
        "kind": type(exc).__name__,
        "exit_code": exit_code_for(exc),
    }


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` (default: the platform's config folder)."""
    parser.add_argument(
        "--config", type=Path, help="config file (default: stembridge's config folder)"
    )


def config_from(args: argparse.Namespace) -> Config:
    """The config named by ``--config``, or the default one if it exists."""
    return load_config(args.config, required=args.config is not None)
