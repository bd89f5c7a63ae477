// Charts of the staff page, drawn with Chart.js (stats/vendor/). Their data sits in
// <script type="application/json"> elements inside live regions: read on load, and read
// again after live.js has swapped fresh regions in ("foodsite:refreshed"); the charts are
// then updated in place, not re-created.
(function () {
  "use strict";
  const charts = {};

  function readData(id) {
    const element = document.getElementById(id);
    return element ? JSON.parse(element.textContent) : null;
  }

  function show(key, canvasId, labels, values, config) {
    const chart = charts[key];
    if (chart) {
      chart.data.labels = labels;
      chart.data.datasets[0].data = values;
      chart.update();
      return;
    }
    const canvas = document.getElementById(canvasId);
    if (!canvas) return;
    charts[key] = new Chart(canvas, {
      type: "bar",
      data: { labels: labels, datasets: [{ ...config.dataset, data: values }] },
      options: {
        animation: false,  // a live page redraws often; no bars growing from zero each time
        maintainAspectRatio: false,
        plugins: { legend: { display: false } },
        ...config.options,
      },
    });
  }

  function draw() {
    if (typeof Chart === "undefined") return;  // the library did not load: the tables still tell
    const perMinute = readData("orders-per-minute-data");
    if (perMinute) {
      show("perMinute", "chart-orders-per-minute", perMinute.labels, perMinute.orders, {
        dataset: { label: "Paid orders", backgroundColor: "#b3261e" },
        options: {
          scales: {
            x: { ticks: { maxTicksLimit: 12, maxRotation: 0 } },
            y: { beginAtZero: true, ticks: { precision: 0 } },
          },
        },
      });
    }
    const top = readData("top-dishes-data");
    if (top) {
      show("topDishes", "chart-top-dishes", top.labels, top.quantities, {
        dataset: { label: "Units sold", backgroundColor: "#3b7d4a" },
        options: { indexAxis: "y", scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } },
      });
    }
  }

  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("foodsite:refreshed", draw);
})();
