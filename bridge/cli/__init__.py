"""The ``stembridge`` command: parse, call the library, print.

One module per group of commands (``separate``, ``evaluate``, ``models``, ``presets``,
``effects``, ``jobs`` for the host-facing submit/status/jobs/cancel, ``daemon`` for
serve/watch/service, ``dashboard`` for the web dashboard's token); exit
codes are documented in :mod:`bridge.cli.common`. Heavy modules (numpy,
soundfile, torch) are imported only by the commands that need them: ``submit``,
``status``, ``jobs`` and ``cancel`` never import torch.
"""

from __future__ import annotations

import argparse
import gc
import logging
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.logging import RichHandler

from bridge import __version__
from bridge.cli import (
    ardour,
    audacity,
    daemon,
    dashboard,
    effects,
    evaluate,
    jobs,
    models,
    presets,
    reaper,
    separate,
    studio,
)
from bridge.cli.common import (
    EXIT_BROKER,
    EXIT_CANCELLED,
    EXIT_EFFECT,
    EXIT_HOST,
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_USAGE,
    exit_code_for,
    print_error,
)
from bridge.errors import StemBridgeError

__all__ = [
    "EXIT_BROKER",
    "EXIT_CANCELLED",
    "EXIT_EFFECT",
    "EXIT_HOST",
    "EXIT_INPUT",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_MODEL",
    "EXIT_OK",
    "EXIT_OUTPUT",
    "EXIT_USAGE",
    "exit_code_for",
    "main",
    "process_main",
]

#: First-generation threshold of the cyclic garbage collector in a command's process.
#: Importing torch and a model makes about a million objects, nearly none of them
#: garbage; at Python's 700 that start ran some 400 collections, three of them full
#: (0.2 s of 1.4 s on the 2-core test machine). The older generations keep their ratios.
_FIRST_GENERATION = 50_000


def process_main(argv: Sequence[str] | None = None) -> int:
    """:func:`main` as the whole process of a ``stembridge`` command: the console
    script, ``python -m bridge`` and the services run this.

    The collector is set for a process that ends when the command does; :func:`main`
    itself leaves it alone, for callers that live on. At the end everything is frozen
    (``gc.freeze``), which leaves it out of the interpreter's last full collection: that
    pass walked torch's objects for 0.4 s after a separation to free memory the
    operating system takes back anyway. Files, threads and atexit handlers still close
    as usual.
    """
    gc.set_threshold(_FIRST_GENERATION, *gc.get_threshold()[1:])
    try:
        return main(argv)
    finally:
        gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    args = _parser().parse_args(argv)
    err = Console(stderr=True, soft_wrap=True)
    # Rich log lines on a terminal; plain timestamped lines for services and pipes.
    handler: logging.Handler = (
        RichHandler(console=err, show_path=False) if err.is_terminal else logging.StreamHandler()
    )
    if not err.is_terminal:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level = logging.INFO if args.verbose else logging.WARNING
    # The handler's own level too: serve and watch raise bridge's loggers to INFO for
    # their short progress lines (bridge.cli.daemon), which must not reach this log too.
    handler.setLevel(level)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    command: Callable[[argparse.Namespace, Console], int] = args.command
    try:
        return command(args, err)
    except StemBridgeError as exc:
        print_error(err, "stembridge: error:", exc)
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
    for module in (
        separate,
        evaluate,
        jobs,
        daemon,
        dashboard,
        models,
        presets,
        effects,
        reaper,
        audacity,
        ardour,
        studio,
    ):
        module.register(commands)
    _verbose_after_commands(parser)
    return parser


def _verbose_after_commands(parser: argparse.ArgumentParser) -> None:
    """Let every command take ``-v`` too (``stembridge separate x.wav -v``).

    Its default is SUPPRESS, so a command not given ``-v`` leaves the value of a ``-v``
    before the command (``stembridge -v separate x.wav``) in place.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            # Keyed by identity: an alias names the same parser twice.
            for command in {id(sub): sub for sub in action.choices.values()}.values():
                command.add_argument(
                    "-v",
                    "--verbose",
                    action="store_true",
                    default=argparse.SUPPRESS,
                    help="log what is happening",
                )
                _verbose_after_commands(command)
