// Prism's live dashboard: candlesticks coloured by layer with the horizons marked, consumer lag,
// views, replays, access logs and table changes. Live through server-sent events; no build step.
"use strict";

const LAYER_COLORS = { batch: "#4a6fa5", segment: "#4a6fa5", realtime: "#e07b39", both: "#8a5fbf" };
const DAY_MS = 86400000;

// What the page shows, for people and for the headless-browser test.
const state = { bars: 0, layers: [], symbol: null, interval: "1d", horizon: null, watermark: null, statusEvents: 0, lagRows: 0, errors: [] };
window.prismDashboard = state;

const $ = (id) => document.getElementById(id);
const text = (v) => (v === null || v === undefined ? "—" : String(v));

function row(cells, layer) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    td.textContent = text(c);
    tr.appendChild(td);
  }
  if (layer) tr.lastChild.className = "layer-" + (layer === "segment" ? "batch" : layer);
  return tr;
}

function fill(tableId, rows) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren(...rows);
  return rows.length;
}

const chart = LightweightCharts.createChart($("chart"), {
  layout: { background: { color: "#ffffff" }, textColor: "#1d2330" },
  timeScale: { timeVisible: true, secondsVisible: false },
  rightPriceScale: { borderVisible: false },
  autoSize: true,
});
const candles = chart.addCandlestickSeries({ priceLineVisible: false });

const seconds = (rfc3339) => Math.floor(Date.parse(rfc3339) / 1000);

// The first bar starting at or after `instant` (a marker needs a bar's time).
function barAtOrAfter(bars, instant) {
  if (!instant) return null;
  const t = seconds(instant);
  return bars.find((b) => seconds(b.start) >= t) || null;
}

function showBars(answer) {
  const bars = answer.bars;
  candles.setData(
    bars.map((b) => {
      const color = LAYER_COLORS[b.layer] || "#888";
      return { time: seconds(b.start), open: +b.open, high: +b.high, low: +b.low, close: +b.close, color, wickColor: color, borderColor: color };
    }),
  );
  const horizon = answer.segment_horizon;
  const markers = [];
  const h = barAtOrAfter(bars, horizon);
  if (h) markers.push({ time: seconds(h.start), position: "aboveBar", color: "#1d2330", shape: "arrowDown", text: "horizon" });
  const w = barAtOrAfter(bars, answer.realtime_watermark);
  if (w) markers.push({ time: seconds(w.start), position: "belowBar", color: "#c0392b", shape: "arrowUp", text: "watermark" });
  markers.sort((a, b) => a.time - b.time);
  candles.setMarkers(markers);
  if (state.bars === 0 && bars.length > 0) chart.timeScale().fitContent();
  state.bars = bars.length;
  state.layers = [...new Set(bars.map((b) => b.layer))].sort();
  state.horizon = horizon;
  state.watermark = answer.realtime_watermark;
  $("horizons").textContent =
    `${answer.symbol} · ${bars.length} bars · ${answer.architecture === "kappa" ? "segment" : "batch"} horizon ${text(horizon)} · realtime watermark ${text(answer.realtime_watermark)}` +
    (answer.next_from ? " · more after " + answer.next_from : "");
}

let barsSource = null;
function followBars() {
  const symbol = $("symbol").value;
  const interval = $("interval").value;
  if (!symbol) return;
  if (barsSource) barsSource.close();
  state.symbol = symbol;
  state.interval = interval;
  state.bars = 0;
  barsSource = new EventSource(`/v1/bars/${encodeURIComponent(symbol)}/stream?interval=${interval}&limit=5000`);
  barsSource.addEventListener("bars", (e) => showBars(JSON.parse(e.data)));
  barsSource.addEventListener("error", (e) => {
    if (e.data) state.errors.push(e.data);
    $("connection").textContent = e.data ? "error: " + e.data : "reconnecting…";
  });
  barsSource.onopen = () => ($("connection").textContent = "live");
}

async function getJson(path) {
  const r = await fetch(path);
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    throw new Error(`${r.status} ${body.error || ""}`);
  }
  return r.json();
}

let latestStatus = null;
function showStatus(status) {
  latestStatus = status;
  state.statusEvents += 1;
  $("architecture").textContent = status.architecture;
  const lagRows = [];
  for (const p of status.partitions) {
    if (p.consumers.length === 0) lagRows.push(row([p.topic, p.partition, p.log_end_offset, "—", p.log_end_offset]));
    for (const c of p.consumers) lagRows.push(row([p.topic, p.partition, p.log_end_offset, c.consumer, c.lag]));
  }
  state.lagRows = fill("lag", lagRows);
  fill("views", status.views.map((v) => row([v.view, v.realtime_version, v.realtime_watermark, v.segment_horizon])));
  fill(
    "replays",
    (status.replays || []).map((r) => row([r.id, r.state, r.events_total ? `${Math.round((100 * r.events_done) / r.events_total)} %` : "—"])),
  );
}

function followStatus() {
  const source = new EventSource("/v1/status/stream");
  source.addEventListener("status", (e) => showStatus(JSON.parse(e.data)));
}

// The last day before a view's watermark, per hour.
function lastDay(view) {
  const v = latestStatus && latestStatus.views.find((x) => x.view === view || x.view.startsWith(view));
  if (!v || !v.realtime_watermark) return null;
  return new Date(Date.parse(v.realtime_watermark) - DAY_MS).toISOString().replace(/\.\d+Z$/, "Z");
}

async function refreshTables() {
  if (!latestStatus) return;
  const names = latestStatus.views.map((v) => v.view);
  if (names.includes("access")) {
    const from = lastDay("access");
    try {
      const a = await getJson(`/v1/access?interval=1h${from ? "&from=" + from : ""}&limit=48`);
      fill("access", a.buckets.map((b) => row([b.start, b.requests, b.bytes, b.p50_ms, b.p99_ms, b.layer], b.layer)));
    } catch (e) {
      fill("access", [row([e.message, "", "", "", "", ""])]);
    }
  } else {
    fill("access", [row(["the access view is not registered (prism up --tail …)", "", "", "", "", ""])]);
  }
  const changeRows = [];
  for (const view of names.filter((n) => n.startsWith("changes."))) {
    const table = view.split(".").slice(2).join(".");
    const from = lastDay(view);
    try {
      const c = await getJson(`/v1/changes/${table}?interval=1h${from ? "&from=" + from : ""}&limit=48`);
      for (const b of c.buckets) changeRows.push(row([table, b.start, b.by_op.c || 0, b.by_op.u || 0, b.by_op.d || 0, b.by_op.r || 0, b.layer], b.layer));
    } catch (e) {
      changeRows.push(row([table, e.message, "", "", "", "", ""]));
    }
  }
  if (changeRows.length === 0) changeRows.push(row(["no changes view is registered (prism up --cdc-database-url …)", "", "", "", "", "", ""]));
  fill("changes", changeRows);
}

// The symbols with bars; asked again every 2 s until there are some.
async function loadSymbols() {
  try {
    const symbols = (await getJson("/v1/symbols")).symbols;
    if (symbols.length === 0) {
      $("connection").textContent = "no bars yet";
      setTimeout(loadSymbols, 2000);
      return;
    }
    $("symbol").replaceChildren(...symbols.map((s) => new Option(s, s)));
    followBars();
  } catch (e) {
    state.errors.push(e.message);
    $("connection").textContent = "no symbols: " + e.message;
    setTimeout(loadSymbols, 2000);
  }
}

async function start() {
  $("interval").addEventListener("change", followBars);
  $("symbol").addEventListener("change", followBars);
  followStatus();
  await loadSymbols();
  refreshTables();
  setInterval(refreshTables, 5000);
}

start();
