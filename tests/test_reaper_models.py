"""Choosing models in the REAPER dialog: a "?" in the model field (or after "<stem>@" in
the stems field) shows the installed models in a gfx.showmenu menu; "a+b" is an ensemble;
routed stems reach ``stembridge submit`` as typed. Run in Lua 5.4 against the fake
``reaper``, with the real ``stembridge models list`` and ``stembridge submit``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_reaper_scripts import DIALOG, check_api, lua, lua_string, run_lua, scripts

from bridge.hosts.reaper import install
from bridge.jobs.store import JobStore
from bridge.models.registry import ImportedFolder, ImportedModel, record

from processes import default_config
from signals import music, write_audio
from test_families import bs_roformer

__all__ = ["lua", "scripts"]  # fixtures

DEMUCS = "drums, bass, other, vocals"


def one_item(tmp_path: Path) -> str:
    """Lua: a project with one selected item playing a file."""
    source = write_audio(tmp_path / "media" / "take.wav", music(44100))
    return f"""
F.record_path = {lua_string(tmp_path)}
F.add_item(F.add_track('Keys', 0), {{ name = 'k', position = 0, length = 0.5,
  source = F.source({lua_string(source)}) }})
"""


def texts(project: dict[str, Any]) -> list[str]:
    return [menu["text"] for menu in project["menus"]]


def submits(project: dict[str, Any]) -> list[str]:
    return [line for line in project["exec"] if " 'submit' " in line]


# --- the fake's menus, as the SDK documents them ------------------------------------------


def test_the_fakes_menu_numbers_items_as_reaper_does(lua: str, tmp_path: Path) -> None:
    # Given the SDK's own example menu, plus an item with an access key and a literal "&"
    menu = (
        "first item, followed by separator||!second item, checked|>third item which spawns "
        "a submenu|#first item in submenu, grayed out|<second and last item in submenu|"
        "fourth item in top menu|&Rock && roll"
    )
    body = f"""
local menu = {lua_string(menu)}
F.notes = {{ tostring(gfx.showmenu(menu)) }}
gfx.init("menu", 0, 0)
F.menu_picks = {{ "fourth item in top menu", "second and last item in submenu", "first item, \
followed by separator", "Rock & roll", false }}
for i = 1, 5 do F.notes[#F.notes + 1] = tostring(gfx.showmenu(menu)) end
F.menu_picks = {{ "first item in submenu, grayed out" }}
F.notes[#F.notes + 1] = tostring(pcall(gfx.showmenu, menu))
"""
    project = run_lua(lua, body, tmp_path)
    # Then without a window nothing showed (REAPER before 6.82); then the numbers skip the
    # separator and the submenu's header; a click beside it is 0; a greyed item cannot be had
    assert project["notes"] == ["0", "5", "4", "1", "6", "0", "false"]
    (first, *_) = project["menus"]
    items = [(i["number"], i["label"], i["checked"], i["greyed"]) for i in first["items"]]
    assert items == [
        (1, "first item, followed by separator", False, False),
        (2, "second item, checked", True, False),
        (3, "first item in submenu, grayed out", False, True),
        (4, "second and last item in submenu", False, False),
        (5, "fourth item in top menu", False, False),
        (6, "Rock & roll", False, False),
    ]


# --- the menu the library makes --------------------------------------------------------------


def test_the_menu_lists_models_then_ensembles_checking_the_named_ones(
    lua: str, tmp_path: Path, scripts: Path
) -> None:
    rows = """{
  { name = "htdemucs", family = "demucs", stems = { "drums", "vocals" }, members = {} },
  { name = "Rock & Roll.ckpt", family = "bs_roformer", stems = { "vocals", "other" },
    members = {} },
  { name = "a|b.ckpt", family = "mdx_net", stems = { "vocals" }, members = {} },
  { name = "#1.onnx", family = "mdx_net", stems = { "drums" }, members = {} },
  { name = "vocals-best", family = "ensemble", stems = { "vocals", "instrumental" },
    members = { "x", "y" } },
}"""
    body = f"""
local lib = dofile({lua_string(scripts / "stembridge_lib.lua")})
local rows = {rows}
local function show(...)
  local menu, names = lib.model_menu(...)
  F.notes[#F.notes + 1] = menu .. " => " .. table.concat(names, ",")
end
F.notes = {{}}
show(rows, nil, {{ "htdemucs", "vocals-best" }}, nil)
show(rows, nil, {{}}, "vocals")
show(rows, nil, {{}}, "piano")
show({{}}, nil, {{}}, nil)
show(nil, "stembridge models list failed: a|b\\nmore", {{}}, nil)
"""
    notes = run_lua(lua, body, tmp_path)["notes"]
    assert notes == [
        # checked, "&" doubled (an access key otherwise), a leading flag character kept as
        # text, a name with the item separator left out; ensembles after a separator
        "!htdemucs (drums, vocals)|Rock && Roll.ckpt (vocals, other)| #1.onnx (drums)||"
        "!vocals-best (vocals, instrumental): x + y"
        " => htdemucs,Rock & Roll.ckpt,#1.onnx,vocals-best",
        # for a routed stem, only the models that give it
        "htdemucs (drums, vocals)|Rock && Roll.ckpt (vocals, other)||"
        "vocals-best (vocals, instrumental): x + y => htdemucs,Rock & Roll.ckpt,vocals-best",
        "#No installed model gives piano => ",
        "#No models installed: run stembridge models install (or models import) first => ",
        "#stembridge models list failed: a/b => ",
    ]


# --- the dialog end to end ------------------------------------------------------------------


def test_picking_models_builds_an_ensemble_and_a_route_that_submit_takes(
    lua: str, tmp_path: Path, scripts: Path, model_dir: Path
) -> None:
    # Given the tiny demucs models installed, an imported RoFormer whose files are there,
    # and no daemon (the job waits in the store)
    state = tmp_path / "state"
    default_config(state)
    folder = tmp_path / "UVR"
    folder.mkdir()
    checkpoint = bs_roformer(folder, name="Rock & Roll")
    files = (checkpoint, checkpoint.with_suffix(".yaml"))
    roformer = ImportedModel(
        name=files[0].name, family="bs_roformer", stems=("vocals", "other"), files=files
    )
    record(ImportedFolder(folder=folder, models=(roformer,)))
    # When the dialog runs: the user asks for the list in the model field after "htdemucs+"
    # and picks htdemucs_ft; the dialog comes back, they press OK on "vocals@?" in the
    # stems field and pick the RoFormer; the dialog comes back and they press OK
    body = (
        one_item(tmp_path)
        + f"""
F.mouse = {{ 300, 200 }}
F.inputs = {{ 'vocals@?;drums;bass;other,htdemucs+?,clean,y' }}
F.menu_picks = {{ 'htdemucs_ft ({DEMUCS})', 'Rock & Roll.ckpt (vocals, other)' }}
F.run_script({lua_string(scripts / DIALOG)})
F.run_deferred(5, nil, 1)
"""
    )
    project = run_lua(lua, body, tmp_path)
    check_api(project)
    # Then the first menu offered every installed model, the one named checked, at the mouse
    every = (
        f"!htdemucs ({DEMUCS})|htdemucs_ft ({DEMUCS})|htdemucs_6s ({DEMUCS}, guitar, piano)|"
        f"hdemucs_mmi ({DEMUCS})|Rock && Roll.ckpt (vocals, other)"
    )
    # (the second: those that give vocals, which all do here; nothing named is checked)
    assert texts(project) == [every, every.removeprefix("!")]
    assert [(menu["x"], menu["y"]) for menu in project["menus"]] == [(300, 200)] * 2
    # and each time the dialog came back with the pick in place of the "?"
    shown = [dialog["shown"] for dialog in project["dialogs"]]
    assert shown == [
        "vocals;instrumental,htdemucs,clean,y",
        "vocals@?;drums;bass;other,htdemucs+htdemucs_ft,clean,y",
        "vocals@Rock & Roll.ckpt;drums;bass;other,htdemucs+htdemucs_ft,clean,y",
    ]
    # The job went to the daemon's store with the ensemble and the route as asked
    (line,) = submits(project)
    assert "'--model' 'htdemucs' '--model' 'htdemucs_ft'" in line
    assert "'--stems' 'vocals@Rock & Roll.ckpt,drums,bass,other'" in line
    (told,) = project["messages"]
    assert "daemon is not running" in told
    (job,) = JobStore(state).list()
    assert job.spec.separation.model == ("htdemucs", "htdemucs_ft")
    assert job.spec.separation.stems == ("vocals@Rock & Roll.ckpt", "drums", "bass", "other")
    # and the choices are remembered for the next run
    assert project["extstate"]["StemBridge/model"] == "htdemucs+htdemucs_ft"
    assert project["extstate"]["StemBridge/stems"] == "vocals@Rock & Roll.ckpt,drums,bass,other"


def test_a_menu_closed_without_a_choice_leaves_the_field_without_its_question_mark(
    lua: str, tmp_path: Path, scripts: Path
) -> None:
    # Given no model installed, and choices remembered from an earlier run
    body = (
        one_item(tmp_path)
        + """
reaper.SetExtState('StemBridge', 'model', 'htdemucs_ft', true)
reaper.SetExtState('StemBridge', 'stems', 'vocals@x,drums', true)
-- When the user asks for the list, closes the menu (it offers nothing to pick) and then
-- cancels the dialog that comes back
F.inputs = { 'vocals@x;drums,htdemucs_ft+?,clean,y', false }
F.menu_picks = { false }
F.run_script(SCRIPT)
"""
    )
    project = run_lua(lua, f"SCRIPT = {lua_string(scripts / DIALOG)}\n{body}", tmp_path)
    # Then the menu said why it is empty, the dialog came back as typed minus the "?"
    assert texts(project) == [
        "#No models installed: run stembridge models install (or models import) first"
    ]
    assert [dialog["shown"] for dialog in project["dialogs"]] == [
        "vocals@x;drums,htdemucs_ft,clean,y",
        "vocals@x;drums,htdemucs_ft+,clean,y",
    ]
    # and nothing was submitted or remembered anew
    assert submits(project) == []
    assert project["extstate"]["StemBridge/model"] == "htdemucs_ft"


def test_the_menu_says_why_stembridge_could_not_list_the_models(lua: str, tmp_path: Path) -> None:
    # Given scripts whose recorded stembridge command is gone
    resource = tmp_path / "REAPER"
    resource.mkdir()
    install(resource, command=[str(tmp_path / "gone" / "stembridge")])
    script = resource / "Scripts" / "StemBridge" / DIALOG
    body = (
        one_item(tmp_path)
        + f"""
F.inputs = {{ 'vocals;instrumental,?,clean,y', false }}
F.run_script({lua_string(script)})
"""
    )
    project = run_lua(lua, body, tmp_path)
    # Then the menu's one (greyed) item says what failed
    (menu,) = texts(project)
    assert menu.startswith("#stembridge models list failed: ") and "not found" in menu
    assert "|" not in menu


def test_an_ensemble_typed_in_the_model_field_is_one_model_flag_each(
    lua: str, tmp_path: Path, scripts: Path
) -> None:
    # Given no daemon (the job waits in the store)
    state = tmp_path / "state"
    default_config(state)
    # When the user types two models joined with "+" (blanks around it) and a routed stem
    body = (
        one_item(tmp_path)
        + f"""
F.inputs = {{ 'vocals@hdemucs_mmi;drums;bass;other, htdemucs + htdemucs_ft ,clean,n' }}
F.run_script({lua_string(scripts / DIALOG)})
F.run_deferred(5, nil, 1)
"""
    )
    project = run_lua(lua, body, tmp_path)
    # Then no menu showed, and submit got both models and the route
    assert project["menus"] == []
    (job,) = JobStore(state).list()
    assert job.spec.separation.model == ("htdemucs", "htdemucs_ft")
    assert job.spec.separation.stems == ("vocals@hdemucs_mmi", "drums", "bass", "other")
