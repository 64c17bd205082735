"""Open-Unmix against the ``openunmix`` package's own ``Separator`` (tests/references/
openunmix.txt says how it is installed): random-init target networks of the reference's
``OpenUnmix`` class, saved as the official ``<target>-<hash>.pth`` state dicts, separated
by ``stembridge separate`` and by the reference on the same audio.

The reference's ``transforms`` and ``utils`` import torchaudio at the top, for loading
audio and its resampler only; the ``Separator`` path used here (the torch STFT) never
calls it, so it is given an empty stand-in module while the reference is imported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from test_family_memory import peak_rss, write_clip

from bridge.cli import EXIT_MODEL, EXIT_OK, EXIT_USAGE, main
from bridge.errors import ModelCorrupt
from bridge.models.catalog import MODELS, ModelFile
from bridge.models.families.openunmix import STFTS, crossfade_plan
from bridge.models.weights import locate_files
from bridge.pipeline.spec import JobSpec
from bridge.settings import SeparationSettings

from processes import write_config
from signals import write_audio
from test_families import ours

INSTALL = "pip install --no-deps -r tests/references/openunmix.txt"
RATES = {"umxhq": 44100, "umxl": 44100, "umxse": 16000}


@pytest.fixture(scope="module")
def reference() -> Any:
    """``openunmix.model`` and ``openunmix.utils``, torchaudio stood in for."""
    stand_in = "torchaudio" not in sys.modules
    if stand_in:
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    try:
        import openunmix.model
        import openunmix.utils
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide openunmix 1.3.0: {exc}; .ci/run runs {INSTALL}")
        pytest.skip(f"NOT INSTALLED: openunmix: {exc}; {INSTALL}")
    finally:
        if stand_in:
            del sys.modules["torchaudio"]
    return types.SimpleNamespace(model=openunmix.model, utils=openunmix.utils)


def write_models(
    reference: Any, folder: Path, name: str, *, hidden: int = 16, layers: int = 2, seed: int = 0
) -> dict[str, torch.nn.Module]:
    """The model's targets as the reference's random-init networks, saved under their
    official file names in ``folder``; returned by target, in eval mode."""
    stft = STFTS[name]
    rate = RATES[name]
    max_bin = reference.utils.bandwidth_to_max_bin(rate=rate, n_fft=stft.n_fft, bandwidth=16000)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    networks = {}
    for target, file in zip(MODELS[name].sources, MODELS[name].files, strict=True):
        network = reference.model.OpenUnmix(
            nb_bins=stft.bins,
            nb_channels=stft.channels,
            hidden_size=hidden,
            nb_layers=layers,
            max_bin=max_bin,
        )
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.normal_(0.0, 0.3)
            for norm in (network.bn1, network.bn2, network.bn3):
                norm.running_mean.normal_(0.0, 0.5)
                norm.running_var.uniform_(0.5, 2.0)
        torch.save(network.state_dict(), folder / file.name)
        networks[target] = network.eval()
    return networks


def reference_stems(
    reference: Any,
    networks: dict[str, torch.nn.Module],
    name: str,
    mix: np.ndarray,
    *,
    iterations: int = 1,
    residual: bool = False,
) -> dict[str, np.ndarray]:
    stft = STFTS[name]
    separator = reference.model.Separator(
        networks,
        niter=iterations,
        residual=residual,
        sample_rate=float(RATES[name]),
        n_fft=stft.n_fft,
        n_hop=stft.hop,
        nb_channels=stft.channels,
    )
    separator.freeze()
    with torch.no_grad():
        out = separator(torch.from_numpy(mix)[None])[0].numpy()
    return {target: out[k] for k, target in enumerate(networks)}


def mix_of(frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / 44100
    tone = 0.2 * np.sin(2 * np.pi * 220 * t) * np.array([[1.0], [0.6]])
    return (tone + 0.1 * rng.standard_normal((2, frames))).astype(np.float32)


@pytest.mark.parametrize(
    ("name", "iterations", "residual"),
    [("umxhq", 0, False), ("umxhq", 1, False), ("umxhq", 2, True), ("umxse", 1, False)],
)
def test_a_mix_under_one_chunk_separates_as_the_reference(
    reference: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    iterations: int,
    residual: bool,
) -> None:
    # Given a model's targets in their official files
    networks = write_models(reference, tmp_path / "models", name)
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(tmp_path / "models"))
    rate = RATES[name]
    mix = mix_of(rate + 321 if name == "umxhq" else rate * 4 + 321)
    # When both separate the same mix (the default iterations left to the model)
    flags = ["--residual"] if residual else []
    if iterations != 1:
        flags += ["--wiener-iterations", str(iterations)]
    got = ours(tmp_path, name, mix, *flags, rate=rate)
    want = reference_stems(reference, networks, name, mix, iterations=iterations, residual=residual)
    # Then every stem is the reference's within 1e-4, at the mix's length
    assert list(got) == list(MODELS[name].sources)
    for target, stem in want.items():
        assert got[target].shape == mix.shape
        np.testing.assert_allclose(got[target], stem, atol=1e-4, rtol=0)


def test_a_long_mix_is_chunks_of_the_reference_cross_faded(
    reference: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given umxse (16 kHz, hop 512) and 40 s, cut into 30-second chunks fading over 3 s
    networks = write_models(reference, tmp_path / "models", "umxse", layers=1)
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(tmp_path / "models"))
    rate = RATES["umxse"]
    mix = mix_of(rate * 40 + 7)
    got = ours(tmp_path, "umxse", mix, "--segment", "30", "--overlap", "0.1", rate=rate)
    # Then each stretch is the reference on its chunk (zeros after the mix), blended by
    # linear ramps over the overlap; chunks start on 300 hops (9.6 s), two 28.8 s apart
    plan = crossfade_plan(mix.shape[1], chunk=rate * 30, fade=rate * 3, grid=512 * 300)
    assert plan.starts == (0, 3 * 512 * 300) and plan.chunk == 3 * 512 * 300 + rate * 3
    padded = np.pad(mix, ((0, 0), (0, plan.starts[-1] + plan.chunk - mix.shape[1])))
    total = {target: np.zeros(padded.shape) for target in networks}
    weight = np.zeros(padded.shape[1])
    for start in plan.starts:
        piece = padded[:, start : start + plan.chunk]
        for target, stem in reference_stems(reference, networks, "umxse", piece).items():
            total[target][:, start : start + plan.chunk] += stem * plan.window
        weight[start : start + plan.chunk] += plan.window
    for target in networks:
        blend = (total[target] / weight)[:, : mix.shape[1]]
        np.testing.assert_allclose(got[target], blend, atol=1e-4, rtol=0)
    # And the cross-fade is continuous: each chunk's share of a frame moves by at most
    # one ramp step from frame to frame (a cut would jump from 1 to 0)
    overlap = plan.chunk - plan.starts[1]
    for start in plan.starts:
        share = np.zeros(padded.shape[1])
        share[start : start + plan.chunk] = plan.window
        assert np.abs(np.diff(share / weight)).max() <= 1 / overlap + 1e-6
    # And the whole is close to the reference on the whole mix (see the README for the
    # figures): the error is in the last second, where the last chunk reads zeros and the
    # reference reflects
    whole = reference_stems(reference, networks, "umxse", mix)
    for target in networks:
        error = got[target] - whole[target]
        sdr = 10 * np.log10(np.sum(whole[target] ** 2) / np.sum(error**2))
        assert sdr > 30, (target, sdr)


def test_the_cross_fade_weights_add_up_and_keep_every_frame() -> None:
    for length in (10, 100, 101, 257, 1000):
        plan = crossfade_plan(length, chunk=100, fade=10, grid=7)
        weight = np.zeros(length)
        for start in plan.starts:
            weight[start : start + plan.chunk] += plan.window[: length - start]
        # Every frame is covered, chunks of 91 + 10 frames start on the grid and overlap
        # by the fade
        assert weight.min() > 0 and plan.starts[0] == 0
        assert plan.starts[-1] + plan.chunk >= length > plan.starts[-1]
        assert all(start % 7 == 0 for start in plan.starts)
        assert all(plan.chunk - gap == 10 for gap in np.diff(plan.starts))
        assert len(plan.starts) == 1 or plan.chunk == 101
    # A mix no longer than a chunk is one chunk, weighted 1
    one = crossfade_plan(80, chunk=100, fade=10, grid=7)
    assert one.starts == (0,) and one.chunk == 80 and (one.window == 1).all()


def test_an_unmix_folder_missing_a_target_names_the_file(
    reference: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given umxhq's folder without its bass file, and no network
    folder = tmp_path / "models"
    write_models(reference, folder, "umxhq", hidden=8, layers=1)
    (folder / "bass-8d85a5bd.pth").unlink()
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(folder))
    monkeypatch.setenv("STEMBRIDGE_OFFLINE", "1")
    source = write_audio(tmp_path / "mix.wav", mix_of(44100).T, 44100, "FLOAT")
    out = tmp_path / "out"
    # When it separates
    code = main(["separate", str(source), "--model", "umxhq", "-o", str(out)])
    err = capsys.readouterr().err.strip()
    # Then one line names the folder, the missing file and where it comes from
    assert code == EXIT_MODEL
    assert len(err.splitlines()) == 1
    assert f"{folder}: model umxhq lacks bass-8d85a5bd.pth" in err
    assert "zenodo.org/records/3370489/files/bass-8d85a5bd.pth" in err
    assert not out.exists()


def test_a_target_whose_shapes_do_not_fit_is_refused_naming_it(
    reference: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given umxhq's folder whose vocals file holds a umxse network (513 bins, mono)
    folder = tmp_path / "models"
    write_models(reference, folder, "umxhq", hidden=8, layers=1)
    write_models(reference, tmp_path / "se", "umxse", hidden=8, layers=1)
    (folder / "vocals-b62c91ce.pth").write_bytes((tmp_path / "se/speech_f5e0d9f9.pth").read_bytes())
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(folder))
    source = write_audio(tmp_path / "mix.wav", mix_of(44100).T, 44100, "FLOAT")
    out = tmp_path / "out"
    # When it separates
    code = main(["separate", str(source), "--model", "umxhq", "-o", str(out)])
    err = capsys.readouterr().err.strip()
    # Then the file and its wrong tensors are named in one line, nothing written
    assert code == EXIT_MODEL and len(err.splitlines()) == 1
    assert str(folder / "vocals-b62c91ce.pth") in err
    assert "shapes do not fit an Open-Unmix network on a 4096-point STFT" in err
    assert "output_scale [513] (expected [2049])" in err
    assert not out.exists()
    # And so is a damaged one
    (folder / "vocals-b62c91ce.pth").write_bytes(b"not a torch file")
    code = main(["separate", str(source), "--model", "umxhq", "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_MODEL and len(err.splitlines()) == 1
    assert f"{folder / 'vocals-b62c91ce.pth'}: is not a torch file of tensors alone" in err
    assert not out.exists()


def test_open_unmix_options_are_refused_elsewhere_and_short_chunks_anywhere(
    reference: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_models(reference, tmp_path / "models", "umxse", hidden=8, layers=1)
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(tmp_path / "models"))
    source = write_audio(tmp_path / "mix.wav", mix_of(16000).T, 16000, "FLOAT")
    out = tmp_path / "out"

    def refused(*flags: str) -> tuple[int, str]:
        code = main(["separate", str(source), "-o", str(out), "--no-pictures", *flags])
        return code, " ".join(capsys.readouterr().err.split())

    code, err = refused("--model", "htdemucs", "--wiener-iterations", "2")
    assert code == EXIT_USAGE and "--wiener-iterations is an Open-Unmix option" in err
    code, err = refused("--model", "htdemucs", "--residual")
    assert code == EXIT_USAGE and "--residual is an Open-Unmix option" in err
    code, err = refused("--model", "umxse", "--segment", "10")
    assert code == EXIT_USAGE and "use --segment 30 or more" in err
    code, err = refused("--model", "umxse", "--overlap", "0.6")
    assert code == EXIT_USAGE and "at most 0.5" in err
    assert not out.exists()


def test_umxl_says_its_licence_in_the_list_and_on_its_first_download(
    reference: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given umxl's files published with the sha256 prefix in their names
    site = tmp_path / "site"
    write_models(reference, site, "umxl", hidden=8, layers=1)
    files = []
    for target, published in zip(MODELS["umxl"].sources, MODELS["umxl"].files, strict=True):
        prefix = hashlib.sha256((site / published.name).read_bytes()).hexdigest()[:8]
        files.append(ModelFile(f"{target}-{prefix}.pth", (f"site://{published.name}",), prefix))
    spec = dataclasses.replace(MODELS["umxl"], files=tuple(files))

    def fetch(url: str, target: Path) -> None:
        target.write_bytes((site / url.removeprefix("site://")).read_bytes())

    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(tmp_path / "installed"))
    # When it is downloaded: the licence is said, each file checked against its prefix
    with caplog.at_level(logging.WARNING, logger="bridge.models.weights"):
        found = locate_files(spec, folders=[tmp_path / "installed"], fetch=fetch, offline=False)
    assert "umxl: its weights are licensed CC BY-NC-SA 4.0" in caplog.text
    assert [path.name for path in found.paths] == [file.name for file in files]
    # And a file that does not hash to its prefix is refused and not kept
    for path in found.paths:
        path.unlink()
    wrong = dataclasses.replace(spec, files=(dataclasses.replace(files[0], sha256="00000000"),))
    with pytest.raises(ModelCorrupt, match="checksum mismatch"):
        locate_files(wrong, folders=[tmp_path / "installed"], fetch=fetch, offline=False)
    assert not (tmp_path / "installed" / files[0].name).exists()
    # And models list says the licence (after the download: the CLI resets logging)
    assert main(["models", "list", "--json"]) == EXIT_OK
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["umxl"]["licence"].startswith("CC BY-NC-SA 4.0")
    assert {rows[name]["family"] for name in ("umxhq", "umx", "umxl", "umxse")} == {"openunmix"}


def test_submit_runs_open_unmix_with_its_options_as_separate_does(
    reference: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given umxse's files and a host submitting with Open-Unmix's options (no daemon:
    # the job runs in the submitting process, through the daemon's job path)
    write_models(reference, tmp_path / "models", "umxse", hidden=8, layers=1)
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(tmp_path / "models"))
    config = write_config(tmp_path / "config.toml", tmp_path / "state")
    mix = mix_of(16000 * 3 + 5)
    source = write_audio(tmp_path / "line.wav", mix.T, 16000, "FLOAT")
    options = ["--model", "umxse", "--wiener-iterations", "0", "--residual"]
    args = ["submit", str(source), "--config", str(config), "--wait", "--json"]
    code = main([*args, *options, "-o", str(tmp_path / "stems"), "--bit-depth", "32"])
    out = capsys.readouterr().out
    # Then its stems add back to the line exactly (exact-sum), at its rate and length
    assert code == EXIT_OK and json.loads(out)["state"] == "done"
    folder = tmp_path / "stems" / "line"
    stems = [
        sf.read(str(folder / f"{name}.wav"), dtype="float32")[0] for name in ("speech", "noise")
    ]
    assert all(stem.shape == mix.T.shape for stem in stems)
    np.testing.assert_allclose(stems[0] + stems[1], mix.T, atol=1e-6)
    # And the options count in the job's identity only where they change the result
    same = JobSpec(input=str(source), folder=str(folder))
    umx = dataclasses.replace(same, separation=SeparationSettings(model="umxse"))
    once = dataclasses.replace(
        same, separation=SeparationSettings(model="umxse", wiener_iterations=1)
    )
    twice = dataclasses.replace(
        same, separation=SeparationSettings(model="umxse", wiener_iterations=2)
    )
    assert umx.identity("ab" * 32) == once.identity("ab" * 32) != twice.identity("ab" * 32)


def test_ten_minutes_peak_within_15_percent_of_one(
    reference: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given umxse (one-layer targets) and 1- and 10-minute files at its rate
    write_models(reference, tmp_path / "models", "umxse", hidden=8, layers=1)
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(tmp_path / "models"))
    clips = {m: write_clip(tmp_path / f"{m}min.wav", m, RATES["umxse"]) for m in (1, 10)}
    # When each separates in a process of its own
    flags = ("--model", "umxse", "--wiener-iterations", "0")
    short, long = (peak_rss(clips[m], tmp_path / f"out{m}", *flags) for m in (1, 10))
    # Then the longer file's peak is within 15% of the shorter one's
    assert long <= short * 1.15, (short / 2**20, long / 2**20)


def test_install_from_refuses_files_that_do_not_hash_to_their_names_and_copies_nothing(
    reference: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given umxse's four files under their published names, with other content (random
    # networks do not hash to the published prefixes)
    source = tmp_path / "download"
    write_models(reference, source, "umxse", hidden=8, layers=1)
    before = {path.name: path.read_bytes() for path in source.iterdir()}
    installed = tmp_path / "installed"
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(installed))
    # When they are installed from that folder
    code = main(["models", "install", "--from", str(source), "umxse"])
    # Then the first file is refused naming it, its published prefix and the fix
    err = " ".join(capsys.readouterr().err.split())
    first = MODELS["umxse"].files[0]
    assert code == EXIT_MODEL
    assert f"{source / first.name}: checksum mismatch (published {first.sha256}" in err
    assert "not umxse's published file; download it again" in err
    # And nothing was copied, and the folder it came from is as it was
    assert not installed.exists() or not any(installed.iterdir())
    assert {path.name: path.read_bytes() for path in source.iterdir()} == before


def test_a_torch_hub_folder_is_imported_and_its_model_separates_from_there(
    reference: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the openunmix package's download folder holding umxse's four targets, a
    # stray .pth beside them, and nothing installed
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    networks = write_models(reference, hub, "umxse", hidden=8, layers=1)
    (hub / "vocals-00000000.pth").write_bytes(b"not umxse's")
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(tmp_path / "installed"))
    monkeypatch.setenv("STEMBRIDGE_OFFLINE", "1")
    # When the folder is imported
    assert main(["models", "import", str(tmp_path / "torch"), "--json"]) == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    # Then umxse is registered as the catalog model, from its files where they are
    (model,) = result["models"]
    assert (model["name"], model["family"], model["catalog"]) == ("umxse", "openunmix", "umxse")
    assert model["files"] == [str(hub.resolve() / file.name) for file in MODELS["umxse"].files]
    assert any(item["path"].endswith("vocals-00000000.pth") for item in result["skipped"])
    # And it separates from there as the reference does
    mix = mix_of(RATES["umxse"] * 4 + 321)
    got = ours(tmp_path, "umxse", mix, rate=RATES["umxse"])
    for target, stem in reference_stems(reference, networks, "umxse", mix).items():
        np.testing.assert_allclose(got[target], stem, atol=1e-4, rtol=0)
    # And a copy is refused, since the files do not hash to their published prefixes
    assert main(["models", "import", str(tmp_path / "torch"), "--copy", "--json"]) == EXIT_OK
    copied = json.loads(capsys.readouterr().out)
    assert copied["models"] == []
    assert any("checksum mismatch" in item["reason"] for item in copied["skipped"])
    assert not (tmp_path / "installed").exists() or not any((tmp_path / "installed").iterdir())
