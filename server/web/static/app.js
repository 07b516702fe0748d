/* Teleposture dashboard: small progressive enhancements. Every page works without this file. */
(function () {
  "use strict";

  // This file is deferred and may run before the other deferred scripts (Chart.js): wait for all of them.
  function onReady(fn) {
    if (document.readyState === "complete") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }

  // htmx requests carry the session's CSRF token in a header (forms carry it as a field).
  document.addEventListener("htmx:configRequest", function (event) {
    var token = document.body.getAttribute("data-csrf");
    if (token) { event.detail.headers["X-CSRF-Token"] = token; }
  });

  // Buttons with data-confirm ask before their form is sent.
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-confirm]") : null;
    if (button && !window.confirm(button.getAttribute("data-confirm"))) { event.preventDefault(); }
  });

  document.addEventListener("click", function (event) {
    if (event.target.classList && event.target.classList.contains("print-button")) { window.print(); }
  });

  function readJson(id) {
    var node = document.getElementById(id);
    if (!node) { return null; }
    try { return JSON.parse(node.textContent); } catch (e) { return null; }
  }

  function drawTrend() {
    var canvas = document.getElementById("trend-chart");
    var data = readJson("trend-data");
    var labels = readJson("trend-labels") || {};
    if (!canvas || !data || !window.Chart) { return; }
    var rtl = document.documentElement.dir === "rtl";
    var style = getComputedStyle(document.documentElement);
    var accent = style.getPropertyValue("--accent").trim() || "#2f6f5e";
    var muted = style.getPropertyValue("--warn").trim() || "#b7791f";
    canvas.setAttribute("data-points", String(data.labels.length));
    new window.Chart(canvas, {
      type: "line",
      data: {
        labels: data.labels,
        datasets: [
          { label: labels.percent || "%", data: data.percent, borderColor: accent, backgroundColor: accent,
            yAxisID: "y", tension: 0.25, spanGaps: true, pointRadius: 2 },
          // The second series: stale devices on the overview, failing devices on the trends page.
          { label: labels.second || labels.stale || "stale", data: data.second || data.stale, borderColor: muted,
            backgroundColor: muted,
            yAxisID: "y2", borderDash: [4, 4], tension: 0.25, pointRadius: 0 }
        ]
      },
      options: {
        animation: false, maintainAspectRatio: false, locale: document.documentElement.lang,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { rtl: rtl, position: "bottom" }, tooltip: { rtl: rtl } },
        scales: {
          x: { reverse: rtl, ticks: { maxTicksLimit: 8 } },
          y: { min: 0, max: 100, position: rtl ? "right" : "left", ticks: { callback: function (v) { return v + " %"; } } },
          y2: { min: 0, position: rtl ? "left" : "right", grid: { drawOnChartArea: false } }
        }
      }
    });
  }

  onReady(drawTrend);
})();
