// Small behaviours shared by every page: live job progress over websockets, copy buttons,
// slider values, character counters, menus, the member's time zone and the mobile sidebar. Everything works without it (forms post,
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

  // --- Range inputs show their value ----------------------------------------------------
  // A slider gets an <output> beside it (unless it has one: data-output="<id>" or an
  // <output for="<its id>">) that follows it as it moves.
  function initRanges(root) {
    root.querySelectorAll('input[type="range"]').forEach((range) => {
      if (range.dataset.rangeReady) return;
      range.dataset.rangeReady = "1";
      let output = range.dataset.output ? document.getElementById(range.dataset.output) : null;
      if (!output && range.id) output = document.querySelector('output[for~="' + range.id + '"]');
      if (!output) {
        output = document.createElement("output");
        output.className = "range-value";
        if (range.id) output.htmlFor = range.id;
        const row = document.createElement("span");
        row.className = "range-row";
        range.parentNode.insertBefore(row, range);
        row.appendChild(range);
        row.appendChild(output);
      }
      const show = () => { output.textContent = range.value; };
      range.addEventListener("input", show);
      range.addEventListener("change", show);
      show();
    });
  }

  // --- Character counters (templates/_field.html with counter=(min, max)) ---------------
  function initCounters(root) {
    root.querySelectorAll("[data-counter-for]").forEach((counter) => {
      const box = document.getElementById(counter.dataset.counterFor);
      if (!box || box.dataset.counterReady) return;
      box.dataset.counterReady = "1";
      const show = () => { counter.textContent = box.value.length + "/" + counter.dataset.max; };
      box.addEventListener("input", show);
      show(); // text typed before this ran, or restored by the browser, counts too
    });
  }

  // --- Menus: <details class="dropdown" data-menu> ---------------------------------------
  // The list floats over the page; Escape closes it (focus back on its button), so does a
  // click outside or choosing an item (a download starts, the menu goes away). An open list
  // that would leave the screen on the left opens to the right instead.
  function initMenus(root) {
    root.querySelectorAll("details[data-menu]").forEach((menu) => {
      if (menu.dataset.menuReady) return;
      menu.dataset.menuReady = "1";
      menu.addEventListener("toggle", () => {
        if (!menu.open) return;
        menu.classList.remove("align-start");
        const list = menu.querySelector(".dropdown-list, .menu");
        if (list && list.getBoundingClientRect().left < 0) menu.classList.add("align-start");
      });
      menu.addEventListener("click", (e) => {
        const item = e.target.closest("a[href], button");
        if (item && menu.contains(item) && !item.closest("summary")) {
          setTimeout(() => { menu.open = false; }, 0);
        }
      });
    });
  }

  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    document.querySelectorAll("details[data-menu][open]").forEach((menu) => {
      menu.open = false;
      const summary = menu.querySelector("summary");
      if (summary && menu.contains(document.activeElement)) summary.focus();
    });
  });
  document.addEventListener("click", (e) => {
    document.querySelectorAll("details[data-menu][open]").forEach((menu) => {
      if (!menu.contains(e.target)) menu.open = false;
    });
  });

  // --- The member's time zone ------------------------------------------------------------
  // The server shows dates in the zone of this cookie (studio_site/timezones.py).
  try {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && /^[A-Za-z0-9_+\/-]{1,64}$/.test(zone)) {
      const has = document.cookie.split("; ").some((c) => c === "tz=" + zone);
      if (!has) document.cookie = "tz=" + zone + "; path=/; max-age=31536000; samesite=lax";
    }
  } catch (err) {
    // no Intl: dates stay in UTC
  }

  function init(root) {
    initJobs(root);
    initCopy(root);
    initRanges(root);
    initCounters(root);
    initMenus(root);
  }

  document.addEventListener("DOMContentLoaded", () => {
    init(document);
    const toggle = document.querySelector("[data-toggle-sidebar]");
    if (toggle) {
      const show = (open) => {
        document.body.classList.toggle("sidebar-open", open);
        toggle.setAttribute("aria-expanded", open ? "true" : "false");
      };
      toggle.addEventListener("click", () => show(!document.body.classList.contains("sidebar-open")));
      // On a phone the open sidebar covers the page: Escape or a tap beside it closes it.
      document.addEventListener("keydown", (e) => {
        if (e.key === "Escape" && document.body.classList.contains("sidebar-open")) {
          show(false);
          toggle.focus();
        }
      });
      document.addEventListener("click", (e) => {
        if (document.body.classList.contains("sidebar-open") && !e.target.closest("#sidebar, [data-toggle-sidebar]")) show(false);
      });
    }
  });
  document.addEventListener("htmx:beforeSwap", (e) => closeJobs(e.detail.target));
  document.addEventListener("htmx:load", (e) => init(e.detail.elt));
})();
