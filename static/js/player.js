// The audio player of templates/_player.html. The page's own <audio> element stays the source
// of truth: this adds a play/pause button, the time and a waveform (wavesurfer.js, vendored,
// given that element as its media) to click or drag on to seek. Keys: space plays or pauses,
// arrows move 5 s, Home/End go to the start/end. Without this script, or when the waveform
// cannot be drawn (an error, a host that refuses the download), the plain <audio> remains.
(function () {
  "use strict";

  const STEP = 5; // seconds an arrow key moves
  const waves = new WeakMap(); // player element → its WaveSurfer, once made (null: failed)

  function clock(seconds) {
    const s = isFinite(seconds) && seconds > 0 ? Math.floor(seconds) : 0;
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function parts(player) {
    return {
      audio: player.querySelector("audio"),
      toggle: player.querySelector("[data-player-toggle]"),
      wave: player.querySelector("[data-player-wave]"),
      time: player.querySelector("[data-player-time]"),
    };
  }

  // Back to the plain <audio>: what the page had before this script.
  function plain(player) {
    const ws = waves.get(player);
    waves.set(player, null); // never retried
    if (ws) ws.destroy(); // (an external media element is left as it is)
    const { toggle, wave, time } = parts(player);
    player.classList.remove("is-enhanced");
    toggle.hidden = wave.hidden = time.hidden = true;
  }

  function drawWaveform(player) {
    if (waves.has(player)) return;
    const { audio, wave } = parts(player);
    // WaveSurfer downloads the file for the waveform and waits for the element's duration.
    if (audio.preload === "none") {
      audio.preload = "metadata";
      if (audio.paused && audio.readyState === 0) audio.load(); // (nothing to interrupt)
    }
    const style = getComputedStyle(player);
    try {
      const ws = window.WaveSurfer.create({
        container: wave,
        media: audio,
        height: "auto",
        waveColor: style.getPropertyValue("--wave").trim() || "#c3c8dc",
        progressColor: style.getPropertyValue("--wave-progress").trim() || "#4f46e5",
        cursorColor: style.getPropertyValue("--wave-cursor").trim() || "#1c1f2b",
        cursorWidth: 1,
        barWidth: 2,
        barGap: 1,
        barRadius: 2,
        dragToSeek: true,
      });
      waves.set(player, ws);
      ws.on("ready", () => wave.classList.add("is-drawn"));
      ws.on("error", () => plain(player));
    } catch (err) {
      plain(player);
    }
  }

  function seek(audio, to) {
    if (!isFinite(audio.duration)) return;
    audio.currentTime = Math.min(Math.max(to, 0), audio.duration);
  }

  function enhance(player) {
    if (player.dataset.playerReady || !player.isConnected || !window.WaveSurfer) return;
    // Audio on another site (an upstream voice's recording) cannot be read for a waveform
    // without that site's CORS headers: the browser's own controls play it.
    if (player.hasAttribute("data-player-plain")) return;
    const { audio, toggle, wave, time } = parts(player);
    if (!audio || !toggle || !wave || !time) return;
    player.dataset.playerReady = "1";
    const label = audio.getAttribute("aria-label") || "audio";
    wave.setAttribute("role", "slider");
    wave.tabIndex = 0;
    wave.setAttribute("aria-label", "Seek in " + label);
    wave.setAttribute("aria-valuemin", "0");

    function show() {
      const playing = !audio.paused && !audio.ended;
      toggle.setAttribute("aria-label", (playing ? "Pause " : "Play ") + label);
      toggle.firstElementChild.textContent = playing ? "❚❚" : "▶";
      toggle.classList.toggle("is-playing", playing);
      const now = audio.currentTime || 0;
      const total = isFinite(audio.duration) ? audio.duration : 0;
      time.textContent = total ? clock(now) + " / " + clock(total) : clock(now);
      wave.setAttribute("aria-valuemax", String(Math.round(total)));
      wave.setAttribute("aria-valuenow", String(Math.round(now)));
      wave.setAttribute("aria-valuetext", clock(now) + " of " + clock(total));
    }
    ["play", "pause", "ended", "timeupdate", "durationchange", "loadedmetadata", "emptied"]
      .forEach((name) => audio.addEventListener(name, show));

    toggle.addEventListener("click", () => {
      if (audio.paused || audio.ended) {
        audio.play().catch(() => {}); // (a refused or failed play shows on the element)
      } else {
        audio.pause();
      }
    });
    player.addEventListener("keydown", (e) => {
      if (e.altKey || e.ctrlKey || e.metaKey) return;
      const keys = {
        ArrowLeft: () => seek(audio, audio.currentTime - STEP),
        ArrowDown: () => seek(audio, audio.currentTime - STEP),
        ArrowRight: () => seek(audio, audio.currentTime + STEP),
        ArrowUp: () => seek(audio, audio.currentTime + STEP),
        Home: () => seek(audio, 0),
        End: () => seek(audio, audio.duration),
      };
      if ((e.key === " " || e.key === "Enter") && e.target === wave) {
        e.preventDefault();
        toggle.click(); // (on the button itself, space and enter already click it)
      } else if (keys[e.key] && (e.target === wave || e.target === toggle)) {
        e.preventDefault();
        keys[e.key]();
      }
    });

    toggle.hidden = wave.hidden = time.hidden = false;
    player.classList.add("is-enhanced");
    show();
    if (audio.preload === "none") {
      // Many players on one page (the library's cards): each waveform downloads its file,
      // so it is drawn at the first sign of interest rather than for every card at once.
      const soon = () => drawWaveform(player);
      player.addEventListener("pointerenter", soon, { once: true });
      player.addEventListener("focusin", soon, { once: true });
      audio.addEventListener("play", soon, { once: true });
    } else {
      drawWaveform(player);
    }
  }

  function init(root) {
    if (root.matches && root.matches("[data-player]")) enhance(root);
    if (root.querySelectorAll) root.querySelectorAll("[data-player]").forEach(enhance);
  }

  // A player that htmx swaps out stops: a detached <audio> would go on playing unseen.
  function release(player) {
    const audio = player.querySelector("audio");
    if (audio) audio.pause();
    const ws = waves.get(player);
    if (ws) ws.destroy();
    waves.delete(player);
  }

  document.addEventListener("DOMContentLoaded", () => init(document));
  document.addEventListener("htmx:load", (e) => init(e.detail.elt));
  document.addEventListener("htmx:afterSwap", (e) => init(e.detail.target));
  document.addEventListener("htmx:beforeCleanupElement", (e) => {
    const el = e.detail.elt;
    if (el.matches && el.matches("[data-player]")) release(el);
  });
})();
