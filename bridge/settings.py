"""The settings of one separation, as frozen dataclasses built once and passed down.

CLI flags (and, for the daemon, TOML config and job options) become these objects;
nothing below reads flags or the environment for them. Each field is declared once
(:mod:`bridge.schema`): its type and range, default, flag, help and what its error
says. Each class checks its values when built, whatever builds it, and raises
:class:`~bridge.errors.SettingsError` naming the key, the value, what is allowed and
how to fix it; rules that tie two fields together are written in ``__post_init__``.
"""

# Annotations stay evaluated (no `from __future__ import annotations`): bridge.schema
# reads them once at import, and as strings each would cost an evaluation there.

import functools
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from msgspec import Meta

from bridge import schema
from bridge.errors import SettingsError
from bridge.models.catalog import DEFAULT_MODEL, MODELS, Algorithm
from bridge.models.lineup import Lineup, make_lineup
from bridge.schema import Setting
from bridge.stems import StemPlan, parse_stem_list, plan_stems, routes

#: Integrated loudness a stem is brought to (also a preset's ``[loudness]`` target).
Lufs = Annotated[
    float, Meta(ge=-70.0, le=0.0), Setting(unit="LUFS", note="-23 for broadcast, -14 for streaming")
]
#: The ceiling a loudness gain never pushes a stem's true peak above.
TruePeak = Annotated[float, Meta(ge=-30.0, le=0.0), Setting(unit="dBTP", note="-1 is usual")]


def parse_weights(text: str) -> tuple[Any, ...]:
    """Split ``--ensemble-weights 2,1`` into numbers (a word that is none stays as it is,
    for the check to name)."""

    def number(word: str) -> Any:
        try:
            return float(word)
        except ValueError:
            return word

    return tuple(number(word.strip()) for word in text.split(","))


@schema.settings
@dataclass(frozen=True, kw_only=True)
class SeparationSettings:
    """Which models run, and how.

    Attributes:
        model: A name from :data:`bridge.models.catalog.MODELS` or a model file's path;
            several make an ensemble (see :mod:`bridge.models.lineup`).
        model_config: The ``.yaml`` of an MSST checkpoint given by path, kept elsewhere.
        stems: Stem words (see :mod:`bridge.stems`); empty means every source.
        ensemble: How an ensemble's models are combined; ``None`` means ``avg_wave``
            (a named ensemble's own for one).
        ensemble_weights: One weight per ensemble model, for the weighted algorithms.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        shifts: Random time shifts averaged (0 = deterministic, as fast as it gets).
        overlap: Fraction of a segment shared with the next one, in [0, 1); ``None``
            means the model's own.
        segment_seconds: Segment length; ``None`` means the model's own.
        batch_size: Segments per forward pass; ``None`` picks one for the device.
        precision: ``fp32``; ``fp16`` or ``bf16`` on CUDA only.
        compiled_core: Run the HT Demucs and MDX23C cores compiled on the CPU (see
            :mod:`bridge.models.compiled`): ``auto`` those of released size, ``on`` all,
            ``off`` none (the default: the eager networks on oneDNN's kernels were faster,
            and the compiled core's memory is about 5x theirs); decided when a model is
            loaded, so a warm model keeps it.
        cpu_kernels: ``onednn``: on an x86-64 CPU, the networks' linear layers, attention
            and convolutions on oneDNN's kernels (:mod:`bridge.models.onednn`), and on any
            CPU HT Demucs' transformer group norms as layer norms
            (:mod:`bridge.models.token_norm`); ``torch``: the networks' own layers on
            torch's kernels. Decided when a model is loaded.
        wiener_iterations: Open-Unmix's Wiener filter steps; ``None`` means its 1.
        residual: Open-Unmix: Wiener-filter with the mix minus the targets too.
    """

    model: Annotated[
        str | tuple[str, ...],
        Setting(
            flag="--model",
            repeat=True,
            help="the model (a name, a UVR/audio-separator file name or a model file's path); "
            "give it twice or more for an ensemble",
            allowed=f"one of {', '.join(MODELS)} or a model file's path, or a list of them "
            '(an ensemble, e.g. ["bs_roformer_viperx_1297", "mdx23c_instvoc_hq"])',
        ),
    ] = DEFAULT_MODEL
    model_config: (
        Annotated[
            str,
            Setting(
                flag="--model-config",
                metavar="YAML",
                help="the .yaml of an MSST checkpoint given by path, when it is not beside it",
                allowed="the path of the checkpoint's .yaml",
                left_out="to look beside the checkpoint",
            ),
        ]
        | None
    ) = None
    stems: Annotated[
        tuple[str, ...],
        Setting(
            flag="--stems",
            help="comma-separated stems: sources (vocals,drums...), instrumental, no_<stem>, "
            "<name>=<stem>+<stem>, or <stem>@<model> to take that stem from another model "
            "(default: every source)",
            allowed='a list of stem words like ["vocals", "instrumental"], or "vocals,drums"',
            text=parse_stem_list,
        ),
    ] = ()
    ensemble: (
        Annotated[
            Algorithm,
            Setting(
                flag="--ensemble",
                help="how an ensemble's models are combined",
                left_out="for avg_wave (a named ensemble's own)",
            ),
        ]
        | None
    ) = None
    ensemble_weights: (
        Annotated[
            tuple[Annotated[float, Meta(ge=0.0)], ...],
            Setting(
                flag="--ensemble-weights",
                metavar="W,W,...",
                help="one weight per ensemble model, in their order (avg_wave, avg_spec)",
                allowed='a list of numbers of 0 or more, one per model: [2, 1] or "2,1"',
                text=parse_weights,
            ),
        ]
        | None
    ) = None
    device: Annotated[
        str,
        Meta(pattern=r"^(auto|cpu|cuda|cuda:[0-9]+|mps)\Z"),
        Setting(
            flag="--device",
            help="where the model runs (auto: CUDA, then Apple's MPS, then the CPU)",
            allowed="auto, cpu, cuda or cuda:N (N = GPU index, e.g. cuda:0), or mps (Apple GPUs)",
        ),
    ] = "auto"
    shifts: Annotated[
        int,
        Meta(ge=0, le=20),
        Setting(
            flag="--shifts",
            metavar="N",
            help="random shifts to average",
            note="0 is deterministic; each shift adds one full pass",
        ),
    ] = 0
    overlap: (
        Annotated[
            float,
            Meta(ge=0.0, le=0.99),
            Setting(
                flag="--overlap",
                metavar="FRACTION",
                help="segment overlap",
                left_out="for the model's own (Demucs 0.25, MDX-Net 0.25, Open-Unmix 0.1, "
                "RoFormer and MDX23C the yaml's num_overlap windows, else 8, i.e. 0.875)",
            ),
        ]
        | None
    ) = None
    segment_seconds: (
        Annotated[
            float,
            Meta(ge=1.0),
            Setting(
                flag="--segment",
                metavar="SECONDS",
                help="segment length",
                unit="seconds",
                left_out="for the model's own",
            ),
        ]
        | None
    ) = None
    batch_size: (
        Annotated[
            int,
            Meta(ge=1, le=256),
            Setting(
                flag="--batch-size",
                metavar="N",
                help="segments per forward pass",
                left_out="to pick one for the device (1 on CPU, more on GPU)",
            ),
        ]
        | None
    ) = None
    precision: Annotated[
        Literal["fp32", "fp16", "bf16"], Setting(flag="--precision", help="fp16/bf16 need CUDA")
    ] = "fp32"
    wiener_iterations: (
        Annotated[
            int,
            Meta(ge=0, le=10),
            Setting(
                flag="--wiener-iterations",
                metavar="N",
                help="Open-Unmix: expectation-maximisation steps of its multichannel Wiener "
                "filter (0: the networks' magnitudes with the mix's phase)",
                left_out="for the reference's 1",
            ),
        ]
        | None
    ) = None
    residual: Annotated[
        bool,
        Setting(
            flag="--residual",
            help="Open-Unmix: filter with the mix minus its targets as one more source, as "
            "the reference's --residual (exact-sum puts that residual into one stem)",
        ),
    ] = False
    compiled_core: Annotated[
        Literal["auto", "on", "off"],
        Setting(
            flag="--compiled-core",
            help="on the CPU, run the HT Demucs and MDX23C cores compiled for this machine, "
            "compiled once per model and machine into the cache folder and then loaded "
            "(auto: networks of 1 M parameters or more; off by default: with the layers on "
            "oneDNN the eager networks were faster here, and a compiled htdemucs holds "
            "about 5x their memory)",
        ),
    ] = "off"
    cpu_kernels: Annotated[
        Literal["onednn", "torch"],
        Setting(
            flag="--cpu-kernels",
            help="on an x86-64 CPU, run the networks' linear layers, attention and "
            "convolutions on oneDNN's kernels (onednn, the default; on an AMD EPYC their "
            "matrix products ran 4.8x faster), and on any CPU HT Demucs' transformer group "
            "norms as layer norms; or run the networks' own layers on torch's kernels "
            "(torch)",
        ),
    ] = "onednn"

    def __post_init__(self) -> None:
        schema.check(self)
        plan_stems(self.stems, self.lineup.sources)
        for spec in self.lineup.models:
            limit = spec.max_segment_seconds
            if (
                self.segment_seconds is not None
                and limit is not None
                and self.segment_seconds > limit
            ):
                raise SettingsError(
                    f"segment {self.segment_seconds} s is longer than {spec.name}'s "
                    f"{limit} s training segment; use at most {limit} or leave it out",
                    key="segment_seconds",
                    value=self.segment_seconds,
                )

    @functools.cached_property
    def lineup(self) -> Lineup:
        """The models these settings run, and which gives each source."""
        return make_lineup(
            self.model,
            algorithm=self.ensemble,
            weights=self.ensemble_weights,
            routes=routes(self.stems),
            config_file=self.model_config,
        )

    @property
    def sources(self) -> tuple[str, ...]:
        """The sources the models give (``--model``'s), which stems and exact-sum use."""
        return self.lineup.sources

    @property
    def stem_plans(self) -> tuple[StemPlan, ...]:
        """The output files these settings ask for."""
        return plan_stems(self.stems, self.lineup.sources)


@schema.settings
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

    format: (
        Annotated[
            Literal["wav", "flac", "mp3", "ogg", "aiff"],
            Setting(flag="--format", help="output format", left_out="to keep the input's"),
        ]
        | None
    ) = None
    bit_depth: (
        Annotated[
            Literal[16, 24, 32],
            Setting(
                flag="--bit-depth",
                help="bits per sample",
                note="32 is float",
                left_out="to keep the input's",
            ),
        ]
        | None
    ) = None
    sample_rate: (
        Annotated[
            int,
            Meta(ge=8000, le=384000),
            Setting(
                flag="--sample-rate",
                metavar="HZ",
                help="output rate",
                unit="Hz",
                left_out="to keep the input's",
            ),
        ]
        | None
    ) = None
    overwrite: Annotated[bool, Setting(flag="--overwrite", help="replace existing stems")] = False
    bitrate_kbps: (
        Annotated[
            Literal[32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
            Setting(
                flag="--bitrate",
                metavar="KBPS",
                help="constant MP3 bitrate",
                note="kilobits per second",
                left_out="for the encoder's default",
            ),
        ]
        | None
    ) = None
    quality: (
        Annotated[
            float,
            Meta(ge=0.0, le=10.0),
            Setting(
                flag="--quality",
                metavar="Q",
                help="MP3 VBR / OGG quality",
                note="0 is the smallest file, 10 the best",
                left_out="for the encoder's default",
            ),
        ]
        | None
    ) = None
    dither: Annotated[
        Literal["auto", "on", "off"],
        Setting(
            flag="--dither",
            help="TPDF dither when rounding to PCM (auto: when writing fewer bits than the input)",
        ),
    ] = "auto"
    pictures: Annotated[
        bool,
        Setting(flag="--no-pictures", help="draw no waveform/spectrogram PNGs beside the stems"),
    ] = True

    def __post_init__(self) -> None:
        schema.check(self)
        if self.bitrate_kbps is not None and self.quality is not None:
            raise SettingsError(
                "give either a constant MP3 bitrate or a VBR quality, not both",
                key="bitrate_kbps",
                value=self.bitrate_kbps,
            )


@schema.settings
@dataclass(frozen=True, kw_only=True)
class TimeRange:
    """A part of the input, in seconds from its start.

    Attributes:
        start_seconds: Where the part begins.
        length_seconds: How long it is; ``None`` means to the end of the file.
    """

    start_seconds: Annotated[
        float,
        Meta(ge=0.0),
        Setting(flag="--start", metavar="SECONDS", help="range start", unit="seconds"),
    ] = 0.0
    length_seconds: (
        Annotated[
            float,
            Meta(gt=0.0),
            Setting(
                flag="--length",
                metavar="SECONDS",
                help="range length",
                unit="seconds",
                left_out="to go to the end of the file",
            ),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        schema.check(self)


@schema.settings
@dataclass(frozen=True, kw_only=True)
class EffectsSettings:
    """What happens to the stems after separation (see :mod:`bridge.effects.plan`).

    Values given here override the preset's.

    Attributes:
        preset: A preset name (``clean``, ``vocal-polish``...) or a path to a ``.toml`` file.
        exact_sum: Put the residual the model leaves into one stem so the stems add
            back to the input; ``None`` turns it on when nothing changes the stems.
        residual_stem: The model source that takes the residual; ``None``: ``other``, or
            the model's last source when it has no ``other``.
        loudness_lufs: Normalise each stem to this integrated loudness.
        match_mix: Normalise each stem to the input mix's loudness instead.
        true_peak_dbtp: Ceiling for the normalisation gain (default -1 dBTP).
    """

    preset: Annotated[
        str,
        Meta(pattern=r"\S"),
        Setting(
            flag="--preset",
            help="effects preset",
            allowed="a preset name (stembridge presets list) or a path to a .toml file",
        ),
    ] = "clean"
    exact_sum: (
        Annotated[
            bool,
            Setting(
                flag="--exact-sum",
                negatable=True,
                help="put the model's residual into one stem so the stems add back to the "
                "input (default: on when no effects are applied)",
                left_out="to decide by the effects",
            ),
        ]
        | None
    ) = None
    residual_stem: (
        Annotated[
            str,
            Setting(
                flag="--residual-to",
                metavar="STEM",
                help="stem taking the residual",
                allowed="a source of the model",
                left_out="for other (the model's last source when it has no other)",
            ),
        ]
        | None
    ) = None
    loudness_lufs: (
        Annotated[
            Lufs, Setting(flag="--loudness", metavar="LUFS", help="normalise each stem to this")
        ]
        | None
    ) = None
    match_mix: Annotated[
        bool, Setting(flag="--match-mix", help="normalise each stem to the mix's loudness")
    ] = False
    true_peak_dbtp: (
        Annotated[
            TruePeak,
            Setting(
                flag="--true-peak",
                metavar="DBTP",
                help="true-peak ceiling for normalisation",
                left_out="for the preset's (-1 when it has none)",
            ),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        schema.check(self)
        if self.loudness_lufs is not None and self.match_mix:
            raise SettingsError(
                "give either a loudness target or match-mix, not both",
                key="loudness_lufs",
                value=self.loudness_lufs,
            )
