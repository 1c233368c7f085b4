// The chapter editor (templates/projects/chapter.html). Everything works without this script
// (forms post, the chapter player plays the first take); this adds:
// - "Split at the cursor": the text box's cursor position is sent as `at`;
// - keyboard reordering: Alt+↑ / Alt+↓ inside a block moves it (focus follows the block);
// - the voices' previews in the chapter's voice picker (one shared <audio>);
// - the chapter player: the chosen takes back to back in one <audio>, the block being spoken
//   highlighted (aria-current, .is-speaking, scrolled into view), ▶ on a block plays from it,
//   space plays or pauses when the focus is not in a text field.
//
// The queue: the JSON script tag "chapter-queue" holds items {kind: "take", block, url, duration};
// items with another `kind` (the cues placed in the chapter, views_editor._queue from
// cues.cue_queue_items: {cue, block, url, duration, kind: "sound"|"music", placement:
// "after"|"under", volume_db}) are kept from it and played after their block's take, or under it
// at their volume. The takes' items are read again from the block rows (data-take-url) whenever
// htmx swaps a row or the list.
(function () {
  "use strict";

  const TEXT_FIELDS = "input, textarea, select, button, summary, a, [contenteditable], [role=slider], audio";

  // --- Block editing ------------------------------------------------------------------------

  function enhance(root) {
    const scope = root && root.querySelectorAll ? root : document;
    scope.querySelectorAll("[data-split-field]").forEach((el) => { el.hidden = true; });
    scope.querySelectorAll("[data-play-from], [data-preview], [data-cp-controls]").forEach((el) => { el.hidden = false; });
    if (scope.matches && scope.matches("[data-play-from]")) scope.hidden = false;
  }

  // The cursor of the block's text box becomes the split position (before htmx sends it).
  document.addEventListener("click", (e) => {
    const button = e.target.closest && e.target.closest("[data-split]");
    if (!button) return;
    const form = button.form;
    const text = form && form.querySelector("[data-block-text]");
    const at = form && form.querySelector("input[name=at]");
    if (text && at) at.value = String(text.selectionStart || 0);
  }, true);

  let focusAfterSwap = null; // {block, move}: where the focus goes once the list is redrawn

  document.addEventListener("keydown", (e) => {
    if (!e.altKey || (e.key !== "ArrowUp" && e.key !== "ArrowDown")) return;
    const row = e.target.closest && e.target.closest(".block-row");
    if (!row) return;
    const move = e.key === "ArrowUp" ? "up" : "down";
    const button = row.querySelector('[data-move="' + move + '"]');
    e.preventDefault();
    if (!button) return;
    focusAfterSwap = { block: row.dataset.block, move };
    button.click();
  });

  document.addEventListener("click", (e) => {
    const button = e.target.closest && e.target.closest("[data-move]");
    if (button && !focusAfterSwap) {
      const row = button.closest(".block-row");
      if (row) focusAfterSwap = { block: row.dataset.block, move: button.dataset.move };
    }
  }, true);

  // --- Voice previews -----------------------------------------------------------------------

  let previewing = null;
  function showPreview(current) {
    document.querySelectorAll("[data-preview]").forEach((b) => {
      const on = b === current;
      b.setAttribute("aria-pressed", on ? "true" : "false");
      b.firstElementChild.textContent = on ? "❚❚" : "▶";
      b.setAttribute("aria-label", b.getAttribute("aria-label").replace(/^(Play|Stop)/, on ? "Stop" : "Play"));
    });
  }
  document.addEventListener("click", (e) => {
    const button = e.target.closest && e.target.closest("[data-preview]");
    const preview = document.querySelector("[data-voice-preview]");
    if (!button || !preview) return;
    if (previewing === button) {
      preview.pause();
      previewing = null;
      showPreview(null);
      return;
    }
    player.pause();
    preview.src = button.dataset.preview;
    previewing = button;
    showPreview(button);
    preview.play().catch(() => { previewing = null; showPreview(null); });
  });

  // --- The chapter player -------------------------------------------------------------------

  const player = {
    audio: null,
    queue: [],
    extras: [], // cues from the JSON queue
    current: -1,
    under: [], // <audio> of the cues playing under the current block

    setUp() {
      const box = document.querySelector("[data-chapter-player]");
      this.audio = box ? box.querySelector("audio") : null;
      let initial = [];
      const data = document.getElementById("chapter-queue");
      try {
        initial = JSON.parse(data ? data.textContent : "[]") || [];
      } catch (err) {
        initial = [];
      }
      this.extras = initial.filter((item) => item.kind && item.kind !== "take");
      this.rebuild();
      if (!this.audio) return;
      this.audio.addEventListener("ended", () => this.next());
      this.audio.addEventListener("play", () => {
        if (this.current < 0 && this.queue.length) this.mark(0);
        this.under.forEach((a) => a.play().catch(() => {}));
        this.show();
      });
      this.audio.addEventListener("pause", () => {
        this.under.forEach((a) => a.pause());
        this.show();
      });
      const on = (sel, fn) => { const el = box.querySelector(sel); if (el) el.addEventListener("click", fn); };
      on("[data-cp-toggle]", () => this.toggle());
      on("[data-cp-next]", () => this.next());
      on("[data-cp-prev]", () => this.play(Math.max(0, this.current - 1)));
    },

    rows() {
      return Array.from(document.querySelectorAll("#blocks .block-row"));
    },

    rebuild() {
      const was = this.queue[this.current];
      const queue = [];
      let skipped = [];
      this.rows().forEach((row) => {
        const block = row.dataset.block;
        if (row.dataset.takeUrl) {
          const duration = parseFloat(row.dataset.duration);
          queue.push({ block, url: row.dataset.takeUrl, duration: isFinite(duration) ? duration : null });
        } else {
          skipped.push(row);
        }
        this.extras
          .filter((item) => item.block === block && item.placement !== "under")
          .forEach((item) => queue.push(item));
      });
      this.queue = queue;
      this.current = was ? queue.findIndex((i) => i.block === was.block && i.url === was.url) : -1;
      const note = document.querySelector("[data-cp-skipped]");
      if (note && this.audio) {
        note.hidden = skipped.length === 0;
        if (skipped.length) {
          note.textContent = skipped.length + (skipped.length === 1 ? " block without a chosen take is" : " blocks without a chosen take are") +
            " skipped: " + skipped.map((row) => row.querySelector(".block-number").textContent.replace("Block", "").trim()).join(", ") + ".";
        }
      }
    },

    mark(index) {
      this.current = index;
      const item = this.queue[index];
      document.querySelectorAll(".block-row.is-speaking").forEach((row) => {
        row.classList.remove("is-speaking");
        row.removeAttribute("aria-current");
      });
      if (!item) return;
      const row = document.getElementById("block-" + item.block);
      if (row) {
        row.classList.add("is-speaking");
        row.setAttribute("aria-current", "true");
        const still = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
        row.scrollIntoView({ block: "nearest", behavior: still ? "auto" : "smooth" });
      }
    },

    play(index) {
      if (!this.audio) return;
      const item = this.queue[index];
      this.under.forEach((a) => a.pause());
      this.under = [];
      if (!item) return this.stop();
      this.mark(index);
      if (!item.kind || item.kind === "take") {
        this.under = this.extras
          .filter((cue) => cue.block === item.block && cue.placement === "under")
          .map((cue) => {
            const a = new Audio(cue.url);
            a.volume = Math.max(0, Math.min(1, Math.pow(10, (cue.volume_db || 0) / 20)));
            return a;
          });
      }
      if (this.audio.getAttribute("src") !== item.url) this.audio.src = item.url;
      else this.audio.currentTime = 0;
      this.audio.play().catch(() => this.show());
    },

    next() {
      if (this.current + 1 < this.queue.length) this.play(this.current + 1);
      else this.stop();
    },

    stop() {
      this.under.forEach((a) => a.pause());
      this.under = [];
      if (this.audio) this.audio.pause();
      this.mark(-1);
      this.show();
    },

    toggle() {
      if (!this.audio || !this.queue.length) return;
      if (this.current < 0) return this.play(0);
      if (this.audio.paused) this.audio.play().catch(() => {});
      else this.audio.pause();
    },

    pause() {
      if (this.audio && !this.audio.paused) this.audio.pause();
    },

    show() {
      const box = document.querySelector("[data-chapter-player]");
      if (!box || !this.audio) return;
      const playing = !this.audio.paused && !this.audio.ended;
      const toggle = box.querySelector("[data-cp-toggle]");
      if (toggle) {
        toggle.textContent = playing ? "Pause" : this.current < 0 ? "Play the chapter" : "Resume";
        toggle.setAttribute("aria-pressed", playing ? "true" : "false");
      }
      const now = box.querySelector("[data-cp-now]");
      const item = this.queue[this.current];
      const row = item ? document.getElementById("block-" + item.block) : null;
      if (now) {
        now.textContent = row
          ? (item.kind && item.kind !== "take" ? "Cue after block " : "Block ") +
            row.querySelector(".block-number").textContent.replace("Block", "").trim() + " of " + this.rows().length
          : "";
      }
    },
  };

  document.addEventListener("click", (e) => {
    const button = e.target.closest && e.target.closest("[data-play-from]");
    if (!button) return;
    const index = player.queue.findIndex((item) => item.block === button.dataset.playFrom && (!item.kind || item.kind === "take"));
    if (index >= 0) player.play(index);
  });

  document.addEventListener("keydown", (e) => {
    if (e.key !== " " || e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
    if (e.target.closest && e.target.closest(TEXT_FIELDS)) return;
    if (!player.audio || !player.queue.length) return;
    e.preventDefault();
    player.toggle();
  });

  // Another take's audio (a block's own player, a take to compare) stops the chapter player.
  document.addEventListener("play", (e) => {
    if (player.audio && e.target !== player.audio && e.target.tagName === "AUDIO" && !player.under.includes(e.target)) {
      player.pause();
    }
  }, true);

  document.addEventListener("DOMContentLoaded", () => {
    enhance(document);
    player.setUp();
  });
  document.addEventListener("htmx:load", (e) => enhance(e.detail.elt));
  // (A row or the list was swapped: the takes may have changed; cheap to read again.)
  document.addEventListener("htmx:afterSettle", () => {
    if (!document.getElementById("blocks")) return;
    player.rebuild();
    player.mark(player.current);
    player.show();
    if (focusAfterSwap) {
      const row = document.getElementById("block-" + focusAfterSwap.block);
      if (row) {
        const button = row.querySelector('[data-move="' + focusAfterSwap.move + '"]');
        (button || row).focus();
      }
      focusAfterSwap = null;
    }
  });
})();
