-- @description StemBridge: Separate selected items (6 stems)
-- @version 0.1.0
-- @author StemBridge
-- @noindex

-- Separates the selected items into 6 stems with the last preset and mute choice.
local dir = ({ reaper.get_action_context() })[2]:match("^(.*[/\\])")
local lib = dofile(dir .. "stembridge_lib.lua")
local options = lib.options_from_state()
options.stems, options.model = "drums,bass,other,vocals,guitar,piano", "htdemucs_6s"
lib.separate_selected(options)
