"use strict";
// Shared by the pages: the session (CSRF secret, sign-in), JSON calls, DOM building,
// and the polling loop. Text from the server is only ever set as textContent.
const StemBridge = (() => {
  const POLL_MS = 500;
  let csrf = null;
  let canChange = false;

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

  async function post(path) {
    const response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-StemBridge-CSRF": csrf || "" },
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
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

  // Load the session, then call refresh() every POLL_MS.
  async function start(refresh) {
    document.getElementById("login").addEventListener("submit", signIn);
    const session = await getJSON("/api/session");
    if (!session.can_read) {
      showLogin();
      return;
    }
    csrf = session.csrf;
    canChange = session.can_change;
    document.getElementById("content").hidden = false;
    const tick = async () => {
      try {
        await refresh();
        setStatus("updated " + new Date().toLocaleTimeString());
      } catch (error) {
        setStatus("not reachable: " + error.message);
      }
      setTimeout(tick, POLL_MS);
    };
    tick();
  }

  return { el, getJSON, post, start, setStatus, canChange: () => canChange };
})();
