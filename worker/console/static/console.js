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
  // Sent once the stream listens: what changed since the page was rendered is fetched now.
  events.addEventListener("depth", (e) => {
    setDepth(e.data);
    if (page() === "queue") refreshRows();
  });
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

// An item page works one post; a cluster page (data-base) works the posts it lists, named in
// every request so that a post that joined the cluster later is never decided unseen.
function base() {
  const item = document.getElementById("item");
  return item.dataset.base || "/items/" + encodeURIComponent(item.dataset.post);
}

function clusterPosts() { return Array.from(document.querySelectorAll("li.cluster-post")); }

function withPosts(fields) {
  const pairs = Object.entries(fields);
  clusterPosts().forEach((li) => pairs.push(["post", li.dataset.post]));
  return pairs;
}

function showOpen(open) {
  if (!open) return;
  const still = new Set(open);
  clusterPosts().forEach((li) => li.classList.toggle("done", !still.has(li.dataset.post)));
  const count = document.getElementById("open-posts");
  if (count) count.textContent = String(still.size);
}

async function judge(verdict, factCheckId) {
  const item = document.getElementById("item");
  const fields = { verdict, note: document.getElementById("note").value };
  if (factCheckId) fields.fact_check_id = factCheckId;
  const answer = await post(base() + "/verdicts", withPosts(fields));
  if (!answer.ok) { setStatus("not recorded: " + (answer.data.error || answer.status)); return; }
  for (const p of answer.data.pending) {
    const li = document.querySelector('li.match[data-fact-check="' + CSS.escape(p.fact_check_id) + '"]');
    if (li) li.querySelector(".state").textContent = p.verdict + "ed";
  }
  showOpen(answer.data.open);
  const undo = document.getElementById("undo");
  undo.disabled = false;
  clearTimeout(undoTimer);
  undoTimer = setTimeout(() => { undo.disabled = true; }, Number(item.dataset.undo) * 1000);
  const scope = answer.data.posts !== undefined ? " for " + answer.data.posts + " post(s)" : "";
  setStatus((answer.data.done ? "done" + scope + ": sent after " + item.dataset.undo + " s unless undone" : "recorded" + scope));
}

async function undo() {
  const answer = await post(base() + "/undo", withPosts({}));
  if (answer.ok && answer.data.undone) {
    matches().forEach((m) => { m.querySelector(".state").textContent = ""; });
    clusterPosts().forEach((li) => li.classList.remove("done"));
    document.getElementById("undo").disabled = true;
    setStatus("undone (" + answer.data.undone + ")");
  } else {
    setStatus("nothing to undo");
  }
}

async function back() {
  // Leaving without a verdict gives the item (or the cluster's posts) back at once instead of when the lease ends.
  await post(base() + "/release", withPosts({}));
  location.href = "/";
}

function renewLease() {
  const item = document.getElementById("item");
  const lease = Number(item.dataset.lease) * 1000;
  // Re-opening the item renews this session's claim while the page stays open; a cluster page
  // renews the claims of the posts it lists, and takes no new ones.
  const renew = item.dataset.base
    ? () => post(base() + "/renew", withPosts({}))
    : () => fetch(location.pathname, { credentials: "same-origin" });
  setInterval(renew, Math.max(5000, lease / 2));
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
