"""Device choice (CUDA, then Apple's MPS, then the CPU) with injected availability, batch
sizes from the GPU's memory, fp32 on MPS, and the networks' STFTs on the CPU there.

The parity tests at the end run only on a Mac with an MPS device: CI has none, so their
skip is the one skip that CI does not turn into a failure (marked MPS ONLY below).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bridge.errors import DeviceUnavailable, SettingsError
from bridge.models.runner import (
    Accelerators,
    check_precision,
    default_batch_size,
    fft_device,
    resolve_device,
)
from bridge.settings import SeparationSettings

from separator_reference import import_reference

GIB = 1 << 30
NONE = Accelerators()
CUDA = Accelerators(cuda_count=2, cuda_memory_bytes=(24 * GIB, 80 * GIB))
MAC = Accelerators(mps=True, mps_built=True, mps_memory_bytes=36 * GIB)


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        (NONE, "cpu"),
        (MAC, "mps"),
        (CUDA, "cuda"),
        (Accelerators(cuda_count=1, mps=True, mps_built=True), "cuda"),  # CUDA first
    ],
)
def test_auto_takes_cuda_then_mps_then_the_cpu(found: Accelerators, expected: str) -> None:
    assert resolve_device("auto", accelerators=found) == torch.device(expected)


def test_named_devices_are_used_where_they_exist_and_refused_where_not() -> None:
    assert resolve_device("mps", accelerators=MAC) == torch.device("mps")
    assert resolve_device("cuda:1", accelerators=CUDA) == torch.device("cuda:1")
    assert resolve_device("cpu", accelerators=MAC) == torch.device("cpu")
    with pytest.raises(DeviceUnavailable, match=r"MPS is not available.*built without"):
        resolve_device("mps", accelerators=NONE)
    with pytest.raises(DeviceUnavailable, match="no Metal GPU"):
        resolve_device("mps", accelerators=Accelerators(mps_built=True))
    with pytest.raises(DeviceUnavailable, match="CUDA is not available"):
        resolve_device("cuda", accelerators=MAC)
    with pytest.raises(DeviceUnavailable, match="numbered 0 to 1"):
        resolve_device("cuda:2", accelerators=CUDA)


def test_the_settings_take_mps_and_refuse_other_names() -> None:
    assert SeparationSettings(device="mps").device == "mps"
    with pytest.raises(SettingsError, match="mps"):
        SeparationSettings(device="metal")


def test_batch_sizes_follow_the_gpus_memory() -> None:
    cpu, mps = torch.device("cpu"), torch.device("mps")
    assert default_batch_size(cpu, accelerators=MAC) == 1
    assert default_batch_size(mps, accelerators=MAC) == 9  # 36 GiB recommended working set
    assert default_batch_size(mps, accelerators=Accelerators(mps=True)) == 1  # unknown
    assert default_batch_size(mps, accelerators=Accelerators(mps_memory_bytes=200 * GIB)) == 16
    assert default_batch_size(torch.device("cuda:0"), accelerators=CUDA) == 6
    assert default_batch_size(torch.device("cuda:1"), accelerators=CUDA) == 16


def test_mps_runs_fp32_and_its_stfts_on_the_cpu() -> None:
    check_precision("fp32", torch.device("mps"))
    with pytest.raises(SettingsError, match="needs a CUDA device"):
        check_precision("fp16", torch.device("mps"))
    assert fft_device(torch.device("mps")) == torch.device("cpu")
    assert fft_device(torch.device("cuda:1")) == torch.device("cuda:1")
    assert fft_device(torch.device("cpu")) == torch.device("cpu")


def test_the_probe_answers_on_this_machine() -> None:
    found = Accelerators.probe()
    assert found.cuda_count == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")


# MPS ONLY: these run on Apple silicon; CI (Linux) has no MPS device, so they skip there
# without failing. Everything else in this file runs everywhere.
HAS_MPS = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
mps_only = pytest.mark.skipif(
    not HAS_MPS, reason="MPS ONLY: no Apple MPS device here (runs on Apple silicon Macs)"
)


@mps_only
@pytest.mark.parametrize("architecture", ["bs_roformer", "mel_band_roformer"])
def test_roformers_on_mps_match_the_reference_on_the_cpu(tmp_path: Path, architecture: str) -> None:
    from test_roformer import SMALL_BS, SMALL_MEL, VOCALS, _reference_modules, mix, reference_pair

    reference = _reference_modules()  # MSST's RoFormer modules, as test_roformer runs them

    model = SMALL_BS if architecture == "bs_roformer" else SMALL_MEL
    theirs, ours = reference_pair(reference, tmp_path, architecture, model=model, training=VOCALS)
    audio = mix(8192)
    with torch.inference_mode():
        expected = theirs(audio)
        got = ours.to("mps")(audio.to("mps")).cpu()
    if expected.ndim == 3:
        expected = expected[:, None]
    got = got[..., : expected.shape[-1]]
    assert (got - expected).abs().max().item() < 1e-3 * expected.abs().max().item()


@mps_only
def test_mdx23c_on_mps_matches_the_reference_on_the_cpu(tmp_path: Path) -> None:
    import yaml
    from test_mdx23c import audio, reference_network, run_reference, small_sections, write_model

    from bridge.models.families.mdx23c import load_mdx23c

    sections = small_sections()
    theirs = reference_network(
        import_reference("separator.uvr_lib_v5.tfc_tdf_v3").TFC_TDF_net, sections, seed=3
    )
    config, checkpoint = write_model(tmp_path, yaml.safe_dump(sections), theirs.state_dict())
    ours = load_mdx23c(config, checkpoint).to("mps")
    chunk = audio(2, sections["audio"]["chunk_size"])
    expected = run_reference(theirs, chunk)
    with torch.inference_mode():
        got = ours(chunk.to("mps")).cpu()
    assert (got - expected).abs().max().item() < 1e-3 * expected.abs().max().item()


def test_a_torch_too_old_for_safe_loading_is_named_with_the_floor(tmp_path: Path) -> None:
    import tomllib
    from types import SimpleNamespace

    from bridge.errors import ModelError
    from bridge.models.loading import SAFE_LOADING_TORCH, require_safe_loading

    require_safe_loading(tmp_path / "x.th")  # this torch has it
    older = SimpleNamespace(load=torch.load)  # torch 2.4: no safe_globals
    with pytest.raises(ModelError, match=r"x\.th.*pip install 'torch>=2\.5'"):
        require_safe_loading(tmp_path / "x.th", older)
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert f"torch>={SAFE_LOADING_TORCH}" in project["project"]["dependencies"]
