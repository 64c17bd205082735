"""The pedalboard effects a preset may name, with every parameter's allowed range.

Ranges are ours, not pedalboard's: pedalboard accepts some values that make no
sense on a stem (a 60 s delay, a ratio of 1000) and rejects others with messages
that do not say which preset line is wrong. Checking here, before any audio is
touched, lets a preset error name the file, the stem, the key and the range.

``PitchShift`` is left out on purpose: in pedalboard 0.9 it returns silence when
fed in blocks with ``reset=False`` (spotify/pedalboard#415), and stems are
always processed in blocks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Annotated

from msgspec import Meta

from bridge.schema import Kind


@dataclass(frozen=True)
class Parameter:
    """One numeric parameter of an effect.

    Attributes:
        minimum: Smallest allowed value.
        maximum: Largest allowed value.
        below_nyquist: The value is a frequency that must stay under half the stem's
            sample rate (checked once the rate is known).
    """

    minimum: float
    maximum: float
    below_nyquist: bool = False

    @functools.cached_property
    def kind(self) -> Kind:
        """The rule :mod:`bridge.schema` checks a preset's value with."""
        return Kind(Annotated[float, Meta(ge=self.minimum, le=self.maximum)])

    def describe(self) -> str:
        """The range as a person reads it."""
        limit = " and below half the sample rate" if self.below_nyquist else ""
        return f"{self.minimum:g} to {self.maximum:g}{limit}"


_CUTOFF = Parameter(10.0, 40000.0, below_nyquist=True)
_Q = Parameter(0.1, 18.0)
_SHELF_GAIN = Parameter(-24.0, 24.0)
_ATTACK = Parameter(0.1, 500.0)
_RELEASE = Parameter(1.0, 5000.0)
_UNIT = Parameter(0.0, 1.0)

#: Effect name (pedalboard class) -> its parameters.
EFFECTS: dict[str, dict[str, Parameter]] = {
    "Gain": {"gain_db": Parameter(-60.0, 24.0)},
    "HighpassFilter": {"cutoff_frequency_hz": _CUTOFF},
    "LowpassFilter": {"cutoff_frequency_hz": _CUTOFF},
    "HighShelfFilter": {"cutoff_frequency_hz": _CUTOFF, "gain_db": _SHELF_GAIN, "q": _Q},
    "LowShelfFilter": {"cutoff_frequency_hz": _CUTOFF, "gain_db": _SHELF_GAIN, "q": _Q},
    "PeakFilter": {"cutoff_frequency_hz": _CUTOFF, "gain_db": _SHELF_GAIN, "q": _Q},
    "Compressor": {
        "threshold_db": Parameter(-60.0, 0.0),
        "ratio": Parameter(1.0, 30.0),
        "attack_ms": _ATTACK,
        "release_ms": _RELEASE,
    },
    "Limiter": {"threshold_db": Parameter(-30.0, 0.0), "release_ms": _RELEASE},
    "NoiseGate": {
        "threshold_db": Parameter(-100.0, 0.0),
        "ratio": Parameter(1.0, 100.0),
        "attack_ms": _ATTACK,
        "release_ms": _RELEASE,
    },
    "Reverb": {
        "room_size": _UNIT,
        "damping": _UNIT,
        "wet_level": _UNIT,
        "dry_level": _UNIT,
        "width": _UNIT,
    },
    "Delay": {
        "delay_seconds": Parameter(0.0, 5.0),
        "feedback": Parameter(0.0, 0.99),
        "mix": _UNIT,
    },
    "Chorus": {
        "rate_hz": Parameter(0.0, 99.0),
        "depth": _UNIT,
        "centre_delay_ms": Parameter(1.0, 100.0),
        "feedback": Parameter(-0.95, 0.95),
        "mix": _UNIT,
    },
    "Phaser": {
        "rate_hz": Parameter(0.0, 99.0),
        "depth": _UNIT,
        "centre_frequency_hz": Parameter(20.0, 20000.0, below_nyquist=True),
        "feedback": Parameter(-0.95, 0.95),
        "mix": _UNIT,
    },
    "Distortion": {"drive_db": Parameter(0.0, 60.0)},
    "Clipping": {"threshold_db": Parameter(-60.0, 0.0)},
    "Bitcrush": {"bit_depth": Parameter(1.0, 32.0)},
    "Invert": {},
}

#: Effects named in presets that exist in pedalboard but cannot be used, and why.
REFUSED = {
    "PitchShift": (
        "PitchShift cannot be used on stems: pedalboard 0.9 returns silence when it is "
        "fed in blocks (spotify/pedalboard#415), and stems are always processed in blocks"
    ),
}
