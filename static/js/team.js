// Team pages (API keys, members): a panel that appears after an action (a new key, a
// confirmation, an undo) is brought into view and focused, so nobody misses it. Without
// this script the panel is still rendered at the top of the page that the server sends.
(function () {
  "use strict";

  function reveal(root) {
    if (!root || !root.querySelector) return;
    const panel =
      root.matches && root.matches("[data-reveal]") ? root : root.querySelector("[data-reveal]");
    if (!panel || panel.dataset.revealed) return;
    panel.dataset.revealed = "1";
    panel.scrollIntoView({ block: "center" });
    panel.focus({ preventScroll: true });
  }

  document.addEventListener("DOMContentLoaded", () => reveal(document));
  document.addEventListener("htmx:load", (e) => reveal(e.detail.elt));
  document.addEventListener("htmx:afterSettle", (e) => reveal(e.detail.elt));
})();
