"""``stembridge models list --installed``: what host scripts and the dashboard offer to
choose from: the installed catalog models, named ensembles whose models are all
installed, and imported models whose files are there; read without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.cli import EXIT_OK, main
from bridge.models.catalog import MODELS
from bridge.models.registry import ImportedFolder, ImportedModel, record

ROOT = Path(__file__).resolve().parents[1]


def listed(capsys: pytest.CaptureFixture[str], *flags: str) -> list[dict[str, Any]]:
    assert main(["models", "list", "--json", *flags]) == EXIT_OK
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


def place_files(folder: Path, *names: str) -> None:
    """The files of catalog models, present (the listing looks for them, it does not
    load them)."""
    for name in names:
        for file in MODELS[name].files:
            (folder / file.name).write_bytes(b"weights of " + name.encode())


@pytest.fixture
def other_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """python-audio-separator's model folder, which is searched too: empty at first."""
    folder = tmp_path / "audio-separator"
    folder.mkdir()
    monkeypatch.setenv("AUDIO_SEPARATOR_MODEL_DIR", str(folder))
    return folder


def test_nothing_installed_lists_nothing(
    capsys: pytest.CaptureFixture[str], other_tools: Path
) -> None:
    assert listed(capsys, "--installed") == []
    assert len(listed(capsys)) == len(MODELS)


def test_only_installed_models_and_complete_ensembles_are_listed(
    model_dir: Path, capsys: pytest.CaptureFixture[str], other_tools: Path
) -> None:
    # Given the tiny demucs models, and the two models of vocals-best, but only one of
    # instrumental-best's (uvr_mdx_inst_hq_4 is missing)
    place_files(other_tools, "bs_roformer_viperx_1297", "mdx23c_instvoc_hq")
    # When the installed models are listed
    rows = listed(capsys, "--installed")
    # Then those are, in catalog order, each as the full listing has it
    names = [row["name"] for row in rows]
    assert names == [
        "htdemucs",
        "htdemucs_ft",
        "htdemucs_6s",
        "hdemucs_mmi",
        "bs_roformer_viperx_1297",
        "mdx23c_instvoc_hq",
        "vocals-best",
    ]
    assert all(row["installed"] and row["size_bytes"] > 0 for row in rows)
    best = rows[names.index("vocals-best")]
    assert best["members"] == ["bs_roformer_viperx_1297", "mdx23c_instvoc_hq"]
    assert (best["family"], best["stems"], best["where"]) == (
        "ensemble",
        ["vocals", "instrumental"],
        "its models'",
    )
    assert rows[0]["stems"] == ["drums", "bass", "other", "vocals"]
    assert rows[0]["where"] == str(model_dir)
    assert rows[names.index("mdx23c_instvoc_hq")]["where"] == str(other_tools)


def test_imported_models_are_listed_while_their_files_are_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], other_tools: Path
) -> None:
    # Given an imported folder with two models only the import knows; one's config is gone
    folder = tmp_path / "UVR models"
    folder.mkdir()
    weights = [folder / "mine.ckpt", folder / "gone.ckpt"]
    for path in weights:
        path.write_bytes(b"w" * 10)
    (folder / "mine.yaml").write_text("audio: {}\n", encoding="utf-8")

    def model(path: Path) -> ImportedModel:
        return ImportedModel(
            name=path.name,
            family="bs_roformer",
            stems=("vocals", "other"),
            files=(path, path.with_suffix(".yaml")),
            found="config beside it",
        )

    record(ImportedFolder(folder=folder, models=(model(weights[0]), model(weights[1]))))
    # When the installed models are listed
    rows = listed(capsys, "--installed")
    # Then the one whose files are all there is, shaped as a catalog model's row
    (row,) = rows
    assert row["name"] == "mine.ckpt" and row["catalog"] is False
    assert (row["family"], row["stems"], row["members"], row["ensemble"]) == (
        "bs_roformer",
        ["vocals", "other"],
        [],
        None,
    )
    assert row["size_bytes"] == 10 + len("audio: {}\n")
    assert set(row) == set(listed(capsys)[0])
    # and the full listing still shows the other, not installed
    assert {r["name"]: r["installed"] for r in listed(capsys) if not r["catalog"]} == {
        "mine.ckpt": True,
        "gone.ckpt": False,
    }


def test_the_table_lists_only_installed_models_too(
    model_dir: Path, capsys: pytest.CaptureFixture[str], other_tools: Path
) -> None:
    assert main(["models", "list", "--installed"]) == EXIT_OK
    table = capsys.readouterr().out
    assert "hdemucs_mmi" in table and "bs_roformer_viperx_1297" not in table


def test_listing_installed_models_loads_no_torch(model_dir: Path, tmp_path: Path) -> None:
    # Host scripts run it before each dialog: it must not pay for torch
    code = (
        "import sys\n"
        "from bridge.cli import main\n"
        "assert main(['models', 'list', '--json', '--installed']) == 0\n"
        "heavy = [m for m in ('torch', 'demucs', 'onnxruntime') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AUDIO_SEPARATOR_MODEL_DIR": str(tmp_path / "none"),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert [row["name"] for row in json.loads(result.stdout)][:1] == ["htdemucs"]
