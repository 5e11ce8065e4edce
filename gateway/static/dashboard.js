// jetgrid dashboard: polls the gateway once a second; no build step, no dependencies.
"use strict";
const hashKey = new URLSearchParams(location.hash.slice(1)).get("key");
if (hashKey) { localStorage.setItem("jetgrid-key", hashKey); history.replaceState(null, "", "/"); }
const key = localStorage.getItem("jetgrid-key");
const headers = key ? { Authorization: "Bearer " + key } : {};
let workersUrl = "/v1/workers";

async function get(url) {
  const r = await fetch(url, { headers });
  if (!r.ok) { const e = new Error(url + ": " + r.status); e.status = r.status; throw e; }
  return r.json();
}
function el(tag, attrs, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
  for (const k of kids) n.append(k === null || k === undefined ? "" : k);
  return n;
}
const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%");
function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  return s < 60 ? s.toFixed(0) + " s ago" : (s / 60).toFixed(0) + " min ago";
}
function tierClass(w) {
  const t = (w.tier || "").toLowerCase();
  if (["gold", "silver", "bronze"].includes(t)) return "tier-" + t;
  const f = w.tier_factor;
  if (f === null || f === undefined) return "tier-none";
  return f >= 1 ? "tier-gold" : f >= 0.5 ? "tier-silver" : f > 0 ? "tier-bronze" : "tier-none";
}
function gpuText(g) {
  const parts = [g.name || "GPU " + g.index];
  if (g.utilization_pct !== null && g.utilization_pct !== undefined) parts.push(g.utilization_pct + "% util");
  if (g.memory_used_mb) parts.push(Math.round(g.memory_used_mb) + "/" + Math.round(g.memory_total_mb) + " MB");
  if (g.temperature_c) parts.push(g.temperature_c + "°C");
  if (g.power_w) parts.push(Math.round(g.power_w) + " W");
  return parts.join(" · ");
}

function renderWorkers(workers, jobs) {
  const box = document.getElementById("workers");
  const running = {};
  for (const j of jobs) if (["claimed", "running"].includes(j.status) && j.worker_id)
    (running[j.worker_id] = running[j.worker_id] || []).push(j.id);
  box.replaceChildren(...workers.map((w) => el("div", { class: "card " + tierClass(w), "data-worker": w.id },
    el("h3", {}, w.id, el("span", { class: "badge " + w.availability }, w.availability)),
    el("div", { class: "kv" },
      el("span", {}, "tier"), el("span", {}, (w.tier || "–") + (w.tier_factor !== null && w.tier_factor !== undefined ? " (×" + w.tier_factor + ")" : "")),
      el("span", {}, "uptime"), el("span", {}, "1h " + pct(w.uptime && w.uptime["1h"]) + " · 24h " + pct(w.uptime && w.uptime["24h"])),
      ...(w.share && w.share.held_back ? [el("span", {}, "held back"), el("span", { class: "held-back" }, w.share.reason || "")] : []),
      el("span", {}, "serves"), el("span", {}, (w.pools || []).join(", ") + " / " + (w.models || []).join(", ")),
      el("span", {}, "backend"), el("span", {}, (w.backend || "?") + " × " + w.concurrency),
      el("span", {}, "in flight"), el("span", {}, String(w.in_flight) + ((running[w.id] || []).length ? " (" + running[w.id].slice(0, 3).join(", ") + ")" : "")),
      el("span", {}, "jobs"), el("span", {}, (w.jobs ? w.jobs.completed : 0) + " done · " + (w.jobs ? w.jobs.failed : 0) + " failed"),
      el("span", {}, "last ping"), el("span", {}, ago(w.last_ping)),
      el("span", {}, "GPU"), el("span", {}, w.nvml && w.gpus && w.gpus.length ? w.gpus.map(gpuText).join("; ") : "none (CPU only)"),
    ))));
  document.getElementById("worker-count").textContent = "(" + workers.filter((w) => w.availability === "online").length + " online of " + workers.length + ")";
}

function heldText(c) {
  // Jobs that wait because every worker of the model is held back by its tier (factor 0).
  const names = c.held_back_workers || [];
  if (!names.length) return "–";
  const n = c.held_back_jobs || 0;
  return n + (n === 1 ? " job waits on " : " jobs wait on ") + names.slice(0, 3).join(", ") + (names.length > 3 ? ", …" : "");
}

function renderPools(pools) {
  const rows = [];
  for (const p of pools) {
    if (!p.consumers.length) rows.push(el("tr", {}, el("td", {}, p.name), el("td", { class: "muted" }, "no consumers yet"), el("td", {}, "0"), el("td", {}), el("td", {}), el("td", {}), el("td", {})));
    for (const c of p.consumers) rows.push(el("tr", {}, el("td", {}, p.name), el("td", {}, c.model), el("td", {}, String(c.backlog)),
      el("td", {}, String(c.ack_pending)), el("td", {}, String(c.waiting_pulls)), el("td", {}, String(c.workers)),
      el("td", { class: c.held_back_jobs ? "held-back" : "" }, heldText(c))));
  }
  document.querySelector("#pools tbody").replaceChildren(...rows);
}

const secs = (v) => (v === null || v === undefined ? "–" : v < 120 ? v.toFixed(1) + " s" : (v / 60).toFixed(1) + " min");

function renderQueue(q) {
  // One row per pool and model (all tenants), then one per tenant with its share of running jobs.
  const rows = [];
  const cells = (r) => [el("td", {}, String(r.queued)), el("td", {}, String(r.running)),
    el("td", {}, secs(r.oldest_wait_s)), el("td", {}, secs(r.wait_p50_s)), el("td", {}, secs(r.wait_p95_s)),
    el("td", {}, r.drain_per_s.toFixed(2) + "/s")];
  for (const r of q.queues) {
    rows.push(el("tr", { class: "total", "data-queue": r.pool + "/" + r.model }, el("td", {}, r.pool), el("td", {}, r.model),
      el("td", { class: "muted" }, "all"), ...cells(r), el("td", {}, "")));
    for (const t of r.tenants) rows.push(el("tr", { "data-queue": r.pool + "/" + r.model + "/" + t.tenant },
      el("td", {}, ""), el("td", {}, ""), el("td", {}, t.tenant), ...cells(t), el("td", { class: "share" }, pct(t.share))));
  }
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "muted", colspan: "10" }, "nothing queued or running")));
  document.querySelector("#queue tbody").replaceChildren(...rows);
  document.getElementById("queue-window").textContent = "(waits and drain over the last " + q.window_s + " s)";
}

function renderStalls(st) {
  // One row per worker with stalls in the window: how many, and its latest stalled job.
  const rows = st.workers.map((w) => {
    const s = w.latest[0];
    return el("tr", { "data-stalls": w.worker_id }, el("td", {}, w.worker_id), el("td", { class: "failed" }, String(w.count)),
      el("td", {}, el("code", {}, s.job_id)), el("td", {}, s.pool || ""), el("td", {}, s.model || ""),
      el("td", {}, new Date(s.time).toLocaleTimeString()), el("td", {}, secs(s.stall_s)));
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "muted", colspan: "7" }, "no stalls")));
  document.querySelector("#stalls tbody").replaceChildren(...rows);
}

function renderJobs(jobs) {
  document.querySelector("#jobs tbody").replaceChildren(...jobs.map((j) => {
    const took = j.finished_at && j.submitted_at ? ((Date.parse(j.finished_at) - Date.parse(j.submitted_at)) / 1000).toFixed(2) + " s" : "";
    return el("tr", { "data-job": j.id }, el("td", {}, el("code", {}, j.id)), el("td", { class: j.status }, j.status),
      el("td", {}, j.model || ""), el("td", {}, j.pool || ""), el("td", {}, j.worker_id || ""),
      el("td", {}, j.submitted_at ? new Date(j.submitted_at).toLocaleTimeString() : ""), el("td", {}, took));
  }));
}

async function workersList() {
  try { return (await get(workersUrl)).workers; }
  catch (e) {
    // 404: an older gateway; 503: no projector database to read. Either way, show the live
    // fleet this gateway folds itself.
    if ((e.status === 404 || e.status === 503) && workersUrl !== "/dashboard/workers") { workersUrl = "/dashboard/workers"; return workersList(); }
    throw e;
  }
}

async function tick() {
  const status = document.getElementById("status");
  try {
    const [workers, pools, jobs, queue, stalls] = await Promise.all([workersList(), get("/v1/pools"), get("/v1/jobs?limit=25"), get("/v1/queue"), get("/v1/stalls")]);
    renderWorkers(workers, jobs.jobs);
    renderPools(pools.pools);
    renderQueue(queue);
    renderStalls(stalls);
    renderJobs(jobs.jobs);
    status.textContent = "live · updated " + new Date().toLocaleTimeString();
  } catch (e) {
    status.textContent = e.status === 401 ? "needs an API key: open /#key=<key>" : "error: " + e.message;
  }
}
tick();
setInterval(tick, 1000);
