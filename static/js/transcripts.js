// Transcripts: upload with a progress bar (drag and drop too), and reading along: the word
// being spoken is highlighted as the recording plays, and clicking a word seeks there.
// Without this script the form posts normally and the transcript is plain text.
(function () {
  "use strict";

  // --- Upload ---------------------------------------------------------------------------
  function bindUpload(form) {
    const input = form.querySelector('input[type="file"]');
    const zone = form.querySelector("[data-dropzone]");
    const bar = form.querySelector("[data-upload-bar]");
    const status = form.querySelector("[data-upload-status]");
    const info = form.querySelector("[data-file-info]");
    const estimate = form.querySelector("[data-estimate-file]");
    const rate = Number((form.querySelector("[data-rate]") || {}).dataset?.rate || 0);

    function describe() {
      const file = input.files[0];
      if (!file) return;
      info.textContent = file.name + " · " + (file.size / 1048576).toFixed(1) + " MB";
      const probe = document.createElement("audio");
      probe.preload = "metadata";
      probe.onloadedmetadata = () => {
        if (isFinite(probe.duration)) {
          const minutes = probe.duration / 60;
          const whole = Math.round(probe.duration), clock = Math.floor(whole / 60) + ":" + String(whole % 60).padStart(2, "0");
          estimate.textContent = " · this recording: " + clock + ", about " + (rate * minutes).toFixed(1) + " credits";
        }
        URL.revokeObjectURL(probe.src);
      };
      probe.src = URL.createObjectURL(file);
    }
    input.addEventListener("change", describe);
    if (zone) {
      ["dragenter", "dragover"].forEach((name) => zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("is-over"); }));
      ["dragleave", "drop"].forEach((name) => zone.addEventListener(name, () => zone.classList.remove("is-over")));
      zone.addEventListener("drop", (e) => {
        e.preventDefault();
        if (e.dataTransfer.files.length) { input.files = e.dataTransfer.files; describe(); }
      });
    }
    form.addEventListener("submit", (e) => {
      if (!window.FormData || !window.XMLHttpRequest || !input.files.length) return;
      e.preventDefault();
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("HX-Request", "true"); // answers with HX-Redirect or the form again
      bar.hidden = false;
      form.querySelector('button[type="submit"]').disabled = true;
      xhr.upload.onprogress = (p) => {
        if (p.lengthComputable) {
          bar.value = Math.round((100 * p.loaded) / p.total);
          status.textContent = "Uploading… " + bar.value + " %";
        }
      };
      xhr.onload = () => {
        const target = xhr.getResponseHeader("HX-Redirect");
        if (xhr.status < 400 && target) { window.location.assign(target); return; }
        // The form again, with its messages: swap our page's main content for the answer's
        // (parsed, never executed); anything else (a proxy's error page) is summarised.
        const answer = new DOMParser().parseFromString(xhr.responseText, "text/html");
        const fresh = answer.querySelector("[data-upload-form]");
        const main = answer.querySelector("main");
        if (fresh && main) {
          document.querySelector("main").replaceWith(document.adoptNode(main));
          document.querySelectorAll("[data-upload-form]").forEach(bindUpload);
        } else {
          status.textContent = xhr.status === 413 ? "The file is too large for the server." : "The upload failed (" + xhr.status + "). Nothing was saved.";
          bar.hidden = true;
          form.querySelector('button[type="submit"]').disabled = false;
        }
      };
      xhr.onerror = () => {
        status.textContent = "The upload was interrupted; nothing was saved. Try again.";
        form.querySelector('button[type="submit"]').disabled = false;
      };
      status.textContent = "Uploading…";
      xhr.send(new FormData(form));
    });
  }

  // --- Reading along --------------------------------------------------------------------
  function bindReader(root) {
    const audio = root.querySelector("[data-transcript-player] audio");
    if (!audio || audio.dataset.reader) return;
    audio.dataset.reader = "1";
    const words = Array.from(root.querySelectorAll(".w[data-start]")).filter((w) => w.dataset.start !== "");
    const starts = words.map((w) => Number(w.dataset.start));
    let current = null;
    audio.addEventListener("timeupdate", () => {
      const t = audio.currentTime;
      let lo = 0, hi = starts.length - 1, found = -1;
      while (lo <= hi) { const mid = (lo + hi) >> 1; if (starts[mid] <= t) { found = mid; lo = mid + 1; } else hi = mid - 1; }
      const word = found >= 0 && t <= Number(words[found].dataset.end || starts[found]) + 0.3 ? words[found] : null;
      if (word !== current) {
        if (current) current.classList.remove("speaking");
        if (word) word.classList.add("speaking");
        current = word;
      }
    });
    root.addEventListener("click", (e) => {
      const target = e.target.closest(".w[data-start], [data-seek]");
      if (!target) return;
      const at = Number(target.dataset.start ?? target.dataset.seek);
      if (!isFinite(at) || target.dataset.start === "") return;
      audio.currentTime = at;
      audio.play().catch(() => {});
    });
  }

  function init() {
    document.querySelectorAll("[data-upload-form]").forEach(bindUpload);
    const root = document.querySelector("[data-transcript]");
    if (root) bindReader(root);
    document.querySelectorAll("form[data-confirm]").forEach((form) => {
      form.addEventListener("submit", (e) => { if (!window.confirm(form.dataset.confirm)) e.preventDefault(); });
    });
  }

  document.addEventListener("DOMContentLoaded", init);
  document.addEventListener("htmx:afterSwap", (e) => {
    const root = e.detail.target.closest ? document.querySelector("[data-transcript]") : null;
    if (root) bindReader(root);
  });
})();
