-- @description StemBridge: stem separation into aligned tracks
-- @version 0.1.0
-- @author StemBridge
-- @about
--   # StemBridge for REAPER
--   Separates the selected items into stems (HT Demucs, through the StemBridge daemon)
--   and puts each stem on a new track right under the source track, aligned to the
--   sample. Needs StemBridge installed (`pip install stembridge`) and
--   `stembridge reaper install` run once, which records where the program is.
-- @provides
--   [nomain] stembridge_lib.lua
--   [nomain] ../../common/stembridge_core.lua > stembridge_core.lua
--   [main] StemBridge - Separate selected items (vocals + instrumental).lua
--   [main] StemBridge - Separate selected items (4 stems).lua
--   [main] StemBridge - Separate selected items (6 stems).lua
--   [main] StemBridge - Auto-import finished renders.lua
--   [main] StemBridge - Register actions.lua

-- Asks for stems, model and preset (remembered), then separates the selected items.
local dir = ({ reaper.get_action_context() })[2]:match("^(.*[/\\])")
local lib = dofile(dir .. "stembridge_lib.lua")
local options = lib.ask_options()
if options then lib.separate_selected(options) end
