// batchain dashboard: polls the store's JSON API and draws it. Every value from the store is
// put in the page as text (textContent), never parsed as HTML; chart labels are escaped.
"use strict";

const REFRESH_MS = 2000;
const $ = (id) => document.getElementById(id);

// -- building the page ----------------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function td(text, cls) {
  return el("td", { class: cls, text: text === null || text === undefined ? "–" : String(text) });
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// plotly reads a few HTML-like tags in labels: a label from the store is shown as written
function plotText(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

// -- formatting -----------------------------------------------------------------------------

const int = new Intl.NumberFormat("en-US");

function num(n) {
  return n === null || n === undefined ? "–" : int.format(n);
}

function usd(v) {
  if (v === null || v === undefined || v === "") return "–";
  const x = Number(v);
  if (x === 0) return "$0";
  if (Math.abs(x) >= 1) return "$" + x.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  return "$" + x.toPrecision(3).replace(/0+$/, "").replace(/\.$/, "");
}

function pad(n) {
  return String(n).padStart(2, "0");
}

function when(ts) {
  if (!ts) return "–";
  const d = new Date(ts * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function inTime(ts, now) {
  const left = Math.max(0, ts - now);
  if (left < 5) return "any moment now";
  if (left < 60) return `in ${Math.round(left)} s`;
  if (left < 3600) return `in ${Math.round(left / 60)} min`;
  return `in ${(left / 3600).toFixed(1)} h`;
}

function finishText(job, now) {
  if (job.finished_at) return when(job.finished_at);
  if (job.eta) return `ETA ${when(job.eta)} (${inTime(job.eta, now)})`;
  return job.status === "running" ? "ETA unknown" : "–";
}

function costText(job) {
  const paid = job.cost_state === "computing" ? "…" : usd(job.paid);
  return job.budget !== null && job.budget !== undefined ? `${paid} of ${usd(job.budget)}` : paid;
}

// -- shared parts ---------------------------------------------------------------------------

function badge(status) {
  return el("span", { class: "badge", text: status, dataset: { status } });
}

function progressBar(counts) {
  const total = counts.total || 0;
  const pct = (n) => (total ? `${(100 * n) / total}%` : "0");
  const bar = el(
    "div",
    { class: "bar", title: `${num(counts.succeeded)} succeeded, ${num(counts.failed)} failed, ${num(counts.cancelled)} cancelled, ${num(counts.pending)} pending` },
    el("span", { class: "ok", style: `width:${pct(counts.succeeded)}` }),
    el("span", { class: "bad", style: `width:${pct(counts.failed)}` }),
    el("span", { class: "off", style: `width:${pct(counts.cancelled)}` }),
  );
  const done = total - counts.pending;
  return el("div", {}, bar, el("div", { class: "bar-text", text: `${num(done)} / ${num(total)} done` }));
}

function card(label, value, detail) {
  return el(
    "div",
    { class: "card", dataset: { card: label } },
    el("div", { class: "label", text: label }),
    el("div", { class: "value", text: value }),
    detail ? el("div", { class: "detail", text: detail }) : null,
  );
}

let live = { ok: true };

function setLive(ok, text) {
  const node = $("live");
  node.dataset.state = ok ? "ok" : "lost";
  node.textContent = text;
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  const data = await response.json();
  if (!response.ok) {
    const err = new Error(data.error || response.statusText);
    err.status = response.status;
    throw err;
  }
  return data;
}

// -- all jobs -------------------------------------------------------------------------------

const jobRows = new Map(); // job id -> {sig, row}

function jobRow(job, now) {
  const link = el("a", { href: `#/job/${encodeURIComponent(job.id)}`, text: job.id });
  return el(
    "tr",
    { class: "job", dataset: { job: job.id, status: job.status } },
    el("td", { class: "mono" }, link),
    el("td", {}, badge(job.status)),
    td(job.mode),
    el("td", {}, progressBar(job.counts)),
    td(num(job.counts.failed), "num"),
    td(num(job.counts.pending), "num"),
    td(costText(job), "num"),
    td(job.cost_state === "computing" ? "…" : usd(job.savings), "num"),
    td(when(job.created_at)),
    td(finishText(job, now)),
  );
}

function drawJobs(data) {
  $("store").textContent = data.store;
  const rows = [];
  const seen = new Set();
  for (const job of data.jobs) {
    const sig = JSON.stringify(job);
    let entry = jobRows.get(job.id);
    if (!entry || entry.sig !== sig || job.eta) entry = { sig, row: jobRow(job, data.now) };
    jobRows.set(job.id, entry);
    seen.add(job.id);
    rows.push(entry.row);
  }
  for (const id of [...jobRows.keys()]) if (!seen.has(id)) jobRows.delete(id);
  replaceRows($("jobs"), rows);
  $("no-jobs").hidden = data.jobs.length > 0;
  $("jobs-table").hidden = data.jobs.length === 0;

  const by = {};
  let paid = 0, saved = 0, items = 0;
  for (const job of data.jobs) {
    by[job.status] = (by[job.status] || 0) + 1;
    paid += Number(job.paid || 0);
    saved += Number(job.savings || 0);
    items += job.counts.total;
  }
  const statuses = Object.entries(by).map(([s, n]) => `${num(n)} ${s}`).join(", ");
  replaceRows($("totals"), [
    card("jobs", num(data.jobs.length), statuses || null),
    card("items", num(items)),
    card("paid", usd(paid)),
    card("saved", usd(saved), "against realtime list prices"),
  ]);
}

// -- one job --------------------------------------------------------------------------------

const LAYOUT = {
  margin: { l: 64, r: 16, t: 48, b: 48 },
  paper_bgcolor: "#fff",
  plot_bgcolor: "#fff",
  font: { size: 11 },
  legend: { orientation: "h", x: 1, xanchor: "right", y: 1.18 },
  xaxis: { type: "date", gridcolor: "#eef0f2" },
  yaxis: { rangemode: "tozero", gridcolor: "#eef0f2" },
};
const CONFIG = { displaylogo: false, displayModeBar: false, responsive: true };

function drawChart(id, title, traces, yaxis) {
  const layout = { ...LAYOUT, title: { text: title, font: { size: 13 }, x: 0.01, xanchor: "left" }, yaxis: { ...LAYOUT.yaxis, ...yaxis } };
  if (window.Plotly) window.Plotly.react($(id), traces, layout, CONFIG);
}

function drawHistory(data) {
  const points = data.history;
  const none = points.length === 0;
  $("no-history").hidden = !none;
  $("no-history").textContent = none ? "No progress over time was recorded for this job (it ran under an earlier batchain)." : "";
  for (const id of ["chart-items", "chart-calls", "chart-cost"]) $(id).hidden = none;
  if (none) return;
  const t = points.map((p) => new Date(p[0] * 1000));
  const step = { shape: "hv", width: 2 };
  drawChart("chart-items", "Items", [
    { x: t, y: points.map((p) => p[1]), name: "done", mode: "lines", line: { ...step, color: "#1a7f37" } },
    { x: t, y: points.map((p) => p[2]), name: "failed", mode: "lines", line: { ...step, color: "#cf222e" } },
    { x: t, y: points.map((p) => p[3]), name: "total", mode: "lines", line: { ...step, color: "#6e7781", dash: "dot" } },
  ], { title: { text: "items" } });
  drawChart("chart-calls", "Calls paid", [
    { x: t, y: points.map((p) => p[4]), name: "calls paid", mode: "lines", line: { ...step, color: "#0969da" } },
  ], { title: { text: "calls" } });
  const traces = [{ x: t, y: points.map((p) => p[5]), name: "paid (USD)", mode: "lines", line: { ...step, color: "#8250df" } }];
  if (data.job.budget !== null && data.job.budget !== undefined) {
    traces.push({ x: [t[0], t[t.length - 1]], y: [data.job.budget, data.job.budget], name: "budget", mode: "lines", line: { color: "#cf222e", dash: "dash", width: 1 } });
  }
  drawChart("chart-cost", "Cost", traces, { title: { text: "USD" }, tickprefix: "$", tickformat: ".2~r" });
}

function drawReport(data) {
  const report = data.report;
  const state = $("report-state");
  const cost = report && report.cost;
  if (!report || !cost || cost.error || report.error) {
    state.hidden = false;
    state.textContent = !report ? "Computing the cost report…" : `The cost report failed: ${(cost && cost.error) || report.error}`;
    replaceRows($("lines"), []);
    $("call-sources").textContent = "";
    return;
  }
  state.hidden = true;
  replaceRows($("lines"), cost.lines.map((line) => el(
    "tr",
    { dataset: { model: line.model } },
    td(line.provider),
    td(line.model, "mono"),
    td(line.tier),
    td(num(line.calls), "num"),
    td(num(line.usage.input_tokens), "num"),
    td(num(line.usage.output_tokens), "num"),
    td(line.cost.known ? usd(line.cost.total) : "unknown", "num"),
    td(line.list_cost.known ? usd(line.list_cost.total) : "unknown", "num"),
    td(usd(line.savings), "num"),
  )));
  const calls = report.calls || {};
  const parts = Object.entries(calls).map(([source, n]) => `${num(n)} ${source}`);
  $("call-sources").textContent = parts.length ? `Distinct calls by how the job got them: ${parts.join(", ")}.` : "";
}

function drawBatches(data) {
  const batches = data.batches;
  $("no-batches").hidden = batches.length > 0;
  $("batches-table").hidden = batches.length === 0;
  replaceRows($("batches"), batches.map((b) => el(
    "tr",
    { dataset: { batch: b.id, status: b.status } },
    td(b.round === null || b.round === undefined ? "–" : num(b.round), "num"),
    td(b.provider_batch_id || b.id, "mono"),
    td(b.provider),
    el("td", {}, badge(b.label)),
    td(num(b.calls), "num"),
    td(b.total ? `${num(b.done)} / ${num(b.total)}` : "–", "num"),
    td(when(b.created_at)),
    td(when(b.updated_at)),
  )));
}

function drawErrors(data) {
  $("no-errors").hidden = data.errors.length > 0;
  $("errors-table").hidden = data.errors.length === 0;
  replaceRows($("errors"), data.errors.map((e) => el(
    "tr",
    {},
    td(num(e.count), "num"),
    td(e.error, "error"),
    td(e.examples.map((i) => `#${i}`).join(", "), "mono"),
  )));
}

function drawJob(data) {
  const job = data.job;
  document.title = `${job.id} · batchain`;
  $("job-id").textContent = job.id;
  const status = $("job-status");
  status.textContent = job.status;
  status.dataset.status = job.status;
  $("job-sub").textContent = `${job.mode} mode` + (job.chain ? ` · chain ${job.chain}` : "") + ` · started ${when(job.created_at)}`;
  $("job-note").hidden = !job.note;
  $("job-note").textContent = job.note || "";
  const c = job.counts;
  const total = `${num(c.total)}${job.inputs_complete ? "" : "+"}`;
  replaceRows($("job-cards"), [
    card("items done", `${num(c.total - c.pending)} / ${total}`, `${num(c.succeeded)} succeeded`),
    card("failed", num(c.failed), c.cancelled ? `${num(c.cancelled)} cancelled` : null),
    card("pending", num(c.pending)),
    card("cost", costText(job), job.cost_complete === false ? "some prices unknown" : null),
    card("savings", usd(job.savings), job.list_price ? `list price ${usd(job.list_price)}` : null),
    card(job.finished_at ? "finished" : "finish", finishText(job, data.now)),
  ]);
  const base = `/api/jobs/${encodeURIComponent(job.id)}/results`;
  $("dl-jsonl").href = `${base}.jsonl`;
  $("dl-csv").href = `${base}.csv`;
  drawHistory(data);
  drawReport(data);
  drawBatches(data);
  drawErrors(data);
  replaceRows($("last-run"), Object.entries(data.last_run).map(([k, v]) => el("tr", {}, td(k), td(num(v), "num"))));
}

// -- the loop -------------------------------------------------------------------------------

function route() {
  const m = location.hash.match(/^#\/job\/(.+)$/);
  return m ? { view: "job", id: decodeURIComponent(m[1]) } : { view: "jobs" };
}

function show(view) {
  for (const name of ["jobs", "job", "missing"]) $(`view-${name}`).hidden = name !== view;
}

let timer = null;
let generation = 0;

async function refresh() {
  const mine = ++generation;
  const where = route();
  try {
    if (where.view === "job") {
      const data = await getJSON(`/api/jobs/${encodeURIComponent(where.id)}`);
      if (mine !== generation) return;
      show("job");
      drawJob(data);
    } else {
      const data = await getJSON("/api/jobs");
      if (mine !== generation) return;
      show("jobs");
      document.title = "batchain dashboard";
      drawJobs(data);
    }
    setLive(true, `live · updated ${when(Date.now() / 1000).slice(11)}`);
  } catch (err) {
    if (mine !== generation) return;
    if (err.status === 404) {
      show("missing");
      $("missing-text").textContent = err.message;
      setLive(true, "live");
    } else {
      setLive(false, "connection to the dashboard lost: retrying…");
    }
  }
  clearTimeout(timer);
  timer = setTimeout(refresh, REFRESH_MS);
}

window.addEventListener("hashchange", () => {
  clearTimeout(timer);
  refresh();
});
refresh();
