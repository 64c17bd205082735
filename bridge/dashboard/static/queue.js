"use strict";
// The queue page: jobs (running first), watched folders, workers; polled.
(() => {
  const { el, getJSON, post, start, setStatus, canChange } = StemBridge;
  const ORDER = { running: 0, queued: 1, failed: 2, done: 3, cancelled: 4 };

  function action(label, path) {
    return el("button", {
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
  }

  function jobRow(job) {
    const bar = el("div", { class: "bar" });
    bar.style.width = (100 * job.progress).toFixed(1) + "%";
    const actions = el("td");
    if (canChange() && (job.state === "failed" || job.state === "cancelled"))
      actions.append(action("Retry", `/api/jobs/${job.id}/retry`));
    if (canChange() && (job.state === "queued" || job.state === "running"))
      actions.append(action("Cancel", `/api/jobs/${job.id}/cancel`));
    const note = job.state === "failed" ? job.error || "" : job.stage;
    return el(
      "tr",
      { "data-job": job.id, "data-state": job.state, "data-progress": String(job.progress) },
      el("td", {}, el("a", { href: "/job/" + job.id, text: job.id })),
      el("td", { text: job.name, title: job.input }),
      el("td", { class: "state state-" + job.state, text: job.state }),
      el("td", {}, el("div", { class: "progress" }, bar)),
      el("td", { class: job.state === "failed" ? "error" : "", text: note }),
      actions,
    );
  }

  function fill(id, rows, emptyId) {
    document.querySelector(`#${id} tbody`).replaceChildren(...rows);
    document.getElementById(emptyId).hidden = rows.length > 0;
  }

  async function refresh() {
    const [jobs, folders, workers] = await Promise.all([
      getJSON("/api/jobs"),
      getJSON("/api/folders"),
      getJSON("/api/workers").catch((error) => ({ broker: true, workers: [], error })),
    ]);
    const sorted = jobs.jobs.slice().sort((a, b) => ORDER[a.state] - ORDER[b.state]);
    fill("jobs", sorted.map(jobRow), "no-jobs");
    fill(
      "folders",
      folders.folders.map((f) =>
        el(
          "tr",
          { "data-state": f.state },
          el("td", { text: f.rule }),
          el("td", { text: f.folder }),
          el("td", { text: f.mode }),
          el("td", { class: "state", text: f.state }),
          el("td", { text: String(f.restarts) }),
        ),
      ),
      "no-folders",
    );
    document.getElementById("workers-section").hidden = !workers.broker;
    if (workers.broker) {
      const now = Date.now() / 1000;
      document.querySelector("#workers tbody").replaceChildren(
        ...workers.workers.map((w) =>
          el(
            "tr",
            {},
            el("td", { text: w.id }),
            el("td", { text: w.device }),
            el("td", { text: w.current_jobs.join(", ") || "idle" }),
            el("td", { text: String(w.jobs_done) }),
            el("td", { text: Math.max(0, now - w.last_seen).toFixed(0) + " s ago" }),
          ),
        ),
      );
      document.getElementById("workers-note").textContent = workers.error
        ? "broker: " + workers.error.message
        : workers.workers.length
          ? ""
          : "No live workers.";
    }
  }

  start(refresh);
})();
