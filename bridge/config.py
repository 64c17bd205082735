"""The TOML config file, turned into typed, validated dataclasses once at start.

Layout (every section and key optional; ``examples/*.toml`` are commented samples)::

    [daemon]          state_dir, poll_interval_seconds, stable_polls, scan_existing,
                      broker (redis:// URL of a studio's GPU workers)
    [separation]      model, stems, device, shifts, overlap, segment_seconds, batch_size,
                      precision: defaults for every job
    [output]          format, bit_depth, sample_rate, overwrite, bitrate_kbps, quality,
                      dither, pictures: defaults for every job
    [effects]         preset, exact_sum, residual_stem, loudness_lufs, match_mix,
                      true_peak_dbtp: defaults for every job
    [[rule]]          a watched folder: name, folder, recursive, patterns, ignore,
                      output (stem folder template), polling, and any [separation],
                      [output] or [effects] key to override for this folder
    [dashboard]       enabled, host, port: the daemon's web page (see bridge.dashboard)
    [paths]           "daemon path" = "path on this machine" prefix pairs, for a
                      studio worker that mounts the share elsewhere ("/mnt/nas" = 'Z:\\')

Precedence is explicit: job options (``submit`` flags) override the rule, which
overrides ``[separation]``/``[output]``/``[effects]``, which override the preset
(for effects) and the built-in defaults.
Unknown sections and keys are refused by name. Every error names the file, the
key and the fix.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from bridge.broker.paths import PathMap
from bridge.broker.url import BrokerUrl, parse_broker_url
from bridge.documents import parse_toml
from bridge.effects.presets import load_preset
from bridge.errors import ConfigError, OutputError, PresetError, SettingsError
from bridge.names import folder_name, inside
from bridge.permissions import check_private
from bridge.settings import EffectsSettings, OutputSettings, SeparationSettings

DEFAULT_PATTERNS = ("*.wav", "*.wave", "*.flac", "*.aif", "*.aiff", "*.ogg", "*.mp3")
DEFAULT_TEMPLATE = "{dir}/Stems/{name}"
TEMPLATE_FIELDS = ("dir", "name", "ext", "rule")

_SEPARATION_KEYS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "stems": (list, str),
    "device": (str,),
    "shifts": (int,),
    "overlap": (float, int),
    "segment_seconds": (float, int),
    "batch_size": (int,),
    "precision": (str,),
}
_OUTPUT_KEYS: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "bit_depth": (int,),
    "sample_rate": (int,),
    "overwrite": (bool,),
    "bitrate_kbps": (int,),
    "quality": (float, int),
    "dither": (str,),
    "pictures": (bool,),
}
_EFFECTS_KEYS: dict[str, tuple[type, ...]] = {
    "preset": (str,),
    "exact_sum": (bool,),
    "residual_stem": (str,),
    "loudness_lufs": (float, int),
    "match_mix": (bool,),
    "true_peak_dbtp": (float, int),
}
_DAEMON_KEYS: dict[str, tuple[type, ...]] = {
    "state_dir": (str,),
    "poll_interval_seconds": (float, int),
    "stable_polls": (int,),
    "scan_existing": (bool,),
    "broker": (str,),
}
_DASHBOARD_KEYS: dict[str, tuple[type, ...]] = {
    "enabled": (bool,),
    "host": (str,),
    "port": (int,),
}
_RULE_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "folder": (str,),
    "recursive": (bool,),
    "patterns": (list,),
    "ignore": (list,),
    "output": (str,),
    "polling": (bool,),
    **_SEPARATION_KEYS,
    **_OUTPUT_KEYS,
    **_EFFECTS_KEYS,
}


def default_config_path() -> Path:
    """Where ``serve`` and the job commands look for the config without ``--config``."""
    return Path(platformdirs.user_config_dir("stembridge")) / "config.toml"


def default_state_dir() -> Path:
    """Where the job store and the daemon lock live by default."""
    return Path(platformdirs.user_state_dir("stembridge"))


@dataclass(frozen=True, kw_only=True)
class DaemonSettings:
    """How the daemon runs.

    Attributes:
        state_dir: Folder of the job store and the daemon lock.
        poll_interval_seconds: Tick of polling observers and of the finished-file checks.
        stable_polls: Polls with unchanged size and mtime before a file counts as finished
            where no close-after-write event exists (polling observers, macOS, Windows).
        scan_existing: Also take files already in a folder when it is (re)watched.
        broker: The Redis of the studio's GPU workers; ``None`` separates on this machine.
    """

    state_dir: Path = field(default_factory=default_state_dir)
    poll_interval_seconds: float = 1.0
    stable_polls: int = 3
    scan_existing: bool = True
    broker: BrokerUrl | None = None

    def __post_init__(self) -> None:
        # NaN or a negative interval makes every wait return at once (a busy loop).
        if not (math.isfinite(self.poll_interval_seconds) and self.poll_interval_seconds >= 0.01):
            raise SettingsError(
                f"{self.poll_interval_seconds} s is not allowed; use "
                "a number of seconds, 0.01 or more (1 is usual)",
                key="poll_interval_seconds",
                value=self.poll_interval_seconds,
            )
        if self.stable_polls < 1:
            raise SettingsError(
                f"{self.stable_polls} is not allowed; use 1 or more (3 is usual)",
                key="stable_polls",
                value=self.stable_polls,
            )


@dataclass(frozen=True, kw_only=True)
class DashboardSettings:
    """The daemon's web dashboard (``serve`` only).

    Attributes:
        enabled: Serve it.
        host: Address to listen on; anything but loopback needs a token
            (``stembridge dashboard token``).
        port: TCP port.
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8737

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise SettingsError(
                f"port {self.port} is out of range; use 1 to 65535", key="port", value=self.port
            )
        if not self.host:
            raise SettingsError(
                "host is empty; use 127.0.0.1 (this machine only) or an address of this machine",
                key="host",
                value=self.host,
            )


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One watched folder and what to do with the files that land in it.

    Attributes:
        name: Shown in logs and ``jobs``; defaults to the folder's name.
        folder: The watched folder.
        recursive: Also watch its subfolders.
        patterns: File name patterns to take (case-insensitive).
        ignore: File name patterns to skip, even when a pattern matches.
        output: Stem folder template; fields ``{dir}`` (the file's folder), ``{name}``
            (file name without extension), ``{ext}``, ``{rule}``; relative results are
            relative to the file's folder.
        polling: Poll the folder instead of using OS events (needed for SMB/NFS shares).
        separation: Separation settings for this folder's files.
        output_settings: Output settings for this folder's files.
        effects: Effects settings for this folder's files.
    """

    name: str
    folder: Path
    recursive: bool = False
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    ignore: tuple[str, ...] = ()
    output: str = DEFAULT_TEMPLATE
    polling: bool = False
    separation: SeparationSettings = field(default_factory=SeparationSettings)
    output_settings: OutputSettings = field(default_factory=OutputSettings)
    effects: EffectsSettings = field(default_factory=EffectsSettings)

    def matches(self, path: Path) -> bool:
        """Whether a file's name is taken by this rule."""
        name = path.name.lower()
        if not any(fnmatch.fnmatch(name, pattern.lower()) for pattern in self.patterns):
            return False
        return not any(fnmatch.fnmatch(name, pattern.lower()) for pattern in self.ignore)

    def stem_folder(self, path: Path) -> Path:
        """Where the stems of ``path`` go."""
        return render_template(self.output, path, rule=self.name)


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything the config file says, validated.

    Attributes:
        path: The file it came from (``None`` when built-in defaults are used).
        daemon: Daemon settings.
        separation: Default separation settings for every job.
        output: Default output settings for every job.
        effects: Default effects settings for every job.
        rules: Watched folders.
        paths: Prefix pairs from the daemon's paths to this machine's (``[paths]``).
        dashboard: The daemon's web dashboard.
    """

    path: Path | None = None
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    separation: SeparationSettings = field(default_factory=SeparationSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    effects: EffectsSettings = field(default_factory=EffectsSettings)
    rules: tuple[Rule, ...] = ()
    paths: PathMap = field(default_factory=PathMap)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)

    def with_rules(self, rules: tuple[Rule, ...]) -> Config:
        """The same config watching ``rules`` instead (``stembridge watch``)."""
        return dataclasses.replace(self, rules=rules)

    def rule(self, folder: Path, *, output: str) -> Rule:
        """An ad-hoc rule for ``folder`` using this config's defaults."""
        return Rule(
            name=folder.name or str(folder),
            folder=folder,
            output=output,
            separation=self.separation,
            output_settings=self.output,
            effects=self.effects,
        )


def render_template(template: str, path: Path, *, rule: str) -> Path:
    """Fill an output template for ``path``; relative results hang off the file's folder.

    The file's name reaches the template only as one safe folder name
    (:func:`bridge.names.folder_name`: ``..wav`` or ``~user.wav`` cannot climb out or
    reach a home folder), ``~`` is expanded in the template's own text only, and the
    result must lie under the template's root: what it says before the first field
    taken from the file's name.

    Raises:
        OutputError: The result does not lie under that root.
    """
    values = {
        "dir": str(path.parent),
        "name": folder_name(path.stem),
        "ext": folder_name(path.suffix[1:]) if path.suffix else "",
        "rule": rule,
    }
    template = os.path.expanduser(template)

    def located(text: str) -> Path:
        # "{dir}/../Stems" must compare equal to the folder the stems really land in.
        return Path(os.path.normpath(path.parent / text))

    root = located(_template_root(template).format(**values))
    return inside(root, located(template.format(**values)))


def _template_root(template: str) -> str:
    """The part of ``template`` before the first field from the file's name, cut back to
    its last folder separator (a template for the folder that holds the stem folders)."""
    head = ""
    for literal, name, _, _ in string.Formatter().parse(template):
        head += literal.replace("{", "{{").replace("}", "}}")
        if name is None:
            continue
        if name in ("name", "ext"):
            break
        head += "{" + name + "}"
    cut = max(head.rfind(os.sep), head.rfind(os.altsep or os.sep))
    if cut < 0:
        return "."  # the stem folders hang off the file's own folder
    return head[: max(cut, 1)]  # "/{name}" keeps its "/"


def load_config(path: Path | None = None, *, required: bool = False) -> Config:
    """Read and validate a config file.

    Args:
        path: The file; ``None`` means :func:`default_config_path`.
        required: Fail if the file does not exist (``--config`` given) instead of
            using the built-in defaults.

    Raises:
        ConfigError: The file cannot be read or parsed, or a section, key or value
            is not allowed. The message names the file and the key.
    """
    file = path or default_config_path()
    if not file.exists():
        if required:
            raise ConfigError(f"{file}: no such config file; check the path given to --config")
        return Config()
    check_private(file)
    try:
        data = parse_toml(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"{file}: cannot be read ({exc.strerror}); check its permissions"
        ) from exc
    except ValueError as exc:
        raise ConfigError(f"{file}: not valid TOML ({exc}); fix the syntax at that place") from exc
    return parse_config(data, file)


def parse_config(data: Mapping[str, Any], file: Path) -> Config:
    """Validate parsed TOML (see :func:`load_config`)."""
    _check_keys(
        data,
        {
            "daemon": (dict,),
            "separation": (dict,),
            "output": (dict,),
            "effects": (dict,),
            "rule": (list,),
            "paths": (dict,),
            "dashboard": (dict,),
        },
        file,
        "",
    )
    daemon_table = data.get("daemon", {})
    _check_keys(daemon_table, _DAEMON_KEYS, file, "[daemon]")
    daemon = _build(DaemonSettings, _daemon_values(daemon_table, file), file, "[daemon]")
    separation = _build(
        SeparationSettings,
        _separation_values(data.get("separation", {}), file, "[separation]"),
        file,
        "[separation]",
    )
    output_table = data.get("output", {})
    _check_keys(output_table, _OUTPUT_KEYS, file, "[output]")
    output = _build(
        OutputSettings, _output_values(output_table, file, "[output]"), file, "[output]"
    )
    effects_table = data.get("effects", {})
    _check_keys(effects_table, _EFFECTS_KEYS, file, "[effects]")
    effects = _build(
        EffectsSettings, _effects_values(effects_table, file, "[effects]"), file, "[effects]"
    )
    rules = tuple(
        _parse_rule(table, index, file, separation, output, effects)
        for index, table in enumerate(data.get("rule", []), start=1)
    )
    _check_preset(effects, file, "[effects]")
    for rule in rules:
        _check_preset(rule.effects, file, f"[[rule]] {rule.name!r}")
    names = [rule.name for rule in rules]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(
                f"{file}: two [[rule]] tables are named {name!r}; give each rule its own name"
            )
    paths = _parse_paths(data.get("paths", {}), file)
    dashboard_table = data.get("dashboard", {})
    _check_keys(dashboard_table, _DASHBOARD_KEYS, file, "[dashboard]")
    dashboard = _build(DashboardSettings, dict(dashboard_table), file, "[dashboard]")
    return Config(
        path=file,
        daemon=daemon,
        separation=separation,
        output=output,
        effects=effects,
        rules=rules,
        paths=paths,
        dashboard=dashboard,
    )


def _parse_paths(table: Mapping[str, Any], file: Path) -> PathMap:
    try:
        return PathMap(tuple(table.items()))
    except SettingsError as exc:
        raise ConfigError(f"{file}: [paths] {exc}", key=exc.key, value=exc.value) from exc


def _parse_rule(
    table: Any,
    index: int,
    file: Path,
    separation: SeparationSettings,
    output: OutputSettings,
    effects: EffectsSettings,
) -> Rule:
    where = f"[[rule]] #{index}"
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: {where} must be a table; write it as [[rule]] with keys below")
    _check_keys(table, _RULE_KEYS, file, where)
    if "folder" not in table:
        raise ConfigError(f"{file}: {where} has no 'folder'; add folder = \"/path/to/renders\"")
    folder = Path(os.path.expanduser(table["folder"]))
    where = f"[[rule]] {table.get('name', folder.name)!r}"
    template = table.get("output", DEFAULT_TEMPLATE)
    problem = _template_problem(template)
    if problem:
        raise ConfigError(
            f"{file}: {where} output = {template!r} is not a valid template ({problem}); use "
            f"the fields {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)} as they are, "
            "and {{ }} for a brace",
            key="output",
            value=template,
        )
    try:
        render_template(template, folder / "render.wav", rule=str(table.get("name", "rule")))
    except OutputError as exc:
        raise ConfigError(
            f"{file}: {where} output = {template!r} would not give each file a folder of its "
            f"own inside its root ({exc}); end it with a folder made from {{name}}, e.g. "
            f"{DEFAULT_TEMPLATE!r}",
            key="output",
            value=template,
        ) from exc
    for key in ("patterns", "ignore"):
        if not all(isinstance(item, str) for item in table.get(key, [])):
            raise ConfigError(f'{file}: {where} {key} must be a list of strings like ["*.wav"]')
    rule_separation = {key: table[key] for key in _SEPARATION_KEYS if key in table}
    rule_output = {key: table[key] for key in _OUTPUT_KEYS if key in table}
    rule_effects = {key: table[key] for key in _EFFECTS_KEYS if key in table}
    return Rule(
        name=table.get("name", folder.name or str(folder)),
        folder=folder,
        recursive=table.get("recursive", False),
        patterns=tuple(table.get("patterns", DEFAULT_PATTERNS)),
        ignore=tuple(table.get("ignore", ())),
        output=template,
        polling=table.get("polling", False),
        separation=_build(
            SeparationSettings,
            {**dataclasses.asdict(separation), **_separation_values(rule_separation, file, where)},
            file,
            where,
        ),
        output_settings=_build(
            OutputSettings,
            {**dataclasses.asdict(output), **_output_values(rule_output, file, where)},
            file,
            where,
        ),
        effects=_build(
            EffectsSettings,
            {**dataclasses.asdict(effects), **_effects_values(rule_effects, file, where)},
            file,
            where,
        ),
    )


def _template_problem(template: str) -> str | None:
    """Why ``template`` is not a stem folder template, or ``None`` when it is one.

    Only the bare fields are allowed: ``str.format`` would also follow ``{dir.x}`` and
    ``{name[0]}`` into the string's attributes and pad ``{name:>1000000000}`` to a
    gigabyte.
    """
    try:
        fields = [
            (name, conversion, spec)
            for _, name, spec, conversion in string.Formatter().parse(template)
            if name is not None
        ]
    except ValueError as exc:
        return str(exc)
    for name, conversion, spec in fields:
        if name not in TEMPLATE_FIELDS:
            return f"unknown field {{{name}}}"
        if conversion or spec:
            return f"{{{name}}} with '!' or ':' after it"
    return None


def _separation_values(table: Mapping[str, Any], file: Path, where: str) -> dict[str, Any]:
    _check_keys(table, _SEPARATION_KEYS, file, where)
    values = dict(table)
    if "stems" in values:
        stems = values["stems"]
        words = stems.split(",") if isinstance(stems, str) else stems
        if not all(isinstance(word, str) for word in words):
            raise ConfigError(
                f'{file}: {where} stems must be a list of strings like ["vocals", "instrumental"]'
            )
        values["stems"] = tuple(word.strip() for word in words if word.strip())
    _to_floats(values, ("overlap", "segment_seconds"), file, where)
    return values


def _check_preset(effects: EffectsSettings, file: Path, where: str) -> None:
    """Refuse at start-up a preset that every job would fail on."""
    try:
        load_preset(effects.preset)
    except PresetError as exc:
        raise ConfigError(
            f"{file}: {where} preset = {effects.preset!r}: {exc}",
            key="preset",
            value=effects.preset,
        ) from exc


def _output_values(table: Mapping[str, Any], file: Path, where: str) -> dict[str, Any]:
    values = dict(table)
    _to_floats(values, ("quality",), file, where)
    return values


def _effects_values(table: Mapping[str, Any], file: Path, where: str) -> dict[str, Any]:
    values = dict(table)
    _to_floats(values, ("loudness_lufs", "true_peak_dbtp"), file, where)
    return values


def _daemon_values(table: Mapping[str, Any], file: Path) -> dict[str, Any]:
    values = dict(table)
    if "broker" in values:
        try:
            values["broker"] = parse_broker_url(values["broker"])
        except SettingsError as exc:
            # The message and value show the URL with its password hidden.
            raise ConfigError(f"{file}: [daemon] {exc}", key="broker", value=exc.value) from exc
    if "state_dir" in values:
        values["state_dir"] = Path(os.path.expanduser(values["state_dir"]))
    _to_floats(values, ("poll_interval_seconds",), file, "[daemon]")
    return values


def _to_floats(values: dict[str, Any], keys: tuple[str, ...], file: Path, where: str) -> None:
    """Turn whole numbers into floats; TOML integers have no size limit, floats do."""
    for key in keys:
        if key in values:
            try:
                values[key] = float(values[key])
            except OverflowError:
                raise ConfigError(
                    f"{file}: {where} {key} = {values[key]} is too large to be a number; "
                    "fix the value",
                    key=key,
                    value=values[key],
                ) from None


def _check_keys(
    table: Mapping[str, Any], allowed: Mapping[str, tuple[type, ...]], file: Path, where: str
) -> None:
    place = f"{where} " if where else ""
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(
                f"{file}: {place}unknown key {key!r}; allowed keys are {', '.join(allowed)}",
                key=key,
                value=value,
            )
        types = allowed[key]
        # bool is an int in Python; a number key must not accept true/false.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = " or ".join(_TYPE_NAMES[t] for t in types)
            raise ConfigError(
                f"{file}: {place}{key} = {value!r} must be {wanted}; fix the value",
                key=key,
                value=value,
            )


_TYPE_NAMES = {
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a table",
}


def _build(klass: type, values: dict[str, Any], file: Path, where: str) -> Any:
    try:
        return klass(**values)
    except SettingsError as exc:
        key = f"{exc.key} " if exc.key else ""
        raise ConfigError(f"{file}: {where} {key}{exc}", key=exc.key, value=exc.value) from exc
