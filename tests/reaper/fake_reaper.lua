-- A fake `reaper` (and `gfx`) for running the StemBridge ReaScripts in plain Lua 5.4.
--
-- It keeps a small project model (tracks, items, takes, sources, undo blocks,
-- ExtState) and implements the API functions the scripts use with the SDK's Lua
-- signatures and return conventions (see integrations/reaper/sdk/reaper_lua_api.tsv;
-- tests check every function here against it). Real processes run: ExecProcess
-- runs the command line through /bin/sh and returns "exit code\noutput".
-- Pointers are tables; a deleted object no longer validates.

local F = {
  tracks = {}, extstate = {}, projext = {}, undo = { open = 0, blocks = {} },
  messages = {}, answers = {}, inputs = {}, exec = {}, deferred = {}, atexit = {},
  calls = {}, toggles = {}, registered = {}, renders = 0,
  project_path = "/tmp", script = "", os = "Linux-x86_64", clock = 0,
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
    playrate = spec.playrate or 1, fx = spec.fx or 0, midi = spec.midi or false }
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
local TAKE_KEYS = { D_STARTOFFS = "startoffs", D_PLAYRATE = "playrate" }

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
  local take = { item = item, name = "", startoffs = 0, playrate = 1, fx = 0, midi = false }
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
-- its start at rate 1 without FX. The fake copies the source file as the "render".
function R.Main_OnCommand(command, flag)
  assert(command == 41999, "fake: action " .. command)
  for _, item in ipairs(all_items()) do
    if item.selected then
      F.renders = F.renders + 1
      local old = item.active
      local from = old.source and (old.source.parent or old.source).path
      local path = string.format("%s/render-%d.wav", F.project_path, F.renders)
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

function R.AddRemoveReaScript(add, sectionID, scriptfn, commit)
  F.registered[#F.registered + 1] = scriptfn
  return 50000 + #F.registered
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

function R.defer(func) F.deferred[#F.deferred + 1] = func end

function R.atexit(func) F.atexit[#F.atexit + 1] = func end

function R.get_action_context()
  return false, F.script, 0, 12345, -1, -1, -1, ""
end

function R.GetOS() return F.os end

function R.GetResourcePath() return F.resource_path or "/tmp" end

function R.GetProjectPath() return F.project_path end

function R.time_precise() return F.clock end

function R.file_exists(path)
  local file = io.open(path, "r")
  if file then file:close() end
  return file ~= nil
end

function R.EnumerateFiles(path, fileindex)
  local pipe = io.popen("ls -1A '" .. path:gsub("'", "'\\''") .. "' 2>/dev/null")
  local i = -1
  for name in pipe:lines() do
    i = i + 1
    if i == fileindex then pipe:close(); return name end
  end
  pipe:close()
  return nil
end

function R.GetExtState(section, key) return F.extstate[section .. "/" .. key] or "" end

function R.HasExtState(section, key) return F.extstate[section .. "/" .. key] ~= nil end

function R.SetExtState(section, key, value, persist)
  assert(not value:find("\n"), "fake: ExtState values cannot hold newlines")
  F.extstate[section .. "/" .. key] = value
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

function R.ShowMessageBox(msg, title, type)
  F.messages[#F.messages + 1] = msg
  local answer = table.remove(F.answers, 1)
  if answer then return answer end
  return type == 4 and 7 or 1
end

function R.GetUserInputs(title, num_inputs, captions_csv, retvals_csv)
  local answer = table.remove(F.inputs, 1)
  if answer == false then return false, retvals_csv end
  return true, answer or retvals_csv
end

function R.ShowConsoleMsg(msg) F.console = (F.console or "") .. msg end

-- gfx: records what is drawn; clicks and keys come from the test ---------------------

local G = { w = 0, h = 0, x = 0, y = 0, mouse_x = 0, mouse_y = 0, mouse_cap = 0, open = false, drawn = {} }
function G.init(name, width, height) G.open, G.w, G.h = true, width, height end
function G.set(r, g, b, a) end
function G.rect(x, y, w, h, filled) end
function G.drawstr(str) G.drawn[#G.drawn + 1] = str end
function G.update() end
function G.getchar() return G.open and (table.remove(F.keys or {}, 1) or 0) or -1 end
function G.quit() G.open = false end

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
gfx = G
F.R, F.gfx = R, G

-- Running scripts ------------------------------------------------------------------------

function F.run_script(path)
  F.script = path
  dofile(path)
end

--- Run deferred functions until none are left, `seconds` of real time have passed, or
-- `cycles` rounds have run.
function F.run_deferred(seconds, pause, cycles)
  local started, round = os.time(), 0
  while #F.deferred > 0 do
    round = round + 1
    if os.time() - started > seconds or (cycles and round > cycles) then return false end
    local batch = F.deferred
    F.deferred = {}
    F.clock = F.clock + 1
    for _, fn in ipairs(batch) do fn() end
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
  return encode({ arity = arity, tracks = tracks, undo_open = F.undo.open, undo_blocks = F.undo.blocks,
    messages = F.messages, exec = F.exec, calls = calls, extstate = F.extstate, projext = F.projext,
    registered = F.registered, toggles = F.toggles, drawn = G.drawn, left = #F.deferred })
end

return F
