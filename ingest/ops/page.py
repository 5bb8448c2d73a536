"""The status page: one self-contained HTML document drawn from `/status.json`.

A Python constant rather than a data file, so it ships in any wheel without packaging
configuration. No CDN, fonts or images: operators often open it where there is no internet.
Text from the database goes in with `textContent`, never as HTML.
"""

from __future__ import annotations

POLL_MS = 3000

STATUS_PAGE = (
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hr-ingest status</title>
<style>
  :root { --fg:#1d2430; --muted:#667085; --line:#e4e7ec; --bg:#f6f7f9; --card:#fff;
          --done:#2f6fdb; --dead:#d92d20; --pending:#f79009; --running:#7a5af8; --ok:#12b76a; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
         color:var(--fg); background:var(--bg); }
  header { display:flex; align-items:baseline; gap:16px; padding:16px 28px;
           background:var(--card); border-bottom:1px solid var(--line); }
  header h1 { font-size:18px; margin:0; }
  header .meta { color:var(--muted); }
  header .live { margin-left:auto; color:var(--muted); }
  .dot { display:inline-block; width:8px; height:8px; border-radius:50%;
         background:var(--ok); margin-right:6px; vertical-align:middle; }
  .dot.stale { background:var(--dead); }
  main { padding:20px 28px 40px; max-width:1280px; }
  .banner { display:none; margin-bottom:16px; padding:10px 14px; border-radius:8px;
            background:#fef3f2; color:#b42318; border:1px solid #fecdca; }
  .cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:12px; }
  .card { background:var(--card); border:1px solid var(--line); border-radius:10px;
          padding:12px 14px; }
  .card .label { color:var(--muted); font-size:12px; text-transform:uppercase;
                 letter-spacing:.04em; }
  .card .value { font-size:26px; font-weight:600; font-variant-numeric:tabular-nums; }
  .card .sub { color:var(--muted); font-size:12px; }
  .card.pending .value { color:var(--pending); } .card.running .value { color:var(--running); }
  .card.done .value { color:var(--done); } .card.dead .value { color:var(--dead); }
  section { background:var(--card); border:1px solid var(--line); border-radius:10px;
            padding:14px 16px; margin-top:16px; }
  section h2 { font-size:14px; margin:0 0 10px; }
  .legend { color:var(--muted); font-size:12px; font-weight:400; margin-left:12px; }
  .swatch { display:inline-block; width:10px; height:10px; border-radius:2px;
            margin:0 4px 0 10px; vertical-align:-1px; }
  svg text { fill:var(--muted); font-size:11px; }
  .grid2 { display:grid; grid-template-columns:2fr 1fr; gap:16px; align-items:start; }
  .grid2 section { margin-top:16px; }
  table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
  th { text-align:left; color:var(--muted); font-weight:500; font-size:12px;
       border-bottom:1px solid var(--line); padding:6px 8px; }
  td { border-bottom:1px solid var(--line); padding:6px 8px; vertical-align:top; }
  td.id { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; font-size:12px;
          white-space:nowrap; }
  td.reason { word-break:break-word; }
  td.num { text-align:right; }
  .empty { color:var(--muted); padding:10px 8px; }
  dl { display:grid; grid-template-columns:auto 1fr; gap:4px 14px; margin:0; }
  dt { color:var(--muted); } dd { margin:0; text-align:right;
                                   font-variant-numeric:tabular-nums; }
  @media (max-width: 900px) { .grid2 { grid-template-columns:1fr; } }
</style>
</head>
<body>
<header>
  <h1>hr-ingest</h1>
  <span class="meta" id="meta">loading&hellip;</span>
  <span class="live"><span class="dot" id="live-dot"></span><span id="updated">&ndash;</span></span>
</header>
<main>
  <div class="banner" id="banner"></div>
  <div class="cards">
    <div class="card pending"><div class="label">Pending</div>
      <div class="value" id="q-pending">&ndash;</div>
      <div class="sub">waiting in the queue</div></div>
    <div class="card running"><div class="label">Running</div>
      <div class="value" id="q-running">&ndash;</div>
      <div class="sub">claimed by a worker</div></div>
    <div class="card done"><div class="label">Done</div>
      <div class="value" id="q-done">&ndash;</div><div class="sub">stored, terminal</div></div>
    <div class="card dead"><div class="label">Dead</div>
      <div class="value" id="q-dead">&ndash;</div><div class="sub">dead letters</div></div>
    <div class="card"><div class="label">Oldest due</div>
      <div class="value" id="oldest-due">&ndash;</div><div class="sub">waiting since due</div></div>
    <div class="card"><div class="label">Done, last hour</div>
      <div class="value" id="done-hour">&ndash;</div>
      <div class="sub" id="done-rate">&ndash;</div></div>
    <div class="card"><div class="label">Last sync</div>
      <div class="value" id="last-sync">&ndash;</div>
      <div class="sub">how stale the tables are</div></div>
    <div class="card"><div class="label">Oldest unfinished</div>
      <div class="value" id="oldest-unfinished">&ndash;</div>
      <div class="sub">run scheduled/running upstream</div></div>
  </div>
  <section>
    <h2>Runs finished per minute, last hour
      <span class="legend"><span class="swatch" style="background:var(--done)"></span>done
      <span class="swatch" style="background:var(--dead)"></span>dead
      (<span id="dead-hour">0</span> in the hour)</span></h2>
    <svg id="chart" width="100%" height="220" role="img"
         aria-label="runs finished per minute over the last hour"></svg>
  </section>
  <div class="grid2">
    <section>
      <h2>Latest dead letters</h2>
      <table><thead><tr><th>time (UTC)</th><th>run id</th><th>HTTP</th><th>attempts</th>
        <th>kind</th><th>reason</th></tr></thead><tbody id="dead-letters"></tbody></table>
      <div class="empty" id="dead-empty">No dead letters.</div>
    </section>
    <div>
      <section>
        <h2>This worker</h2>
        <dl id="worker"></dl>
      </section>
      <section>
        <h2>Dead runs by kind</h2>
        <table><thead><tr><th>kind</th><th class="num">runs</th></tr></thead>
          <tbody id="dead-kinds"></tbody></table>
        <div class="empty" id="dead-kinds-empty">None.</div>
      </section>
      <section>
        <h2>Schema drift <span class="legend" id="drift-at"></span></h2>
        <table><thead><tr><th>kind</th><th class="num">runs</th></tr></thead>
          <tbody id="drift"></tbody></table>
        <div class="empty" id="drift-empty">None seen.</div>
      </section>
    </div>
  </div>
</main>
<script>
"use strict";
const POLL_MS = """
    + str(POLL_MS)
    + """;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const fmt = (n) => Number(n).toLocaleString("en-US");
let lastOk = 0;

function age(s) {
  if (s === null || s === undefined) return "\\u2013";
  s = Math.round(s);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}
function utc(iso) { return new Date(iso).toISOString().slice(0, 19).replace("T", " "); }
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}

function drawChart(done, dead) {
  const box = $("chart"), W = box.clientWidth || 800, H = 220;
  const left = 44, right = 8, top = 10, bottom = 24, n = done.length;
  const max = Math.max(1, ...done.map((d, i) => d + dead[i]));
  // Whole-number gridlines at 1, 2 or 5 times a power of ten, about four of them.
  const raw = max / 4, p10 = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = Math.max(1, [1, 2, 5, 10].map((m) => m * p10).find((s) => s >= raw));
  const ymax = Math.ceil(max / step) * step;
  const pw = W - left - right, ph = H - top - bottom, bw = pw / n;
  box.replaceChildren();
  for (let v = 0; v <= ymax; v += step) {
    const y = top + ph - ph * v / ymax;
    box.append(svg("line", {x1: left, x2: W - right, y1: y, y2: y, stroke: "#e4e7ec"}));
    box.append(svg("text", {x: left - 6, y: y + 4, "text-anchor": "end"}, fmt(v)));
  }
  // Index 0 is the last minute: draw it at the right edge.
  for (let i = 0; i < n; i++) {
    const x = left + pw - (i + 1) * bw + 1, w = Math.max(1, bw - 2);
    const hd = ph * done[i] / ymax, hx = ph * dead[i] / ymax;
    const g = svg("g", {"data-minute": i, "data-done": done[i], "data-dead": dead[i]});
    g.append(svg("title", {}, (i === 0 ? "last minute" : i + "\\u2013" + (i + 1) + " min ago")
      + ": " + done[i] + " done, " + dead[i] + " dead"));
    g.append(svg("rect", {x, y: top + ph - hd, width: w, height: hd, fill: "#2f6fdb", rx: 1}));
    g.append(svg("rect", {x, y: top + ph - hd - hx, width: w, height: hx, fill: "#d92d20"}));
    box.append(g);
  }
  for (const m of [60, 45, 30, 15, 0]) {
    const x = left + pw - m * bw;
    box.append(svg("text", {x, y: H - 6, "text-anchor": m === 60 ? "start" : m ? "middle" : "end"},
      m ? "-" + m + " min" : "now"));
  }
}

// A two-column table of (name, count) rows; `key` goes in data-kind, for tests and styles.
function fillCounts(id, entries) {
  const rows = entries.map(([name, n, key]) => {
    const tr = el("tr");
    tr.dataset.kind = key;
    tr.append(el("td", name), el("td", fmt(n), "num"));
    return tr;
  });
  $(id).replaceChildren(...rows);
  $(id + "-empty").style.display = rows.length ? "none" : "block";
}

function render(doc) {
  const meta = ["schema " + (doc.schema || "?"), "v" + doc.version];
  if (doc.worker) meta.push("worker " + doc.worker.id);
  $("meta").textContent = meta.join(" \\u00b7 ");
  const problems = [];
  if (doc.snapshot_error) problems.push("Reading the database failed: " + doc.snapshot_error);
  if (doc.worker && doc.worker.fatal) problems.push("Worker stopped: " + doc.worker.fatal);
  const s = doc.snapshot;
  if (s && s.paused) {
    problems.push("Paused since " + s.paused.since + (s.paused.by ? " by " + s.paused.by : "") +
      (s.paused.reason ? " (" + s.paused.reason + ")" : "") +
      ": workers claim nothing until `hr-ingest resume`");
  }
  if (s && s.freshness.sync_failures > 0) {
    problems.push(s.freshness.sync_failures + " sync(s) failed in a row: " +
      (s.freshness.sync_error || "no reason kept"));
  }
  $("banner").textContent = problems.join(" \\u2014 ");
  $("banner").style.display = problems.length ? "block" : "none";
  if (s) {
    const f = s.freshness;
    $("last-sync").textContent = f.last_sync_age_s === null ? "never" : age(f.last_sync_age_s);
    $("oldest-unfinished").textContent =
      f.oldest_non_terminal_age_s === null ? "none" : age(f.oldest_non_terminal_age_s);
    for (const st of ["pending", "running", "done", "dead"]) {
      $("q-" + st).textContent = fmt(s.counts[st] || 0);
    }
    $("oldest-due").textContent = s.oldest_due_age_s === null ? "none" : age(s.oldest_due_age_s);
    $("done-hour").textContent = fmt(s.done_last_hour);
    $("done-rate").textContent = (s.done_last_hour / 60).toFixed(1) + " runs/min average";
    $("dead-hour").textContent = fmt(s.dead_last_hour);
    drawChart(s.done_per_minute, s.dead_per_minute);
    const rows = s.dead_letters.map((d) => {
      const tr = el("tr");
      tr.dataset.runId = d.run_id;
      tr.append(el("td", utc(d.at), "id"), el("td", d.run_id, "id"),
        el("td", d.http_status === null ? "\\u2013" : String(d.http_status), "num"),
        el("td", String(d.attempts), "num"), el("td", d.kind, "id"),
        el("td", d.reason, "reason"));
      return tr;
    });
    $("dead-letters").replaceChildren(...rows);
    $("dead-empty").style.display = rows.length ? "none" : "block";
    fillCounts("dead-kinds", s.dead_by_kind.map((d) => [d.phrase, d.runs, d.kind]));
    fillCounts("drift", s.drift.map((d) => [d.kind, d.runs, d.kind]));
  }
  const w = doc.worker, dl = $("worker");
  dl.replaceChildren();
  const item = (k, v) => dl.append(el("dt", k), el("dd", v));
  if (!w) item("worker", "none in this process");
  else {
    item("runs done", fmt(w.done));
    item("to poll again", fmt(w.polled));
    item("retried", fmt(w.retried));
    item("dead-lettered", fmt(w.dead));
    item("rows written", fmt(w.rows));
    item("batches", fmt(w.batches));
    item("runs/s", (w.elapsed_s > 0 ? w.done / w.elapsed_s : 0).toFixed(1));
    item("rate-limiter wait", w.limiter_wait_s.toFixed(1) + " s");
    for (const [code, n] of Object.entries(w.http)) item("HTTP " + code, fmt(n));
    for (const f of w.failures_by_kind) item("failed: " + f.phrase, fmt(f.attempts));
  }
  document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
}

async function poll() {
  try {
    const r = await fetch("status.json", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    lastOk = Date.now();
  } catch (e) {
    $("banner").textContent = "Cannot reach the worker: " + e.message;
    $("banner").style.display = "block";
  }
  const stale = Date.now() - lastOk > 3 * POLL_MS;
  $("live-dot").className = stale ? "dot stale" : "dot";
  if (lastOk) $("updated").textContent = "updated " + new Date(lastOk).toLocaleTimeString();
}
poll();
setInterval(poll, POLL_MS);
</script>
</body>
</html>
"""
)
