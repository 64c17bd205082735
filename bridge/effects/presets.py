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
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import platformdirs
from msgspec import Meta

from bridge import schema
from bridge.documents import parse_toml
from bridge.effects.catalog import EFFECTS, REFUSED
from bridge.errors import PresetError, SettingsError
from bridge.permissions import bundle_exposure, exposure
from bridge.schema import Kind, Setting, Where
from bridge.settings import Lufs, TruePeak

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

DEFAULT_PRESET = "clean"
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_PLUGIN_SUFFIXES = (".vst3", ".component") if sys.platform == "darwin" else (".vst3",)
_MAX_TAIL_SECONDS = 30.0
PluginValue = float | bool | str
_TEXT = Kind(str)
_BUNDLE = Kind(Annotated[str, Setting(allowed="a path to a plugin bundle")])
_PLUGIN_NAME = Kind(Annotated[str, Setting(allowed="the plugin's name inside the bundle")])
_PLUGIN_NUMBER = Kind(float)
T = TypeVar("T", bound="DataclassInstance")


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


@schema.settings
@dataclass(frozen=True)
class StemTreatment:
    """What one stem goes through.

    Attributes:
        chain: Effects in order (read by :func:`parse_preset`: effects and plug-ins).
        tail_seconds: How much of the chain's tail to keep past the input's end
            (0: stems keep the input's exact length).
    """

    chain: tuple[EffectSpec, ...] = ()
    tail_seconds: Annotated[
        float,
        Meta(ge=0.0, le=_MAX_TAIL_SECONDS),
        Setting(unit="seconds"),
    ] = 0.0

    def __post_init__(self) -> None:
        schema.check(self)

    @property
    def uses_plugins(self) -> bool:
        """Whether any link is a third-party plugin."""
        return any(spec.is_plugin for spec in self.chain)


@schema.settings
@dataclass(frozen=True)
class LoudnessTarget:
    """Per-stem loudness normalisation (the same rules as the job's loudness settings,
    :class:`~bridge.settings.EffectsSettings`).

    Attributes:
        target_lufs: Integrated loudness each stem is brought to; ``None`` with
            ``match_mix``.
        match_mix: Bring each stem to the loudness of the input mix instead.
        true_peak_dbtp: Ceiling the gain never pushes a stem's true peak above;
            ``None`` for no ceiling.
    """

    target_lufs: Lufs | None = None
    match_mix: Annotated[bool, Setting()] = False
    true_peak_dbtp: TruePeak | None = -1.0

    def __post_init__(self) -> None:
        schema.check(self)
        if self.match_mix == (self.target_lufs is not None):
            raise SettingsError(
                "give exactly one of target_lufs = <LUFS> or match_mix = true",
                key="target_lufs",
                value=self.target_lufs,
            )


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
    description = check.value(_TEXT, data.get("description", ""), "description")
    loudness = None
    if "loudness" in data:
        loudness = check.build(
            LoudnessTarget, check.table(data["loudness"], "loudness"), "loudness"
        )
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


def _parse_stem(check: _Checker, table: dict[str, Any], where: str, base: Path) -> StemTreatment:
    check.keys(table, ("chain", "tail_seconds"), where)
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
    own = {key: value for key, value in table.items() if key != "chain"}
    return check.build(StemTreatment, own, where, extra={"chain": tuple(chain)})


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
            names = ", ".join(["effect", *allowed])
            check.refuse(
                schema.unknown_key(Where(place, dotted=True), key, value, names), f"{place}.{key}"
            )
        parameters.append((key, check.value(allowed[key].kind, value, f"{place}.{key}")))
    return EffectSpec(effect=effect, parameters=tuple(parameters))


def _parse_plugin(check: _Checker, link: dict[str, Any], place: str, base: Path) -> EffectSpec:
    check.keys(link, ("plugin", "name", "parameters"), place)
    raw = check.value(_BUNDLE, link["plugin"], f"{place}.plugin")
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
        name = check.value(_PLUGIN_NAME, name, f"{place}.name")
    parameters = check.table(link.get("parameters", {}), f"{place}.parameters")
    values: list[tuple[str, PluginValue]] = []
    for key, value in parameters.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = check.value(_PLUGIN_NUMBER, value, f"{place}.parameters.{key}")
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
    """Raises :class:`PresetError` that name the file, the place and what is allowed, in
    the words of :mod:`bridge.schema`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def refuse(self, exc: SettingsError, place: str | None) -> NoReturn:
        raise PresetError(f"{self.path}: {exc}", path=self.path, key=place, value=exc.value)

    def fail(self, place: str, value: object, allowed: str) -> NoReturn:
        self.refuse(schema.refusal(place, value, allowed), place)

    def keys(self, table: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
        place = Where(where, dotted=True)
        for key, value in table.items():
            if key not in allowed:
                found = schema.unknown_key(place, key, value, ", ".join(allowed))
                self.refuse(found, place.key(key))

    def table(self, value: object, place: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(place, value, "a table")
        return value

    def value(self, kind: Kind, value: Any, place: str) -> Any:
        try:
            return kind.check(value, place=place)
        except SettingsError as exc:
            self.refuse(exc, place)

    def build(
        self,
        kind: type[T],
        table: dict[str, Any],
        where: str,
        *,
        extra: dict[str, Any] | None = None,
    ) -> T:
        place = Where(where, dotted=True)
        try:
            return schema.build(kind, table, place, extra=extra)
        except SettingsError as exc:
            self.refuse(exc, place.key(exc.key) if exc.key else where)
