"""Effects presets: TOML files saying what happens to each stem after separation.

A preset is found by name, first in the user's preset folder
(``<config dir>/presets/<name>.toml``, so a user file can replace a bundled one),
then among the presets bundled with StemBridge; a path to a ``.toml`` file works
too. Layout (every key optional)::

    description = "Vocals: rumble cut, gentle compression, air"

    [loudness]                  # per-stem normalisation after the effects
    target_lufs = -16.0         # or: match_mix = true (each stem as loud as the mix)
    true_peak_dbtp = -1.0       # the gain never pushes a stem's true peak above this

    [stems.vocals]              # a stem name, or "*" for every stem not named
    tail_seconds = 0.0          # keep this much reverb/delay tail past the input's end
    chain = [
      { effect = "HighpassFilter", cutoff_frequency_hz = 90 },
      { effect = "Compressor", threshold_db = -20, ratio = 3 },
      { plugin = "~/.vst3/Deesser.vst3", name = "Deesser", parameters = { amount = 0.4 } },
    ]

Everything is checked when the preset is loaded, before any audio is touched; an
error names the file, the place in it (``stems.vocals.chain[2].ratio``) and what
is allowed. Third-party plugin parameters are checked when the plugin is loaded,
which also happens before separation starts.

A preset names plug-ins, which are code, so a preset file and every plug-in bundle
it names must be ones only this user (or root) could have changed, by the config's
rule (:mod:`bridge.permissions`); presets bundled with StemBridge are trusted as the
installed package is. Each job loads its preset again, so the check is as fresh as
the job.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import platformdirs

from bridge.documents import parse_toml
from bridge.effects.catalog import EFFECTS, REFUSED
from bridge.errors import PresetError
from bridge.permissions import bundle_exposure, exposure

DEFAULT_PRESET = "clean"
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_PLUGIN_SUFFIXES = (".vst3", ".component") if sys.platform == "darwin" else (".vst3",)
_MAX_TAIL_SECONDS = 30.0
PluginValue = float | bool | str


@dataclass(frozen=True)
class EffectSpec:
    """One link of a chain: a built-in pedalboard effect or a third-party plugin.

    Attributes:
        effect: The pedalboard class name (``Compressor``), or ``plugin``.
        parameters: ``(name, value)`` pairs, in the preset's order.
        plugin_path: The plugin bundle (VST3, or AU on macOS), for ``plugin``.
        plugin_name: Which plugin of a bundle that holds several.
    """

    effect: str
    parameters: tuple[tuple[str, PluginValue], ...] = ()
    plugin_path: str | None = None
    plugin_name: str | None = None

    @property
    def is_plugin(self) -> bool:
        """Whether this is third-party code (run in a child process)."""
        return self.plugin_path is not None

    def describe(self) -> str:
        """A one-line summary for manifests and ``presets show``."""
        args = ", ".join(f"{key}={value!r}" for key, value in self.parameters)
        if self.plugin_path is not None:
            label = Path(self.plugin_path).name
            if self.plugin_name:
                label += f":{self.plugin_name}"
            return f"plugin {label}({args})"
        return f"{self.effect}({args})"


@dataclass(frozen=True)
class StemTreatment:
    """What one stem goes through.

    Attributes:
        chain: Effects in order.
        tail_seconds: How much of the chain's tail to keep past the input's end
            (0: stems keep the input's exact length).
    """

    chain: tuple[EffectSpec, ...] = ()
    tail_seconds: float = 0.0

    @property
    def uses_plugins(self) -> bool:
        """Whether any link is a third-party plugin."""
        return any(spec.is_plugin for spec in self.chain)


@dataclass(frozen=True)
class LoudnessTarget:
    """Per-stem loudness normalisation.

    Attributes:
        target_lufs: Integrated loudness each stem is brought to; ``None`` with
            ``match_mix``.
        match_mix: Bring each stem to the loudness of the input mix instead.
        true_peak_dbtp: Ceiling the gain never pushes a stem's true peak above;
            ``None`` for no ceiling.
    """

    target_lufs: float | None = None
    match_mix: bool = False
    true_peak_dbtp: float | None = -1.0


@dataclass(frozen=True)
class Preset:
    """A validated preset.

    Attributes:
        name: What it is called (``vocal-polish``).
        path: The file it came from.
        description: One line for ``presets list``.
        stems: Stem name (or ``*``) -> its treatment.
        loudness: Normalisation, if the preset asks for it.
        sha256: Hash of the file's bytes: results made with other contents are not reused.
    """

    name: str
    path: Path
    description: str = ""
    stems: dict[str, StemTreatment] = field(default_factory=dict)
    loudness: LoudnessTarget | None = None
    sha256: str = ""

    def for_stem(self, stem: str) -> StemTreatment:
        """The treatment of one output stem (its own section, else ``*``, else none)."""
        return self.stems.get(stem) or self.stems.get("*") or StemTreatment()

    def check_sample_rate(self, sample_rate: int) -> None:
        """Refuse frequencies at or above half of ``sample_rate`` (the stems' rate).

        Raises:
            PresetError: Naming the file, the place and the highest allowed value.
        """
        nyquist = sample_rate / 2
        for stem, treatment in self.stems.items():
            for index, spec in enumerate(treatment.chain):
                allowed = EFFECTS.get(spec.effect, {})
                for key, value in spec.parameters:
                    parameter = allowed.get(key)
                    if (
                        parameter is not None
                        and parameter.below_nyquist
                        and isinstance(value, float)
                        and value >= nyquist
                    ):
                        raise PresetError(
                            f"{self.path}: stems.{stem}.chain[{index + 1}].{key} = "
                            f"{value:g} Hz is not below half the stems' sample rate "
                            f"({sample_rate} Hz); use less than {nyquist:g}",
                            path=self.path,
                            key=f"stems.{stem}.chain[{index + 1}].{key}",
                            value=value,
                        )


def user_preset_dir() -> Path:
    """Where user presets live (``<config dir>/presets``)."""
    return Path(platformdirs.user_config_dir("stembridge")) / "presets"


def load_preset(name: str, *, user_dir: Path | None = None) -> Preset:
    """Find a preset by name (user folder first, then bundled) or by path, and validate it.

    Args:
        name: A preset name, or a path to a ``.toml`` file.
        user_dir: The user preset folder; ``None`` means :func:`user_preset_dir`.

    Raises:
        PresetError: No such preset, or it is not valid; the message says which
            presets exist or what to fix.
    """
    if name.endswith(".toml") or os.sep in name or "/" in name:
        path = Path(os.path.expanduser(name))
        if not _looked_up(path.is_file, path, path, "preset", name):
            raise PresetError(
                f"{path}: no such preset file; check the path", path=path, key="preset", value=name
            )
        return parse_preset_file(path, name=path.stem)
    if not _NAME.match(name):
        raise PresetError(
            f"preset name {name!r} is not allowed; use letters, digits, '-' and '_', "
            "or give a path to a .toml file",
            key="preset",
            value=name,
        )
    for _, path in _candidates(user_dir):
        if path.stem == name:
            return parse_preset_file(path, name=name)
    known = ", ".join(sorted({path.stem for _, path in _candidates(user_dir)}))
    raise PresetError(
        f"no preset named {name!r}; available: {known}; or put {name}.toml in "
        f"{user_dir or user_preset_dir()}",
        key="preset",
        value=name,
    )


def list_presets(*, user_dir: Path | None = None) -> list[tuple[str, Path, str]]:
    """Every preset that :func:`load_preset` can find, as ``(name, path, origin)``.

    ``origin`` is ``user`` or ``bundled``; a user preset hides a bundled one of the
    same name.
    """
    seen: dict[str, tuple[str, Path, str]] = {}
    for origin, path in _candidates(user_dir):
        seen.setdefault(path.stem, (path.stem, path, origin))
    return sorted(seen.values())


def parse_preset_file(path: Path, *, name: str) -> Preset:
    """Read and validate one preset file.

    Raises:
        PresetError: Unreadable, not TOML, or a bad section, effect, key or value.
    """
    _check_trusted(path)
    try:
        raw = path.read_bytes()
        data = parse_toml(raw.decode("utf-8"))
    except OSError as exc:
        raise PresetError(
            f"{path}: cannot be read ({exc.strerror}); check its permissions", path=path
        ) from exc
    except ValueError as exc:
        raise PresetError(
            f"{path}: not valid TOML ({exc}); fix the syntax at that place", path=path
        ) from exc
    return parse_preset(data, path=path, name=name, sha256=hashlib.sha256(raw).hexdigest())


def parse_preset(data: dict[str, Any], *, path: Path, name: str, sha256: str = "") -> Preset:
    """Validate a parsed preset (see :func:`parse_preset_file`)."""
    check = _Checker(path)
    check.keys(data, ("description", "loudness", "stems"), "")
    description = check.kind(data.get("description", ""), str, "description", "a string")
    loudness = None
    if "loudness" in data:
        loudness = _parse_loudness(check, check.table(data["loudness"], "loudness"))
    stems: dict[str, StemTreatment] = {}
    for stem, table in check.table(data.get("stems", {}), "stems").items():
        where = f"stems.{stem}"
        if stem != "*" and not _NAME.match(stem):
            check.fail(where, stem, 'a stem name (vocals, instrumental, ...) or "*"')
        stems[stem] = _parse_stem(check, check.table(table, where), where, path.parent)
    return Preset(
        name=name,
        path=path,
        description=description,
        stems=stems,
        loudness=loudness,
        sha256=sha256,
    )


def _candidates(user_dir: Path | None) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    folder = user_dir or user_preset_dir()
    if folder.is_dir():
        found += [("user", path) for path in sorted(folder.glob("*.toml"))]
    found += [("bundled", path) for path in sorted(_bundled_folder().glob("*.toml"))]
    return found


def _bundled_folder() -> Path:
    with resources.as_file(resources.files("bridge.effects") / "presets") as root:
        return Path(root)


def _check_trusted(path: Path) -> None:
    """Refuse a preset another user could have changed (see the module docstring)."""
    try:
        bundled = path.resolve().parent == _bundled_folder().resolve()
    except OSError:
        bundled = False  # reading it reports the problem
    found = None if bundled else exposure(path)
    if found is None:
        return
    if found.foreign_owner:
        why = "; a preset decides which plug-ins run, so use one you own"
    else:
        why = f", and a preset decides which plug-ins run; run: chmod go-w '{path}'"
    raise PresetError(f"{path}: {found.problem}{why}", path=path)


def _parse_loudness(check: _Checker, table: dict[str, Any]) -> LoudnessTarget:
    check.keys(table, ("target_lufs", "match_mix", "true_peak_dbtp"), "loudness")
    match_mix = check.kind(table.get("match_mix", False), bool, "loudness.match_mix", "true/false")
    target = table.get("target_lufs")
    if target is not None:
        target = check.number(target, "loudness.target_lufs", -70.0, 0.0)
    if match_mix == (target is not None):
        check.fail(
            "loudness",
            table,
            "exactly one of target_lufs = <LUFS> or match_mix = true",
        )
    ceiling = table.get("true_peak_dbtp", -1.0)
    ceiling = check.number(ceiling, "loudness.true_peak_dbtp", -30.0, 0.0)
    return LoudnessTarget(target_lufs=target, match_mix=match_mix, true_peak_dbtp=ceiling)


def _parse_stem(check: _Checker, table: dict[str, Any], where: str, base: Path) -> StemTreatment:
    check.keys(table, ("chain", "tail_seconds"), where)
    tail = check.number(
        table.get("tail_seconds", 0.0), f"{where}.tail_seconds", 0.0, _MAX_TAIL_SECONDS
    )
    links = table.get("chain", [])
    if not isinstance(links, list):
        check.fail(f"{where}.chain", links, "a list of { effect = ... } tables")
    chain = []
    for index, link in enumerate(links, start=1):
        place = f"{where}.chain[{index}]"
        link = check.table(link, place)
        if "plugin" in link:
            chain.append(_parse_plugin(check, link, place, base))
        else:
            chain.append(_parse_effect(check, link, place))
    return StemTreatment(chain=tuple(chain), tail_seconds=tail)


def _parse_effect(check: _Checker, link: dict[str, Any], place: str) -> EffectSpec:
    effect = link.get("effect")
    if not isinstance(effect, str):
        check.fail(f"{place}.effect", effect, f"one of {', '.join(EFFECTS)}, or plugin = <path>")
    if effect in REFUSED:
        raise PresetError(
            f"{check.path}: {place}.effect = {effect!r}: {REFUSED[effect]}; remove it from "
            "the chain",
            path=check.path,
            key=f"{place}.effect",
            value=effect,
        )
    if effect not in EFFECTS:
        check.fail(f"{place}.effect", effect, f"one of {', '.join(EFFECTS)}, or plugin = <path>")
    allowed = EFFECTS[effect]
    parameters = []
    for key, value in link.items():
        if key == "effect":
            continue
        if key not in allowed:
            names = ", ".join(allowed) or "none"
            check.fail(f"{place}.{key}", value, f"{effect} parameters: {names}", what="key")
        low, high = allowed[key].minimum, allowed[key].maximum
        parameters.append((key, check.number(value, f"{place}.{key}", low, high)))
    return EffectSpec(effect=effect, parameters=tuple(parameters))


def _parse_plugin(check: _Checker, link: dict[str, Any], place: str, base: Path) -> EffectSpec:
    check.keys(link, ("plugin", "name", "parameters"), place)
    raw = check.kind(link["plugin"], str, f"{place}.plugin", "a path to a plugin bundle")
    path = Path(os.path.expanduser(raw))
    path = path if path.is_absolute() else base / path
    if path.suffix.lower() not in _PLUGIN_SUFFIXES:
        check.fail(
            f"{place}.plugin", raw, f"a plugin bundle ending in {', '.join(_PLUGIN_SUFFIXES)}"
        )
    if not _looked_up(path.exists, path, check.path, f"{place}.plugin", raw):
        raise PresetError(
            f"{check.path}: {place}.plugin = {raw!r}: {path} does not exist; install the "
            "plugin or fix the path",
            path=check.path,
            key=f"{place}.plugin",
            value=raw,
        )
    found = bundle_exposure(path)
    if found is not None:
        if found.foreign_owner:
            why = "; a plug-in is code that runs as you, so use one you (or root) installed"
        else:
            why = f", and a plug-in is code that runs as you; run: chmod -R go-w '{path}'"
        raise PresetError(
            f"{check.path}: {place}.plugin = {raw!r}: {found.path}: {found.problem}{why}",
            path=check.path,
            key=f"{place}.plugin",
            value=raw,
        )
    name = link.get("name")
    if name is not None:
        name = check.kind(name, str, f"{place}.name", "the plugin's name inside the bundle")
    parameters = check.table(link.get("parameters", {}), f"{place}.parameters")
    values: list[tuple[str, PluginValue]] = []
    for key, value in parameters.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = check.number(value, f"{place}.parameters.{key}", -math.inf, math.inf)
        elif not isinstance(value, bool | str):
            check.fail(f"{place}.parameters.{key}", value, "a number, true/false or a string")
        values.append((key, value))
    return EffectSpec(
        effect="plugin", parameters=tuple(values), plugin_path=str(path), plugin_name=name
    )


def _looked_up(question: Callable[[], bool], path: Path, file: Path, key: str, value: str) -> bool:
    """The answer of ``path.is_file``/``path.exists``; a name the system refuses to look up
    (too long, a loop of links) is an error naming ``file``."""
    try:
        return question()
    except OSError as exc:
        where = "" if path == file else f"{path} "
        raise PresetError(
            f"{file}: {key} = {value!r}: {where}cannot be looked up ({exc.strerror}); fix the path",
            path=file,
            key=key,
            value=value,
        ) from exc


class _Checker:
    """Raises :class:`PresetError` that name the file, the place and what is allowed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, place: str, value: object, allowed: str, *, what: str = "value") -> NoReturn:
        if what == "key":
            message = f"{self.path}: unknown key {place}; allowed: {allowed}"
        else:
            message = f"{self.path}: {place} = {value!r} is not allowed; use {allowed}"
        raise PresetError(message, path=self.path, key=place, value=value)

    def keys(self, table: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in table:
            if key not in allowed:
                place = f"{where}.{key}" if where else key
                self.fail(place, table[key], ", ".join(allowed), what="key")

    def table(self, value: object, place: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(place, value, "a table")
        return value

    def kind(self, value: Any, kind: type, place: str, allowed: str) -> Any:
        if not isinstance(value, kind):
            self.fail(place, value, allowed)
        return value

    def number(self, value: object, place: str, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(place, value, f"a number from {low:g} to {high:g}")
        # TOML integers have no size limit; one too large for a float is out of range too.
        number = float(value) if isinstance(value, float) or abs(value) < 2**1023 else math.inf
        if not (math.isfinite(number) and low <= number <= high):
            self.fail(place, value, f"a number from {low:g} to {high:g}")
        return number
