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
    [dashboard]       enabled, host, port, upload_folder, upload_max_mb: the daemon's web
                      page (see bridge.dashboard)
    [paths]           "daemon path" = "path on this machine" prefix pairs, for a
                      studio worker that mounts the share elsewhere ("/mnt/nas" = 'Z:\\')

Precedence is explicit: job options (``submit`` flags) override the rule, which
overrides ``[separation]``/``[output]``/``[effects]``, which override the preset
(for effects) and the built-in defaults.
Each section is read through the schema its settings declare (:mod:`bridge.schema`),
as job specs and flags are. Unknown sections and keys are refused by name. Every error
names the file, the key and the fix.
"""

# Annotations stay evaluated (no `from __future__ import annotations`): bridge.schema
# reads them once at import, and as strings each would cost an evaluation there.

import dataclasses
import fnmatch
import os
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import platformdirs
from msgspec import Meta

from bridge import schema
from bridge.broker.paths import PathMap
from bridge.broker.url import FORM, BrokerUrl, parse_broker_url
from bridge.documents import parse_toml
from bridge.effects.presets import load_preset
from bridge.errors import ConfigError, OutputError, PresetError, SettingsError
from bridge.names import folder_name, inside
from bridge.permissions import check_private
from bridge.schema import Setting, Where
from bridge.settings import EffectsSettings, OutputSettings, SeparationSettings

DEFAULT_PATTERNS = ("*.wav", "*.wave", "*.flac", "*.aif", "*.aiff", "*.ogg", "*.mp3")
DEFAULT_TEMPLATE = "{dir}/Stems/{name}"
TEMPLATE_FIELDS = ("dir", "name", "ext", "rule")
#: The settings a [[rule]] may override, each read as its own section reads it.
_RULE_SETTINGS = (SeparationSettings, OutputSettings, EffectsSettings)


def default_config_path() -> Path:
    """Where ``serve`` and the job commands look for the config without ``--config``."""
    return Path(platformdirs.user_config_dir("stembridge")) / "config.toml"


def default_state_dir() -> Path:
    """Where the job store and the daemon lock live by default."""
    return Path(platformdirs.user_state_dir("stembridge"))


def expanded_path(text: str) -> Path:
    """A path as a config writes it, ``~`` expanded."""
    return Path(os.path.expanduser(text))


@schema.settings
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

    state_dir: Annotated[
        Path, Setting(read=str, parse=expanded_path, allowed="a folder's path")
    ] = field(default_factory=default_state_dir)
    # Below 0.01 s (or NaN) every wait returns at once: a busy loop.
    poll_interval_seconds: Annotated[
        float, Meta(ge=0.01), Setting(unit="seconds", note="1 is usual")
    ] = 1.0
    stable_polls: Annotated[int, Meta(ge=1), Setting(note="3 is usual")] = 3
    scan_existing: Annotated[bool, Setting()] = True
    broker: (
        Annotated[BrokerUrl, Setting(read=str, parse=parse_broker_url, allowed=f"a URL: {FORM}")]
        | None
    ) = None

    def __post_init__(self) -> None:
        schema.check(self)


@schema.settings
@dataclass(frozen=True, kw_only=True)
class DashboardSettings:
    """The daemon's web dashboard (``serve`` only).

    Attributes:
        enabled: Serve it.
        host: Address to listen on; anything but loopback needs a token
            (``stembridge dashboard token``).
        port: TCP port.
        upload_folder: Where files dropped on the dashboard are kept, with their stems;
            ``None`` means ``<state_dir>/uploads``.
        upload_max_mb: The largest file the dashboard takes, in megabytes (10**6 bytes).
    """

    enabled: Annotated[bool, Setting()] = True
    host: Annotated[
        str,
        Meta(min_length=1),
        Setting(allowed="127.0.0.1 (this machine only) or an address of this machine"),
    ] = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535), Setting()] = 8737
    upload_folder: (
        Annotated[Path, Setting(read=str, parse=expanded_path, allowed="a folder's path")] | None
    ) = None
    upload_max_mb: Annotated[
        int, Meta(ge=1, le=1_000_000), Setting(unit="MB", note="a 10-minute 24-bit WAV is ~160")
    ] = 2000

    def __post_init__(self) -> None:
        schema.check(self)


@schema.settings
@dataclass(frozen=True, kw_only=True)
class Rule:
    """One watched folder and what to do with the files that land in it.

    Attributes:
        name: Shown in logs and ``jobs``; empty means the folder's name.
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

    name: Annotated[str, Setting()] = ""
    folder: Annotated[
        Path,
        Setting(
            read=str,
            parse=expanded_path,
            allowed="the watched folder's path",
            example='"/path/to/renders"',
        ),
    ]
    recursive: Annotated[bool, Setting()] = False
    patterns: Annotated[tuple[str, ...], Setting(note='like ["*.wav"]')] = DEFAULT_PATTERNS
    ignore: Annotated[tuple[str, ...], Setting(note='like ["*_temp.wav"]')] = ()
    output: Annotated[str, Setting()] = DEFAULT_TEMPLATE
    polling: Annotated[bool, Setting()] = False
    separation: SeparationSettings = field(default_factory=SeparationSettings)
    output_settings: OutputSettings = field(default_factory=OutputSettings)
    effects: EffectsSettings = field(default_factory=EffectsSettings)

    def __post_init__(self) -> None:
        schema.check(self)
        if not self.name:
            object.__setattr__(self, "name", self.folder.name or str(self.folder))
        _check_template(self.output, self.folder, self.name)

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

    def with_rules(self, rules: tuple[Rule, ...]) -> "Config":
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


_Section = Annotated[dict[str, Any], Setting(allowed="a table: a [section] line, its keys below")]


@schema.settings
@dataclass(frozen=True, kw_only=True)
class _Document:
    """The sections of a config file, as TOML gives them (each read by its own schema)."""

    daemon: _Section = field(default_factory=dict)
    separation: _Section = field(default_factory=dict)
    output: _Section = field(default_factory=dict)
    effects: _Section = field(default_factory=dict)
    rule: Annotated[list[Any], Setting(allowed="[[rule]] tables")] = field(default_factory=list)
    paths: _Section = field(default_factory=dict)
    dashboard: _Section = field(default_factory=dict)

    def __post_init__(self) -> None:
        schema.check(self)


def parse_config(data: Mapping[str, Any], file: Path) -> Config:
    """Validate parsed TOML (see :func:`load_config`).

    Raises:
        ConfigError: Naming the file, the section and the key.
    """
    try:
        return _parse(data, file)
    except SettingsError as exc:
        raise ConfigError(f"{file}: {exc}", key=exc.key, value=exc.value) from exc


def _parse(data: Mapping[str, Any], file: Path) -> Config:
    document = schema.build(_Document, data)
    daemon = schema.build(DaemonSettings, document.daemon, Where("[daemon]"))
    separation = schema.build(SeparationSettings, document.separation, Where("[separation]"))
    output = schema.build(OutputSettings, document.output, Where("[output]"))
    effects = schema.build(EffectsSettings, document.effects, Where("[effects]"))
    rules = tuple(
        _parse_rule(table, index, (separation, output, effects))
        for index, table in enumerate(document.rule, start=1)
    )
    _check_preset(effects, Where("[effects]"))
    for rule in rules:
        _check_preset(rule.effects, Where(f"[[rule]] {rule.name!r}"))
    names = [rule.name for rule in rules]
    for name in names:
        if names.count(name) > 1:
            raise SettingsError(
                f"two [[rule]] tables are named {name!r}; give each rule its own name"
            )
    try:
        paths = PathMap(tuple(document.paths.items()))
    except SettingsError as exc:
        raise Where("[paths]").refuse(exc) from exc
    return Config(
        path=file,
        daemon=daemon,
        separation=separation,
        output=output,
        effects=effects,
        rules=rules,
        paths=paths,
        dashboard=schema.build(DashboardSettings, document.dashboard, Where("[dashboard]")),
    )


def _parse_rule(
    table: Any,
    index: int,
    defaults: tuple[SeparationSettings, OutputSettings, EffectsSettings],
) -> Rule:
    """One [[rule]]: its own keys, and any [separation], [output] or [effects] key, which
    overrides that section's value for this folder only."""
    if not isinstance(table, dict):
        raise SettingsError(
            f"[[rule]] #{index} = {schema.shown(table)} is not allowed; write it as [[rule]] "
            "with keys below"
        )
    where = _rule_where(table, index)
    own = schema.keys(Rule)
    sections = [schema.keys(kind) for kind in _RULE_SETTINGS]
    for key, value in table.items():
        if key not in own and not any(key in keys for keys in sections):
            allowed = ", ".join([*own, *(key for keys in sections for key in keys)])
            raise schema.unknown_key(where, key, value, allowed)

    def given(kind: type[Any]) -> dict[str, Any]:
        return {key: value for key, value in table.items() if key in schema.keys(kind)}

    separation, output, effects = defaults
    separation = schema.build(SeparationSettings, given(SeparationSettings), where, base=separation)
    output = schema.build(OutputSettings, given(OutputSettings), where, base=output)
    effects = schema.build(EffectsSettings, given(EffectsSettings), where, base=effects)
    return schema.build(
        Rule,
        {key: value for key, value in table.items() if key in own},
        where,
        extra={"separation": separation, "output_settings": output, "effects": effects},
    )


def _rule_where(table: dict[str, Any], index: int) -> Where:
    """A rule as messages name it: by its name, its folder's name, or its place."""
    name, folder = table.get("name"), table.get("folder")
    if not (isinstance(name, str) and name) and isinstance(folder, str):
        name = expanded_path(folder).name or folder
    return Where(f"[[rule]] {name!r}" if isinstance(name, str) and name else f"[[rule]] #{index}")


def _check_template(template: str, folder: Path, rule: str) -> None:
    """Refuse a stem folder template that is not one, or that would not give each file a
    folder of its own inside the template's root."""
    problem = _template_problem(template)
    if problem:
        raise SettingsError(
            f"output = {template!r} is not a valid template ({problem}); use "
            f"the fields {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)} as they are, "
            "and {{ }} for a brace",
            key="output",
            value=template,
        )
    try:
        render_template(template, folder / "render.wav", rule=rule)
    except OutputError as exc:
        raise SettingsError(
            f"output = {template!r} would not give each file a folder of its own inside its "
            f"root ({exc}); end it with a folder made from {{name}}, e.g. {DEFAULT_TEMPLATE!r}",
            key="output",
            value=template,
        ) from exc


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


def _check_preset(effects: EffectsSettings, where: Where) -> None:
    """Refuse at start-up a preset that every job would fail on."""
    try:
        load_preset(effects.preset)
    except PresetError as exc:
        raise SettingsError(
            f"{where.label}preset = {effects.preset!r}: {exc}",
            key="preset",
            value=effects.preset,
        ) from exc
