"""MSST model files: the ``.yaml`` that describes a network and the ``.ckpt`` with its weights.

Music-Source-Separation-Training (MSST) and python-audio-separator ship a model as two
files. The ``.yaml`` has four sections: ``model`` (the network class's constructor
arguments), ``audio`` (``chunk_size``, ``sample_rate``, ``num_channels``, and ``n_fft``,
``hop_length``, ``dim_f``, ``dim_t`` where the network takes them from there), ``training``
(``instruments``, ``target_instrument``; the rest is for training only) and ``inference``
(``batch_size``, ``num_overlap``, sometimes ``dim_t`` and ``chunk_size``).
:func:`read_config` turns it into a frozen :class:`MsstConfig`:

- The yaml is read with yaml's safe loader plus one tag, ``!!python/tuple``, which MSST
  writes for band lists: it makes a tuple of plain values and imports nothing. Any other
  ``!!python/...`` tag is refused.
- The architecture is the one MSST is told on its command line (``--model_type``); a yaml
  does not name it, so it is recognised, as python-audio-separator does, by the model
  argument only that class has: ``freqs_per_bands`` is BS-RoFormer, ``num_bands``
  Mel-Band RoFormer, ``num_subbands`` MDX23C. A caller that knows the family passes
  ``architecture=``; the keys must not contradict it (a BS-RoFormer yaml that keeps the
  default bands has no marker and needs it).
- The model section becomes that architecture's argument dataclass: every key is one the
  class's constructor takes in MSST or python-audio-separator, with the same default
  (``zero_dc`` aside: see :class:`RoformerArgs`);
  an unknown key is refused by name, as MSST's ``BSRoformer(**config.model)`` would.

:func:`load_checkpoint` opens a ``.ckpt`` with ``torch.load(weights_only=True)`` only (a
file that needs code to unpickle is refused) and unwraps a ``state_dict`` or ``model``
wrapper; :func:`load_weights` puts it into a network after naming the first missing,
unexpected and misshapen keys when it does not fit. torch is imported by those two
alone, so reading a config stays cheap.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_type_hints

import yaml

from bridge.errors import ModelCorrupt

if TYPE_CHECKING:
    import torch

_Number = TypeVar("_Number", int, float)

Architecture = Literal["bs_roformer", "mel_band_roformer", "mdx23c"]

ARCHITECTURES: tuple[Architecture, ...] = ("bs_roformer", "mel_band_roformer", "mdx23c")

# The model argument each architecture alone has (what python-audio-separator looks for).
_MARKERS: dict[str, Architecture] = {
    "freqs_per_bands": "bs_roformer",
    "num_bands": "mel_band_roformer",
    "num_subbands": "mdx23c",
}

_LABELS: dict[Architecture, str] = {
    "bs_roformer": "BS-RoFormer",
    "mel_band_roformer": "Mel-Band RoFormer",
    "mdx23c": "MDX23C",
}

#: BS-RoFormer's bands when a yaml gives none: the constructor default of MSST and
#: python-audio-separator, 62 bands over the 1025 bins of a 2048-point STFT.
DEFAULT_FREQS_PER_BANDS: tuple[int, ...] = (
    (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
)


def _at_least(minimum: float, default: Any = dataclasses.MISSING) -> Any:
    """A field whose value must be ``minimum`` or more (each item, for a tuple)."""
    return field(default=default, metadata={"minimum": minimum})


def _fraction(default: float) -> Any:
    """A probability: from 0 up to, not including, 1."""
    return field(default=default, metadata={"minimum": 0.0, "below": 1.0})


@dataclass(frozen=True, kw_only=True)
class RoformerArgs:
    """The model section keys both band-split RoFormers take, with their defaults.

    The training-only keys (dropouts, ``use_torch_checkpoint``, ``multi_stft_*`` for
    the loss) and the kernel choices (``flash_attn``, ``sage_attention``: other kernels
    for the same attention) are kept so that a released yaml reads, and change nothing
    at inference. ``dim_freqs_in`` is unused by both references (the bins follow from
    ``stft_n_fft``).

    ``zero_dc`` (MSST: zero each stem's DC bin before the inverse STFT) defaults to
    off here: python-audio-separator takes the key and never applies it, and that is
    what the released checkpoints are run with.
    """

    dim: int = _at_least(1)
    depth: int = _at_least(1)
    stereo: bool = False
    num_stems: int = _at_least(1, 1)
    time_transformer_depth: int = _at_least(0, 2)
    freq_transformer_depth: int = _at_least(0, 2)
    linear_transformer_depth: int = _at_least(0, 0)
    dim_head: int = _at_least(1, 64)
    heads: int = _at_least(1, 8)
    attn_dropout: float = _fraction(0.0)
    ff_dropout: float = _fraction(0.0)
    flash_attn: bool = True
    mlp_expansion_factor: int = _at_least(1, 4)
    sage_attention: bool = False
    zero_dc: bool = False
    use_torch_checkpoint: bool = False
    skip_connection: bool = False
    use_pope: bool = False
    dim_freqs_in: int = _at_least(1, 1025)
    stft_n_fft: int = _at_least(2, 2048)
    stft_hop_length: int = _at_least(1, 512)
    stft_win_length: int = _at_least(1, 2048)
    stft_normalized: bool = False
    mask_estimator_depth: int = _at_least(1, 2)
    multi_stft_resolution_loss_weight: float = _at_least(0.0, 1.0)
    multi_stft_resolutions_window_sizes: tuple[int, ...] = _at_least(
        1, (4096, 2048, 1024, 512, 256)
    )
    multi_stft_hop_size: int = _at_least(1, 147)
    multi_stft_normalized: bool = False

    @property
    def audio_channels(self) -> int:
        """Channels the network takes and gives: 2 when ``stereo``, else 1."""
        return 2 if self.stereo else 1

    @property
    def frequency_bins(self) -> int:
        """Bins of the one-sided STFT: ``stft_n_fft // 2 + 1``."""
        return self.stft_n_fft // 2 + 1


@dataclass(frozen=True, kw_only=True)
class BSRoformerArgs(RoformerArgs):
    """BS-RoFormer (arXiv 2309.02612): fixed bands of ``freqs_per_bands`` bins each."""

    freqs_per_bands: tuple[int, ...] = _at_least(1, DEFAULT_FREQS_PER_BANDS)


@dataclass(frozen=True, kw_only=True)
class MelBandRoformerArgs(RoformerArgs):
    """Mel-Band RoFormer (arXiv 2310.01809): ``num_bands`` overlapping mel bands.

    Its own defaults differ from BS-RoFormer's for the dropouts (0.1) and
    ``mask_estimator_depth`` (1). ``match_input_audio_length`` is accepted; the network
    here always returns the input's length (see ``roformer``).
    """

    num_bands: int = _at_least(2, 60)
    sample_rate: int = _at_least(1, 44100)
    attn_dropout: float = _fraction(0.1)
    ff_dropout: float = _fraction(0.1)
    mask_estimator_depth: int = _at_least(1, 1)
    match_input_audio_length: bool = False


@dataclass(frozen=True, kw_only=True)
class MDX23CArgs:
    """MDX23C (TFC-TDF v3): every key is read by the network, none has a default.

    Its STFT comes from the audio section (``n_fft``, ``hop_length``, ``dim_f``).
    """

    act: str
    bottleneck_factor: int = _at_least(1)
    growth: int = _at_least(0)
    norm: str
    num_blocks_per_scale: int = _at_least(1)
    num_channels: int = _at_least(1)
    num_scales: int = _at_least(1)
    num_subbands: int = _at_least(1)
    scale: tuple[int, ...] = _at_least(1)


ModelArgs = BSRoformerArgs | MelBandRoformerArgs | MDX23CArgs

_ARGS: dict[Architecture, type[ModelArgs]] = {
    "bs_roformer": BSRoformerArgs,
    "mel_band_roformer": MelBandRoformerArgs,
    "mdx23c": MDX23CArgs,
}


@dataclass(frozen=True)
class AudioSection:
    """``audio``: what one chunk is, and the STFT of networks that read it from here.

    Attributes:
        chunk_size: Samples per chunk the network is run on (MSST's inference cuts these).
        sample_rate: The rate the model was trained at (MSST's default: 44100).
        num_channels: Channels of the audio the model takes (MSST's default: 2).
        n_fft: STFT size, where the section gives one (MDX23C reads it).
        hop_length: STFT hop, where given.
        dim_f: Bins kept, where given.
        dim_t: Frames per chunk, where given (informative for the RoFormers).
    """

    chunk_size: int
    sample_rate: int
    num_channels: int
    n_fft: int | None
    hop_length: int | None
    dim_f: int | None
    dim_t: int | None


@dataclass(frozen=True)
class TrainingSection:
    """``training``: the stems. Everything else in it is for training only.

    Attributes:
        instruments: ``training.instruments``, in order.
        target_instrument: The one stem a single-target model produces, or None.
    """

    instruments: tuple[str, ...]
    target_instrument: str | None


@dataclass(frozen=True)
class InferenceSection:
    """``inference``: how MSST runs the model; None where the file says nothing.

    Attributes:
        batch_size: Chunks per forward pass.
        num_overlap: How many chunks cover each sample (the hop is chunk / num_overlap).
        dim_t: Frames per chunk, where given.
        chunk_size: A chunk size that overrides ``audio.chunk_size``, where given.
    """

    batch_size: int | None
    num_overlap: int | None
    dim_t: int | None
    chunk_size: int | None


@dataclass(frozen=True)
class MsstConfig:
    """One MSST ``.yaml``, checked.

    Attributes:
        path: The file it was read from (named by every error about it).
        architecture: ``bs_roformer``, ``mel_band_roformer`` or ``mdx23c``.
        model: The network's arguments, defaults filled in.
        audio: The audio section.
        training: The stems the model was trained on.
        inference: MSST's inference settings.
    """

    path: Path
    architecture: Architecture
    model: ModelArgs
    audio: AudioSection
    training: TrainingSection
    inference: InferenceSection

    @property
    def stems(self) -> tuple[str, ...]:
        """The stems the network outputs, in order: the target alone, or the instruments."""
        if self.training.target_instrument:
            return (self.training.target_instrument,)
        return self.training.instruments

    @property
    def chunk_size(self) -> int:
        """Samples per chunk at inference: ``inference.chunk_size`` when set, as in MSST."""
        return self.inference.chunk_size or self.audio.chunk_size


def read_config(path: Path, *, architecture: Architecture | None = None) -> MsstConfig:
    """Read and check an MSST model ``.yaml``.

    Args:
        path: The ``.yaml``.
        architecture: The family when the caller knows it (a catalog entry); None to
            recognise it from the model section's keys.

    Raises:
        ModelCorrupt: The file cannot be read, holds a tag other than ``!!python/tuple``,
            misses a section or key, has an unknown model key or a value not allowed, or
            its architecture cannot be told (or contradicts ``architecture``).
    """
    document = _read_yaml(path)
    sections = _Sections(path, document)
    model = sections.mapping("model")
    kind = _architecture(path, model, architecture)
    args = _model_args(path, kind, model)
    config = MsstConfig(
        path=path,
        architecture=kind,
        model=args,
        audio=_audio(sections),
        training=_training(sections),
        inference=_inference(sections),
    )
    _check_consistency(config)
    return config


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in an MSST ``.ckpt``, opened without running code from the file.

    A bare state dict (what MSST's training saves), or one under ``state_dict`` or
    ``model`` (the wrappers python-audio-separator unwraps), is accepted; anything that
    needs a class or function to unpickle is refused.

    Raises:
        ModelCorrupt: The file cannot be read as a torch checkpoint, needs code to
            unpickle, or holds something other than a mapping of names to tensors.
    """
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        named = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if named is None:
            raise ModelCorrupt(
                f"{path}: cannot be read as a torch checkpoint (not a pickle torch writes); "
                "download it again",
                path=path,
            ) from exc
        raise ModelCorrupt(
            f"{path}: names {named.group(1)}, which would have to be imported and run to "
            "unpickle it, and checkpoints are opened without running code from them; use a "
            "checkpoint that holds only tensors (re-save it with "
            "torch.save(model.state_dict(), path) where you trust it)",
            path=path,
        ) from exc
    except (OSError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelCorrupt(
            f"{path}: cannot be read as a torch checkpoint ({exc}); download it again",
            path=path,
        ) from exc
    state = loaded
    if isinstance(loaded, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded.get(wrapper), Mapping):
                state = loaded[wrapper]
                break
    if not isinstance(state, Mapping) or not state:
        raise ModelCorrupt(
            f"{path}: holds {type(state).__name__}, not a state dict of tensors (nor one "
            "under 'state_dict' or 'model'); use the model's released .ckpt",
            path=path,
        )
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise ModelCorrupt(
                f"{path}: entry {name!r} of its state dict is a {type(value).__name__}, not a "
                "tensor; use the model's released .ckpt",
                path=path,
            )
    return dict(state)


def load_weights(
    network: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    checkpoint: Path,
    config: MsstConfig,
) -> None:
    """Load ``state`` into ``network`` strictly, naming what does not fit first.

    Raises:
        ModelCorrupt: Keys are missing or unexpected, or a tensor has another shape
            than the config's network has there; the message names the first of each.
    """
    expected = network.state_dict()
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    misshapen = [
        name
        for name, tensor in expected.items()
        if name in state and tuple(state[name].shape) != tuple(tensor.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} key(s) missing, the first {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), the first {unexpected[0]}")
    if misshapen:
        name = misshapen[0]
        problems.append(
            f"{len(misshapen)} of another shape, the first {name}: "
            f"{tuple(state[name].shape)} in the file, {tuple(expected[name].shape)} for the config"
        )
    if problems:
        raise ModelCorrupt(
            f"{checkpoint}: does not fit the {_LABELS[config.architecture]} that "
            f"{config.path} describes ({'; '.join(problems)}); use the .yaml released with "
            "this checkpoint",
            path=checkpoint,
        )
    network.load_state_dict(state, strict=True)


class _MsstLoader(yaml.SafeLoader):
    """yaml's safe loader, plus ``!!python/tuple`` (a sequence of plain values)."""


def _construct_tuple(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[Any, ...]:
    if not isinstance(node, yaml.SequenceNode):
        raise yaml.constructor.ConstructorError(
            None, None, "!!python/tuple must be a sequence", node.start_mark
        )
    return tuple(loader.construct_sequence(node, deep=True))


_MsstLoader.add_constructor("tag:yaml.org,2002:python/tuple", _construct_tuple)


def _read_yaml(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelCorrupt(f"{path}: cannot be read ({exc}); download it again", path=path) from exc
    try:
        # A SafeLoader subclass: the one tag it adds builds a tuple, nothing else.
        return yaml.load(text, Loader=_MsstLoader)
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise ModelCorrupt(
            f"{path}: is not a plain MSST config ({problem}); only plain values and "
            "!!python/tuple are read, nothing that names Python code: use the model's "
            "released .yaml",
            path=path,
        ) from exc


class _Sections:
    """The top level of a config: its sections as mappings with string keys."""

    def __init__(self, path: Path, document: object) -> None:
        if not isinstance(document, Mapping):
            raise ModelCorrupt(
                f"{path}: is not an MSST config (a mapping with the sections model, audio, "
                "training); use the model's released .yaml",
                path=path,
            )
        self.path = path
        self.document = document

    def mapping(self, name: str, *, required: bool = True) -> Mapping[str, object]:
        section = self.document.get(name)
        if section is None and not required:
            return {}
        if not isinstance(section, Mapping):
            raise ModelCorrupt(
                f"{self.path}: has no {name} section (a mapping); an MSST config has "
                "model, audio and training sections: use the model's released .yaml",
                path=self.path,
            )
        for key in section:
            if not isinstance(key, str):
                raise ModelCorrupt(
                    f"{self.path}: {name} has the key {key!r}, not a name; use the model's "
                    "released .yaml",
                    path=self.path,
                )
        return section


def _architecture(
    path: Path, model: Mapping[str, object], given: Architecture | None
) -> Architecture:
    found = sorted({kind for key, kind in _MARKERS.items() if key in model})
    if given is not None and given not in ARCHITECTURES:
        raise ModelCorrupt(
            f"{path}: architecture {given!r} is not known; use one of {', '.join(ARCHITECTURES)}",
            path=path,
        )
    if given is not None and found and found != [given]:
        raise ModelCorrupt(
            f"{path}: is said to be {_LABELS[given]}, but its model section has "
            f"{_marker_list(found)}; use the .yaml released with this model",
            path=path,
        )
    if given is not None:
        return given
    if len(found) == 1:
        return found[0]
    if found:
        raise ModelCorrupt(
            f"{path}: its model section has {_marker_list(found)}, which belong to different "
            "architectures; use the .yaml released with this model",
            path=path,
        )
    raise ModelCorrupt(
        f"{path}: cannot tell which network this is: its model section has none of "
        f"{', '.join(_MARKERS)} ({', '.join(f'{k}: {_LABELS[v]}' for k, v in _MARKERS.items())}); "
        "name the architecture (one of " + ", ".join(ARCHITECTURES) + ")",
        path=path,
    )


def _marker_list(kinds: list[Architecture]) -> str:
    return " and ".join(
        f"{key} ({_LABELS[kind]})" for key, kind in _MARKERS.items() if kind in kinds
    )


def _model_args(path: Path, kind: Architecture, model: Mapping[str, object]) -> ModelArgs:
    cls = _ARGS[kind]
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [key for key in model if key not in known]
    if unknown:
        raise ModelCorrupt(
            f"{path}: model.{unknown[0]} is not a {_LABELS[kind]} argument (it takes "
            f"{', '.join(known)}); use the .yaml released with this checkpoint",
            path=path,
        )
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, spec in known.items():
        if name not in model:
            if spec.default is dataclasses.MISSING:
                raise ModelCorrupt(
                    f"{path}: model.{name} is missing; every {_LABELS[kind]} config gives it",
                    path=path,
                )
            continue
        values[name] = _convert(path, f"model.{name}", model[name], hints[name], spec.metadata)
    return cls(**values)


def _convert(
    path: Path, where: str, value: object, hint: object, limits: Mapping[str, float]
) -> Any:
    """``value`` as the type ``hint`` names, within ``limits``, or a refusal naming it."""
    if hint is bool:
        if isinstance(value, bool):
            return value
        allowed = "true or false"
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return _within(path, where, value, limits)
        allowed = "a whole number"
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return _within(path, where, float(value), limits)
        allowed = "a number"
    elif hint is str:
        if isinstance(value, str) and value:
            return value
        allowed = "a name"
    else:  # tuple[int, ...]: band and window sizes, scales
        if (
            isinstance(value, list | tuple)
            and value
            and all(isinstance(item, int) and not isinstance(item, bool) for item in value)
        ):
            return tuple(_within(path, where, item, limits) for item in value)
        allowed = "a list of whole numbers"
    raise ModelCorrupt(f"{path}: {where} = {value!r} is not allowed; use {allowed}", path=path)


def _within(path: Path, where: str, value: _Number, limits: Mapping[str, float]) -> _Number:
    minimum = limits.get("minimum")
    below = limits.get("below")
    if (minimum is not None and value < minimum) or (below is not None and value >= below):
        allowed = f"at least {minimum}" if below is None else f"from {minimum} to below {below}"
        raise ModelCorrupt(f"{path}: {where} = {value!r} is not allowed; use {allowed}", path=path)
    return value


def _count(path: Path, section: str, values: Mapping[str, object], key: str) -> int | None:
    """A positive whole number, or None where the section does not have it."""
    if values.get(key) is None:
        return None
    count: int = _convert(path, f"{section}.{key}", values[key], int, {"minimum": 1})
    return count


def _audio(sections: _Sections) -> AudioSection:
    path, audio = sections.path, sections.mapping("audio")
    chunk_size = _count(path, "audio", audio, "chunk_size")
    if chunk_size is None:
        raise ModelCorrupt(
            f"{path}: audio.chunk_size is missing; an MSST config gives the samples per chunk",
            path=path,
        )
    return AudioSection(
        chunk_size=chunk_size,
        sample_rate=_count(path, "audio", audio, "sample_rate") or 44100,
        num_channels=_count(path, "audio", audio, "num_channels") or 2,
        n_fft=_count(path, "audio", audio, "n_fft"),
        hop_length=_count(path, "audio", audio, "hop_length"),
        dim_f=_count(path, "audio", audio, "dim_f"),
        dim_t=_count(path, "audio", audio, "dim_t"),
    )


def _training(sections: _Sections) -> TrainingSection:
    training = sections.mapping("training")
    instruments = training.get("instruments")
    if (
        not isinstance(instruments, list | tuple)
        or not instruments
        or not all(isinstance(name, str) and name for name in instruments)
        or len(set(instruments)) != len(instruments)
    ):
        raise ModelCorrupt(
            f"{sections.path}: training.instruments = {instruments!r} is not allowed; use a "
            "list of distinct stem names",
            path=sections.path,
        )
    # MSST tests the target for truth: an empty one is none.
    target = training.get("target_instrument") or None
    if target is not None and (not isinstance(target, str) or target not in instruments):
        raise ModelCorrupt(
            f"{sections.path}: training.target_instrument = {target!r} is not allowed; use "
            f"one of training.instruments ({', '.join(instruments)}) or null",
            path=sections.path,
        )
    return TrainingSection(instruments=tuple(instruments), target_instrument=target)


def _inference(sections: _Sections) -> InferenceSection:
    path, inference = sections.path, sections.mapping("inference", required=False)
    return InferenceSection(
        batch_size=_count(path, "inference", inference, "batch_size"),
        num_overlap=_count(path, "inference", inference, "num_overlap"),
        dim_t=_count(path, "inference", inference, "dim_t"),
        chunk_size=_count(path, "inference", inference, "chunk_size"),
    )


def _check_consistency(config: MsstConfig) -> None:
    """What the reference constructors assert, said with the file and the fix."""
    path, args = config.path, config.model
    if isinstance(args, RoformerArgs):
        if args.num_stems != len(config.stems):
            raise ModelCorrupt(
                f"{path}: model.num_stems = {args.num_stems}, but training gives "
                f"{len(config.stems)} output stem(s) ({', '.join(config.stems)}); use the "
                ".yaml released with this checkpoint",
                path=path,
            )
        if args.audio_channels != config.audio.num_channels:
            raise ModelCorrupt(
                f"{path}: model.stereo = {str(args.stereo).lower()}, but audio.num_channels = "
                f"{config.audio.num_channels}; use the .yaml released with this checkpoint",
                path=path,
            )
        if args.stft_win_length > args.stft_n_fft:
            raise ModelCorrupt(
                f"{path}: model.stft_win_length = {args.stft_win_length} is not allowed; use "
                f"at most stft_n_fft ({args.stft_n_fft})",
                path=path,
            )
    if isinstance(args, BSRoformerArgs) and (
        len(args.freqs_per_bands) < 2 or sum(args.freqs_per_bands) != args.frequency_bins
    ):
        raise ModelCorrupt(
            f"{path}: model.freqs_per_bands has {len(args.freqs_per_bands)} bands of "
            f"{sum(args.freqs_per_bands)} bins in all; use at least 2 bands that add up to "
            f"the {args.frequency_bins} bins of stft_n_fft = {args.stft_n_fft}",
            path=path,
        )
    if isinstance(args, MDX23CArgs):
        for key in ("n_fft", "hop_length", "dim_f"):
            if getattr(config.audio, key) is None:
                raise ModelCorrupt(
                    f"{path}: audio.{key} is missing; MDX23C takes its STFT from the audio section",
                    path=path,
                )
