"use strict";
// The queue page: drop or choose files to separate (with model, stems, preset, format),
// the jobs (running first), watched folders, workers; live by server-sent events.
(() => {
  const { el, getJSON, post, upload, startLive, setStatus, canChange, session } = StemBridge;
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

  // One event (or one poll): { jobs, folders, workers }.
  function show({ jobs, folders, workers }) {
    const sorted = jobs.slice().sort((a, b) => ORDER[a.state] - ORDER[b.state]);
    fill("jobs", sorted.map(jobRow), "no-jobs");
    fill(
      "folders",
      folders.map((f) =>
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
        ? "broker: " + workers.error
        : workers.workers.length
          ? ""
          : "No live workers.";
    }
  }

  async function refresh() {
    const [jobs, folders, workers] = await Promise.all([
      getJSON("/api/jobs"),
      getJSON("/api/folders"),
      getJSON("/api/workers").catch((error) => ({ broker: true, workers: [], error: error.message })),
    ]);
    show({ jobs: jobs.jobs, folders: folders.folders, workers });
  }

  // Intake: the choices, then each dropped or chosen file uploaded in turn.

  let models = [];

  function megabytes(bytes) {
    return bytes >= 1e9 ? (bytes / 1e9).toFixed(1) + " GB" : Math.round(bytes / 1e6) + " MB";
  }

  function stemBoxes() {
    const model = models.find((m) => m.name === document.getElementById("model").value);
    const sources = model ? model.stems : [];
    const words = [...sources];
    if (sources.includes("vocals") && sources.length > 1) words.push("instrumental");
    document.getElementById("stem-boxes").replaceChildren(
      ...words.map((word) =>
        el(
          "label",
          { class: "check" },
          el("input", { type: "checkbox", value: word, "data-stem": word }),
          " " + word,
        ),
      ),
    );
  }

  function choices() {
    const ticked = [...document.querySelectorAll("#stem-boxes input:checked")].map((box) => box.value);
    const extra = document
      .getElementById("stems-extra")
      .value.split(",")
      .map((word) => word.trim())
      .filter(Boolean);
    return {
      model: document.getElementById("model").value,
      stems: [...ticked, ...extra].join(","),
      preset: document.getElementById("preset").value,
      format: document.getElementById("format").value,
    };
  }

  let queue = Promise.resolve();

  function take(files) {
    const limit = session().upload_max_bytes;
    const chosen = choices();
    for (const file of files) {
      const bar = el("div", { class: "bar" });
      const note = el("span", { class: "note", text: "waiting" });
      const item = el(
        "li",
        { "data-upload": file.name, "data-state": "waiting" },
        el("span", { class: "file", text: file.name }),
        el("div", { class: "progress" }, bar),
        note,
      );
      document.getElementById("uploads").prepend(item);
      const end = (state, text) => {
        item.dataset.state = state;
        note.textContent = text;
        if (state === "refused") note.className = "note error";
      };
      if (file.size > limit) {
        end("refused", `${megabytes(file.size)}: over the limit of ${megabytes(limit)}`);
        continue;
      }
      queue = queue.then(async () => {
        end("sending", "sending");
        try {
          const job = await upload(file, chosen, (fraction) => {
            bar.style.width = (100 * fraction).toFixed(1) + "%";
          });
          bar.style.width = "100%";
          end("queued", "");
          item.dataset.job = job.id;
          note.append("queued as ", el("a", { href: "/job/" + job.id, text: job.id }));
        } catch (error) {
          end("refused", error.message);
        }
      });
    }
  }

  async function setUpIntake() {
    if (!canChange()) return;
    document.getElementById("new").hidden = false;
    document.getElementById("limit").textContent = megabytes(session().upload_max_bytes);
    const [listed, presets] = await Promise.all([getJSON("/api/models"), getJSON("/api/presets")]);
    models = listed.models.filter((m) => m.installed);
    const select = document.getElementById("model");
    select.replaceChildren(
      ...models.map((m) => el("option", { value: m.name, text: `${m.name} (${m.stems.join(", ")})` })),
    );
    if (!models.length) select.append(el("option", { value: "", text: "no model installed" }));
    select.addEventListener("change", stemBoxes);
    stemBoxes();
    const preset = document.getElementById("preset");
    preset.replaceChildren(...presets.presets.map((p) => el("option", { value: p.name, text: p.name })));
    preset.value = presets.default;
    const input = document.getElementById("files");
    input.addEventListener("change", () => {
      take([...input.files]);
      input.value = "";
    });
    const drop = document.getElementById("drop");
    drop.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      take([...event.dataTransfer.files]);
    });
  }

  startLive("/api/events", "queue", show, refresh).then(() => {
    if (session() && session().can_read) setUpIntake().catch((error) => setStatus(error.message));
  });
})();
