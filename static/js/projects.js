// The project pages (templates/projects/new.html): the voice picker plays each voice's preview
// with one button per voice, the way the Speech page does (static/js/speech.js): one shared
// <audio data-voice-preview>, a button plays its voice's sample or stops it, and a filter of the
// voice list by name once it is long. The form works without this script (the buttons stay
// hidden; a <noscript> link opens each preview).
//
// Keyboard: the buttons are ordinary buttons (Tab, Enter, Space); Escape inside the picker stops
// the preview; Enter in the filter does not submit the form.
(function () {
  "use strict";

  const FILTER_FROM = 7; // voices from which the filter shows

  function picker(root, preview) {
    const buttons = Array.from(root.querySelectorAll("[data-preview]"));
    let playing = null;

    function showPlaying(current) {
      buttons.forEach((b) => {
        const on = b === current;
        b.setAttribute("aria-pressed", on ? "true" : "false");
        b.firstElementChild.textContent = on ? "❚❚" : "▶";
        b.setAttribute(
          "aria-label",
          b.getAttribute("aria-label").replace(/^(Play|Stop)/, on ? "Stop" : "Play")
        );
      });
    }

    function stop() {
      if (playing === null) return false;
      preview.pause();
      playing = null;
      showPlaying(null);
      return true;
    }

    preview.addEventListener("ended", () => {
      if (playing && buttons.includes(playing)) { playing = null; showPlaying(null); }
    });
    preview.addEventListener("error", () => {
      if (playing && buttons.includes(playing)) { playing = null; showPlaying(null); }
    });
    // Another picker (or player) took the shared audio: this one shows nothing playing.
    preview.addEventListener("play", () => {
      if (playing && preview.dataset.playing !== root.id) { playing = null; showPlaying(null); }
    });

    buttons.forEach((button) => {
      button.hidden = false;
      button.addEventListener("click", () => {
        if (playing === button) { stop(); return; }
        preview.src = button.dataset.preview;
        preview.dataset.playing = root.id;
        playing = button;
        showPlaying(button);
        preview.play().catch(() => { playing = null; showPlaying(null); });
      });
    });

    root.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && stop()) e.preventDefault();
    });

    // Filter the voice list by name.
    const filter = root.querySelector("[data-voice-filter]");
    const options = Array.from(root.querySelectorAll(".voice-option"));
    if (filter && options.length >= FILTER_FROM) {
      filter.hidden = false;
      filter.addEventListener("input", () => {
        const needle = filter.value.trim().toLowerCase();
        options.forEach((li) => {
          li.hidden = needle !== "" && !(li.dataset.voiceName || "").includes(needle);
        });
      });
      filter.addEventListener("keydown", (e) => {
        if (e.key === "Enter") e.preventDefault();
      });
    }
  }

  function init() {
    const preview = document.querySelector("[data-voice-preview]");
    if (!preview) return;
    document.querySelectorAll("[data-voice-picker]").forEach((root, i) => {
      if (root.dataset.pickerReady) return;
      root.dataset.pickerReady = "1";
      if (!root.id) root.id = "voice-picker-" + i;
      picker(root, preview);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
  document.addEventListener("htmx:afterSettle", init);
})();
