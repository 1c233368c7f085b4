// The spend explorer's chart: stacked bars of the table's own numbers (read from the page's
// json_script "spend-data"), in the Okabe-Ito colour-blind-safe palette, with the shadow cost
// of local drafts as a dashed line apart from the bars. A bar opens the ledger rows behind it.
// Without JavaScript (or without Chart.js) the table below is the whole view.
(function () {
  "use strict";

  // Okabe & Ito (2008): told apart with every common colour-vision deficiency.
  var PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442"];
  var OTHERS = "#999999";

  function draw() {
    var holder = document.querySelector("[data-spend-chart]");
    var source = document.getElementById("spend-data");
    if (!holder || !source || typeof window.Chart === "undefined") return;
    var spec = JSON.parse(source.textContent);
    var datasets = spec.datasets.map(function (set, i) {
      var colour = set.others ? OTHERS : PALETTE[i % PALETTE.length];
      return {
        type: "bar",
        label: set.label,
        data: set.data.map(Number),
        backgroundColor: colour,
        borderColor: colour,
        stack: "charged",
        param: set.param,
        value: set.value,
        others: !!set.others,
      };
    });
    if (spec.shadow.length) {
      datasets.push({
        type: "line",
        label: "Local drafts on ElevenLabs (not charged)",
        data: spec.shadow.map(Number),
        borderColor: "#000000",
        backgroundColor: "#000000",
        borderDash: [6, 4],
        pointStyle: "rectRot",
        fill: false,
        stack: "shadow",
      });
    }
    holder.hidden = false;
    var chart = new window.Chart(document.getElementById("spend-canvas"), {
      data: { labels: spec.labels, datasets: datasets },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "nearest", intersect: true },
        scales: {
          x: { stacked: true },
          y: { stacked: true, beginAtZero: true, title: { display: true, text: spec.measure } },
        },
        plugins: { legend: { position: "bottom" } },
        onClick: function (event, elements) {
          if (!elements.length) return;
          var hit = elements[0];
          var set = chart.data.datasets[hit.datasetIndex];
          if (set.type !== "bar" || set.others) return;
          var url = spec.rowsUrl;
          if (set.param) {
            url = url.replace(new RegExp("([?&])" + set.param + "=[^&]*", "g"), "$1");
            url += "&" + set.param + "=" + encodeURIComponent(set.value);
          }
          window.location.href = url + "&bucket=" + spec.keys[hit.index];
        },
        onHover: function (event, elements) {
          event.native.target.style.cursor = elements.length ? "pointer" : "default";
        },
      },
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
