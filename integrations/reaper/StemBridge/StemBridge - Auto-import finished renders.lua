-- @description StemBridge: Auto-import finished renders (toggle)
-- @version 0.1.0
-- @author StemBridge
-- @noindex

-- While on, stems that the StemBridge daemon makes of this project's renders (a
-- [[rule]] watching the render folder, stems in <render folder>/Stems/<name>/)
-- are put on new tracks at the render's start as soon as each job is done. Jobs that a
-- "Separate selected items" action submitted (origin host "reaper") are that action's to
-- import, even when their stems land in the same folder.
local dir = ({ reaper.get_action_context() })[2]:match("^(.*[/\\])")
local lib = dofile(dir .. "stembridge_lib.lua")
local core = lib.core
local _, _, section, command = reaper.get_action_context()

-- The folder of the project's .RPP (EnumProjects names it). GetProjectPath is the
-- recording path, which may be the project folder, a sub-folder of it or elsewhere; it
-- stands in only for a project never saved.
local function project_folder()
  local _, file = reaper.EnumProjects(-1)
  local folder = (file or ""):match("^(.*)[/\\][^/\\]*$")
  if folder and folder ~= "" then return folder end
  return reaper.GetProjectPath()
end

-- The render directory: the project folder when blank, relative ones inside it.
local function render_folder()
  local _, folder = reaper.GetSetProjectInfo_String(0, "RENDER_FILE", "", false)
  if folder == "" then return project_folder() end
  if not (folder:match("^/") or folder:match("^%a:[/\\]") or folder:match("^\\\\")) then
    folder = core.join(project_folder(), folder)
  end
  return folder
end

-- Where the render began: the project start, the custom bounds' start, or else the
-- edit cursor (REAPER does not record where a time-selection or region render began).
local function render_start()
  local bounds = reaper.GetSetProjectInfo(0, "RENDER_BOUNDSFLAG", 0, false)
  if bounds == 1 then return 0 end
  if bounds == 0 then return reaper.GetSetProjectInfo(0, "RENDER_STARTPOS", 0, false) end
  return reaper.GetCursorPosition()
end

local function imported(id)
  local _, value = reaper.GetProjExtState(0, lib.SECTION, "imported_" .. id)
  return value == "1"
end

local function separate_action_job(status)
  return (status.origin or ""):match('"host"%s*:%s*"reaper"') ~= nil
end

local last = -math.huge
local function tick()
  local now = reaper.time_precise()
  if now - last >= 1 then
    last = now
    local status_dir = core.join(core.join(render_folder(), "Stems"), ".stembridge")
    -- REAPER caches directory listings: read this one afresh, or new jobs never show.
    reaper.EnumerateFiles(status_dir, -1)
    local index = 0
    while true do
      local name = reaper.EnumerateFiles(status_dir, index)
      if not name then break end
      index = index + 1
      local id = name:match("^(%x+)%.status$")
      if id and not imported(id) then
        local status = core.read_status(core.join(status_dir, name))
        local ready = status and status.state == "done" and #status.stems > 0
        if ready and not separate_action_job(status) then
          local length = 0
          for _, stem in ipairs(status.stems) do
            local source = reaper.PCM_Source_CreateFromFile(stem.path)
            length = math.max(length, (reaper.GetMediaSourceLength(source)))
            reaper.PCM_Source_Destroy(source)
          end
          reaper.Undo_BeginBlock()
          local title = (status.folder or id):match("([^/\\]+)$") or id
          lib.import_stems(nil, title, status.stems, render_start(), length)
          reaper.SetProjExtState(0, lib.SECTION, "imported_" .. id, "1")
          reaper.Undo_EndBlock("StemBridge: stems of render " .. title, -1)
          reaper.UpdateArrange()
        end
      end
    end
  end
  reaper.defer(tick)
end

reaper.SetToggleCommandState(section, command, 1)
reaper.RefreshToolbar2(section, command)
reaper.atexit(function()
  reaper.SetToggleCommandState(section, command, 0)
  reaper.RefreshToolbar2(section, command)
end)
tick()
