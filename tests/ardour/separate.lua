-- ardour7-lua: what the editor action does, minus Ardour's GUI import: plan the region on
-- "Mix", submit it, wait for the daemon, make the stem tracks (grouped), mute the original
-- if SB_MUTE is "1", and write the placements to SB_PLACEMENTS (tab-separated).
local lib = dofile(os.getenv("SB_LIB"))
local config = assert(lib.load_config({ os.getenv("SB_SCRIPTS") }))
load_session(os.getenv("SB_DIR"), os.getenv("SB_NAME"))
local track = Session:route_by_name("Mix"):to_track()
local original = lib.only_region(track)
local plan = lib.plan(lib.region_facts(original, Session:nominal_sample_rate()))
assert(not plan.reason, plan.reason)
assert((plan.render and "render" or "range") == os.getenv("SB_EXPECT"), "planned the wrong way")
assert(lib.prepare(original, plan, Session:path()))
local job = assert(lib.submit(config, plan, lib.DEFAULTS, Session:path()))
assert(lib.track_of(Session, original):name() == "Mix")
local finished = lib.wait({ job },
  function (fraction, text) print(string.format("%.2f %s", fraction, text)) return false end,
  function (seconds) ARDOUR.LuaAPI.usleep(math.floor(seconds * 1000000)) end)
assert(finished and job.state == "done", lib.problem(job))
local placements = lib.placements(job)
assert(lib.create_tracks(Session, track, plan.name, placements, plan.channels))
if os.getenv("SB_MUTE") == "1" then original:set_muted(true) end
local out = assert(io.open(os.getenv("SB_PLACEMENTS"), "w"))
for _, p in ipairs(placements) do
  out:write(table.concat({ p.track, p.stem, p.path, p.position, p.length }, "\t"), "\n")
end
out:close()
Session:save_state("")
close_session()
