"""The REAPER scripts, run in Lua 5.4 against a faithful fake ``reaper``, with a real daemon."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from bridge.hosts.reaper import install
from bridge.hosts.script_install import SHARED_MODULE
from bridge.jobs.lock import daemon_running
from bridge.jobs.store import JobStore

from processes import DaemonProcess, default_config, wait_for
from programs import required_program
from signals import music, write_audio

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "integrations" / "reaper" / "StemBridge"
CORE = ROOT / "integrations" / "common" / SHARED_MODULE
FAKE = Path(__file__).resolve().parent / "reaper" / "fake_reaper.lua"
API = ROOT / "integrations" / "reaper" / "sdk" / "reaper_lua_api.tsv"
QUICK = "StemBridge - Separate selected items (vocals + instrumental).lua"
DIALOG = "StemBridge - Separate selected items.lua"
DASH = " \u2013 "


@pytest.fixture(scope="module")
def lua() -> str:
    return required_program("lua5.4", package="lua5.4", purpose="the REAPER scripts are not run")


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    """The scripts installed by `stembridge reaper install` into a REAPER resource folder."""
    resource = tmp_path / "REAPER"
    resource.mkdir()
    install(resource, command=[sys.executable, "-m", "bridge"])
    return resource / "Scripts" / "StemBridge"


def lua_string(text: str | Path) -> str:
    """A Lua long-bracket string literal holding ``text`` exactly."""
    text = str(text)
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def run_lua(lua: str, body: str, tmp_path: Path) -> dict[str, Any]:
    """Run ``body`` with the fake loaded as ``F``; return the project as the fake dumps it."""
    driver = tmp_path / "driver.lua"
    driver.write_text(
        f"local F = dofile({lua_string(FAKE)})\n{body}\nio.write(F.dump())\n", encoding="utf-8"
    )
    result = subprocess.run(
        [lua, str(driver)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr + result.stdout
    dumped: dict[str, Any] = json.loads(result.stdout)
    return dumped


def api_list() -> dict[str, tuple[int, int]]:
    rows = csv.reader(
        (line for line in API.read_text(encoding="utf-8").splitlines() if not line.startswith("#")),
        delimiter="\t",
    )
    next(rows)
    return {row[0]: (int(row[1]), int(row[2])) for row in rows}


def check_api(project: dict[str, Any]) -> None:
    """Every call the scripts made exists in the SDK with an allowed argument count."""
    sdk = api_list()
    for name, counts in project["calls"].items():
        assert name in sdk, f"reaper.{name} is not in the REAPER SDK"
        low, high = sdk[name]
        for count in counts:
            assert low <= count <= high, f"reaper.{name} called with {count} arguments"


def track_names(project: dict[str, Any]) -> list[str]:
    return [track["name"] for track in project["tracks"]]


# --- the fake itself ---------------------------------------------------------------------


def test_the_fake_matches_the_sdk_signatures(lua: str, tmp_path: Path) -> None:
    project = run_lua(lua, "", tmp_path)
    sdk = api_list()
    for name, arity in project["arity"].items():
        assert name in sdk, f"the fake has reaper.{name}, which the SDK does not"
        assert arity == sdk[name][1], f"fake reaper.{name} takes {arity}, the SDK {sdk[name][1]}"


def test_every_reaper_function_the_scripts_name_is_in_the_sdk_and_the_fake(
    lua: str, tmp_path: Path
) -> None:
    project = run_lua(lua, "", tmp_path)
    sdk = api_list()
    for script in SCRIPTS.glob("*.lua"):
        for name in set(re.findall(r"reaper\.(\w+)", script.read_text(encoding="utf-8"))):
            assert name in sdk, f"{script.name}: reaper.{name} is not in the REAPER SDK"
            assert name in project["arity"], f"{script.name}: the fake lacks reaper.{name}"


# --- quoting --------------------------------------------------------------------------------

AWKWARD = [
    "plain",
    "with space",
    "it's",
    'say "hi"',
    "back\\slash\\",
    'trail\\"quote',
    "$(touch /tmp/pwned) `id`; rm -rf x",
    "Ünïcødé ✓",
    "",
]


def test_posix_quoting_survives_the_shell(lua: str, tmp_path: Path) -> None:
    args = ", ".join(lua_string(arg) for arg in AWKWARD)
    body = (
        f"local core = dofile({lua_string(CORE)})\n"
        f"local line = core.command_line({{'printf', '%s\\n', {args}}}, false)\n"
        "F.out = reaper.ExecProcess(line, 5000)\n"
        "F.messages = { F.out }\n"
    )
    project = run_lua(lua, body, tmp_path)
    code, _, printed = project["messages"][0].partition("\n")
    assert code == "0"
    assert printed.split("\n")[: len(AWKWARD)] == AWKWARD
    assert not Path("/tmp/pwned").exists()


def test_windows_quoting_follows_the_c_runtime_rules(lua: str, tmp_path: Path) -> None:
    args = ", ".join(lua_string(arg) for arg in AWKWARD)
    body = (
        f"local core = dofile({lua_string(CORE)})\n"
        f"F.messages = {{ core.command_line({{ {args} }}, true) }}\n"
    )
    project = run_lua(lua, body, tmp_path)
    assert project["messages"][0] == subprocess.list2cmdline(AWKWARD)


# --- separating items end to end -------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path, model_dir: Path) -> Any:
    config = default_config(tmp_path / "state")
    process = DaemonProcess(["serve", "--config", str(config)], tmp_path / "daemon.log")
    wait_for(lambda: daemon_running(tmp_path / "state"), what="the daemon to start")
    yield process
    process.stop()


def test_selected_items_become_aligned_stem_tracks(
    lua: str, tmp_path: Path, scripts: Path, daemon: Any
) -> None:
    # Given sources at 44.1, 48 and 96 kHz in folders with spaces, quotes and non-ASCII names
    media = tmp_path / f'My Song\'s "Takes"{DASH}ünï'
    files = {
        rate: write_audio(media / f"take {rate}.wav", music(3 * rate, rate=rate, seed=rate), rate)
        for rate in (44100, 48000, 96000)
    }
    # and items that play parts of them: offsets into the file, trimmed starts and ends,
    # on a track that closes a folder
    items = [
        (44100, 10.0, 1.25, 0.5),  # (rate, position, length, take start offset)
        (48000, 3.0, 2.0, 0.75),
        (96000, 20.5, 0.6, 1.9),
    ]
    project_path = tmp_path / "project"
    project_path.mkdir()
    body = [
        f"F.project_path = {lua_string(project_path)}",
        "local parent = F.add_track('Band', 1)",
        "local vox = F.add_track('Vox', -1)",
        "F.add_track('After', 0)",
    ]
    for index, (rate, position, length, offset) in enumerate(items):
        body.append(
            f"F.add_item(vox, {{ name = 'Take {index}', position = {position!r}, "
            f"length = {length!r}, startoffs = {offset!r}, "
            f"source = F.source({lua_string(files[rate])}) }})"
        )
    body += [
        f"F.run_script({lua_string(scripts / QUICK)})",
        "F.run_deferred(240, 0.2)",
    ]
    # When the quick action runs and its defer loop is driven until it ends
    project = run_lua(lua, "\n".join(body), tmp_path)
    check_api(project)
    # Then under the source track: one folder per item, named after it, with a track per stem
    names = track_names(project)
    assert names[:2] == ["Band", "Vox"]
    # Each folder is inserted right under the source track when its job is done, so the
    # groups come in the order the jobs finished
    groups = {tuple(names[i : i + 3]) for i in range(2, 2 + 3 * len(items), 3)}
    assert groups == {
        (f"Take {i}", f"Take {i}{DASH}vocals", f"Take {i}{DASH}instrumental")
        for i in range(len(items))
    }
    assert names[-1] == "After"
    assert project["undo_open"] == 0
    assert len(project["undo_blocks"]) == len(items)
    by_name = {track["name"]: track for track in project["tracks"]}
    for index, (rate, position, length, _offset) in enumerate(items):
        folder = by_name[f"Take {index}"]
        assert folder["depth"] == 1 and folder["items"] == []
        for stem in ("vocals", "instrumental"):
            track = by_name[f"Take {index}{DASH}{stem}"]
            (item,) = track["items"]
            # Each stem item sits exactly where the original is, exactly as long
            assert (item["position"], item["length"]) == (position, length)
            (take,) = item["takes"]
            assert take["startoffs"] == 0 and take["name"] == f"Take {index}{DASH}{stem}"
            info = sf.info(take["path"])
            assert info.samplerate == rate
            assert info.frames == round(length * rate)
    # The originals are muted; the folder structure still closes where it did
    assert all(item["mute"] == 1 for item in by_name["Vox"]["items"])
    assert by_name["Vox"]["depth"] == 0
    assert sum(track["depth"] for track in project["tracks"]) == 0
    assert project["messages"] == []
    assert project["projext"] == [], "every job seen to the end is forgotten"


def test_items_that_are_not_plain_ranges_are_rendered_with_consent(
    lua: str, tmp_path: Path, scripts: Path
) -> None:
    # Given items a range of a file cannot represent
    source = write_audio(tmp_path / "media" / "take.wav", music(44100 * 2))
    project_path = tmp_path / "project"
    project_path.mkdir()
    body = f"""
F.project_path = {lua_string(project_path)}
local src = F.source({lua_string(source)})
local track = F.add_track('Gtr', 0)
F.add_item(track, {{ name = 'fast', position = 0, length = 1, source = src, playrate = 1.5 }})
F.add_item(track, {{ name = 'fx', position = 2, length = 1, source = src, fx = 1 }})
local reversed = F.section(src, 0.2, 1, true)
F.add_item(track, {{ name = 'rev', position = 4, length = 1, source = reversed }})
F.add_item(track, {{ name = 'plain', position = 6, length = 1, source = src }})
F.answers = {{ 6 }}
F.run_script({lua_string(scripts / QUICK)})
F.run_deferred(30, nil, 3)
"""
    # When the user agrees to render them
    project = run_lua(lua, body, tmp_path)
    check_api(project)
    # Then the question named each item and its reason, REAPER rendered exactly those three,
    # and all four were submitted, the rendered ones from the start of their new file
    question = project["messages"][0]
    for line in ("fast: playrate 1.5", "fx: take FX", "rev: reversed"):
        assert line in question
    assert "  plain:" not in question
    submits = [line for line in project["exec"] if "'submit'" in line]
    assert len(submits) == 4
    rendered = [line for line in submits if "render-" in line]
    assert len(rendered) == 3
    assert all("'--start' '0' " in line for line in rendered)


def test_declined_render_skips_with_reasons(lua: str, tmp_path: Path, scripts: Path) -> None:
    source = write_audio(tmp_path / "media" / "take.wav", music(44100 * 2))
    body = f"""
F.project_path = {lua_string(tmp_path)}
local track = F.add_track('Gtr', 0)
local src = F.source({lua_string(source)})
F.add_item(track, {{ name = 'fast', position = 0, length = 1, source = src, playrate = 2 }})
F.add_item(track, {{ name = 'empty', position = 3, length = 1 }}).active = nil
F.answers = {{ 7 }}
F.run_script({lua_string(scripts / QUICK)})
F.run_deferred(30, nil, 3)
"""
    project = run_lua(lua, body, tmp_path)
    assert not [line for line in project["exec"] if "'submit'" in line]
    final = project["messages"][-1]
    assert "Skipped fast: playrate 2 (not rendered)" in final
    assert "Skipped item at 3.000 s: empty item (no take)" in final
    assert track_names(project) == ["Gtr"]


def test_dialog_remembers_the_choice(lua: str, tmp_path: Path, scripts: Path) -> None:
    source = write_audio(tmp_path / "media" / "take.wav", music(44100))
    body = f"""
F.project_path = {lua_string(tmp_path)}
local track = F.add_track('Keys', 0)
local src = F.source({lua_string(source)})
F.add_item(track, {{ name = 'k', position = 0, length = 0.5, source = src }})
F.inputs = {{ 'vocals;drums,htdemucs,broadcast,n' }}
F.run_script({lua_string(scripts / DIALOG)})
F.run_deferred(5, nil, 1)
F.deferred = {{}}
F.run_script({lua_string(scripts / DIALOG)})
F.run_deferred(5, nil, 1)
"""
    project = run_lua(lua, body, tmp_path)
    submits = [line for line in project["exec"] if "'submit'" in line]
    assert len(submits) == 2
    for line in submits:
        assert "'--stems' 'vocals,drums'" in line and "'--preset' 'broadcast'" in line
    assert project["extstate"]["StemBridge/mute"] == "n"


def test_cancel_button_cancels_the_jobs(lua: str, tmp_path: Path, scripts: Path) -> None:
    # Given no daemon (the job waits) and a click on the progress window's Cancel button
    default_config(tmp_path / "state")
    source = write_audio(tmp_path / "media" / "take.wav", music(44100))
    body = f"""
F.project_path = {lua_string(tmp_path)}
local track = F.add_track('Keys', 0)
local src = F.source({lua_string(source)})
F.add_item(track, {{ name = 'k', position = 0, length = 0.5, source = src }})
F.answers = {{ 1 }}
F.run_script({lua_string(scripts / QUICK)})
gfx.mouse_cap, gfx.mouse_x, gfx.mouse_y = 1, 20, 45
F.run_deferred(30, 0.1, 10)
"""
    project = run_lua(lua, body, tmp_path)
    # Then the user was told the daemon is not running, the job was cancelled, the loop ended
    assert "daemon is not running" in project["messages"][0]
    assert any(" 'cancel' " in line for line in project["exec"])
    (job,) = JobStore(tmp_path / "state").list()
    assert job.state == "cancelled"
    assert project["left"] == 0
    assert "k  queued 0%" in project["drawn"]


def test_not_installed_says_what_to_run(lua: str, tmp_path: Path) -> None:
    # Given the scripts as ReaPack installs them (the shared module beside them, as the
    # index lists it) but `stembridge reaper install` never run
    folder = tmp_path / "Scripts"
    shutil.copytree(SCRIPTS, folder)
    shutil.copy(CORE, folder / SHARED_MODULE)
    body = f"F.run_script({lua_string(folder / QUICK)})"
    project = run_lua(lua, body, tmp_path)
    assert "Run `stembridge reaper install`" in project["messages"][0]


def windows_layout(installed: Path, root: Path) -> str:
    """The installed files copied as REAPER on Windows names them; returns their folder.

    On Windows the action context gives ``C:\\...\\Scripts\\StemBridge\\<script>``. Here
    a backslash is a plain character of a file name, so files named
    ``REAPER\\Scripts\\StemBridge\\<name>`` in ``root`` stand for that folder: a script
    that looked for its neighbours after the last "/" only would find none of them.
    """
    prefix = "REAPER\\Scripts\\StemBridge\\"
    root.mkdir()
    for path in installed.iterdir():
        shutil.copy(path, root / (prefix + path.name))
    return f"{root}/{prefix}"


@pytest.mark.parametrize("separators", ["posix", "windows"])
def test_installed_scripts_load_the_shared_module_beside_them(
    lua: str, tmp_path: Path, scripts: Path, separators: str
) -> None:
    # Given the folder `stembridge reaper install` made, holding the shared module as shipped,
    # as it is named on this system or on Windows
    assert (scripts / SHARED_MODULE).read_bytes() == CORE.read_bytes()
    folder = f"{scripts}/" if separators == "posix" else windows_layout(scripts, tmp_path / "win")
    # When an action runs from there with nothing selected (and no resource folder to
    # fall back on for the config)
    body = (
        f"F.resource_path = {lua_string(tmp_path / 'none')}\n"
        f"F.run_script({lua_string(folder + QUICK)})"
    )
    project = run_lua(lua, body, tmp_path)
    # Then it got as far as the selection: it loaded the library, the library loaded the
    # module beside it, and the module read the config beside them
    assert project["messages"] == ["Select one or more audio items first."]


def test_scripts_without_the_shared_module_name_it_and_the_fix(
    lua: str, tmp_path: Path, scripts: Path
) -> None:
    # Given an install whose shared module was deleted, and one in the folder above it
    (scripts / SHARED_MODULE).unlink()
    shutil.copy(CORE, scripts.parent / SHARED_MODULE)
    body = f"F.messages = {{ select(2, pcall(F.run_script, {lua_string(scripts / QUICK)})) }}"
    # When an action runs, Then it stops with REAPER's script error, naming the missing file
    # where it belongs and what to run
    (message,) = run_lua(lua, body, tmp_path)["messages"]
    assert str(scripts / SHARED_MODULE) in message
    assert "Run `stembridge reaper install`" in message


def test_register_actions_adds_every_action(lua: str, tmp_path: Path, scripts: Path) -> None:
    project = run_lua(
        lua, f"F.run_script({lua_string(scripts / 'StemBridge - Register actions.lua')})", tmp_path
    )
    check_api(project)
    assert len(project["registered"]) == 5
    assert all(Path(path).is_file() for path in project["registered"])
    assert "5 actions" in project["messages"][0]


def test_auto_import_puts_finished_render_stems_on_tracks_once(
    lua: str, tmp_path: Path, scripts: Path
) -> None:
    # Given a render folder whose daemon job is done (status file in the documented format)
    renders = tmp_path / "Renders"
    stems = renders / "Stems" / "bounce"
    for stem in ("vocals", "drums"):
        write_audio(stems / f"{stem}.wav", music(2 * 44100))
    status = renders / "Stems" / ".stembridge" / "0123456789ab.status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "stembridge_status=1\njob=0123456789ab\nstate=done\nprogress=1.0\nstage=done\n"
        f"folder={stems}\nmanifest={stems / 'manifest.json'}\n"
        f"stem.vocals={stems / 'vocals.wav'}\nstem.drums={stems / 'drums.wav'}\n",
        encoding="utf-8",
    )
    body = f"""
F.project_path = {lua_string(tmp_path)}
F.project_info = {{ RENDER_FILE = {lua_string(renders)}, RENDER_BOUNDSFLAG = 2 }}
F.cursor = 12.5
F.add_track('Mix', 0)
F.run_script({lua_string(scripts / "StemBridge - Auto-import finished renders.lua")})
F.run_deferred(10, nil, 5)
"""
    project = run_lua(lua, body, tmp_path)
    check_api(project)
    # Then one folder with the two stems at the render's start, imported once, toggle on
    assert track_names(project) == ["Mix", "bounce", f"bounce{DASH}vocals", f"bounce{DASH}drums"]
    for track in project["tracks"][2:]:
        (item,) = track["items"]
        assert item["position"] == 12.5 and item["length"] == 2.0
    assert project["toggles"]["12345"] == 1
    assert project["undo_open"] == 0 and len(project["undo_blocks"]) == 1


def test_a_failed_job_is_reported_with_what_to_do(
    lua: str, tmp_path: Path, scripts: Path, daemon: Any
) -> None:
    # Given an item whose file is not audio (the daemon finds out, not the script)
    broken = tmp_path / "media" / "broken take.wav"
    broken.parent.mkdir()
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 100)
    body = f"""
F.project_path = {lua_string(tmp_path)}
local track = F.add_track('Gtr', 0)
local src = F.source({lua_string(broken)})
src.length, src.rate = 10, 44100
F.add_item(track, {{ name = 'gtr', position = 1, length = 0.5, source = src }})
F.run_script({lua_string(scripts / QUICK)})
F.run_deferred(120, 0.2)
"""
    project = run_lua(lua, body, tmp_path)
    # Then the job's own error is shown with where to look, and nothing was imported
    (message,) = project["messages"]
    assert message.startswith("gtr: ")
    assert "broken take.wav" in message and "stembridge status" in message
    assert track_names(project) == ["Gtr"]
    assert project["undo_open"] == 0 and project["undo_blocks"] == []


def test_jobs_left_running_when_the_script_stopped_are_imported_by_the_next_run(
    lua: str, tmp_path: Path, scripts: Path, daemon: Any
) -> None:
    # Given a submitted item whose script was stopped (REAPER closed, script terminated)
    # before its job was done
    source = write_audio(tmp_path / "media" / "take.wav", music(2 * 44100))
    body = f"""
F.project_path = {lua_string(tmp_path)}
local track = F.add_track('Keys', 0)
local src = F.source({lua_string(source)})
F.add_item(track, {{ name = 'k', position = 4, length = 1.5, startoffs = 0.25, source = src }})
F.run_script({lua_string(scripts / QUICK)})
F.deferred = {{}}
assert(#F.tracks == 1, "nothing may be imported yet")
os.execute("sleep 4")
F.R.SelectAllMediaItems(0, false)
F.run_script({lua_string(scripts / QUICK)})
F.run_deferred(120, 0.2)
F.run_script({lua_string(scripts / QUICK)})
"""
    # When the action runs again later, with nothing selected
    project = run_lua(lua, body, tmp_path)
    # Then the earlier job's stems are imported under its item, once, and it is forgotten
    assert track_names(project) == ["Keys", "k", f"k{DASH}vocals", f"k{DASH}instrumental"]
    for track in project["tracks"][2:]:
        (item,) = track["items"]
        assert (item["position"], item["length"]) == (4, 1.5)
    assert project["tracks"][0]["items"][0]["mute"] == 1
    assert project["projext"] == []
    assert project["messages"] == ["Select one or more audio items first."]
