-- @description StemBridge: Register actions
-- @version 0.1.0
-- @author StemBridge
-- @noindex

-- Run once after `stembridge reaper install`: adds the StemBridge scripts in this
-- folder to the action list (ReaPack users do not need it; ReaPack registers them).
local dir = ({ reaper.get_action_context() })[2]:match("^(.*[/\\])")
local names = {
  "StemBridge - Separate selected items.lua",
  "StemBridge - Separate selected items (vocals + instrumental).lua",
  "StemBridge - Separate selected items (4 stems).lua",
  "StemBridge - Separate selected items (6 stems).lua",
  "StemBridge - Auto-import finished renders.lua",
}
local present, missing = {}, {}
for _, name in ipairs(names) do
  local path = dir .. name
  if reaper.file_exists(path) then present[#present + 1] = path else missing[#missing + 1] = name end
end
-- The action list is written once, by the last call (commit=true), whichever files are
-- missing: a commit tied to one name would be lost with that file.
local added = 0
for i, path in ipairs(present) do
  if reaper.AddRemoveReaScript(true, 0, path, i == #present) ~= 0 then added = added + 1 end
end
local message = string.format("StemBridge: %d actions are in the action list (search \"StemBridge\").", added)
if #missing > 0 then
  message = message .. "\n\nMissing (run `stembridge reaper install` again):\n" .. table.concat(missing, "\n")
end
reaper.ShowMessageBox(message, "StemBridge", 0)
