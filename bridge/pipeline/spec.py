"""A job spec: everything needed to run one separation, as plain JSON.

Specs travel through the job store (and, for studios, through a broker), so they
are JSON with no pickling; :func:`JobSpec.from_json` reads them through the settings'
one schema (:mod:`bridge.schema`), so a spec edited by hand or sent by a host script is
refused by name when wrong, with the same rules and messages as flags and config.
"""

# Annotations stay evaluated (no `from __future__ import annotations`): bridge.schema
# reads them once at import, and as strings each would cost an evaluation there.

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Annotated, Any

from msgspec import Meta

from bridge import schema
from bridge.documents import parse_json
from bridge.effects.plan import residual_taker
from bridge.errors import JobError, SettingsError
from bridge.models.catalog import DEMUCS_OVERLAP, UNMIX_WIENER_ITERATIONS
from bridge.schema import Setting, Where
from bridge.settings import EffectsSettings, OutputSettings, SeparationSettings, TimeRange

#: Interactive submissions (a host script waiting) run before folder batches.
PRIORITY_INTERACTIVE = 0
PRIORITY_WATCHED = 10

#: The loudest a balance may make a stem (+24 dB): beyond it a slip of the mouse, not a mix.
MAX_BALANCE_GAIN = 16.0

# Settings that change how the engine runs but not what it computes.
_RUN_ONLY = ("device", "batch_size", "compiled_core", "cpu_kernels")
# Whole numbers go into SQLite, whose integers have 64 bits.
_SQLITE_INT = 2**63 - 1


@schema.settings
@dataclass(frozen=True, kw_only=True)
class BalanceSettings:
    """A finished stem set mixed with one gain per stem (the dashboard's mixer), to be
    rendered as a new stem set (:mod:`bridge.pipeline.balance`) instead of separating.

    Attributes:
        manifest: The stem set's ``manifest.json`` (absolute path).
        gains: Linear gain per stem name (0 mutes it); a stem left out keeps 1.
    """

    manifest: Annotated[str, Setting(allowed="the absolute path of a stem set's manifest.json")]
    gains: Annotated[
        dict[str, float], Setting(allowed=f"stem names with gains from 0 to {MAX_BALANCE_GAIN}")
    ] = field(default_factory=dict)

    @classmethod
    def from_gains(cls, *, manifest: str, gains: dict[str, Any]) -> "BalanceSettings":
        """Built from gains as JSON sent them (checked through the schema, by name).

        Raises:
            SettingsError: A gain that is not a number from 0 to :data:`MAX_BALANCE_GAIN`.
        """
        return schema.build(cls, {"manifest": manifest, "gains": gains}, Where("balance"))

    def __post_init__(self) -> None:
        schema.check(self)
        for name, gain in self.gains.items():
            if not (math.isfinite(gain) and 0.0 <= gain <= MAX_BALANCE_GAIN):
                raise SettingsError(
                    f"the gain of {name!r} is {gain}; give one from 0 (muted) to "
                    f"{MAX_BALANCE_GAIN} (+24 dB)",
                    key=f"gains.{name}",
                    value=gain,
                )


@schema.settings
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
        balance: Render this mix of a finished stem set instead of separating ``input``
            (which then names the set's mix, for people and the mixer's A/B).
    """

    input: Annotated[str, Setting(allowed="the input file's absolute path")]
    folder: Annotated[str, Setting(allowed="the stem folder's absolute path")]
    separation: Annotated[SeparationSettings, Setting()] = field(default_factory=SeparationSettings)
    output: Annotated[OutputSettings, Setting()] = field(default_factory=OutputSettings)
    effects: Annotated[EffectsSettings, Setting()] = field(default_factory=EffectsSettings)
    time_range: Annotated[TimeRange, Setting()] = field(default_factory=TimeRange)
    origin: Annotated[dict[str, Any], Setting()] = field(default_factory=dict)
    priority: Annotated[int, Meta(ge=-_SQLITE_INT, le=_SQLITE_INT), Setting()] = (
        PRIORITY_INTERACTIVE
    )
    source: Annotated[str, Setting()] = "submit"
    balance: Annotated[BalanceSettings, Setting()] | None = None

    def __post_init__(self) -> None:
        schema.check(self)

    def to_json(self) -> str:
        """The spec as a JSON document (without ``balance`` when there is none, so a
        separation's document is what it was before balances existed)."""
        data = dataclasses.asdict(self)
        if self.balance is None:
            del data["balance"]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "JobSpec":
        """Parse and validate a spec; keys left out take their defaults, so specs stored
        by earlier versions (which had fewer keys) still load.

        Raises:
            JobError: Not JSON, an unknown or missing key, or a value not allowed.
        """
        try:
            data = parse_json(text)
        except ValueError as exc:
            raise JobError(f"job spec is not JSON ({exc}); send a JSON object") from exc
        if not isinstance(data, dict):
            raise JobError("job spec must be a JSON object with input and folder")
        try:
            return schema.build(cls, data, Where(dotted=True))
        except SettingsError as exc:
            raise JobError(f"job spec: {exc}") from exc

    def identity(self, input_sha256: str, preset_sha256: str = "") -> str:
        """What the result depends on: the audio's content and every output-shaping setting.

        Two jobs with the same identity produce the same stems, so the second can
        reuse the first's result. Device and batch size only change how the engine
        runs, not what it computes, and are left out. The preset counts by its
        content (``preset_sha256``), so editing a preset file invalidates reuse. A setting
        left to the model counts as the model's own value (demucs' 0.25 overlap, the
        residual's ``other``, an ensemble's algorithm, Open-Unmix's one Wiener iteration;
        its options count for no other family), so leaving it out and giving that
        value are the same job; a single model's job has the identity it had before
        ensembles existed.
        """
        lineup = self.separation.lineup
        separation = {
            key: value
            for key, value in dataclasses.asdict(self.separation).items()
            if key not in _RUN_ONLY
        }
        if separation["overlap"] is None and all(m.family == "demucs" for m in lineup.models):
            separation["overlap"] = DEMUCS_OVERLAP
        if len(lineup.primary.members) > 1:
            separation["ensemble"] = lineup.primary.algorithm
            separation["ensemble_weights"] = lineup.primary.weights
        else:
            del separation["ensemble"], separation["ensemble_weights"]
        if separation["model_config"] is None:
            del separation["model_config"]
        if any(m.family == "openunmix" for m in lineup.models):
            if separation["wiener_iterations"] is None:
                separation["wiener_iterations"] = UNMIX_WIENER_ITERATIONS
        else:
            del separation["wiener_iterations"], separation["residual"]
        effects = dataclasses.asdict(self.effects)
        effects["residual_stem"] = residual_taker(self.effects.residual_stem, lineup.sources)
        output = dataclasses.asdict(self.output)
        output.pop("overwrite")
        output.pop("pictures")  # pictures are drawn beside the stems, which stay the same
        shape = {
            "separation": separation,
            "output": output,
            "time_range": dataclasses.asdict(self.time_range),
            "effects": effects,
            "preset_sha256": preset_sha256,
        }
        text = json.dumps({"audio": input_sha256, **shape}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()
