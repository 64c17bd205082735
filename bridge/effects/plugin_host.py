"""Third-party plugins run in a child process, so a crash or a hang fails one job only.

A VST3 or AU plugin is native code we did not write: it can segfault, abort or spin
forever. A chain that holds one runs whole (built-in effects included, in order)
in a child started with ``spawn``; blocks go there and back over a pipe. If the
child dies, the job fails with an :class:`~bridge.errors.EffectError` naming the
plugin and the signal; if it does not answer in time, it is killed and the job
fails the same way. The daemon and its other jobs carry on.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from bridge.effects.presets import EffectSpec
from bridge.errors import EffectError

log = logging.getLogger(__name__)

#: Loads one plugin: ``(path, name inside the bundle or None) -> pedalboard plugin``.
PluginLoader = Callable[[str, str | None], Any]

LOAD_TIMEOUT_SECONDS = 120.0
BLOCK_TIMEOUT_SECONDS = 60.0


def load_with_pedalboard(path: str, name: str | None) -> Any:
    """The real loader: pedalboard's VST3/AU host."""
    import pedalboard

    return pedalboard.load_plugin(path, plugin_name=name)


class ChildProcessor:
    """A chain with third-party plugins, run in a child process.

    Args:
        specs: The chain, in order.
        sample_rate: The stem's rate.
        label: Says where the chain comes from in errors (preset file and stem).
        loader: Loads a plugin in the child; must be importable by name (``spawn``).
        load_timeout_seconds: How long loading the chain may take.
        block_timeout_seconds: How long one block may take before the plugin counts as hung.

    Raises:
        EffectError: The child crashed or hung while loading, or a plugin refused a
            parameter (the message lists the plugin's parameters).
    """

    def __init__(
        self,
        specs: Sequence[EffectSpec],
        *,
        sample_rate: int,
        label: str,
        loader: PluginLoader = load_with_pedalboard,
        load_timeout_seconds: float = LOAD_TIMEOUT_SECONDS,
        block_timeout_seconds: float = BLOCK_TIMEOUT_SECONDS,
    ) -> None:
        self._label = label
        self._plugins = ", ".join(
            Path(str(spec.plugin_path)).name for spec in specs if spec.is_plugin
        )
        self._block_timeout = block_timeout_seconds
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(child_conn, tuple(specs), sample_rate, loader),
            name="stembridge-plugins",
            daemon=True,
        )
        self._process.start()
        child_conn.close()
        self._ask(None, timeout=load_timeout_seconds, doing="loading")
        log.debug("plugin child %d ready for %s", self._process.pid, label)

    def process(self, block: np.ndarray) -> np.ndarray:
        """See :class:`~bridge.effects.chain.BlockProcessor`."""
        out: np.ndarray = self._ask(block, timeout=self._block_timeout, doing="processing")
        return out

    def close(self) -> None:
        """Stop the child (politely, then by force)."""
        if self._process.is_alive():
            try:
                self._conn.send(("close", None))
            except (OSError, ValueError):
                log.debug("plugin child already gone", exc_info=True)
            self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()

    def _ask(self, block: np.ndarray | None, *, timeout: float, doing: str) -> Any:
        try:
            if block is not None:
                self._conn.send(("process", block))
            if not self._conn.poll(timeout):
                self._process.kill()
                self._process.join()
                raise EffectError(
                    f"{self._label}: plugin {self._plugins} hung (no answer in {timeout:g} s "
                    f"while {doing}) and was stopped; remove it from the preset or update it"
                )
            kind, payload = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._process.join(timeout=5)
            raise EffectError(
                f"{self._label}: plugin {self._plugins} crashed while {doing} "
                f"({_describe_exit(self._process.exitcode)}); the job failed and nothing was "
                "written; remove the plugin from the preset or update it"
            ) from exc
        if kind == "error":
            raise EffectError(f"{self._label}: {payload}")
        return payload


def _serve(
    conn: Connection, specs: tuple[EffectSpec, ...], sample_rate: int, loader: PluginLoader
) -> None:
    """The child: load the chain, then process blocks until told to stop.

    Links run one after the other (not as one ``Pedalboard``) so a loader may return
    any object with pedalboard's ``process`` signature.
    """
    from bridge.effects.chain import BLOCK_FRAMES, build_board

    try:
        links = [
            _load(spec, index, loader) if spec.is_plugin else build_board([spec])
            for index, spec in enumerate(specs, start=1)
        ]
    except (EffectError, ValueError, TypeError, RuntimeError, ImportError) as exc:
        conn.send(("error", str(exc)))
        return
    conn.send(("ready", None))
    while True:
        kind, block = conn.recv()
        if kind == "close":
            return
        try:
            for link in links:
                block = link.process(block, sample_rate, buffer_size=BLOCK_FRAMES, reset=False)
        except (ValueError, RuntimeError) as exc:
            conn.send(("error", f"plugin failed while processing ({exc})"))
            return
        conn.send(("ok", np.asarray(block, dtype=np.float32)))


def _load(spec: EffectSpec, index: int, loader: PluginLoader) -> Any:
    place = f"chain[{index}]"
    try:
        plugin = loader(str(spec.plugin_path), spec.plugin_name)
    except (ValueError, RuntimeError, ImportError) as exc:
        raise EffectError(f"{place}: cannot load plugin {spec.plugin_path} ({exc})") from exc
    known = list(getattr(plugin, "parameters", {}))
    for key, value in spec.parameters:
        if key not in known:
            raise EffectError(
                f"{place}: plugin {spec.plugin_path} has no parameter {key!r}; its parameters "
                f"are {', '.join(known) or 'none'}"
            )
        try:
            setattr(plugin, key, value)
        except (ValueError, TypeError) as exc:
            raise EffectError(
                f"{place}: plugin parameter {key} = {value!r} refused ({exc})"
            ) from exc
    return plugin


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
