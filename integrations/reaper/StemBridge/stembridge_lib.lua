-- @noindex
-- StemBridge for REAPER: the logic shared by every action.
--
-- Flow: plan each selected item (which section of which file it plays, or why it
-- cannot be read as a plain range), submit that range with `stembridge submit`,
-- poll the job's status file in a defer loop (never blocking the UI), and import
-- the stems under the source track when the job is done, in one undo block.
-- Submitted jobs are also kept in the project (ProjExtState), so stems of jobs
-- still running when the script or REAPER stopped are imported by the next run.
--
-- Each action runs in a Lua state of its own; what they share is REAPER's ExtState and
-- the project. Several actions may run at once, so a job is followed by one of them at a
-- time (see M.claim), and imported by whichever gets there first, once: it is still
-- kept in the project right before its import, and forgotten in the same step.

local M = {}

M.VERSION = "0.1.0"
M.SECTION = "StemBridge" -- ExtState section
M.RENDER_TO_NEW_TAKE = 41999 -- "Item: Render items to new take"
M.POLL_SECONDS = 0.25
-- A job's follower says so on every tick of its defer loop (about 30 a second); one
-- silent for this long has stopped (terminated, or its script failed), so another
-- action may take the job over.
M.FOLLOW_STALE_SECONDS = 10
-- How long a kept job may lack its status file (project moved, stem folder deleted)
-- before it is given up, when the daemon still knows it.
M.MISSING_STATUS_SECONDS = 60
M.DASH = " \u{2013} " -- "<item> – vocals"

-- The shared core (quoting, config, status files) is installed beside this file: its
-- folder is taken from the path this file was loaded from, up to the last "/" or "\\",
-- so that it is found wherever REAPER or ReaPack put the scripts, on Windows too.
local here = debug.getinfo(1, "S").source:match("^@(.-)[^/\\]*$") or ""
local core_chunk, core_problem = loadfile(here .. "stembridge_core.lua")
if not core_chunk then
  error("StemBridge is not set up: " .. core_problem .. "\n\nRun `stembridge reaper install` " ..
    "in a terminal (or reinstall StemBridge with ReaPack), then try again.", 0)
end
local core = core_chunk()
M.core = core -- for the action scripts

-- Paths and config ---------------------------------------------------------

function M.script_dir()
  local _, path = reaper.get_action_context()
  return path:match("^(.*[/\\])") or ""
end

--- The stembridge command recorded by `stembridge reaper install`: next to the scripts,
-- or (for scripts installed by ReaPack, one folder deeper) in Scripts/StemBridge.
function M.load_config()
  local scripts = core.join(core.join(reaper.GetResourcePath(), "Scripts"), "StemBridge")
  return core.load_config({ M.script_dir(), scripts }, "stembridge reaper install")
end

-- Command lines --------------------------------------------------------------

function M.is_windows()
  return (reaper.GetOS() or ""):match("^Win") ~= nil
end

--- Run stembridge with `args`; returns exit code and output (nil, message if it could not start).
function M.run(config, args, timeout_ms)
  local line = core.command_line(core.arguments(config, args), M.is_windows())
  local out = reaper.ExecProcess(line, timeout_ms or 30000)
  if not out then
    return nil, "could not run " .. config.command[1] .. "; reinstall with `stembridge reaper install`"
  end
  local code, text = out:match("^(%-?%d+)\n?(.*)$")
  return tonumber(code), text or ""
end

-- Items ------------------------------------------------------------------------

local function item_name(item, take, path)
  local name = take and reaper.GetTakeName(take) or ""
  if name == "" and path then name = path:match("([^/\\]+)$") or path end
  if name == "" then name = "item" end
  return (name:gsub("%.[%w]+$", ""))
end

-- I_CHANMODE values (the SDK: 0=normal, 1=reverse stereo, 2=downmix, 3=left, 4=right).
M.CHANNEL_MODES = { [1] = "reverse stereo", [2] = "mono downmix", [3] = "mono of the left channel",
  [4] = "mono of the right channel" }

--- What an item plays, as a plain range of a file, or why it is not one.
-- Returns {path, start, length, position, name, track, item, rate} or {reason, renderable}.
function M.plan_item(item)
  local take = reaper.GetActiveTake(item)
  if not take then
    local name = string.format("item at %.3f s", reaper.GetMediaItemInfo_Value(item, "D_POSITION"))
    return { item = item, name = name, reason = "empty item (no take)", renderable = false }
  end
  local name = item_name(item, take)
  local plan = { item = item, name = name, track = reaper.GetMediaItem_Track(item) }
  if reaper.TakeIsMIDI(take) then
    plan.reason, plan.renderable = "MIDI item", true
    return plan
  end
  local source = reaper.GetMediaItemTake_Source(take)
  local offset = 0
  while true do
    local parent = reaper.GetMediaSourceParent(source)
    if not parent then break end
    local ok, section_offset, _, reversed = reaper.PCM_Source_GetSectionInfo(source)
    if ok and reversed then
      plan.reason, plan.renderable = "reversed", true
      return plan
    end
    if ok then offset = offset + section_offset end
    source = parent
  end
  local path = reaper.GetMediaSourceFileName(source)
  if not path or path == "" then
    plan.reason, plan.renderable = "no source file", true
    return plan
  end
  plan.name = item_name(item, take, path)
  local playrate = reaper.GetMediaItemTakeInfo_Value(take, "D_PLAYRATE")
  local pitch = reaper.GetMediaItemTakeInfo_Value(take, "D_PITCH")
  local channels = reaper.GetMediaItemTakeInfo_Value(take, "I_CHANMODE")
  local start = reaper.GetMediaItemTakeInfo_Value(take, "D_STARTOFFS") + offset
  local length = reaper.GetMediaItemInfo_Value(item, "D_LENGTH")
  local source_length = reaper.GetMediaSourceLength(source)
  if playrate ~= 1 then
    plan.reason = string.format("playrate %g", playrate)
  elseif pitch ~= 0 then
    plan.reason = string.format("pitch %+g semitones", pitch)
  elseif channels ~= 0 then
    local mode = M.CHANNEL_MODES[math.floor(channels)] or string.format("%d", math.floor(channels))
    plan.reason = "channel mode: " .. mode
  elseif reaper.GetMediaItemTakeInfo_Value(take, "D_VOL") < 0 then
    -- The SDK: a take's D_VOL is "negative if take polarity is flipped".
    plan.reason = "polarity flipped"
  elseif reaper.TakeFX_GetCount(take) > 0 then
    plan.reason = "take FX"
  elseif start < 0 or start + length > source_length + 1e-9 then
    plan.reason = reaper.GetMediaItemInfo_Value(item, "B_LOOPSRC") == 1 and "loops its source"
      or "extends past its source"
  end
  if plan.reason then
    plan.renderable = true
    return plan
  end
  plan.path, plan.start, plan.length = path, start, length
  plan.position = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
  plan.rate = reaper.GetMediaSourceSampleRate(source)
  return plan
end

function M.selected_items()
  local items = {}
  for i = 0, reaper.CountSelectedMediaItems(0) - 1 do
    items[#items + 1] = reaper.GetSelectedMediaItem(0, i)
  end
  return items
end

--- Render `items` to new takes (REAPER's own action), keeping the selection as it was.
function M.render_items(items)
  local selected = M.selected_items()
  reaper.SelectAllMediaItems(0, false)
  for _, item in ipairs(items) do reaper.SetMediaItemSelected(item, true) end
  reaper.Main_OnCommand(M.RENDER_TO_NEW_TAKE, 0)
  reaper.SelectAllMediaItems(0, false)
  for _, item in ipairs(selected) do reaper.SetMediaItemSelected(item, true) end
end

--- Plans for the selected items; asks before rendering the ones that need it.
-- Returns plans to submit and a list of "name: reason" lines for skipped items.
function M.plan_selection()
  local plans, skipped, renderable = {}, {}, {}
  for _, item in ipairs(M.selected_items()) do
    local plan = M.plan_item(item)
    if not plan.reason then
      plans[#plans + 1] = plan
    elseif plan.renderable then
      renderable[#renderable + 1] = plan
    else
      skipped[#skipped + 1] = plan.name .. ": " .. plan.reason
    end
  end
  if #renderable > 0 then
    local lines = {}
    for _, plan in ipairs(renderable) do lines[#lines + 1] = "  " .. plan.name .. ": " .. plan.reason end
    local answer = reaper.ShowMessageBox(
      "These items do not play a plain part of a file:\n" .. table.concat(lines, "\n") ..
        "\n\nRender them to new takes first (Item: Render items to new take)?\n" ..
        "No skips them.", "StemBridge", 4)
    if answer == 6 then
      local items = {}
      for _, plan in ipairs(renderable) do items[#items + 1] = plan.item end
      M.render_items(items)
      for _, item in ipairs(items) do
        local plan = M.plan_item(item)
        if plan.reason then
          skipped[#skipped + 1] = plan.name .. ": " .. plan.reason .. " (also after rendering)"
        else
          plans[#plans + 1] = plan
        end
      end
    else
      for _, plan in ipairs(renderable) do
        skipped[#skipped + 1] = plan.name .. ": " .. plan.reason .. " (not rendered)"
      end
    end
  end
  return plans, skipped
end

-- Submitting and following jobs ---------------------------------------------------

function M.stems_folder()
  return core.join(reaper.GetProjectPath(), "Stems")
end

local function number(value)
  return string.format("%.17g", value)
end

local function guid_of_track(track)
  return select(2, reaper.GetSetMediaTrackInfo_String(track, "GUID", "", false))
end

local function guid_of_item(item)
  return select(2, reaper.GetSetMediaItemInfo_String(item, "GUID", "", false))
end

--- Submit one planned item; returns the job (id, status file, plan) or nil and a message.
-- The origin names the item (its GUID), so that two items playing the same range of the
-- same file at the same time are two jobs, not one the daemon answers twice.
function M.submit(config, plan, options)
  local folder = M.stems_folder()
  local origin = string.format('{"host":"reaper","item":"%s","position":%s,"length":%s}',
    guid_of_item(plan.item), number(plan.position), number(plan.length))
  local args = { "submit", plan.path, "--start", number(plan.start), "--length", number(plan.length),
    "-o", folder, "--origin", origin, "--json" }
  if options.stems and options.stems ~= "" then
    args[#args + 1] = "--stems"; args[#args + 1] = options.stems
  end
  -- "a+b" in the model field is an ensemble: one --model each.
  for _, name in ipairs(core.model_names(options.model)) do
    args[#args + 1] = "--model"; args[#args + 1] = name
  end
  if options.preset and options.preset ~= "" then
    args[#args + 1] = "--preset"; args[#args + 1] = options.preset
  end
  local code, out = M.run(config, args)
  local job, problem = core.submitted(code, out, plan.name, folder)
  if job then job.plan = plan end
  return job, problem
end

-- Jobs kept in the project --------------------------------------------------------

--- Remember a submitted job in the project until its stems are imported.
function M.remember(job, options)
  local plan = job.plan
  local fields = { job.status_path, guid_of_track(plan.track), guid_of_item(plan.item),
    number(plan.position), number(plan.length), plan.name, options.mute and "y" or "n" }
  reaper.SetProjExtState(0, M.SECTION, "job_" .. job.id, table.concat(fields, "\t"))
end

--- Whether job `id` is still kept in the project (not imported, not given up).
function M.kept(id)
  local _, value = reaper.GetProjExtState(0, M.SECTION, "job_" .. id)
  return value ~= ""
end

function M.forget(job)
  reaper.SetProjExtState(0, M.SECTION, "job_" .. job.id, "")
  M.release(job.id)
end

-- Who follows which job ------------------------------------------------------------
-- ExtState "follow_<job id>" = "<instance>\t<time_precise>", in memory only (never
-- persisted: when REAPER quits nobody follows anything). Every script runs on REAPER's
-- main thread, one function at a time, so reading and writing it is one step.

--- This script instance's name, unique within the REAPER session.
function M.instance()
  if not M.instance_name then
    local count = (tonumber(reaper.GetExtState(M.SECTION, "instances")) or 0) + 1
    reaper.SetExtState(M.SECTION, "instances", tostring(count), false)
    M.instance_name = tostring(count)
  end
  return M.instance_name
end

--- Follow job `id` from this instance (or say again that it does), unless another
-- instance does and said so less than FOLLOW_STALE_SECONDS ago. Returns whether it may.
function M.claim(id)
  local key, now = "follow_" .. id, reaper.time_precise()
  local who, when = reaper.GetExtState(M.SECTION, key):match("^([^\t]+)\t(.+)$")
  when = tonumber(when)
  if who and who ~= M.instance() and when and now - when < M.FOLLOW_STALE_SECONDS then
    return false
  end
  reaper.SetExtState(M.SECTION, key, M.instance() .. "\t" .. number(now), false)
  return true
end

--- Stop following job `id` (when this instance is the one following it).
function M.release(id)
  local key = "follow_" .. id
  if reaper.GetExtState(M.SECTION, key):match("^([^\t]+)\t") == M.instance() then
    reaper.DeleteExtState(M.SECTION, key, false)
  end
end

--- Jobs an earlier run submitted and did not see to the end, with their track and item,
-- but not the ones another running action follows (they are its to import).
function M.remembered()
  local tracks, items = {}, {}
  for i = 0, reaper.CountTracks(0) - 1 do
    local track = reaper.GetTrack(0, i)
    tracks[guid_of_track(track)] = track
  end
  for i = 0, reaper.CountMediaItems(0) - 1 do
    local item = reaper.GetMediaItem(0, i)
    items[guid_of_item(item)] = item
  end
  local jobs, index = {}, 0
  while true do
    local ok, key, value = reaper.EnumProjExtState(0, M.SECTION, index)
    if not ok then break end
    index = index + 1
    local id = key:match("^job_(%x+)$")
    local path, track, item, position, length, name, mute =
      value:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([yn])$")
    if id and path and M.claim(id) then
      jobs[#jobs + 1] = {
        id = id, status_path = path, mute = mute == "y", state = "queued", progress = 0,
        stage = "queued",
        plan = { name = name, track = tracks[track], item = items[item],
          position = tonumber(position), length = tonumber(length) },
      }
    end
  end
  return jobs
end

-- Importing ----------------------------------------------------------------------

--- A folder track under `track` (or after the last track when nil) named `name`, with
-- one child track per stem holding one item at `position`/`length`.
function M.import_stems(track, name, stems, position, length)
  local index, depth = reaper.CountTracks(0), 0
  if track then
    index = math.floor(reaper.GetMediaTrackInfo_Value(track, "IP_TRACKNUMBER"))
    depth = reaper.GetMediaTrackInfo_Value(track, "I_FOLDERDEPTH")
  end
  reaper.InsertTrackAtIndex(index, true)
  local folder = reaper.GetTrack(0, index)
  reaper.GetSetMediaTrackInfo_String(folder, "P_NAME", name, true)
  reaper.SetMediaTrackInfo_Value(folder, "I_FOLDERDEPTH", 1)
  -- A source track that closes folders hands that over to the last stem track.
  if track and depth < 0 then reaper.SetMediaTrackInfo_Value(track, "I_FOLDERDEPTH", 0) end
  for i, stem in ipairs(stems) do
    reaper.InsertTrackAtIndex(index + i, true)
    local child = reaper.GetTrack(0, index + i)
    local label = name .. M.DASH .. stem.name
    reaper.GetSetMediaTrackInfo_String(child, "P_NAME", label, true)
    local item = reaper.AddMediaItemToTrack(child)
    local take = reaper.AddTakeToMediaItem(item)
    reaper.SetMediaItemTake_Source(take, reaper.PCM_Source_CreateFromFile(stem.path))
    reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", label, true)
    reaper.SetMediaItemInfo_Value(item, "D_POSITION", position)
    reaper.SetMediaItemInfo_Value(item, "D_LENGTH", length)
    reaper.SetMediaTrackInfo_Value(child, "I_FOLDERDEPTH", i == #stems and -1 + math.min(depth, 0) or 0)
  end
  return folder
end

function M.import_job(job, mute_original)
  local plan = job.plan
  if not plan.track or not reaper.ValidatePtr2(0, plan.track, "MediaTrack*") then
    return false, plan.name .. ": its track was deleted; the stems are in " .. (job.status.folder or "")
  end
  reaper.Undo_BeginBlock()
  M.import_stems(plan.track, plan.name, job.status.stems, plan.position, plan.length)
  if mute_original and plan.item and reaper.ValidatePtr2(0, plan.item, "MediaItem*") then
    reaper.SetMediaItemInfo_Value(plan.item, "B_MUTE", 1)
  end
  reaper.Undo_EndBlock("StemBridge: stems of " .. plan.name, -1)
  reaper.UpdateArrange()
  return true
end

-- Progress window ----------------------------------------------------------------------

local CANCEL = { x = 10, w = 90, h = 22 }

--- Draw `jobs` in the progress window; returns true once per click on Cancel (when the
-- button goes down over it, not on every tick it is held). A window the user closed,
-- or closed with Esc, stays closed: the jobs go on without it.
function M.draw(jobs)
  if M.window == "closed" then return false end
  local height = 44 + 24 * #jobs
  if not M.window then
    gfx.init("StemBridge", 460, height)
    M.window, M.mouse_down = "open", false
  end
  gfx.set(0.12, 0.12, 0.12)
  gfx.rect(0, 0, gfx.w, gfx.h, 1)
  for i, job in ipairs(jobs) do
    local y = 8 + 24 * (i - 1)
    gfx.set(0.25, 0.45, 0.75)
    gfx.rect(10, y, math.floor(300 * job.progress), 18, 1)
    gfx.set(0.9, 0.9, 0.9)
    gfx.x, gfx.y = 14, y + 2
    local stage = job.cancel_sent and "cancelling" or job.stage
    gfx.drawstr(string.format("%s  %s %d%%", job.plan.name, stage, math.floor(job.progress * 100)))
  end
  CANCEL.y = height - 30
  gfx.set(0.6, 0.2, 0.2)
  gfx.rect(CANCEL.x, CANCEL.y, CANCEL.w, CANCEL.h, 1)
  gfx.set(1, 1, 1)
  gfx.x, gfx.y = CANCEL.x + 18, CANCEL.y + 4
  gfx.drawstr("Cancel")
  gfx.update()
  local char = gfx.getchar()
  if char == -1 or char == 27 then -- closed by the user, or Esc: no window from now on
    if char == 27 then gfx.quit() end
    M.window = "closed"
    return false
  end
  local down = gfx.mouse_cap & 1 == 1
  local pressed = down and not M.mouse_down
  M.mouse_down = down
  return pressed and gfx.mouse_x >= CANCEL.x and gfx.mouse_x <= CANCEL.x + CANCEL.w
    and gfx.mouse_y >= CANCEL.y and gfx.mouse_y <= CANCEL.y + CANCEL.h
end

function M.close_window()
  if M.window == "open" then gfx.quit() end
  M.window = "closed"
end

--- Whether `stembridge status|cancel JOB` said that the daemon's store has no such job.
function M.unknown_job(code, out)
  return code == 2 and (out or ""):find("no job has the id", 1, true) ~= nil
end

--- Nil while `job`, whose status file is missing, may still get one; otherwise the
-- message to show (once: the job is forgotten). The daemon is asked at the first miss:
-- a job it does not know is given up at once; one it knows after MISSING_STATUS_SECONDS.
function M.status_gone(config, job)
  local now = reaper.time_precise()
  if not job.missing_since then
    job.missing_since, job.stage = now, "no status file"
    local code, out = M.run(config, { "status", job.id, "--json" }, 10000)
    if M.unknown_job(code, out) then
      return string.format("%s: StemBridge stopped waiting for job %s: its status file %s is gone " ..
        "and the daemon does not know the job (made on another computer, or its job store was " ..
        "removed).", job.plan.name, job.id, job.status_path)
    end
  elseif now - job.missing_since >= M.MISSING_STATUS_SECONDS then
    return string.format("%s: StemBridge stopped waiting for job %s: its status file %s has been " ..
      "missing for %d s (the project or its Stems folder was moved or deleted); its stems will not " ..
      "be imported. `stembridge status %s` says whether it still runs.", job.plan.name, job.id,
      job.status_path, M.MISSING_STATUS_SECONDS, job.id)
  end
  return nil
end

--- One look at `job`: import it when done, report it when failed. Returns true while
-- it is still to be followed by this instance.
function M.step(config, job, options, problems)
  -- Imported or given up by another action, or followed by another running one.
  if not M.kept(job.id) or not M.claim(job.id) then return false end
  local status = core.read_status(job.status_path)
  if not status then
    local gone = M.status_gone(config, job)
    if not gone then return true end
    problems[#problems + 1] = gone
    M.forget(job)
    return false
  end
  job.missing_since = nil
  core.apply_status(job, status)
  if job.state == "done" then
    -- Still pending right before the import, and forgotten first: whichever action gets
    -- here first imports it, once.
    if not M.kept(job.id) then return false end
    M.forget(job)
    local mute = options.mute
    if job.mute ~= nil then mute = job.mute end
    local ok, message = M.import_job(job, mute)
    if not ok then problems[#problems + 1] = message end
    return false
  elseif job.state == "failed" then
    problems[#problems + 1] = job.plan.name .. ": " .. (job.status.error or "failed") ..
      "\n(stembridge status " .. job.id .. " shows more)"
    M.forget(job)
    return false
  elseif job.state == "cancelled" then
    M.forget(job)
    return false
  end
  return true
end

--- Ask the daemon to cancel `job` (once). Returns false when there is nothing left to
-- follow: the daemon does not know the job, or its status file is missing.
function M.cancel(config, job)
  if job.cancel_sent then return true end
  local code, out = M.run(config, { "cancel", job.id }, 10000)
  if M.unknown_job(code, out) or job.missing_since then
    M.forget(job)
    return false
  end
  job.cancel_sent = code == 0
  return true
end

--- Follow `jobs` in a defer loop: progress, cancel, import; report failures at the end.
function M.follow(config, jobs, options, problems)
  local pending = {}
  for _, job in ipairs(jobs) do pending[#pending + 1] = job end
  local function finish()
    M.close_window()
    if #problems > 0 then
      reaper.ShowMessageBox(table.concat(problems, "\n\n"), "StemBridge", 0)
    end
  end
  -- Terminated or failed: another action may take these jobs over at once.
  reaper.atexit(function()
    for _, job in ipairs(pending) do M.release(job.id) end
  end)
  local function tick()
    local still = {}
    for _, job in ipairs(pending) do
      if M.step(config, job, options, problems) then still[#still + 1] = job end
    end
    pending = still
    if #pending > 0 and M.draw(pending) then
      still = {}
      for _, job in ipairs(pending) do
        if M.cancel(config, job) then still[#still + 1] = job end
      end
      pending = still
    end
    if #pending == 0 then return finish() end
    -- Said again after the blocking calls above, so that no other action takes them.
    for _, job in ipairs(pending) do M.claim(job.id) end
    reaper.defer(tick)
  end
  tick()
end

-- The actions --------------------------------------------------------------------------

function M.options_from_state()
  local function get(key, default)
    if reaper.HasExtState(M.SECTION, key) then return reaper.GetExtState(M.SECTION, key) end
    return default
  end
  return {
    stems = get("stems", "vocals,instrumental"),
    model = get("model", "htdemucs"),
    preset = get("preset", "clean"),
    mute = get("mute", "y") ~= "n",
  }
end

-- Choosing models --------------------------------------------------------------------------

--- The installed models (`stembridge models list --json --installed`): a list of
-- {name, family, stems, members}, or nil and a message.
function M.installed_models(config)
  return core.installed_models(M.run(config, { "models", "list", "--json", "--installed" }))
end

-- Menu text shows a field's flags (#!<>) at its start and "&" as an access key.
local function menu_text(text)
  text = text:gsub("&", "&&")
  if text:match("^[#!<>]") then return " " .. text end
  return text
end

--- The gfx.showmenu string for choosing among `models` (nil: `problem` is shown, greyed),
-- with those `named` already checked and, for a routed stem (`stem`), only the models that
-- give it; single models first, then named ensembles. Returns it and the model name of
-- each item number. A name holding "|" (the item separator) cannot be shown.
function M.model_menu(models, problem, named, stem)
  if not models then
    return "#" .. menu_text((problem:match("^[^\n]*"):gsub("|", "/"))), {}
  end
  local checked = {}
  for _, name in ipairs(named) do checked[name] = true end
  local fields, names = {}, {}
  for _, ensembles in ipairs({ false, true }) do
    local first = true
    for _, model in ipairs(models) do
      local gives = not stem
      for _, source in ipairs(model.stems) do gives = gives or source == stem end
      local shown = gives and not model.name:find("|", 1, true)
      if (model.family == "ensemble") == ensembles and shown then
        if first and #fields > 0 then fields[#fields + 1] = "" end -- a separator
        first = false
        local label = model.name .. " (" .. table.concat(model.stems, ", ") .. ")"
        if ensembles then label = label .. ": " .. table.concat(model.members, " + ") end
        fields[#fields + 1] = (checked[model.name] and "!" or "") .. menu_text(label)
        names[#names + 1] = model.name
      end
    end
  end
  if #names == 0 then
    return stem and "#No installed model gives " .. menu_text(stem)
      or "#No models installed: run stembridge models install (or models import) first", {}
  end
  return table.concat(fields, "|"), names
end

--- `field` with its first "?" replaced by the installed model the user picks from a menu
-- at the mouse (nothing, when the menu is closed without a choice). In the stems field
-- ("vocals@?") the menu offers the models that give that stem.
function M.pick_model(field, is_stems)
  local at = field:find("?", 1, true)
  local before, after = field:sub(1, at - 1), field:sub(at + 1)
  local stem = is_stems and before:match("([^;,@%s]+)%s*@%s*$") or nil
  local models, problem
  local config, missing = M.load_config()
  if config then models, problem = M.installed_models(config) else problem = missing end
  local named = is_stems and {} or core.model_names(field)
  local menu, names = M.model_menu(models, problem, named, stem)
  -- A window of its own, at the mouse: REAPER before 6.82 showed no menu without one.
  local x, y = reaper.GetMousePosition()
  gfx.init("StemBridge: models", 0, 0, 0, x, y)
  gfx.x, gfx.y = 0, 0
  local choice = gfx.showmenu(menu)
  gfx.quit()
  return before .. (names[choice] or "") .. after
end

M.DIALOG_TITLE = "StemBridge: separate selected items"
-- GetUserInputs splits its fields at commas, so the stems are given with ";" here.
M.DIALOG_CAPTIONS = "Stems (a;b  vocals@model;b),Model (a+b: ensemble  ?: list),Preset," ..
  "Mute originals (y/n),extrawidth=160"

--- Ask for stems, model and preset (remembered in ExtState). A "?" in the model field, or
-- after "<stem>@" in the stems field, shows the installed models to pick from, then the
-- dialog again. Returns the options, or nil when cancelled.
function M.ask_options()
  local options = M.options_from_state()
  local fields = { (options.stems:gsub(",", ";")), options.model, options.preset,
    options.mute and "y" or "n" }
  while true do
    local ok, answer = reaper.GetUserInputs(M.DIALOG_TITLE, 4, M.DIALOG_CAPTIONS,
      table.concat(fields, ","))
    if not ok then return nil end
    local stems, model, preset, mute = answer:match("^([^,]*),([^,]*),([^,]*),([^,]*)$")
    if not stems then return nil end
    fields = { stems, model, preset, mute }
    local asked = model:find("?", 1, true) and 2 or stems:find("?", 1, true) and 1
    if not asked then break end
    fields[asked] = M.pick_model(fields[asked], asked == 1)
  end
  options = { stems = (fields[1]:gsub(";", ",")), model = fields[2], preset = fields[3],
    mute = fields[4] ~= "n" }
  reaper.SetExtState(M.SECTION, "stems", options.stems, true)
  reaper.SetExtState(M.SECTION, "model", options.model, true)
  reaper.SetExtState(M.SECTION, "preset", options.preset, true)
  reaper.SetExtState(M.SECTION, "mute", options.mute and "y" or "n", true)
  return options
end

--- Separate the selected items with `options` (stems, model, preset, mute).
function M.separate_selected(options)
  local config, problem = M.load_config()
  if not config then
    reaper.ShowMessageBox(problem, "StemBridge", 0)
    return
  end
  local jobs, problems = M.remembered(), {}
  local plans, skipped = M.plan_selection()
  if #plans == 0 and #skipped == 0 and #jobs == 0 then
    reaper.ShowMessageBox("Select one or more audio items first.", "StemBridge", 0)
    return
  end
  for _, line in ipairs(skipped) do problems[#problems + 1] = "Skipped " .. line end
  local daemon, following = true, {}
  for _, job in ipairs(jobs) do following[job.id] = true end
  for _, plan in ipairs(plans) do
    local job, message = M.submit(config, plan, options)
    -- The daemon answers with the job it already has for the same range and settings;
    -- when another running action follows that one, it imports it.
    if job and M.claim(job.id) then
      M.remember(job, options)
      if not following[job.id] then jobs[#jobs + 1] = job end
      following[job.id] = true
      daemon = daemon and job.daemon
    elseif job then
      problems[#problems + 1] = plan.name .. ": another StemBridge action is separating it " ..
        "with these settings already (job " .. job.id .. "); its stems arrive through that one."
    else
      problems[#problems + 1] = message
    end
  end
  if #jobs > 0 and not daemon then
    reaper.ShowMessageBox("The StemBridge daemon is not running, so the jobs wait for it. " ..
      "Start it with `stembridge serve` (or `stembridge service install` to run it at login); " ..
      "the stems arrive here as soon as it runs.", "StemBridge", 0)
  end
  M.follow(config, jobs, options, problems)
end

return M
