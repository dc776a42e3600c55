// factmatch console: keyboard-first queue and item pages, live over server-sent events.
// Served from /static under a CSP that allows no inline script; every text is set with
// textContent, never innerHTML, except the server-rendered (escaped) queue rows.
"use strict";

const csrf = () => (document.querySelector('meta[name="csrf"]') || {}).content || "";
const page = () => document.body.dataset.page;

async function post(url, fields) {
  const body = new URLSearchParams(fields);
  const response = await fetch(url, {
    method: "POST",
    body,
    headers: { "X-CSRF-Token": csrf() },
    credentials: "same-origin",
  });
  let data = {};
  try { data = await response.json(); } catch (e) { data = {}; }
  return { ok: response.ok, status: response.status, data };
}

function setStatus(text) {
  const el = document.getElementById("status");
  if (el) el.textContent = text;
}

function toggleHelp(show) {
  const help = document.getElementById("help");
  if (help) help.hidden = show === undefined ? !help.hidden : !show;
}

// --- queue -------------------------------------------------------------------------------
function rows() { return Array.from(document.querySelectorAll("#rows li.row")); }
let selectedRow = 0;

function selectRow(i) {
  const all = rows();
  if (!all.length) return;
  selectedRow = Math.max(0, Math.min(all.length - 1, i));
  all.forEach((r, j) => r.classList.toggle("selected", j === selectedRow));
  all[selectedRow].scrollIntoView({ block: "nearest" });
}

async function refreshRows() {
  const section = document.getElementById("rows");
  if (!section) return;
  const query = section.dataset.query ? "?" + section.dataset.query : "";
  const response = await fetch("/queue/rows" + query, { credentials: "same-origin" });
  if (!response.ok) return;
  section.innerHTML = await response.text(); // server-rendered, autoescaped
  selectRow(selectedRow);
}

function setDepth(n) {
  const badge = document.getElementById("depth");
  if (badge) badge.textContent = String(n);
}

function listen() {
  if (!window.EventSource) return;
  const events = new EventSource("/events");
  events.addEventListener("depth", (e) => setDepth(e.data));
  events.addEventListener("changed", (e) => {
    const change = JSON.parse(e.data);
    setDepth(change.depth);
    if (page() === "queue") refreshRows();
  });
}

// --- item --------------------------------------------------------------------------------
function matches() { return Array.from(document.querySelectorAll("li.match")); }
let selectedMatch = 0;

function selectMatch(i) {
  const all = matches();
  if (!all.length) return;
  selectedMatch = Math.max(0, Math.min(all.length - 1, i));
  all.forEach((m, j) => m.classList.toggle("selected", j === selectedMatch));
}

let undoTimer = null;

async function judge(verdict, factCheckId) {
  const item = document.getElementById("item");
  const fields = { verdict, note: document.getElementById("note").value };
  if (factCheckId) fields.fact_check_id = factCheckId;
  const answer = await post("/items/" + encodeURIComponent(item.dataset.post) + "/verdicts", fields);
  if (!answer.ok) { setStatus("not recorded: " + (answer.data.error || answer.status)); return; }
  for (const p of answer.data.pending) {
    const li = document.querySelector('li.match[data-fact-check="' + CSS.escape(p.fact_check_id) + '"]');
    if (li) li.querySelector(".state").textContent = p.verdict + "ed";
  }
  const undo = document.getElementById("undo");
  undo.disabled = false;
  clearTimeout(undoTimer);
  undoTimer = setTimeout(() => { undo.disabled = true; }, Number(item.dataset.undo) * 1000);
  setStatus(answer.data.done ? "done: sent after " + item.dataset.undo + " s unless undone" : "recorded");
}

async function undo() {
  const item = document.getElementById("item");
  const answer = await post("/items/" + encodeURIComponent(item.dataset.post) + "/undo", {});
  if (answer.ok && answer.data.undone) {
    matches().forEach((m) => { m.querySelector(".state").textContent = ""; });
    document.getElementById("undo").disabled = true;
    setStatus("undone (" + answer.data.undone + ")");
  } else {
    setStatus("nothing to undo");
  }
}

async function back() {
  // Leaving without a verdict gives the item back at once instead of when its lease ends.
  const item = document.getElementById("item");
  await post("/items/" + encodeURIComponent(item.dataset.post) + "/release", {});
  location.href = "/";
}

function renewLease() {
  const item = document.getElementById("item");
  const lease = Number(item.dataset.lease) * 1000;
  // Re-opening the item renews this session's claim while the page stays open.
  setInterval(() => fetch(location.pathname, { credentials: "same-origin" }), Math.max(5000, lease / 2));
}

// --- admin -------------------------------------------------------------------------------
function wireAdmin() {
  document.querySelectorAll("form.admin-action").forEach((form) => {
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const answer = await post(form.dataset.action, Object.fromEntries(new FormData(form)));
      setStatus(answer.ok ? JSON.stringify(answer.data) : "refused: " + (answer.data.error || answer.status));
    });
  });
}

// --- keys --------------------------------------------------------------------------------
function onKey(e) {
  if (e.target && ["INPUT", "TEXTAREA", "SELECT"].includes(e.target.tagName)) {
    if (e.key === "Escape") e.target.blur();
    return;
  }
  if (e.key === "?") { toggleHelp(); return; }
  if (e.key === "Escape" && !document.getElementById("help").hidden) { toggleHelp(false); return; }
  if (page() === "queue") {
    if (e.key === "j") selectRow(selectedRow + 1);
    else if (e.key === "k") selectRow(selectedRow - 1);
    else if (e.key === "Enter" || e.key === "o") {
      const row = rows()[selectedRow];
      if (row) row.querySelector("a").click();
    }
  } else if (page() === "item") {
    const current = matches()[selectedMatch];
    if (e.key === "j") selectMatch(selectedMatch + 1);
    else if (e.key === "k") selectMatch(selectedMatch - 1);
    else if (e.key === "c" && current) judge("confirm", current.dataset.factCheck);
    else if (e.key === "r" && current) judge("reject", current.dataset.factCheck);
    else if (e.key === "n") judge("none");
    else if (e.key === "u") undo();
    else if (e.key === "Escape") back();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.addEventListener("keydown", onKey);
  const helpButton = document.getElementById("help-button");
  if (helpButton) helpButton.addEventListener("click", () => toggleHelp());
  const help = document.getElementById("help");
  if (help) help.addEventListener("click", () => toggleHelp(false));
  if (page() === "queue") { selectRow(0); listen(); }
  if (page() === "item") {
    selectMatch(0);
    listen();
    renewLease();
    matches().forEach((m, i) => m.querySelectorAll("button[data-verdict]").forEach((b) =>
      b.addEventListener("click", () => { selectMatch(i); judge(b.dataset.verdict, m.dataset.factCheck); })));
    document.getElementById("none").addEventListener("click", () => judge("none"));
    document.getElementById("undo").addEventListener("click", undo);
    document.getElementById("back").addEventListener("click", (e) => { e.preventDefault(); back(); });
  }
  if (page() === "admin") wireAdmin();
});
