"""Spleeter end to end: random-init models written as real TensorFlow checkpoints by
spleeter's own graph code (in the spleeter venv, ``tests/references/spleeter_env.sh``),
separated by ``stembridge separate`` without TensorFlow into the stems spleeter's own
``Separator`` gives on the same checkpoint and mix; the bad folders; the release
archive downloaded and checked as spleeter's ``GithubModelProvider`` does; and peak memory
that does not grow with the file.

The tolerance: TensorFlow's float32 STFT, U-Nets and inverse STFT against torch's on
the same weights differ by rounding only. Measured on 2026-12-01 (2-core AMD EPYC, the
mixes below, peak 0.5 to 0.6): the largest difference was 4.6e-6 of the mix's peak for
4stems, 6.3e-6 for 5stems-16kHz, 9.1e-6 for mono 2stems (RMS at most 1.8e-6); at the
released widths (benchmarks/spleeter.py, 60 s) 6.0e-6 and 1.3e-5. ``TOLERANCE`` (5e-5 of the
peak, -86 dB) leaves room for other CPUs' rounding (oneDNN picks kernels by instruction
set) and still catches mistakes, measured on the 4stems case: a symmetric Hann window
instead of the periodic one gives 5.6e-4, the 16 kHz cut-off 6.1e-2, segments one frame
late 0.22.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_family_memory import peak_rss, write_clip

from bridge.cli import EXIT_MODEL, EXIT_OK, EXIT_USAGE, main
from bridge.errors import ModelCorrupt
from bridge.models.catalog import SPLEETER_FILES, Archive, get_spec
from bridge.models.families.tf_checkpoint import checkpoint_prefix, read_checkpoint
from bridge.models.weights import download_url, locate_files

from signals import music, write_audio

RATE = 44100
TOLERANCE = 5e-5
#: Narrow U-Nets (spleeter's are 16 to 512 filters wide): same graph, fast to run.
FILTERS = [4, 8, 8, 8, 8, 8]
REFERENCES = Path(__file__).parent / "references"
# Read before any test's isolated HOME: the venv is cached across runs.
VENV = Path(
    os.environ.get("STEMBRIDGE_SPLEETER_VENV")
    or os.path.expanduser("~/.cache/stembridge-ci/spleeter-venv")
)


def spleeter_python() -> str:
    """The spleeter venv's python, made by spleeter_env.sh if needed (cached by its
    requirements' hash). Fails in CI, where .ci/run has made it; skips loudly elsewhere."""
    try:
        made = subprocess.run(
            ["bash", str(REFERENCES / "spleeter_env.sh"), str(VENV)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        made = subprocess.CompletedProcess([], 1, "", str(exc))
    if made.returncode == 0:
        return made.stdout.strip().splitlines()[-1]
    why = made.stderr.strip().splitlines()[-1:] or ["no output"]
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide the spleeter venv (tests/references/spleeter_env.sh): {why}")
    pytest.skip(f"THE SPLEETER REFERENCE VENV CANNOT BE MADE ({why[0]}): Spleeter parity untested")


@dataclass(frozen=True)
class Reference:
    """Models written by spleeter's graph code, mixes, and spleeter's stems of them."""

    models: Path
    mono_model: Path
    narrow_models: Path
    mixes: dict[str, np.ndarray]
    stems: dict[str, dict[str, np.ndarray]]


#: What the parity tests separate: (model, mix) -> the mix's ``(frames, channels)``.
CASES = {
    # two segments (11.9 s each), the second cut short
    "4stems": lambda: music(14 * RATE + 123, seed=1),
    # the softmax U-Net and the 16 kHz cut-off, one segment
    "5stems-16kHz": lambda: music(3 * RATE, seed=2),
    # LeakyReLU/ReLU U-Nets; mono is doubled and averaged back
    "2stems": lambda: music(5 * RATE, 1, seed=3),
}


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    python = spleeter_python()
    work = tmp_path_factory.mktemp("spleeter")
    models = work / "models"
    mono_model = work / "mono" / "2stems"
    written = [
        {"config": name, "folder": str(models / name), "seed": seed, "filters": FILTERS}
        for seed, name in enumerate(("2stems", "4stems", "5stems"))
    ]
    # A model for one channel: a checkpoint whose first layer does not fit the release's.
    written.append(
        {"config": "2stems", "folder": str(mono_model), "filters": FILTERS, "channels": 1}
    )
    # One filter a layer: the cheapest network, for the 10 minutes of the memory test.
    narrow = work / "narrow"
    written.append({"config": "2stems", "folder": str(narrow / "2stems"), "filters": [1] * 6})
    mixes = {name: make() for name, make in CASES.items()}
    separations = []
    for name, mix in mixes.items():
        np.save(work / f"{name}.npy", mix)
        folder = models / name.split("-")[0]
        separations.append(
            {
                "config": name,
                "folder": str(folder),
                "filters": FILTERS,
                "input": str(work / f"{name}.npy"),
                "output": str(work / f"{name}.npz"),
            }
        )
    jobs = work / "jobs.json"
    jobs.write_text(json.dumps({"models": written, "separations": separations}))
    run = subprocess.run(
        [python, str(REFERENCES / "spleeter_reference.py"), str(jobs)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    stems = {}
    for name in mixes:
        with np.load(work / f"{name}.npz") as saved:
            stems[name] = {stem: saved[stem] for stem in saved.files}
    return Reference(models, mono_model, narrow, mixes, stems)


@pytest.fixture
def installed(reference: Reference, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``STEMBRIDGE_MODEL_DIR`` holding the release folders, as spleeter's
    ``pretrained_models/`` does."""
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(reference.models))
    monkeypatch.setenv("STEMBRIDGE_OFFLINE", "1")
    return reference.models


def separate(tmp_path: Path, model: str, mix: np.ndarray, *flags: str) -> dict[str, np.ndarray]:
    """``stembridge separate`` of ``mix`` into float WAV; the stems by name."""
    source = write_audio(tmp_path / "mix.wav", mix, RATE, "FLOAT")
    out = tmp_path / "out"
    args = ["separate", str(source), "--model", model, "-o", str(out), "--no-pictures"]
    assert main([*args, "--bit-depth", "32", *flags]) == EXIT_OK
    manifest = json.loads((out / "mix" / "manifest.json").read_text())
    return {
        stem["name"]: sf.read(str(out / "mix" / stem["path"]), dtype="float32", always_2d=True)[0]
        for stem in manifest["stems"]
    }


@pytest.mark.parametrize("name", list(CASES))
def test_a_release_folder_separates_as_spleeter_does(
    reference: Reference, installed: Path, tmp_path: Path, name: str
) -> None:
    # Given a checkpoint spleeter wrote and the stems its Separator made of a mix
    mix, expected = reference.mixes[name], reference.stems[name]
    # When StemBridge separates the same mix with it (the model's raw output)
    stems = separate(tmp_path, f"spleeter:{name}", mix, "--no-exact-sum")
    # Then every stem is spleeter's, sample for sample, at the input's length and channels
    assert list(stems) == list(expected)
    peak = float(np.abs(mix).max())
    for stem, theirs in expected.items():
        if mix.shape[1] == 1:
            theirs = theirs.mean(axis=1, keepdims=True)
        assert stems[stem].shape == mix.shape
        np.testing.assert_allclose(stems[stem], theirs, atol=TOLERANCE * peak, rtol=0)


def test_stems_add_up_to_the_mix_and_keep_its_length(
    reference: Reference, installed: Path, tmp_path: Path
) -> None:
    # Given a mix that ends inside a segment
    mix = reference.mixes["5stems-16kHz"]
    # When it is separated with exact-sum (the default)
    stems = separate(tmp_path, "spleeter:5stems-16kHz", mix)
    # Then the stems have its length and add back to it
    total = sum(stems.values())
    assert all(stem.shape == mix.shape for stem in stems.values())
    assert np.abs(total - mix).max() < 1e-5
    manifest = json.loads((tmp_path / "out" / "mix" / "manifest.json").read_text())
    assert manifest["effects"]["stems_add_up"] is True


def refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str]:
    source = write_audio(tmp_path / "mix.wav", music(RATE))
    code = main(["separate", str(source), "-o", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
    return code, " ".join(err.split())


def test_bad_release_folders_are_refused_with_the_file_and_the_fix(
    reference: Reference,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    models = tmp_path / "models"
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(models))
    monkeypatch.setenv("STEMBRIDGE_OFFLINE", "1")
    # A folder missing a checkpoint file
    shutil.copytree(reference.models / "4stems", models / "4stems")
    (models / "4stems" / "model.index").unlink()
    code, err = refused(tmp_path, capsys, "--model", "spleeter:4stems")
    assert code == EXIT_MODEL
    assert str(models) in err and "lacks 4stems/model.index" in err and "4stems.tar.gz" in err
    # A 2stems checkpoint where 4stems should be
    shutil.rmtree(models / "4stems")
    shutil.copytree(reference.models / "2stems", models / "4stems")
    code, err = refused(tmp_path, capsys, "--model", "spleeter:4stems")
    assert code == EXIT_MODEL
    assert str(models / "4stems" / "model.index") in err
    assert "holds 2 instruments' U-Nets (the 2stems release)" in err
    assert "spleeter:4stems needs 4" in err and "put the 4stems release folder there" in err
    # A checkpoint whose shapes are not the model's (a U-Net for one channel)
    shutil.copytree(reference.mono_model, models / "2stems")
    code, err = refused(tmp_path, capsys, "--model", "spleeter:2stems")
    assert code == EXIT_MODEL and str(models / "2stems" / "model.index") in err
    assert "conv2d/kernel has shape [5, 5, 1, 4]" in err and "needs [5, 5, 2, 4]" in err
    # A data file cut short
    shutil.rmtree(models / "4stems")
    shutil.copytree(reference.models / "4stems", models / "4stems")
    data = models / "4stems" / "model.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    code, err = refused(tmp_path, capsys, "--model", "spleeter:4stems")
    assert code == EXIT_MODEL and str(data) in err and "cut short" in err
    # Spleeter's segments take no --overlap or --segment
    shutil.rmtree(models / "2stems")
    shutil.copytree(reference.models / "2stems", models / "2stems")
    code, err = refused(tmp_path, capsys, "--model", "spleeter:2stems", "--overlap", "0.5")
    assert code == EXIT_USAGE and "leave --overlap out" in err


def test_ten_minutes_peak_within_15_percent_of_one(
    reference: Reference, installed: Path, tmp_path: Path
) -> None:
    # Given 1 and 10 minutes of audio
    clips = {m: write_clip(tmp_path / f"{m}min.wav", m) for m in (1, 10)}
    # When each is separated by a narrow 2stems in a process of its own
    env = {**os.environ, "STEMBRIDGE_MODEL_DIR": str(reference.narrow_models)}
    short, long = (
        peak_rss(clips[m], tmp_path / f"out{m}", "--model", "spleeter:2stems", env=env)
        for m in (1, 10)
    )
    # Then the longer file's peak is within 15% of the shorter one's
    assert long <= short * 1.15, (short / 2**20, long / 2**20)


def test_a_release_is_downloaded_as_spleeter_does_and_checked(
    served: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = served
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(tmp_path / "installed"))
    # Given a release archive as spleeter's GitHub release has it (files under ./, and a
    # .probe), with the release's checksum index beside it
    contents = {"checkpoint": b'model_checkpoint_path: "model"\n', "model.index": b"index"}
    contents |= {"model.data-00000-of-00001": b"data", "model.meta": b"meta", ".probe": b"OK"}
    with tarfile.open(root / "2stems.tar.gz", "w:gz") as archive:
        for name, data in contents.items():
            member = tarfile.TarInfo(f"./{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    digest = hashlib.sha256((root / "2stems.tar.gz").read_bytes()).hexdigest()
    (root / "checksum.json").write_text(json.dumps({"2stems": digest, "4stems": "0" * 64}))
    spec = get_spec("spleeter:2stems")
    served = dataclasses.replace(
        spec, archive=Archive(url + "2stems.tar.gz", url + "checksum.json", "2stems")
    )
    # When it is located: downloaded, checked, and only the files read unpacked in place
    files = locate_files(served, fetch=download_url, offline=False)
    installed = tmp_path / "installed" / "2stems"
    assert files.paths == tuple(installed / name for name in SPLEETER_FILES)
    assert all(path.read_bytes() == contents[path.name] for path in files.paths)
    assert sorted(p.name for p in (tmp_path / "installed").iterdir()) == ["2stems"]
    assert sorted(p.name for p in installed.iterdir()) == sorted(SPLEETER_FILES)
    # And an archive that is not the published one is refused and nothing is kept
    shutil.rmtree(tmp_path / "installed")
    wrong = dataclasses.replace(
        spec, archive=Archive(url + "2stems.tar.gz", url + "checksum.json", "4stems")
    )
    with pytest.raises(ModelCorrupt, match="checksum mismatch"):
        locate_files(wrong, fetch=download_url, offline=False)
    assert not installed.exists()
    assert list((tmp_path / "installed").iterdir()) == []


def test_models_list_names_the_six_configurations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["models", "list", "--json"]) == EXIT_OK
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    names = [f"spleeter:{n}{s}" for n in ("2stems", "4stems", "5stems") for s in ("", "-16kHz")]
    assert all(rows[name]["family"] == "spleeter" for name in names)
    assert [rows[n]["stems"] for n in names[::2]] == [
        ["vocals", "accompaniment"],
        ["vocals", "drums", "bass", "other"],
        ["vocals", "piano", "drums", "bass", "other"],
    ]
    pairs = zip(names[::2], names[1::2], strict=True)
    assert all(rows[n]["stems"] == rows[m]["stems"] for n, m in pairs)
    (vocals, *_) = rows["spleeter:4stems"]["scores"]
    assert vocals["stem"] == "vocals" and "--mwf" in vocals["source"]


def test_files_that_are_not_a_checkpoint_are_refused_naming_them(tmp_path: Path) -> None:
    # Given a folder whose checkpoint file names nothing, then an index that is no table
    (tmp_path / "checkpoint").write_text('all_model_checkpoint_paths: "model"\n')
    with pytest.raises(ModelCorrupt, match="names no model_checkpoint_path") as refused:
        checkpoint_prefix(tmp_path)
    assert refused.value.path == tmp_path / "checkpoint"
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model"\n')
    prefix = checkpoint_prefix(tmp_path)
    (tmp_path / "model.index").write_bytes(b"\0" * 100)
    with pytest.raises(ModelCorrupt, match="not a TensorFlow checkpoint index") as refused:
        read_checkpoint(prefix)
    assert refused.value.path == tmp_path / "model.index"


def test_a_pretrained_models_folder_is_imported_and_separates_from_there(
    reference: Reference,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given spleeter's pretrained_models folder (2stems, 4stems, 5stems) and nothing
    # installed
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(tmp_path / "installed"))
    monkeypatch.setenv("STEMBRIDGE_OFFLINE", "1")
    # When it is imported
    assert main(["models", "import", str(reference.models), "--json"]) == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    # Then the six configurations are registered as the catalog's, from their release folders
    found = {model["name"]: model for model in result["models"]}
    releases = ("2stems", "4stems", "5stems")
    assert sorted(found) == sorted(f"spleeter:{r}{s}" for r in releases for s in ("", "-16kHz"))
    for name, model in found.items():
        release = name.removeprefix("spleeter:").split("-")[0]
        assert (model["family"], model["catalog"]) == ("spleeter", name)
        assert model["files"] == [
            str(reference.models.resolve() / release / file) for file in SPLEETER_FILES
        ]
    # And a configuration separates from there as spleeter does
    mix, expected = reference.mixes["4stems"], reference.stems["4stems"]
    stems = separate(tmp_path, "spleeter:4stems", mix, "--no-exact-sum")
    peak = float(np.abs(mix).max())
    for stem, theirs in expected.items():
        np.testing.assert_allclose(stems[stem], theirs, atol=TOLERANCE * peak, rtol=0)
    # And --copy puts each release folder in the install folder, where it is found
    assert main(["models", "import", str(reference.models), "--copy", "--json"]) == EXIT_OK
    copied = json.loads(capsys.readouterr().out)
    assert {model["name"] for model in copied["models"]} == set(found)
    for release in releases:
        for file in SPLEETER_FILES:
            source = reference.models / release / file
            assert (tmp_path / "installed" / release / file).read_bytes() == source.read_bytes()
