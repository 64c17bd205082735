"""The parameters of UVR's MDX-Net models, looked up by the hash of the ``.onnx`` file.

An MDX-Net ``.onnx`` file holds the network only. The spectrum it was trained on (the
FFT size, how many bins and frames it takes) and what to do with its output (which stem
it is, the compensation factor of the other) are kept apart, in UVR's
``model_data.json``, keyed by a hash of the file. python-audio-separator reads the same
table. This module carries its MDX-Net entries, so a model of UVR's loads without it.

The key (:func:`uvr_hash`) is the MD5 of the whole file when it is shorter than
10,240,000 bytes (10,000 KiB), and otherwise the MD5 of its last 10,240,000 bytes: the
same file is the same key, but it is no checksum of the whole file.

A model that is not in the table gets its parameters from a sidecar beside it
(``MyModel.json`` for ``MyModel.onnx``), written as one entry of UVR's table::

    {"compensate": 1.035, "mdx_dim_f_set": 3072, "mdx_dim_t_set": 8,
     "mdx_n_fft_scale_set": 7680, "primary_stem": "Vocals"}

or from the caller (:func:`params_for` ``given=``), which wins over both.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from bridge.documents import parse_json
from bridge.errors import ModelCorrupt, ModelError, ModelNotFound

#: The bytes :func:`uvr_hash` reads: the whole file below this size, the last ones above.
HASH_BYTES = 10_000 * 1024

_KEYS = ("compensate", "mdx_dim_f_set", "mdx_dim_t_set", "mdx_n_fft_scale_set", "primary_stem")
# UVR marks its karaoke models so that it can name their outputs; it does not change
# the separation, so it is accepted and not used.
_IGNORED = ("is_karaoke",)
_SIDECAR_EXAMPLE = (
    '{"compensate": 1.035, "mdx_dim_f_set": 3072, "mdx_dim_t_set": 8, '
    '"mdx_n_fft_scale_set": 7680, "primary_stem": "Vocals"}'
)
# Frames per chunk are 2 ** mdx_dim_t_set; UVR's models use 7 to 9.
_MAX_DIM_T_EXPONENT = 12


@dataclass(frozen=True)
class MdxParams:
    """What an MDX-Net network needs around it.

    Attributes:
        compensate: The primary stem is scaled by this before it is taken from the
            mix to give the other stem.
        dim_f: Frequency bins the network takes (the lowest ones of the STFT).
        dim_t: STFT frames per chunk the network was made for (``2 ** mdx_dim_t_set``).
        n_fft: The STFT's size (and its Hann window's).
        primary_stem: What the network gives, as UVR names it (``Vocals``...).
        name: The model's file name in UVR's releases, when known (for messages).
    """

    compensate: float
    dim_f: int
    dim_t: int
    n_fft: int
    primary_stem: str
    name: str | None = None

    @property
    def secondary_stem(self) -> str:
        """The other stem (the mix minus the primary), named as UVR names it."""
        pairs = {"Vocals": "Instrumental", "Instrumental": "Vocals"}
        if self.primary_stem in pairs:
            return pairs[self.primary_stem]
        if self.primary_stem.startswith("No "):
            return self.primary_stem[3:]
        return f"No {self.primary_stem}"

    @classmethod
    def from_uvr(cls, entry: object, *, source: str, name: str | None = None) -> MdxParams:
        """One entry of UVR's ``model_data.json``, checked.

        Args:
            entry: The decoded JSON object.
            source: Where it came from, for the messages (a file name).
            name: The model's name, if known.

        Raises:
            ModelCorrupt: Not an object, a key missing or unknown, or a value out of range.
        """
        if not isinstance(entry, dict):
            raise ModelCorrupt(
                f"{source}: MDX-Net parameters must be a JSON object like {_SIDECAR_EXAMPLE}",
                path=source,
            )
        unknown = sorted(set(entry) - set(_KEYS) - set(_IGNORED))
        missing = [key for key in _KEYS if key not in entry]
        if unknown or missing:
            problem = f"unknown key {unknown[0]!r}" if unknown else f"no {missing[0]!r}"
            raise ModelCorrupt(
                f"{source}: {problem}; MDX-Net parameters have exactly the keys "
                f"{', '.join(_KEYS)} (and optionally is_karaoke), e.g. {_SIDECAR_EXAMPLE}",
                path=source,
            )
        compensate = entry["compensate"]
        if (
            isinstance(compensate, bool)
            or not isinstance(compensate, int | float)
            or not math.isfinite(compensate)
            or not 0 < compensate <= 10
        ):
            _bad(source, "compensate", compensate, "a number above 0 and at most 10 (UVR: ~1.0)")
        n_fft = _whole(source, entry, "mdx_n_fft_scale_set", 16, 65536)
        if n_fft % 2:
            _bad(source, "mdx_n_fft_scale_set", n_fft, "an even number (UVR: 4096 to 16384)")
        dim_f = _whole(source, entry, "mdx_dim_f_set", 4, n_fft // 2 + 1)
        exponent = _whole(source, entry, "mdx_dim_t_set", 1, _MAX_DIM_T_EXPONENT)
        primary = entry["primary_stem"]
        if not isinstance(primary, str) or not primary.strip() or not primary.isprintable():
            _bad(source, "primary_stem", primary, "a stem name such as Vocals or Instrumental")
        return cls(float(compensate), dim_f, 2**exponent, n_fft, primary.strip(), name)


def _whole(source: str, entry: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        _bad(source, key, value, f"a whole number from {low} to {high}")
    return int(value)


def _bad(source: str, key: str, value: object, allowed: str) -> NoReturn:
    raise ModelCorrupt(f"{source}: {key} = {value!r} is not allowed; use {allowed}", path=source)


def uvr_hash(path: Path) -> str:
    """The key of ``path`` in UVR's table: MD5 of the file, or of its last 10,240,000 bytes.

    Raises:
        ModelNotFound: The file cannot be read.
    """
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - HASH_BYTES))
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError as exc:
        raise ModelNotFound(
            f"{path}: cannot be read ({exc.strerror or exc}); check the path and its permissions",
            path=path,
        ) from exc
    return digest.hexdigest()


def sidecar_path(model: Path) -> Path:
    """Where the parameters of a model not in UVR's table are read from."""
    return model.with_suffix(".json")


def params_for(model: Path, *, given: MdxParams | None = None) -> MdxParams:
    """The parameters of ``model``: ``given``, else its sidecar, else UVR's table.

    Raises:
        ModelCorrupt: The sidecar cannot be read or has a bad key or value.
        ModelError: None of the three knows the model.
    """
    if given is not None:
        return given
    sidecar = sidecar_path(model)
    if sidecar.is_file():
        try:
            entry = parse_json(sidecar.read_bytes())
        except (OSError, ValueError) as exc:
            raise ModelCorrupt(
                f"{sidecar}: cannot be read as JSON ({exc}); write one object like "
                f"{_SIDECAR_EXAMPLE}",
                path=sidecar,
            ) from exc
        return MdxParams.from_uvr(entry, source=str(sidecar))
    key = uvr_hash(model)
    known = UVR_MDX_NET.get(key)
    if known is None:
        raise ModelError(
            f"{model}: no MDX-Net parameters are known for this file (UVR hash {key}); if it "
            f"is one of UVR's models it may be damaged: download it again; otherwise write "
            f"them to {sidecar.name} beside it as in UVR's model_data.json, e.g. "
            f"{_SIDECAR_EXAMPLE}",
            path=model,
        )
    return known


# UVR's MDX-Net entries, as in UVR's models/MDX_Net_Models/model_data/model_data.json:
# hash: (compensate, mdx_dim_f_set, mdx_dim_t_set, mdx_n_fft_scale_set, primary_stem).
_UVR_TABLE: Mapping[str, tuple[float, int, int, int, str]] = MappingProxyType(
    {
        "b6bccda408a436db8500083ef3491e8b": (1.02, 3072, 8, 7680, "Instrumental"),
        "73492b58195c3b52d34590d5474452f6": (1.043, 3072, 8, 7680, "Vocals"),
        "970b3f9492014d18fefeedfe4773cb42": (1.009, 3072, 8, 7680, "Vocals"),
        "6703e39f36f18aa7855ee1047765621d": (1.035, 2048, 9, 16384, "Bass"),
        "dc41ede5961d50f277eb846db17f5319": (1.035, 2048, 9, 4096, "Drums"),
        "26d308f91f3423a67dc69a6d12a8793d": (1.035, 2048, 9, 8192, "Other"),
        "5f6483271e1efb9bfb59e4a3e6d4d098": (1.035, 2048, 9, 6144, "Vocals"),
        "c3b29bdce8c4fa17ec609e16220330ab": (1.035, 2048, 8, 16384, "Bass"),
        "4910e7827f335048bdac11fa967772f9": (1.035, 2048, 7, 4096, "Drums"),
        "65ab5919372a128e4167f5e01a8fda85": (1.035, 2048, 8, 8192, "Other"),
        "6b31de20e84392859a3d09d43f089515": (1.035, 2048, 8, 6144, "Vocals"),
        "cd5b2989ad863f116c855db1dfe24e39": (1.035, 3072, 9, 6144, "Reverb"),
        "55657dd70583b0fedfba5f67df11d711": (1.022, 3072, 8, 6144, "Instrumental"),
        "0f2a6bc5b49d87d64728ee40e23bceb1": (1.019, 2560, 8, 5120, "Instrumental"),
        "cb790d0c913647ced70fc6b38f5bea1a": (1.01, 2560, 8, 5120, "Instrumental"),
        "77d07b2667ddf05b9e3175941b4454a0": (1.021, 3072, 8, 7680, "Vocals"),
        "b02be2d198d4968a121030cf8950b492": (1.02, 2560, 8, 5120, "No Crowd"),
        "a3cd63058945e777505c01d2507daf37": (1.03, 2048, 8, 6144, "Vocals"),
        "d94058f8c7f1fae4164868ae8ae66b20": (1.035, 2048, 8, 6144, "Vocals"),
        "d7bff498db9324db933d913388cba6be": (1.035, 2048, 8, 6144, "Vocals"),
        "0ddfc0eb5792638ad5dc27850236c246": (1.035, 2048, 8, 6144, "Vocals"),
        "2f5501189a2f6db6349916fabe8c90de": (1.035, 2048, 8, 6144, "Vocals"),
        "1d64a6d2c30f709b8c9b4ce1366d96ee": (1.065, 2048, 8, 5120, "Instrumental"),
        "1c56ec0224f1d559c42fd6fd2a67b154": (1.025, 2048, 8, 5120, "Instrumental"),
        "203f2a3955221b64df85a41af87cf8f0": (1.035, 3072, 8, 6144, "Instrumental"),
        "291c2049608edb52648b96e27eb80e95": (1.035, 3072, 8, 6144, "Instrumental"),
        "2cdd429caac38f0194b133884160f2c6": (1.045, 3072, 8, 7680, "Instrumental"),
        "398580b6d5d973af3120df54cee6759d": (1.75, 3072, 8, 7680, "Vocals"),
        "488b3e6f8bd3717d9d7c428476be2d75": (1.035, 3072, 8, 7680, "Instrumental"),
        "53c4baf4d12c3e6c3831bb8f5b532b93": (1.043, 3072, 8, 7680, "Vocals"),
        "5d343409ef0df48c7d78cce9f0106781": (1.075, 3072, 8, 7680, "Vocals"),
        "867595e9de46f6ab699008295df62798": (1.03, 3072, 8, 7680, "Vocals"),
        "8a88db95c7fb5dbe6a095ff2ffb428b1": (1.026, 2048, 8, 5120, "Instrumental"),
        "94ff780b977d3ca07c7a343dab2e25dd": (1.039, 3072, 8, 6144, "Instrumental"),
        "b06327a00d5e5fbc7d96e1781bbdb596": (1.035, 3072, 8, 6144, "Instrumental"),
        "b33d9b3950b6cbf5fe90a32608924700": (1.03, 3072, 8, 7680, "Vocals"),
        "b78da4afc6512f98e4756f5977f5c6b9": (1.021, 3072, 8, 7680, "Instrumental"),
        "cc63408db3d80b4d85b0287d1d7c9632": (1.033, 3072, 8, 6144, "Instrumental"),
        "ceed671467c1f64ebdfac8a2490d0d52": (1.035, 3072, 8, 7680, "Instrumental"),
        "d2a1376f310e4f7fa37fb9b5774eb701": (1.035, 3072, 8, 7680, "Instrumental"),
        "e5572e58abf111f80d8241d2e44e7fa4": (1.028, 3072, 8, 7680, "Instrumental"),
        "e7324c873b1f615c35c1967f912db92a": (1.03, 3072, 8, 7680, "Vocals"),
        "ead8d05dab12ec571d67549b3aab03fc": (1.035, 3072, 8, 6144, "Instrumental"),
        "f2df6d6863d8f435436d8b561594ff49": (1.035, 3072, 8, 7680, "Instrumental"),
    }
)

# The file names of UVR's releases whose hash is known. The two karaoke models (KARA,
# KARA_2) are the ones UVR marks is_karaoke. The names are only used in messages; the
# entries without one are models of UVR's whose file name no source found ties to a hash.
_UVR_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "b6bccda408a436db8500083ef3491e8b": "Kim_Inst",
        "73492b58195c3b52d34590d5474452f6": "Kim_Vocal_1",
        "970b3f9492014d18fefeedfe4773cb42": "Kim_Vocal_2",
        "6703e39f36f18aa7855ee1047765621d": "kuielab_a_bass",
        "dc41ede5961d50f277eb846db17f5319": "kuielab_a_drums",
        "26d308f91f3423a67dc69a6d12a8793d": "kuielab_a_other",
        "5f6483271e1efb9bfb59e4a3e6d4d098": "kuielab_a_vocals",
        "c3b29bdce8c4fa17ec609e16220330ab": "kuielab_b_bass",
        "4910e7827f335048bdac11fa967772f9": "kuielab_b_drums",
        "65ab5919372a128e4167f5e01a8fda85": "kuielab_b_other",
        "6b31de20e84392859a3d09d43f089515": "kuielab_b_vocals",
        "cd5b2989ad863f116c855db1dfe24e39": "Reverb_HQ_By_FoxJoy",
        "55657dd70583b0fedfba5f67df11d711": "UVR-MDX-NET-Inst_HQ_3",
        "0f2a6bc5b49d87d64728ee40e23bceb1": "UVR-MDX-NET-Inst_HQ_4",
        "cb790d0c913647ced70fc6b38f5bea1a": "UVR-MDX-NET-Inst_HQ_5",
        "77d07b2667ddf05b9e3175941b4454a0": "UVR-MDX-NET-Voc_FT",
        "b02be2d198d4968a121030cf8950b492": "UVR-MDX-NET_Crowd_HQ_1",
        "a3cd63058945e777505c01d2507daf37": "UVR_MDXNET_1_9703",
        "d94058f8c7f1fae4164868ae8ae66b20": "UVR_MDXNET_2_9682",
        "d7bff498db9324db933d913388cba6be": "UVR_MDXNET_3_9662",
        "0ddfc0eb5792638ad5dc27850236c246": "UVR_MDXNET_9482",
        "2f5501189a2f6db6349916fabe8c90de": "UVR_MDXNET_KARA",
        "1d64a6d2c30f709b8c9b4ce1366d96ee": "UVR_MDXNET_KARA_2",
    }
)

#: UVR's MDX-Net models by :func:`uvr_hash`.
UVR_MDX_NET: Mapping[str, MdxParams] = MappingProxyType(
    {
        key: MdxParams(compensate, dim_f, 2**exponent, n_fft, primary, _UVR_NAMES.get(key))
        for key, (compensate, dim_f, exponent, n_fft, primary) in _UVR_TABLE.items()
    }
)
