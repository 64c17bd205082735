"use strict";
// One job: its state (live), its stems in the mixer (mixer.js) with downloads and the
// balance render, its settings and timings, and each stem's pictures and models.
(() => {
  const { el, getJSON, post, startLive, setStatus, canChange } = StemBridge;
  const jobId = decodeURIComponent(window.location.pathname.split("/").pop());
  const FINAL = ["done", "failed", "cancelled"];
  const WAVE_COLOR = "#5ec4ff";
  const ORIGINAL_COLOR = "#9a9aae";

  function fact(name, value) {
    return [el("dt", { text: name }), el("dd", { text: value })];
  }

  function seconds(value) {
    return value == null ? "" : Number(value).toFixed(2) + " s";
  }

  function clock(time) {
    const minutes = Math.floor(time / 60);
    return `${minutes}:${(time - 60 * minutes).toFixed(1).padStart(4, "0")}`;
  }

  // "htdemucs + htdemucs_ft (avg_spec, weights 2, 1)"; with the sources each gave when
  // several models gave one stem's (an instrumental's, with a routed stem among them).
  function madeBy(givers) {
    return givers
      .map((giver) => {
        const weights = giver.weights && "weights " + giver.weights.join(", ");
        const how = [giver.ensemble, weights].filter(Boolean);
        const sources = givers.length > 1 ? ` for ${giver.sources.join(", ")}` : "";
        return giver.models.join(" + ") + (how.length ? ` (${how.join(", ")})` : "") + sources;
      })
      .join("; ");
  }

  function stemBlock(stem) {
    const pictures = el("div", { class: "pictures" });
    for (const kind of ["waveform", "spectrogram"]) {
      if (stem.pictures[kind])
        pictures.append(el("img", { src: stem.pictures[kind], alt: `${stem.name} ${kind}`, class: kind }));
    }
    const heading = el("h4", {}, stem.name);
    if (stem.made_by.length)
      heading.append(el("span", { class: "made-by", text: " — " + madeBy(stem.made_by) }));
    if (stem.loudness_lufs != null) heading.append(`  (${stem.loudness_lufs} LUFS)`);
    if (stem.silent) heading.append(" (silent)");
    return el("div", { class: "stem", "data-stem": stem.name }, heading, pictures);
  }

  function actions(job) {
    const buttons = [];
    const act = (label, path) =>
      el("button", {
        text: label,
        class: "action-" + label.toLowerCase(),
        onclick: async () => {
          try {
            await post(path);
          } catch (error) {
            setStatus(label + " refused: " + error.message);
          }
        },
      });
    if (canChange() && (job.state === "failed" || job.state === "cancelled"))
      buttons.push(act("Retry", `/api/jobs/${job.id}/retry`));
    if (canChange() && !FINAL.includes(job.state)) buttons.push(act("Cancel", `/api/jobs/${job.id}/cancel`));
    document.getElementById("actions").replaceChildren(...buttons);
  }

  // The mixer: built once the job has stems, kept while events come.

  let mixer = null;
  let rows = [];
  let selected = 0;
  let animating = false;

  function trackRow(track, stem, index) {
    const canvas = el("canvas", { class: "wave-canvas" });
    const playhead = el("div", { class: "playhead" });
    const wave = el("div", { class: "wave", title: "click to play from here" }, canvas, playhead);
    // Until the stem itself is decoded, the waveform picture drawn beside it stands in.
    if (stem && stem.pictures.waveform)
      wave.append(el("img", { class: "wave-picture", src: stem.pictures.waveform, alt: "" }));
    wave.append(el("span", { class: "wave-note muted", text: "loading…" }));
    wave.addEventListener("click", (event) => {
      const box = wave.getBoundingClientRect();
      mixer.seek(((event.clientX - box.left) / box.width) * mixer.duration());
    });
    const head = el("div", { class: "track-head" }, el("span", { class: "name", text: track.name }));
    const row = el("div", { class: "track", "data-stem": track.name }, head, wave);
    const item = { track, row, canvas, playhead, wave };
    if (!track.isOriginal) {
      const mute = el("button", { class: "mute", text: "M", title: "mute (M)", "aria-pressed": "false" });
      const solo = el("button", { class: "solo", text: "S", title: "solo (S)", "aria-pressed": "false" });
      const level = el("input", {
        type: "range",
        class: "level",
        min: "0",
        max: "1.5",
        step: "0.01",
        value: "1",
        "aria-label": `${track.name} gain`,
      });
      const db = el("span", { class: "db", text: "0.0 dB" });
      // Clicked buttons give the focus back, so that space then plays rather than
      // pressing the button again.
      mute.addEventListener("click", () => {
        mixer.toggleMute(track);
        mute.blur();
        paintButtons();
      });
      solo.addEventListener("click", () => {
        mixer.toggleSolo(track);
        solo.blur();
        paintButtons();
      });
      level.addEventListener("input", () => {
        mixer.setLevel(track, Number(level.value));
        db.textContent = track.level > 0 ? (20 * Math.log10(track.level)).toFixed(1) + " dB" : "-∞ dB";
      });
      const download = el("a", { class: "download", href: stem.audio, download: "", title: "download this stem", text: "⤓" });
      head.append(mute, solo, level, db, download);
      Object.assign(item, { mute, solo, level });
      row.addEventListener("click", () => select(index));
    } else {
      row.classList.add("original");
    }
    return item;
  }

  function paintButtons() {
    for (const [index, item] of rows.entries()) {
      if (!item.mute) continue;
      item.mute.setAttribute("aria-pressed", String(item.track.muted));
      item.solo.setAttribute("aria-pressed", String(item.track.soloed));
      item.row.classList.toggle("selected", index === selected);
      item.row.classList.toggle("silenced", item.track.gain && mixer.balance()[item.track.name] === 0);
    }
    const listening = mixer.listening();
    document.getElementById("ab-stems").classList.toggle("on", listening === "stems");
    document.getElementById("ab-original").classList.toggle("on", listening === "original");
    document.getElementById("play").textContent = mixer.isPlaying() ? "Pause" : "Play";
  }

  function select(index) {
    const stems = rows.filter((item) => item.mute).length;
    selected = Math.max(0, Math.min(stems - 1, index));
    paintButtons();
  }

  function loaded(track) {
    const item = rows.find((r) => r.track === track);
    const count = rows.filter((r) => r.track.buffer || r.track.error).length;
    document.getElementById("loading").textContent = count < rows.length ? `loading ${count}/${rows.length}` : "";
    if (!item) return;
    item.wave.querySelector(".wave-note").remove();
    const picture = item.wave.querySelector(".wave-picture");
    if (picture) picture.remove();
    if (track.error) {
      item.wave.append(el("span", { class: "wave-note error", text: "cannot be played: " + track.error }));
      return;
    }
    item.row.dataset.loaded = "true";
    StemMixer.drawWave(item.canvas, track.buffer, track.isOriginal ? ORIGINAL_COLOR : WAVE_COLOR);
  }

  function frame() {
    const time = mixer.tick();
    const length = mixer.duration();
    const percent = length ? (100 * time) / length : 0;
    for (const item of rows) item.playhead.style.left = percent + "%";
    document.getElementById("clock").textContent = `${clock(time)} / ${clock(length)}`;
    requestAnimationFrame(frame);
  }

  function toggle() {
    if (mixer.isPlaying()) mixer.pause();
    else mixer.play().then(paintButtons);
    paintButtons();
  }

  function onKey(event) {
    if (!mixer || event.target.closest("input[type=text], input:not([type]), select, textarea")) return;
    const stems = rows.filter((item) => item.mute);
    const current = stems[selected];
    if (event.key === " ") {
      event.preventDefault();
      toggle();
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      select(selected + (event.key === "ArrowDown" ? 1 : -1));
    } else if ((event.key === "m" || event.key === "M") && current) {
      mixer.toggleMute(current.track);
      paintButtons();
    } else if ((event.key === "s" || event.key === "S") && current) {
      mixer.toggleSolo(current.track);
      paintButtons();
    } else if ((event.key === "a" || event.key === "A") && mixer.original()) {
      mixer.listen(mixer.listening() === "stems" ? "original" : "stems");
      paintButtons();
    } else if (/^[1-9]$/.test(event.key)) {
      select(Number(event.key) - 1);
    }
  }

  async function render(job) {
    const note = document.getElementById("render-note");
    try {
      const queued = await post(`/api/jobs/${job.id}/balance`, { gains: mixer.balance() });
      note.className = "";
      note.replaceChildren("Rendering the balance as job ", el("a", { href: "/job/" + queued.id, text: queued.id }));
      note.dataset.job = queued.id;
    } catch (error) {
      note.className = "error";
      note.textContent = "Render refused: " + error.message;
    }
  }

  function buildMixer(job) {
    if (mixer) mixer.close();
    mixer = StemMixer.create({ sampleRate: job.sample_rate, onLoaded: loaded, onEnded: paintButtons });
    rows = job.stems.map((stem, index) => trackRow(mixer.addStem(stem.name, stem.audio), stem, index));
    if (job.original)
      rows.push(trackRow(mixer.setOriginal(job.original, job.original_offset_seconds), null, rows.length));
    document.getElementById("ab-original").disabled = !job.original;
    document.getElementById("tracks").replaceChildren(...rows.map((item) => item.row));
    document.getElementById("zip").href = `/api/jobs/${job.id}/zip`;
    const renderButton = document.getElementById("render");
    renderButton.hidden = !canChange() || Boolean(job.spec.balance);
    renderButton.onclick = () => render(job);
    select(0);
    mixer.loadAll();
    if (!animating) {
      animating = true;
      requestAnimationFrame(frame);
    }
  }

  function setUpTransport() {
    const play = document.getElementById("play");
    play.addEventListener("click", () => {
      toggle();
      play.blur();
    });
    document.getElementById("ab-stems").addEventListener("click", () => {
      mixer.listen("stems");
      paintButtons();
    });
    document.getElementById("ab-original").addEventListener("click", () => {
      mixer.listen("original");
      paintButtons();
    });
    document.addEventListener("keydown", onKey);
  }

  let shownStems = null;

  function show(job) {
    document.title = "StemBridge: " + job.name;
    const title = document.getElementById("title");
    title.textContent = `${job.name} (${job.state})`;
    title.dataset.state = job.state;
    document.getElementById("bar").style.width = (100 * job.progress).toFixed(1) + "%";
    document.getElementById("progress").hidden = job.state === "done";
    document.getElementById("error").textContent = job.error || "";
    actions(job);
    const sep = job.spec.separation || {};
    const out = job.spec.output || {};
    const what = job.spec.balance
      ? ["Balance of", job.spec.balance.manifest]
      : ["Model", `${sep.model} on ${job.device || sep.device}, stems ${(sep.stems || []).join(", ") || "all"}`];
    document.getElementById("facts").replaceChildren(
      ...fact("Job", job.id),
      ...fact("Input", job.input),
      ...fact("Stem folder", job.manifest ? job.manifest.replace(/[^/\\]*$/, "") : job.folder),
      ...fact("Stage", `${job.stage} (${(100 * job.progress).toFixed(0)} %)`),
      ...fact(...what),
      ...fact(
        "Output",
        `${out.format || "format as input"}, ${out.bit_depth ? out.bit_depth + "-bit" : "bit depth as input"}`,
      ),
      ...fact("Effects", (job.spec.effects || {}).preset || ""),
      ...fact("Source", job.source || ""),
      ...fact("Created", new Date(job.created * 1000).toLocaleString()),
      ...fact("Separation", seconds(job.timings.separate_seconds)),
      ...fact("Pictures", seconds(job.timings.pictures_seconds)),
      ...fact("Total", seconds(job.timings.total_seconds)),
      ...fact("Realtime factor", job.timings.realtime_factor ? job.timings.realtime_factor + "x" : ""),
    );
    const key = JSON.stringify(job.stems);
    if (key !== shownStems) {
      // Rebuilt only when the stems change, so the mixer keeps playing as events come.
      shownStems = key;
      document.getElementById("stems").replaceChildren(...job.stems.map(stemBlock));
      document.getElementById("no-stems").hidden = job.stems.length > 0;
      document.getElementById("mixer").hidden = job.stems.length === 0;
      if (job.stems.length) buildMixer(job);
    }
  }

  async function refresh() {
    show(await getJSON("/api/jobs/" + encodeURIComponent(jobId)));
  }

  setUpTransport();
  startLive("/api/events?job=" + encodeURIComponent(jobId), "job", show, refresh);
})();
