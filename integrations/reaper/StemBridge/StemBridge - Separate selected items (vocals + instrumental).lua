-- @description StemBridge: Separate selected items (vocals + instrumental)
-- @version 0.1.0
-- @author StemBridge
-- @noindex

-- Separates the selected items into vocals + instrumental with the last preset and mute choice.
local dir = ({ reaper.get_action_context() })[2]:match("^(.*[/\\])")
local lib = dofile(dir .. "stembridge_lib.lua")
local options = lib.options_from_state()
options.stems, options.model = "vocals,instrumental", "htdemucs"
lib.separate_selected(options)
