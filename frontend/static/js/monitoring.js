// The monitoring dashboard: subscribe the page's live socket to the "monitoring" topic, poll
// when the socket is down, and draw the charts (vendored Chart.js) from the JSON the server
// renders into each dashboard fragment. No inline script: the CSP forbids it.
(function () {
  "use strict";
  var POLL_MS = 5000;
  var socketOpen = false;
  var pollTimer = null;

  function setMode(text) {
    var el = document.getElementById("dashboard-link-state");
    if (el) el.textContent = text;
  }

  function poll() {
    var mode = document.getElementById("dashboard-mode");
    if (!mode || socketOpen || !window.htmx) return;
    window.htmx.ajax("GET", mode.dataset.pollUrl, { target: "#dashboard", swap: "outerHTML" });
  }

  function startPolling() {
    if (pollTimer === null) {
      pollTimer = window.setInterval(poll, POLL_MS);
      setMode("Live connection unavailable: polling every 5 s.");
    }
  }

  function stopPolling() {
    if (pollTimer !== null) {
      window.clearInterval(pollTimer);
      pollTimer = null;
    }
    setMode("Live.");
  }

  document.addEventListener("htmx:wsOpen", function (evt) {
    socketOpen = true;
    stopPolling();
    if (document.getElementById("dashboard") && evt.detail && evt.detail.socketWrapper) {
      evt.detail.socketWrapper.send(JSON.stringify({ subscribe: "monitoring" }));
    }
  });
  function closed() {
    socketOpen = false;
    if (document.getElementById("dashboard")) startPolling();
  }
  document.addEventListener("htmx:wsClose", closed);
  document.addEventListener("htmx:wsError", closed);
  // A socket that never opens (e.g. refused): fall back after 3 s.
  window.setTimeout(function () { if (!socketOpen) closed(); }, 3000);

  var charts = [];
  function draw() {
    var data = document.getElementById("dashboard-charts");
    if (!data || !window.Chart) return;
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    var all = JSON.parse(data.textContent);
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var family = all[canvas.dataset.family];
      if (!family) return;
      var kind = canvas.dataset.chart;
      var config = kind === "series"
        ? { type: "line", data: { labels: family.labels, datasets: [{ label: "requests", data: family.series, tension: 0.2 }] } }
        : { type: "bar", data: { labels: family.scores.map(function (_, i) { return (i / 10).toFixed(1) + "–" + ((i + 1) / 10).toFixed(1); }), datasets: [{ label: "rows", data: family.scores }] } };
      config.options = { animation: false, responsive: true, maintainAspectRatio: false, plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } };
      charts.push(new window.Chart(canvas, config));
    });
  }
  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("htmx:afterSettle", draw);
  document.addEventListener("htmx:oobAfterSwap", draw);
  document.addEventListener("htmx:wsAfterMessage", draw);
})();
