// Live exec events: an EventSource on /events, one table row per event.
// Event fields are attacker-chosen text (anyone can exec anything): they go
// into the page with textContent only, never as HTML.
"use strict";

const MAX_ROWS = 500;
const rows = document.getElementById("rows");
const statusEl = document.getElementById("status");
const notice = document.getElementById("notice");
const form = document.getElementById("filters");
const pause = document.getElementById("pause");
const counters = {
  shown: document.getElementById("shown"),
  delivered: document.getElementById("delivered"),
  kernelDrops: document.getElementById("kernel-drops"),
  missed: document.getElementById("missed"),
  subscribers: document.getElementById("subscribers"),
};
let shown = 0;
let missed = 0;
let source = null;
let wasLive = false;
// Where this table is in the server's stream: each event's id is EPOCH-SEQ
// (see resume.py). EventSource sends the last id as Last-Event-ID when it
// reconnects, and the server replays what the table lacks; an event at or
// before `lastSeq` of the same epoch is one the table has: never shown twice.
let epoch = null;
let lastSeq = -1;
let lastId = "";
let retryTimer = null;

// A token given as ?token= is now in an HttpOnly cookie (see security.py):
// take it out of the address bar, the history and any screenshot.
const here = new URL(window.location.href);
if (here.searchParams.has("token")) {
  here.searchParams.delete("token");
  history.replaceState(null, "", here.pathname + here.search + here.hash);
}
for (const key of ["pid", "uid", "name"]) {
  if (here.searchParams.has(key)) form.elements[key].value = here.searchParams.get(key);
}

function setState(state, text) {
  document.documentElement.dataset.state = state;
  statusEl.textContent = text;
}

function say(text) {
  notice.textContent = text;
  notice.hidden = !text;
}

function cell(tr, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  tr.appendChild(td);
}

// realtime_ns: nanoseconds since the epoch (a double keeps well under 1 µs).
function clock(ns) {
  const t = new Date(ns / 1e6);
  return t.toLocaleTimeString([], { hour12: false }) + "." +
    String(t.getMilliseconds()).padStart(3, "0");
}

// Each byte that was not UTF-8 arrives as U+10FF00 + byte (aioringbuf's
// lossless text): shown as \xNN, like the CLI's table.
const BYTE = /[\u{10FF80}-\u{10FFFF}]/gu;
function text(s) {
  return s.replace(BYTE, (c) => "\\x" + (c.codePointAt(0) - 0x10FF00).toString(16));
}

// True if the message with this id is new to the table (and note its place).
function advance(id) {
  const m = /^([0-9a-f]{16})-(\d{1,19})$/.exec(id || "");
  if (!m) return true;
  const seq = Number(m[2]);
  if (m[1] === epoch && seq <= lastSeq) return false;
  epoch = m[1];
  lastSeq = seq;
  lastId = id;
  return true;
}

function addMissed(n, text) {
  missed += n;
  counters.missed.textContent = missed;
  say(text);
}

function addRow(ev) {
  shown += 1;
  counters.shown.textContent = shown;
  if (pause.checked) return;
  const tr = document.createElement("tr");
  if (ev.ret < 0) tr.className = "failed";
  if (typeof ev.host === "string") {  // a fleet (app.py --nats): events carry their host
    document.documentElement.dataset.fleet = "1";
    cell(tr, text(ev.host), "host");
  }
  cell(tr, clock(ev.realtime_ns));
  cell(tr, ev.pid, "num");
  cell(tr, ev.ppid, "num");
  cell(tr, ev.uid, "num");
  cell(tr, text(ev.comm), "comm");
  cell(tr, ev.ret, "num");
  const args = ev.argv.length ? ev.argv.join(" ") : ev.filename;
  cell(tr, text(args) + (ev.args_truncated ? " …" : ""), "args");
  tr.title = text(ev.filename);
  rows.insertBefore(tr, rows.firstChild);
  while (rows.childElementCount > MAX_ROWS) rows.removeChild(rows.lastChild);
}

function query() {
  const params = new URLSearchParams();
  for (const key of ["pid", "uid", "name"]) {
    const value = form.elements[key].value.trim();
    if (value) params.set(key, value);
  }
  return params;
}

// resume: carry on after the last event shown (a new EventSource sends no
// Last-Event-ID of its own, so the page gives it as ?last_event_id=).
function connect(resume) {
  if (source) source.close();
  clearTimeout(retryTimer);
  const params = query();
  const shownUrl = new URL(window.location.href);
  shownUrl.search = params.toString();
  history.replaceState(null, "", shownUrl);
  if (resume && lastId) params.set("last_event_id", lastId);
  setState("connecting", "connecting…");
  source = new EventSource("/events?" + params.toString());
  // onopen fires once the server has subscribed us: from here on, nothing is missed.
  source.onopen = () => {
    setState("live", "live");
    if (wasLive) say("Reconnected: resumed after the last event shown.");
    wasLive = true;
    refreshStats();
  };
  source.onerror = () => {
    // EventSource retries by itself (the server asks for 2 s); a 4xx or 5xx ends it.
    if (source.readyState !== EventSource.CLOSED) {
      setState("reconnecting", "reconnecting…");
    } else if (wasLive) {  // it worked before: busy (429, 503) or restarting
      setState("reconnecting", "reconnecting…");
      say("The server refused the stream for now; trying again in 5 s.");
      retryTimer = setTimeout(() => connect(true), 5000);
    } else {
      setState("closed", "closed");
      say("The server refused the stream (bad filter, or not authorized). Fix and apply.");
    }
  };
  source.addEventListener("exec", (e) => {
    if (advance(e.lastEventId)) addRow(JSON.parse(e.data));
  });
  source.addEventListener("dropped", (e) => {
    addMissed(Number(e.data), `This page fell behind: ${missed + Number(e.data)} ` +
      "event(s) dropped.");
  });
  source.addEventListener("missed", (e) => {
    const gap = JSON.parse(e.data);
    advance(e.lastEventId);
    addMissed(gap.missed, gap.exact
      ? `Reconnected: ${gap.missed} event(s) went by while away, more than the server ` +
        "keeps; the rest were replayed."
      : `Reconnected to a restarted server: ${gap.missed} of its event(s) and an ` +
        "unknown number before its start were missed.");
  });
}

async function refreshStats() {
  try {
    const r = await fetch("/stats", { cache: "no-store" });
    if (!r.ok) return;
    const s = await r.json();
    counters.delivered.textContent = s.exec.delivered;
    counters.kernelDrops.textContent = s.exec.kernel_drops ?? "?";
    counters.subscribers.textContent = s.hub.subscribers;
  } catch (_) {
    // the server is away; the status shows it
  }
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  say("");
  rows.replaceChildren();
  wasLive = false;
  epoch = null;
  lastSeq = -1;
  lastId = "";
  connect(false);
});

connect(false);
refreshStats();
setInterval(refreshStats, 2000);
