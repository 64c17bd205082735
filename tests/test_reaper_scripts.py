"""The REAPER scripts, run in Lua 5.4 against a faithful fake ``reaper``, with a real daemon."""

from __future__ import annotations

import csv
import json
import re
import shlex
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
FOUR = "StemBridge - Separate selected items (4 stems).lua"
DIALOG = "StemBridge - Separate selected items.lua"
AUTO = "StemBridge - Auto-import finished renders.lua"
REGISTER = "StemBridge - Register actions.lua"
MAIN_SCRIPTS = {
    DIALOG,
    QUICK,
    FOUR,
    "StemBridge - Separate selected items (6 stems).lua",
    AUTO,
    REGISTER,
}
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


def click(action: str, *, held: bool = False) -> str:
    """Lua: the mouse goes down on the Cancel button of ``action``'s window, and (unless
    ``held``) comes up again after the next round."""
    down = f"{action}.gfx.mouse_cap, {action}.gfx.mouse_x, {action}.gfx.mouse_y = 1, 20, 45"
    if held:
        return down
    return f"{down}\nF.run_deferred(30, nil, 1)\n{action}.gfx.mouse_cap = 0"


# Lua for the test driver: the jobs the scripts keep in the project (id, status file), and
# what the daemon writes in a job's status file when it is done (bridge/jobs/status_file.py).
KEPT_JOBS = r"""
local function kept_jobs()
  local jobs = {}
  for key, value in pairs(F.projext) do
    local id = key:match('^StemBridge/job_(%x+)$')
    if id then jobs[#jobs + 1] = { id = id, status = value:match('^([^\t]*)') } end
  end
  return jobs
end
local function write_status(path, id, lines)
  local file = assert(io.open(path, 'wb'))
  file:write('stembridge_status=1\njob=', id, '\n', table.concat(lines, '\n'), '\n')
  file:close()
end
local function daemon_finishes(job, folder, stems)
  local lines = { 'state=done', 'progress=1.0000', 'stage=done', 'folder=' .. folder,
    'manifest=' .. folder .. '/manifest.json', 'error=', 'error_kind=', 'origin={}' }
  for _, stem in ipairs(stems) do lines[#lines + 1] = 'stem.' .. stem[1] .. '=' .. stem[2] end
  write_status(job.status, job.id, lines)
end
"""


def keep_job(job_id: str, status: Path | str, name: str = "k") -> str:
    """Lua: job ``job_id`` kept in the project by an earlier run, for the first item of
    the first track, as the library keeps it (status file, track, item, position,
    length, name, mute)."""
    return (
        "do\n"
        "  local track = F.tracks[1]\n"
        "  local fields = { "
        f"{lua_string(status)}, track.guid, track.items[1].guid, '0', '1', '{name}', 'y' }}\n"
        f"  reaper.SetProjExtState(0, 'StemBridge', 'job_{job_id}', table.concat(fields, '\\t'))\n"
        "end"
    )


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


def test_each_script_runs_in_a_lua_state_of_its_own_sharing_reaper(
    lua: str, tmp_path: Path
) -> None:
    # Given two scripts that set the same global; one opens a window and keeps running,
    # the other ends at once
    (tmp_path / "a.lua").write_text(
        'who = "a"\ngfx.init("a", 100, 50)\n'
        "reaper.defer(function()\n"
        '  reaper.SetExtState("T", "a saw", who .. ", " .. reaper.GetExtState("T", "b"), false)\n'
        "end)\n",
        encoding="utf-8",
    )
    (tmp_path / "b.lua").write_text(
        'who = "b"\nreaper.SetExtState("T", "b", "b was here", false)\n'
        'reaper.atexit(function() reaper.SetExtState("T", "b ended", "yes", true) end)\n',
        encoding="utf-8",
    )
    body = f"""
local a = F.run_script({lua_string(tmp_path / "a.lua")})
local b = F.run_script({lua_string(tmp_path / "b.lua")})
F.notes = {{ tostring(a.ended or false), tostring(b.ended or false) }}
F.run_deferred(5, nil, 3)
F.notes[3] = tostring(who)
"""
    project = run_lua(lua, body, tmp_path)
    # Then each kept its own global and window, they shared ExtState; b ended (its atexit
    # ran) while a still ran, and a ended after its deferred function
    assert project["notes"] == ["false", "true", "nil"]
    assert project["extstate"]["T/a saw"] == "a, b was here"
    assert project["extstate"]["T/b ended"] == "yes"
    assert [window["inits"] for window in project["windows"]] == [1, 0]
    assert all(window["ended"] for window in project["windows"])
    # and after REAPER restarts, only the ExtState written with persist=true is left
    restarted = run_lua(lua, body + "F.restart()", tmp_path)
    assert restarted["extstate"] == {"T/b ended": "yes"} and restarted["windows"] == []


def test_the_fake_caches_directory_listings_as_reaper_does(lua: str, tmp_path: Path) -> None:
    # Given a folder with a file and a sub-folder
    folder = tmp_path / "listed"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.status").write_text("", encoding="utf-8")
    body = f"""
local dir = {lua_string(folder)}
local function names()
  local list, i = {{}}, 0
  while reaper.EnumerateFiles(dir, i) do
    list[#list + 1] = reaper.EnumerateFiles(dir, i)
    i = i + 1
  end
  return table.concat(list, ",")
end
F.notes = {{ names() }}
io.open(dir .. "/two.status", "w"):close()
F.notes[2] = names()
reaper.EnumerateFiles(dir, -1)
F.notes[3] = names()
"""
    # When a file appears after the folder was listed
    project = run_lua(lua, body, tmp_path)
    # Then files only are listed, from the cached listing until fileindex -1 re-reads it
    assert project["notes"] == ["one.status", "one.status", "one.status,two.status"]


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
        f"F.record_path = {lua_string(project_path)}",
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
F.record_path = {lua_string(project_path)}
local src = F.source({lua_string(source)})
local track = F.add_track('Gtr', 0)
F.add_item(track, {{ name = 'fast', position = 0, length = 1, source = src, playrate = 1.5 }})
F.add_item(track, {{ name = 'fx', position = 2, length = 1, source = src, fx = 1 }})
local reversed = F.section(src, 0.2, 1, true)
F.add_item(track, {{ name = 'rev', position = 4, length = 1, source = reversed }})
F.add_item(track, {{ name = 'plain', position = 6, length = 1, source = src }})
F.add_item(track, {{ name = 'pitched', position = 8, length = 1, source = src, pitch = 2 }})
F.add_item(track, {{ name = 'left', position = 10, length = 1, source = src, chanmode = 3 }})
F.add_item(track, {{ name = 'flipped', position = 12, length = 1, source = src, volume = -0.5 }})
F.answers = {{ 6 }}
F.run_script({lua_string(scripts / QUICK)})
F.run_deferred(30, nil, 3)
"""
    # When the user agrees to render them
    project = run_lua(lua, body, tmp_path)
    check_api(project)
    # Then the question named each item and its reason (a take's pitch, its channel mode and
    # its flipped polarity change what it plays as much as its rate), REAPER rendered
    # exactly those six, and all seven were submitted, the rendered ones from the start of
    # their new file
    question = project["messages"][0]
    for line in (
        "fast: playrate 1.5",
        "fx: take FX",
        "rev: reversed",
        "pitched: pitch +2 semitones",
        "left: channel mode: mono of the left channel",
        "flipped: polarity flipped",
    ):
        assert line in question
    assert "  plain:" not in question
    submits = [line for line in project["exec"] if "'submit'" in line]
    assert len(submits) == 7
    rendered = [line for line in submits if "render-" in line]
    assert len(rendered) == 6
    assert all("'--start' '0' " in line for line in rendered)


def test_declined_render_skips_with_reasons(lua: str, tmp_path: Path, scripts: Path) -> None:
    source = write_audio(tmp_path / "media" / "take.wav", music(44100 * 2))
    body = f"""
F.record_path = {lua_string(tmp_path)}
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
F.record_path = {lua_string(tmp_path)}
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
F.record_path = {lua_string(tmp_path)}
local track = F.add_track('Keys', 0)
local src = F.source({lua_string(source)})
F.add_item(track, {{ name = 'k', position = 0, length = 0.5, source = src }})
F.answers = {{ 1 }}
local action = F.run_script({lua_string(scripts / QUICK)})
{click("action")}
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
    project = run_lua(lua, f"F.run_script({lua_string(scripts / REGISTER)})", tmp_path)
    check_api(project)
    assert len(project["registered"]) == 5
    assert all(Path(path).is_file() for path in project["registered"])
    assert project["kb"] == sorted(project["registered"]), "the action list was written"
    assert "5 actions" in project["messages"][0]


def test_register_actions_writes_the_action_list_when_a_script_is_missing(
    lua: str, tmp_path: Path, scripts: Path
) -> None:
    # Given an install whose last listed script was deleted
    (scripts / AUTO).unlink()
    # When the actions are registered
    project = run_lua(lua, f"F.run_script({lua_string(scripts / REGISTER)})", tmp_path)
    # Then the other four are added and the action list is written (committed) with them
    check_api(project)
    assert project["kb"] == sorted(str(scripts / name) for name in MAIN_SCRIPTS - {AUTO, REGISTER})
    assert "4 actions" in project["messages"][0] and AUTO in project["messages"][0]


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
F.record_path = {lua_string(tmp_path)}
F.project_info = {{ RENDER_FILE = {lua_string(renders)}, RENDER_BOUNDSFLAG = 2 }}
F.cursor = 12.5
F.add_track('Mix', 0)
F.run_script({lua_string(scripts / AUTO)})
F.run_deferred(10, nil, 40)
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
F.record_path = {lua_string(tmp_path)}
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


@pytest.mark.parametrize(
    "stop", ["F.terminate(first)", "F.restart()"], ids=["script terminated", "REAPER restarted"]
)
def test_jobs_left_running_when_the_script_stopped_are_imported_by_the_next_run(
    lua: str, tmp_path: Path, scripts: Path, daemon: Any, stop: str
) -> None:
    # Given a submitted item whose script was stopped (terminated by the user, or REAPER
    # closed and opened again) before its job was done
    source = write_audio(tmp_path / "media" / "take.wav", music(2 * 44100))
    body = f"""
F.record_path = {lua_string(tmp_path)}
local track = F.add_track('Keys', 0)
local src = F.source({lua_string(source)})
F.add_item(track, {{ name = 'k', position = 4, length = 1.5, startoffs = 0.25, source = src }})
local first = F.run_script({lua_string(scripts / QUICK)})
{stop}
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


# --- several actions at once, windows, jobs that cannot end ----------------------------------


def test_two_actions_at_once_import_each_job_once(
    lua: str, tmp_path: Path, scripts: Path, daemon: Any
) -> None:
    # Given two items on two tracks
    source = write_audio(tmp_path / "media" / "take.wav", music(2 * 44100))
    record = tmp_path / "project"
    record.mkdir()
    body = f"""
F.record_path = {lua_string(record)}
local src = F.source({lua_string(source)})
F.add_item(F.add_track('Keys', 0), {{ name = 'k', position = 1, length = 1, source = src }})
local g = F.add_item(F.add_track('Gtr', 0), {{ name = 'g', position = 3, length = 1,
  startoffs = 0.5, source = src, selected = false }})
-- When "(4 stems)" runs on the first item
F.run_script({lua_string(scripts / FOUR)})
-- and, while it runs, "(vocals + instrumental)" on the second
F.R.SelectAllMediaItems(0, false)
F.R.SetMediaItemSelected(g, true)
F.run_script({lua_string(scripts / QUICK)})
-- and both defer loops run side by side until they end
F.run_deferred(240, 0.2)
"""
    project = run_lua(lua, body, tmp_path)
    check_api(project)
    # Then each item got its own stems, once, in one undo block each
    four = [f"k{DASH}{stem}" for stem in ("drums", "bass", "other", "vocals")]
    two = [f"g{DASH}vocals", f"g{DASH}instrumental"]
    assert track_names(project) == ["Keys", "k", *four, "Gtr", "g", *two]
    assert project["undo_open"] == 0 and len(project["undo_blocks"]) == 2
    assert project["messages"] == []
    assert project["projext"] == [] and project["left"] == 0
    assert not [key for key in project["extstate"] if key.startswith("StemBridge/follow_")]


def test_a_job_whose_follower_went_silent_is_taken_over(
    lua: str, tmp_path: Path, scripts: Path
) -> None:
    # Given a kept job that a script said it follows at time 0 and then stopped without
    # a word (its status file says it is queued)
    status = tmp_path / "Stems" / ".stembridge" / "0123456789ab.status"
    status.parent.mkdir(parents=True)
    status.write_text("stembridge_status=1\njob=0123456789ab\nstate=queued\n", encoding="utf-8")
    body = f"""
F.record_path = {lua_string(tmp_path)}
F.add_item(F.add_track('Keys', 0), {{ name = 'k', position = 0, length = 1, selected = false }})
{keep_job("0123456789ab", status)}
reaper.SetExtState('StemBridge', 'follow_0123456789ab', '99\\t0', false)
-- When an action runs 5 s later, and again 11 s later
F.clock = 5
F.run_script({lua_string(scripts / QUICK)})
F.clock = 11
F.run_script({lua_string(scripts / QUICK)})
"""
    project = run_lua(lua, body, tmp_path)
    # Then the first leaves the job alone (its follower may still run) and the second
    # takes it over: it follows it now, in its window
    assert project["messages"] == ["Select one or more audio items first."]
    assert project["left"] == 1 and "k  queued 0%" in project["drawn"]
    assert project["extstate"]["StemBridge/follow_0123456789ab"].startswith("2\t")


def test_a_closed_progress_window_stays_closed_and_the_jobs_go_on(
    lua: str, tmp_path: Path, scripts: Path
) -> None:
    # Given a job waiting for the daemon, whose stems the daemon will write here
    default_config(tmp_path / "state")
    source = write_audio(tmp_path / "media" / "take.wav", music(44100))
    done = tmp_path / "Stems" / "take"
    stems = [(name, write_audio(done / f"{name}.wav", music(22050))) for name in ("vocals", "bass")]
    stems_lua = ", ".join(f"{{ '{name}', {lua_string(path)} }}" for name, path in stems)
    body = f"""
{KEPT_JOBS}
F.record_path = {lua_string(tmp_path)}
local src = F.source({lua_string(source)})
F.add_item(F.add_track('Keys', 0), {{ name = 'k', position = 2, length = 0.5, source = src }})
local action = F.run_script({lua_string(scripts / QUICK)})
F.run_deferred(30, nil, 5)
-- When the user closes the progress window
F.close_window(action)
F.run_deferred(30, nil, 30)
-- and the daemon finishes the job afterwards
daemon_finishes(kept_jobs()[1], {lua_string(done)}, {{ {stems_lua} }})
F.run_deferred(30, nil, 30)
"""
    project = run_lua(lua, body, tmp_path)
    # Then the window was not opened again, and the stems still arrived
    (window,) = project["windows"]
    assert window["inits"] == 1 and not window["open"]
    assert track_names(project) == ["Keys", "k", f"k{DASH}vocals", f"k{DASH}bass"]
    assert project["left"] == 0 and project["projext"] == []


def test_cancel_held_down_cancels_once(lua: str, tmp_path: Path, scripts: Path) -> None:
    # Given a job a worker is running (so a cancel only asks it to stop at its next step)
    state = tmp_path / "state"
    default_config(state)
    source = write_audio(tmp_path / "media" / "take.wav", music(44100))
    worker = (
        "from pathlib import Path; from bridge.jobs.store import JobStore; "
        f"store = JobStore(Path({str(state)!r})); "
        "[store.claim('a worker', job_id=job.id) for job in store.list(states=('queued',))]"
    )
    body = f"""
F.record_path = {lua_string(tmp_path)}
local src = F.source({lua_string(source)})
F.add_item(F.add_track('Keys', 0), {{ name = 'k', position = 0, length = 0.5, source = src }})
local action = F.run_script({lua_string(scripts / QUICK)})
assert(os.execute({lua_string(shlex.join([sys.executable, "-c", worker]))}))
-- When the user presses Cancel and holds the button down for a second
{click("action", held=True)}
F.run_deferred(60, nil, 30)
"""
    project = run_lua(lua, body, tmp_path)
    # Then one cancel was sent, and the window says the job is being cancelled
    assert len([line for line in project["exec"] if " 'cancel' " in line]) == 1
    assert project["drawn"][-2] == "k  cancelling 0%"
    (job,) = JobStore(state).list()
    assert job.state == "running" and project["left"] == 1


def test_esc_closes_the_window_and_cancels_nothing(lua: str, tmp_path: Path, scripts: Path) -> None:
    state = tmp_path / "state"
    default_config(state)
    source = write_audio(tmp_path / "media" / "take.wav", music(44100))
    body = f"""
F.record_path = {lua_string(tmp_path)}
local src = F.source({lua_string(source)})
F.add_item(F.add_track('Keys', 0), {{ name = 'k', position = 0, length = 0.5, source = src }})
local action = F.run_script({lua_string(scripts / QUICK)})
-- When the user presses Esc in the progress window
action.gfx.keys = {{ 27 }}
F.run_deferred(30, nil, 10)
"""
    project = run_lua(lua, body, tmp_path)
    # Then the window is closed for good and the job goes on
    assert not [line for line in project["exec"] if " 'cancel' " in line]
    (window,) = project["windows"]
    assert window["inits"] == 1 and not window["open"]
    (job,) = JobStore(state).list()
    assert job.state == "queued" and project["left"] == 1


def test_a_kept_job_the_daemon_does_not_know_is_given_up_at_once(
    lua: str, tmp_path: Path, scripts: Path
) -> None:
    # Given a job kept in the project by a run on another computer: its status file is
    # not here and this daemon's store does not know it
    default_config(tmp_path / "state")
    gone = "/Volumes/Elsewhere/Stems/.stembridge/0123456789ab.status"
    body = f"""
F.record_path = {lua_string(tmp_path)}
F.add_item(F.add_track('Keys', 0), {{ name = 'k', position = 0, length = 1, selected = false }})
{keep_job("0123456789ab", gone)}
-- When an action runs (nothing selected), and later another one
F.run_script({lua_string(scripts / QUICK)})
F.run_deferred(30, nil, 30)
F.run_script({lua_string(scripts / QUICK)})
"""
    project = run_lua(lua, body, tmp_path)
    # Then the user is told once, the job is forgotten, the loop ended, and the next
    # action has nothing to take over
    first, second = project["messages"]
    assert first.startswith("k: StemBridge stopped waiting for job 0123456789ab")
    assert gone in first and "does not know the job" in first
    assert second == "Select one or more audio items first."
    assert project["projext"] == [] and project["left"] == 0
    assert len([line for line in project["exec"] if " 'status' " in line]) == 1


def test_a_kept_job_whose_status_file_is_gone_is_given_up_after_a_while(
    lua: str, tmp_path: Path, scripts: Path
) -> None:
    # Given a job the daemon knows (queued: it does not run), whose stem folder is deleted
    state = tmp_path / "state"
    default_config(state)
    source = write_audio(tmp_path / "media" / "take.wav", music(44100))
    body = f"""
{KEPT_JOBS}
F.record_path = {lua_string(tmp_path)}
local src = F.source({lua_string(source)})
F.add_item(F.add_track('Keys', 0), {{ name = 'k', position = 0, length = 0.5, source = src }})
F.run_script({lua_string(scripts / QUICK)})
assert(os.remove(kept_jobs()[1].status))
-- When its action has followed it for 50 s, and then on
F.notes = {{ F.run_deferred(60, nil, 50 * 30) }}
F.run_deferred(60, nil, 20 * 30)
"""
    project = run_lua(lua, body, tmp_path)
    # Then it waited (the file might come back), then told the user once and forgot it
    assert project["notes"] == [False]
    assert "has been missing for 60 s" in project["messages"][-1]
    assert project["projext"] == [] and project["left"] == 0
    assert 60 <= project["clock"] < 70
    (job,) = JobStore(state).list()
    assert job.state == "queued", "the daemon's job is left as it is"
    assert len([line for line in project["exec"] if " 'status' " in line]) == 1


def test_cancel_forgets_a_job_the_daemon_does_not_know(
    lua: str, tmp_path: Path, scripts: Path
) -> None:
    # Given a kept job whose status file came with the project from another computer
    # (it says queued, for ever) and that this daemon does not know
    default_config(tmp_path / "state")
    status = tmp_path / "Stems" / ".stembridge" / "0123456789ab.status"
    status.parent.mkdir(parents=True)
    status.write_text("stembridge_status=1\njob=0123456789ab\nstate=queued\n", encoding="utf-8")
    body = f"""
F.record_path = {lua_string(tmp_path)}
F.add_item(F.add_track('Keys', 0), {{ name = 'k', position = 0, length = 1, selected = false }})
{keep_job("0123456789ab", status)}
local action = F.run_script({lua_string(scripts / QUICK)})
F.run_deferred(30, nil, 3)
-- When the user clicks Cancel
{click("action")}
F.run_deferred(30, nil, 10)
"""
    project = run_lua(lua, body, tmp_path)
    # Then the job is forgotten and the loop ends
    assert len([line for line in project["exec"] if " 'cancel' " in line]) == 1
    assert project["projext"] == [] and project["left"] == 0


# --- auto-import ------------------------------------------------------------------------------


def render_job(stems_root: Path, *, origin: str = "{}") -> tuple[Path, str]:
    """A done render job's stems under ``stems_root`` (``<render folder>/Stems``); returns
    where its status file goes and the file's text."""
    folder = stems_root / "bounce"
    for stem in ("vocals", "drums"):
        write_audio(folder / f"{stem}.wav", music(2 * 44100))
    status = stems_root / ".stembridge" / "0123456789ab.status"
    status.parent.mkdir(parents=True, exist_ok=True)
    text = (
        "stembridge_status=1\njob=0123456789ab\nstate=done\nprogress=1.0000\nstage=done\n"
        f"folder={folder}\nmanifest={folder / 'manifest.json'}\norigin={origin}\n"
        f"stem.vocals={folder / 'vocals.wav'}\nstem.drums={folder / 'drums.wav'}\n"
    )
    return status, text


def test_auto_import_sees_status_files_that_appear_later(
    lua: str, tmp_path: Path, scripts: Path
) -> None:
    # Given auto-import on, with the render folder's status folder empty at first
    renders = tmp_path / "Renders"
    status, text = render_job(renders / "Stems")
    later = tmp_path / "later.status"
    later.write_text(text, encoding="utf-8")
    body = f"""
F.record_path = {lua_string(tmp_path)}
F.project_file = {lua_string(tmp_path / "song.RPP")}
F.project_info = {{ RENDER_FILE = {lua_string(renders)}, RENDER_BOUNDSFLAG = 1 }}
F.add_track('Mix', 0)
F.run_script({lua_string(scripts / AUTO)})
-- When the daemon's job ends after the script has looked a few times (REAPER caches
-- the folder's listing meanwhile)
F.run_deferred(30, nil, 100, function(round)
  if round == 70 then assert(os.rename({lua_string(later)}, {lua_string(status)})) end
end)
"""
    project = run_lua(lua, body, tmp_path)
    # Then its stems are imported, once
    assert track_names(project) == ["Mix", "bounce", f"bounce{DASH}vocals", f"bounce{DASH}drums"]
    assert len(project["undo_blocks"]) == 1


@pytest.mark.parametrize("recording", ["project folder", "Media", "elsewhere"])
def test_auto_import_finds_a_relative_render_folder_in_the_project_folder(
    lua: str, tmp_path: Path, scripts: Path, recording: str
) -> None:
    # Given a project saved as Song/Song.RPP that renders to "Renders" (relative), and
    # records into its own folder, a sub-folder of it, or a folder elsewhere
    project_folder = tmp_path / "Song"
    record = {
        "project folder": project_folder,
        "Media": project_folder / "Media",
        "elsewhere": tmp_path / "Recordings",
    }[recording]
    status, text = render_job(project_folder / "Renders" / "Stems")
    status.write_text(text, encoding="utf-8")
    body = f"""
F.record_path = {lua_string(record)}
F.project_file = {lua_string(project_folder / "Song.RPP")}
F.project_info = {{ RENDER_FILE = 'Renders', RENDER_BOUNDSFLAG = 1 }}
F.add_track('Mix', 0)
F.run_script({lua_string(scripts / AUTO)})
F.run_deferred(10, nil, 40)
"""
    project = run_lua(lua, body, tmp_path)
    check_api(project)
    # Then the render's stems are found there and imported at the project start
    assert track_names(project) == ["Mix", "bounce", f"bounce{DASH}vocals", f"bounce{DASH}drums"]
    assert all(track["items"][0]["position"] == 0 for track in project["tracks"][2:])


def test_auto_import_leaves_the_separate_actions_jobs_to_them(
    lua: str, tmp_path: Path, scripts: Path
) -> None:
    # Given a project whose render folder is its own folder, where a "Separate selected
    # items" action's stems also go (recording path = project folder): one job of each
    render_status, render_text = render_job(tmp_path / "Stems")
    render_status.write_text(render_text, encoding="utf-8")
    item_status = render_status.with_name("ba9876543210.status")
    item_status.write_text(
        render_text.replace("0123456789ab", "ba9876543210").replace(
            "origin={}", 'origin={"host":"reaper","position":4,"length":1}'
        ),
        encoding="utf-8",
    )
    body = f"""
F.record_path = {lua_string(tmp_path)}
F.project_file = {lua_string(tmp_path / "song.RPP")}
F.project_info = {{ RENDER_BOUNDSFLAG = 1 }}
F.add_track('Mix', 0)
F.run_script({lua_string(scripts / AUTO)})
F.run_deferred(10, nil, 40)
"""
    project = run_lua(lua, body, tmp_path)
    # Then only the render's job is imported: the other is its action's to import
    assert track_names(project) == ["Mix", "bounce", f"bounce{DASH}vocals", f"bounce{DASH}drums"]
    assert len(project["undo_blocks"]) == 1
