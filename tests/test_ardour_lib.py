"""The Ardour library's pure parts, run by Ardour's own Lua (``ardour7-lua``), from the
scripts folder ``stembridge ardour install`` fills."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.hosts.ardour import default_scripts_path, install, scripts_source
from bridge.hosts.script_install import SHARED_MODULE, shared_module_source

from programs import required_program

DASH = " \u2013 "
LIB = "stembridge_ardour_lib.lua"


@pytest.fixture(scope="module")
def ardour_lua() -> str:
    return required_program(
        "ardour7-lua", package="ardour", purpose="the Ardour library is not run in Ardour's Lua"
    )


def long_string(text: str | Path) -> str:
    """A Lua long-bracket literal holding ``text`` exactly."""
    text = str(text)
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def run_lua(
    ardour_lua: str, body: str, tmp_path: Path, env: dict[str, str] | None = None
) -> list[str]:
    """Run ``body`` with ``out`` to print; return the lines it printed with it."""
    script = tmp_path / "driver.lua"
    script.write_text(
        f"local function out(...) io.write(table.concat({{...}}, '\\t'), '\\n') end\n{body}\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [ardour_lua, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith("@")]


def run_lib(ardour_lua: str, body: str, tmp_path: Path) -> list[str]:
    """Run ``body`` with the installed library as ``lib`` (see :func:`run_lua`)."""
    scripts = tmp_path / "installed"
    install(scripts, command=[sys.executable, "-m", "bridge"])
    return run_lua(
        ardour_lua, f"local lib = dofile({long_string(scripts / LIB)})\n{body}", tmp_path
    )


def test_a_region_is_planned_as_one_files_range_or_rendered_or_refused(
    ardour_lua: str, tmp_path: Path
) -> None:
    body = """
local base = { name = "r", id = "7", start = 10, length = 20, position = 30, rate = 48000 }
local function facts(paths, length)
  local f = {}
  for k, v in pairs(base) do f[k] = v end
  f.paths, f.length = paths, length or base.length
  return f
end
local plan = lib.plan(facts({ "/a.wav", "/a.wav" }))
out("@ok", plan.path, plan.start, plan.length, plan.position, plan.channels, tostring(plan.reason))
local split = lib.plan(facts({ "/a%L.wav", "/a%R.wav" }))
out("@split", tostring(split.render), tostring(split.path), tostring(split.reason))
local nofile = lib.plan(facts({ "" }))
out("@nofile", tostring(nofile.render), tostring(nofile.path), tostring(nofile.reason))
out("@midi", lib.plan(facts({})).reason)
out("@empty", lib.plan(facts({ "/a.wav" }, 0)).reason)
"""
    lines = dict(line.split("\t", 1) for line in run_lib(ardour_lua, body, tmp_path))
    assert lines["@ok"] == "/a.wav\t10\t20\t30\t2\tnil"
    # channels in separate files (as Ardour keeps them) or not in a file are rendered first
    assert lines["@split"] == "true\tnil\tnil"
    assert lines["@nofile"] == "true\tnil\tnil"
    assert "not an audio region" in lines["@midi"]
    assert "empty" in lines["@empty"]


def test_submit_args_give_the_exact_samples_in_seconds(ardour_lua: str, tmp_path: Path) -> None:
    # Given a region 12345 samples into its file, 40000 long, at 44.1 kHz
    body = """
local plan = { name = "r", id = "1234", path = "/a b.wav", start = 12345, length = 40000,
  position = 96000, rate = 44100 }
local args = lib.submit_args(plan, { stems = "vocals,instrumental", model = "", preset = "clean" },
  lib.output_folder("/s/", { name = 'Vox "1"/2' }))
out("@args", table.concat(args, "\\31"))
"""
    (line,) = run_lib(ardour_lua, body, tmp_path)
    args = line.split("\t", 1)[1].split("\x1f")
    # Then the seconds turn back into exactly those samples, and the rest is as asked
    assert args[:2] == ["submit", "/a b.wav"]
    start, length = float(args[args.index("--start") + 1]), float(args[args.index("--length") + 1])
    assert (round(start * 44100), round(length * 44100)) == (12345, 40000)
    assert args[args.index("-o") + 1] == "/s/Stems/Vox _1__2"
    origin = json.loads(args[args.index("--origin") + 1])
    assert origin == {"host": "ardour", "region_id": "1234", "position": 96000, "length": 40000}
    assert "--model" not in args and args[-2:] == ["--preset", "clean"]


def test_commands_reach_the_program_argument_for_argument(ardour_lua: str, tmp_path: Path) -> None:
    awkward = ["it's", 'say "hi"', "a b", "", "$HOME", "`x`", "back\\slash", f"ü{DASH}音"]
    python = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]
    args = ", ".join(long_string(arg) for arg in awkward)
    command = ", ".join(long_string(arg) for arg in python)
    body = f"""
local code, text = lib.run({{ command = {{ {command} }} }}, {{ {args} }})
out("@run", code, (text:gsub("\\n", "")))
"""
    (line,) = run_lib(ardour_lua, body, tmp_path)
    _, code, text = line.split("\t")
    assert code == "0"
    assert json.loads(text) == awkward


def test_the_installed_config_is_found_or_the_fix_is_named(ardour_lua: str, tmp_path: Path) -> None:
    scripts = tmp_path / "config" / "scripts"
    install(scripts, command=["/opt/sb/stembridge", "--flag"])
    extra = tmp_path / "extra"
    body = f"""
local folders = lib.script_folders({long_string(tmp_path / "config")}, {long_string(extra)})
out("@folders", table.concat(folders, "|"))
local config = lib.load_config(folders)
out("@command", table.concat(config.command, "|"))
local none, message = lib.load_config({{ {long_string(extra)} }})
out("@missing", tostring(none), (message:gsub("\\n", " ")))
"""
    lines = dict(line.split("\t", 1) for line in run_lib(ardour_lua, body, tmp_path))
    assert lines["@folders"] == f"{scripts}|{extra}"
    assert lines["@command"] == "/opt/sb/stembridge|--flag"
    assert (
        lines["@missing"].startswith("nil\t") and "stembridge ardour install" in lines["@missing"]
    )


def test_jobs_are_followed_through_their_status_files(ardour_lua: str, tmp_path: Path) -> None:
    # Given one finished job and one still running, as their status files say
    done, running = tmp_path / "done.status", tmp_path / "running.status"
    done.write_text(
        "stembridge_status=1\nstate=done\nprogress=1.0000\nstage=done\n"
        "stem.vocals=/s/v.wav\nstem.instrumental=/s/i.wav\n"
    )
    running.write_text("stembridge_status=1\nstate=running\nprogress=0.4000\nstage=separating\n")
    body = f"""
local function job(path, name) return {{ status_path = path, state = "queued", progress = 0,
  stage = "queued", plan = {{ name = name, position = 480, length = 960 }} }} end
local jobs = {{ job({long_string(done)}, "A"), job({long_string(running)}, "B") }}
local reports, sleeps = {{}}, 0
local finished = lib.wait(jobs, function (fraction, text)
  reports[#reports + 1] = string.format("%.2f|%s", fraction, text:gsub("\\n", "|"))
  return #reports == 2
end, function (seconds) sleeps = sleeps + 1 end)
out("@wait", tostring(finished), sleeps, reports[1])
for _, p in ipairs(lib.placements(jobs[1])) do
  out("@place", p.track, p.stem, p.path, p.position, p.length)
end
"""
    lines = run_lib(ardour_lua, body, tmp_path)
    # When it is waited for and the user cancels at the second report
    # Then the wait says so, after one sleep, with the progress of both
    assert lines[0] == "@wait\tfalse\t1\t0.70|A: done 100%|B: separating 40%"
    # and the finished job's stems go to "<region> <en dash> <stem>" tracks at its place
    assert lines[1:] == [
        f"@place\tA{DASH}vocals\tvocals\t/s/v.wav\t480\t960",
        f"@place\tA{DASH}instrumental\tinstrumental\t/s/i.wav\t480\t960",
    ]


def test_damaged_status_files_neither_stop_nor_stall_the_wait(
    ardour_lua: str, tmp_path: Path
) -> None:
    # Given a finished job whose status file was saved with CRLF line ends, and a running
    # one whose progress is not a number from 0 to 1 (the REAPER library's fuzzed cases)
    crlf, huge = tmp_path / "crlf.status", tmp_path / "huge.status"
    crlf.write_bytes(b"stembridge_status=1\r\nstate=done\r\nprogress=1\r\nstage=done\r\n")
    huge.write_text("stembridge_status=1\nstate=running\nprogress=1e999\nstage=separating\n")
    body = f"""
local function job(path, name) return {{ status_path = path, state = "queued", progress = 0.25,
  stage = "queued", plan = {{ name = name, position = 0, length = 1 }} }} end
local jobs = {{ job({long_string(crlf)}, "A"), job({long_string(huge)}, "B") }}
out("@pending", lib.poll(jobs), jobs[1].state, jobs[2].progress)
out("@summary", (lib.summary(jobs):gsub("\\n", "|")))
"""
    # When they are read, Then the first is done and the second keeps its last progress
    assert run_lib(ardour_lua, body, tmp_path) == [
        "@pending\t1\tdone\t0.25",
        "@summary\tA: done 100%|B: separating 25%",
    ]


def test_the_action_loads_in_ardours_lua_and_its_non_gui_names_exist(
    ardour_lua: str, tmp_path: Path
) -> None:
    # Headless Ardour has no Editor, Editing or LuaDialog: those are only in the GUI. What
    # can be checked here is that the action parses as Ardour's Lua, declares itself as an
    # editor action, yields its function without relying on upvalues, and that the names
    # it uses from the library exist.
    action = scripts_source() / "stembridge_separate.lua"
    body = f"""
local descriptor
function ardour(d) descriptor = d end
local chunk = assert(loadfile({long_string(action)}))
chunk()
out("@type", descriptor.type, descriptor.name)
out("@factory", type(factory()))
-- Ardour keeps the factory as bytecode (string.dump): upvalues other than _ENV would be lost
local upvalues = {{}}
for i = 1, 20 do
  local upvalue = debug.getupvalue(factory, i)
  if upvalue then upvalues[#upvalues + 1] = upvalue end
end
out("@upvalues", table.concat(upvalues, ","))
local names = {{ ARDOUR.SrcQuality.SrcBest, ARDOUR.MidiTrackNameSource.SMFTrackName,
  ARDOUR.MidiTempoMapDisposition.SMFTempoIgnore, ARDOUR.PluginInfo, C.StringVector,
  ARDOUR.LuaAPI.usleep, ARDOUR.user_config_directory, Temporal.timepos_t }}
local present = 0
for i = 1, 8 do if names[i] ~= nil then present = present + 1 end end
out("@names", present)
"""
    lines = dict(line.split("\t", 1) for line in run_lib(ardour_lua, body, tmp_path))
    assert lines["@type"] == "EditorAction\tStemBridge: separate selected regions"
    assert lines["@factory"] == "function"
    assert lines["@upvalues"] == "_ENV"
    assert lines["@names"] == "8"


# --- loading the library and the shared module as Ardour does ---------------------------

#: The editor action as Ardour runs it: the script defines `factory`, Ardour keeps it as
#: bytecode and later calls the function it returns. Headless Ardour has no GUI, so the
#: dialogs and the editor's selection (empty) are stand-ins that record what is shown.
RUN_ACTION = """
function ardour(descriptor) end
LuaDialog = { MessageType = { Info = 0 }, ButtonType = { Close = 0 } }
function LuaDialog.Message(title, text)
  return { run = function () out("@told", (text:gsub("\\n", " "))) end }
end
local none = { iter = function () return function () end end }
local regions = { regionlist = function () return none end }
Editor = { get_selection = function () return { regions = regions } end }
assert(loadfile(ACTION))()
load(string.dump(factory))()()
"""


@pytest.fixture
def config_home(tmp_path: Path) -> Path:
    """XDG_CONFIG_HOME with StemBridge installed into Ardour 7's default scripts folder."""
    home = tmp_path / "config"
    install(default_scripts_path(system="Linux", env={"XDG_CONFIG_HOME": str(home)}), command=["x"])
    return home


def run_action(ardour_lua: str, tmp_path: Path, config_home: Path) -> list[str]:
    action = config_home / "ardour7" / "scripts" / "stembridge_separate.lua"
    body = f"ACTION = {long_string(action)}\n{RUN_ACTION}"
    env = {"XDG_CONFIG_HOME": str(config_home), "ARDOUR_LUA_PATH": ""}
    return run_lua(ardour_lua, body, tmp_path, env)


def test_the_action_loads_the_library_and_the_shared_module_from_the_scripts_folder(
    ardour_lua: str, tmp_path: Path, config_home: Path
) -> None:
    # When the installed action runs in Ardour's Lua with no region selected
    # Then it got as far as the selection: it found the library in Ardour's scripts folder,
    # the library loaded the module beside it, and the module read the config beside them
    assert run_action(ardour_lua, tmp_path, config_home) == [
        "@told\tSelect one or more audio regions first."
    ]


def test_without_the_shared_module_the_action_names_it_and_the_fix(
    ardour_lua: str, tmp_path: Path, config_home: Path
) -> None:
    # Given an install whose shared module was deleted, and one in the folder above it
    scripts = config_home / "ardour7" / "scripts"
    (scripts / SHARED_MODULE).unlink()
    shutil.copy(shared_module_source() / SHARED_MODULE, scripts.parent)

    # When the action runs, Then it tells which file is missing where, and what to run
    (told,) = run_action(ardour_lua, tmp_path, config_home)
    assert str(scripts / SHARED_MODULE) in told and "Run `stembridge ardour install`" in told


def test_the_library_finds_the_module_beside_it_on_windows_too(
    ardour_lua: str, tmp_path: Path
) -> None:
    # Given the installed files named as Ardour on Windows names them: a backslash is a
    # plain character of a file name here, so "ardour7\\scripts\\<name>" in one folder
    # stands for that folder, and a library that took its folder up to the last "/" only
    # would not find the module
    installed, windows = tmp_path / "installed", tmp_path / "windows"
    install(installed, command=["C:\\StemBridge\\stembridge.exe"])
    windows.mkdir()
    prefix = "ardour7\\scripts\\"
    for path in installed.iterdir():
        shutil.copy(path, windows / (prefix + path.name))
    folder = f"{windows}/{prefix}"
    # When the action's way of loading it (folder, separator, name) loads it from there
    body = f"""
local lib = assert(loadfile({long_string(folder + LIB)}))()
local config = assert(lib.load_config({{ {long_string(folder)} }}))
out("@command", config.command[1])
"""
    # Then the library works, with the config beside it
    assert run_lua(ardour_lua, body, tmp_path) == ["@command\tC:\\StemBridge\\stembridge.exe"]
