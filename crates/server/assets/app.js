// clickward dashboard: chart, live tiles, live stream, copy buttons.
// Plain JavaScript, no build step. Every value from the server is put into
// the page with textContent, never as HTML.
"use strict";

(function () {
  // ---- copy buttons ---------------------------------------------------------
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest && ev.target.closest("button.copy");
    if (!b) return;
    var text = b.getAttribute("data-copy") || "";
    var done = function () {
      var old = b.textContent;
      b.textContent = "Copied";
      setTimeout(function () { b.textContent = old; }, 1200);
    };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(done, function () {});
    }
  });

  // ---- chart ------------------------------------------------------------------
  var chartEl = document.getElementById("chart");
  if (chartEl && window.uPlot) {
    try {
      var s = JSON.parse(chartEl.getAttribute("data-series") || "{}");
      if (s.x && s.x.length) {
        var width = function () { return Math.max(280, chartEl.clientWidth || 600); };
        // Axis text and grid follow the page's palette (light or dark).
        var style = getComputedStyle(document.body);
        var fg = style.color;
        var line = style.getPropertyValue("--line").trim() || "#e5e7eb";
        var plot = new uPlot({
          width: width(),
          height: 260,
          series: [
            {},
            { label: "Clicks", stroke: "#2563eb", width: 2 },
            { label: "Unique", stroke: "#059669", width: 2 },
            { label: "Bots", stroke: "#9ca3af", width: 1 },
          ],
          axes: [
            { stroke: fg, grid: { stroke: line }, ticks: { stroke: line } },
            { size: 70, stroke: fg, grid: { stroke: line }, ticks: { stroke: line } },
          ],
        }, [s.x, s.clicks, s.unique, s.bots], chartEl);
        window.addEventListener("resize", function () {
          plot.setSize({ width: width(), height: 260 });
        });
      }
    } catch (e) {
      chartEl.textContent = "The chart could not be drawn.";
    }
  }

  // ---- live stream ----------------------------------------------------------
  var statusEl = document.getElementById("live-status");
  var setStatus = function (text, bad) {
    if (!statusEl) return;
    statusEl.hidden = false;
    statusEl.textContent = text;
    statusEl.classList.toggle("bad", !!bad);
  };

  var tiles = document.querySelector("[data-kpis]");
  var liveBox = document.getElementById("live");
  var eventsUrl =
    (liveBox && liveBox.getAttribute("data-events")) ||
    (tiles && tiles.getAttribute("data-events"));
  if (!eventsUrl || !window.EventSource) return;

  // Tiles: refetched from the server (same numbers as the reports), at most
  // once a second, after an event arrives.
  var refreshPending = false;
  var refreshTiles = function () {
    if (!tiles || refreshPending) return;
    refreshPending = true;
    setTimeout(function () {
      fetch(tiles.getAttribute("data-kpis"), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          refreshPending = false;
          if (!j) return;
          Object.keys(j).forEach(function (id) {
            var el = document.getElementById(id);
            if (el) el.textContent = j[id];
          });
        }, function () { refreshPending = false; });
    }, 300);
  };

  var rows = document.getElementById("live-rows");
  var paused = false;
  var pauseBtn = document.getElementById("pause");
  var filterEl = document.getElementById("live-filter");
  var botsEl = document.getElementById("live-bots");
  var MAX_ROWS = 500;

  var visible = function (tr) {
    var f = filterEl ? filterEl.value.trim().toLowerCase() : "";
    var showBots = !botsEl || botsEl.checked;
    if (!showBots && tr.classList.contains("bot")) return false;
    return !f || tr.textContent.toLowerCase().indexOf(f) >= 0;
  };
  var applyFilter = function () {
    if (!rows) return;
    Array.prototype.forEach.call(rows.rows, function (tr) { tr.hidden = !visible(tr); });
  };
  if (filterEl) filterEl.addEventListener("input", applyFilter);
  if (botsEl) botsEl.addEventListener("change", applyFilter);
  if (pauseBtn) {
    pauseBtn.addEventListener("click", function () {
      paused = !paused;
      pauseBtn.setAttribute("aria-pressed", String(paused));
      pauseBtn.textContent = paused ? "Resume" : "Pause";
      setStatus(paused ? "Paused: new events are not shown." : "Live.");
    });
  }

  var cell = function (tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text == null || text === "" ? "–" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
  };
  var time = function (us) {
    var d = new Date(Math.floor(us / 1000));
    return d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
  };
  var addRow = function (kind, e) {
    if (!rows || paused) return;
    var tr = document.createElement("tr");
    if (kind === "click") {
      var v = e.verdict;
      var cls = e.bot_reason ? "bot" : v && (v.action === "reject" || v.action === "block") ? "invalid" : v ? "flagged" : "human";
      tr.className = cls;
      cell(tr, time(e.ts));
      cell(tr, "click");
      cell(tr, e.link);
      cell(tr, e.affiliate);
      cell(tr, e.src);
      cell(tr, cls);
      cell(tr, e.bot_reason || (v ? v.rule + ": " + v.reason : ""));
      cell(tr, e.country);
      cell(tr, e.referrer, "url");
      cell(tr, e.device);
      cell(tr, e.browser);
      cell(tr, (e.redirect_us / 1000).toFixed(2), "num");
    } else {
      var c = e.conversion || {};
      tr.className = "conversion";
      cell(tr, new Date().toISOString().replace("T", " ").slice(0, 19) + " UTC");
      cell(tr, "conversion " + (e.change || ""));
      cell(tr, c.link);
      cell(tr, c.affiliate);
      cell(tr, c.src);
      cell(tr, c.status);
      cell(tr, "");
      cell(tr, "");
      cell(tr, "");
      cell(tr, c.order_id);
      cell(tr, c.amount ? c.amount + " " + (c.currency || "") : "");
      cell(tr, "", "num");
    }
    tr.hidden = !visible(tr);
    rows.insertBefore(tr, rows.firstChild);
    while (rows.rows.length > MAX_ROWS) rows.deleteRow(rows.rows.length - 1);
  };

  var es;
  var retry = 1000;
  var connect = function () {
    es = new EventSource(eventsUrl);
    es.onopen = function () {
      retry = 1000;
      setStatus(paused ? "Paused: new events are not shown." : "Live.");
    };
    var on = function (kind) {
      return function (m) {
        var e;
        try { e = JSON.parse(m.data); } catch (_) { return; }
        addRow(kind, e);
        refreshTiles();
      };
    };
    es.addEventListener("click", on("click"));
    es.addEventListener("conversion", on("conversion"));
    es.addEventListener("gap", function () {
      setStatus("Some events were missed while disconnected; the counters are exact, the list is not.", true);
      refreshTiles();
    });
    es.onerror = function () {
      // The browser retries by itself while the stream is reachable; when it
      // gives up (a closed stream), reconnect with a growing delay.
      setStatus("Connection lost; reconnecting…", true);
      if (es.readyState === EventSource.CLOSED) {
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, 30000);
      }
    };
  };
  connect();
})();
