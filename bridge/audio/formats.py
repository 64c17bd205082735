"""What the stem files will be: container, sample format, rate and channels.

By default a stem keeps its input's container, sample format (16/24-bit PCM stay
PCM, float stays float), sample rate and channel count, so it drops into the same
session as its source. Lossy inputs (MP3, OGG) keep their container; a lossless
container asked for from a lossy input gets 24-bit PCM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import soundfile as sf

from bridge.audio.probe import AudioInfo
from bridge.errors import SettingsError
from bridge.settings import OutputSettings

_CONTAINER_OF_INPUT = {
    "WAV": "wav",
    "WAVEX": "wav",
    "RF64": "wav",
    "W64": "wav",
    "FLAC": "flac",
    "AIFF": "aiff",
    "OGG": "ogg",
    "MP3": "mp3",
}
_SF_FORMAT = {"wav": "WAV", "flac": "FLAC", "aiff": "AIFF", "ogg": "OGG", "mp3": "MP3"}
_PCM_OF_DEPTH = {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}
_KEPT_SUBTYPES = {
    "wav": ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"),
    "aiff": ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"),
    "flac": ("PCM_16", "PCM_24"),
}
_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


@dataclass(frozen=True)
class OutputFormat:
    """How every stem of one job is written.

    Attributes:
        extension: File extension without the dot (``wav``).
        container: libsndfile format name (``WAV``).
        subtype: libsndfile sample format (``PCM_24``).
        sample_rate: Frames per second.
        channels: Channel count.
        encoder_options: Extra ``soundfile.SoundFile`` arguments (lossy bitrate/quality).
    """

    extension: str
    container: str
    subtype: str
    sample_rate: int
    channels: int
    encoder_options: dict[str, Any] = field(default_factory=dict)


def resolve_output_format(info: AudioInfo, wanted: OutputSettings) -> OutputFormat:
    """Decide the stem format for ``info``'s file under ``wanted``'s overrides.

    Raises:
        SettingsError: The combination cannot be written (float FLAC, MP3 with more than
            two channels or an unsupported rate, a bit depth for a lossy format).
    """
    extension = wanted.format or _CONTAINER_OF_INPUT.get(info.format, "wav")
    rate = wanted.sample_rate or info.sample_rate
    subtype = _subtype(info, extension, wanted.bit_depth)
    if extension == "mp3":
        if info.channels > 2:
            raise SettingsError(
                f"{info.path}: MP3 holds at most 2 channels and this file has "
                f"{info.channels}; use --format wav or flac",
                key="format",
                value=extension,
            )
        _check_rate(rate, _MP3_RATES, "MP3")
    if subtype == "OPUS":
        _check_rate(rate, _OPUS_RATES, "Opus")
    container = _SF_FORMAT[extension]
    if not sf.check_format(container, subtype):
        raise SettingsError(
            f"{container} cannot hold {subtype} samples; choose another --format or --bit-depth",
            key="format",
            value=extension,
        )
    return OutputFormat(
        extension=extension,
        container=container,
        subtype=subtype,
        sample_rate=rate,
        channels=info.channels,
        encoder_options=_encoder_options(extension, wanted),
    )


def _encoder_options(extension: str, wanted: OutputSettings) -> dict[str, Any]:
    """libsndfile's compression level (0 = best, 1 = smallest) for a bitrate or quality."""
    if wanted.bitrate_kbps is not None:
        if extension != "mp3":
            raise SettingsError(
                f"a bitrate applies to MP3 only and the stems are {extension}; use --format "
                "mp3, or --quality for OGG",
                key="bitrate_kbps",
                value=wanted.bitrate_kbps,
            )
        # libsndfile maps level L to 320 - 288 L kbps (snapped to a standard rate); 1.0
        # itself is refused, 0.99 already gives 32 kbps.
        level = min((320 - wanted.bitrate_kbps) / 288, 0.99)
        return {"compression_level": level, "bitrate_mode": "CONSTANT"}
    if wanted.quality is not None:
        if extension not in ("mp3", "ogg"):
            raise SettingsError(
                f"quality applies to MP3 and OGG only and the stems are {extension}; leave it "
                "out, or use --format mp3 or ogg",
                key="quality",
                value=wanted.quality,
            )
        level = min(1 - wanted.quality / 10, 0.99)
        if extension == "mp3":
            return {"compression_level": level, "bitrate_mode": "VARIABLE"}
        return {"compression_level": level}
    return {}


def _subtype(info: AudioInfo, extension: str, bit_depth: int | None) -> str:
    if extension in ("mp3", "ogg"):
        if bit_depth is not None:
            raise SettingsError(
                f"--bit-depth does not apply to {extension} (a lossy format); leave it out, "
                "or use --format wav or flac",
                key="bit_depth",
                value=bit_depth,
            )
        if extension == "mp3":
            return "MPEG_LAYER_III"
        return "OPUS" if info.subtype == "OPUS" else "VORBIS"
    if bit_depth is not None:
        if extension == "flac" and bit_depth == 32:
            raise SettingsError(
                "FLAC holds at most 24-bit samples; use --bit-depth 24, or --format wav "
                "for 32-bit float",
                key="bit_depth",
                value=bit_depth,
            )
        return _PCM_OF_DEPTH[bit_depth]
    if info.subtype in _KEPT_SUBTYPES[extension]:
        return info.subtype
    if info.subtype in ("PCM_S8", "PCM_U8"):
        return "PCM_16"
    return "PCM_24"


def _check_rate(rate: int, allowed: tuple[int, ...], name: str) -> None:
    if rate not in allowed:
        raise SettingsError(
            f"{name} cannot be written at {rate} Hz; use --sample-rate with one of "
            f"{', '.join(map(str, allowed))}, or --format wav",
            key="sample_rate",
            value=rate,
        )
