"""The settings of one separation, as frozen dataclasses built once and passed down.

CLI flags (and, for the daemon, TOML config and job options) become these objects;
nothing below reads flags or the environment for them. Each class validates its
values when built and raises :class:`~bridge.errors.SettingsError` naming the key,
the value, what is allowed and how to fix it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from bridge.errors import SettingsError
from bridge.models.catalog import DEFAULT_MODEL, get_spec
from bridge.stems import StemPlan, plan_stems

_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
PRECISIONS = ("fp32", "fp16", "bf16")
FORMATS = ("wav", "flac", "mp3", "ogg", "aiff")
BIT_DEPTHS = (16, 24, 32)
MP3_BITRATES = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
DITHER_MODES = ("auto", "on", "off")


@dataclass(frozen=True, kw_only=True)
class SeparationSettings:
    """How the model is run.

    Attributes:
        model: A name from :data:`bridge.models.catalog.MODELS`.
        stems: Stem words (see :mod:`bridge.stems`); empty means every source.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        shifts: Random time shifts averaged (0 = deterministic, as fast as it gets).
        overlap: Fraction of a segment shared with the next one, in [0, 1).
        segment_seconds: Segment length; ``None`` means the model's own.
        batch_size: Segments per forward pass; ``None`` picks one for the device.
        precision: ``fp32``; ``fp16`` or ``bf16`` on CUDA only.
    """

    model: str = DEFAULT_MODEL
    stems: tuple[str, ...] = ()
    device: str = "auto"
    shifts: int = 0
    overlap: float = 0.25
    segment_seconds: float | None = None
    batch_size: int | None = None
    precision: str = "fp32"

    def __post_init__(self) -> None:
        spec = get_spec(self.model)
        plan_stems(self.stems, spec.sources)
        if not _DEVICE.match(self.device):
            raise SettingsError(
                f"device {self.device!r} is not allowed; use auto, cpu, cuda or cuda:N "
                "(N = GPU index, e.g. cuda:0)",
                key="device",
                value=self.device,
            )
        if not 0 <= self.shifts <= 20:
            raise SettingsError(
                f"shifts {self.shifts} is out of range; use 0 (deterministic) to 20 "
                "(each shift adds one full pass)",
                key="shifts",
                value=self.shifts,
            )
        if not (math.isfinite(self.overlap) and 0 <= self.overlap <= 0.99):
            raise SettingsError(
                f"overlap {self.overlap} is out of range; use a fraction from 0 to 0.99 "
                "(default 0.25)",
                key="overlap",
                value=self.overlap,
            )
        if self.segment_seconds is not None:
            limit = spec.max_segment_seconds
            if not (math.isfinite(self.segment_seconds) and self.segment_seconds >= 1.0):
                raise SettingsError(
                    f"segment {self.segment_seconds} s is too short; use at least 1 second "
                    "or leave it out for the model's own",
                    key="segment_seconds",
                    value=self.segment_seconds,
                )
            if limit is not None and self.segment_seconds > limit:
                raise SettingsError(
                    f"segment {self.segment_seconds} s is longer than {self.model}'s "
                    f"{limit} s training segment; use at most {limit} or leave it out",
                    key="segment_seconds",
                    value=self.segment_seconds,
                )
        if self.batch_size is not None and not 1 <= self.batch_size <= 256:
            raise SettingsError(
                f"batch size {self.batch_size} is out of range; use 1 to 256 "
                "(leave it out to pick one for the device)",
                key="batch_size",
                value=self.batch_size,
            )
        if self.precision not in PRECISIONS:
            raise SettingsError(
                f"precision {self.precision!r} is not allowed; use one of {', '.join(PRECISIONS)}",
                key="precision",
                value=self.precision,
            )

    @property
    def stem_plans(self) -> tuple[StemPlan, ...]:
        """The output files these settings ask for."""
        return plan_stems(self.stems, get_spec(self.model).sources)


@dataclass(frozen=True, kw_only=True)
class OutputSettings:
    """What the stem files look like and whether existing ones may be replaced.

    Attributes:
        format: ``wav``, ``flac``, ``mp3``, ``ogg`` or ``aiff``; ``None`` keeps the input's.
        bit_depth: 16 or 24 (PCM) or 32 (float); ``None`` keeps the input's.
        sample_rate: Hz; ``None`` keeps the input's.
        overwrite: Replace stems that already exist instead of refusing.
        bitrate_kbps: Constant MP3 bitrate; ``None`` uses the encoder's default.
        quality: 0 (smallest) to 10 (best) for MP3 VBR and OGG; ``None`` uses the default.
        dither: ``auto`` (TPDF dither when writing fewer bits than the input has),
            ``on`` or ``off``.
        pictures: Draw a waveform and a spectrogram PNG beside each stem (see
            :mod:`bridge.pictures`).
    """

    format: str | None = None
    bit_depth: int | None = None
    sample_rate: int | None = None
    overwrite: bool = False
    bitrate_kbps: int | None = None
    quality: float | None = None
    dither: str = "auto"
    pictures: bool = True

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise SettingsError(
                f"format {self.format!r} is not supported; use one of {', '.join(FORMATS)}",
                key="format",
                value=self.format,
            )
        if self.bit_depth is not None and self.bit_depth not in BIT_DEPTHS:
            raise SettingsError(
                f"bit depth {self.bit_depth} is not supported; use 16, 24 or 32 (float)",
                key="bit_depth",
                value=self.bit_depth,
            )
        if self.sample_rate is not None and not 8000 <= self.sample_rate <= 384000:
            raise SettingsError(
                f"sample rate {self.sample_rate} Hz is out of range; use 8000 to 384000",
                key="sample_rate",
                value=self.sample_rate,
            )
        if self.bitrate_kbps is not None and self.bitrate_kbps not in MP3_BITRATES:
            raise SettingsError(
                f"MP3 bitrate {self.bitrate_kbps} kbps is not allowed; use one of "
                f"{', '.join(map(str, MP3_BITRATES))}",
                key="bitrate_kbps",
                value=self.bitrate_kbps,
            )
        if self.quality is not None and not (
            math.isfinite(self.quality) and 0 <= self.quality <= 10
        ):
            raise SettingsError(
                f"quality {self.quality} is out of range; use 0 (smallest file) to 10 (best)",
                key="quality",
                value=self.quality,
            )
        if self.bitrate_kbps is not None and self.quality is not None:
            raise SettingsError(
                "give either a constant MP3 bitrate or a VBR quality, not both",
                key="bitrate_kbps",
                value=self.bitrate_kbps,
            )
        if self.dither not in DITHER_MODES:
            raise SettingsError(
                f"dither {self.dither!r} is not allowed; use auto, on or off",
                key="dither",
                value=self.dither,
            )


@dataclass(frozen=True, kw_only=True)
class TimeRange:
    """A part of the input, in seconds from its start.

    Attributes:
        start_seconds: Where the part begins.
        length_seconds: How long it is; ``None`` means to the end of the file.
    """

    start_seconds: float = 0.0
    length_seconds: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_seconds) and self.start_seconds >= 0):
            raise SettingsError(
                f"start {self.start_seconds} s is not allowed; use 0 or more seconds",
                key="start",
                value=self.start_seconds,
            )
        if self.length_seconds is not None and not (
            math.isfinite(self.length_seconds) and self.length_seconds > 0
        ):
            raise SettingsError(
                f"length {self.length_seconds} s is not allowed; use more than 0 seconds "
                "or leave it out to go to the end of the file",
                key="length",
                value=self.length_seconds,
            )


@dataclass(frozen=True, kw_only=True)
class EffectsSettings:
    """What happens to the stems after separation (see :mod:`bridge.effects.plan`).

    Values given here override the preset's.

    Attributes:
        preset: A preset name (``clean``, ``vocal-polish``...) or a path to a ``.toml`` file.
        exact_sum: Put the residual the model leaves into one stem so the stems add
            back to the input; ``None`` turns it on when nothing changes the stems.
        residual_stem: The model source that takes the residual.
        loudness_lufs: Normalise each stem to this integrated loudness.
        match_mix: Normalise each stem to the input mix's loudness instead.
        true_peak_dbtp: Ceiling for the normalisation gain (default -1 dBTP).
    """

    preset: str = "clean"
    exact_sum: bool | None = None
    residual_stem: str = "other"
    loudness_lufs: float | None = None
    match_mix: bool = False
    true_peak_dbtp: float | None = None

    def __post_init__(self) -> None:
        if not self.preset.strip():
            raise SettingsError(
                "preset is empty; give a preset name (stembridge presets list) or a .toml path",
                key="preset",
                value=self.preset,
            )
        if self.loudness_lufs is not None and not (
            math.isfinite(self.loudness_lufs) and -70 <= self.loudness_lufs <= 0
        ):
            raise SettingsError(
                f"loudness {self.loudness_lufs} LUFS is out of range; use -70 to 0 "
                "(-23 for broadcast, -14 for streaming)",
                key="loudness_lufs",
                value=self.loudness_lufs,
            )
        if self.loudness_lufs is not None and self.match_mix:
            raise SettingsError(
                "give either a loudness target or match-mix, not both",
                key="loudness_lufs",
                value=self.loudness_lufs,
            )
        if self.true_peak_dbtp is not None and not (
            math.isfinite(self.true_peak_dbtp) and -30 <= self.true_peak_dbtp <= 0
        ):
            raise SettingsError(
                f"true-peak ceiling {self.true_peak_dbtp} dBTP is out of range; use -30 to 0 "
                "(-1 is usual)",
                key="true_peak_dbtp",
                value=self.true_peak_dbtp,
            )
