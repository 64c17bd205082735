"""The models StemBridge knows by name, the official files that hold them, and the model
files users bring.

A model is a family plus its files and config. This is data only (no torch): the CLI
validates ``--model`` and ``--stems`` against it before anything heavy is imported.
``--model`` takes a catalog name (``htdemucs``, ``bs_roformer_viperx_1297``), a file name
users know from UVR and python-audio-separator
(``model_bs_roformer_ep_317_sdr_12.9755.ckpt``), or a path to a model file: an MSST
``.ckpt`` with its ``.yaml`` beside it, or a UVR MDX-Net ``.onnx`` (its parameters from
UVR's table or a sidecar, see :mod:`bridge.models.families.uvr_params`).

Families:

* ``demucs``: HT Demucs, Hybrid Demucs and the time-domain Demucs (v2/v3), through the
  ``demucs`` package's networks: every demucs 4.1 pretrained name (bags of networks with
  per-source weights; ``_q``: DiffQ-quantized) and each network alone by its signature;
* ``bs_roformer``, ``mel_band_roformer``, ``mdx23c``: MSST's ``.ckpt`` + ``.yaml``
  (:mod:`bridge.models.families.roformer`, :mod:`bridge.models.families.mdx23c`);
* ``mdx_net``: UVR's MDX-Net ONNX models (:mod:`bridge.models.families.mdx_net`);
* ``openunmix``: Open-Unmix, one ``<target>-<hash>.pth`` state dict per target
  (:mod:`bridge.models.families.openunmix`);
* ``spleeter``: Spleeter's release folders (TensorFlow checkpoints), read and run in
  torch without TensorFlow (:mod:`bridge.models.families.spleeter`);
* ``ensemble``: a named ensemble, several of the above whose stems are combined
  (:mod:`bridge.models.lineup`, :mod:`bridge.models.ensemble`).

The published scores are the medians python-audio-separator measured (its
``models-scores.json``) and, where the model's name carries one, that figure; their
origin is said with each. No checksums are published for the UVR and audio-separator
files: they are checked by loading (shapes and keys against their config).
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bridge.errors import ModelCorrupt, SettingsError
from bridge.names import windows_reserved

Family = Literal[
    "demucs",
    "bs_roformer",
    "mel_band_roformer",
    "mdx23c",
    "mdx_net",
    "openunmix",
    "spleeter",
    "ensemble",
]
#: How an ensemble combines its models' same stem (see :mod:`bridge.models.ensemble`).
Algorithm = Literal[
    "avg_wave", "median_wave", "min_wave", "max_wave", "avg_spec", "max_spec", "min_spec"
]
ALGORITHMS: tuple[Algorithm, ...] = typing.get_args(Algorithm)
#: The algorithms that weigh their members (the others pick or rank them).
WEIGHTED: tuple[Algorithm, ...] = ("avg_wave", "avg_spec")
#: How several ``--model`` are combined unless ``--ensemble`` says otherwise.
DEFAULT_ALGORITHM: Algorithm = "avg_wave"

FOUR_SOURCES = ("drums", "bass", "other", "vocals")
SIX_SOURCES = ("drums", "bass", "other", "vocals", "guitar", "piano")
VOCALS_INSTRUMENTAL = ("vocals", "instrumental")

#: demucs' legacy checkpoint site (``demucs.pretrained.ROOT_URL``): ``<folder>/<file>.th``.
DEMUCS_URL = "https://dl.fbaipublicfiles.com/demucs/"
#: Where demucs' own downloader fetches the original HT Demucs ``.th`` checkpoints.
CHECKPOINT_URL = DEMUCS_URL + "hybrid_transformer/"
#: UVR's public model releases (weights; MSST configs under mdx_model_data/mdx_c_configs).
UVR_MODELS_URL = "https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models/"
#: python-audio-separator's own model releases (tried after UVR's, as it does).
SEPARATOR_MODELS_URL = (
    "https://github.com/nomadkaraoke/python-audio-separator/releases/download/model-configs/"
)
#: Where the ``openunmix`` package downloads its weights: ``<record>/files/<file>``.
ZENODO_URL = "https://zenodo.org/records/"
#: Open-Unmix's targets, in the order its separators give them.
UNMIX_SOURCES = ("vocals", "drums", "bass", "other")
#: Open-Unmix's Wiener iterations unless the settings say (its CLI's ``--niter``).
UNMIX_WIENER_ITERATIONS = 1
#: Spleeter's release (``GithubModelProvider``: ``<name>.tar.gz`` and ``checksum.json``).
SPLEETER_URL = "https://github.com/deezer/spleeter/releases/download/v1.4.0/"
#: The files of a Spleeter release folder StemBridge reads (``model.meta`` is not read).
SPLEETER_FILES = ("checkpoint", "model.index", "model.data-00000-of-00001")
#: demucs' own overlap, used when the settings leave it to the model.
DEMUCS_OVERLAP = 0.25
#: The file types a path given as ``--model`` may have.
MODEL_SUFFIXES = (".ckpt", ".yaml", ".onnx")


@dataclass(frozen=True)
class ModelFile:
    """One file of a model and where it is published.

    Attributes:
        name: The file's name (also what is looked for in the model folders).
        urls: Where it is downloaded from, tried in order.
        sha256: Its published checksum, where one is published (or the first hex
            digits of it that the file's name carries, as torch.hub names do).
    """

    name: str
    urls: tuple[str, ...]
    sha256: str | None = None


@dataclass(frozen=True)
class Archive:
    """A published archive holding a model's files.

    Attributes:
        url: Where the ``.tar.gz`` is downloaded from.
        checksums: A JSON object of published sha256 checksums, by ``key``.
        key: The archive's entry in ``checksums``.
    """

    url: str
    checksums: str
    key: str


@dataclass(frozen=True)
class Score:
    """A published quality figure.

    Attributes:
        stem: The stem it is about.
        sdr_db: Signal-to-distortion ratio in dB.
        where: Who measured it, on what.
    """

    stem: str
    sdr_db: float
    where: str


@dataclass(frozen=True)
class ModelSpec:
    """A model: a family, its files and config, and what it produces.

    Attributes:
        name: The name users type (``htdemucs``), or the path of a model file.
        sources: The stems the model produces, in its output order.
        description: One line for ``stembridge models list``.
        family: How it is loaded and run (see the module docstring).
        checkpoints: Demucs: official checkpoint file names,
            ``<signature>-<sha256 prefix>.th``, one per network in the bag, in bag order
            (a signature twice where the bag file lists it twice).
        hf_repo: Demucs: the Hugging Face repository holding ``<name>.yaml`` and
            ``<signature>.safetensors`` files; empty for a single signature, which
            demucs fetches from its legacy site only.
        checkpoint_folder: Demucs: the legacy site's folder holding the checkpoints
            (``demucs/remote/files.txt``'s ``root:``).
        files: Other families: the weights, then the config (MSST), with their download
            locations.
        scores: Published quality figures.
        licence: The weights' licence as their publisher states it.
        licence_notice: The licence limits use (non-commercial): the first download
            says so.
        size_mb: The weights' size.
        max_segment_seconds: The longest segment the networks accept (transformer
            models cannot look further than their training segment); ``None`` if any.
        aliases: Other names users know the model by (UVR's and audio-separator's file
            names).
        local: ``files`` are paths on this machine given by the user.
        samplerate: The rate it takes and gives.
        channels: The channels it takes.
        members: A named ensemble: its models' names.
        algorithm: A named ensemble: how it combines them.
        weights: A named ensemble: its members' weights (``None``: equal).
        archive: The published archive (``.tar.gz``) that holds :attr:`files` under
            their base names, with the index of published checksums beside it
            (Spleeter's release folders); ``None`` when each file is published alone.
    """

    name: str
    sources: tuple[str, ...]
    description: str
    family: Family = "demucs"
    checkpoints: tuple[str, ...] = ()
    hf_repo: str = ""
    checkpoint_folder: str = "hybrid_transformer"
    files: tuple[ModelFile, ...] = ()
    scores: tuple[Score, ...] = ()
    licence: str = "MIT"
    licence_notice: bool = False
    size_mb: float | None = None
    max_segment_seconds: float | None = 7.8
    aliases: tuple[str, ...] = ()
    local: bool = False
    samplerate: int = 44100
    channels: int = 2
    members: tuple[str, ...] = ()
    algorithm: Algorithm | None = None
    weights: tuple[float, ...] | None = None
    archive: Archive | None = None

    @property
    def signatures(self) -> tuple[str, ...]:
        """What identifies the weights: the network signatures of a demucs bag, in bag
        order, the file names of the others, or an ensemble's members' in turn."""
        if self.family == "demucs":
            return tuple(name.split("-", 1)[0] for name in self.checkpoints)
        if self.family == "ensemble":
            return tuple(sig for name in self.members for sig in get_spec(name).signatures)
        return tuple(Path(file.name).name for file in self.files)

    @property
    def bag_file(self) -> str:
        """The bag definition file name of a demucs model (``<name>.yaml``)."""
        return f"{self.name}.yaml"


def _uvr(name: str, *, config: str | None = None) -> tuple[ModelFile, ...]:
    """A model's files as UVR and python-audio-separator publish them (UVR's releases
    first, then audio-separator's; an MSST config under UVR's mdx_c_configs)."""
    files = [ModelFile(name, (UVR_MODELS_URL + name, SEPARATOR_MODELS_URL + name))]
    if config is not None:
        uvr = f"{UVR_MODELS_URL}mdx_model_data/mdx_c_configs/{config}"
        files.append(ModelFile(config, (uvr, SEPARATOR_MODELS_URL + config)))
    return tuple(files)


def _zenodo(
    record: int, targets: tuple[str, ...], prefixes: tuple[str, ...], *, joint: str = "-"
) -> tuple[ModelFile, ...]:
    """An Open-Unmix model's files: ``<target><joint><sha256 prefix>.pth`` per target in
    the Zenodo record the ``openunmix`` package's hub code downloads them from."""
    return tuple(
        ModelFile(
            f"{target}{joint}{prefix}.pth",
            (f"{ZENODO_URL}{record}/files/{target}{joint}{prefix}.pth",),
            sha256=prefix,
        )
        for target, prefix in zip(targets, prefixes, strict=True)
    )


def _measured(**sdr: float) -> tuple[Score, ...]:
    where = "python-audio-separator 0.47 models-scores.json (median over its evaluation tracks)"
    return tuple(Score(stem, value, where) for stem, value in sdr.items())


_COMMUNITY = "not stated by its publisher (community model distributed by UVR)"

_DEMUCS = "demucs README (MUSDB18-HQ, average of the four stems)"
_MVSEP = "MVSEP multisong (the figure in the checkpoint's name)"

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="htdemucs",
            sources=FOUR_SOURCES,
            description="Hybrid Transformer Demucs v4, 4 stems (default)",
            checkpoints=("955717e8-8726e21a.th",),
            hf_repo="adefossez/HTDemucs",
        ),
        ModelSpec(
            name="htdemucs_ft",
            sources=FOUR_SOURCES,
            description="htdemucs fine-tuned, one specialist per stem: best, ~4x slower",
            checkpoints=(
                "f7e0c4bc-ba3fe64a.th",
                "d12395a8-e57c48e6.th",
                "92cfc3b6-ef3bcb9c.th",
                "04573f0d-f3cf25b2.th",
            ),
            hf_repo="adefossez/HTDemucs-ft",
            scores=(Score("average", 9.0, _DEMUCS),),
        ),
        ModelSpec(
            name="htdemucs_6s",
            sources=SIX_SOURCES,
            description="htdemucs with guitar and piano stems (piano is weak)",
            checkpoints=("5c90dfd2-34c22ccb.th",),
            hf_repo="adefossez/HTDemucs-6s",
        ),
        ModelSpec(
            name="hdemucs_mmi",
            sources=FOUR_SOURCES,
            description="Hybrid Demucs v3 retrained on extra data, 4 stems",
            checkpoints=("75fc33f5-1941ce65.th",),
            hf_repo="adefossez/Demucs-hdemucs_mmi",
            max_segment_seconds=None,
        ),
        ModelSpec(
            name="mdx",
            sources=FOUR_SOURCES,
            description="Demucs v3 MDX 2021 track A: 2 time-domain + 2 hybrid networks, "
            "per-source weights",
            checkpoints=(
                "0d19c1c6-0f06f20e.th",
                "7ecf8ec1-70f50cc9.th",
                "c511e2ab-fe698775.th",
                "7d865c68-3d5dd56b.th",
            ),
            hf_repo="adefossez/Demucs-mdx",
            checkpoint_folder="mdx_final",
            max_segment_seconds=None,
        ),
        ModelSpec(
            name="mdx_extra",
            sources=FOUR_SOURCES,
            description="Demucs v3 MDX 2021 track B (trained with extra data), 4 networks",
            checkpoints=(
                "e51eebcc-c1b80bdd.th",
                "a1d90b5c-ae9d2452.th",
                "5d2d6c55-db83574e.th",
                "cfa93e08-61801ae1.th",
            ),
            hf_repo="adefossez/Demucs-mdx_extra",
            checkpoint_folder="mdx_final",
            max_segment_seconds=None,
        ),
        ModelSpec(
            name="mdx_q",
            sources=FOUR_SOURCES,
            description="mdx quantized with DiffQ (smaller download; needs the diffq extra)",
            checkpoints=(
                "6b9c2ca1-3fd82607.th",
                "b72baf4e-8778635e.th",
                "42e558d4-196e0e1b.th",
                "305bc58f-18378783.th",
            ),
            hf_repo="adefossez/Demucs-mdx_q",
            checkpoint_folder="mdx_final",
            max_segment_seconds=None,
        ),
        ModelSpec(
            name="mdx_extra_q",
            sources=FOUR_SOURCES,
            description="mdx_extra quantized with DiffQ (smaller download; needs the diffq extra)",
            checkpoints=(
                "83fc094f-4a16d450.th",
                "464b36d7-e5a9386e.th",
                "14fc6a69-a89dd0ee.th",
                "7fd6ef75-a905dd85.th",
            ),
            hf_repo="adefossez/Demucs-mdx_extra_q",
            checkpoint_folder="mdx_final",
            max_segment_seconds=None,
        ),
        ModelSpec(
            name="repro_mdx_a",
            sources=FOUR_SOURCES,
            description="mdx retrained by demucs' grids (2 time-domain + 2 hybrid networks)",
            checkpoints=(
                "9a6b4851-03af0aa6.th",
                "1ef250f1-592467ce.th",
                "fa0cb7f9-100d8bf4.th",
                "902315c2-b39ce9c9.th",
            ),
            hf_repo="adefossez/Demucs-repro_mdx_a",
            checkpoint_folder="mdx_final",
            max_segment_seconds=None,
        ),
        ModelSpec(
            name="repro_mdx_a_time_only",
            sources=FOUR_SOURCES,
            description="repro_mdx_a's two time-domain Demucs networks alone",
            checkpoints=(
                "9a6b4851-03af0aa6.th",
                "9a6b4851-03af0aa6.th",
                "1ef250f1-592467ce.th",
                "1ef250f1-592467ce.th",
            ),
            hf_repo="adefossez/Demucs-repro_mdx_a_time_only",
            checkpoint_folder="mdx_final",
            max_segment_seconds=None,
        ),
        ModelSpec(
            name="repro_mdx_a_hybrid_only",
            sources=FOUR_SOURCES,
            description="repro_mdx_a's two hybrid (HDemucs) networks alone",
            checkpoints=(
                "fa0cb7f9-100d8bf4.th",
                "902315c2-b39ce9c9.th",
                "fa0cb7f9-100d8bf4.th",
                "902315c2-b39ce9c9.th",
            ),
            hf_repo="adefossez/Demucs-repro_mdx_a_hybrid_only",
            checkpoint_folder="mdx_final",
            max_segment_seconds=None,
        ),
        ModelSpec(
            name="bs_roformer_viperx_1297",
            sources=VOCALS_INSTRUMENTAL,
            description="BS-RoFormer vocals/instrumental (ep 317), audio-separator's default",
            family="bs_roformer",
            files=_uvr(
                "model_bs_roformer_ep_317_sdr_12.9755.ckpt",
                config="model_bs_roformer_ep_317_sdr_12.9755.yaml",
            ),
            scores=(Score("vocals", 12.9755, _MVSEP), *_measured(vocals=11.77, instrumental=16.45)),
            licence=_COMMUNITY,
            max_segment_seconds=None,
            aliases=("model_bs_roformer_ep_317_sdr_12.9755.ckpt",),
        ),
        ModelSpec(
            name="bs_roformer_viperx_1296",
            sources=VOCALS_INSTRUMENTAL,
            description="BS-RoFormer vocals/instrumental (viperx ep 368)",
            family="bs_roformer",
            files=_uvr(
                "model_bs_roformer_ep_368_sdr_12.9628.ckpt",
                config="model_bs_roformer_ep_368_sdr_12.9628.yaml",
            ),
            scores=(Score("vocals", 12.9628, _MVSEP), *_measured(vocals=12.10, instrumental=16.31)),
            licence=_COMMUNITY,
            max_segment_seconds=None,
            aliases=("model_bs_roformer_ep_368_sdr_12.9628.ckpt",),
        ),
        ModelSpec(
            name="mel_band_roformer_kim_vocals",
            sources=("vocals", "other"),
            description="Mel-Band RoFormer vocals (Kimberley Jensen)",
            family="mel_band_roformer",
            files=_uvr("vocals_mel_band_roformer.ckpt", config="vocals_mel_band_roformer.yaml"),
            scores=_measured(vocals=12.60),
            licence=_COMMUNITY,
            max_segment_seconds=None,
            aliases=("vocals_mel_band_roformer.ckpt",),
        ),
        ModelSpec(
            name="mel_band_roformer_karaoke",
            sources=VOCALS_INSTRUMENTAL,
            description="Mel-Band RoFormer karaoke: lead vocals apart from backing vocals",
            family="mel_band_roformer",
            files=_uvr(
                "mel_band_roformer_karaoke_aufr33_viperx_sdr_10.1956.ckpt",
                config="mel_band_roformer_karaoke_aufr33_viperx_sdr_10.1956_config.yaml",
            ),
            scores=(Score("vocals", 10.1956, _MVSEP),),
            licence=_COMMUNITY,
            max_segment_seconds=None,
            aliases=("mel_band_roformer_karaoke_aufr33_viperx_sdr_10.1956.ckpt",),
        ),
        ModelSpec(
            name="mel_band_roformer_denoise",
            sources=("dry", "other"),
            description="Mel-Band RoFormer de-noise (aufr33): the dry signal apart from noise",
            family="mel_band_roformer",
            files=_uvr(
                "denoise_mel_band_roformer_aufr33_sdr_27.9959.ckpt",
                config="denoise_mel_band_roformer_aufr33_sdr_27.9959_config.yaml",
            ),
            scores=(Score("dry", 27.9959, _MVSEP),),
            licence=_COMMUNITY,
            max_segment_seconds=None,
            aliases=("denoise_mel_band_roformer_aufr33_sdr_27.9959.ckpt",),
        ),
        ModelSpec(
            name="mel_band_roformer_crowd",
            sources=("crowd", "other"),
            description="Mel-Band RoFormer crowd removal (aufr33, viperx)",
            family="mel_band_roformer",
            files=_uvr(
                "mel_band_roformer_crowd_aufr33_viperx_sdr_8.7144.ckpt",
                config="mel_band_roformer_crowd_aufr33_viperx_sdr_8.7144_config.yaml",
            ),
            scores=(Score("crowd", 8.7144, _MVSEP),),
            licence=_COMMUNITY,
            max_segment_seconds=None,
            aliases=("mel_band_roformer_crowd_aufr33_viperx_sdr_8.7144.ckpt",),
        ),
        ModelSpec(
            name="bs_roformer_dereverb",
            sources=("noreverb", "reverb"),
            description="BS-RoFormer de-reverb (384 dim, 10 deep)",
            family="bs_roformer",
            files=_uvr(
                "deverb_bs_roformer_8_384dim_10depth.ckpt",
                config="deverb_bs_roformer_8_384dim_10depth_config.yaml",
            ),
            licence=_COMMUNITY,
            max_segment_seconds=None,
            aliases=("deverb_bs_roformer_8_384dim_10depth.ckpt",),
        ),
        ModelSpec(
            name="mdx23c_instvoc_hq",
            sources=VOCALS_INSTRUMENTAL,
            description="MDX23C (TFC-TDF v3) InstVoc HQ, 8k FFT",
            family="mdx23c",
            files=_uvr("MDX23C-8KFFT-InstVoc_HQ.ckpt", config="model_2_stem_full_band_8k.yaml"),
            scores=_measured(vocals=10.56, instrumental=15.83),
            licence=_COMMUNITY,
            max_segment_seconds=None,
            aliases=("MDX23C-8KFFT-InstVoc_HQ.ckpt",),
        ),
        ModelSpec(
            name="uvr_mdx_inst_hq_3",
            sources=("instrumental", "vocals"),
            description="UVR MDX-Net Inst HQ 3 (ONNX): instrumental first",
            family="mdx_net",
            files=_uvr("UVR-MDX-NET-Inst_HQ_3.onnx"),
            scores=_measured(vocals=8.81, instrumental=15.42),
            licence=_COMMUNITY,
            max_segment_seconds=None,
            aliases=("UVR-MDX-NET-Inst_HQ_3.onnx",),
        ),
        ModelSpec(
            name="uvr_mdx_inst_hq_4",
            sources=("instrumental", "vocals"),
            description="UVR MDX-Net Inst HQ 4 (ONNX)",
            family="mdx_net",
            files=_uvr("UVR-MDX-NET-Inst_HQ_4.onnx"),
            scores=_measured(vocals=8.83, instrumental=15.51),
            licence=_COMMUNITY,
            max_segment_seconds=None,
            aliases=("UVR-MDX-NET-Inst_HQ_4.onnx",),
        ),
        ModelSpec(
            name="uvr_mdx_voc_ft",
            sources=VOCALS_INSTRUMENTAL,
            description="UVR MDX-Net Voc FT (ONNX): vocals",
            family="mdx_net",
            files=_uvr("UVR-MDX-NET-Voc_FT.onnx"),
            scores=_measured(vocals=10.15, instrumental=15.43),
            licence=_COMMUNITY,
            max_segment_seconds=None,
            aliases=("UVR-MDX-NET-Voc_FT.onnx",),
        ),
        ModelSpec(
            name="uvr_mdx_kim_vocal_2",
            sources=VOCALS_INSTRUMENTAL,
            description="UVR MDX-Net Kim Vocal 2 (ONNX)",
            family="mdx_net",
            files=_uvr("Kim_Vocal_2.onnx"),
            scores=_measured(vocals=10.18, instrumental=15.36),
            licence=_COMMUNITY,
            max_segment_seconds=None,
            aliases=("Kim_Vocal_2.onnx",),
        ),
        ModelSpec(
            name="uvr_mdx_karaoke_2",
            sources=("instrumental", "vocals"),
            description="UVR MDX-Net Karaoke 2 (ONNX): lead vocals out, backing vocals kept",
            family="mdx_net",
            files=_uvr("UVR_MDXNET_KARA_2.onnx"),
            scores=_measured(vocals=5.43, instrumental=14.77),
            licence=_COMMUNITY,
            max_segment_seconds=None,
            aliases=("UVR_MDXNET_KARA_2.onnx",),
        ),
        ModelSpec(
            name="umxhq",
            sources=UNMIX_SOURCES,
            description="Open-Unmix trained on MUSDB18-HQ, 4 stems (LSTM + Wiener filter)",
            family="openunmix",
            files=_zenodo(3370489, UNMIX_SOURCES, ("b62c91ce", "9619578f", "8d85a5bd", "b52fbbf7")),
            licence="as stated on Zenodo record 3370489",
            max_segment_seconds=None,
        ),
        ModelSpec(
            name="umx",
            sources=UNMIX_SOURCES,
            description="Open-Unmix trained on MUSDB18 (compressed audio), 4 stems",
            family="openunmix",
            files=_zenodo(3370486, UNMIX_SOURCES, ("c8df74a5", "5a48008b", "646024d3", "f8e132cc")),
            licence="as stated on Zenodo record 3370486",
            max_segment_seconds=None,
        ),
        ModelSpec(
            name="umxl",
            sources=UNMIX_SOURCES,
            description="Open-Unmix large, trained on extra data (openunmix's default), 4 stems",
            family="openunmix",
            files=_zenodo(5069601, UNMIX_SOURCES, ("bccbd9aa", "69e0ebd4", "2ca1ce51", "c8c5b3e6")),
            scores=tuple(
                Score(stem, sdr, "open-unmix README (MUSDB18 test set)")
                for stem, sdr in zip(UNMIX_SOURCES, (7.21, 7.15, 6.02, 4.89), strict=True)
            ),
            licence="CC BY-NC-SA 4.0 (non-commercial use only)",
            licence_notice=True,
            max_segment_seconds=None,
        ),
        ModelSpec(
            name="umxse",
            sources=("speech", "noise"),
            description="Open-Unmix speech enhancement (16 kHz): speech apart from noise",
            family="openunmix",
            files=_zenodo(3786908, ("speech", "noise"), ("f5e0d9f9", "04a6fc2d"), joint="_"),
            licence="as stated on Zenodo record 3786908",
            max_segment_seconds=None,
            samplerate=16000,
        ),
    )
}

#: Named ensembles: the combinations UVR users reach for, of models above.
ENSEMBLES: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="vocals-best",
            sources=VOCALS_INSTRUMENTAL,
            description="ensemble: BS-RoFormer 12.97 + MDX23C InstVoc HQ, averaged (vocals)",
            family="ensemble",
            members=("bs_roformer_viperx_1297", "mdx23c_instvoc_hq"),
            algorithm="avg_wave",
            licence="each model's own",
        ),
        ModelSpec(
            name="instrumental-best",
            sources=VOCALS_INSTRUMENTAL,
            description="ensemble: BS-RoFormer 12.97 + MDX-Net Inst HQ 4, max spectrum "
            "(fullest instrumentals)",
            family="ensemble",
            members=("bs_roformer_viperx_1297", "uvr_mdx_inst_hq_4"),
            algorithm="max_spec",
            licence="each model's own",
        ),
        ModelSpec(
            name="karaoke-best",
            sources=VOCALS_INSTRUMENTAL,
            description="ensemble: Mel-Band RoFormer karaoke + MDX-Net karaoke 2, averaged "
            "(lead vocals out, backing vocals kept)",
            family="ensemble",
            members=("mel_band_roformer_karaoke", "uvr_mdx_karaoke_2"),
            algorithm="avg_wave",
            licence="each model's own",
        ),
    )
}
MODELS.update(ENSEMBLES)


def _spleeter_specs() -> dict[str, ModelSpec]:
    """Spleeter's six configurations (spleeter 2.4.2's ``resources/*.json``); a -16kHz
    one reads the same release folder with a higher frequency cut-off (1536 bins, about
    16.5 kHz, instead of 1024, 11 kHz)."""
    models = (
        ("2stems", ("vocals", "accompaniment"), "vocals and accompaniment"),
        ("4stems", ("vocals", "drums", "bass", "other"), "vocals, drums, bass, other"),
        ("5stems", ("vocals", "piano", "drums", "bass", "other"), "4stems and piano"),
    )
    # Measured with spleeter's multichannel Wiener filter (--mwf), which StemBridge does
    # not apply (spleeter's default is off too).
    where = "Spleeter paper (MUSDB18 test set), 4stems with spleeter's --mwf Wiener filter"
    scores = tuple(
        Score(stem, sdr, where)
        for stem, sdr in (("vocals", 6.86), ("drums", 6.71), ("bass", 5.51), ("other", 4.55))
    )
    specs: dict[str, ModelSpec] = {}
    for folder, sources, what in models:
        archive = Archive(f"{SPLEETER_URL}{folder}.tar.gz", f"{SPLEETER_URL}checksum.json", folder)
        files = tuple(ModelFile(f"{folder}/{name}", (archive.url,)) for name in SPLEETER_FILES)
        for suffix, cutoff in (("", "11 kHz"), ("-16kHz", "16.5 kHz")):
            name = f"spleeter:{folder}{suffix}"
            specs[name] = ModelSpec(
                name=name,
                sources=sources,
                description=f"Spleeter (Deezer) U-Net, {what}; masks up to {cutoff}",
                family="spleeter",
                files=files,
                scores=scores if folder == "4stems" and not suffix else (),
                max_segment_seconds=None,
                archive=archive,
            )
    return specs


MODELS.update(_spleeter_specs())

DEFAULT_MODEL = "htdemucs"
_BY_ALIAS = {alias: spec for spec in MODELS.values() for alias in spec.aliases}


def _signature_specs() -> dict[str, ModelSpec]:
    """Each network of the demucs bags as a model of its own (``--model 955717e8``), as
    ``demucs -n <signature>`` loads it: its own segment, no bag file, from the legacy site."""
    specs: dict[str, ModelSpec] = {}
    for bag in MODELS.values():
        if bag.family != "demucs":
            continue
        for checkpoint, signature in zip(bag.checkpoints, bag.signatures, strict=True):
            if signature in specs:
                continue
            specs[signature] = ModelSpec(
                name=signature,
                sources=bag.sources,
                description=f"demucs network {signature} alone (one of {bag.name}'s)",
                checkpoints=(checkpoint,),
                checkpoint_folder=bag.checkpoint_folder,
                max_segment_seconds=bag.max_segment_seconds,
            )
    return specs


#: Every network of the demucs bags, by signature (what ``demucs/remote/files.txt`` lists).
DEMUCS_SIGNATURES = _signature_specs()


def get_spec(name: str) -> ModelSpec:
    """The spec of a model given by name, by a file name users know, or by a path.

    Raises:
        SettingsError: The name is neither a known model nor a model file's path.
        ModelCorrupt: A model file's config cannot be read or is not one we know.
    """
    if name in MODELS:
        return MODELS[name]
    if name in _BY_ALIAS:
        return _BY_ALIAS[name]
    if name in DEMUCS_SIGNATURES:
        return DEMUCS_SIGNATURES[name]
    imported = _imported(name)
    if imported is not None:
        return imported
    if Path(name).suffix.lower() in MODEL_SUFFIXES and ("/" in name or "\\" in name):
        return spec_for_file(Path(name))
    raise SettingsError(
        f"unknown model {name!r}; choose one of {', '.join(MODELS)} (for example --model "
        f"{DEFAULT_MODEL}; stembridge models list shows them), or give the path of a model "
        "file: an MSST .ckpt with its .yaml beside it, or a UVR MDX-Net .onnx",
        key="model",
        value=name,
    )


def _imported(name: str) -> ModelSpec | None:
    """A model ``stembridge models import`` registered under its file name, or ``None``.

    Only a file name (not a path) is looked up, so a typo of a catalog name is still
    answered with the catalog's names, however the registry is.
    """
    if Path(name).suffix.lower() not in MODEL_SUFFIXES or "/" in name or "\\" in name:
        return None
    from bridge.models.registry import find_imported

    found = find_imported(name)
    if found is None:
        return None
    configs = [Path(path) for path in found.files if Path(path).suffix.lower() == ".yaml"]
    rate, channels = 44100, 2  # UVR's MDX-Net models and demucs
    if configs:
        from bridge.models.families.msst_config import read_config

        audio = read_config(configs[0]).audio
        rate, channels = audio.sample_rate, audio.num_channels
    return ModelSpec(
        name=name,
        sources=found.stems,
        description=f"{found.family} model {name} (imported)",
        family=found.family,
        files=tuple(ModelFile(str(path), ()) for path in found.files),
        licence="as its publisher states",
        max_segment_seconds=None,
        local=True,
        samplerate=rate,
        channels=channels,
    )


def spec_for_file(path: Path, *, config_file: Path | None = None) -> ModelSpec:
    """The spec of a model file the user gives: an MSST ``.ckpt`` (its ``.yaml`` beside it,
    as ``<name>.yaml`` or ``<name>_config.yaml``, or ``config_file``), that ``.yaml``, or an
    MDX-Net ``.onnx``.

    Raises:
        SettingsError: The file does not exist, or an MSST checkpoint has no config.
        ModelCorrupt: Its config cannot be read or is not one we know.
    """
    path = path.expanduser().absolute()
    if config_file is not None:
        weights, config = path, _given_config(path, config_file)
    elif path.suffix.lower() == ".onnx":
        weights, config = path, None
    else:
        weights, config = _msst_pair(path)
    if not weights.is_file():
        raise SettingsError(
            f"{weights}: no such model file; check the path", key="model", value=str(path)
        )
    if config is None:
        from bridge.models.families.uvr_params import params_for

        params = params_for(weights)
        return ModelSpec(
            name=str(weights),
            sources=(stem_word(params.primary_stem), stem_word(params.secondary_stem)),
            description=f"UVR MDX-Net model {weights.name}",
            family="mdx_net",
            files=(ModelFile(str(weights), ()),),
            licence="as its publisher states",
            max_segment_seconds=None,
            local=True,
        )
    from bridge.models.families.msst_config import read_config

    read = read_config(config)
    return ModelSpec(
        name=str(weights),
        sources=msst_sources(read.training.instruments, read.training.target_instrument),
        description=f"{read.architecture} model {weights.name}",
        family=read.architecture,
        files=(ModelFile(str(weights), ()), ModelFile(str(config), ())),
        licence="as its publisher states",
        max_segment_seconds=None,
        local=True,
        samplerate=read.audio.sample_rate,
        channels=read.audio.num_channels,
    )


def msst_sources(instruments: tuple[str, ...], target: str | None) -> tuple[str, ...]:
    """The stems of an MSST model: its instruments, or its target and the rest of the mix
    (named as python-audio-separator names them: the other instrument listed, and
    ``instrumental`` beside ``vocals``)."""
    if not target:
        return tuple(stem_word(name) for name in instruments)
    others = [name for name in instruments[:2] if name != target]
    rest = stem_word(others[0]) if others else f"no_{stem_word(target)}"
    if stem_word(target) == "vocals" and rest == "other":
        rest = "instrumental"
    return (stem_word(target), rest)


def _given_config(checkpoint: Path, config: Path) -> Path:
    """``--model-config``: the ``.yaml`` of a ``.ckpt`` kept elsewhere."""
    if checkpoint.suffix.lower() != ".ckpt":
        raise SettingsError(
            f"--model-config {config}: a config goes with an MSST .ckpt given by its path, "
            f"not {checkpoint.name}; leave --model-config out",
            key="model_config",
            value=str(config),
        )
    config = config.expanduser().absolute()
    if not config.is_file():
        raise SettingsError(
            f"--model-config {config}: no such file; give the .yaml published with "
            f"{checkpoint.name}",
            key="model_config",
            value=str(config),
        )
    return config


def _msst_pair(path: Path) -> tuple[Path, Path | None]:
    """An MSST model's checkpoint and config, from either of them."""
    if path.suffix.lower() == ".yaml":
        return path.with_suffix(".ckpt"), path
    for config in (path.with_suffix(".yaml"), path.with_name(f"{path.stem}_config.yaml")):
        if config.is_file():
            return path, config
    if not path.is_file():
        return path, path.with_suffix(".yaml")
    raise SettingsError(
        f"{path}: an MSST checkpoint needs its config beside it, as {path.stem}.yaml or "
        f"{path.stem}_config.yaml (the .yaml published with the checkpoint), or given "
        "with --model-config",
        key="model",
        value=str(path),
    )


def stem_word(name: str) -> str:
    """A stem name as StemBridge writes it: lower case, ``_`` for anything but letters,
    digits, ``-`` and ``_``, and a ``_`` after a Windows device name (``aux_``)."""
    word = re.sub(r"[^a-z0-9_-]+", "_", name.strip().lower()).strip("_")
    if not word:
        raise ModelCorrupt(f"stem name {name!r} has no letters or digits; fix the model's config")
    # A stem's file is <word>.<ext>: Windows takes aux.wav for a device (as folder names).
    return f"{word}_" if windows_reserved(word) else word
