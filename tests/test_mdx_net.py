"""UVR MDX-Net models against python-audio-separator's own MDX separator.

Each model is a small randomly initialised network with an MDX-Net's signature
(``[batch, 4, dim_f, dim_t]`` in and out), exported to ``.onnx`` with torch's
TorchScript-based exporter (which needs the ``onnx`` package) and given its parameters
in a sidecar, as UVR keeps them. Our streamed separation (:func:`separate_chunks` with
the runner and its plan) is held to the reference's ``MDXSeparator.demix`` run on the
whole mix, on the same file and parameters, and its other stem to what the reference's
``separate`` makes of that (the mix minus ``compensate`` times the primary).

The reference module is imported from the installed ``audio_separator`` without its
package ``__init__`` (which imports every architecture), and with a bare
``onnx2torch``: that package converts a model for segments other than the model's own
(it imports torchvision, which CI does not install and which must match the torch
build) and is not reached when the segment is the model's.
``tests/references/separators.txt`` installs what the reference and the exporter import.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tqdm

from bridge.errors import (
    DeviceUnavailable,
    MissingExtra,
    ModelCorrupt,
    ModelError,
    ModelNotFound,
    SettingsError,
)
from bridge.models.chunks import separate_chunks
from bridge.models.families import mdx_net
from bridge.models.families.mdx_net import HOP, load_mdx_net, mdx_plan
from bridge.models.families.uvr_params import (
    HASH_BYTES,
    UVR_MDX_NET,
    MdxParams,
    params_for,
    sidecar_path,
    uvr_hash,
)
from bridge.models.groups import channel_groups

from separator_reference import common_config, import_reference, missing

TOLERANCE = 1e-4

# A small MDX-Net: n_fft 2048 (trim 1024), 8 frames a chunk (7168 samples, 5120 kept).
SMALL = {
    "compensate": 1.035,
    "mdx_dim_f_set": 64,
    "mdx_dim_t_set": 3,
    "mdx_n_fft_scale_set": 2048,
    "primary_stem": "Vocals",
}
SMALL_CHUNK = HOP * (2**3 - 1)
# UVR-MDX-NET-Inst_HQ_3's parameters (the reference's and UVR's table).
INST_HQ_3 = "55657dd70583b0fedfba5f67df11d711"


class SpectrumNet(torch.nn.Module):
    """A mask over the spectrum from two 3x3 convolutions: mixes bins and frames."""

    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.second = torch.nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, spectrum: torch.Tensor) -> torch.Tensor:
        mask = torch.sigmoid(self.second(torch.tanh(self.first(spectrum))))
        return spectrum * mask


class TwoInputs(torch.nn.Module):
    def forward(self, spectrum: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return spectrum + other


class TwoOutputs(torch.nn.Module):
    def forward(self, spectrum: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return spectrum * 2, spectrum * 3


class Flat(torch.nn.Module):
    def forward(self, spectrum: torch.Tensor) -> torch.Tensor:
        return spectrum.reshape(spectrum.shape[0], -1)


def export(
    path: Path,
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    *,
    dynamic_batch: bool = True,
    outputs: int = 1,
) -> Path:
    """``module`` as an ``.onnx`` file, its batch axis free or fixed by ``inputs``."""
    try:
        importlib.import_module("onnx")
    except ImportError as exc:
        missing(exc, "the onnx package, which torch's TorchScript-based exporter needs")
    input_names = ["input", *(f"input{k}" for k in range(1, len(inputs)))]
    output_names = ["output", *(f"output{k}" for k in range(1, outputs))]
    axes = (
        {name: {0: "batch_size"} for name in [*input_names, *output_names]}
        if dynamic_batch
        else None
    )
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated; it is the one that needs no network
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module.eval(),
            inputs,
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=axes,
        )
    return path


def write_model(
    folder: Path,
    name: str,
    entry: dict[str, Any] = SMALL,
    *,
    sidecar: bool = True,
    seed: int = 0,
    dynamic_batch: bool = True,
) -> Path:
    """A random network of ``entry``'s shape as ``name.onnx``, ``entry`` as its sidecar."""
    torch.manual_seed(seed)
    params = MdxParams.from_uvr(entry, source="test")
    spectrum = torch.randn(1, 4, params.dim_f, params.dim_t)
    path = export(folder / f"{name}.onnx", SpectrumNet(), (spectrum,), dynamic_batch=dynamic_batch)
    if sidecar:
        sidecar_path(path).write_text(json.dumps(entry), encoding="utf-8")
    return path


def _reference_class() -> Any:
    """python-audio-separator's ``MDXSeparator`` (onnx2torch, which pulls torchvision, only
    its path for a segment other than the model's would use)."""
    return import_reference(
        "separator.architectures.mdx_separator", stand_ins=("onnx2torch",)
    ).MDXSeparator


@pytest.fixture(scope="module")
def reference() -> Any:
    return _reference_class()


@pytest.fixture(autouse=True)
def no_progress_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference's tqdm bars start no monitor thread (it would outlive the test)."""
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)


def reference_stems(
    reference: Any, path: Path, entry: dict[str, Any], mix: np.ndarray, *, overlap: float
) -> np.ndarray:
    """The reference's primary (``demix``) and other stem (as ``separate`` makes it)."""
    arch = {
        "segment_size": 2 ** entry["mdx_dim_t_set"],
        "overlap": overlap,
        "batch_size": 1,
        "hop_length": HOP,
        "enable_denoise": False,
    }
    separator = reference(common_config(path, dict(entry)), arch)
    with warnings.catch_warnings():
        # It builds each chunk's tensor from a list of arrays, and divides 0 by 0 in the
        # padding it cuts off
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        primary = separator.demix(mix.astype(np.float32))
    secondary = (-primary.T * entry["compensate"] + mix.T).T
    return np.stack([primary, secondary])


def ours(
    path: Path,
    mix: np.ndarray,
    *,
    overlap: float,
    batch_size: int = 1,
    block: int = 3001,
    params: MdxParams | None = None,
) -> np.ndarray:
    """Both stems through the streaming engine, the mix fed in ``block``-frame pieces."""
    runner = load_mdx_net(path, params=params)
    plan = runner.plan(mix.shape[-1], overlap=overlap)
    blocks = (mix[:, k : k + block] for k in range(0, mix.shape[-1], block))
    pieces = separate_chunks(
        blocks,
        plan=plan,
        groups=channel_groups(mix.shape[0], mdx_net.WIDTH),
        sources=mdx_net.SOURCES,
        wanted_sources=[0, 1],
        run_batch=runner,
        width=mdx_net.WIDTH,
        batch_size=batch_size,
    )
    return np.concatenate(list(pieces), axis=-1)


def audio(frames: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((channels, frames))).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mdx")
    return {
        "dynamic": write_model(folder, "dynamic", seed=1),
        "fixed": write_model(folder, "fixed", seed=2, dynamic_batch=False),
    }


@pytest.mark.parametrize(
    ("frames", "overlap"),
    [
        (3000, 0.25),  # shorter than a chunk
        (SMALL_CHUNK, 0.25),  # exactly a chunk
        (5120, 0.25),  # exactly the part of a chunk that is kept
        (23_456, 0.25),  # an awkward length: several chunks, the last ones cut short
        (23_456, 0.5),
        (23_456, 0.9),
        (23_456, 0.001),
        (23_456, 0.0),  # no window
        (60_001, 0.75),
    ],
)
@pytest.mark.parametrize(("model", "batch_size"), [("dynamic", 1), ("dynamic", 3), ("fixed", 2)])
def test_streamed_separation_matches_the_reference_demix(
    reference: Any,
    models: dict[str, Path],
    model: str,
    batch_size: int,
    frames: int,
    overlap: float,
) -> None:
    # Given a small MDX-Net with its parameters beside it, and a mix
    mix = audio(frames, seed=frames)
    # When both separate it
    theirs = reference_stems(reference, models[model], SMALL, mix, overlap=overlap)
    mine = ours(models[model], mix, overlap=overlap, batch_size=batch_size)
    # Then the primary and the other stem agree to within fp32 rounding
    assert mine.shape == theirs.shape == (2, 2, frames)
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=TOLERANCE)


def test_the_shape_of_uvr_mdx_net_inst_hq_3(reference: Any, tmp_path: Path) -> None:
    # Given a network of UVR-MDX-NET-Inst_HQ_3's shape (n_fft 6144, 3072 bins, 256 frames)
    params = UVR_MDX_NET[INST_HQ_3]
    entry = {
        "compensate": params.compensate,
        "mdx_dim_f_set": params.dim_f,
        "mdx_dim_t_set": 8,
        "mdx_n_fft_scale_set": params.n_fft,
        "primary_stem": params.primary_stem,
    }
    path = write_model(tmp_path, "hq3", entry, sidecar=False, seed=3)
    mix = audio(300_000, seed=4)
    # When both separate a mix of two of its chunks (the parameters given, not a sidecar)
    theirs = reference_stems(reference, path, entry, mix, overlap=0.25)
    mine = ours(path, mix, overlap=0.25, params=params, block=65_536)
    # Then they agree
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=TOLERANCE)


def test_a_mono_mix_is_separated_as_the_reference_separates_it_doubled(
    reference: Any, models: dict[str, Path]
) -> None:
    # Given a mono mix (the reference's prepare_mix doubles it)
    mono = audio(12_345, channels=1, seed=5)
    # When both separate it
    theirs = reference_stems(
        reference, models["dynamic"], SMALL, np.repeat(mono, 2, 0), overlap=0.25
    )
    mine = ours(models["dynamic"], mono, overlap=0.25)
    # Then ours is the reference's two channels averaged
    np.testing.assert_allclose(mine[:, 0], theirs.mean(axis=1), rtol=0, atol=TOLERANCE)


def test_the_other_stem_is_the_mix_minus_compensate_times_the_primary(
    models: dict[str, Path],
) -> None:
    # Given a separation
    mix = audio(20_000, seed=6)
    stems = ours(models["dynamic"], mix, overlap=0.25)
    # Then the second stem plus compensate times the first is the mix
    rebuilt = stems[1] + np.float32(SMALL["compensate"]) * stems[0]
    np.testing.assert_allclose(rebuilt, mix, rtol=0, atol=1e-6)
    assert np.abs(stems[0]).max() > 0.01


def test_the_runner_names_its_stems_and_chunk(models: dict[str, Path]) -> None:
    runner = load_mdx_net(models["fixed"])
    assert runner.stems == ("Vocals", "Instrumental")
    assert (runner.segment, runner.chunk) == (8, SMALL_CHUNK)
    assert runner.providers[0] == "CPUExecutionProvider"


# -- the schedule ----------------------------------------------------------------------


def test_the_plan_leaves_out_only_chunks_that_start_past_the_mix() -> None:
    # Given the reference's chunk starts over the padded mix
    length, n_fft, chunk, overlap = 23_456, 2048, SMALL_CHUNK, 0.25
    trim, gen = n_fft // 2, chunk - n_fft
    padded = trim + length + gen + trim - length % gen
    step = int((1 - overlap) * chunk)
    theirs = [offset - trim for offset in range(0, padded, step)]
    # When planned
    plan = mdx_plan(length, n_fft=n_fft, chunk=chunk, overlap=overlap)
    # Then ours are theirs up to the first that starts past the mix
    assert list(plan.starts) == [start for start in theirs if start < length]
    assert len(plan.starts) < len(theirs)
    # And the chunks cut short by the padded end have Hann windows of their own length
    for index, start in enumerate(plan.starts):
        size = min(chunk, padded - (start + trim))
        np.testing.assert_allclose(plan.window_of(index)[:size], np.hanning(size), atol=1e-7)
        assert plan.window_of(index).shape == ((chunk,) if size == chunk else (size,))


@pytest.mark.parametrize("overlap", [1.0, 1.5, -0.1, 1e-6])
def test_an_overlap_that_leaves_frames_uncovered_is_refused(overlap: float) -> None:
    with pytest.raises(SettingsError, match=f"overlap {overlap} is not allowed"):
        mdx_plan(10_000, n_fft=2048, chunk=SMALL_CHUNK, overlap=overlap)


def test_a_segment_too_short_for_the_fft_is_refused(tmp_path: Path) -> None:
    # Given a model of 2 frames a chunk (1024 samples) with an n_fft of 2048
    entry = {**SMALL, "mdx_dim_t_set": 1}
    path = write_model(tmp_path, "short", entry)
    # Then loading it says which segment would do
    with pytest.raises(SettingsError, match=r"segment of 2 frames .* use more than 3 frames"):
        load_mdx_net(path)


def test_a_segment_other_than_the_models_is_refused(models: dict[str, Path]) -> None:
    with pytest.raises(SettingsError, match=r"segment 16 .* takes 8 frames; use --segment 8"):
        load_mdx_net(models["dynamic"], segment=16)


# -- parameters ------------------------------------------------------------------------


def test_uvr_hash_is_the_md5_of_the_file_or_of_its_last_10240000_bytes(tmp_path: Path) -> None:
    small = tmp_path / "small.onnx"
    small.write_bytes(b"x" * 1000)
    assert uvr_hash(small) == hashlib.md5(b"x" * 1000).hexdigest()
    big = tmp_path / "big.onnx"
    head, tail = b"head" * 5, bytes(range(256)) * (HASH_BYTES // 256)
    big.write_bytes(head + tail)
    assert HASH_BYTES == 10_240_000 and len(tail) == HASH_BYTES
    assert uvr_hash(big) == hashlib.md5(tail).hexdigest()


def test_uvr_table_holds_the_most_used_models() -> None:
    # compensate, dim_f, dim_t (frames), n_fft, primary stem: UVR's model_data.json
    expected = {
        "UVR-MDX-NET-Inst_HQ_3": (1.022, 3072, 256, 6144, "Instrumental"),
        "UVR-MDX-NET-Inst_HQ_4": (1.019, 2560, 256, 5120, "Instrumental"),
        "UVR-MDX-NET-Inst_HQ_5": (1.01, 2560, 256, 5120, "Instrumental"),
        "UVR_MDXNET_KARA_2": (1.065, 2048, 256, 5120, "Instrumental"),
        "Kim_Vocal_2": (1.009, 3072, 256, 7680, "Vocals"),
        "UVR-MDX-NET-Voc_FT": (1.021, 3072, 256, 7680, "Vocals"),
        "Reverb_HQ_By_FoxJoy": (1.035, 3072, 512, 6144, "Reverb"),
    }
    by_name = {params.name: params for params in UVR_MDX_NET.values() if params.name}
    for name, values in expected.items():
        params = by_name[name]
        assert (params.compensate, params.dim_f, params.dim_t, params.n_fft) == values[:4], name
        assert params.primary_stem == values[4], name
    assert UVR_MDX_NET[INST_HQ_3].name == "UVR-MDX-NET-Inst_HQ_3"


@pytest.mark.parametrize(
    ("primary", "secondary"),
    [
        ("Vocals", "Instrumental"),
        ("Instrumental", "Vocals"),
        ("No Crowd", "Crowd"),
        ("Reverb", "No Reverb"),
    ],
)
def test_the_other_stem_is_named_as_uvr_names_it(primary: str, secondary: str) -> None:
    assert MdxParams(1.0, 64, 8, 2048, primary).secondary_stem == secondary


def test_a_model_uvr_does_not_know_and_without_parameters_is_refused(tmp_path: Path) -> None:
    # Given a model without a sidecar, whose hash is in no table
    path = write_model(tmp_path, "Mystery", sidecar=False)
    key = hashlib.md5(path.read_bytes()).hexdigest()
    # Then loading it names the file, its hash, and the sidecar to write
    with pytest.raises(ModelError) as caught:
        load_mdx_net(path)
    message = str(caught.value)
    assert str(path) in message and key in message and "Mystery.json" in message
    assert '"mdx_dim_f_set"' in message
    assert not isinstance(caught.value, ModelCorrupt)


def test_given_parameters_win_over_the_sidecar(tmp_path: Path) -> None:
    path = write_model(tmp_path, "given")
    given = MdxParams(1.5, 64, 8, 2048, "Drums")
    assert params_for(path, given=given) is given
    assert params_for(path) == MdxParams(1.035, 64, 8, 2048, "Vocals")


@pytest.mark.parametrize(
    ("sidecar", "match"),
    [
        ("not json", "cannot be read as JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({**SMALL, "dim_f": 3}), "unknown key 'dim_f'"),
        (json.dumps({k: v for k, v in SMALL.items() if k != "compensate"}), "no 'compensate'"),
        (json.dumps({**SMALL, "compensate": "1.0"}), r"compensate = '1.0' is not allowed"),
        (json.dumps({**SMALL, "mdx_n_fft_scale_set": 2047}), "2047 is not allowed; use an even"),
        (json.dumps({**SMALL, "mdx_dim_f_set": 2000}), "mdx_dim_f_set = 2000 .* from 4 to 1025"),
        (json.dumps({**SMALL, "mdx_dim_t_set": True}), "mdx_dim_t_set = True is not allowed"),
        (json.dumps({**SMALL, "primary_stem": " "}), "primary_stem = ' ' is not allowed"),
    ],
)
def test_a_bad_sidecar_is_refused_naming_it_and_the_key(
    tmp_path: Path, sidecar: str, match: str
) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\0")
    (tmp_path / "model.json").write_text(sidecar, encoding="utf-8")
    with pytest.raises(ModelCorrupt, match=match) as caught:
        params_for(model)
    assert str(tmp_path / "model.json") in str(caught.value)


def test_a_sidecar_may_carry_uvr_s_karaoke_mark(tmp_path: Path) -> None:
    model = tmp_path / "kara.onnx"
    model.write_bytes(b"\0")
    sidecar_path(model).write_text(json.dumps({**SMALL, "is_karaoke": True}), encoding="utf-8")
    assert params_for(model).dim_f == 64


# -- files that are not MDX-Net models -------------------------------------------------


@pytest.mark.parametrize(
    ("module", "inputs", "outputs", "match"),
    [
        (TwoInputs(), 2, 1, r"has 2 input\(s\) and 1 output\(s\)"),
        (TwoOutputs(), 1, 2, r"has 1 input\(s\) and 2 output\(s\)"),
        (Flat(), 1, 1, r"its output 'output' is tensor\(float\) \['batch_size', 2048\]"),
    ],
)
def test_a_model_with_other_inputs_or_outputs_is_refused(
    tmp_path: Path, module: torch.nn.Module, inputs: int, outputs: int, match: str
) -> None:
    # Given a file whose signature is not an MDX-Net's, with an MDX-Net's parameters
    spectrum = torch.randn(1, 4, 64, 8)
    path = export(tmp_path / "odd.onnx", module, (spectrum,) * inputs, outputs=outputs)
    sidecar_path(path).write_text(json.dumps(SMALL), encoding="utf-8")
    # Then loading it names the file and what an MDX-Net model takes
    with pytest.raises(ModelCorrupt, match=match) as caught:
        load_mdx_net(path)
    assert str(path) in str(caught.value)
    assert "[batch, 4, 64, 8]" in str(caught.value)


def test_a_model_whose_bins_are_not_its_parameters_is_refused(tmp_path: Path) -> None:
    # Given a network of 32 bins with parameters that say 64
    path = export(tmp_path / "narrow.onnx", SpectrumNet(), (torch.randn(1, 4, 32, 8),))
    sidecar_path(path).write_text(json.dumps(SMALL), encoding="utf-8")
    # Then it is refused, naming both
    with pytest.raises(ModelCorrupt, match=r"\['batch_size', 4, 32, 8\]; .*dim_f 64"):
        load_mdx_net(path)


@pytest.mark.parametrize(
    "damage", [lambda data: data[: len(data) // 2], lambda data: b"not an onnx model" * 40]
)
def test_a_damaged_onnx_file_is_refused(
    tmp_path: Path, models: dict[str, Path], damage: Any
) -> None:
    # Given a model file cut short or overwritten, its parameters beside it
    path = tmp_path / "damaged.onnx"
    path.write_bytes(damage(models["dynamic"].read_bytes()))
    sidecar_path(path).write_text(json.dumps(SMALL), encoding="utf-8")
    # Then loading it says the file is damaged and to download it again
    with pytest.raises(ModelCorrupt, match=r"onnxruntime cannot load it .*download it again"):
        load_mdx_net(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="no such MDX-Net model file"):
        load_mdx_net(tmp_path / "absent.onnx")


def test_without_onnxruntime_the_extra_is_named(
    monkeypatch: pytest.MonkeyPatch, models: dict[str, Path]
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtra, match=r"'onnx' extra .* pip install 'stembridge\[onnx\]'"):
        load_mdx_net(models["dynamic"])


# -- devices ---------------------------------------------------------------------------


def test_devices_become_onnxruntime_providers() -> None:
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert mdx_net.execution_providers("cpu", cuda, "1.x") == ["CPUExecutionProvider"]
    assert mdx_net.execution_providers("cuda", cuda, "1.x") == [
        ("CUDAExecutionProvider", {"device_id": 0}),
        "CPUExecutionProvider",
    ]
    assert mdx_net.execution_providers("cuda:1", cuda, "1.x")[0] == (
        "CUDAExecutionProvider",
        {"device_id": 1},
    )
    coreml = ["CoreMLExecutionProvider", "CPUExecutionProvider"]
    assert mdx_net.execution_providers("mps", coreml, "1.x") == [
        "CoreMLExecutionProvider",
        "CPUExecutionProvider",
    ]


@pytest.mark.parametrize(
    ("device", "error"),
    [
        ("cuda:0", DeviceUnavailable),
        ("mps", DeviceUnavailable),
        ("cuda:x", SettingsError),
        ("tpu", SettingsError),
    ],
)
def test_a_device_onnxruntime_cannot_use_is_refused(device: str, error: type[Exception]) -> None:
    with pytest.raises(error, match=f"device {device!r}|device {device}:"):
        mdx_net.execution_providers(device, ["CPUExecutionProvider"], "1.x")
