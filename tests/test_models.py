"""Model weights: both official forms, lookup order, install, download, and refusals."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bridge.cli import EXIT_MODEL, EXIT_OK, main
from bridge.errors import ModelCorrupt, ModelNotFound
from bridge.models.catalog import MODELS
from bridge.models.loaded import LoadedModel
from bridge.models.loading import load_bag
from bridge.models.weights import (
    HubUnreachable,
    check_reachable,
    find_installed,
    hub_download,
    install_folder,
    locate,
)
from bridge.settings import SeparationSettings

from modelfiles import make_networks, write_demucs_form, write_hf_form
from reference import demucs_bag
from signals import music, write_audio


def assert_same_weights(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("name", ["htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi"])
def test_both_forms_load_the_same_networks_as_demucs(tiny_models: Path, name: str) -> None:
    # Given a folder with htdemucs in the HF form and the others in the demucs form
    spec = MODELS[name]
    # When StemBridge and demucs load it
    files = locate(spec, folders=[tiny_models], offline=True)
    ours, theirs = load_bag(files), demucs_bag(tiny_models, spec)
    # Then every network and the bag weights are identical
    assert len(ours.models) == len(spec.signatures)
    for mine, reference in zip(ours.models, theirs.models, strict=True):
        assert_same_weights(mine, reference)
    assert ours.weights == theirs.weights


def test_safetensors_is_preferred_over_checkpoint(tmp_path: Path) -> None:
    spec = MODELS["htdemucs"]
    networks = make_networks(spec)
    write_demucs_form(tmp_path, spec, networks)
    write_hf_form(tmp_path, spec, networks)
    files = locate(spec, folders=[tmp_path], offline=True)
    assert [path.suffix for path in files.networks] == [".safetensors"]


def test_corrupted_checksum_is_refused(tiny_models: Path, tmp_path: Path) -> None:
    # Given a copy of htdemucs_ft with one byte of one checkpoint flipped
    folder = tmp_path / "models"
    shutil.copytree(tiny_models, folder)
    victim = sorted(folder.glob("f7e0c4bc-*.th"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    # When it is loaded, Then the checksum mismatch is named with the file and the fix
    with pytest.raises(ModelCorrupt, match=r"f7e0c4bc-.*checksum mismatch.*download it again"):
        LoadedModel.load(SeparationSettings(model="htdemucs_ft"), folders=[folder], offline=True)


def test_missing_weights_name_the_files_and_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as caught:
        LoadedModel.load(SeparationSettings(model="htdemucs"), folders=[tmp_path], offline=True)
    message = str(caught.value)
    for needed in ("htdemucs.yaml", "955717e8.safetensors", "955717e8-8726e21a.th"):
        assert needed in message
    assert str(install_folder()) in message
    assert "stembridge models install --from" in message


def test_download_runs_only_when_nothing_is_on_disk(tiny_models: Path, tmp_path: Path) -> None:
    # Given a stand-in hub with hf_hub_download's signature, serving the HF-form files
    fetched: list[tuple[str, str]] = []

    def download(repo_id: str, filename: str) -> str:
        fetched.append((repo_id, filename))
        cache = tmp_path / "cache" / repo_id.replace("/", "--")
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_models / filename, cache / filename)
        return str(cache / filename)

    spec = MODELS["htdemucs"]
    # When nothing is installed, Then it downloads the bag file and the network
    files = locate(spec, folders=[tmp_path / "empty"], download=download, offline=False)
    assert fetched == [
        ("adefossez/HTDemucs", "htdemucs.yaml"),
        (spec.hf_repo, "955717e8.safetensors"),
    ]
    assert_same_weights(load_bag(files).models[0], demucs_bag(tiny_models, spec).models[0])
    # And when the weights are on disk, Then nothing is downloaded
    fetched.clear()
    locate(spec, folders=[tiny_models], download=download, offline=False)
    assert fetched == []


def test_failed_download_says_why_and_what_to_do(tmp_path: Path) -> None:
    def download(repo_id: str, filename: str) -> str:
        raise OSError("network is unreachable")

    with pytest.raises(ModelNotFound, match=r"network is unreachable.*955717e8\.safetensors"):
        locate(MODELS["htdemucs"], folders=[tmp_path], download=download, offline=False)


def test_hugging_face_cache_is_searched(tiny_models: Path, tmp_path: Path) -> None:
    # Given the files laid out as huggingface_hub caches them (HF_HOME is per test)
    snapshot = Path(os.environ["HF_HOME"]) / "hub" / "models--adefossez--HTDemucs"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text("abc123")
    files_dir = snapshot / "snapshots" / "abc123"
    files_dir.mkdir(parents=True)
    for name in ("htdemucs.yaml", "955717e8.safetensors"):
        shutil.copyfile(tiny_models / name, files_dir / name)
    # When looked up with no folder holding it, Then the cache copy is used
    found = find_installed(MODELS["htdemucs"], folders=[tmp_path])
    assert found is not None and found.origin.startswith("huggingface cache")
    load_bag(found)


def test_torch_hub_cache_is_searched(tiny_models: Path) -> None:
    # Given a checkpoint where older demucs versions download it
    hub = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    for path in tiny_models.glob("5c90dfd2-*.th"):
        shutil.copyfile(path, hub / path.name)
    # Then the default search finds it (bag file from demucs' own copy)
    found = find_installed(MODELS["htdemucs_6s"])
    assert found is not None and found.origin == str(hub) and found.bag_file is None
    assert list(load_bag(found).sources) == list(MODELS["htdemucs_6s"].sources)


def test_pickle_with_code_is_never_executed(tmp_path: Path) -> None:
    # Given a checkpoint with the right name and checksum whose pickle runs a command
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "models"
    folder.mkdir()
    from demucs.states import save_with_checksum

    save_with_checksum({"klass": Payload(), "state": {}}, folder / "955717e8.th")
    (folder / "htdemucs.yaml").write_text("models: ['955717e8']\n")
    # When it is loaded, Then it is refused and the command never ran
    with pytest.raises(ModelCorrupt, match="cannot be loaded safely"):
        LoadedModel.load(SeparationSettings(), folders=[folder], offline=True)
    assert not marker.exists()


def test_safetensors_naming_another_class_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    metadata = {"klass": "subprocess.Popen", "args": '["id"]', "kwargs": "{}"}
    save_file({"x": torch.zeros(1)}, str(folder / "955717e8.safetensors"), metadata=metadata)
    with pytest.raises(ModelCorrupt, match=r"subprocess\.Popen.*only demucs"):
        LoadedModel.load(SeparationSettings(), folders=[folder], offline=True)


def test_network_of_another_model_is_refused(tmp_path: Path) -> None:
    # Given a 6-source network saved under htdemucs' signature
    spec = MODELS["htdemucs"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_hf_form(tmp_path, spec, make_networks(MODELS["htdemucs_6s"]))
    with pytest.raises(ModelCorrupt, match="belongs to another model"):
        LoadedModel.load(SeparationSettings(), folders=[tmp_path], offline=True)


def test_truncated_safetensors_is_refused(tiny_models: Path, tmp_path: Path) -> None:
    shutil.copyfile(tiny_models / "htdemucs.yaml", tmp_path / "htdemucs.yaml")
    data = (tiny_models / "955717e8.safetensors").read_bytes()
    (tmp_path / "955717e8.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelCorrupt, match="cut short"):
        LoadedModel.load(SeparationSettings(), folders=[tmp_path], offline=True)


def test_cli_install_list_and_path(tiny_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given nothing installed
    assert main(["models", "list", "--json"]) == EXIT_OK
    assert not any(row["installed"] for row in json.loads(capsys.readouterr().out))
    # When the tiny models are installed from their folder
    assert main(["models", "install", "--from", str(tiny_models)]) == EXIT_OK
    capsys.readouterr()
    # Then they are listed as installed in the install folder, with their size
    assert main(["models", "list", "--json"]) == EXIT_OK
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    for name in ("htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi"):
        assert rows[name]["installed"] and rows[name]["where"] == str(install_folder())
        assert rows[name]["size_bytes"] > 0
    assert main(["models", "path"]) == EXIT_OK
    assert capsys.readouterr().out.strip() == str(install_folder())


def test_cli_install_refuses_a_corrupt_file_and_copies_nothing(
    tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "download"
    source.mkdir()
    for path in tiny_models.glob("5c90dfd2-*.th"):
        data = bytearray(path.read_bytes())
        data[100] ^= 0x01
        (source / path.name).write_bytes(bytes(data))
    assert main(["models", "install", "--from", str(source), "htdemucs_6s"]) == EXIT_MODEL
    assert "checksum mismatch" in capsys.readouterr().err
    assert not install_folder().exists() or not any(install_folder().iterdir())


def closed_port() -> int:
    """A local port nothing listens on: a connection to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_hub_is_told_at_once_with_the_offline_variable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given no weights on disk and a hub that refuses connections (no network here)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    # When the weights are looked for, downloads allowed
    with pytest.raises(ModelNotFound) as caught:
        locate(
            MODELS["htdemucs"],
            folders=[tmp_path],
            download=hub_download(endpoint=endpoint),
            offline=False,
        )
    # Then it says so in a moment, without huggingface_hub's retries (about 25 s)
    assert time.monotonic() - started < 2
    assert not [record for record in caplog.records if record.name.startswith("huggingface")]
    # And the one message names the endpoint, the offline variable and the files
    message = str(caught.value)
    assert f"{endpoint.removeprefix('http://')} cannot be reached" in message
    assert "set STEMBRIDGE_OFFLINE=1" in message
    assert "955717e8.safetensors" in message and "models install --from" in message


def test_the_reach_check_connects_to_the_proxy_when_one_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a proxy that refuses connections, in front of a hub whose name does not resolve
    port = closed_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    # Then the proxy is what is found unreachable (the hub's name is never looked up)
    with pytest.raises(HubUnreachable, match=rf"the proxy 127\.0\.0\.1:{port} \(for hub\.invalid"):
        check_reachable("http://hub.invalid")


def test_the_reach_check_passes_when_something_answers() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        check_reachable(f"http://127.0.0.1:{server.getsockname()[1]}", timeout_seconds=5)


def test_separate_without_weights_or_network_says_it_once(tmp_path: Path) -> None:
    # Given no weights, downloads allowed, and the hub's address refusing connections
    source = write_audio(tmp_path / "mix.wav", music(30000))
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{closed_port()}"
    # When a first run separates a file
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "separate", str(source), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    # Then one line says the model is missing, that the hub cannot be reached and what
    # to do; no download retries are logged before it
    assert result.returncode == EXIT_MODEL
    (line,) = result.stderr.strip().splitlines()
    assert "model htdemucs is not installed" in line and "cannot be reached" in line
    assert "STEMBRIDGE_OFFLINE=1" in line
    assert "Retrying" not in result.stderr


@pytest.mark.parametrize(
    ("make", "problem"), [(None, "does not exist"), ("file", "is not a folder")]
)
def test_cli_install_from_a_path_that_is_no_folder_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: str | None, problem: str
) -> None:
    source = tmp_path / "htdemucs"
    if make == "file":
        source.write_text("not a folder")
    assert main(["models", "install", "--from", str(source)]) == EXIT_MODEL
    err = capsys.readouterr().err
    assert f"{source}: the folder to install from {problem}" in err
    assert not install_folder().exists()
