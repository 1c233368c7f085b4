// Small behaviours shared by every page: live job progress over websockets, copy buttons,
// the workspace switcher and the mobile sidebar. Everything works without it (forms post,
// htmx polls); this only makes it nicer and faster.
(function () {
  "use strict";

  // --- Live job progress ----------------------------------------------------------------
  // An element with data-job-socket opens a websocket to that path and keeps the status,
  // message, percentage and bar inside it up to date. While the socket is open the element
  // carries data-live, which switches its htmx polling off; when the job finishes it fires
  // "job-finished" so htmx fetches the final state (download link, retry button…).
  const sockets = new Map();

  function socketUrl(path) {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    return scheme + window.location.host + path;
  }

  function applyEvent(el, event) {
    const set = (selector, fn) => el.querySelectorAll(selector).forEach(fn);
    const label = event.status.charAt(0).toUpperCase() + event.status.slice(1);
    set("[data-job-status]", (n) => {
      n.textContent = label;
      n.className = "badge status-" + event.status;
    });
    set("[data-job-message]", (n) => { n.textContent = event.message || ""; });
    set("[data-job-percent]", (n) => { n.textContent = event.progress + "%"; });
    set("[data-job-bar]", (n) => { n.value = event.progress; n.textContent = event.progress + "%"; });
    set("[data-job-error]", (n) => { n.textContent = event.error || ""; n.hidden = !event.error; });
    el.dataset.jobState = event.status;
  }

  function connect(el, attempt) {
    const path = el.dataset.jobSocket;
    if (!path || !("WebSocket" in window) || sockets.has(el)) return;
    let ws;
    try {
      ws = new WebSocket(socketUrl(path));
    } catch (err) {
      return; // polling stays on
    }
    sockets.set(el, ws);
    let finished = false;
    ws.onopen = () => { el.dataset.live = "1"; attempt = 0; };
    ws.onmessage = (msg) => {
      let event;
      try { event = JSON.parse(msg.data); } catch (err) { return; }
      applyEvent(el, event);
      if (event.finished) {
        finished = true;
        ws.close();
        if (window.htmx) window.htmx.trigger(el, "job-finished");
      }
    };
    ws.onclose = () => {
      sockets.delete(el);
      delete el.dataset.live; // htmx polling takes over
      if (!finished && document.body.contains(el) && attempt < 5) {
        setTimeout(() => connect(el, attempt + 1), 1000 * 2 ** attempt);
      }
    };
  }

  function initJobs(root) {
    root.querySelectorAll("[data-job-socket]").forEach((el) => connect(el, 0));
    if (root.matches && root.matches("[data-job-socket]")) connect(root, 0);
  }

  function closeJobs(root) {
    sockets.forEach((ws, el) => {
      if (root === el || root.contains(el)) {
        sockets.delete(el);
        ws.onclose = null;
        ws.close();
      }
    });
  }

  // --- Small helpers --------------------------------------------------------------------
  function initCopy(root) {
    root.querySelectorAll("[data-copy]").forEach((button) => {
      if (button.dataset.copyReady) return;
      button.dataset.copyReady = "1";
      button.addEventListener("click", async () => {
        const target = document.getElementById(button.dataset.copy);
        if (!target) return;
        const text = target.value || target.textContent;
        try {
          await navigator.clipboard.writeText(text);
        } catch (err) {
          target.select && target.select();
          document.execCommand && document.execCommand("copy");
        }
        const old = button.textContent;
        button.textContent = "Copied";
        setTimeout(() => { button.textContent = old; }, 1500);
      });
    });
  }

  function init(root) {
    initJobs(root);
    initCopy(root);
  }

  document.addEventListener("DOMContentLoaded", () => {
    init(document);
    const toggle = document.querySelector("[data-toggle-sidebar]");
    if (toggle) {
      toggle.addEventListener("click", () => {
        const open = document.body.classList.toggle("sidebar-open");
        toggle.setAttribute("aria-expanded", open ? "true" : "false");
      });
    }
  });
  document.addEventListener("htmx:beforeSwap", (e) => closeJobs(e.detail.target));
  document.addEventListener("htmx:load", (e) => init(e.detail.elt));
})();
