// Voice pages: the design form's "write the text for me" switch, recording clone samples in the
// browser (added to the samples file input, so the form posts them like uploads), and the
// library cards' preview buttons. (Counters and slider values: static/js/chorus.js.)
(function () {
  "use strict";

  // The design form: the preview text is not needed when the engine writes it.
  function bindAutoText(root) {
    const auto = root.querySelector("#id_auto_generate_text");
    const text = root.querySelector("#id_text");
    if (auto && text && !auto.dataset.bound) {
      auto.dataset.bound = "1";
      const sync = () => { text.disabled = auto.checked; };
      auto.addEventListener("change", sync);
      sync();
    }
  }

  function listSamples(input, list) {
    list.textContent = "";
    Array.from(input.files).forEach((file) => {
      const item = document.createElement("li");
      item.textContent = file.name + " · " + (file.size / 1048576).toFixed(2) + " MB";
      list.appendChild(item);
    });
  }

  function bindRecorder(box) {
    if (!navigator.mediaDevices || !window.MediaRecorder || !window.DataTransfer) return;
    const input = document.getElementById(box.dataset.target);
    const start = box.querySelector("[data-record-start]");
    const stop = box.querySelector("[data-record-stop]");
    const status = box.querySelector("[data-record-status]");
    const list = box.parentElement.querySelector("[data-sample-list]");
    let recorder = null, chunks = [], started = 0, count = 0, timer = null;
    box.hidden = false;
    input.addEventListener("change", () => listSamples(input, list));
    start.addEventListener("click", async () => {
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
        recorder = new MediaRecorder(stream);
      } catch (err) {
        status.textContent = "The microphone is not available: " + err.message;
        return;
      }
      chunks = [];
      recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
      recorder.onstop = () => {
        recorder.stream.getTracks().forEach((t) => t.stop());
        clearInterval(timer);
        const type = recorder.mimeType || "audio/webm";
        count += 1;
        const file = new File(chunks, "recording-" + count + ".webm", { type: type });
        const transfer = new DataTransfer();
        Array.from(input.files).forEach((f) => transfer.items.add(f));
        transfer.items.add(file);
        input.files = transfer.files;
        listSamples(input, list);
        status.textContent = "Recording " + count + " added (" + ((Date.now() - started) / 1000).toFixed(1) + " s).";
        start.disabled = false;
        stop.disabled = true;
      };
      recorder.start(250);
      started = Date.now();
      start.disabled = true;
      stop.disabled = false;
      stop.focus();
      timer = setInterval(() => {
        status.textContent = "Recording… " + ((Date.now() - started) / 1000).toFixed(0) + " s";
      }, 500);
    });
    stop.addEventListener("click", () => { if (recorder && recorder.state !== "inactive") recorder.stop(); });
  }

  // The library's cards: each preview link plays in the page's one <audio>, and says so.
  // (Without this script the link opens the recording itself.)
  let playing = null; // the card link whose preview the audio holds

  function previewState(link, state) {
    if (!link) return;
    const icon = link.querySelector("[data-voice-preview-icon]");
    const text = link.querySelector("[data-voice-preview-text]");
    link.classList.toggle("is-loading", state === "loading");
    link.setAttribute("aria-pressed", state === "off" ? "false" : "true");
    if (icon) icon.textContent = state === "off" ? "▶" : "■";
    if (text) text.textContent = state === "loading" ? "Loading…" : state === "off" ? "Preview" : "Stop";
  }

  function announce(message) {
    const status = document.getElementById("voice-preview-status");
    if (status) status.textContent = message;
  }

  function bindPreviewAudio(audio) {
    if (audio.dataset.bound) return;
    audio.dataset.bound = "1";
    audio.addEventListener("playing", () => previewState(playing, "on"));
    audio.addEventListener("pause", () => previewState(playing, "off"));
    audio.addEventListener("ended", () => previewState(playing, "off"));
    audio.addEventListener("error", () => {
      if (!playing) return;
      previewState(playing, "off");
      announce("The preview could not be played.");
    });
  }

  document.addEventListener("click", (event) => {
    const link = event.target.closest("[data-voice-preview]");
    const audio = document.getElementById("voice-preview-audio");
    if (!link || !audio) return;
    event.preventDefault();
    bindPreviewAudio(audio);
    if (playing === link && !audio.paused) {
      audio.pause();
      return;
    }
    if (playing && playing !== link) previewState(playing, "off");
    playing = link;
    if (audio.getAttribute("src") !== link.getAttribute("href")) audio.src = link.getAttribute("href");
    previewState(link, "loading");
    announce("Playing " + (link.getAttribute("aria-label") || "the preview").replace(/^Play /, ""));
    const started = audio.play();
    if (started && started.catch) {
      started.catch((err) => {
        // Another card was clicked before this one started: not a failure.
        if (err && err.name === "AbortError") return;
        previewState(link, "off");
        announce("The preview could not be played.");
      });
    }
  });

  function init(root) {
    bindAutoText(root);
    root.querySelectorAll("[data-recorder]").forEach(bindRecorder);
  }

  document.addEventListener("DOMContentLoaded", () => init(document));
  document.addEventListener("htmx:load", (e) => bindAutoText(e.detail.elt.ownerDocument || document));
})();
