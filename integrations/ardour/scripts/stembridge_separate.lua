ardour {
  ["type"] = "EditorAction",
  name = "StemBridge: separate selected regions",
  author = "StemBridge",
  description = [[Separates each selected audio region into stems (HT Demucs or another
installed model, alone or as an ensemble, through the StemBridge daemon) and puts every stem
on a new track, "<region> – <stem>", at the region's exact position, all in one route group
per region; the original can be muted.
Needs StemBridge installed and `stembridge ardour install` run once.]]
}

-- Ardour runs an action script to its end before the editor takes input again and gives
-- action scripts no deferred callback, so the action waits for the jobs in a progress
-- window (which keeps the editor drawn and offers Cancel) instead of returning early.

-- Ardour keeps the factory as bytecode (string.dump), which drops upvalues: everything
-- the action uses is defined inside it.
function factory () return function ()
  local function tell(text)
    LuaDialog.Message("StemBridge", text, LuaDialog.MessageType.Info, LuaDialog.ButtonType.Close):run()
  end
  -- Ardour's Lua sandbox (off by default) takes away what the action needs to run stembridge
  -- and what the library needs to find the shared core beside itself (debug.getinfo).
  if not (io and io.popen and loadfile and package and debug) then
    tell("StemBridge needs to run the stembridge program, which Ardour's Lua sandbox forbids. " ..
      "Turn off \"Sandbox Lua scripts\" in Ardour's Preferences, restart Ardour and try again.")
    return
  end

  local sep = package.config:sub(1, 1)
  local config_dir = ARDOUR.user_config_directory(-1)
  local folders = { config_dir .. sep .. "scripts" }
  for folder in (os.getenv("ARDOUR_LUA_PATH") or ""):gmatch(sep == "\\" and "[^;]+" or "[^:]+") do
    folders[#folders + 1] = folder
  end

  local lib
  for _, folder in ipairs(folders) do
    local chunk = loadfile(folder .. sep .. "stembridge_ardour_lib.lua")
    if chunk then
      -- It fails, saying what to run, when the shared core is not beside it.
      local ok, loaded = pcall(chunk)
      if not ok then tell(loaded) return end
      lib = loaded
      break
    end
  end
  if not lib then
    tell("StemBridge is not set up: stembridge_ardour_lib.lua is not in " .. table.concat(folders, " or ") ..
      ".\n\nRun `stembridge ardour install` in a terminal, then try again.")
    return
  end
  local config, problem = lib.load_config(lib.script_folders(config_dir, os.getenv("ARDOUR_LUA_PATH")))
  if not config then tell(problem) return end

  local regions = {}
  for region in Editor:get_selection().regions:regionlist():iter() do regions[#regions + 1] = region end
  if #regions == 0 then tell("Select one or more audio regions first.") return end

  -- The model dropdown offers the installed models; it says so when they cannot be listed.
  local answer = LuaDialog.Dialog("StemBridge: separate selected regions",
    lib.dialog_fields(lib.installed_models(config))):run()
  if not answer then return end
  local options = lib.dialog_options(answer)

  local problems, jobs, daemon = {}, {}, true
  for _, region in ipairs(regions) do
    local plan = lib.plan(lib.region_facts(region, Session:nominal_sample_rate()))
    local ready, why = plan.reason == nil, plan.reason
    if ready then ready, why = lib.prepare(region, plan, Session:path()) end
    if not ready then
      problems[#problems + 1] = "Skipped " .. plan.name .. ": " .. why
    else
      local job, message = lib.submit(config, plan, options, Session:path())
      if job then
        job.region, job.track = region, lib.track_of(Session, region)
        jobs[#jobs + 1] = job
        daemon = daemon and job.daemon
      else
        problems[#problems + 1] = message
      end
    end
  end
  if #jobs > 0 and not daemon then
    tell("The StemBridge daemon is not running, so the jobs wait for it. Start it with " ..
      "`stembridge serve` (or `stembridge service install` to run it at login); this window " ..
      "then shows their progress.")
  end

  local progress = LuaDialog.ProgressWindow("StemBridge: separating", true)
  local finished = lib.wait(jobs,
    function (fraction, text)
      progress:progress(fraction, text)
      return progress:canceled()
    end,
    function (seconds) ARDOUR.LuaAPI.usleep(math.floor(seconds * 1000000)) end)
  progress:done()
  if not finished then lib.cancel(config, jobs) end

  for _, job in ipairs(jobs) do
    if job.state ~= "done" then
      problems[#problems + 1] = lib.problem(job)
      goto next_job
    end
    do
      local placements = lib.placements(job)
      local tracks, message = lib.create_tracks(Session, job.track, job.plan.name, placements, job.plan.channels)
      if not tracks then
        problems[#problems + 1] = message
        goto next_job
      end
      for i, placement in ipairs(placements) do
        local files = C.StringVector()
        files:push_back(placement.path)
        local position = Temporal.timepos_t(placement.position)
        -- ImportMergeFiles (one file: one region of all its channels) imports onto the track
        -- given; ImportDistinctFiles would replace it by the editor's selected tracks.
        Editor:do_import(files, Editing.ImportMergeFiles, Editing.ImportToTrack, ARDOUR.SrcQuality.SrcBest,
          ARDOUR.MidiTrackNameSource.SMFTrackName, ARDOUR.MidiTempoMapDisposition.SMFTempoIgnore,
          position, ARDOUR.PluginInfo(), tracks[i], false)
        local region = lib.only_region(tracks[i])
        if not region then
          problems[#problems + 1] = placement.track .. ": Ardour did not import " .. placement.path
        else
          local ok, why = lib.place(tracks[i], region, placement)
          if not ok then problems[#problems + 1] = why end
        end
      end
      if options.mute then job.region:set_muted(true) end
    end
    ::next_job::
  end
  if #problems > 0 then tell(table.concat(problems, "\n\n")) end
end end
