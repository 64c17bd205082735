"use strict";
// The models page: every model StemBridge knows and the named ensembles, installed first
// (or only those); reloaded every few seconds, so a model installed meanwhile shows up.
(() => {
  const { el, getJSON, start } = StemBridge;
  const RELOAD_MS = 5000;
  let models = null;
  let loadedAt = 0;
  let shown = null;

  function megabytes(bytes) {
    return (bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0);
  }

  function installedCell(model) {
    const text = model.installed
      ? "yes" + (model.size_bytes ? ` (${megabytes(model.size_bytes)} MB)` : "")
      : "no";
    return el("td", {
      class: model.installed ? "installed-yes" : "installed-no",
      text,
      title: model.where || "",
    });
  }

  function sdrCell(model) {
    return el("td", {
      text: model.scores.map((s) => `${s.stem} ${s.sdr_db.toFixed(2)}`).join(", ") || "-",
      title: model.scores.map((s) => `${s.stem} ${s.sdr_db}: ${s.source}`).join("\n"),
    });
  }

  function row(model, ...cells) {
    return el(
      "tr",
      { "data-model": model.name, "data-installed": String(model.installed) },
      el("td", { text: model.name, title: model.description }),
      ...cells,
    );
  }

  function modelRow(model) {
    return row(
      model,
      el("td", { text: model.family }),
      el("td", { text: model.stems.join(", ") }),
      installedCell(model),
      sdrCell(model),
      el("td", { text: model.licence }),
    );
  }

  function ensembleRow(model) {
    return row(
      model,
      el("td", { text: model.members.join(" + ") }),
      el("td", { text: model.ensemble || "" }),
      el("td", { text: model.stems.join(", ") }),
      installedCell(model),
    );
  }

  function fill(id, rows, emptyId) {
    document.querySelector(`#${id} tbody`).replaceChildren(...rows);
    document.getElementById(emptyId).hidden = rows.length > 0;
  }

  function render() {
    const only = document.getElementById("installed-only").checked;
    const key = JSON.stringify([only, models]);
    if (key === shown) return; // rebuilt only on a change, so a selection stays
    shown = key;
    // Installed first, each part in the listing's order (catalog, then imported).
    const listed = models
      .filter((m) => m.installed || !only)
      .sort((a, b) => Number(b.installed) - Number(a.installed));
    fill("models", listed.filter((m) => m.family !== "ensemble").map(modelRow), "no-models");
    const ensembles = listed.filter((m) => m.family === "ensemble");
    fill("ensembles", ensembles.map(ensembleRow), "no-ensembles");
  }

  async function refresh() {
    if (models === null || Date.now() - loadedAt > RELOAD_MS) {
      models = (await getJSON("/api/models")).models;
      loadedAt = Date.now();
    }
    render();
  }

  document.getElementById("installed-only").addEventListener("change", () => models && render());
  start(refresh);
})();
