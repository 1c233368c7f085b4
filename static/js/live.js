// Live captions: the microphone (getUserMedia → AudioWorklet → 16 kHz 16-bit PCM) sent as
// binary frames about every 100 ms over a websocket; partial text grey, committed black.
// A dropped socket reconnects to the same session: committed lines come back from the server
// and audio captured meanwhile is sent once the socket is open again.
(function () {
  "use strict";

  function socketUrl(path) {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  }

  function csrf() {
    const match = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    if (match) return decodeURIComponent(match[1]);
    const field = document.querySelector("[name=csrfmiddlewaretoken]");
    const headers = document.body.getAttribute("hx-headers");
    if (field) return field.value;
    try { return JSON.parse(headers)["X-CSRFToken"]; } catch (e) { return ""; }
  }

  function renderer(root) {
    const committed = root.querySelector("[data-live-committed]");
    const partial = root.querySelector("[data-live-partial]");
    return {
      lines(list) {
        committed.textContent = "";
        list.forEach((line) => this.commit(line.text));
      },
      commit(text) {
        const span = document.createElement("span");
        span.className = "line";
        span.textContent = text + " ";
        committed.appendChild(span);
        partial.textContent = "";
      },
      partial(text) { partial.textContent = text; },
      done() { partial.textContent = ""; },
    };
  }

  function bindLive(root) {
    const view = renderer(root);
    const start = root.querySelector("[data-live-start]");
    const stop = root.querySelector("[data-live-stop]");
    const status = root.querySelector("[data-live-status]");
    const level = root.querySelector("[data-live-level]");
    const errorBox = root.querySelector("[data-live-error]");
    const watch = root.querySelector("[data-live-watch]");
    let session = null, ws = null, context = null, stream = null, queue = [], stopping = false, retries = 0;

    function fail(message) {
      errorBox.hidden = false;
      errorBox.textContent = message;
    }

    function open() {
      ws = new WebSocket(socketUrl(session.socket));
      ws.binaryType = "arraybuffer";
      ws.onopen = () => {
        retries = 0;
        status.textContent = stopping ? "Saving…" : "Listening…";
        while (queue.length && ws.readyState === WebSocket.OPEN) ws.send(queue.shift());
        if (stopping) ws.send(JSON.stringify({ type: "stop" })); // Stop pressed while away
      };
      ws.onmessage = (m) => {
        let event;
        try { event = JSON.parse(m.data); } catch (e) { return; }
        if (event.type === "session") view.lines(event.committed || []);
        else if (event.type === "partial") view.partial(event.text);
        else if (event.type === "committed") view.commit(event.text);
        else if (event.type === "error") fail(event.message);
        else if (event.type === "saved") { status.textContent = "Saved."; window.location.assign(event.url); }
      };
      ws.onclose = (e) => {
        if (!session || e.code >= 4400 || (stopping && e.code === 1000)) {
          if (e.code === 4403) fail("Only members of the workspace can caption.");
          return;
        }
        retries += 1;
        status.textContent = "Connection lost: reconnecting…";
        setTimeout(open, Math.min(5000, 250 * 2 ** retries));
      };
    }

    start.addEventListener("click", async () => {
      errorBox.hidden = true;
      start.disabled = true;
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
      } catch (err) {
        fail("The microphone is not available: " + err.message);
        start.disabled = false;
        return;
      }
      const body = new FormData();
      body.append("language_code", root.querySelector("#live-language").value);
      const response = await fetch(root.dataset.startUrl, { method: "POST", body, headers: { "X-CSRFToken": csrf() } });
      const answer = await response.json().catch(() => ({ error: "The server did not answer." }));
      if (!response.ok) { fail(answer.error || "Could not start."); start.disabled = false; stream.getTracks().forEach((t) => t.stop()); return; }
      session = answer;
      watch.hidden = false;
      watch.querySelector("a").href = session.watch;
      watch.querySelector("a").textContent = location.origin + session.watch;
      context = new AudioContext();
      await context.audioWorklet.addModule(root.dataset.worklet);
      const source = context.createMediaStreamSource(stream);
      const node = new AudioWorkletNode(context, "pcm-worklet");
      node.port.onmessage = (m) => {
        level.value = m.data.peak;
        if (stopping) return;
        if (ws && ws.readyState === WebSocket.OPEN) ws.send(m.data.pcm);
        else queue.push(m.data.pcm); // kept until the socket is back
      };
      source.connect(node);
      open();
      stop.disabled = false;
      stop.focus();
    });

    stop.addEventListener("click", () => {
      stopping = true;
      stop.disabled = true;
      status.textContent = "Saving…";
      if (stream) stream.getTracks().forEach((t) => t.stop());
      if (context) context.close();
      // Sent now, or by the next socket's onopen if the connection is being re-made.
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "stop" }));
    });
    root.liveSocket = () => ws; // for tests: the current socket
  }

  function bindWatch(root) {
    const view = renderer(root);
    const status = document.querySelector("[data-live-status]");
    let retries = 0;
    function open() {
      const ws = new WebSocket(socketUrl(root.dataset.liveWatchSocket));
      ws.onopen = () => { retries = 0; status.textContent = "Live."; };
      ws.onmessage = (m) => {
        const event = JSON.parse(m.data);
        if (event.type === "session") view.lines(event.committed || []);
        else if (event.type === "partial") view.partial(event.text);
        else if (event.type === "committed") view.commit(event.text);
        else if (event.type === "saved") { status.textContent = "The session ended and was saved."; view.done(); }
      };
      ws.onclose = (e) => {
        if (e.code >= 4400) { status.textContent = "You cannot watch this session."; return; }
        retries += 1;
        setTimeout(open, Math.min(5000, 250 * 2 ** retries));
      };
    }
    open();
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-live]").forEach(bindLive);
    document.querySelectorAll("[data-live-watch-socket]").forEach(bindWatch);
  });
})();
