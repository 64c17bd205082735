"use strict";
// Shared by the pages: the session (CSRF secret, sign-in), JSON calls, DOM building,
// live updates (server-sent events, or polling where they fail). Text from the server is
// only ever set as textContent.
const StemBridge = (() => {
  const POLL_MS = 500;
  // A stream the server answered with no stream at all is opened again this much later.
  const REOPEN_MS = 5000;
  let csrf = null;
  let canChange = false;
  let session = null;
  let mode = "starting";
  let polling = null; // the running poll loop's token, or null when none runs

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) {
      if (key === "text") node.textContent = value;
      else if (key === "onclick") node.addEventListener("click", value);
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  async function getJSON(path) {
    const response = await fetch(path, { credentials: "same-origin" });
    if (response.status === 401) {
      showLogin();
      throw new Error("sign in needed");
    }
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  async function post(path, json) {
    const headers = { "X-StemBridge-CSRF": csrf || "" };
    if (json !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers,
      body: json === undefined ? undefined : JSON.stringify(json),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  // One file as the raw body, with the page's choices; onProgress(fraction) as it goes.
  // XMLHttpRequest, since fetch reports no upload progress.
  function upload(file, choices, onProgress) {
    return new Promise((resolve, reject) => {
      const query = new URLSearchParams({ name: file.name, ...choices });
      const request = new XMLHttpRequest();
      request.open("POST", "/api/uploads?" + query.toString());
      request.setRequestHeader("X-StemBridge-CSRF", csrf || "");
      request.setRequestHeader("Content-Type", "application/octet-stream");
      request.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) onProgress(event.loaded / event.total);
      });
      request.addEventListener("load", () => {
        let body = {};
        try {
          body = JSON.parse(request.responseText);
        } catch (error) {
          body = { error: request.statusText };
        }
        if (request.status === 201) resolve(body);
        else reject(new Error(body.error || `refused (${request.status})`));
      });
      request.addEventListener("error", () => reject(new Error("the connection was lost")));
      request.send(file);
    });
  }

  function setStatus(text) {
    document.getElementById("status").textContent = text;
  }

  function showLogin() {
    document.getElementById("content").hidden = true;
    document.getElementById("login").hidden = false;
  }

  async function signIn(event) {
    event.preventDefault();
    const token = event.target.elements.token.value;
    const response = await fetch("/api/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
    });
    if (response.ok) window.location.reload();
    else document.getElementById("login-error").textContent = (await response.json()).error;
  }

  async function openSession() {
    document.getElementById("login").addEventListener("submit", signIn);
    session = await getJSON("/api/session");
    if (!session.can_read) {
      showLogin();
      return false;
    }
    csrf = session.csrf;
    canChange = session.can_change;
    document.getElementById("content").hidden = false;
    return true;
  }

  function poll(refresh) {
    mode = "polling";
    if (polling !== null) return;
    const loop = {};
    polling = loop;
    const tick = async () => {
      if (polling !== loop) return; // the stream is back
      let status;
      try {
        await refresh();
        status = "updated " + new Date().toLocaleTimeString();
      } catch (error) {
        status = "not reachable: " + error.message;
      }
      if (polling !== loop) return; // the stream came back while this one was fetching
      setStatus(status);
      setTimeout(tick, POLL_MS);
    };
    tick();
  }

  // Load the session, then call refresh() every POLL_MS.
  async function start(refresh) {
    if (await openSession()) poll(refresh);
  }

  // Load the session, then show(data) for each `kind` event of the stream at `path`;
  // where the stream cannot be had (no EventSource, a proxy that buffers, an error),
  // poll with refresh() instead, which fetches the same data and calls show itself,
  // until the stream is back (a daemon restarted, a network that came back).
  async function startLive(path, kind, show, refresh) {
    if (!(await openSession())) return;
    if (!window.EventSource) {
      poll(refresh);
      return;
    }
    mode = "connecting";
    listen(path, kind, show, refresh);
  }

  function listen(path, kind, show, refresh) {
    const source = new EventSource(path);
    source.addEventListener(kind, (event) => {
      polling = null; // a poll loop started by an error stops at its next tick
      mode = "events";
      show(JSON.parse(event.data));
      setStatus("live " + new Date().toLocaleTimeString());
    });
    source.addEventListener("error", () => {
      poll(refresh);
      // The browser reconnects by itself (the server asks for 2 s), except after an
      // answer that was no stream (an error page, a proxy's): then open a new one.
      if (source.readyState === EventSource.CLOSED) {
        setTimeout(() => listen(path, kind, show, refresh), REOPEN_MS);
      }
    });
  }

  return {
    el,
    getJSON,
    post,
    upload,
    start,
    startLive,
    setStatus,
    canChange: () => canChange,
    session: () => session,
    mode: () => mode,
  };
})();
