"""``stembridge separate`` end to end: formats kept, stems chosen, and every bad input refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.atomic import is_temporary
from bridge.cli import (
    EXIT_INPUT,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_USAGE,
    main,
)

from signals import music, write_audio


def separate(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["separate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def leftovers(folder: Path) -> list[str]:
    """Everything under ``folder`` (stems, manifests, temporary files)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize(
    ("name", "rate", "channels", "subtype"),
    [
        ("a.wav", 48000, 2, "PCM_24"),
        ("b.wav", 96000, 2, "FLOAT"),
        ("c.wav", 44100, 1, "PCM_16"),
        ("d.flac", 48000, 1, "PCM_24"),
        ("e.wav", 44100, 6, "PCM_24"),
        ("f.aiff", 22050, 2, "PCM_16"),
        ("g.mp3", 44100, 2, None),
        ("h.ogg", 48000, 2, None),
    ],
)
def test_stems_keep_rate_channels_format_and_exact_length(
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    rate: int,
    channels: int,
    subtype: str | None,
) -> None:
    # Given an input of some rate, channel count and sample format
    source = write_audio(
        tmp_path / name, music(int(1.7 * rate) + 3, channels, rate=rate), rate, subtype
    )
    info = sf.info(str(source))
    # When separated with defaults
    code, _, err = separate([str(source), "-o", str(tmp_path / "out")], capsys)
    # Then each stem has the input's rate, channels, container, sample format and length
    assert code == EXIT_OK, err
    folder = tmp_path / "out" / source.stem
    for stem in ("drums", "bass", "other", "vocals"):
        out = sf.info(str(folder / f"{stem}{source.suffix}"))
        assert (out.samplerate, out.channels, out.format, out.subtype, out.frames) == (
            info.samplerate,
            info.channels,
            info.format,
            info.subtype,
            info.frames,
        )
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["output"]["length_samples"] == info.frames
    assert manifest["input"]["frames"] == info.frames


def test_overrides_stems_and_json_result(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a 48 kHz 24-bit file
    source = write_audio(tmp_path / "take.wav", music(96000), 48000, "PCM_24")
    # When asked for vocals and instrumental as 16-bit 44.1 kHz FLAC, with a JSON result
    code, out, _ = separate(
        [
            str(source),
            "-o",
            str(tmp_path / "out"),
            "--stems",
            "vocals,instrumental",
            "--format",
            "flac",
            "--bit-depth",
            "16",
            "--sample-rate",
            "44100",
            "--start",
            "0.5",
            "--length",
            "1.0",
            "--json",
        ],
        capsys,
    )
    # Then exactly those files exist, in that format, for exactly that range
    assert code == EXIT_OK
    result = json.loads(out)
    assert result["ok"] and not result["errors"]
    (entry,) = result["results"]
    assert [stem["name"] for stem in entry["stems"]] == ["vocals", "instrumental"]
    assert entry["stems"][1]["sources"] == ["drums", "bass", "other"]
    assert entry["range"] == {
        "start_samples": 24000,
        "length_samples": 48000,
        "start_seconds": 0.5,
        "length_seconds": 1.0,
    }
    assert entry["output"]["offset_samples"] == 22050
    folder = tmp_path / "out" / "take"
    assert leftovers(folder) == [
        "instrumental.flac",
        "instrumental.spectrogram.png",
        "instrumental.waveform.png",
        "manifest.json",
        "vocals.flac",
        "vocals.spectrogram.png",
        "vocals.waveform.png",
    ]
    info = sf.info(str(folder / "vocals.flac"))
    assert (info.samplerate, info.subtype, info.frames) == (44100, "PCM_16", 44100)


def test_existing_stems_are_kept_and_the_job_numbers_its_folder_unless_overwrite(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_audio(tmp_path / "song.wav", music(44100))
    folder = tmp_path / "song"
    folder.mkdir()
    (folder / "vocals.wav").write_bytes(b"my edited vocals")
    # When separated into the folder that already has vocals.wav
    code, out, err = separate([str(source), "--stems", "vocals", "--json"], capsys)
    # Then the file is untouched and the stems go to "song (2)", as a daemon job's would
    assert code == EXIT_OK, err
    assert (folder / "vocals.wav").read_bytes() == b"my edited vocals"
    numbered = tmp_path / "song (2)"
    assert json.loads(out)["results"][0]["folder"] == str(numbered)
    assert sf.info(str(numbered / "vocals.wav")).frames == 44100
    # And the same run again finds its result there instead of separating once more
    code, out, _ = separate([str(source), "--stems", "vocals", "--json"], capsys)
    assert code == EXIT_OK and json.loads(out)["results"][0]["folder"] == str(numbered)
    assert not (tmp_path / "song (3)").exists()
    # And with --overwrite the file in "song" is replaced by a real stem
    code, _, _ = separate([str(source), "--stems", "vocals", "--overwrite"], capsys)
    assert code == EXIT_OK
    assert sf.info(str(folder / "vocals.wav")).frames == 44100


def test_one_bad_input_does_not_stop_the_others(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_audio(tmp_path / "good.wav", music(44100))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio")
    code, out, _ = separate([str(bad), str(good), "-o", str(tmp_path / "out"), "--json"], capsys)
    result = json.loads(out)
    assert code == EXIT_INPUT and not result["ok"]
    assert [e["input"] for e in result["errors"]] == [str(bad)]
    assert len(result["results"]) == 1 and (tmp_path / "out" / "good" / "manifest.json").exists()


def _truncated(path: Path) -> Path:
    write_audio(path, music(44100), subtype="PCM_24")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


BAD_INPUTS = {
    "not-audio": (lambda p: (p.write_bytes(b"RIFF....not really a wave"), p)[1], "not audio"),
    "truncated": (_truncated, "truncated"),
    "zero-length": (lambda p: (p.write_bytes(b""), p)[1], "empty"),
    "missing": (lambda p: p, "no such file"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_files_are_refused_cleanly(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    make, reason = BAD_INPUTS[case]
    source = make(tmp_path / "input.wav")
    code, _, err = separate([str(source), "-o", str(tmp_path / "out")], capsys)
    assert code == EXIT_INPUT
    assert str(source) in err and reason in err
    assert leftovers(tmp_path / "out") == []


@pytest.mark.parametrize(
    ("flags", "expected_code", "message"),
    [
        (["--model", "spleeter"], EXIT_USAGE, "unknown model 'spleeter'; choose one of htdemucs"),
        (["--stems", "guitar"], EXIT_USAGE, "unknown stem 'guitar'"),
        (["--device", "cuda"], EXIT_USAGE, "CUDA is not available"),
        (["--start", "5"], EXIT_INPUT, "at or after the end of the file"),
        (["--start", "0.5", "--length", "2"], EXIT_INPUT, "ends after the end of the file"),
        (["--format", "flac", "--bit-depth", "32"], EXIT_USAGE, "FLAC holds at most 24-bit"),
        (["--segment", "20"], EXIT_USAGE, "longer than htdemucs's 7.8 s training segment"),
        (["--precision", "fp16", "--device", "cpu"], EXIT_USAGE, "needs a CUDA device"),
        (
            ["--shifts", "21"],
            EXIT_USAGE,
            "shifts = 21 is not allowed; use a whole number from 0 to 20",
        ),
        (["--overlap", "nan"], EXIT_USAGE, "overlap = nan is not allowed; use a number from 0"),
        (["--segment", "0.5"], EXIT_USAGE, "segment_seconds = 0.5 is not allowed; use a number"),
        (["--bitrate", "128", "--quality", "2"], EXIT_USAGE, "give either a constant MP3 bitrate"),
        (["--stems", "vocals,vocals"], EXIT_USAGE, "stem 'vocals' is requested twice"),
    ],
)
def test_bad_settings_are_refused_cleanly(
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    expected_code: int,
    message: str,
) -> None:
    source = write_audio(tmp_path / "in.wav", music(44100))
    code, _, err = separate([str(source), "-o", str(tmp_path / "out"), *flags], capsys)
    assert code == expected_code
    assert message in " ".join(err.split())
    assert leftovers(tmp_path / "out") == []


def test_missing_weights_are_refused_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no weights anywhere and downloads off
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(tmp_path / "no-models"))
    source = write_audio(tmp_path / "in.wav", music(44100))
    # When separating
    code, _, err = separate([str(source), "-o", str(tmp_path / "out")], capsys)
    # Then one message names the files and the folder, and nothing is written
    text = " ".join(err.split())
    assert code == EXIT_MODEL
    assert "model htdemucs is not installed" in text and "955717e8.safetensors" in text
    assert str(tmp_path / "no-models") in text
    assert leftovers(tmp_path / "out") == []


def run_unprivileged(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a process that file permissions apply to (root keeps no override)."""
    command = [sys.executable, "-m", "bridge", *args]
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_unreadable_input_is_refused(model_dir: Path, tmp_path: Path) -> None:
    source = write_audio(tmp_path / "locked.wav", music(44100))
    source.chmod(0)
    result = run_unprivileged(["separate", str(source), "-o", str(tmp_path / "out")])
    assert result.returncode == EXIT_INPUT
    assert "locked.wav: cannot be read (Permission denied); check its permissions" in " ".join(
        result.stderr.split()
    )
    assert leftovers(tmp_path / "out") == []


def test_unwritable_output_folder_is_refused(model_dir: Path, tmp_path: Path) -> None:
    source = write_audio(tmp_path / "in.wav", music(44100))
    target = tmp_path / "readonly"
    target.mkdir()
    target.chmod(0o555)
    result = run_unprivileged(["separate", str(source), "-o", str(target)])
    assert result.returncode == EXIT_OUTPUT
    assert "cannot write stems here (Permission denied)" in " ".join(result.stderr.split())
    assert list(target.iterdir()) == []


def test_python_m_bridge_runs_the_same_command(model_dir: Path, tmp_path: Path) -> None:
    source = write_audio(tmp_path / "in.wav", music(30000))
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "separate", str(source), "--stems", "vocals", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == EXIT_OK, result.stderr
    payload = json.loads(result.stdout)
    stem = tmp_path / "in" / payload["results"][0]["stems"][0]["path"]
    data, rate = sf.read(str(stem))
    assert rate == 44100 and data.shape == (30000, 2) and np.isfinite(data).all()
    assert not [p for p in (tmp_path / "in").iterdir() if is_temporary(p)]
