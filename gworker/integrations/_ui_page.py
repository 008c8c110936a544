"""The status page's document (see :mod:`gworker.integrations.ui`): HTML, its
style and its script in one string, served as-is — no build step, nothing
fetched from elsewhere. The script asks ``<page>/data`` for the figures every
second and builds the page from them with DOM calls (``textContent``: a
worker's name is never read as HTML)."""

PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>gworker — workers</title>
<style>
  :root { --bg: #f6f7f9; --card: #fff; --ink: #1d232b; --dim: #6b7480; --line: #e3e6ea;
          --ok: #1f9d55; --warn: #c77d00; --bad: #c0392b; --accent: #2f6fde; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
         background: var(--bg); color: var(--ink); }
  header { display: flex; align-items: baseline; gap: 1.5em; padding: 14px 22px;
           background: #1d232b; color: #fff; }
  header h1 { font-size: 18px; margin: 0; font-weight: 600; }
  header .meta { color: #b8c0ca; font-size: 13px; }
  main { padding: 16px 22px; }
  .error { background: #fdecea; color: var(--bad); padding: 8px 12px; border-radius: 6px;
           margin-bottom: 12px; display: none; }
  .proc { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
          margin-bottom: 16px; overflow: hidden; }
  .proc.stale { border-color: var(--warn); }
  .proc.exited { opacity: .55; }
  .proc-head { display: flex; flex-wrap: wrap; align-items: center; gap: 1.2em; padding: 10px 14px;
               border-bottom: 1px solid var(--line); }
  .proc-head .pid { font-weight: 600; font-size: 15px; }
  .badge { font-size: 12px; padding: 1px 8px; border-radius: 10px; color: #fff; background: var(--ok); }
  .badge.stale { background: var(--warn); } .badge.exited { background: var(--dim); }
  .badge.self { background: var(--accent); }
  .fig { color: var(--dim); } .fig b { color: var(--ink); font-weight: 600; }
  .slots { display: flex; gap: 10px; align-items: center; }
  .slot { display: flex; align-items: center; gap: 4px; font-size: 12px; color: var(--dim); }
  .slot .bar { width: 46px; height: 8px; background: var(--line); border-radius: 4px; overflow: hidden; }
  .slot .bar i { display: block; height: 100%; background: var(--accent); }
  table { width: 100%; border-collapse: collapse; }
  th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); white-space: nowrap; }
  th { font-size: 12px; font-weight: 600; color: var(--dim); background: #fafbfc; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  tr:last-child td { border-bottom: none; }
  .state-active { color: var(--ok); } .state-stopping { color: var(--warn); }
  .failures { color: var(--bad); font-weight: 600; }
  svg.spark { display: block; }
  .empty { padding: 10px 14px; color: var(--dim); }
</style>
</head>
<body>
<header>
  <h1>gworker</h1>
  <span class="meta" id="summary">loading…</span>
  <span class="meta" id="updated" data-refreshes="0"></span>
</header>
<main>
  <div class="error" id="error"></div>
  <div id="processes"></div>
</main>
<script>
"use strict";
(function () {
  var PRIORITIES = [["0", "critical"], ["50", "high"], ["100", "normal"], ["200", "low"]];
  var PRIORITY_NAMES = {"0": "CRITICAL", "50": "HIGH", "100": "NORMAL", "200": "LOW"};
  var dataUrl = location.pathname.replace(/\/+$/, "") + "/data";
  var refreshes = 0;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) { for (var k in attrs) { node.setAttribute(k, attrs[k]); } }
    if (text !== undefined && text !== null) { node.textContent = text; }
    return node;
  }
  function seconds(s) {
    if (s === null || s === undefined) { return "–"; }
    var a = Math.abs(s);
    if (a < 0.001) { return (s * 1e6).toFixed(0) + " µs"; }
    if (a < 1) { return (s * 1e3).toFixed(1) + " ms"; }
    if (a < 120) { return s.toFixed(2) + " s"; }
    return (s / 60).toFixed(1) + " min";
  }
  function ago(t, now) { return t ? seconds(now - t) + " ago" : "–"; }
  function until(t, now) {
    if (!t) { return "–"; }
    var d = t - now;
    return d >= 0 ? "in " + seconds(d) : seconds(-d) + " overdue";
  }
  function sparkline(points) {
    var ns = "http://www.w3.org/2000/svg", w = 90, h = 20;
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "spark"); svg.setAttribute("width", w); svg.setAttribute("height", h);
    svg.setAttribute("data-points", points.length);
    if (!points.length) { return svg; }
    var max = Math.max.apply(null, points) || 1, step = points.length > 1 ? w / (points.length - 1) : 0;
    var coords = points.map(function (p, i) {
      return (i * step).toFixed(1) + "," + (h - 2 - (p / max) * (h - 4)).toFixed(1);
    });
    if (points.length === 1) { coords.push(w + "," + coords[0].split(",")[1]); }
    var line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", coords.join(" ")); line.setAttribute("fill", "none");
    line.setAttribute("stroke", "#2f6fde"); line.setAttribute("stroke-width", "1.5");
    svg.appendChild(line);
    var title = document.createElementNS(ns, "title");
    title.textContent = "recent runs, latest " + seconds(points[points.length - 1]) + ", max " + seconds(max);
    svg.appendChild(title);
    return svg;
  }
  function cell(row, field, text, cls) {
    var td = el("td", {"data-field": field}, text);
    if (cls) { td.className = cls; }
    row.appendChild(td);
    return td;
  }
  function processCard(p, data) {
    var now = p.time;  // (the figures are as of the snapshot: times relative to it)
    var state = p.exited ? "exited" : (p.stale ? "stale" : "live");
    var card = el("section", {"class": "proc " + state, "data-pid": p.pid, "data-state": state});
    var head = el("div", {"class": "proc-head"});
    head.appendChild(el("span", {"class": "pid"}, "pid " + p.pid));
    head.appendChild(el("span", {"class": "badge " + state},
      state === "live" ? "live" : (state === "stale" ? "stopped publishing " + seconds(p.age) + " ago" : "exited")));
    if (p.pid === data.pid) { head.appendChild(el("span", {"class": "badge self"}, "answered this page")); }
    else { head.appendChild(el("span", {"class": "fig", "data-field": "age"}, "as of " + seconds(p.age) + " ago")); }
    var fig = el("span", {"class": "fig"}); fig.append("supervisor ");
    fig.appendChild(el("b", null, p.supervisor + (p.active ? "" : " (inactive)"))); head.appendChild(fig);
    fig = el("span", {"class": "fig"}); fig.append("hub lag ");
    fig.appendChild(el("b", {"data-field": "hub_lag"}, seconds(p.hub_lag))); head.appendChild(fig);
    var pool = p.pool || {}, inUse = pool.in_use || {};
    fig = el("span", {"class": "fig"}); fig.append("pool ");
    fig.appendChild(el("b", {"data-field": "pool"}, (pool.running || 0) + " running, " + (pool.waiting || 0) +
      " waiting, size " + pool.pool_size)); head.appendChild(fig);
    var slots = el("span", {"class": "slots"});
    var cap = Math.max(1, (pool.pool_size || 0) + (pool.reserve_normal || 0) + (pool.reserve_high || 0));
    PRIORITIES.forEach(function (pr) {
      var n = inUse[pr[0]] || 0;
      var s = el("span", {"class": "slot", "data-priority": pr[1], "data-in-use": n});
      s.append(pr[1] + " " + n);
      var bar = el("span", {"class": "bar"}), fill = el("i");
      fill.style.width = Math.min(100, 100 * n / cap).toFixed(0) + "%";
      bar.appendChild(fill); s.appendChild(bar); slots.appendChild(s);
    });
    head.appendChild(slots);
    card.appendChild(head);
    var workers = p.workers || [];
    if (!workers.length) {
      card.appendChild(el("div", {"class": "empty"}, "no started workers"));
      return card;
    }
    var table = el("table"), thead = el("tr");
    ["worker", "kind", "priority", "state", "runs", "failures", "last run", "took", "next due", "lateness",
     "queue", "recent runs"].forEach(function (h) { thead.appendChild(el("th", null, h)); });
    table.appendChild(thead);
    workers.forEach(function (w) {
      var row = el("tr", {"data-worker": w.name});
      cell(row, "name", w.name);
      cell(row, "kind", w.kind);
      cell(row, "priority", PRIORITY_NAMES[String(w.priority)] || String(w.priority));
      cell(row, "state", w.state, "state-" + w.state);
      cell(row, "runs", String(w.runs), "num");
      cell(row, "failures", String(w.failures), w.failures ? "num failures" : "num");
      cell(row, "last_run", ago(w.last_run, now));
      cell(row, "last_duration", seconds(w.last_duration), "num");
      cell(row, "next_run", until(w.next_run, now));
      cell(row, "lateness", seconds(w.lateness), "num");
      cell(row, "queue_length", w.queue_length === null || w.queue_length === undefined ? "–" : String(w.queue_length), "num");
      var td = cell(row, "durations", null); td.appendChild(sparkline(w.durations || []));
      table.appendChild(row);
    });
    card.appendChild(table);
    if (p.workers_total > workers.length) {
      card.appendChild(el("div", {"class": "empty"}, (p.workers_total - workers.length) + " more workers not shown"));
    }
    return card;
  }
  function render(data) {
    var box = document.getElementById("processes");
    var cards = data.processes.map(function (p) { return processCard(p, data); });
    box.replaceChildren.apply(box, cards);
    var live = data.processes.filter(function (p) { return !p.stale && !p.exited; }).length;
    var workers = data.processes.reduce(function (n, p) { return n + (p.workers_total || 0); }, 0);
    document.getElementById("summary").textContent = data.processes.length + " process(es), " + live +
      " publishing, " + workers + " worker(s)";
    refreshes += 1;
    var updated = document.getElementById("updated");
    updated.setAttribute("data-refreshes", refreshes);
    updated.textContent = "updated " + new Date(data.time * 1000).toLocaleTimeString() + " by pid " + data.pid;
  }
  function refresh() {
    fetch(dataUrl, {cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.json();
    }).then(function (data) {
      document.getElementById("error").style.display = "none";
      render(data);
    }).catch(function (e) {
      var box = document.getElementById("error");
      box.textContent = "cannot refresh: " + e.message;
      box.style.display = "block";
    }).then(function () { setTimeout(refresh, 1000); });
  }
  refresh();
})();
</script>
</body>
</html>
"""
