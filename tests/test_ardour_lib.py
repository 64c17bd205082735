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


# --- choosing models in the dialog ---------------------------------------------------------

#: Lua: ``dump(fields)`` prints each LuaDialog field: type, key, title, default, and a
#: dropdown's values as "label=value" (sorted, as Ardour sorts them), a line each.
DUMP_FIELDS = r"""
local function dump(fields)
  for _, field in ipairs(fields) do
    local values = {}
    for label, value in pairs(field.values or {}) do
      values[#values + 1] = type(label) .. ":" .. label .. "=" .. type(value) .. ":"
        .. tostring(value)
    end
    table.sort(values)
    out("@field", field.type, tostring(field.key), (field.title:gsub("\n", "\\n")),
      tostring(field.default),
      table.concat(values, "|"))
  end
end
"""


def dialog(lines: list[str]) -> list[dict[str, object]]:
    """The dumped fields, checked against what Ardour 7's LuaDialog needs of them
    (gtk2_ardour/luadialog.cc): a type and a title, a key for what returns a value; a
    dropdown's labels and values are strings (a table would make a submenu), and its
    default is one of the labels (else the first label, sorted, is what it shows)."""
    fields = []
    for line in lines:
        kind, key, title, default, values = line.split("\t")[1:]
        title = title.replace("\\n", "\n")
        field: dict[str, object] = {"type": kind, "key": key, "title": title, "default": default}
        assert kind in ("dropdown", "entry", "checkbox", "label") and title, line
        if kind != "label":
            assert key != "nil", line
        if kind == "dropdown":
            pairs = [item.split("=", 1) for item in values.split("|")]
            assert all(a.startswith("string:") and b.startswith("string:") for a, b in pairs)
            choices = {a.removeprefix("string:"): b.removeprefix("string:") for a, b in pairs}
            assert default in choices, line
            field["values"] = choices
        fields.append(field)
    return fields


def python_command() -> str:
    """Lua: a config that runs this checkout's stembridge."""
    return (
        "{ command = { "
        + ", ".join(long_string(arg) for arg in (sys.executable, "-m", "bridge"))
        + " } }"
    )


def test_the_dialog_offers_the_installed_models_with_their_stems(
    ardour_lua: str, tmp_path: Path, model_dir: Path
) -> None:
    # Given the tiny demucs models installed
    body = (
        DUMP_FIELDS
        + f"""
local models, problem = lib.installed_models({python_command()})
out("@problem", tostring(problem))
dump(lib.dialog_fields(models, problem))
"""
    )
    lines = run_lib(ardour_lua, body, tmp_path)
    assert lines[0] == "@problem\tnil"
    fields = dialog(lines[1:])
    # Then the dialog asks for stems (a choice or words), a model (an installed one or
    # names), a preset and the mute choice, and says how to route and ensemble
    assert [(f["type"], f["key"]) for f in fields] == [
        ("dropdown", "stems"),
        ("entry", "stem_words"),
        ("dropdown", "model"),
        ("entry", "models"),
        ("label", "nil"),
        ("entry", "preset"),
        ("checkbox", "mute"),
    ]
    assert "vocals@bs_roformer_viperx_1297,drums,bass,other" in str(fields[4]["title"])
    # and the models' menu holds each installed model, "_" doubled (GTK reads a single
    # one as the underline of an access key), the default (stems decide) chosen
    demucs = "(drums, bass, other, vocals)"
    assert fields[2]["values"] == {
        "Default: htdemucs (htdemucs__6s for 6 stems)": "",
        f"htdemucs {demucs}": "htdemucs",
        f"htdemucs__ft {demucs}": "htdemucs_ft",
        "htdemucs__6s (drums, bass, other, vocals, guitar, piano)": "htdemucs_6s",
        f"hdemucs__mmi {demucs}": "hdemucs_mmi",
    }
    assert fields[2]["default"] == "Default: htdemucs (htdemucs__6s for 6 stems)"
    assert fields[0]["values"]["6 stems: + guitar, piano (htdemucs__6s)"] == (  # type: ignore[index]
        "drums,bass,other,vocals,guitar,piano"
    )


def test_the_dialog_says_why_the_models_could_not_be_listed(
    ardour_lua: str, tmp_path: Path
) -> None:
    gone = long_string(tmp_path / "gone" / "stembridge")
    body = (
        DUMP_FIELDS + f"dump(lib.dialog_fields(lib.installed_models({{ command = {{ {gone} }} }})))"
    )
    fields = dialog(run_lib(ardour_lua, body, tmp_path))
    (told,) = [
        f["title"] for f in fields if f["type"] == "label" and "could not" in str(f["title"])
    ]
    assert str(told).startswith(
        "Installed models could not be listed: stembridge models list failed"
    )
    assert "not found" in str(told) and "\n" not in str(told)
    (models,) = [f for f in fields if f["key"] == "model"]
    assert list(models["values"]) == ["Default: htdemucs (htdemucs__6s for 6 stems)"]  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("answer", "stems", "models"),
    [
        ({"stems": "vocals,instrumental"}, "vocals,instrumental", ["htdemucs"]),
        ({"stems": "drums,bass,other,vocals,guitar,piano"}, None, ["htdemucs_6s"]),
        ({"stems": "vocals,instrumental", "model": "vocals-best"}, None, ["vocals-best"]),
        (
            {"stem_words": " vocals@hdemucs_mmi,drums,bass,other ", "model": "htdemucs_ft"},
            "vocals@hdemucs_mmi,drums,bass,other",
            ["htdemucs_ft"],
        ),
        (
            {"model": "htdemucs_ft", "models": "htdemucs + htdemucs_ft"},
            None,
            ["htdemucs", "htdemucs_ft"],
        ),
    ],
    ids=["default", "6-stems", "dropdown", "routed", "ensemble"],
)
def test_what_the_dialog_answers_is_what_submit_gets(
    ardour_lua: str, tmp_path: Path, answer: dict[str, str], stems: str | None, models: list[str]
) -> None:
    # Given an answer of the dialog (the dropdowns' values, the entries as typed)
    full = {
        "stems": "vocals,instrumental",
        "stem_words": "",
        "model": "",
        "models": "",
        "preset": "clean",
        **answer,
    }
    fields = ", ".join(f"{key} = {long_string(value)}" for key, value in full.items())
    body = f"""
local options = lib.dialog_options({{ {fields}, mute = true }})
local plan = {{ name = "r", id = "1", path = "/a.wav", start = 0, length = 10, position = 0,
  rate = 10 }}
out("@args", table.concat(lib.submit_args(plan, options, "/s"), "\\31"))
"""
    (line,) = run_lib(ardour_lua, body, tmp_path)
    args = line.split("\t", 1)[1].split("\x1f")
    # Then typed stems and models win over the dropdowns, and "+" makes one --model each
    assert args[args.index("--stems") + 1] == (stems or full["stems"])
    assert [args[i + 1] for i, arg in enumerate(args) if arg == "--model"] == models


def test_the_action_asks_with_the_installed_models_and_stops_when_cancelled(
    ardour_lua: str, tmp_path: Path, model_dir: Path
) -> None:
    # Given the action installed with this checkout's stembridge, and one region selected
    home = tmp_path / "config"
    scripts = default_scripts_path(system="Linux", env={"XDG_CONFIG_HOME": str(home)})
    install(scripts, command=[sys.executable, "-m", "bridge"])
    body = f"""
ACTION = {long_string(scripts / "stembridge_separate.lua")}
{DUMP_FIELDS}
function ardour(descriptor) end
LuaDialog = {{ MessageType = {{ Info = 0 }}, ButtonType = {{ Close = 0 }} }}
function LuaDialog.Message(title, text)
  return {{ run = function () out("@told", (text:gsub("\\n", " "))) end }}
end
-- The user reads the dialog and cancels it
function LuaDialog.Dialog(title, fields)
  out("@dialog", title)
  dump(fields)
  return {{ run = function () return nil end }}
end
local one = {{ iter = function ()
  local given = false
  return function () if not given then given = true return {{}} end end
end }}
local regions = {{ regionlist = function () return one end }}
Editor = {{ get_selection = function () return {{ regions = regions }} end }}
assert(loadfile(ACTION))()
load(string.dump(factory))()()
out("@done")
"""
    env = {"XDG_CONFIG_HOME": str(home), "ARDOUR_LUA_PATH": ""}
    lines = run_lua(ardour_lua, body, tmp_path, env)
    # Then the dialog it showed is the library's, with the installed models in it, and
    # nothing more happened
    assert lines[0] == "@dialog\tStemBridge: separate selected regions"
    fields = dialog(lines[1:-1])
    (models,) = [f for f in fields if f["key"] == "model"]
    assert set(models["values"].values()) == {  # type: ignore[attr-defined]
        "",
        "htdemucs",
        "htdemucs_ft",
        "htdemucs_6s",
        "hdemucs_mmi",
    }
    assert lines[-1] == "@done"
