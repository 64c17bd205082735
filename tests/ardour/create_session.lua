-- ardour7-lua: a new session SB_DIR/SB_NAME.ardour at SB_RATE with one stereo track "Mix".
local session = create_session(os.getenv("SB_DIR"), os.getenv("SB_NAME"), tonumber(os.getenv("SB_RATE")))
assert(session, "Ardour could not create the session")
local tracks = Session:new_audio_track(2, 2, nil, 1, "Mix", ARDOUR.PresentationInfo.max_order,
  ARDOUR.TrackMode.Normal, true)
assert(tracks:size() == 1, "Ardour did not create the track")
Session:save_state("")
close_session()
