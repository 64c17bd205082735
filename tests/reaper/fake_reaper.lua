-- A fake `reaper` (and `gfx`) for running the StemBridge ReaScripts in plain Lua 5.4.
--
-- It keeps a small project model (tracks, items, takes, sources, undo blocks,
-- ExtState) and implements the API functions the scripts use with the SDK's Lua
-- signatures and return conventions (see integrations/reaper/sdk/reaper_lua_api.tsv;
-- tests check every function here against it). Real processes run: ExecProcess
-- runs the command line through /bin/sh and returns "exit code\noutput".
-- Pointers are tables; a deleted object no longer validates.
--
-- What REAPER shares between scripts and what it keeps apart is modelled too:
--  * each script runs in its own Lua state (F.run_script gives it its own globals, its
--    own `gfx` window, its own defer and atexit functions); what scripts share is the
--    `reaper` API: ExtState (global, in memory, written to reaper-extstate.ini only
--    with persist=true) and the project with its ExtState;
--  * defer loops of several scripts run side by side, one function after another on
--    REAPER's main thread, about 30 rounds a second (F.tick_seconds of time_precise);
--    a script whose last deferred function returned without deferring has ended, and
--    its atexit functions run, as when the user terminates it (F.terminate);
--  * a gfx window can be closed by the user (F.close_window): gfx.getchar() then
--    returns -1 and nothing drawn shows, until gfx.init opens a new window;
--  * gfx.showmenu numbers the items as REAPER does (see it below); the test chooses one
--    by its text (F.menu_picks), and every menu shown is kept (F.menus);
--  * EnumerateFiles answers from a cached listing of the directory until it is called
--    with fileindex -1 ("force re-read of directory (invalidate cache)", the SDK);
--  * GetProjectPath is the project's recording path (F.record_path), not the folder of
--    the .RPP, which EnumProjects gives (F.project_file, "" while never saved);
--  * AddRemoveReaScript adds to the action list at once, but only a call with
--    commit=true writes the list (F.kb, what reaper-kb.ini holds).

local F = {
  tracks = {}, extstate = {}, ini = {}, projext = {}, undo = { open = 0, blocks = {} },
  messages = {}, answers = {}, inputs = {}, exec = {}, deferred = {}, instances = {},
  calls = {}, toggles = {}, registered = {}, actions = {}, kb = {}, listings = {}, renders = 0,
  menus = {}, menu_picks = {}, dialogs = {},
  drawn = {}, record_path = "/tmp", project_file = "", project = { kind = "ReaProject" },
  script = "", os = "Linux-x86_64", clock = 0, tick_seconds = 1 / 30,
}
local R = {}
local guids = 0

--- REAPER's GUID text form, unique within the fake.
local function new_guid()
  guids = guids + 1
  return string.format("{%08X-0000-4000-8000-%012X}", guids, guids)
end

-- Sources ------------------------------------------------------------------------

--- Reads rate, channels and length from a WAV header, as REAPER would from the file.
local function wav_info(path)
  local file = io.open(path, "rb")
  if not file then return nil end
  local data = file:read(1 << 16) or ""
  file:close()
  if data:sub(1, 4) ~= "RIFF" or data:sub(9, 12) ~= "WAVE" then return nil end
  local pos, rate, channels, block = 13, 0, 0, 0
  while pos + 8 <= #data do
    local id, size = data:sub(pos, pos + 3), string.unpack("<I4", data, pos + 4)
    if id == "fmt " then
      channels, rate = string.unpack("<I2I4", data, pos + 10)
      block = string.unpack("<I2", data, pos + 20)
    elseif id == "data" then
      return { rate = rate, channels = channels, length = (size // block) / rate }
    end
    pos = pos + 8 + size + (size % 2)
  end
  return nil
end

function F.source(path)
  local info = wav_info(path) or { rate = 0, channels = 0, length = 0 }
  return { kind = "file", path = path, rate = info.rate, channels = info.channels, length = info.length }
end

function F.section(parent, offset, length, reversed)
  return { kind = "section", parent = parent, offs = offset, len = length, rev = reversed or false,
    rate = parent.rate, channels = parent.channels, length = length }
end

-- Project building (used by the tests, not by scripts) --------------------------------

function F.add_track(name, depth)
  local track = { name = name or "", depth = depth or 0, items = {}, guid = new_guid() }
  F.tracks[#F.tracks + 1] = track
  return track
end

function F.add_item(track, spec)
  local item = { track = track, position = spec.position or 0, length = spec.length or 1,
    mute = 0, loopsrc = spec.loopsrc or 0, selected = spec.selected ~= false, takes = {},
    guid = new_guid() }
  local take = { item = item, name = spec.name or "", source = spec.source, startoffs = spec.startoffs or 0,
    playrate = spec.playrate or 1, pitch = spec.pitch or 0, chanmode = spec.chanmode or 0,
    volume = spec.volume or 1, fx = spec.fx or 0, midi = spec.midi or false }
  item.takes[1], item.active = take, take
  track.items[#track.items + 1] = item
  return item
end

local function all_items()
  local items = {}
  for _, track in ipairs(F.tracks) do
    for _, item in ipairs(track.items) do items[#items + 1] = item end
  end
  return items
end

local function index_of(list, value)
  for i, v in ipairs(list) do if v == value then return i end end
end

-- Items, takes, sources --------------------------------------------------------------

function R.CountSelectedMediaItems(proj)
  local n = 0
  for _, item in ipairs(all_items()) do if item.selected then n = n + 1 end end
  return n
end

function R.GetSelectedMediaItem(proj, selitem)
  local n = -1
  for _, item in ipairs(all_items()) do
    if item.selected then
      n = n + 1
      if n == selitem then return item end
    end
  end
  return nil
end

function R.SelectAllMediaItems(proj, selected)
  for _, item in ipairs(all_items()) do item.selected = selected end
end

function R.SetMediaItemSelected(item, selected) item.selected = selected end

function R.GetActiveTake(item) return item.active end

function R.TakeIsMIDI(take) return take.midi end

function R.GetTakeName(take) return take.name end

function R.GetMediaItemTake_Source(take) return take.source end

function R.GetMediaItem_Track(item) return item.track end

function R.TakeFX_GetCount(take) return take.fx end

function R.GetMediaSourceParent(src)
  if src.kind == "section" then return src.parent end
  return nil
end

function R.PCM_Source_GetSectionInfo(src)
  if src.kind ~= "section" then return false, 0, src.length, false end
  return true, src.offs, src.len, src.rev
end

function R.GetMediaSourceFileName(source)
  if source.kind == "file" then return source.path end
  return ""
end

function R.GetMediaSourceSampleRate(src) return src.rate end

function R.GetMediaSourceNumChannels(src) return src.channels end

function R.GetMediaSourceLength(source) return source.length, false end

function R.PCM_Source_CreateFromFile(filename) return F.source(filename) end

function R.PCM_Source_Destroy(src) src.destroyed = true end

local ITEM_KEYS = { D_POSITION = "position", D_LENGTH = "length", B_MUTE = "mute", B_LOOPSRC = "loopsrc" }
-- D_VOL is negative when the take's polarity is flipped (the SDK; a take has no B_PHASE,
-- which is a track's and a send's attribute). I_CHANMODE: 0=normal, 1=reverse stereo,
-- 2=downmix, 3=left, 4=right.
local TAKE_KEYS = { D_STARTOFFS = "startoffs", D_PLAYRATE = "playrate", D_PITCH = "pitch",
  I_CHANMODE = "chanmode", D_VOL = "volume" }

function R.GetMediaItemInfo_Value(item, parmname)
  if parmname == "B_UISEL" then return item.selected and 1 or 0 end
  return item[ITEM_KEYS[parmname] or error("fake: item key " .. parmname)]
end

function R.SetMediaItemInfo_Value(item, parmname, newvalue)
  item[ITEM_KEYS[parmname] or error("fake: item key " .. parmname)] = newvalue
  return true
end

function R.GetMediaItemTakeInfo_Value(take, parmname)
  return take[TAKE_KEYS[parmname] or error("fake: take key " .. parmname)]
end

function R.SetMediaItemTakeInfo_Value(take, parmname, newvalue)
  take[TAKE_KEYS[parmname] or error("fake: take key " .. parmname)] = newvalue
  return true
end

function R.GetSetMediaItemTakeInfo_String(tk, parmname, stringNeedBig, setNewValue)
  assert(parmname == "P_NAME", "fake: take string " .. parmname)
  if setNewValue then tk.name = stringNeedBig end
  return true, tk.name
end

function R.CountMediaItems(proj) return #all_items() end

function R.GetMediaItem(proj, itemidx) return all_items()[itemidx + 1] end

function R.GetSetMediaItemInfo_String(item, parmname, stringNeedBig, setNewValue)
  assert(parmname == "GUID", "fake: item string " .. parmname)
  if setNewValue then item.guid = stringNeedBig end
  return true, item.guid
end

function R.AddMediaItemToTrack(tr)
  local item = { track = tr, position = 0, length = 0, mute = 0, loopsrc = 0, selected = false,
    takes = {}, guid = new_guid() }
  tr.items[#tr.items + 1] = item
  return item
end

function R.AddTakeToMediaItem(item)
  local take = { item = item, name = "", startoffs = 0, playrate = 1, pitch = 0, chanmode = 0,
    volume = 1, fx = 0, midi = false }
  item.takes[#item.takes + 1] = take
  item.active = item.active or take
  return take
end

function R.SetMediaItemTake_Source(take, source)
  take.source = source
  return true
end

-- Tracks -------------------------------------------------------------------------------

function R.CountTracks(proj) return #F.tracks end

function R.GetTrack(proj, trackidx) return F.tracks[trackidx + 1] end

function R.InsertTrackAtIndex(idx, wantDefaults)
  table.insert(F.tracks, math.min(idx, #F.tracks) + 1, { name = "", depth = 0, items = {}, guid = new_guid() })
end

function R.GetMediaTrackInfo_Value(tr, parmname)
  if parmname == "IP_TRACKNUMBER" then return index_of(F.tracks, tr) end
  if parmname == "I_FOLDERDEPTH" then return tr.depth end
  error("fake: track key " .. parmname)
end

function R.SetMediaTrackInfo_Value(tr, parmname, newvalue)
  assert(parmname == "I_FOLDERDEPTH", "fake: track key " .. parmname)
  tr.depth = newvalue
  return true
end

function R.GetSetMediaTrackInfo_String(tr, parmname, stringNeedBig, setNewValue)
  local key = ({ P_NAME = "name", GUID = "guid" })[parmname] or error("fake: track string " .. parmname)
  if setNewValue then tr[key] = stringNeedBig end
  return true, tr[key]
end

function R.ValidatePtr2(proj, pointer, ctypename)
  if ctypename == "MediaTrack*" then return index_of(F.tracks, pointer) ~= nil end
  if ctypename == "MediaItem*" then return index_of(all_items(), pointer) ~= nil end
  return false
end

-- Actions --------------------------------------------------------------------------------

--- 41999 "Item: Render items to new take": a new active take playing a new file from
-- its start at rate 1, pitch 0, normal channels and polarity, without FX, written to
-- the recording path. The fake copies the source file as the "render".
function R.Main_OnCommand(command, flag)
  assert(command == 41999, "fake: action " .. command)
  for _, item in ipairs(all_items()) do
    if item.selected then
      F.renders = F.renders + 1
      local old = item.active
      local from = old.source and (old.source.parent or old.source).path
      local path = string.format("%s/render-%d.wav", F.record_path, F.renders)
      if from then os.execute(string.format("cp '%s' '%s'", from, path)) end
      local take = R.AddTakeToMediaItem(item)
      take.name, take.source = old.name .. " render", F.source(path)
      item.active = take
    end
  end
end

function R.Undo_BeginBlock() F.undo.open = F.undo.open + 1 end

function R.Undo_EndBlock(descchange, extraflags)
  assert(F.undo.open > 0, "fake: Undo_EndBlock without Undo_BeginBlock")
  F.undo.open = F.undo.open - 1
  F.undo.blocks[#F.undo.blocks + 1] = descchange
end

function R.UpdateArrange() F.arrange_updates = (F.arrange_updates or 0) + 1 end

--- Adding returns the script's command ID (the same one again for a script already
-- there), 0 when it failed; removing returns >0 on success. The action list changes at
-- once; it is written (F.kb) only by a call with commit=true, for every change so far.
function R.AddRemoveReaScript(add, sectionID, scriptfn, commit)
  local id = 0
  if add then
    if R.file_exists(scriptfn) then
      F.next_command = F.next_command or 50000
      if not F.actions[scriptfn] then
        F.next_command = F.next_command + 1
        F.actions[scriptfn] = F.next_command
      end
      id = F.actions[scriptfn]
      F.registered[#F.registered + 1] = scriptfn
    end
  elseif F.actions[scriptfn] then
    F.actions[scriptfn], id = nil, 1
  end
  if commit then
    F.kb = {}
    for path in pairs(F.actions) do F.kb[#F.kb + 1] = path end
    table.sort(F.kb)
  end
  return id
end

function R.SetToggleCommandState(section_id, command_id, state)
  F.toggles[command_id] = state
  return true
end

function R.RefreshToolbar2(section_id, command_id) end

-- Processes, state, dialogs ----------------------------------------------------------------

function R.ExecProcess(cmdline, timeoutmsec)
  F.exec[#F.exec + 1] = cmdline
  local pipe = io.popen(cmdline .. " 2>&1", "r")
  if not pipe then return nil end
  local output = pipe:read("a")
  local _, _, code = pipe:close()
  return string.format("%d\n%s", code or 0, output)
end

function R.defer(func) F.deferred[#F.deferred + 1] = { fn = func, instance = F.current } end

function R.atexit(func)
  local instance = F.current or error("fake: atexit outside a script")
  instance.atexit[#instance.atexit + 1] = func
end

function R.get_action_context()
  return false, F.current and F.current.path or F.script, 0, 12345, -1, -1, -1, ""
end

function R.GetOS() return F.os end

function R.GetResourcePath() return F.resource_path or "/tmp" end

--- "Get the project recording path" (the SDK): the project folder, a sub-folder of it
-- (Media/), or any folder the project settings name; never the .RPP's own folder as such.
function R.GetProjectPath() return F.record_path end

--- idx -1 is the current project, 0 the first open tab (this fake has one project);
-- the second value is the .RPP's full path, "" for a project never saved.
function R.EnumProjects(idx)
  if idx == -1 or idx == 0 then return F.project, F.project_file end
  return nil, ""
end

function R.time_precise() return F.clock end

function R.file_exists(path)
  local file = io.open(path, "r")
  if file then file:close() end
  return file ~= nil
end

--- The names of the files (not folders) in `path`, as REAPER reads a directory.
local function list_files(path)
  local quoted = "'" .. path:gsub("'", "'\\''") .. "'"
  local pipe = io.popen("find " .. quoted .. " -mindepth 1 -maxdepth 1 \\( -type f -o -xtype f \\) " ..
    "-printf '%f\\0' 2>/dev/null")
  local names = {}
  for name in pipe:read("a"):gmatch("([^%z]+)%z") do names[#names + 1] = name end
  pipe:close()
  table.sort(names)
  return names
end

--- "Use fileindex = -1 to force re-read of directory (invalidate cache)": otherwise the
-- listing read the first time is what every later call sees. The SDK does not say
-- whether REAPER keeps one listing or one per folder; the fake keeps one per folder,
-- the stricter of the two. What a -1 call returns is not documented: nil here.
function R.EnumerateFiles(path, fileindex)
  if fileindex == -1 then
    F.listings[path] = nil
    return nil
  end
  F.listings[path] = F.listings[path] or list_files(path)
  return F.listings[path][fileindex + 1]
end

function R.GetExtState(section, key) return F.extstate[section .. "/" .. key] or "" end

function R.HasExtState(section, key) return F.extstate[section .. "/" .. key] ~= nil end

--- In memory for every script; with persist=true also in reaper-extstate.ini (F.ini),
-- which is what a restarted REAPER starts from.
function R.SetExtState(section, key, value, persist)
  assert(not value:find("\n"), "fake: ExtState values cannot hold newlines")
  F.extstate[section .. "/" .. key] = value
  if persist then F.ini[section .. "/" .. key] = value end
end

function R.DeleteExtState(section, key, persist)
  F.extstate[section .. "/" .. key] = nil
  if persist then F.ini[section .. "/" .. key] = nil end
end

function R.GetProjExtState(proj, extname, key)
  local value = F.projext[extname .. "/" .. key]
  return value and #value or 0, value or ""
end

--- An empty value deletes the key, as in REAPER.
function R.SetProjExtState(proj, extname, key, value)
  F.projext[extname .. "/" .. key] = value ~= "" and value or nil
  return 1
end

function R.EnumProjExtState(proj, extname, idx)
  local keys = {}
  for full in pairs(F.projext) do
    local section, key = full:match("^(.-)/(.*)$")
    if section == extname then keys[#keys + 1] = key end
  end
  table.sort(keys)
  local key = keys[idx + 1]
  if not key then return false, "", "" end
  return true, key, F.projext[extname .. "/" .. key]
end

function R.GetSetProjectInfo_String(project, desc, valuestrNeedBig, is_set)
  return true, (F.project_info or {})[desc] or ""
end

function R.GetSetProjectInfo(project, desc, value, is_set)
  return (F.project_info or {})[desc] or 0
end

function R.GetCursorPosition() return F.cursor or 0 end

--- Where the mouse is on the screen (F.mouse, {x, y}).
function R.GetMousePosition()
  local mouse = F.mouse or { 0, 0 }
  return mouse[1], mouse[2]
end

function R.ShowMessageBox(msg, title, type)
  F.messages[#F.messages + 1] = msg
  local answer = table.remove(F.answers, 1)
  if answer then return answer end
  return type == 4 and 7 or 1
end

--- The user's answer is the next of F.inputs: the fields' text joined with commas, false
-- for Cancel, or none left: OK on the values shown. Every dialog shown is kept (F.dialogs).
function R.GetUserInputs(title, num_inputs, captions_csv, retvals_csv)
  F.dialogs[#F.dialogs + 1] = { title = title, captions = captions_csv, shown = retvals_csv }
  local answer = table.remove(F.inputs, 1)
  if answer == false then return false, retvals_csv end
  return true, answer or retvals_csv
end

function R.ShowConsoleMsg(msg) F.console = (F.console or "") .. msg end

-- gfx: one window per script; records what is drawn while the window is open; the
-- mouse (mouse_x, mouse_y, mouse_cap: 1 while the left button is held) and the keys
-- typed (gfx.keys) come from the test -----------------------------------------------

local function new_gfx()
  local G = { w = 0, h = 0, x = 0, y = 0, mouse_x = 0, mouse_y = 0, mouse_cap = 0, open = false,
    inits = 0, keys = {} }
  function G.init(name, width, height, dockstate, xpos, ypos)
    G.open, G.inits = true, G.inits + 1
    G.w, G.h = width or G.w, height or G.h
    G.name, G.xpos, G.ypos = name, xpos, ypos
  end
  function G.set(r, g, b, a) end
  function G.rect(x, y, w, h, filled) end
  function G.drawstr(str) if G.open then F.drawn[#F.drawn + 1] = str end end
  function G.update() end
  --- A key from the queue, 0 when none, -1 when the window is not open.
  function G.getchar(char)
    if not G.open then return -1 end
    return table.remove(G.keys, 1) or 0
  end
  function G.quit() G.open = false end
  --- The SDK (reascripthelp): "Shows a popup menu at gfx.x,gfx.y. str is a list of fields
  -- separated by | characters. Each field represents a menu item. Fields can start with
  -- special characters: # : grayed out, ! : checked, > : this menu item shows a submenu,
  -- < : last item in the current submenu. An empty field will appear as a separator in the
  -- menu. gfx.showmenu returns 0 if the user selected nothing from the menu, 1 if the first
  -- field is selected, etc." The numbers count the items one can choose, greyed ones too
  -- (they keep their place): separators and submenu headers have none. "&" before a
  -- character underlines it as the item's access key, so "&&" shows one "&". Before REAPER
  -- 6.82 it showed nothing without a window of gfx.init (on Windows); the fake keeps to
  -- that, the stricter. The user's choice is the next of F.menu_picks: the text of an item as
  -- shown (no flags, no access-key "&"), or false for a click beside the menu.
  function G.showmenu(str)
    if not G.open then return 0 end
    -- Where it shows: gfx.x, gfx.y within the window, the window where gfx.init put it.
    local menu = { text = str, items = {}, window = G.name, x = (G.xpos or 0) + G.x,
      y = (G.ypos or 0) + G.y }
    F.menus[#F.menus + 1] = menu
    local number = 0
    for field in (str .. "|"):gmatch("([^|]*)|") do
      local flags, label = field:match("^([#!<>]*)(.*)$")
      if label ~= "" and not flags:find(">", 1, true) then
        number = number + 1
        menu.items[#menu.items + 1] = { number = number, label = label:gsub("&(.)", "%1"),
          greyed = flags:find("#", 1, true) ~= nil, checked = flags:find("!", 1, true) ~= nil }
      end
    end
    local pick = table.remove(F.menu_picks, 1)
    if not pick then return 0 end
    for _, item in ipairs(menu.items) do
      if item.label == pick then
        assert(not item.greyed, "fake: the greyed item '" .. pick .. "' cannot be chosen")
        menu.chosen = pick
        return item.number
      end
    end
    error("fake: no menu item '" .. pick .. "' in " .. str)
  end
  return G
end

--- The user closes `instance`'s window (its close button, or the docker's).
function F.close_window(instance) instance.gfx.open = false end

-- Recording every call with its argument count (checked against the SDK list) ----------

reaper = setmetatable({}, {
  __index = function(_, name)
    local fn = R[name]
    if not fn then error("fake reaper has no function " .. name, 2) end
    return function(...)
      local counts = F.calls[name] or {}
      counts[select("#", ...)] = true
      F.calls[name] = counts
      return fn(...)
    end
  end,
})
-- Code loaded outside F.run_script (a test calling the library itself) draws here.
gfx = new_gfx()
F.R, F.gfx = R, gfx

-- Running scripts ------------------------------------------------------------------------

--- Run `fn` as code of `instance` (what get_action_context, defer and atexit see).
local function call_in(instance, fn, ...)
  local previous = F.current
  F.current = instance
  local ok, problem = pcall(fn, ...)
  F.current = previous
  if not ok then error(problem, 0) end
end

local function has_deferred(instance)
  for _, entry in ipairs(F.deferred) do
    if entry.instance == instance then return true end
  end
  return false
end

--- The end of a script: its atexit functions run, once.
local function finish(instance)
  if instance.ended then return end
  instance.ended = true
  for _, fn in ipairs(instance.atexit) do call_in(instance, fn) end
end

local function finish_idle()
  for _, instance in ipairs(F.instances) do
    if not instance.ended and not has_deferred(instance) then finish(instance) end
  end
end

--- Run the script at `path` as REAPER runs an action: in a Lua state of its own (its own
-- globals and gfx window; `dofile` and `loadfile` load into it), sharing `reaper`.
-- Returns the instance (its `gfx`, whether it `ended`).
function F.run_script(path)
  F.script = path
  local env = setmetatable({}, { __index = _G })
  local instance = { path = path, gfx = new_gfx(), atexit = {}, env = env }
  env._G, env.gfx = env, instance.gfx
  function env.loadfile(...)
    if select("#", ...) >= 3 then return loadfile(...) end
    local name, mode = ...
    return loadfile(name, mode or "bt", env)
  end
  function env.dofile(name)
    local chunk = assert(env.loadfile(name))
    return chunk()
  end
  F.instances[#F.instances + 1] = instance
  call_in(instance, function() env.dofile(path) end)
  if not has_deferred(instance) then finish(instance) end
  return instance
end

--- The user terminates a running script: its deferred functions are dropped and its
-- atexit functions run.
function F.terminate(instance)
  local kept = {}
  for _, entry in ipairs(F.deferred) do
    if entry.instance ~= instance then kept[#kept + 1] = entry end
  end
  F.deferred = kept
  finish(instance)
end

--- REAPER quits (running scripts end, their atexit functions run) and starts again with
-- the same project: ExtState is what reaper-extstate.ini held, directory listings and
-- windows are gone.
function F.restart()
  for _, instance in ipairs(F.instances) do F.terminate(instance) end
  F.deferred, F.instances, F.listings, F.extstate = {}, {}, {}, {}
  for key, value in pairs(F.ini) do F.extstate[key] = value end
end

--- Run deferred functions, a round at a time (each round F.tick_seconds later on
-- time_precise's clock), until none are left, `seconds` of real time have passed, or
-- `cycles` rounds have run. `before_round(round)`, when given, runs first in each round
-- (the test acting between two rounds: a click, a file appearing).
function F.run_deferred(seconds, pause, cycles, before_round)
  local started, round = os.time(), 0
  while #F.deferred > 0 do
    round = round + 1
    if os.time() - started > seconds or (cycles and round > cycles) then return false end
    if before_round then before_round(round) end
    local batch = F.deferred
    F.deferred = {}
    F.clock = F.clock + F.tick_seconds
    for _, entry in ipairs(batch) do call_in(entry.instance, entry.fn) end
    finish_idle()
    if #F.deferred > 0 and pause then os.execute("sleep " .. pause) end
  end
  return true
end

-- JSON out (for the pytest side) ----------------------------------------------------------

local function encode(value)
  local kind = type(value)
  if kind == "table" then
    if #value > 0 or next(value) == nil then
      local parts = {}
      for i, v in ipairs(value) do parts[i] = encode(v) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local parts = {}
    for k, v in pairs(value) do parts[#parts + 1] = encode(tostring(k)) .. ":" .. encode(v) end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif kind == "string" then
    return '"' .. value:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
  elseif kind == "number" then
    return string.format("%.17g", value)
  end
  return tostring(value)
end

function F.dump()
  local tracks = {}
  for i, track in ipairs(F.tracks) do
    local items = {}
    for j, item in ipairs(track.items) do
      local takes = {}
      for k, take in ipairs(item.takes) do
        local src = take.source or {}
        takes[k] = { name = take.name, path = (src.parent or src).path or "", startoffs = take.startoffs,
          active = item.active == take }
      end
      items[j] = { position = item.position, length = item.length, mute = item.mute, takes = takes }
    end
    tracks[i] = { name = track.name, depth = track.depth, items = items }
  end
  local calls = {}
  for name, counts in pairs(F.calls) do
    local list = {}
    for n in pairs(counts) do list[#list + 1] = n end
    table.sort(list)
    calls[name] = list
  end
  local arity = {}
  for name, fn in pairs(R) do arity[name] = debug.getinfo(fn, "u").nparams end
  local windows = {}
  for i, instance in ipairs(F.instances) do
    local window = instance.gfx
    windows[i] = { inits = window.inits, open = window.open, ended = instance.ended or false }
  end
  return encode({ arity = arity, tracks = tracks, undo_open = F.undo.open, undo_blocks = F.undo.blocks,
    messages = F.messages, exec = F.exec, calls = calls, extstate = F.extstate, projext = F.projext,
    registered = F.registered, kb = F.kb, toggles = F.toggles, drawn = F.drawn, windows = windows,
    left = #F.deferred, clock = F.clock, notes = F.notes or {}, menus = F.menus,
    dialogs = F.dialogs })
end

return F
