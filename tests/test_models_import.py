"""``stembridge models import``: UVR's and python-audio-separator's model folders, laid out
as those tools lay them out with tiny real models, registered where they are (or
copied), then listed, found by the loader and separated with by their file names."""

from __future__ import annotations

import json
import shutil
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bridge.cli import EXIT_MODEL, EXIT_OK, EXIT_USAGE, main
from bridge.models import catalog, registry
from bridge.models.catalog import MODELS, get_spec
from bridge.models.families.uvr_params import sidecar_path, uvr_hash
from bridge.models.registry import ImportedFolder, ImportedModel, read_registry, registry_path
from bridge.models.weights import install_folder, locate

from test_families import CHUNK, bs_roformer, mdx23c, mel_band_roformer, mix_of, ours
from test_mdx_net import SMALL, write_model

MDX23C = MODELS["mdx23c_instvoc_hq"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``stembridge ARGV``: its exit code, stdout and stderr (lines joined)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


def imported(capsys: pytest.CaptureFixture[str], folder: Path, *flags: str) -> dict[str, Any]:
    code, out, err = run(capsys, "models", "import", str(folder), "--json", *flags)
    assert code == EXIT_OK, err
    return json.loads(out)


def listed(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    code, out, err = run(capsys, "models", "list", "--json")
    assert code == EXIT_OK, err
    return {row["name"]: row for row in json.loads(out)}


def uvr_folder(root: Path, tiny_models: Path) -> Path:
    """UVR's ``models`` folder: MDX-Net, MDX23C and RoFormer models with their
    ``model_data``, demucs v4 in ``v3_v4_repo``, a v2 demucs and a VR model beside."""
    models = root / "Ultimate Vocal Remover" / "models"
    mdx = models / "MDX_Net_Models"
    configs = mdx / "model_data" / "mdx_c_configs"
    configs.mkdir(parents=True)
    # A RoFormer UVR knows by its hash: model_data.json names its config
    roformer = bs_roformer(mdx, name="my_bs_roformer")
    roformer.with_suffix(".yaml").rename(configs / "config_my_bs_roformer.yaml")
    # The catalog's MDX23C under its UVR name, its config under the catalog's config name
    checkpoint = mdx23c(mdx)
    checkpoint.rename(mdx / MDX23C.files[0].name)
    checkpoint.with_suffix(".yaml").rename(configs / MDX23C.files[1].name)
    # An MDX-Net model only this folder's table knows (as UVR writes it: extra flags too)
    onnx = write_model(mdx, "my_mdx_net", sidecar=False)
    table = {
        uvr_hash(roformer): {"config_yaml": "config_my_bs_roformer.yaml", "is_roformer": True},
        uvr_hash(onnx): {**SMALL, "is_karaoke": False},
    }
    (mdx / "model_data" / "model_data.json").write_text(json.dumps(table), encoding="utf-8")
    # A checkpoint without a config, an .onnx nobody has parameters for
    torch.save({"weight": torch.zeros(2)}, mdx / "lonely.ckpt")
    (mdx / "unknown.onnx").write_bytes(b"\x08\x07" * 64)
    # demucs v4 as UVR keeps it, a demucs v2 file and a VR model
    repo = models / "Demucs_Models" / "v3_v4_repo"
    repo.mkdir(parents=True)
    for path in (tiny_models / "hdemucs_mmi.yaml", *tiny_models.glob("75fc33f5-*.th")):
        shutil.copyfile(path, repo / path.name)
    (models / "Demucs_Models" / "demucs_extra.th").write_bytes(b"v2")
    (models / "VR_Models").mkdir()
    (models / "VR_Models" / "1_HP-UVR.pth").write_bytes(b"vr")
    return models


def separator_folder(root: Path, tiny_models: Path) -> Path:
    """python-audio-separator's flat folder: each .ckpt beside its .yaml (paired by its
    download_checks.json or by name), .onnx files, demucs files, UVR's table."""
    folder = root / "audio-separator-models"
    mel = mel_band_roformer(folder)
    mel.with_suffix(".yaml").rename(folder / "config_tiny_mel.yaml")
    checks = {"roformer_download_list": {"Tiny Mel": {mel.name: "config_tiny_mel.yaml"}}}
    (folder / "download_checks.json").write_text(json.dumps(checks), encoding="utf-8")
    bs_roformer(folder, name="tiny_bs")
    write_model(folder, "with_sidecar", seed=1)
    from_table = write_model(folder, "from_table", sidecar=False, seed=2)
    table = {uvr_hash(from_table): {**SMALL, "primary_stem": "Instrumental"}}
    (folder / "mdx_model_data.json").write_text(json.dumps(table), encoding="utf-8")
    for path in (tiny_models / "htdemucs_6s.yaml", *tiny_models.glob("5c90dfd2-*.th")):
        shutil.copyfile(path, folder / path.name)
    return folder


def test_a_uvr_folder_is_registered_where_it_is(
    tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given UVR's models folder, with a link to a model outside it
    models = uvr_folder(tmp_path, tiny_models)
    elsewhere = bs_roformer(tmp_path / "elsewhere", name="outside")
    (models / "MDX_Net_Models" / "outside.ckpt").symlink_to(elsewhere)
    (models / "linked_folder").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    before = sorted(str(path) for path in models.rglob("*"))
    # When it is imported
    result = imported(capsys, models)
    # Then each model StemBridge runs is registered, with its family, stems and catalog name
    found = {model["name"]: model for model in result["models"]}
    assert sorted(found) == [
        MDX23C.files[0].name,
        "hdemucs_mmi",
        "my_bs_roformer.ckpt",
        "my_mdx_net.onnx",
    ]
    mdx = models.resolve() / "MDX_Net_Models"
    configs = mdx / "model_data" / "mdx_c_configs"
    assert found["my_bs_roformer.ckpt"] == {
        "name": "my_bs_roformer.ckpt",
        "family": "bs_roformer",
        "stems": ["vocals", "instrumental"],
        "catalog": None,
        "files": [str(mdx / "my_bs_roformer.ckpt"), str(configs / "config_my_bs_roformer.yaml")],
        "found": "config config_my_bs_roformer.yaml in model_data/mdx_c_configs (named by "
        "model_data.json)",
    }
    assert found[MDX23C.files[0].name]["catalog"] == "mdx23c_instvoc_hq"
    assert found[MDX23C.files[0].name]["files"][1] == str(configs / MDX23C.files[1].name)
    assert found["hdemucs_mmi"]["family"] == "demucs"
    assert found["hdemucs_mmi"]["catalog"] == "hdemucs_mmi"
    # (the MDX-Net model's parameters from the table, kept in a sidecar beside a link)
    onnx = found["my_mdx_net.onnx"]
    assert (onnx["family"], onnx["stems"], onnx["catalog"]) == (
        "mdx_net",
        ["vocals", "instrumental"],
        None,
    )
    link = Path(onnx["files"][0])
    assert link.is_symlink() and link.resolve() == mdx / "my_mdx_net.onnx"
    assert json.loads(sidecar_path(link).read_text()) == SMALL
    # And every other file is named with why it was passed over
    skipped = {Path(item["path"]).name: item["reason"] for item in result["skipped"]}
    assert sorted(skipped) == [
        "1_HP-UVR.pth",
        "demucs_extra.th",
        "linked_folder",
        "lonely.ckpt",
        "outside.ckpt",
        "unknown.onnx",
    ]
    assert "VR architecture" in skipped["1_HP-UVR.pth"]
    assert "not a network of a demucs model StemBridge runs" in skipped["demucs_extra.th"]
    assert "symbolic link out of the folder" in skipped["outside.ckpt"]
    assert "symbolic link out of the folder" in skipped["linked_folder"]
    assert "no config" in skipped["lonely.ckpt"] and "lonely.yaml" in skipped["lonely.ckpt"]
    assert f"unknown UVR hash {uvr_hash(mdx / 'unknown.onnx')}" in skipped["unknown.onnx"]
    assert "unknown.json" in skipped["unknown.onnx"]
    # And nothing was copied, changed or added in the folder
    assert sorted(str(path) for path in models.rglob("*")) == before
    assert not install_folder().exists()
    # And the registry holds the folder once, resolved
    (entry,) = read_registry()
    assert entry.folder == models.resolve() and entry.copied_to is None


def test_imported_models_are_listed_and_found_by_the_loader(
    tiny_models: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given nothing installed, then UVR's folder imported
    assert not listed(capsys)["mdx23c_instvoc_hq"]["installed"]
    models = uvr_folder(tmp_path, tiny_models)
    imported(capsys, models)
    # Then the catalog models whose files are there count as installed, from there
    rows = listed(capsys)
    for name in ("mdx23c_instvoc_hq", "hdemucs_mmi"):
        assert rows[name]["installed"] is True and rows[name]["catalog"] is True
        assert rows[name]["where"].startswith("imported (") and rows[name]["size_bytes"] > 0
    assert rows["htdemucs"]["installed"] is False
    # And the demucs one is where the loader looks for it
    located = locate(MODELS["hdemucs_mmi"], offline=True)
    assert located.networks[0].parent == models.resolve() / "Demucs_Models" / "v3_v4_repo"
    # And the models only the import knows are listed under their file names
    for name, family in (("my_bs_roformer.ckpt", "bs_roformer"), ("my_mdx_net.onnx", "mdx_net")):
        row = rows[name]
        assert (row["catalog"], row["family"], row["installed"]) == (False, family, True)
        assert row["where"].startswith("imported (") and row["size_bytes"] > 0
    # And the table says so too (wide enough not to wrap the names)
    monkeypatch.setenv("COLUMNS", "300")
    code, out, _ = run(capsys, "models", "list")
    assert code == EXIT_OK and "my_bs_roformer.ckpt" in out
    code, _, err = run(capsys, "models", "path")
    assert code == EXIT_OK and f"{models.resolve()} (imported)" in err


def test_imported_models_separate_by_their_file_names(
    tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given UVR's folder imported, and the same models as files given by path
    imported(capsys, uvr_folder(tmp_path / "uvr", tiny_models))
    direct = tmp_path / "direct"
    roformer = bs_roformer(direct, name="my_bs_roformer")
    onnx = write_model(direct, "my_mdx_net")
    checkpoint = mdx23c(direct)
    mix = mix_of(CHUNK + 321, seed=5)
    # When each is separated by the name the import gave it (or its catalog name)
    for name, path in (
        ("my_bs_roformer.ckpt", roformer),
        ("my_mdx_net.onnx", onnx),
        ("mdx23c_instvoc_hq", checkpoint),
    ):
        by_name = ours(tmp_path / "a" / name, name, mix)
        by_path = ours(tmp_path / "b" / name, str(path), mix)
        # Then it is the same model
        assert sorted(by_name) == sorted(by_path) and len(by_name) == 2
        for stem in by_name:
            np.testing.assert_array_equal(by_name[stem], by_path[stem])
    # And the spec the name gives is the imported one
    spec = get_spec("my_bs_roformer.ckpt")
    assert (spec.family, spec.sources, spec.local) == (
        "bs_roformer",
        ("vocals", "instrumental"),
        True,
    )


def test_an_audio_separator_folder_is_registered(
    tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given python-audio-separator's flat folder
    folder = separator_folder(tmp_path, tiny_models)
    # When it is imported
    result = imported(capsys, folder)
    # Then each checkpoint has its config, each .onnx its parameters, demucs its files
    found = {model["name"]: model for model in result["models"]}
    assert sorted(found) == [
        "from_table.onnx",
        "htdemucs_6s",
        "tiny_bs.ckpt",
        "tiny_mel_band_roformer.ckpt",
        "with_sidecar.onnx",
    ]
    mel = found["tiny_mel_band_roformer.ckpt"]
    assert mel["files"][1] == str(folder.resolve() / "config_tiny_mel.yaml")
    assert "download_checks.json" in mel["found"]
    assert (mel["family"], mel["stems"]) == (
        "mel_band_roformer",
        ["vocals", "drums", "bass", "other"],
    )
    assert found["tiny_bs.ckpt"]["files"][1] == str(folder.resolve() / "tiny_bs.yaml")
    assert found["with_sidecar.onnx"]["files"] == [str(folder.resolve() / "with_sidecar.onnx")]
    assert found["with_sidecar.onnx"]["stems"] == ["vocals", "instrumental"]
    assert found["from_table.onnx"]["stems"] == ["instrumental", "vocals"]
    assert "mdx_model_data.json" in found["from_table.onnx"]["found"]
    assert found["htdemucs_6s"]["catalog"] == "htdemucs_6s"
    assert result["skipped"] == []
    # And a model of it separates by its file name
    stems = ours(tmp_path, "from_table.onnx", mix_of(20_000, seed=6))
    assert sorted(stems) == ["instrumental", "vocals"]


def test_importing_a_folder_again_updates_its_entry(
    tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two folders imported
    folder = separator_folder(tmp_path, tiny_models)
    other = tmp_path / "other"
    bs_roformer(other, name="other_bs")
    imported(capsys, folder)
    imported(capsys, other)
    # When one changes (a model gone, one added) and is imported again, by another path
    (folder / "tiny_bs.ckpt").unlink()
    write_model(folder, "added", seed=3)
    imported(capsys, tmp_path / "." / folder.name)
    # Then it keeps its one entry, in its place, with what it now holds
    entries = read_registry()
    assert [entry.folder for entry in entries] == [folder.resolve(), other.resolve()]
    names = {model.name for model in entries[0].models}
    assert "added.onnx" in names and "tiny_bs.ckpt" not in names
    assert [model.name for model in entries[1].models] == ["other_bs.ckpt"]


def test_copy_puts_the_files_in_the_install_folder(
    tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given UVR's folder
    models = uvr_folder(tmp_path / "uvr", tiny_models)
    # When it is imported with --copy
    result = imported(capsys, models, "--copy")
    # Then the files are in the install folder under the names they are searched by
    target = install_folder()
    assert result["copied_to"] == str(target)
    found = {model["name"]: model for model in result["models"]}
    assert found[MDX23C.files[0].name]["files"] == [
        str(target / file.name) for file in MDX23C.files
    ]
    assert found["my_bs_roformer.ckpt"]["files"] == [
        str(target / "my_bs_roformer.ckpt"),
        str(target / "my_bs_roformer.yaml"),
    ]
    source = models / "MDX_Net_Models" / "my_bs_roformer.ckpt"
    assert (target / "my_bs_roformer.ckpt").read_bytes() == source.read_bytes()
    # (the parameters only UVR's table had are beside the copy)
    assert json.loads((target / "my_mdx_net.json").read_text()) == SMALL
    assert not (target / "my_mdx_net.onnx").is_symlink()
    # And without the UVR folder, the models are still installed and still run
    shutil.rmtree(tmp_path / "uvr")
    rows = listed(capsys)
    assert rows["mdx23c_instvoc_hq"]["where"] == str(target)
    assert rows["hdemucs_mmi"]["installed"] and rows["my_mdx_net.onnx"]["installed"]
    stems = ours(tmp_path, "my_mdx_net.onnx", mix_of(20_000, seed=7))
    assert sorted(stems) == ["instrumental", "vocals"]


def test_copy_keeps_a_different_file_already_installed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a model file of the same name, but other content, in the install folder
    folder = tmp_path / "download"
    bs_roformer(folder, name="taken")
    install_folder().mkdir(parents=True)
    (install_folder() / "taken.ckpt").write_bytes(b"mine")
    # When a folder holding it is copied in
    code, _, err = run(capsys, "models", "import", str(folder), "--copy")
    # Then the installed file is kept and the model is skipped, saying so
    assert code == EXIT_OK
    assert "a different taken.ckpt is already in" in err and "0 model(s)" in err
    assert (install_folder() / "taken.ckpt").read_bytes() == b"mine"


def test_bad_folders_are_refused_with_what_was_looked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A folder that does not exist
    code, _, err = run(capsys, "models", "import", str(tmp_path / "nowhere"))
    assert (
        code == EXIT_MODEL and f"{tmp_path / 'nowhere'}: the folder to import does not exist" in err
    )
    # A folder with nothing StemBridge runs: what was looked for, and why files were passed
    empty = tmp_path / "vr_only"
    empty.mkdir()
    (empty / "notes.txt").write_text("models")
    (empty / "5_HP-Karaoke-UVR.pth").write_bytes(b"vr")
    code, _, err = run(capsys, "models", "import", str(empty))
    assert code == EXIT_MODEL
    assert "no model StemBridge can run was found; looked for MSST checkpoints" in err
    assert "UVR MDX-Net models (.onnx" in err and "htdemucs" in err
    assert "5_HP-Karaoke-UVR.pth: a VR architecture model" in err
    # And nothing was registered
    assert not registry_path().exists()


def test_a_damaged_registry_is_refused_naming_it_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a registry that is not one
    path = registry_path()
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 1, "folders": [{"folder": 3}]}')
    folder = tmp_path / "models"
    bs_roformer(folder)
    # Then importing, listing and naming an imported model refuse it, naming the file and fix
    for argv in (
        ("models", "import", str(folder)),
        ("models", "list"),
        ("separate", str(tmp_path / "mix.wav"), "--model", "tiny_bs_roformer.ckpt"),
    ):
        code, _, err = run(capsys, *argv)
        assert code == EXIT_MODEL, argv
        assert f"{path}: the registry of imported model folders cannot be read" in err
        assert "delete it and import the folders again" in err and "Traceback" not in err
    # And it was left as it was
    assert path.read_text() == '{"version": 1, "folders": [{"folder": 3}]}'
    # And catalog names (and their typos) do not depend on it
    assert get_spec("htdemucs").name == "htdemucs"
    code, _, err = run(capsys, "separate", str(tmp_path / "mix.wav"), "--model", "htdemcus")
    assert code == EXIT_USAGE and "unknown model 'htdemcus'" in err


def test_a_model_whose_file_is_gone_says_to_import_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an imported model whose checkpoint was deleted since
    folder = tmp_path / "models"
    checkpoint = bs_roformer(folder)
    imported(capsys, folder)
    checkpoint.unlink()
    # Then naming it says which file is gone and what to do
    code, _, err = run(capsys, "separate", str(tmp_path / "mix.wav"), "--model", checkpoint.name)
    assert code == EXIT_MODEL
    assert (
        f"was imported from {folder.resolve()}, but {checkpoint.resolve()} is no longer there"
        in err
    )
    assert "import the folder again" in err
    # And the list shows it as not installed
    assert listed(capsys)[checkpoint.name]["installed"] is False


def test_the_registry_round_trips_and_replaces_a_folder_by_path(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    model = ImportedModel(
        "a.ckpt", "mdx23c", ("vocals", "instrumental"), (tmp_path / "a.ckpt", tmp_path / "a.yaml")
    )
    first = ImportedFolder(tmp_path / "one", (model,))
    registry.record(first, path=path)
    registry.record(ImportedFolder(tmp_path / "two", (), tmp_path / "copies"), path=path)
    registry.record(ImportedFolder(tmp_path / "one", ()), path=path)
    assert read_registry(path) == (
        ImportedFolder(tmp_path / "one", ()),
        ImportedFolder(tmp_path / "two", (), tmp_path / "copies"),
    )
    registry.record(first, path=path)
    assert read_registry(path)[0] == first


def test_the_registry_s_families_are_the_catalog_s() -> None:
    assert set(typing.get_args(registry.Family)) <= set(typing.get_args(catalog.Family))
    assert set(typing.get_args(registry.Family)) >= {
        spec.family for spec in MODELS.values() if spec.family != "ensemble"
    }
