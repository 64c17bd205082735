"""A job spec: everything needed to run one separation, as plain JSON.

Specs travel through the job store (and, for studios, through a broker), so they
are JSON with no pickling; :func:`JobSpec.from_json` validates every key again,
so a spec edited by hand or sent by a host script is refused by name when wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

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
            data = json.loads(text)
        except json.JSONDecodeError as exc:
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
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise JobError(f"job spec: {key} = {value!r} must be a {kind.__name__}")
    return value


def _settings(klass: type, values: Any, key: str) -> Any:
    if not isinstance(values, dict):
        raise JobError(f"job spec: {key} must be an object")
    allowed = {f.name for f in dataclasses.fields(klass)}
    unknown = set(values) - allowed
    if unknown:
        raise JobError(
            f"job spec: unknown key(s) {', '.join(sorted(unknown))} in {key}; allowed are "
            f"{', '.join(sorted(allowed))}"
        )
    if "stems" in values and isinstance(values["stems"], list):
        values = {**values, "stems": tuple(values["stems"])}
    try:
        return klass(**values)
    except TypeError as exc:
        raise JobError(f"job spec: {key}: {exc}") from exc
