"""Stage 1, prepare the input: is it usable, which part, and what the stems will look like.

Fast checks only (no decoding), so a bad input or setting fails before any model is
loaded or any folder is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bridge.audio.formats import OutputFormat, resolve_output_format
from bridge.audio.probe import AudioInfo, probe
from bridge.audio.quantize import wants_dither
from bridge.audio.reader import FrameRange, resolve_range
from bridge.effects.plan import EffectsPlan
from bridge.names import check_path_text
from bridge.settings import OutputSettings, TimeRange
from bridge.stems import StemPlan


@dataclass(frozen=True)
class PreparedInput:
    """An input checked and settled before any heavy work.

    Attributes:
        info: What the input file is.
        frames: The part of it to separate.
        output: The stems' container, sample format, rate and channels.
        stems: The stem files to write.
        effects: What happens to the stems after separation.
        dither: Whether PCM stems are dithered.
        pictures: Whether a waveform and a spectrogram are drawn per stem.
    """

    info: AudioInfo
    frames: FrameRange
    output: OutputFormat
    stems: tuple[StemPlan, ...]
    effects: EffectsPlan
    dither: bool
    pictures: bool = True

    @property
    def names(self) -> list[str]:
        """The stem names, in order."""
        return [plan.name for plan in self.stems]


def prepare(
    path: Path,
    *,
    stems: tuple[StemPlan, ...],
    output: OutputSettings,
    time_range: TimeRange,
    effects: EffectsPlan,
) -> PreparedInput:
    """Check an input without decoding its audio.

    Raises:
        UnsupportedName: The path holds a line break or control character.
        AudioError: The input is not usable or the range is outside it.
        SettingsError: The output format cannot hold this input, or the preset names a
            frequency the output rate cannot hold.
    """
    check_path_text(path)
    info = probe(path)
    frames = resolve_range(info, time_range)
    fmt = resolve_output_format(info, output)
    effects.preset.check_sample_rate(fmt.sample_rate)
    dither = wants_dither(
        input_subtype=info.subtype, output_subtype=fmt.subtype, mode=output.dither
    )
    return PreparedInput(info, frames, fmt, stems, effects, dither, output.pictures)
