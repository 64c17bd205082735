"""The Ardour action's logic in headless Ardour 7 (``ardour7-lua``), with a real daemon.

A session is made by Ardour, a test file put in it (see ``ardour_sessions``), and a
region of it placed at a known position with a non-zero start offset. The library the
editor action uses then plans, submits, waits, makes the grouped stem tracks and mutes
the original; the stems go into the session as files and Ardour puts one region of each
on its track with the library's ``place``. Everything is checked in the ``.ardour`` file
Ardour saved, and in the samples Ardour reads back from the stem regions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.hosts.ardour import install
from bridge.jobs.lock import daemon_running

from ardour_sessions import add_audio_file, read_tracks, source_files
from processes import DaemonProcess, default_config, wait_for
from programs import required_program
from signals import music, write_audio

DRIVERS = Path(__file__).resolve().parent / "ardour"
DASH = " \u2013 "
RATE = 48000
REGION = 'Vox "take" ü'
OFFSET, POSITION, LENGTH = 12_345, 96_000, 40_000  # samples
READ = 4096  # samples per channel read back through Ardour


@pytest.fixture(scope="module")
def ardour_lua() -> str:
    return required_program(
        "ardour7-lua", package="ardour", purpose="the Ardour scripts are not run in Ardour"
    )


@pytest.fixture
def daemon(tmp_path: Path, model_dir: Path) -> Iterator[DaemonProcess]:
    config = default_config(tmp_path / "state")
    process = DaemonProcess(["serve", "--config", str(config)], tmp_path / "daemon.log")
    wait_for(lambda: daemon_running(tmp_path / "state"), what="the daemon to start")
    yield process
    process.stop()


def run_ardour(ardour_lua: str, driver: str, env: dict[str, str], cwd: Path) -> str:
    """Run one driver script in headless Ardour; fail with its output if it fails."""
    result = subprocess.run(
        [ardour_lua, str(DRIVERS / driver)],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{driver} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.parametrize(
    ("split", "mute"),
    [(False, True), (True, False)],
    ids=["one-stereo-file-mute", "a-file-per-channel-keep"],
)
def test_a_region_becomes_grouped_stem_tracks_at_its_exact_place(
    ardour_lua: str, tmp_path: Path, daemon: DaemonProcess, split: bool, mute: bool
) -> None:
    # Given the scripts as `stembridge ardour install` puts them
    scripts = tmp_path / "ardour7" / "scripts"
    install(scripts, command=[sys.executable, "-m", "bridge"])
    # and a session made by Ardour, holding a 3 s take: as one stereo file, or as one mono
    # file per channel (as Ardour's own import stores it)
    session_dir, name = tmp_path / "My Session", "song"
    env = {
        "SB_DIR": str(session_dir),
        "SB_NAME": name,
        "SB_RATE": str(RATE),
        "SB_LIB": str(scripts / "stembridge_ardour_lib.lua"),
        "SB_SCRIPTS": str(scripts),
    }
    started = time.monotonic()
    run_ardour(ardour_lua, "create_session.lua", env, tmp_path)
    session = session_dir / f"{name}.ardour"
    take = write_audio(tmp_path / "take.wav", music(3 * RATE, rate=RATE, seed=7), RATE)
    whole = add_audio_file(session, take, name="take.wav", split=split)
    # with a region of it on track "Mix", 12345 samples into the file, at 2 s, 40000 long
    place = {"SB_WHOLE_ID": whole, "SB_REGION_NAME": REGION, "SB_OFFSET": str(OFFSET)}
    place |= {"SB_POSITION": str(POSITION), "SB_LENGTH": str(LENGTH)}
    run_ardour(ardour_lua, "place_original.lua", env | place, tmp_path)

    # When the action's logic separates it (plan, submit, wait, tracks, group, mute)
    placements_file = tmp_path / "placements.tsv"
    separate = {"SB_PLACEMENTS": str(placements_file), "SB_MUTE": "1" if mute else "0"}
    separate["SB_EXPECT"] = "render" if split else "range"
    run_ardour(ardour_lua, "separate.lua", env | separate, tmp_path)
    placements = [line.split("\t") for line in placements_file.read_text("utf-8").splitlines()]
    # and each stem goes into the session, where Ardour places a region of it
    stems_file, readback = tmp_path / "stems.tsv", tmp_path / "readback.tsv"
    lines = []
    for track, stem, path, position, length in placements:
        whole_id = add_audio_file(session, Path(path), name=f"{stem} of {name}.wav")
        lines.append(f"{track}\t{whole_id}\t{position}\t{length}\n")
    stems_file.write_text("".join(lines), "utf-8")
    stems = {"SB_STEMS": str(stems_file), "SB_READBACK": str(readback), "SB_READ": str(READ)}
    run_ardour(ardour_lua, "place_stems.lua", env | stems, tmp_path)
    print(f"Ardour session flow: {time.monotonic() - started:.1f} s")

    # Then the job got exactly the region's range: of the stereo file behind it, or of the
    # file Ardour's reads of the region were written to; the stems (which add up to their
    # input) add up to that range of the take
    assert [p[1] for p in placements] == ["vocals", "instrumental"]
    folder = Path(placements[0][2]).parent
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    original_audio = sf.read(take, always_2d=True)[0][OFFSET : OFFSET + LENGTH]
    if split:
        assert folder == session_dir / "Stems" / "Vox _take_ ü" / "Vox _take_ ü"
        rendered = Path(manifest["input"]["path"])
        assert rendered == session_dir / "export" / "Vox _take_ ü.wav"
        assert manifest["range"]["start_samples"] == 0
        np.testing.assert_array_equal(sf.read(rendered, always_2d=True)[0], original_audio)
    else:
        assert folder == session_dir / "Stems" / "Vox _take_ ü" / "take"
        assert manifest["range"]["start_samples"] == OFFSET
    assert manifest["range"]["length_samples"] == LENGTH
    vocals, instrumental = (sf.read(p[2], always_2d=True)[0] for p in placements)
    np.testing.assert_allclose(vocals + instrumental, original_audio, atol=3 / 32768)
    # and in the session Ardour saved: the original where it was, muted if asked
    tracks = read_tracks(session)
    (original,) = tracks["Mix"].regions
    assert (original.position, original.start, original.length) == (POSITION, OFFSET, LENGTH)
    assert original.muted is mute
    assert tracks["Mix"].group == ""
    # one track per stem, named "<region> <en dash> <stem>", right after it, in one group
    stem_tracks = [f"{REGION}{DASH}vocals", f"{REGION}{DASH}instrumental"]
    assert list(tracks) == ["Mix", *stem_tracks]
    files = source_files(session)
    for (track_name, _stem, path, _position, _length), track_key in zip(
        placements, stem_tracks, strict=True
    ):
        track = tracks[track_key]
        assert track.name == track_name and track.group == REGION
        # each with exactly one region at the original's position and length, not muted
        (region,) = track.regions
        assert (region.position, region.start, region.length) == (POSITION, 0, LENGTH)
        assert not region.muted and region.name == track_name
        # whose source is the stem file, on every channel
        expected, _ = sf.read(path, dtype="float32", always_2d=True)
        assert len(region.sources) == expected.shape[1]
        for source_id in region.sources:
            assert sf.read(files[source_id], dtype="float32")[0].tolist() == expected.tolist()
    # and what Ardour reads from each stem region is the stem's audio
    read = {}
    for line in readback.read_text("utf-8").splitlines():
        track_name, channel, values = line.split("\t")
        read[track_name, int(channel)] = np.array(values.split(), dtype=np.float32)
    for track_name, _stem, path, _position, _length in placements:
        expected, _ = sf.read(path, dtype="float32", always_2d=True)
        for channel in range(expected.shape[1]):
            got = read[track_name, channel]
            np.testing.assert_allclose(got, expected[:READ, channel], atol=1e-7)
