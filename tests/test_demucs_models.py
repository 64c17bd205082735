"""demucs 4.1's other pretrained models: the time-domain Demucs (v2/v3), mixed bags with
per-source weights (``mdx``), DiffQ-quantized networks (``mdx_q``), single signatures, the
legacy-site download and their bad inputs. Parity is with ``demucs.apply.apply_model``
(``shifts=0``) on the same files, loaded by demucs' own loaders."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from demucs.apply import BagOfModels
from demucs.demucs import Demucs
from demucs.hf import load_safetensors_model
from demucs.states import get_state, save_with_checksum
from demucs_bags import (
    TINY_DEMUCS,
    official_definition,
    write_bag,
    write_quantized_safetensors,
)
from test_family_memory import write_clip
from test_parity import TOLERANCE, run_stembridge

from bridge.cli import EXIT_MODEL, EXIT_USAGE, main
from bridge.errors import ModelCorrupt, ModelNotFound
from bridge.models.catalog import DEMUCS_SIGNATURES, get_spec
from bridge.models.loading import load_bag, load_network
from bridge.models.weights import checkpoint_urls, install_folder, install_from, locate
from bridge.settings import SeparationSettings

from lean import run_without
from reference import demucs_bag, separate_reference
from signals import SAMPLE_RATE, music, write_audio


@pytest.fixture
def diffq() -> None:
    """The quantizer, to write and read ``_q`` models: CI has it (``.[dev]`` brings the
    ``diffq`` extra); elsewhere the test skips, saying how to install it."""
    try:
        import diffq  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI must provide diffq (.ci/run installs .[dev], which has [diffq])")
        pytest.skip("diffq is not installed: pip install 'stembridge[diffq]'")


def assert_parity(stems: dict[str, np.ndarray], expected: np.ndarray, sources: tuple) -> None:
    for k, name in enumerate(sources):
        if name in stems:
            assert stems[name].shape == expected[k].shape
            np.testing.assert_allclose(stems[name], expected[k], atol=TOLERANCE, rtol=0)


def test_every_demucs_name_and_signature_is_known() -> None:
    # Given demucs' own list of files and bag files
    import importlib.resources

    remote = importlib.resources.files("demucs") / "remote"
    listed = [
        line.strip()
        for line in (remote / "files.txt").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "root:"))
    ]
    # Then every network is a model by its signature, under its official file name
    assert sorted(spec.checkpoints[0] for spec in DEMUCS_SIGNATURES.values()) == sorted(listed)
    # And every bag is a model made of the networks its bag file lists
    for bag in remote.iterdir():
        if bag.name.endswith(".yaml"):
            spec = get_spec(bag.name.removesuffix(".yaml"))
            assert list(spec.signatures) == yaml.safe_load(bag.read_text())["models"]


def test_time_domain_demucs_signature_matches_apply_model(tmp_path: Path) -> None:
    # Given one time-domain Demucs network of mdx alone, asked for by its signature
    spec = get_spec("0d19c1c6")
    write_bag(tmp_path / "models", get_spec("mdx"))
    audio = music(3 * SAMPLE_RATE + 123, seed=1)
    source = write_audio(tmp_path / "mix.wav", audio, subtype="FLOAT")
    # When StemBridge (two segments a pass) and demucs -n 0d19c1c6 separate it
    settings = SeparationSettings(model=spec.name, batch_size=2)
    stems = run_stembridge(source, tmp_path / "out", tmp_path / "models", settings)
    network = demucs_bag(tmp_path / "models", spec)
    # Then they agree within 1e-4, at the network's own 2 s segment
    assert isinstance(network.models[0], Demucs) and network.models[0].segment == 2
    assert_parity(stems, separate_reference(network, audio), spec.sources)


def test_mixed_bag_with_per_source_weights_matches_apply_model(tmp_path: Path) -> None:
    # Given mdx: two time-domain Demucs and two HDemucs under mdx.yaml's per-source weights
    spec = get_spec("mdx")
    write_bag(tmp_path / "models", spec)
    audio = music(3 * SAMPLE_RATE + 7, seed=2)
    source = write_audio(tmp_path / "mix.wav", audio, subtype="FLOAT")
    bag = demucs_bag(tmp_path / "models", spec)
    expected = separate_reference(bag, audio)
    assert [type(m).__name__ for m in bag.models] == ["Demucs", "Demucs", "HDemucs", "HDemucs"]
    # When StemBridge separates every stem, and vocals alone (the time-domain networks,
    # weighted 0 there, are then not run)
    for stems in ((), ("vocals",)):
        settings = SeparationSettings(model="mdx", stems=stems)
        ours = run_stembridge(source, tmp_path / f"out{len(stems)}", tmp_path / "models", settings)
        # Then every stem asked for matches demucs' weighted mix
        assert sorted(ours) == sorted(stems or spec.sources)
        assert_parity(ours, expected, spec.sources)


def test_bag_listing_a_network_twice_loads_it_once_and_matches(tmp_path: Path) -> None:
    # Given repro_mdx_a_time_only, whose bag file lists each of its two networks twice
    spec = get_spec("repro_mdx_a_time_only")
    write_bag(tmp_path / "models", spec)
    audio = music(2 * SAMPLE_RATE + 5, seed=3)
    source = write_audio(tmp_path / "mix.wav", audio, subtype="FLOAT")
    files = locate(spec, folders=[tmp_path / "models"], offline=True)
    # When loaded, Then it holds two networks, each twice
    loaded = load_bag(files)
    assert loaded.models[0] is loaded.models[1] and loaded.models[2] is loaded.models[3]
    # And it separates as demucs does
    settings = SeparationSettings(model=spec.name)
    stems = run_stembridge(source, tmp_path / "out", tmp_path / "models", settings)
    assert_parity(
        stems, separate_reference(demucs_bag(tmp_path / "models", spec), audio), spec.sources
    )


def test_install_copies_a_network_listed_twice_once(tmp_path: Path) -> None:
    # Given repro_mdx_a_hybrid_only's files (its bag lists each network twice)
    spec = get_spec("repro_mdx_a_hybrid_only")
    write_bag(tmp_path / "download", spec)
    # When installed from that folder
    (installed,) = install_from(tmp_path / "download", names=[spec.name], target=tmp_path / "t")
    # Then the bag file and two checkpoints are copied, and its size counts each once
    copied = sorted(path.name for path in (tmp_path / "t").iterdir())
    assert len(copied) == 3 and copied[-1] == spec.bag_file
    assert installed.size_bytes == sum(path.stat().st_size for path in (tmp_path / "t").iterdir())
    assert [path.name.split("-")[0] for path in installed.networks] == list(spec.signatures)


def test_quantized_network_is_dequantized_and_matches_apply_model(
    tmp_path: Path, diffq: None
) -> None:
    # Given mdx_q's first network (time-domain), saved DiffQ-quantized as demucs does
    spec = get_spec("6b9c2ca1")
    write_bag(tmp_path / "models", get_spec("mdx_q"), seed=4)
    audio = music(3 * SAMPLE_RATE + 99, seed=4)
    source = write_audio(tmp_path / "mix.wav", audio, subtype="FLOAT")
    # When StemBridge and demucs (which dequantizes with diffq) separate it
    settings = SeparationSettings(model=spec.name, batch_size=2)
    stems = run_stembridge(source, tmp_path / "out", tmp_path / "models", settings)
    expected = separate_reference(demucs_bag(tmp_path / "models", spec), audio)
    # Then they agree
    assert_parity(stems, expected, spec.sources)


def test_quantized_safetensors_form_loads_the_same_networks(tmp_path: Path, diffq: None) -> None:
    # Given mdx_q in the Hugging Face form: packed states flattened into the metadata
    spec = get_spec("mdx_q")
    paths = write_quantized_safetensors(tmp_path / "models", spec, seed=5)
    # When StemBridge loads it (with no class but DiffQ's allowed in the structure)
    ours = load_bag(locate(spec, folders=[tmp_path / "models"], offline=True))
    definition = official_definition(spec)
    theirs = BagOfModels(
        [load_safetensors_model(path) for path in paths],
        definition["weights"],
        definition["segment"],
    )
    # Then every dequantized weight is demucs' own
    assert ours.weights == theirs.weights
    for mine, reference in zip(ours.models, theirs.models, strict=True):
        for (key, a), (_, b) in zip(
            mine.state_dict().items(), reference.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), key


def test_bag_file_naming_an_unknown_signature_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an mdx folder whose mdx.yaml names a network that is not mdx's
    spec = get_spec("mdx")
    definition = official_definition(spec)
    definition["models"][1] = "deadbeef"
    write_bag(tmp_path / "models", spec, definition=definition)
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(tmp_path / "models"))
    source = write_audio(tmp_path / "mix.wav", music(SAMPLE_RATE))
    # When it is used
    code = main(["separate", str(source), "-o", str(tmp_path / "out"), "--model", "mdx"])
    # Then one line names the file, the signature and the fix, and nothing is written
    error = capsys.readouterr().err
    assert code == EXIT_MODEL
    assert "mdx.yaml: names network deadbeef" in error and "use the official mdx.yaml" in error
    assert not (tmp_path / "out").exists()


def test_quantized_model_without_diffq_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, diffq: None
) -> None:
    # Given mdx_q installed, and an install without the diffq extra
    write_bag(tmp_path / "models", get_spec("mdx_q"))
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(tmp_path / "models"))
    source = write_audio(tmp_path / "mix.wav", music(SAMPLE_RATE))
    # When it is used
    args = ["separate", str(source), "-o", str(tmp_path / "out"), "--model", "mdx_q"]
    result = run_without(tmp_path, ["diffq"], args)
    # Then the error names the file, the extra and the pip command, and nothing is written
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "6b9c2ca1-" in result.stderr and "a DiffQ-quantized network" in result.stderr
    assert "pip install 'stembridge[diffq]'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_checkpoint_whose_shapes_do_not_fit_its_network_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 0d19c1c6 saved with its checksum, but its arguments say 8 channels and its
    # state is of a 4-channel network
    folder = tmp_path / "models"
    folder.mkdir()
    small = Demucs(["drums", "bass", "other", "vocals"], segment=4, **TINY_DEMUCS)
    args, kwargs = small._init_args_kwargs
    package = {
        "klass": Demucs,
        "args": args,
        "kwargs": {**kwargs, "channels": 8},
        "state": get_state(small, None),
    }
    save_with_checksum(package, folder / "0d19c1c6.th")
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(folder))
    source = write_audio(tmp_path / "mix.wav", music(SAMPLE_RATE))
    # When it is used
    code = main(["separate", str(source), "-o", str(tmp_path / "out"), "--model", "0d19c1c6"])
    # Then one line names the file and says what to do, and nothing is written
    error = capsys.readouterr().err
    assert code == EXIT_MODEL
    assert "0d19c1c6-" in error and "the weights do not fit the network" in error
    assert "download the file again" in error
    assert not (tmp_path / "out").exists()


def test_checkpoint_in_torch_s_legacy_format_is_refused_by_name(tmp_path: Path) -> None:
    # Given a network saved in torch's pre-zip format (its pickle refers to the network
    # class in a way weights_only loading cannot allow), named by its checksum
    network = Demucs(["drums", "bass", "other", "vocals"], segment=2, **TINY_DEMUCS)
    args, kwargs = network._init_args_kwargs
    package = {"klass": Demucs, "args": args, "kwargs": kwargs, "state": get_state(network, None)}
    buffer = io.BytesIO()
    torch.save(package, buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    path = tmp_path / f"0d19c1c6-{hashlib.sha256(data).hexdigest()[:8]}.th"
    path.write_bytes(data)
    # When it is loaded, Then it is refused naming the file and the safetensors form
    with pytest.raises(ModelCorrupt, match=r"0d19c1c6-.*cannot be loaded safely.*safetensors"):
        load_network(path)


class LegacySite:
    """demucs' checkpoint site as a folder: ``fetch(url, target)`` serves its files by
    name (whole, or a ``FileNotFoundError``), recording each URL asked for."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.asked: list[str] = []

    def __call__(self, url: str, target: Path) -> None:
        self.asked.append(url)
        shutil.copyfile(self.folder / url.rsplit("/", 1)[1], target)


def hub_down(repo_id: str, filename: str) -> str:
    raise OSError(f"404 for {repo_id}/{filename}")


def as_written(spec_name: str, folder: Path) -> object:
    """The catalog's spec with the checkpoint names of the test files (their own hashes)."""
    spec = get_spec(spec_name)
    names = {path.name.split("-")[0]: path.name for path in folder.glob("*.th")}
    return dataclasses.replace(spec, checkpoints=tuple(names[s] for s in spec.signatures))


def test_hub_failure_falls_back_to_the_legacy_site_with_checksums(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no weights on disk, a hub without the model, and the legacy site holding it
    write_bag(tmp_path / "site", get_spec("mdx"))
    site = LegacySite(tmp_path / "site")
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(tmp_path / "install"))
    monkeypatch.delenv("STEMBRIDGE_DEMUCS_URL")
    spec = as_written("mdx", tmp_path / "site")
    asked_hub: list[str] = []

    def hub(repo_id: str, filename: str) -> str:
        asked_hub.append(f"{repo_id}/{filename}")
        return hub_down(repo_id, filename)

    # When the model is looked for, downloads allowed
    files = locate(spec, folders=[tmp_path / "empty"], download=hub, fetch=site, offline=False)
    # Then the hub was asked first, then each checkpoint from demucs' own URLs
    assert asked_hub == ["adefossez/Demucs-mdx/mdx.yaml"]
    assert site.asked == [
        f"https://dl.fbaipublicfiles.com/demucs/mdx_final/{name}" for name in spec.checkpoints
    ]
    # And the files are in the install folder, with demucs' own bag file, and load
    assert {path.parent for path in files.networks} == {install_folder()}
    assert files.bag_file is None
    assert len(load_bag(files).models) == 4


def test_a_single_signature_comes_from_the_legacy_site_only(tmp_path: Path) -> None:
    # Given the legacy site holding one network, and a hub that must not be asked
    write_bag(tmp_path / "site", get_spec("mdx"))
    site = LegacySite(tmp_path / "site")
    spec = as_written("7ecf8ec1", tmp_path / "site")

    def hub(repo_id: str, filename: str) -> str:
        raise AssertionError("a signature has no Hugging Face repository")

    # When it is looked for, Then it is fetched from the legacy site (the mirror named)
    files = locate(spec, folders=[tmp_path / "empty"], download=hub, fetch=site, offline=False)
    assert site.asked == list(checkpoint_urls(spec))
    assert site.asked[0].startswith(os.environ["STEMBRIDGE_DEMUCS_URL"] + "mdx_final/7ecf8ec1-")
    assert len(files.networks) == 1


def test_a_download_failing_its_checksum_is_deleted_and_refused(tmp_path: Path) -> None:
    # Given a legacy site whose file does not hash to the prefix in its official name
    site = tmp_path / "site"
    site.mkdir()
    spec = get_spec("0d19c1c6")
    (site / spec.checkpoints[0]).write_bytes(b"not the network")
    # When it is downloaded, Then the mismatch is named with the fix, and the file is gone
    with pytest.raises(ModelCorrupt, match=r"0d19c1c6-0f06f20e\.th: checksum mismatch"):
        locate(spec, folders=[tmp_path], download=hub_down, fetch=LegacySite(site), offline=False)
    assert not (install_folder() / spec.checkpoints[0]).exists()


def test_both_sites_failing_names_both_and_the_files(tmp_path: Path) -> None:
    # Given a hub and a legacy site that both fail
    def site(url: str, target: Path) -> None:
        raise FileNotFoundError(f"404 {url}")

    # When mdx is looked for, Then the message names both failures and the files to put
    with pytest.raises(ModelNotFound) as caught:
        locate(get_spec("mdx"), folders=[tmp_path], download=hub_down, fetch=site, offline=False)
    message = str(caught.value)
    assert "404 for adefossez/Demucs-mdx/mdx.yaml" in message
    assert "404 http://127.0.0.1:1/demucs/mdx_final/0d19c1c6-0f06f20e.th" in message
    assert "0d19c1c6.safetensors" in message and "7d865c68-3d5dd56b.th" in message


def test_time_domain_demucs_memory_does_not_grow_with_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a time-domain Demucs network without resampling (fast) and 10 s segments
    from test_family_memory import peak_rss

    write_bag(tmp_path / "models", get_spec("mdx"), size="fast")
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(tmp_path / "models"))
    clips = {m: write_clip(tmp_path / f"{m}min.wav", m) for m in (1, 10)}
    # When it separates 1 and 10 minutes, each in a process of its own
    flags = ("--model", "0d19c1c6", "--overlap", "0")
    short, long = (peak_rss(clips[m], tmp_path / f"out{m}", *flags) for m in (1, 10))
    # Then the longer file's peak is within 15% of the shorter one's
    assert long <= short * 1.15, (short / 2**20, long / 2**20)
