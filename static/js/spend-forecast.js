// The spend page's forecast: the credits spent this period (solid), the projection to the
// reset (dashed), and the plan's credits and the workspace cap as flat lines, from the page's
// json_script "forecast-data". Colours from the Okabe-Ito palette, told apart by dash
// patterns too. Without JavaScript the forecast's summary above it says the same in words.
(function () {
  "use strict";

  function flat(value, count) {
    var line = [];
    for (var i = 0; i < count; i += 1) line.push(Number(value));
    return line;
  }

  function draw() {
    var card = document.querySelector("[data-forecast-card]");
    var source = document.getElementById("forecast-data");
    if (!card || !source || typeof window.Chart === "undefined" || card.dataset.drawn) return;
    card.dataset.drawn = "1";
    var spec = JSON.parse(source.textContent);
    var number = function (v) { return v === null ? null : Number(v); };
    var datasets = [
      { label: "Spent", data: spec.measured.map(number), borderColor: "#0072B2",
        backgroundColor: "#0072B2", pointRadius: 0, spanGaps: false },
      { label: "Projected (" + spec.ratio + ")", data: spec.projected.map(number),
        borderColor: "#D55E00", backgroundColor: "#D55E00", borderDash: [6, 4],
        pointRadius: 0, spanGaps: false },
    ];
    if (spec.plan !== null) {
      datasets.push({ label: spec.planLabel || "Plan's credits", data: flat(spec.plan, spec.labels.length),
        borderColor: "#000000", backgroundColor: "#000000", borderDash: [2, 3], pointRadius: 0 });
    }
    if (spec.cap !== null) {
      datasets.push({ label: "Workspace cap", data: flat(spec.cap, spec.labels.length),
        borderColor: "#CC79A7", backgroundColor: "#CC79A7", borderDash: [10, 3, 2, 3],
        pointRadius: 0 });
    }
    card.hidden = false;
    new window.Chart(document.getElementById("forecast-canvas"), {
      type: "line",
      data: { labels: spec.labels, datasets: datasets },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        scales: { y: { beginAtZero: true, title: { display: true, text: "credits" } } },
        plugins: { legend: { position: "bottom" } },
      },
    });
  }

  // The forecast arrives after the page (htmx loads it): draw it then.
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.target && event.target.querySelector && event.target.querySelector("#forecast-data")) {
      draw();
    }
  });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
