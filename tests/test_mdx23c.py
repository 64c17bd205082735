"""MDX23C (bridge/models/families/mdx23c.py) against python-audio-separator's TFC_TDF_net.

The reference is randomly initialised, its state dict written as an MSST ``.ckpt`` beside a
``.yaml`` in the official form, and both read back through :func:`load_mdx23c`.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from bridge.errors import ModelCorrupt
from bridge.models.families.mdx23c import Mdx23c, Mdx23cConfig, load_mdx23c
from bridge.models.families.msst_config import read_config

from separator_reference import import_reference

# MDX23C-8KFFT-InstVoc_HQ's config (UVR's model_2_stem_full_band_8k.yaml), as released
INSTVOC_HQ_YAML = """\
audio:
  chunk_size: 261120
  dim_f: 4096
  dim_t: 256
  hop_length: 1024
  n_fft: 8192
  num_channels: 2
  sample_rate: 44100
  min_mean_abs: 0.001
model:
  act: gelu
  bottleneck_factor: 4
  growth: 128
  norm: InstanceNorm
  num_blocks_per_scale: 2
  num_channels: 128
  num_scales: 5
  num_subbands: 4
  scale:
  - 2
  - 2
training:
  batch_size: 6
  grad_clip: 0
  instruments:
  - Vocals
  - Instrumental
  lr: 1.0e-05
  patience: 2
  reduce_factor: 0.95
  target_instrument: null
  num_epochs: 1000
  num_steps: 1000
  augmentation: 1
  augmentation_type: simple1
  augmentation_mix: true
  q: 0.95
  coarse_loss_clip: true
  ema_momentum: 0.999
inference:
  batch_size: 1
  dim_t: 256
  num_overlap: 8
"""

# A small network: 512-point STFT, 16 frames (15 hops) per chunk, two levels
SMALL_HOP = 128
SMALL_CHUNK = SMALL_HOP * 15


def small_sections(**model: Any) -> dict[str, Any]:
    return {
        "audio": {
            "chunk_size": SMALL_CHUNK,
            "dim_f": 128,
            "dim_t": 16,
            "hop_length": SMALL_HOP,
            "n_fft": 512,
            "num_channels": 2,
            "sample_rate": 44100,
            "min_mean_abs": 0.001,
        },
        "model": {
            "act": "gelu",
            "bottleneck_factor": 2,
            "growth": 4,
            "norm": "InstanceNorm",
            "num_blocks_per_scale": 2,
            "num_channels": 8,
            "num_scales": 2,
            "num_subbands": 2,
            "scale": [2, 2],
            **model,
        },
        "training": {"instruments": ["vocals", "drums", "other"], "target_instrument": None},
        "inference": {"batch_size": 1, "dim_t": 16, "num_overlap": 4},
    }


@pytest.fixture(scope="module")
def reference_class() -> type[torch.nn.Module]:
    """python-audio-separator's ``TFC_TDF_net``."""
    net_class: type[torch.nn.Module] = import_reference(
        "separator.uvr_lib_v5.tfc_tdf_v3"
    ).TFC_TDF_net
    return net_class


def reference_network(
    net_class: type[torch.nn.Module], sections: dict[str, Any], *, seed: int
) -> torch.nn.Module:
    """The reference at random weights, the norms' weights, biases and statistics too."""
    # It reads its config by attribute (config.model.norm), as from MSST's ConfigDict
    config = types.SimpleNamespace(
        **{name: types.SimpleNamespace(**values) for name, values in sections.items()}
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = net_class(config, device="cpu")
        with torch.no_grad():
            for name, tensor in network.state_dict().items():
                if tensor.dim() != 1 or not tensor.is_floating_point():
                    continue
                noise = torch.randn_like(tensor) * 0.3
                if name.endswith("running_var"):
                    tensor.copy_(noise.abs() + 0.5)
                else:
                    tensor.copy_(noise + (1.0 if name.endswith("weight") else 0.0))
    return network.eval()


def run_reference(network: torch.nn.Module, audio: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings(), torch.inference_mode():
        # The reference asks torch.stft for real output, which torch has deprecated
        warnings.filterwarnings("ignore", message="stft with return_complex=False")
        result: torch.Tensor = network(audio)
    return result


def run_ours(network: torch.nn.Module, audio: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        result: torch.Tensor = network(audio)
    return result


def write_model(folder: Path, config_text: str, state: object) -> tuple[Path, Path]:
    """An MSST model's two files: ``model.yaml`` and ``model.ckpt`` (``torch.save``)."""
    folder.mkdir(parents=True, exist_ok=True)
    config_path, checkpoint_path = folder / "model.yaml", folder / "model.ckpt"
    config_path.write_text(config_text, encoding="utf-8")
    torch.save(state, checkpoint_path)
    return config_path, checkpoint_path


def audio(batch: int, samples: int, *, seed: int = 7, channels: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.5 * torch.randn(batch, channels, samples, generator=generator)


def small_network(tmp_path: Path, sections: dict[str, Any]) -> Mdx23c:
    """Our network at its own initial weights, from a config written to a file."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(sections), encoding="utf-8")
    return Mdx23c(Mdx23cConfig.from_msst(read_config(path, architecture="mdx23c"))).eval()


@contextmanager
def refused(path: Path, *fragments: str) -> Iterator[None]:
    """The block raises ModelCorrupt about ``path`` whose message holds every fragment."""
    with pytest.raises(ModelCorrupt) as caught:
        yield
    assert caught.value.path == path
    for fragment in (str(path), *fragments):
        assert fragment in str(caught.value)


SMALL_CASES = {
    "instancenorm-gelu-3-stems": {},
    "batchnorm-relu-target": {"norm": "BatchNorm", "act": "relu"},
    "groupnorm-elu-frames-by-4": {"norm": "GroupNorm4", "act": "elu1.0", "scale": [4, 2]},
    "bins-by-4-one-block-target": {"scale": [2, 4], "num_blocks_per_scale": 1},
}


@pytest.mark.parametrize("case", SMALL_CASES)
def test_small_networks_match_the_reference(
    reference_class: type[torch.nn.Module], case: str, tmp_path: Path
) -> None:
    # Given a small reference network, saved as MSST's .ckpt + .yaml
    sections = small_sections(**SMALL_CASES[case])
    target = case.endswith("target")
    if target:
        sections["training"]["target_instrument"] = "drums"
    reference = reference_network(reference_class, sections, seed=3)
    config_path, checkpoint_path = write_model(
        tmp_path, yaml.safe_dump(sections), reference.state_dict()
    )
    # ... and read back as python-audio-separator reads it
    reference.load_state_dict(torch.load(checkpoint_path, map_location="cpu"))

    # When our loader reads the same files
    ours = load_mdx23c(config_path, checkpoint_path)

    # Then the stems are the reference's: one chunk (batch 2), a length that is not a
    # whole number of hops, and the shortest length the network takes
    assert ours.config.stems == (("drums",) if target else ("vocals", "drums", "other"))
    multiple = ours.config.frame_multiple
    for batch, samples in (
        (2, SMALL_CHUNK),
        (1, SMALL_CHUNK + 77),
        (1, SMALL_HOP * (multiple - 1)),
    ):
        x = audio(batch, samples)
        expected = run_reference(reference, x)
        got = run_ours(ours, x)
        if target:
            # the reference gives a target model's stem without a stems axis
            expected = expected.unsqueeze(1)
        stems = len(ours.config.stems)
        assert got.shape == (batch, stems, 2, SMALL_HOP * (samples // SMALL_HOP))
        assert got.shape == expected.shape
        assert expected.abs().max() > 1e-2  # not a silent network
        assert (got - expected).abs().max() <= 1e-4


def test_instvoc_hq_matches_the_reference(
    reference_class: type[torch.nn.Module], tmp_path: Path
) -> None:
    # Given the reference at MDX23C-8KFFT-InstVoc_HQ's configuration, saved as released
    sections = yaml.safe_load(INSTVOC_HQ_YAML)
    reference = reference_network(reference_class, sections, seed=5)
    config_path, checkpoint_path = write_model(tmp_path, INSTVOC_HQ_YAML, reference.state_dict())

    # When our loader reads it
    ours = load_mdx23c(config_path, checkpoint_path)

    # Then it holds the released checkpoint's 319 tensors, takes its 261120-sample chunks,
    # and separates the shortest input it takes (32 frames: a full chunk is slow on CPU)
    # as the reference does
    assert len(ours.state_dict()) == 319
    assert ours.config.stems == ("Vocals", "Instrumental")
    assert (ours.config.chunk_size, ours.config.num_overlap) == (261120, 8)
    assert ours.config.accepts(261120) and ours.config.frame_multiple == 32
    x = audio(1, 1024 * 31)
    expected = run_reference(reference, x)
    got = run_ours(ours, x)
    assert got.shape == expected.shape == (1, 2, 2, 1024 * 31)
    assert expected.abs().max() > 1e-2
    assert (got - expected).abs().max() <= 1e-4


def test_a_checkpoint_wrapped_in_state_dict_loads(tmp_path: Path) -> None:
    # Given a checkpoint saved as {"state_dict": ...}, as some MSST releases are
    sections = small_sections()
    state = small_network(tmp_path / "ours", sections).state_dict()
    config_path, checkpoint_path = write_model(
        tmp_path, yaml.safe_dump(sections), {"state_dict": state}
    )

    # Then every tensor of it is loaded
    loaded = load_mdx23c(config_path, checkpoint_path).state_dict()
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[key], state[key]) for key in state)


def test_an_msst_yaml_with_python_tuples_reads(tmp_path: Path) -> None:
    # Given an MSST config with an augmentations section holding a !!python/tuple
    sections = small_sections()
    state = small_network(tmp_path / "ours", sections).state_dict()
    text = yaml.safe_dump(sections) + (
        "augmentations:\n  enable: true\n  mixup_probs: !!python/tuple\n    - 0.2\n    - 0.02\n"
    )
    config_path, checkpoint_path = write_model(tmp_path, text, state)

    # Then it loads
    assert load_mdx23c(config_path, checkpoint_path).config.num_overlap == 4

    # But no other Python tag is honoured
    config_path.write_text("model: !!python/object/apply:os.system ['true']\n", encoding="utf-8")
    with refused(config_path):
        load_mdx23c(config_path, checkpoint_path)


def test_a_mono_model_gives_mono_stems(tmp_path: Path) -> None:
    # Given a one-channel model (the reference's inverse STFT assumes two channels, so
    # there is nothing to compare with: this checks the shapes)
    sections = small_sections()
    sections["audio"]["num_channels"] = 1
    network = small_network(tmp_path, sections)

    # Then every stem has one channel and the chunk's length
    assert run_ours(network, audio(2, SMALL_CHUNK, channels=1)).shape == (2, 3, 1, SMALL_CHUNK)


def test_a_state_dict_that_does_not_fit_is_refused_by_its_keys(tmp_path: Path) -> None:
    # Given a state dict with one key missing and one the network does not have
    sections = small_sections()
    original = small_network(tmp_path / "ours", sections).state_dict()
    state = dict(original)
    del state["encoder_blocks.1.downscale.conv.2.weight"]
    state["encoder_blocks.0.tfc_tdf.blocks.0.extra.weight"] = torch.zeros(1)
    config_path, checkpoint_path = write_model(tmp_path / "a", yaml.safe_dump(sections), state)

    # Then the loader names the file, both keys and the fix
    with refused(
        checkpoint_path,
        "missing",
        "encoder_blocks.1.downscale.conv.2.weight",
        "unexpected",
        "encoder_blocks.0.tfc_tdf.blocks.0.extra.weight",
        "use the .yaml released with this checkpoint",
    ):
        load_mdx23c(config_path, checkpoint_path)

    # And a config with one more level than the checkpoint has names the first missing key
    config_path, checkpoint_path = write_model(
        tmp_path / "b", yaml.safe_dump(small_sections(num_scales=3)), original
    )
    with refused(checkpoint_path, "missing", "encoder_blocks.2.tfc_tdf.blocks.0.tfc1.0.weight"):
        load_mdx23c(config_path, checkpoint_path)


def test_a_state_dict_of_other_widths_is_refused_by_shape(tmp_path: Path) -> None:
    # Given a checkpoint of a network whose channels grow by 4, and a config saying 8
    state = small_network(tmp_path / "ours", small_sections()).state_dict()
    config_path, checkpoint_path = write_model(
        tmp_path, yaml.safe_dump(small_sections(growth=8)), state
    )

    # Then the first tensor of the wrong shape is named with both shapes
    with refused(
        checkpoint_path,
        "encoder_blocks.0.downscale.conv.2.weight",
        "(12, 8, 2, 2) in the file",
        "(16, 8, 2, 2) for the config",
    ):
        load_mdx23c(config_path, checkpoint_path)


def test_a_checkpoint_that_needs_code_is_refused(tmp_path: Path) -> None:
    # Given a pickle that would build a class (run code) when unpickled freely
    config_path = tmp_path / "model.yaml"
    config_path.write_text(yaml.safe_dump(small_sections()), encoding="utf-8")
    hostile = tmp_path / "hostile.ckpt"
    torch.save({"first_conv.weight": torch.zeros(1), "x": Path("/")}, hostile)

    # Then it is not opened
    with refused(hostile, "to unpickle"):
        load_mdx23c(config_path, hostile)


def test_an_unknown_model_key_is_refused(tmp_path: Path) -> None:
    # Given a config whose model section has a key MDX23C does not have
    config_path = tmp_path / "model.yaml"
    config_path.write_text(yaml.safe_dump(small_sections(growth_rate=4)), encoding="utf-8")

    # Then it is refused by name before the checkpoint is opened
    with refused(config_path, "model.growth_rate"):
        load_mdx23c(config_path, tmp_path / "absent.ckpt")


BAD_VALUES = {
    "unknown norm": (("model", "norm", "LayerNorm"), "model.norm = 'LayerNorm' is not allowed"),
    "unknown act": (("model", "act", "swish"), "model.act = 'swish' is not allowed"),
    "scale of one": (("model", "scale", [2]), "model.scale = [2] is not allowed"),
    "too many bins": (("audio", "dim_f", 512), "audio.dim_f = 512 is more than the 257 bins"),
    "bins that do not divide": (("audio", "dim_f", 100), "use a multiple of 8"),
    "no bins left": (("model", "bottleneck_factor", 32), "use at most 16"),
    "groups that do not divide": (("model", "norm", "GroupNorm3"), "multiples of 3"),
    "chunk of odd frames": (("audio", "chunk_size", SMALL_HOP * 16), "e.g. 1920"),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_bad_config_values_are_refused(case: str, tmp_path: Path) -> None:
    # Given a config with one value the network cannot be built with or run at
    (section, key, value), message = BAD_VALUES[case]
    sections = small_sections()
    sections[section][key] = value
    config_path = tmp_path / "model.yaml"
    config_path.write_text(yaml.safe_dump(sections), encoding="utf-8")

    # Then it is refused by name before the checkpoint is opened
    with refused(config_path, message, "use the .yaml released with the checkpoint"):
        load_mdx23c(config_path, tmp_path / "absent.ckpt")


def test_forward_refuses_audio_it_cannot_take(tmp_path: Path) -> None:
    network = small_network(tmp_path, small_sections())
    with pytest.raises(ValueError, match=r"takes \(batch, 2, samples\) audio, not \(1, 1, 1920\)"):
        network(audio(1, SMALL_CHUNK, channels=1))
    with pytest.raises(ValueError, match=r"cannot take 1919 samples.*chunks of 1920 samples"):
        network(audio(1, SMALL_CHUNK - 1))
