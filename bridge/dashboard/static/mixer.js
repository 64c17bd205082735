"use strict";
// The stem mixer's sound: one AudioContext, so one clock for every stem. Each stem (and
// the original mix, for A/B) is fetched and decoded in turn, and plays as soon as it is
// ready: a stem that arrives while the others play is started on the same timeline
// (song time = context time - origin), so it joins them sample for sample. Every source
// of one press of Play is started at one context time. Read-only state for tests and
// curious people: window.StemBridgeMixer.snapshot().
const StemMixer = (() => {
  // Sources are started this far ahead, so all of them are scheduled before it comes.
  const LEAD_SECONDS = 0.1;
  // Gain changes glide over ~10 ms rather than click.
  const GLIDE_SECONDS = 0.01;

  function create({ sampleRate, onLoaded, onEnded }) {
    const Context = window.AudioContext || window.webkitAudioContext;
    const ctx = sampleRate ? new Context({ sampleRate }) : new Context();
    const tracks = [];
    let original = null;
    let playing = false;
    let origin = 0; // the context time at which song time 0 plays (or would have)
    let position = 0; // song time while paused
    let listening = "stems";
    let starts = 0;

    // `shift`: where song time 0 lies in the file (the original, when a part was separated).
    function makeTrack(name, url, isOriginal, shift = 0) {
      const gain = ctx.createGain();
      gain.connect(ctx.destination);
      return {
        name,
        url,
        isOriginal,
        shift,
        gain,
        buffer: null,
        level: 1,
        muted: false,
        soloed: false,
        source: null,
        startedAt: null,
        offset: null,
        error: null,
      };
    }

    function effective(track) {
      if (track.isOriginal) return listening === "original" ? 1 : 0;
      if (listening === "original") return 0;
      const anySolo = tracks.some((t) => t.soloed);
      if (anySolo) return track.soloed ? track.level : 0;
      return track.muted ? 0 : track.level;
    }

    function applyGains() {
      for (const track of all()) track.gain.gain.setTargetAtTime(effective(track), ctx.currentTime, GLIDE_SECONDS);
    }

    function all() {
      return original ? [...tracks, original] : tracks;
    }

    // The song is as long as its longest stem (the original may hold more around them).
    function duration() {
      const sources = tracks.some((t) => t.buffer) ? tracks : all();
      return Math.max(0, ...sources.filter((t) => t.buffer).map((t) => t.buffer.duration - t.shift));
    }

    function now() {
      return playing ? Math.max(0, ctx.currentTime - origin) : position;
    }

    function startSource(track, at) {
      const offset = at - origin + track.shift;
      if (!track.buffer || offset >= track.buffer.duration) return;
      const source = ctx.createBufferSource();
      source.buffer = track.buffer;
      source.connect(track.gain);
      source.start(at, Math.max(0, offset));
      track.source = source;
      track.startedAt = at;
      track.offset = Math.max(0, offset);
    }

    function stopAll() {
      for (const track of all()) {
        if (track.source) {
          track.source.stop();
          track.source.disconnect();
          track.source = null;
        }
      }
    }

    async function play() {
      if (playing) return;
      if (ctx.state === "suspended") await ctx.resume();
      if (position >= duration()) position = 0;
      const at = ctx.currentTime + LEAD_SECONDS;
      origin = at - position;
      playing = true;
      starts += 1;
      applyGains();
      for (const track of all()) startSource(track, at);
    }

    function pause() {
      if (!playing) return;
      position = Math.min(now(), duration());
      playing = false;
      stopAll();
    }

    function seek(seconds) {
      const wasPlaying = playing;
      pause();
      position = Math.min(Math.max(0, seconds), duration());
      if (wasPlaying) play();
    }

    // Called every frame by the page: stop at the end of the longest stem.
    function tick() {
      if (playing && now() >= duration()) {
        pause();
        position = 0;
        onEnded();
      }
      return now();
    }

    async function load(track) {
      try {
        const response = await fetch(track.url, { credentials: "same-origin" });
        if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
        track.buffer = await ctx.decodeAudioData(await response.arrayBuffer());
        track.gain.gain.value = effective(track);
        if (playing) startSource(track, ctx.currentTime + LEAD_SECONDS);
      } catch (error) {
        track.error = error.message;
      }
      onLoaded(track);
    }

    // Fetch one file after another (the first can play while the rest come).
    async function loadAll() {
      for (const track of all()) await load(track);
    }

    function snapshot() {
      const describe = (t) => ({
        name: t.name,
        loaded: Boolean(t.buffer),
        error: t.error,
        level: t.level,
        muted: t.muted,
        soloed: t.soloed,
        gain: t.gain.gain.value,
        target: effective(t),
        playing: Boolean(t.source),
        startedAt: t.startedAt,
        offset: t.offset,
        frames: t.buffer ? t.buffer.length : null,
      });
      return {
        contextTime: ctx.currentTime,
        contextState: ctx.state,
        sampleRate: ctx.sampleRate,
        playing,
        position: now(),
        duration: duration(),
        origin,
        listening,
        starts,
        tracks: tracks.map(describe),
        original: original && describe(original),
      };
    }

    const mixer = {
      addStem(name, url) {
        const track = makeTrack(name, url, false);
        tracks.push(track);
        return track;
      },
      setOriginal(url, shiftSeconds) {
        original = makeTrack("original", url, true, shiftSeconds);
        return original;
      },
      loadAll,
      play,
      pause,
      seek,
      tick,
      isPlaying: () => playing,
      duration,
      tracks: () => tracks,
      original: () => original,
      setLevel(track, level) {
        track.level = level;
        applyGains();
      },
      toggleMute(track) {
        track.muted = !track.muted;
        applyGains();
      },
      toggleSolo(track) {
        track.soloed = !track.soloed;
        applyGains();
      },
      listen(what) {
        listening = what;
        applyGains();
      },
      listening: () => listening,
      // What the render should use: each stem's gain as heard now (mute and solo in).
      balance() {
        const wasListening = listening;
        listening = "stems";
        const gains = Object.fromEntries(tracks.map((t) => [t.name, effective(t)]));
        listening = wasListening;
        return gains;
      },
      snapshot,
      close() {
        stopAll();
        ctx.close();
      },
    };
    window.StemBridgeMixer = Object.freeze({ snapshot });
    return mixer;
  }

  // Peaks of a decoded buffer drawn into a canvas as a filled waveform.
  function drawWave(canvas, buffer, color) {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.floor(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.floor(canvas.clientHeight * ratio));
    canvas.width = width;
    canvas.height = height;
    const paint = canvas.getContext("2d");
    paint.clearRect(0, 0, width, height);
    paint.fillStyle = color;
    const channels = [...Array(buffer.numberOfChannels).keys()].map((c) => buffer.getChannelData(c));
    const per = buffer.length / width;
    const middle = height / 2;
    for (let x = 0; x < width; x += 1) {
      let low = 0;
      let high = 0;
      const from = Math.floor(x * per);
      const to = Math.min(buffer.length, Math.floor((x + 1) * per));
      const step = Math.max(1, Math.floor((to - from) / 512));
      for (const data of channels) {
        for (let i = from; i < to; i += step) {
          const value = data[i];
          if (value < low) low = value;
          else if (value > high) high = value;
        }
      }
      const top = middle - Math.min(1, high) * middle;
      const bottom = middle - Math.max(-1, low) * middle;
      paint.fillRect(x, top, 1, Math.max(1, bottom - top));
    }
  }

  return { create, drawWave };
})();
