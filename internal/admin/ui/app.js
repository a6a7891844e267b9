// flowedge status page. Reads the admin API with the admin token kept in
// this tab's sessionStorage (sent as "Authorization: Bearer …"); builds
// every element with textContent, never HTML from data.
"use strict";

const TOKEN_KEY = "flowedge.adminToken";
const REFRESH_MS = 2000;
let chartURL = null;
let deadShown = null; // ids of the dead letters on screen, to keep buttons stable

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

async function api(method, path) {
  const headers = {};
  if (token()) headers["Authorization"] = "Bearer " + token();
  const resp = await fetch(path, { method, headers, cache: "no-store" });
  if (resp.status === 401) {
    throw new Error("the admin token is missing or wrong: enter it above");
  }
  if (!resp.ok && resp.status !== 404) {
    let detail = resp.statusText;
    try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(method + " " + path + ": " + resp.status + " " + detail);
  }
  return resp;
}

function say(text, isError) {
  const m = document.getElementById("message");
  m.textContent = text;
  m.className = isError ? "error" : "";
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function age(seconds) {
  if (!seconds) return "-";
  if (seconds < 60) return seconds.toFixed(1) + " s";
  if (seconds < 3600) return (seconds / 60).toFixed(1) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

async function refreshPartitions() {
  const parts = (await (await api("GET", "/edge/v1/partitions")).json()).partitions || [];
  const hist = await (await api("GET", "/edge/v1/history")).json();
  const samples = hist.samples || [];
  const last = samples.length ? samples[samples.length - 1].partitions : [];
  const body = document.querySelector("#partitions tbody");
  body.replaceChildren();
  for (const p of parts) {
    const tr = document.createElement("tr");
    tr.dataset.partition = p.partition;
    cell(tr, String(p.partition), "num");
    cell(tr, p.backend, "mono");
    if (p.misconfigured) cell(tr, "misconfigured", "bad").title = "the backend claims " + (p.claim || "another partition");
    else cell(tr, p.ready ? "ready" : "not ready", p.ready ? "ok" : "bad");
    cell(tr, p.breaker, p.breaker === "closed" ? "ok" : "bad");
    cell(tr, String(p.queued), "num");
    cell(tr, String(p.in_flight), "num");
    cell(tr, String(p.dead_letters ?? "-"), "num");
    cell(tr, age(p.oldest_age_seconds), "num");
    const rate = last[p.partition] ? last[p.partition].delivered_per_second : 0;
    cell(tr, rate.toFixed(1), "num");
    body.appendChild(tr);
  }
  const blob = await (await api("GET", "/edge/v1/history.svg")).blob();
  if (chartURL) URL.revokeObjectURL(chartURL);
  chartURL = URL.createObjectURL(blob);
  document.getElementById("chart").src = chartURL;
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

async function refreshDeadLetters() {
  const list = (await (await api("GET", "/edge/v1/dead-letters?limit=100")).json()).dead_letters || [];
  const ids = list.map((d) => d.id).join(",");
  document.getElementById("dead-empty").hidden = list.length > 0;
  if (ids === deadShown) return;
  deadShown = ids;
  const body = document.querySelector("#dead-letters tbody");
  body.replaceChildren();
  for (const d of list) {
    const tr = document.createElement("tr");
    tr.dataset.id = d.id;
    cell(tr, d.id, "mono");
    cell(tr, String(d.partition), "num");
    cell(tr, d.key, "mono");
    cell(tr, (d.method || "") + " " + (d.path || ""), "mono");
    cell(tr, String(d.attempts), "num");
    cell(tr, (d.response_status ? d.response_status + " " : "") + (d.reason || "") + (d.parked ? " (key parked)" : ""));
    cell(tr, d.finished_at ? new Date(d.finished_at).toLocaleString() : "-");
    const td = cell(tr, "");
    const replay = document.createElement("button");
    replay.textContent = "Replay";
    replay.className = "replay";
    replay.addEventListener("click", () => act("POST", d.id, "/replay", "replayed"));
    const discard = document.createElement("button");
    discard.textContent = "Discard";
    discard.className = "discard";
    discard.addEventListener("click", () => {
      if (discard.dataset.armed) return act("DELETE", d.id, "", "discarded");
      discard.dataset.armed = "1";
      discard.textContent = "Discard: sure?";
    });
    td.append(replay, " ", discard);
    body.appendChild(tr);
  }
}

async function act(method, id, suffix, done) {
  try {
    const resp = await api(method, "/edge/v1/dead-letters/" + encodeURIComponent(id) + suffix);
    if (resp.status === 404) throw new Error("no dead letter " + id + " (already replayed or discarded?)");
    say("dead letter " + id + " " + done);
    await refreshDeadLetters();
  } catch (e) {
    say(e.message, true);
  }
}

async function lookup(ev) {
  ev.preventDefault();
  const id = document.getElementById("lookup-id").value.trim();
  const out = document.getElementById("lookup-result");
  if (!id) return;
  try {
    const resp = await api("GET", "/edge/v1/deliveries/" + encodeURIComponent(id));
    out.textContent = JSON.stringify(await resp.json(), null, 2);
  } catch (e) {
    out.textContent = e.message;
  }
}

async function refresh() {
  try {
    await refreshPartitions();
    await refreshDeadLetters();
    const m = document.getElementById("message");
    if (m.className === "error") say("");
  } catch (e) {
    say(e.message, true);
  }
}

async function version() {
  try {
    const h = await (await fetch("/health/health", { cache: "no-store" })).json();
    document.getElementById("version").textContent = (h.version || "") + " · " + (h.status || "");
  } catch (e) { /* shown on the next refresh */ }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("token").value = token();
  document.getElementById("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
    refresh();
  });
  document.getElementById("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    document.getElementById("token").value = "";
    refresh();
  });
  document.getElementById("lookup-form").addEventListener("submit", lookup);
  refresh();
  version();
  setInterval(() => { refresh(); version(); }, REFRESH_MS);
});
