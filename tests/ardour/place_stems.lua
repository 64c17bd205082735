-- ardour7-lua: for each line "track<TAB>whole-file region id<TAB>position<TAB>length" of
-- SB_STEMS, put a region of that stem on the track with the library's M.place, then read
-- the first SB_READ samples of each channel back through Ardour into SB_READBACK.
local lib = dofile(os.getenv("SB_LIB"))
load_session(os.getenv("SB_DIR"), os.getenv("SB_NAME"))
local count = tonumber(os.getenv("SB_READ"))
local buffer = ARDOUR.DSP.DspShm(count)
local readback = assert(io.open(os.getenv("SB_READBACK"), "w"))
for line in io.lines(os.getenv("SB_STEMS")) do
  local name, id, position, length = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)$")
  local track = Session:route_by_name(name):to_track()
  local whole = ARDOUR.RegionFactory.region_by_id(PBD.ID(id))
  assert(not whole:isnil(), "Ardour did not load the stem's whole-file region " .. id)
  local region = ARDOUR.RegionFactory.clone_region(whole, true, false)
  assert(lib.place(track, region, { track = name, position = tonumber(position), length = tonumber(length) }))
  local readable = region:to_audioregion():to_readable()
  for channel = 0, readable:n_channels() - 1 do
    local got = readable:read(buffer:to_float(0), 0, count, channel)
    local samples = buffer:to_float(0):array()
    local values = {}
    for i = 1, got do values[i] = string.format("%.9g", samples[i]) end
    readback:write(name, "\t", channel, "\t", table.concat(values, " "), "\n")
  end
end
readback:close()
Session:save_state("")
close_session()
