// The Speech page (templates/speech/page.html). The form works without this script; this adds
// the estimate that follows the text, the sliders' values, the voice's settings when a voice
// is picked (and "Reset"), the voices' previews, a filter of the voice list, and the streamed
// take: its <audio> plays while the take is made; once History keeps it, the waveform player
// with its download takes its place (when the live audio is not playing).
(function () {
  "use strict";

  const POLL_MS = 1000;
  const POLL_LIMIT = 20 * 60; // polls (about 20 minutes) before giving up on a take

  function number(value) {
    const rounded = Math.round(value * 1000) / 1000;
    return rounded.toLocaleString("en", { maximumFractionDigits: 3 });
  }

  function plural(n, word) {
    return n.toLocaleString("en") + " " + word + (n === 1 ? "" : "s");
  }

  function setUp(form) {
    if (form.dataset.speechReady) return;
    form.dataset.speechReady = "1";
    let data = {};
    let stored = {};
    try {
      data = JSON.parse(form.dataset.estimate || "{}");
      stored = JSON.parse(form.dataset.voiceSettings || "{}");
    } catch (err) {
      data = {};
    }
    const text = form.querySelector("[data-speech-text]");
    const model = form.querySelector("select[name=model_id]");
    const line = form.querySelector("[data-speech-estimate]");

    // The estimate: characters × the model's credits per character, against what is left.
    function estimate() {
      if (!text || !line) return;
      const chars = text.value.trim().length;
      const rate = parseFloat((data.rates || {})[model ? model.value : ""] || "0");
      const credits = chars * rate;
      line.querySelector("[data-chars]").textContent = plural(chars, "character");
      line.querySelector("[data-credits]").textContent = number(credits);
      // A text longer than the model takes at once is made in parts (split at sentences:
      // at least this many).
      const perPart = parseInt((data.max || {})[model ? model.value : ""] || "0", 10);
      const parts = perPart > 0 ? Math.ceil(chars / perPart) : 1;
      const partsLine = line.querySelector("[data-parts]");
      if (partsLine) {
        partsLine.hidden = parts < 2;
        partsLine.querySelector("[data-parts-n]").textContent = String(parts);
      }
      const over = line.querySelector("[data-over]");
      const left = data.left === null || data.left === undefined ? null : parseFloat(data.left);
      if (over) over.hidden = !(left !== null && credits > left);
    }
    if (text) text.addEventListener("input", estimate);
    if (model) model.addEventListener("change", estimate);

    // Each slider shows its value.
    function showValue(range) {
      const out = form.querySelector('[data-value-of="' + range.id + '"]');
      if (out) out.textContent = range.value;
    }
    const ranges = Array.from(form.querySelectorAll("input[type=range]"));
    ranges.forEach((range) => {
      range.addEventListener("input", () => showValue(range));
      showValue(range);
    });

    // The chosen voice's stored settings into the sliders (on a pick, and on Reset).
    function chosenVoice() {
      const checked = form.querySelector("input[name=voice_id]:checked");
      return checked ? checked.value : "";
    }
    function applySettings() {
      const settings = stored[chosenVoice()];
      if (!settings) return;
      Object.keys(settings).forEach((name) => {
        const input = form.querySelector('[name="' + name + '"]');
        if (!input) return;
        if (input.type === "checkbox") {
          input.checked = !!settings[name];
        } else {
          input.value = settings[name];
          if (input.type === "range") showValue(input);
        }
      });
    }
    form.querySelectorAll("input[name=voice_id]").forEach((radio) => {
      radio.addEventListener("change", applySettings);
    });
    const reset = form.querySelector("[data-reset-settings]");
    if (reset) reset.addEventListener("click", applySettings);

    // Filter the voice list by name.
    const filter = form.querySelector("[data-voice-filter]");
    const options = Array.from(form.querySelectorAll(".voice-option"));
    if (filter && options.length > 6) {
      filter.hidden = false;
      filter.addEventListener("input", () => {
        const needle = filter.value.trim().toLowerCase();
        options.forEach((li) => {
          li.hidden = needle !== "" && !(li.dataset.voiceName || "").includes(needle);
        });
      });
      // Enter in the filter must not submit the form.
      filter.addEventListener("keydown", (e) => {
        if (e.key === "Enter") e.preventDefault();
      });
    }

    // Previews: one shared <audio>; a button plays its voice's sample, or stops it.
    const preview = document.querySelector("[data-voice-preview]");
    const buttons = Array.from(form.querySelectorAll("[data-preview]"));
    function showPlaying(current) {
      buttons.forEach((b) => {
        const on = b === current;
        b.setAttribute("aria-pressed", on ? "true" : "false");
        b.firstElementChild.textContent = on ? "❚❚" : "▶";
        b.setAttribute("aria-label", b.getAttribute("aria-label").replace(/^(Play|Stop)/, on ? "Stop" : "Play"));
      });
    }
    let playing = null;
    if (preview) {
      preview.addEventListener("ended", () => { playing = null; showPlaying(null); });
      preview.addEventListener("error", () => { playing = null; showPlaying(null); });
      buttons.forEach((button) => {
        button.hidden = false;
        button.addEventListener("click", () => {
          if (playing === button) {
            preview.pause();
            playing = null;
            showPlaying(null);
            return;
          }
          preview.src = button.dataset.preview;
          playing = button;
          showPlaying(button);
          preview.play().catch(() => { playing = null; showPlaying(null); });
        });
      });
    }
  }

  // --- The streamed take --------------------------------------------------------------------

  let poller = null;

  function stopLive(root) {
    if (poller) {
      clearTimeout(poller);
      poller = null;
    }
    root.querySelectorAll("[data-take-live] audio").forEach((audio) => {
      audio.pause();
      audio.removeAttribute("src"); // ends the download: the server settles what was sent
      audio.load();
    });
  }

  function followTake(live) {
    if (live.dataset.followed) return;
    live.dataset.followed = "1";
    const url = live.dataset.takeUrl;
    const audio = live.querySelector("audio");
    const status = live.querySelector("[data-take-status]");
    const area = live.closest("#take");
    let polls = 0;

    function swapWhenQuiet() {
      // The waveform player replaces the live audio once it is not playing.
      if (!audio.paused && !audio.ended) {
        audio.addEventListener("pause", swapWhenQuiet, { once: true });
        audio.addEventListener("ended", swapWhenQuiet, { once: true });
        return;
      }
      if (!live.isConnected) return;
      const at = audio.ended ? 0 : audio.currentTime;
      window.htmx.ajax("GET", url, { target: area, swap: "innerHTML" }).then(() => {
        const done = area.querySelector("[data-take-done] audio");
        if (done && at > 0) {
          done.addEventListener("loadedmetadata", () => { done.currentTime = at; }, { once: true });
        }
      });
    }

    function poll() {
      poller = null;
      if (!live.isConnected) return;
      polls += 1;
      fetch(url, { headers: { "HX-Request": "true" }, credentials: "same-origin" })
        .then((response) => {
          if (!live.isConnected) return;
          if (response.status === 204) {
            if (polls < POLL_LIMIT) poller = setTimeout(poll, POLL_MS);
            return;
          }
          if (response.ok) {
            if (status) status.textContent = "Made and kept in History: the player with its download follows when this one stops.";
            swapWhenQuiet();
            return;
          }
          return response.text().then((html) => { area.innerHTML = html; });
        })
        .catch(() => {
          if (polls < POLL_LIMIT) poller = setTimeout(poll, POLL_MS * 3);
        });
    }
    poller = setTimeout(poll, POLL_MS);
  }

  function init(root) {
    const scope = root && root.querySelectorAll ? root : document;
    if (scope.matches && scope.matches("[data-speech]")) setUp(scope);
    scope.querySelectorAll("[data-speech]").forEach(setUp);
    scope.querySelectorAll("[data-take-live]").forEach(followTake);
  }

  document.addEventListener("DOMContentLoaded", () => init(document));
  // (An invalid form comes back in place of the whole form: set up whatever is new.)
  document.addEventListener("htmx:afterSwap", () => init(document));
  document.addEventListener("htmx:beforeSwap", (e) => {
    const target = e.detail.target;
    if (target && (target.id === "take" || target.querySelector("#take"))) stopLive(target);
  });
})();
