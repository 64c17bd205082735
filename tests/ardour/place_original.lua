-- ardour7-lua: put a region of the whole-file region SB_WHOLE_ID on track "Mix", named
-- SB_REGION_NAME, SB_OFFSET samples into its source, at SB_POSITION, SB_LENGTH long.
load_session(os.getenv("SB_DIR"), os.getenv("SB_NAME"))
local offset, position = tonumber(os.getenv("SB_OFFSET")), tonumber(os.getenv("SB_POSITION"))
local length = tonumber(os.getenv("SB_LENGTH"))
local whole = ARDOUR.RegionFactory.region_by_id(PBD.ID(os.getenv("SB_WHOLE_ID")))
assert(not whole:isnil(), "Ardour did not load the whole-file region")
local region = ARDOUR.RegionFactory.clone_region(whole, true, false)
Session:route_by_name("Mix"):to_track():playlist():add_region(region,
  Temporal.timepos_t(position - offset), 1, false, 0, 0, false)
region:trim_front(Temporal.timepos_t(position))
region:trim_end(Temporal.timepos_t(position + length))
region:set_name(os.getenv("SB_REGION_NAME"))
assert(region:position():samples() == position and region:start():samples() == offset
  and region:length():samples() == length, "the original region is not where it was put")
Session:save_state("")
close_session()
