-- StemBridge for Ardour 7: the logic shared by the editor action and the headless test.
--
-- Flow: describe each selected region as a plain range of one audio file (the region's
-- start within its source and its length, in samples) or, when its channels are separate
-- files (as Ardour keeps them), write what it plays to one file first; submit that range
-- with `stembridge submit`, poll the job's status file until the daemon is done, then make
-- one track per stem named "<region> – <stem>" in one route group, put each stem's
-- region exactly where the original is, and (optionally) mute the original.
-- Everything that needs Ardour's GUI (the import itself, showing dialogs) stays in the
-- action script; what is here (the dialog's fields too) runs in `ardour7-lua` as well.

local M = {}

M.VERSION = "0.1.0"
M.DASH = " \u{2013} " -- "<region> – vocals"
M.POLL_SECONDS = 0.25
M.STEMS_FOLDER = "Stems" -- inside the session folder
M.DEFAULTS = { stems = "vocals,instrumental", model = "htdemucs", preset = "clean", mute = true }

-- The shared core (quoting, config, status files) is installed beside this file: its
-- folder is taken from the path this file was loaded from, up to the last "/" or "\\",
-- so that it is found in whichever scripts folder holds the library, on Windows too.
local here = debug.getinfo(1, "S").source:match("^@(.-)[^/\\]*$") or ""
local core_chunk, core_problem = loadfile(here .. "stembridge_core.lua")
if not core_chunk then
  error("StemBridge is not set up: " .. core_problem .. "\n\nRun `stembridge ardour install` " ..
    "in a terminal, then try again.", 0)
end
local core = core_chunk()

function M.is_windows()
  return package.config:sub(1, 1) == "\\"
end

-- Config ---------------------------------------------------------------------------------

--- The folders Ardour loads scripts from: the user's config folder, then ARDOUR_LUA_PATH.
function M.script_folders(config_dir, lua_path)
  local folders = { core.join(config_dir, "scripts") }
  local list_sep = M.is_windows() and ";" or ":"
  for folder in (lua_path or ""):gmatch("[^" .. list_sep .. "]+") do folders[#folders + 1] = folder end
  return folders
end

--- The command recorded by `stembridge ardour install` (stembridge_config.lua beside the
-- scripts), or nil and a message saying how to fix it.
function M.load_config(folders)
  return core.load_config(folders, "stembridge ardour install")
end

-- Command lines ----------------------------------------------------------------------------

--- Run stembridge with `args`; returns its exit code and output (nil and a message if it
-- could not be started). Blocks until it exits: submit, status and cancel answer at once.
function M.run(config, args)
  local windows = M.is_windows()
  local line = core.command_line(core.arguments(config, args), windows) .. " 2>&1"
  -- io.popen hands the line to `cmd /c`, which strips one outer pair of quotes.
  if windows then line = '"' .. line .. '"' end
  local pipe = io.popen(line, "r")
  if not pipe then
    return nil, "could not run " .. config.command[1] .. "; reinstall with `stembridge ardour install`"
  end
  local out = pipe:read("a") or ""
  local _, _, code = pipe:close()
  return code, out
end

-- Regions ------------------------------------------------------------------------------------

--- A file or folder name made from `name` that every file system takes.
function M.safe_name(name)
  local safe = name:gsub('[<>:"/\\|%?%*%c]', "_"):gsub("^[%s%.]+", ""):gsub("[%s%.]+$", "")
  if safe == "" then return "region" end
  return safe
end

--- What a region plays, from facts Ardour gives: {name, id, paths (one per channel, "" when
-- a channel is not a file), start, length, position (samples), rate}.
-- Returns the plan {name, id, path, start, length, position, rate, channels}: `path` and
-- `start` are the region's file and its start within it when all channels are one file;
-- otherwise `render` is set (Ardour keeps one mono file per channel) and the region's audio
-- is written to one file first (M.render). {name, reason} when it cannot be separated.
function M.plan(facts)
  local plan = { name = facts.name, id = facts.id, start = facts.start, length = facts.length,
    position = facts.position, rate = facts.rate, channels = #facts.paths }
  if #facts.paths == 0 then
    plan.reason = "it is not an audio region"
    return plan
  end
  if facts.length <= 0 then
    plan.reason = "it is empty"
    return plan
  end
  for _, path in ipairs(facts.paths) do
    if path == "" or path ~= facts.paths[1] then
      plan.render = true
      return plan
    end
  end
  plan.path = facts.paths[1]
  return plan
end

--- The facts M.plan needs, read from an Ardour region.
function M.region_facts(region, sample_rate)
  local facts = { name = region:name(), id = region:to_stateful():id():to_s(), paths = {},
    start = region:start():samples(), length = region:length():samples(),
    position = region:position():samples(), rate = sample_rate }
  local audio = region:to_audioregion()
  if audio:isnil() then return facts end
  for channel = 0, audio:to_readable():n_channels() - 1 do
    local file = region:source(channel):to_filesource()
    facts.paths[#facts.paths + 1] = file:isnil() and "" or file:path()
  end
  return facts
end

-- Rendering a region to one file ----------------------------------------------------------

M.RENDER_BLOCK = 8192 -- samples per channel per read

--- The header of a 32-bit float WAV file holding `frames` frames.
function M.wav_header(channels, rate, frames)
  local bytes = frames * channels * 4
  return "RIFF" .. string.pack("<I4", 36 + bytes) .. "WAVE" ..
    "fmt " .. string.pack("<I4I2I2I4I4I2I2", 16, 3, channels, rate, rate * channels * 4, channels * 4, 32) ..
    "data" .. string.pack("<I4", bytes)
end

--- Write the samples `region` plays from its sources (no fades or gain), all channels
-- interleaved, to a 32-bit float WAV at `path`, read through Ardour. Returns true, or nil
-- and a message.
function M.render(region, path, rate)
  local readable = region:to_audioregion():to_readable()
  local channels, length = readable:n_channels(), region:length():samples()
  if length * channels * 4 > 0xFFFFFFFF - 36 then
    return nil, region:name() .. ": too long for one WAV file; split it into shorter regions"
  end
  local partial = path .. ".part"
  local file, problem = io.open(partial, "wb")
  if not file then return nil, region:name() .. ": cannot write " .. partial .. " (" .. problem .. ")" end
  file:write(M.wav_header(channels, rate, length))
  local buffers = {}
  for channel = 1, channels do buffers[channel] = ARDOUR.DSP.DspShm(M.RENDER_BLOCK) end
  local position = 0
  while position < length do
    local count = math.min(M.RENDER_BLOCK, length - position)
    local data = {}
    for channel = 1, channels do
      local got = readable:read(buffers[channel]:to_float(0), position, count, channel - 1)
      if got ~= count then
        file:close()
        os.remove(partial)
        return nil, string.format("%s: Ardour read %d samples of channel %d at %d, not %d",
          region:name(), got, channel, position, count)
      end
      data[channel] = buffers[channel]:to_float(0):array()
    end
    local values, k = {}, 0
    for i = 1, count do
      for channel = 1, channels do
        k = k + 1
        values[k] = data[channel][i]
      end
    end
    file:write(string.pack("<" .. string.rep("f", k), table.unpack(values, 1, k)))
    position = position + count
  end
  file:close()
  local ok, why = os.rename(partial, path)
  if not ok then return nil, region:name() .. ": cannot write " .. path .. " (" .. tostring(why) .. ")" end
  return true
end

--- Make a plan that needs it refer to one file: render the region into the session's
-- export folder (which Ardour makes with the session) as "<region>.wav".
function M.prepare(region, plan, session_folder)
  if not plan.render then return true end
  local path = core.join(core.join(session_folder, "export"), M.safe_name(plan.name) .. ".wav")
  local ok, problem = M.render(region, path, plan.rate)
  if not ok then return nil, problem end
  plan.path, plan.start = path, 0
  return true
end

-- The dialog --------------------------------------------------------------------------------

--- The stems dropdown: what each choice asks for.
M.STEM_CHOICES = {
  ["Vocals + instrumental"] = "vocals,instrumental",
  ["4 stems: drums, bass, other, vocals"] = "drums,bass,other,vocals",
  ["6 stems: + guitar, piano (htdemucs_6s)"] = "drums,bass,other,vocals,guitar,piano",
}
M.STEM_DEFAULT = "Vocals + instrumental"
--- The model stems need when none is chosen (the rest: M.DEFAULTS.model).
M.STEM_MODELS = { ["drums,bass,other,vocals,guitar,piano"] = "htdemucs_6s" }
M.MODEL_DEFAULT = "Default: htdemucs (htdemucs_6s for 6 stems)"
M.DIALOG_HELP = "Stems as on the command line; <stem>@<model> takes one from another model:\n" ..
  "vocals@bs_roformer_viperx_1297,drums,bass,other. Models joined with + run as an ensemble."

--- The installed models (`stembridge models list --json --installed`): a list of
-- {name, family, stems, members}, or nil and a message.
function M.installed_models(config)
  return core.installed_models(M.run(config, { "models", "list", "--json", "--installed" }))
end

-- A dropdown's items are GTK mnemonic labels: "_" underlines the next character, "__" is
-- one "_" (model names are full of them). Ardour shows the chosen label on the button as
-- it is, "__" and all. Its values must be plain: a table value would become a sub-menu.
local function item_label(text)
  return (text:gsub("_", "__"))
end

--- The fields of the LuaDialog that asks how to separate: stems (a choice, or stem words),
-- model (an installed one, or names joined with "+"), preset, mute. `models` are the
-- installed ones; without them, `problem` says why.
function M.dialog_fields(models, problem)
  local choices = { [item_label(M.MODEL_DEFAULT)] = "" }
  for _, model in ipairs(models or {}) do
    local label = model.name .. " (" .. table.concat(model.stems, ", ") .. ")"
    if #model.members > 0 then label = label .. " = " .. table.concat(model.members, " + ") end
    choices[item_label(label)] = model.name
  end
  local stems = {}
  for label, words in pairs(M.STEM_CHOICES) do stems[item_label(label)] = words end
  local fields = {
    { type = "dropdown", key = "stems", title = "Stems", values = stems,
      default = item_label(M.STEM_DEFAULT) },
    { type = "entry", key = "stem_words", title = "or stems", default = "" },
    { type = "dropdown", key = "model", title = "Model", values = choices,
      default = item_label(M.MODEL_DEFAULT) },
    { type = "entry", key = "models", title = "or models", default = "" },
    { type = "label", title = M.DIALOG_HELP, align = "left" },
  }
  if not models then
    fields[#fields + 1] = { type = "label", title = "Installed models could not be listed: " ..
      problem:gsub("\n", " "), align = "left" }
  end
  fields[#fields + 1] = { type = "entry", key = "preset", title = "Effects preset",
    default = M.DEFAULTS.preset }
  fields[#fields + 1] = { type = "checkbox", key = "mute", title = "Mute the original regions",
    default = M.DEFAULTS.mute }
  return fields
end

--- The options the dialog's `answer` asks for: typed stems and models over the dropdowns'.
function M.dialog_options(answer)
  local function typed(text) return (text or ""):match("^%s*(.-)%s*$") end
  local stems = typed(answer.stem_words) ~= "" and typed(answer.stem_words) or answer.stems
  local model = typed(answer.models) ~= "" and typed(answer.models) or answer.model
  if model == "" then model = M.STEM_MODELS[stems] or M.DEFAULTS.model end
  return { stems = stems, model = model, preset = answer.preset, mute = answer.mute }
end

-- Submitting and following jobs ------------------------------------------------------------

local function seconds(samples, rate)
  return string.format("%.17g", samples / rate)
end

--- The folder a region's stems go to: <session>/Stems/<region name>.
function M.output_folder(session_folder, plan)
  return core.join(core.join(session_folder, M.STEMS_FOLDER), M.safe_name(plan.name))
end

--- The arguments of `stembridge submit` for a planned region.
function M.submit_args(plan, options, output)
  local origin = string.format('{"host":"ardour","region_id":"%s","position":%d,"length":%d}',
    (plan.id:gsub("[^%w]", "")), plan.position, plan.length)
  local args = { "submit", plan.path, "--start", seconds(plan.start, plan.rate),
    "--length", seconds(plan.length, plan.rate), "-o", output, "--origin", origin, "--json" }
  if options.stems and options.stems ~= "" then
    args[#args + 1] = "--stems"
    args[#args + 1] = options.stems
  end
  -- "a+b" is an ensemble: one --model each.
  for _, name in ipairs(core.model_names(options.model)) do
    args[#args + 1] = "--model"
    args[#args + 1] = name
  end
  if options.preset and options.preset ~= "" then
    args[#args + 1] = "--preset"
    args[#args + 1] = options.preset
  end
  return args
end

--- Submit one planned region; returns the job or nil and a message.
function M.submit(config, plan, options, session_folder)
  local output = M.output_folder(session_folder, plan)
  local code, out = M.run(config, M.submit_args(plan, options, output))
  local job, problem = core.submitted(code, out, plan.name, output)
  if job then job.plan = plan end
  return job, problem
end

local FINAL = { done = true, failed = true, cancelled = true }

--- Read every job's status file; returns how many have not ended.
function M.poll(jobs)
  local pending = 0
  for _, job in ipairs(jobs) do
    local status = core.read_status(job.status_path)
    if status then core.apply_status(job, status) end
    if not FINAL[job.state] then pending = pending + 1 end
  end
  return pending
end

--- One line per job: "<region>: <stage> 40%".
function M.summary(jobs)
  local lines = {}
  for _, job in ipairs(jobs) do
    lines[#lines + 1] = string.format("%s: %s %d%%", job.plan.name, job.stage, math.floor(job.progress * 100))
  end
  return table.concat(lines, "\n")
end

function M.fraction(jobs)
  if #jobs == 0 then return 1 end
  local sum = 0
  for _, job in ipairs(jobs) do sum = sum + (FINAL[job.state] and 1 or job.progress) end
  return sum / #jobs
end

--- Poll until every job has ended. `report(fraction, text)` shows progress and returns
-- true to cancel; `sleep(seconds)` waits between polls. Returns false when cancelled.
function M.wait(jobs, report, sleep)
  while M.poll(jobs) > 0 do
    if report(M.fraction(jobs), M.summary(jobs)) then return false end
    sleep(M.POLL_SECONDS)
  end
  return true
end

function M.cancel(config, jobs)
  for _, job in ipairs(jobs) do
    if not FINAL[job.state] then M.run(config, { "cancel", job.id }) end
  end
end

--- What a failed job says, for the user.
function M.problem(job)
  if job.state == "failed" then
    return job.plan.name .. ": " .. ((job.status and job.status.error) or "failed") ..
      "\n(stembridge status " .. job.id .. " shows more)"
  end
  return job.plan.name .. ": " .. job.state
end

-- Placing stems --------------------------------------------------------------------------------

function M.track_name(region_name, stem)
  return region_name .. M.DASH .. stem
end

--- Where each stem of a finished job goes: {track, path, stem, position, length} in the
-- order the status file lists them.
function M.placements(job)
  local placements = {}
  for _, stem in ipairs(job.status.stems) do
    placements[#placements + 1] = { track = M.track_name(job.plan.name, stem.name), stem = stem.name,
      path = stem.path, position = job.plan.position, length = job.plan.length }
  end
  return placements
end

--- The track whose playlist holds `region` (Ardour has no direct way to ask).
function M.track_of(session, region)
  local id = region:to_stateful():id()
  for route in session:get_tracks():iter() do
    local track = route:to_track()
    if not track:isnil() and not track:playlist():region_by_id(id):isnil() then return track end
  end
  return nil
end

--- One new track per placement, right under `source_track`, all in one new route group
-- named after the region. Returns the tracks in placement order.
function M.create_tracks(session, source_track, group_name, placements, channels)
  local group = session:new_route_group(group_name)
  local order = source_track and source_track:presentation_info_ptr():order() + 1
    or ARDOUR.PresentationInfo.max_order
  local tracks = {}
  for i, placement in ipairs(placements) do
    local where = source_track and order + i - 1 or order
    local list = session:new_audio_track(channels, channels, group, 1, placement.track, where,
      ARDOUR.TrackMode.Normal, true)
    for track in list:iter() do tracks[i] = track end
    if not tracks[i] then return nil, "Ardour did not create the track " .. placement.track end
  end
  return tracks
end

--- Put a stem's region on its track exactly at the original's position. The region may
-- already be on the track (an import put it there) or not yet (it is added).
function M.place(track, region, placement)
  local playlist = track:playlist()
  local position = Temporal.timepos_t(placement.position)
  if playlist:region_by_id(region:to_stateful():id()):isnil() then
    playlist:add_region(region, position, 1, false, 0, 0, false)
  else
    region:set_position(position)
  end
  region:set_name(placement.track)
  if region:position():samples() ~= placement.position or region:length():samples() ~= placement.length then
    return false, string.format("%s: the stem's region is at %d (%d samples long), the original at %d (%d)",
      placement.track, region:position():samples(), region:length():samples(), placement.position,
      placement.length)
  end
  return true
end

--- The only region on a track's playlist (a freshly made track after one import).
function M.only_region(track)
  local found, count = nil, 0
  for region in track:playlist():region_list():iter() do
    found, count = region, count + 1
  end
  if count ~= 1 then return nil end
  return found
end

return M
