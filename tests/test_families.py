"""BS-RoFormer, Mel-Band RoFormer, MDX23C and MDX-Net end to end: a model written in its
official on-disk form, named by its path, its catalog name or the file name users know,
separated by ``stembridge separate`` into stems equal to what python-audio-separator's
own separators give on the same model and mix."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from bridge.cli import EXIT_MODEL, EXIT_OK, EXIT_USAGE, main
from bridge.errors import ModelCorrupt, ModelNotFound
from bridge.models.catalog import ModelFile, ModelSpec, get_spec
from bridge.models.families import roformer
from bridge.models.families.mdx23c import Mdx23c, Mdx23cConfig
from bridge.models.families.msst_config import read_config
from bridge.models.weights import download_url, locate_files

from separator_reference import common_config, import_reference
from signals import music, write_audio

RATE = 44100
TOLERANCE = 1e-4
# 24 bands of 2 bins, 12 of 4, 8 of 12, 8 of 24, 8 of 48, then 128 and 129: 1025 bins.
BANDS = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
HOP = 441
DIM_T = 201  # frames per chunk: chunks of 441 * 200 = 88200 samples (2 s)
CHUNK = HOP * (DIM_T - 1)


def msst_yaml(
    model: dict[str, Any],
    training: dict[str, Any],
    audio: dict[str, Any],
    *,
    dim_t: int = DIM_T,
) -> str:
    document = {
        "audio": {"chunk_size": CHUNK, "num_channels": 2, "sample_rate": RATE, **audio},
        "model": model,
        "training": training,
        "inference": {"batch_size": 1, "dim_t": dim_t, "num_overlap": 4},
    }
    return yaml.dump(document)  # tuples as !!python/tuple, as MSST writes them


def write_msst(folder: Path, name: str, text: str, build: Any, seed: int) -> Path:
    """A randomly initialised network saved as ``name.ckpt`` beside ``name.yaml``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    torch.manual_seed(seed)
    network = build(folder / f"{name}.yaml")
    torch.save(network.state_dict(), folder / f"{name}.ckpt")
    return folder / f"{name}.ckpt"


def bs_roformer(
    folder: Path,
    name: str = "tiny_bs_roformer",
    *,
    n_fft: int = 2048,
    hop: int = HOP,
    bands: tuple[int, ...] = BANDS,
    dim_t: int = DIM_T,
) -> Path:
    """A single-target (vocals) BS-RoFormer (``bands`` split the ``n_fft // 2 + 1`` bins)."""
    model = {
        "dim": 16,
        "depth": 1,
        "stereo": True,
        "num_stems": 1,
        "time_transformer_depth": 1,
        "freq_transformer_depth": 1,
        "freqs_per_bands": bands,
        "dim_head": 8,
        "heads": 2,
        "stft_n_fft": n_fft,
        "stft_hop_length": hop,
        "stft_win_length": n_fft,
        "mask_estimator_depth": 1,
    }
    text = msst_yaml(
        model,
        {"instruments": ["vocals", "other"], "target_instrument": "vocals"},
        {"hop_length": hop, "n_fft": n_fft, "dim_t": dim_t, "chunk_size": hop * (dim_t - 1)},
        dim_t=dim_t,
    )

    def build(config: Path) -> torch.nn.Module:
        return roformer.build(read_config(config, architecture="bs_roformer"))

    return write_msst(folder, name, text, build, seed=1)


def mel_band_roformer(folder: Path) -> Path:
    """A four-stem Mel-Band RoFormer (no single target)."""
    model = {
        "dim": 16,
        "depth": 1,
        "stereo": True,
        "num_stems": 4,
        "time_transformer_depth": 1,
        "freq_transformer_depth": 1,
        "num_bands": 16,
        "dim_head": 8,
        "heads": 2,
        "stft_n_fft": 2048,
        "stft_hop_length": HOP,
        "stft_win_length": 2048,
        "mask_estimator_depth": 1,
    }
    text = msst_yaml(
        model,
        {"instruments": ["vocals", "drums", "bass", "other"], "target_instrument": None},
        {"hop_length": HOP, "n_fft": 2048, "dim_t": DIM_T},
    )

    def build(config: Path) -> torch.nn.Module:
        return roformer.build(read_config(config, architecture="mel_band_roformer"))

    return write_msst(folder, "tiny_mel_band_roformer", text, build, seed=2)


def mdx23c(folder: Path) -> Path:
    """A two-stem MDX23C (vocals, instrumental)."""
    model = {
        "act": "gelu",
        "bottleneck_factor": 4,
        "growth": 8,
        "norm": "InstanceNorm",
        "num_blocks_per_scale": 1,
        "num_channels": 8,
        "num_scales": 2,
        "num_subbands": 2,
        "scale": [2, 2],
    }
    # Chunks of 1024 * 31 samples: 32 frames, a multiple of 2 ** num_scales
    text = msst_yaml(
        model,
        {"instruments": ["Vocals", "Instrumental"], "target_instrument": None},
        {"hop_length": 1024, "n_fft": 2048, "dim_f": 256, "dim_t": 32, "chunk_size": 31744},
        dim_t=32,
    )

    def build(config: Path) -> torch.nn.Module:
        return Mdx23c(Mdx23cConfig.from_msst(read_config(config, architecture="mdx23c")))

    return write_msst(folder, "tiny_mdx23c", text, build, seed=3)


@pytest.fixture(scope="module")
def mdxc() -> Any:
    return import_reference(
        "separator.architectures.mdxc_separator", stand_ins=("onnx2torch",)
    ).MDXCSeparator


@pytest.fixture(autouse=True)
def no_progress_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference's tqdm bars start no monitor thread (it would outlive the test)."""
    import tqdm

    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)


def reference_mdxc(separator: Any, checkpoint: Path, mix: np.ndarray) -> dict[str, np.ndarray]:
    """python-audio-separator's MDXC separator at its defaults (the yaml's num_overlap and
    dim_t)."""
    model_data = yaml.load(checkpoint.with_suffix(".yaml").read_text(), Loader=yaml.FullLoader)
    arch = {
        "segment_size": 256,
        "override_model_segment_size": False,
        "batch_size": 1,
        "overlap": None,
        "pitch_shift": 0,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = separator(common_config(checkpoint, model_data), arch)
        out = reference.demix(mix.astype(np.float32))
    if isinstance(out, dict):
        return {name.lower(): value for name, value in out.items()}
    return {model_data["training"]["target_instrument"].lower(): out}


def ours(
    tmp_path: Path, model: str, mix: np.ndarray, *flags: str, rate: int = RATE
) -> dict[str, np.ndarray]:
    """``stembridge separate`` to float WAV without exact-sum (the model's raw output)."""
    source = write_audio(tmp_path / "mix.wav", mix.T, rate, "FLOAT")
    out = tmp_path / "out"
    args = ["separate", str(source), "--model", model, "-o", str(out), "--overwrite"]
    code = main([*args, "--bit-depth", "32", "--no-exact-sum", "--no-pictures", *flags])
    assert code == EXIT_OK
    manifest = json.loads((out / "mix" / "manifest.json").read_text())
    return {
        stem["name"]: sf.read(str(out / "mix" / stem["path"]), dtype="float32", always_2d=True)[0].T
        for stem in manifest["stems"]
    }


def mix_of(frames: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((channels, frames))).astype(
        np.float32
    )


@pytest.mark.parametrize("frames", [CHUNK // 2, CHUNK, 3 * CHUNK + 1234])
def test_a_bs_roformer_file_separates_as_the_reference(
    mdxc: Any, tmp_path: Path, frames: int
) -> None:
    model = bs_roformer(tmp_path / "models")
    mix = mix_of(frames)
    stems = ours(tmp_path, str(model), mix)
    expected = reference_mdxc(mdxc, model, mix)
    assert sorted(stems) == ["instrumental", "vocals"]
    np.testing.assert_allclose(stems["vocals"], expected["vocals"], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(stems["instrumental"], expected["other"], atol=TOLERANCE, rtol=0)


def test_a_four_stem_mel_band_roformer_separates_as_the_reference(
    mdxc: Any, tmp_path: Path
) -> None:
    model = mel_band_roformer(tmp_path / "models")
    mix = mix_of(2 * CHUNK + 777, seed=1)
    stems = ours(tmp_path, str(model), mix, "--batch-size", "3")
    expected = reference_mdxc(mdxc, model, mix)
    assert sorted(stems) == ["bass", "drums", "other", "vocals"]
    for name, value in stems.items():
        np.testing.assert_allclose(value, expected[name], atol=TOLERANCE, rtol=0)


def test_an_mdx23c_file_separates_as_the_reference(mdxc: Any, tmp_path: Path) -> None:
    model = mdx23c(tmp_path / "models")
    mix = mix_of(100_000, seed=2)
    stems = ours(tmp_path, str(model), mix)
    expected = reference_mdxc(mdxc, model, mix)
    assert sorted(stems) == ["instrumental", "vocals"]
    for name, value in stems.items():
        np.testing.assert_allclose(value, expected[name], atol=TOLERANCE, rtol=0)


def test_an_mdx_net_file_separates_as_the_reference(tmp_path: Path) -> None:
    from test_mdx_net import SMALL, write_model

    (tmp_path / "models").mkdir()
    model = write_model(tmp_path / "models", "tiny_mdx_net")
    separator = import_reference(
        "separator.architectures.mdx_separator", stand_ins=("onnx2torch",)
    ).MDXSeparator
    mix = mix_of(60_001, seed=3)
    stems = ours(tmp_path, str(model), mix)
    arch = {
        "segment_size": 2 ** SMALL["mdx_dim_t_set"],
        "overlap": 0.25,
        "batch_size": 1,
        "hop_length": 1024,
        "enable_denoise": False,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        primary = separator(common_config(model, dict(SMALL)), arch).demix(mix)
    primary_name = SMALL["primary_stem"].lower()
    np.testing.assert_allclose(stems[primary_name], primary, atol=TOLERANCE, rtol=0)
    other = next(name for name in stems if name != primary_name)
    np.testing.assert_allclose(
        stems[other], mix - SMALL["compensate"] * primary, atol=TOLERANCE, rtol=0
    )


def test_catalog_names_and_the_file_names_users_know_find_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the viperx BS-RoFormer's files (a tiny stand-in under their real names) in the
    # model folder
    folder = tmp_path / "models"
    spec = get_spec("bs_roformer_viperx_1297")
    checkpoint = bs_roformer(folder, name=Path(spec.files[0].name).stem)
    assert checkpoint.name == spec.files[0].name
    checkpoint.with_suffix(".yaml").rename(folder / spec.files[1].name)
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(folder))
    mix = mix_of(CHUNK + 500, seed=4)
    # When it is named by its catalog name and by UVR's file name
    by_name = ours(tmp_path / "a", "bs_roformer_viperx_1297", mix)
    by_file = ours(tmp_path / "b", "model_bs_roformer_ep_317_sdr_12.9755.ckpt", mix)
    # Then both are the same model
    assert sorted(by_name) == ["instrumental", "vocals"]
    for name in by_name:
        np.testing.assert_array_equal(by_name[name], by_file[name])


def test_exact_sum_holds_for_a_roformer_and_mono_and_48_khz_keep_their_form(
    tmp_path: Path,
) -> None:
    model = bs_roformer(tmp_path / "models")
    for channels, rate in ((1, RATE), (2, 48000)):
        mix = (0.3 * music(rate * 3, rate=rate)).T[:channels]
        source = write_audio(tmp_path / f"in{channels}.wav", mix.T, rate, "FLOAT")
        out = tmp_path / f"out{channels}"
        args = ["separate", str(source), "--model", str(model), "-o", str(out), "--no-pictures"]
        assert main(args) == EXIT_OK
        folder = out / source.stem
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["effects"]["stems_add_up"] is True
        total = sum(sf.read(str(folder / s["path"]), dtype="float64")[0] for s in manifest["stems"])
        read = sf.read(str(source), dtype="float64")[0]
        assert np.abs(total - read).max() < 10 ** (-90 / 20)
        info = sf.info(str(folder / "vocals.wav"))
        assert (info.channels, info.samplerate, info.frames) == (channels, rate, rate * 3)


def test_a_checkpoint_runs_with_its_config_given_from_elsewhere(tmp_path: Path) -> None:
    # Given a checkpoint whose .yaml is in another folder
    model = bs_roformer(tmp_path / "models")
    lonely = tmp_path / "checkpoints" / "vocals.ckpt"
    lonely.parent.mkdir()
    lonely.write_bytes(model.read_bytes())
    mix = mix_of(RATE * 2 + 99)
    # When it separates with --model-config
    elsewhere = ours(
        tmp_path / "a", str(lonely), mix, "--model-config", str(model.with_suffix(".yaml"))
    )
    # Then it is the same model as with its config beside it
    beside = ours(tmp_path / "b", str(model), mix)
    assert sorted(elsewhere) == ["instrumental", "vocals"]
    for name in beside:
        np.testing.assert_array_equal(elsewhere[name], beside[name])


def test_bad_model_inputs_are_refused_with_the_file_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = bs_roformer(tmp_path / "models")
    source = write_audio(tmp_path / "mix.wav", music(RATE))
    out = tmp_path / "out"

    def refused(*flags: str) -> tuple[int, str]:
        code = main(["separate", str(source), "-o", str(out), *flags])
        return code, " ".join(capsys.readouterr().err.split())

    # A stem the model does not produce
    code, err = refused("--model", str(model), "--stems", "drums")
    assert code == EXIT_USAGE and "unknown stem 'drums'" in err
    # A Demucs option
    code, err = refused("--model", str(model), "--shifts", "2")
    assert code == EXIT_USAGE and "Demucs option" in err
    # A checkpoint without its config
    lonely = tmp_path / "lonely" / "x.ckpt"
    lonely.parent.mkdir()
    lonely.write_bytes(model.read_bytes())
    code, err = refused("--model", str(lonely))
    assert code == EXIT_USAGE and "needs its config beside it" in err and "x.yaml" in err
    assert "--model-config" in err
    # A config for what is not one checkpoint, or not there
    config = str(model.with_suffix(".yaml"))
    code, err = refused("--model", "htdemucs", "--model-config", config)
    assert code == EXIT_USAGE and "goes with an MSST .ckpt given by its path" in err
    code, err = refused("--model", str(lonely), "--model", str(model), "--model-config", config)
    assert code == EXIT_USAGE and "not an ensemble" in err
    code, err = refused("--model", str(lonely), "--model-config", str(tmp_path / "none.yaml"))
    assert code == EXIT_USAGE and "none.yaml: no such file" in err
    # A file that is not there, and a config that is not a model's
    code, err = refused("--model", str(tmp_path / "nowhere.ckpt"))
    assert code == EXIT_USAGE and "no such model file" in err
    bad = tmp_path / "bad" / "m.ckpt"
    bad.parent.mkdir()
    bad.write_bytes(model.read_bytes())
    bad.with_suffix(".yaml").write_text("model: {colour: 1}\naudio: {}\ntraining: {}\n")
    code, err = refused("--model", str(bad))
    assert code == EXIT_MODEL and str(bad.with_suffix(".yaml")) in err
    # And nothing was written
    assert not out.exists()


def test_model_files_are_downloaded_from_their_locations_and_checked(
    served: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, site = served
    model = bs_roformer(site)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(tmp_path / "installed"))
    # Given a model whose weights are only at its second location (the first has none)
    spec = ModelSpec(
        name="served",
        sources=("vocals", "instrumental"),
        description="test",
        family="bs_roformer",
        files=(
            ModelFile(model.name, (url + "missing/" + model.name, url + model.name), digest),
            ModelFile(model.with_suffix(".yaml").name, (url + model.with_suffix(".yaml").name,)),
        ),
    )
    # When it is located: downloaded into the install folder, the checksum checked
    files = locate_files(spec, folders=[tmp_path / "installed"], fetch=download_url, offline=False)
    assert [path.parent for path in files.paths] == [tmp_path / "installed"] * 2
    assert files.paths[0].read_bytes() == model.read_bytes()
    # And a damaged download is refused and not kept
    for path in files.paths:
        path.unlink()
    wrong = dataclasses.replace(spec, files=(ModelFile(model.name, (url + model.name,), "0" * 64),))
    with pytest.raises(ModelCorrupt, match="checksum mismatch"):
        locate_files(wrong, folders=[tmp_path / "installed"], fetch=download_url, offline=False)
    assert not (tmp_path / "installed" / model.name).exists()
    # And without the network (offline), the message says what to put where
    with pytest.raises(ModelNotFound) as refused:
        locate_files(spec, folders=[tmp_path / "installed"], offline=True)
    assert model.name in str(refused.value) and str(tmp_path / "installed") in str(refused.value)


def test_models_list_names_each_family_with_its_scores(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["models", "list", "--json"]) == EXIT_OK
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert {row["family"] for row in rows.values()} == {
        "demucs",
        "bs_roformer",
        "mel_band_roformer",
        "mdx23c",
        "mdx_net",
        "openunmix",
        "spleeter",
        "ensemble",
    }
    best = rows["vocals-best"]
    assert best["members"] == ["bs_roformer_viperx_1297", "mdx23c_instvoc_hq"]
    assert (best["ensemble"], best["installed"]) == ("avg_wave", False)
    viperx = rows["bs_roformer_viperx_1297"]
    assert viperx["stems"] == ["vocals", "instrumental"] and viperx["installed"] is False
    assert any(score["sdr_db"] == 12.9755 for score in viperx["scores"])
    assert viperx["files"][0]["urls"][0].startswith("https://github.com/TRvlvr/model_repo/")
    assert "model_bs_roformer_ep_317_sdr_12.9755.ckpt" in viperx["aliases"]
