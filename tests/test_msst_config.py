"""MSST ``.yaml`` and ``.ckpt`` files: read safely, checked, refused by name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from bridge.errors import ModelCorrupt
from bridge.models.families.msst_config import (
    DEFAULT_FREQS_PER_BANDS,
    BSRoformerArgs,
    MDX23CArgs,
    MelBandRoformerArgs,
    load_checkpoint,
    load_weights,
    read_config,
)

# model_bs_roformer_ep_317_sdr_12.9755.yaml as released, less the band list's lines
EP_317 = """\
audio:
  chunk_size: 352800
  dim_f: 1024
  dim_t: 801 # don't work (use in model)
  hop_length: 441 # don't work (use in model)
  n_fft: 2048
  num_channels: 2
  sample_rate: 44100
  min_mean_abs: 0.000

model:
  dim: 512
  depth: 12
  stereo: true
  num_stems: 1
  time_transformer_depth: 1
  freq_transformer_depth: 1
  linear_transformer_depth: 0
  freqs_per_bands: !!python/tuple
{bands}
  dim_head: 64
  heads: 8
  attn_dropout: 0.1
  ff_dropout: 0.1
  flash_attn: true
  dim_freqs_in: 1025
  stft_n_fft: 2048
  stft_hop_length: 441
  stft_win_length: 2048
  stft_normalized: false
  mask_estimator_depth: 2
  multi_stft_resolution_loss_weight: 1.0
  multi_stft_resolutions_window_sizes: !!python/tuple
  - 4096
  - 2048
  - 1024
  - 512
  - 256
  multi_stft_hop_size: 147
  multi_stft_normalized: False

training:
  batch_size: 2
  gradient_accumulation_steps: 1
  grad_clip: 0
  instruments:
  - vocals
  - other
  lr: 1.0e-05
  patience: 2
  reduce_factor: 0.95
  target_instrument: vocals
  num_epochs: 1000
  num_steps: 1000
  q: 0.95
  coarse_loss_clip: true
  ema_momentum: 0.999
  optimizer: adam
  other_fix: true
  use_amp: true

inference:
  batch_size: 4
  dim_t: 801
  num_overlap: 2
""".replace("{bands}", "\n".join(f"    - {bins}" for bins in DEFAULT_FREQS_PER_BANDS))

MEL = {
    "audio": {"chunk_size": 352800, "num_channels": 2, "sample_rate": 44100, "hop_length": 441},
    "model": {"dim": 384, "depth": 6, "stereo": True, "num_bands": 60, "mask_estimator_depth": 2},
    "training": {"instruments": ["vocals", "other"], "target_instrument": "vocals"},
    "inference": {"batch_size": 4, "num_overlap": 2},
}

# configs/config_vocals_mdx23c.yaml's sections as MSST ships them
MDX23C = {
    "audio": {
        "chunk_size": 261120,
        "dim_f": 4096,
        "dim_t": 256,
        "hop_length": 1024,
        "n_fft": 8192,
        "num_channels": 2,
        "sample_rate": 44100,
        "min_mean_abs": 0.001,
    },
    "model": {
        "act": "gelu",
        "bottleneck_factor": 4,
        "growth": 128,
        "norm": "InstanceNorm",
        "num_blocks_per_scale": 2,
        "num_channels": 128,
        "num_scales": 5,
        "num_subbands": 4,
        "scale": [2, 2],
    },
    "training": {"instruments": ["vocals", "other"], "target_instrument": None},
    "inference": {"batch_size": 1, "dim_t": 256, "num_overlap": 4},
}


def write(folder: Path, document: dict | str, name: str = "model.yaml") -> Path:
    path = folder / name
    text = document if isinstance(document, str) else yaml.dump(document, Dumper=yaml.Dumper)
    path.write_text(text, encoding="utf-8")
    return path


def with_model(document: dict, **changes: object) -> dict:
    """``document`` with model keys set (None removes one)."""
    model = {k: v for k, v in {**document["model"], **changes}.items() if v is not None}
    return {**document, "model": model}


def test_a_released_bs_roformer_yaml_reads_with_its_tuples(tmp_path: Path) -> None:
    config = read_config(write(tmp_path, EP_317))
    assert config.architecture == "bs_roformer"
    assert isinstance(config.model, BSRoformerArgs)
    assert config.model.freqs_per_bands == DEFAULT_FREQS_PER_BANDS
    assert config.model.multi_stft_resolutions_window_sizes == (4096, 2048, 1024, 512, 256)
    assert (config.model.dim, config.model.depth, config.model.stft_hop_length) == (512, 12, 441)
    assert config.model.zero_dc is False and config.model.audio_channels == 2
    assert config.audio.chunk_size == 352800 and config.audio.n_fft == 2048
    assert config.training.instruments == ("vocals", "other")
    assert config.stems == ("vocals",)
    assert (config.inference.batch_size, config.inference.num_overlap) == (4, 2)
    assert config.inference.dim_t == 801 and config.chunk_size == 352800


def test_mel_band_and_mdx23c_are_told_by_their_keys(tmp_path: Path) -> None:
    mel = read_config(write(tmp_path, MEL, "mel.yaml"))
    assert mel.architecture == "mel_band_roformer"
    assert isinstance(mel.model, MelBandRoformerArgs)
    # Mel-Band's own defaults, not BS-RoFormer's
    assert (mel.model.attn_dropout, mel.model.sample_rate, mel.model.num_stems) == (0.1, 44100, 1)
    assert mel.audio.n_fft is None and mel.inference.chunk_size is None
    mdx = read_config(write(tmp_path, MDX23C, "mdx.yaml"))
    assert mdx.architecture == "mdx23c"
    assert mdx.model == MDX23CArgs(
        act="gelu",
        bottleneck_factor=4,
        growth=128,
        norm="InstanceNorm",
        num_blocks_per_scale=2,
        num_channels=128,
        num_scales=5,
        num_subbands=4,
        scale=(2, 2),
    )
    assert mdx.stems == ("vocals", "other")


def test_a_named_architecture_fills_in_default_bands(tmp_path: Path) -> None:
    path = write(tmp_path, with_model(MEL, num_bands=None))
    with pytest.raises(ModelCorrupt, match="cannot tell which network this is"):
        read_config(path)
    config = read_config(path, architecture="bs_roformer")
    assert isinstance(config.model, BSRoformerArgs)
    assert config.model.freqs_per_bands == DEFAULT_FREQS_PER_BANDS


@pytest.mark.parametrize(
    ("document", "architecture", "message"),
    [
        (MEL, "bs_roformer", r"is said to be BS-RoFormer, but its model section has num_bands"),
        (MEL, "roformer", r"architecture 'roformer' is not known; use one of bs_roformer"),
        (
            with_model(MEL, freqs_per_bands=(1025, 0)),
            None,
            r"has freqs_per_bands \(BS-RoFormer\) and num_bands \(Mel-Band RoFormer\)",
        ),
    ],
    ids=["contradicted", "unknown", "two-markers"],
)
def test_an_architecture_that_cannot_be_told_is_refused(
    tmp_path: Path, document: dict, architecture: str | None, message: str
) -> None:
    path = write(tmp_path, document)
    with pytest.raises(ModelCorrupt, match=message) as error:
        read_config(path, architecture=architecture)
    assert str(path) in str(error.value)


def test_an_unknown_model_key_is_refused_by_name(tmp_path: Path) -> None:
    path = write(
        tmp_path, EP_317.replace("  dim_head: 64\n", "  dim_head: 64\n  use_shared_bias: false\n")
    )
    with pytest.raises(ModelCorrupt) as error:
        read_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: model.use_shared_bias is not a BS-RoFormer argument")
    assert "stft_hop_length" in message  # what it takes instead


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dim": "384"}, r"model.dim = '384' is not allowed; use a whole number"),
        ({"dim": 0}, r"model.dim = 0 is not allowed; use at least 1"),
        ({"stereo": 1}, r"model.stereo = 1 is not allowed; use true or false"),
        ({"depth": True}, r"model.depth = True is not allowed; use a whole number"),
        (
            {"attn_dropout": 1},
            r"model.attn_dropout = 1.0 is not allowed; use from 0.0 to below 1.0",
        ),
        ({"dim": None}, r"model.dim is missing; every Mel-Band RoFormer config gives it"),
        (
            {"num_stems": 2},
            r"model.num_stems = 2, but training gives 1 output stem\(s\) \(vocals\)",
        ),
        ({"stereo": False}, r"model.stereo = false, but audio.num_channels = 2"),
        (
            {"stft_win_length": 4096},
            r"stft_win_length = 4096 is not allowed; use at most stft_n_fft",
        ),
    ],
)
def test_bad_model_values_are_refused(tmp_path: Path, changes: dict, message: str) -> None:
    path = write(tmp_path, with_model(MEL, **changes))
    with pytest.raises(ModelCorrupt, match=message) as error:
        read_config(path)
    assert str(error.value).startswith(str(path))


def test_bands_must_add_up_to_the_stft_bins(tmp_path: Path) -> None:
    path = write(tmp_path, EP_317.replace("    - 129\n", "    - 128\n"))
    with pytest.raises(ModelCorrupt, match="62 bands of 1024 bins in all; use at least 2 bands"):
        read_config(path)


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("training", {"instruments": ["vocals", "vocals"]}, r"training.instruments = \['vocals'"),
        ("training", {"instruments": ["vocals"], "target_instrument": "drums"}, "use one of"),
        ("audio", {"num_channels": 2}, r"audio.chunk_size is missing"),
        ("audio", {"chunk_size": -5}, r"audio.chunk_size = -5 is not allowed; use at least 1"),
        ("inference", {"num_overlap": 0.5}, r"inference.num_overlap = 0.5 is not allowed"),
    ],
)
def test_bad_sections_are_refused(tmp_path: Path, section: str, values: dict, message: str) -> None:
    path = write(tmp_path, {**MEL, section: values})
    with pytest.raises(ModelCorrupt, match=message):
        read_config(path)


def test_sections_msst_leaves_out_take_msst_defaults(tmp_path: Path) -> None:
    document = {
        "audio": {"chunk_size": 44100 * 8},
        "model": MEL["model"],
        "training": {"instruments": ["vocals", "other"], "target_instrument": ""},
    }
    two_stems = {**document, "model": {**MEL["model"], "num_stems": 2}}
    config = read_config(write(tmp_path, {**two_stems, "inference": {"chunk_size": 44100}}))
    assert (config.audio.sample_rate, config.audio.num_channels) == (44100, 2)
    assert config.chunk_size == 44100  # inference.chunk_size wins, as in MSST
    # An empty target counts as none (MSST tests it for truth): both instruments come out
    assert config.stems == ("vocals", "other")
    with pytest.raises(ModelCorrupt, match=r"model.num_stems = 1, but training gives 2"):
        read_config(write(tmp_path, {**document, "model": MEL["model"]}, "b.yaml"))


def test_mdx23c_needs_its_stft_and_every_key(tmp_path: Path) -> None:
    no_fft = {**MDX23C, "audio": {k: v for k, v in MDX23C["audio"].items() if k != "n_fft"}}
    with pytest.raises(ModelCorrupt, match=r"audio.n_fft is missing; MDX23C takes its STFT"):
        read_config(write(tmp_path, no_fft))
    with pytest.raises(ModelCorrupt, match=r"model.act is missing; every MDX23C config gives it"):
        read_config(write(tmp_path, with_model(MDX23C, act=None)))


@pytest.mark.parametrize(
    "text",
    [
        "model: !!python/object/apply:os.system ['touch {marker}']\n",
        "model: !!python/name:os.system\n",
        "model: !!python/object/new:pathlib.Path ['{marker}']\n",
    ],
    ids=["apply", "name", "new"],
)
def test_a_yaml_with_an_unsafe_tag_is_refused_and_runs_nothing(tmp_path: Path, text: str) -> None:
    marker = tmp_path / "ran"
    path = write(tmp_path, text.replace("{marker}", str(marker)))
    with pytest.raises(ModelCorrupt) as error:
        read_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: is not a plain MSST config")
    assert "could not determine a constructor for the tag" in message
    assert "only plain values and !!python/tuple are read" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "text",
    ["model: !!python/tuple {dim: 1}\n", "model: [\n", "- a list\n", "model: 3\n"],
    ids=["tuple-of-a-mapping", "broken", "not-a-mapping", "model-not-a-mapping"],
)
def test_a_yaml_that_is_not_an_msst_config_is_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ModelCorrupt, match=r"is not|has no model section"):
        read_config(path)


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2).state_dict()


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_a_checkpoint_is_unwrapped(tmp_path: Path, wrapper: str | None) -> None:
    state = _state()
    saved = state if wrapper is None else {wrapper: state, "epoch": 317}
    torch.save(saved, tmp_path / "m.ckpt")
    loaded = load_checkpoint(tmp_path / "m.ckpt")
    assert loaded.keys() == state.keys()
    torch.testing.assert_close(loaded["weight"], state["weight"])


class Payload:
    """Something that names code to unpickle; it would leave a file if it were run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_needs_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": _state(), "hook": Payload(marker)}, path)
    with pytest.raises(ModelCorrupt) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f"{path}: names posix.system, which would have to be imported")
    assert "opened without running code from them" in message
    assert not marker.exists()


def test_a_checkpoint_with_a_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "module.ckpt"
    torch.save(torch.nn.Linear(3, 2), path)  # a whole module, as some trainers save
    with pytest.raises(ModelCorrupt, match=r"names torch.nn.modules.linear.Linear, which would"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a checkpoint", "cannot be read as a torch checkpoint"),
        ([1, 2], "holds list, not a state dict of tensors"),
        ({"weight": 3}, "entry 'weight' of its state dict is a int, not a tensor"),
        ({}, "holds dict, not a state dict"),
    ],
    ids=["garbage", "list", "not-tensors", "empty"],
)
def test_what_is_not_a_state_dict_is_refused(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "bad.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ModelCorrupt, match=message) as error:
        load_checkpoint(path)
    assert str(error.value).startswith(str(path))


def test_weights_that_do_not_fit_are_named(tmp_path: Path) -> None:
    config = read_config(write(tmp_path, MEL))
    network = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    state = {
        "0.weight": torch.zeros(2, 4),  # another shape
        "0.bias": torch.zeros(2),
        "2.weight": torch.zeros(2, 2),  # unexpected; 1.weight and 1.bias missing
    }
    with pytest.raises(ModelCorrupt) as error:
        load_weights(network, state, checkpoint=tmp_path / "x.ckpt", config=config)
    assert str(error.value) == (
        f"{tmp_path / 'x.ckpt'}: does not fit the Mel-Band RoFormer that {config.path} "
        "describes (2 key(s) missing, the first 1.weight; 1 unexpected key(s), the first "
        "2.weight; 1 of another shape, the first 0.weight: (2, 4) in the file, (2, 3) for "
        "the config); use the .yaml released with this checkpoint"
    )
    # And a state dict that fits goes in whole
    fitting = {name: torch.full_like(tensor, 0.5) for name, tensor in network.state_dict().items()}
    load_weights(network, fitting, checkpoint=tmp_path / "x.ckpt", config=config)
    assert all(bool((tensor == 0.5).all()) for tensor in network.state_dict().values())
