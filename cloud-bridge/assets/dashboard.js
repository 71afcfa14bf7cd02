// Outpost dashboard: charts (uPlot), relative times, and the live-feed indicator.
// Content re-renders through htmx (hx-trigger="sse:…" on #live); this file only decorates
// what htmx loads, so it runs for the first page and for every swap (htmx.onLoad).
(function () {
  "use strict";
  var palette = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2",
                 "#db2777", "#4b5563", "#65a30d", "#9333ea"];

  function renderChart(el) {
    if (el.dataset.rendered) return;
    var spec;
    try { spec = JSON.parse(el.dataset.chart); } catch (e) { return; }
    var width = Math.max(320, el.clientWidth || 800);
    var series = [{}].concat(spec.series.map(function (s, i) {
      return { label: s.label, stroke: palette[i % palette.length], width: 2, spanGaps: true,
               points: { show: spec.x.length < 60 } };
    }));
    var data = [spec.x].concat(spec.series.map(function (s) { return s.values; }));
    var plot = new uPlot({
      title: spec.title, width: width, height: 280, series: series,
      scales: { x: { time: true } },
      axes: [{}, { label: spec.unit }]
    }, data, el);
    el.dataset.rendered = "1";
    el.dataset.series = String(spec.series.length);
    el.dataset.points = String(spec.x.length);
    window.addEventListener("resize", function () {
      plot.setSize({ width: Math.max(320, el.clientWidth || 800), height: 280 });
    });
  }

  function ago(secs) {
    if (secs < 60) return secs + " s ago";
    if (secs < 3600) return Math.floor(secs / 60) + " min ago";
    if (secs < 86400) return Math.floor(secs / 3600) + " h ago";
    return Math.floor(secs / 86400) + " d ago";
  }

  function relativeTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var at = Date.parse(t.getAttribute("datetime"));
      if (isNaN(at)) return;
      if (!t.title) t.title = t.textContent;
      var secs = Math.max(0, Math.round((Date.now() - at) / 1000));
      t.textContent = ago(secs);
    });
  }

  function decorate(root) {
    root.querySelectorAll(".chart[data-chart]").forEach(renderChart);
    relativeTimes(root);
  }

  function setLive(state) {
    var el = document.getElementById("live-status");
    if (!el) return;
    el.classList.remove("on", "off");
    el.classList.add(state);
    el.textContent = state === "on" ? "live" : "offline";
  }

  // The live feed's EventSource, created through the SSE extension's public hook so it
  // can be closed when the page goes away: a browser keeps at most six connections to a
  // host, and streams left open by pages in its back/forward cache would use them up.
  var sources = [];
  if (typeof htmx !== "undefined") {
    htmx.createEventSource = function (url) {
      var es = new EventSource(url, { withCredentials: true });
      sources.push(es);
      return es;
    };
  }
  window.addEventListener("pagehide", function () {
    sources.forEach(function (s) { s.close(); });
    sources = [];
  });
  // Back from the cache with a closed feed: load the page afresh (current, and live).
  window.addEventListener("pageshow", function (e) { if (e.persisted) location.reload(); });

  document.addEventListener("DOMContentLoaded", function () {
    if (typeof htmx === "undefined") { decorate(document); return; }
    htmx.onLoad(decorate);
    document.body.addEventListener("htmx:sseOpen", function () { setLive("on"); });
    document.body.addEventListener("htmx:sseError", function () { setLive("off"); });
    document.body.addEventListener("htmx:sseMessage", function () { setLive("on"); });
    setInterval(function () { relativeTimes(document); }, 10000);
  });
})();
