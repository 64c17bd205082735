"use strict";
// One job: its settings, timings and stems (waveform, spectrogram, player); polled,
// so a retried or cancelled job shows its new state.
(() => {
  const { el, getJSON, post, start, setStatus, canChange } = StemBridge;
  const jobId = decodeURIComponent(window.location.pathname.split("/").pop());
  const FINAL = ["done", "failed", "cancelled"];

  function fact(name, value) {
    return [el("dt", { text: name }), el("dd", { text: value })];
  }

  function seconds(value) {
    return value == null ? "" : Number(value).toFixed(2) + " s";
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
    return el(
      "div",
      { class: "stem", "data-stem": stem.name },
      heading,
      pictures,
      el("audio", { controls: "", preload: "none", src: stem.audio }),
    );
  }

  function actions(job) {
    const box = document.getElementById("actions");
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
    box.replaceChildren(...buttons);
  }

  let shownStems = null;

  async function refresh() {
    const job = await getJSON("/api/jobs/" + encodeURIComponent(jobId));
    document.title = "StemBridge: " + job.name;
    const title = document.getElementById("title");
    title.textContent = `${job.name} (${job.state})`;
    title.dataset.state = job.state;
    document.getElementById("bar").style.width = (100 * job.progress).toFixed(1) + "%";
    document.getElementById("error").textContent = job.error || "";
    actions(job);
    const sep = job.spec.separation || {};
    const out = job.spec.output || {};
    document.getElementById("facts").replaceChildren(
      ...fact("Job", job.id),
      ...fact("Input", job.input),
      ...fact("Stem folder", job.manifest ? job.manifest.replace(/[^/\\]*$/, "") : job.folder),
      ...fact("Stage", `${job.stage} (${(100 * job.progress).toFixed(0)} %)`),
      ...fact("Model", `${sep.model} on ${job.device || sep.device}, stems ${(sep.stems || []).join(", ") || "all"}`),
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
      // Rebuilt only when the stems change, so players keep playing while polling.
      shownStems = key;
      document.getElementById("stems").replaceChildren(...job.stems.map(stemBlock));
      document.getElementById("no-stems").hidden = job.stems.length > 0;
    }
  }

  start(refresh);
})();
