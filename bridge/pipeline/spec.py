"""A job spec: everything needed to run one separation, as plain JSON.

Specs travel through the job store (and, for studios, through a broker), so they
are JSON with no pickling; :func:`JobSpec.from_json` validates every key again,
so a spec edited by hand or sent by a host script is refused by name when wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from bridge.documents import parse_json
from bridge.errors import JobError, SettingsError
from bridge.settings import EffectsSettings, OutputSettings, SeparationSettings, TimeRange

#: Interactive submissions (a host script waiting) run before folder batches.
PRIORITY_INTERACTIVE = 0
PRIORITY_WATCHED = 10

# Settings that change how the engine runs but not what it computes.
_RUN_ONLY = ("device", "batch_size")


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """One separation to run.

    Attributes:
        input: Absolute path of the input file.
        folder: Absolute path of the stem folder.
        separation: Model and engine settings.
        output: Stem format settings.
        effects: What happens to the stems after separation (preset, exact-sum, loudness).
        time_range: The part of the input.
        origin: Whatever the submitting host wants back (project, track, item
            position...), carried through untouched.
        priority: Lower runs first (:data:`PRIORITY_INTERACTIVE` before
            :data:`PRIORITY_WATCHED`).
        source: Who asked: ``submit`` or ``watch:<rule name>``.
    """

    input: str
    folder: str
    separation: SeparationSettings = field(default_factory=SeparationSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    effects: EffectsSettings = field(default_factory=EffectsSettings)
    time_range: TimeRange = field(default_factory=TimeRange)
    origin: dict[str, Any] = field(default_factory=dict)
    priority: int = PRIORITY_INTERACTIVE
    source: str = "submit"

    def to_json(self) -> str:
        """The spec as a JSON document."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        """Parse and validate a spec.

        Raises:
            JobError: Not JSON, an unknown or missing key, or a value not allowed.
        """
        try:
            data = parse_json(text)
        except ValueError as exc:
            raise JobError(f"job spec is not JSON ({exc}); send a JSON object") from exc
        if not isinstance(data, dict):
            raise JobError("job spec must be a JSON object with input and folder")
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise JobError(
                f"job spec: unknown key(s) {', '.join(unknown)}; allowed are {', '.join(allowed)}"
            )
        try:
            return cls(
                input=_field(data, "input", str),
                folder=_field(data, "folder", str),
                separation=_settings(SeparationSettings, data.get("separation", {}), "separation"),
                output=_settings(OutputSettings, data.get("output", {}), "output"),
                effects=_settings(EffectsSettings, data.get("effects", {}), "effects"),
                time_range=_settings(TimeRange, data.get("time_range", {}), "time_range"),
                origin=_field(data, "origin", dict, {}),
                priority=_field(data, "priority", int, PRIORITY_INTERACTIVE),
                source=_field(data, "source", str, "submit"),
            )
        except SettingsError as exc:
            raise JobError(f"job spec: {exc}") from exc

    def identity(self, input_sha256: str, preset_sha256: str = "") -> str:
        """What the result depends on: the audio's content and every output-shaping setting.

        Two jobs with the same identity produce the same stems, so the second can
        reuse the first's result. Device and batch size only change how the engine
        runs, not what it computes, and are left out. The preset counts by its
        content (``preset_sha256``), so editing a preset file invalidates reuse.
        """
        separation = {
            key: value
            for key, value in dataclasses.asdict(self.separation).items()
            if key not in _RUN_ONLY
        }
        output = dataclasses.asdict(self.output)
        output.pop("overwrite")
        output.pop("pictures")  # pictures are drawn beside the stems, which stay the same
        shape = {
            "separation": separation,
            "output": output,
            "time_range": dataclasses.asdict(self.time_range),
            "effects": dataclasses.asdict(self.effects),
            "preset_sha256": preset_sha256,
        }
        text = json.dumps({"audio": input_sha256, **shape}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def _field(data: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    if key not in data:
        if default is None:
            raise JobError(f"job spec: missing key {key!r}")
        return default
    return _typed(data[key], kind, key)


def _settings(klass: type, values: Any, key: str) -> Any:
    if not isinstance(values, dict):
        raise JobError(f"job spec: {key} must be an object")
    hints = typing.get_type_hints(klass)
    allowed = {f.name for f in dataclasses.fields(klass)}
    unknown = set(values) - allowed
    if unknown:
        raise JobError(
            f"job spec: unknown key(s) {', '.join(sorted(unknown))} in {key}; allowed are "
            f"{', '.join(sorted(allowed))}"
        )
    # The settings classes check ranges, not types: 5 as a preset or [1] as stems would
    # fail deep inside them, and 1 for 1.0 would change the identity of equal settings.
    return klass(
        **{name: _typed(value, hints[name], f"{key}.{name}") for name, value in values.items()}
    )


def _typed(value: Any, hint: Any, place: str) -> Any:
    """``value`` as the type ``hint`` names (whole numbers made floats where floats are asked)."""
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in kinds:
        return None
    for kind in kinds:
        if kind is bool and isinstance(value, bool):
            return value
        if isinstance(value, bool):
            continue
        if kind is int and isinstance(value, int) and -_INT_LIMIT < value < _INT_LIMIT:
            return value
        if kind is float and isinstance(value, float):
            return value
        if kind is float and isinstance(value, int) and abs(value) < _INT_LIMIT:
            return float(value)
        if kind in (str, dict) and isinstance(value, kind):
            return value
        if (
            typing.get_origin(kind) is tuple
            and isinstance(value, list | tuple)
            and all(isinstance(item, str) for item in value)
        ):
            return tuple(value)
    wanted = " or ".join(_KIND_NAMES.get(kind, str(kind)) for kind in kinds)
    raise JobError(f"job spec: {place} = {_shown(value)} must be {wanted}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# Whole numbers go into SQLite (64-bit); floats are given NaN and infinity by name.
_INT_LIMIT = 2**63
_KIND_NAMES = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string",
    dict: "an object",
    type(None): "null",
    tuple[str, ...]: "a list of strings",
}
