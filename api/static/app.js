// SpaceVLLM dashboard: plain JS, no build step, no CDN. Three pages (Live, Events, Queries) on the /v1 API.
//
// Auth: the bearer token typed into the header is kept in sessionStorage (this tab only) and sent as an
// Authorization header on every call. <img> and <video> cannot send headers, so media (previews, snapshots,
// clips) is fetched with the header and shown through blob: URLs (revoked when replaced). The live feed is
// the SSE endpoint read with fetch() streaming (EventSource cannot send headers); it reconnects with
// Last-Event-ID, so nothing is missed.
"use strict";

const TOKEN_KEY = "svl-token";
const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
};
const svg = (tag, attrs = {}) => {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
};
const fmtTime = (ts) => new Date(ts * 1000).toLocaleTimeString();

const state = {
  cameras: [],            // GET /v1/cameras
  open: new Map(),        // event_id -> latest event (new/update), removed on end
  events: new Map(),      // event_id -> latest version seen (Events page)
  page: "live",
  blobs: new Map(),       // element key -> blob URL (revoked when replaced)
};

// ---- HTTP -------------------------------------------------------------------------------
function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
function headers(extra = {}) {
  const h = { ...extra };
  if (token()) h.Authorization = `Bearer ${token()}`;
  return h;
}
function banner(text) {
  const b = $("#banner");
  b.textContent = text || "";
  b.hidden = !text;
}
async function api(path, opts = {}) {
  const r = await fetch(path, { ...opts, headers: headers(opts.headers || {}) });
  if (r.status === 401) banner("This API needs a token: paste one into the Token field.");
  else if (r.status === 403) banner("This token's scope is too small for that.");
  return r;
}
async function json(path) {
  const r = await api(path);
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}
// fetch media with the token; returns a blob: URL (the previous one under `key` is revoked), or null
async function blobUrl(key, path) {
  const r = await api(path);
  if (!r.ok) return null;
  const url = URL.createObjectURL(await r.blob());
  const old = state.blobs.get(key);
  if (old) URL.revokeObjectURL(old);
  state.blobs.set(key, url);
  return { url, headers: r.headers };
}

// ---- live feed (SSE over fetch) ---------------------------------------------------------
async function follow() {
  let lastId = null;
  const since = Math.floor(Date.now() / 1000) - 120;  // recent events: the open ones are drawn at once
  for (;;) {
    try {
      const h = headers({ Accept: "text/event-stream" });
      if (lastId) h["Last-Event-ID"] = lastId;
      const r = await fetch(`/v1/events/stream?since=${since}`, { headers: h });
      if (!r.ok) { $("#conn").textContent = `feed: ${r.status}`; await sleep(3000); continue; }
      $("#conn").textContent = "live";
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let id = null, data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id:")) id = line.slice(3).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (id) lastId = id;
          if (data) onEvent(JSON.parse(data));
        }
      }
    } catch (err) {
      console.warn("feed", err);
    }
    $("#conn").textContent = "reconnecting";
    await sleep(2000);
  }
}
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

function onEvent(e) {
  if (e.type === "end") state.open.delete(e.event_id); else state.open.set(e.event_id, e);
  state.events.set(e.event_id, e);
  for (const tile of document.querySelectorAll(`.tile[data-camera="${CSS.escape(e.camera_id)}"]`)) drawBoxes(tile);
  if (state.page === "events") scheduleEventsRefresh();
}

// ---- Live -------------------------------------------------------------------------------
function tileFor(cam) {
  let tile = $(`.tile[data-camera="${CSS.escape(cam.id)}"]`);
  if (tile) return tile;
  tile = el("div", { class: "tile", "data-camera": cam.id },
    el("div", { class: "view" }, el("img", { alt: `camera ${cam.id}` }), svg("svg", { preserveAspectRatio: "xMidYMid meet" })),
    el("div", { class: "meta" }));
  $("#camera-grid").append(tile);
  return tile;
}
function drawBoxes(tile) {
  const s = tile.querySelector("svg");
  const img = tile.querySelector("img");
  const frameTs = parseFloat(img.dataset.ts || "0");
  s.replaceChildren();
  for (const e of state.open.values()) {
    if (e.camera_id !== tile.dataset.camera || !e.boxes.length) continue;
    const [w, h] = e.frame_size;
    s.setAttribute("viewBox", `0 0 ${w} ${h}`);
    // the box nearest in time to the frame shown
    let best = e.boxes[0];
    for (const b of e.boxes) if (Math.abs(b.ts - frameTs) < Math.abs(best.ts - frameTs)) best = b;
    const [x1, y1, x2, y2] = best.xyxy;
    s.append(svg("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, "data-event-id": e.event_id }));
    const t = svg("text", { x: x1 + 2, y: Math.max(12, y1 - 4) });
    t.textContent = `${e.query_text} ${e.score.toFixed(2)}`;
    s.append(t);
  }
}
function droppedBy(d) {
  // the reasons: late (behind real time), redis (could not be stored), overload (not decoded: key frames only)
  return d ? Object.entries(d).map(([reason, n]) => `${reason} ${n}`).join(", ") : "";
}
function healthLine(cam) {
  const h = cam.health;
  if (!h) return [el("span", { class: "muted" }, "no health yet")];
  const dropped = h.frames_dropped ?? 0;
  const parts = [
    el("b", {}, cam.id),
    el("span", { class: `state-${h.state}` }, h.state),
    el("span", {}, `${(h.fps ?? 0).toFixed(1)} fps`),
    el("span", { title: droppedBy(h.dropped) }, `dropped ${dropped}`),
  ];
  if (h.last_error) parts.push(el("span", { class: "error", title: h.last_error }, `last error: ${h.last_error}`));
  return parts;
}
async function refreshCameras() {
  try {
    state.cameras = await json("/v1/cameras");
  } catch { return; }
  $("#no-cameras").hidden = state.cameras.length > 0;
  for (const cam of state.cameras) tileFor(cam).querySelector(".meta").replaceChildren(...healthLine(cam));
  fillSelect($("#f-camera"), state.cameras.map((c) => c.id));
}
async function refreshPreviews() {
  if (state.page !== "live") return;
  await Promise.all(state.cameras.map(async (cam) => {
    const tile = tileFor(cam);
    const got = await blobUrl(`live:${cam.id}`, `/v1/cameras/${encodeURIComponent(cam.id)}/latest.jpg`);
    if (!got) return;
    const img = tile.querySelector("img");
    img.dataset.ts = got.headers.get("X-Frame-Ts") || "";
    img.src = got.url;
    drawBoxes(tile);
  }));
}

// ---- Events -----------------------------------------------------------------------------
let refreshTimer = null;
function scheduleEventsRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(loadEvents, 500);
}
function fillSelect(select, values) {
  const have = new Set([...select.options].map((o) => o.value));
  for (const v of values) if (!have.has(v)) select.append(el("option", { value: v }, v));
}
async function loadEvents() {
  const p = new URLSearchParams({ limit: "300" });
  if ($("#f-camera").value) p.set("camera", $("#f-camera").value);
  if ($("#f-query").value) p.set("query", $("#f-query").value);
  if ($("#f-since").value) p.set("since", String(Date.now() / 1000 - parseFloat($("#f-since").value)));
  let page;
  try { page = await json(`/v1/events?${p}`); } catch { return; }
  const latest = new Map();  // newest first: the first message of an id is its latest version
  for (const e of page.events) if (!latest.has(e.event_id)) latest.set(e.event_id, e);
  const list = $("#event-list");
  $("#no-events").hidden = latest.size > 0;
  const seen = new Set();
  let prev = null;
  for (const e of latest.values()) {
    seen.add(e.event_id);
    let li = list.querySelector(`li[data-event-id="${e.event_id}"]`);
    if (!li) {
      li = el("li", { class: "event", "data-event-id": e.event_id }, el("img", { alt: "snapshot", class: "snapshot" }), el("div", { class: "info" }));
      li.addEventListener("click", () => play(li.dataset.eventId));
    }
    const info = li.querySelector(".info");
    const open = e.type !== "end";
    info.replaceChildren(
      el("span", { class: "q" }, `"${e.query_text}"`),
      el("span", {}, `${e.camera_id} · ${fmtTime(e.start_ts)}–${fmtTime(e.end_ts)} (${(e.end_ts - e.start_ts).toFixed(1)} s) · score ${e.score.toFixed(2)}`),
      el("span", {}, el("span", { class: open ? "badge open" : "badge" }, open ? "open" : `ended: ${e.reason || ""}`)));
    if (li.dataset.score !== String(e.score) || !li.querySelector("img").naturalWidth) {
      li.dataset.score = String(e.score);
      loadSnapshot(li, e.event_id);
    }
    if (prev ? prev.nextSibling !== li : list.firstChild !== li) {
      if (prev) prev.after(li); else list.prepend(li);
    }
    prev = li;
  }
  for (const li of [...list.children]) if (!seen.has(li.dataset.eventId)) li.remove();
}
async function loadSnapshot(li, eventId) {
  const got = await blobUrl(`snap:${eventId}`, `/v1/events/${eventId}/snapshot.jpg`);
  if (got) li.querySelector("img").src = got.url;
}
async function play(eventId) {
  for (const li of document.querySelectorAll(".event.selected")) li.classList.remove("selected");
  const li = $(`li[data-event-id="${eventId}"]`);
  if (li) li.classList.add("selected");
  const e = state.events.get(eventId) || {};
  $("#player").hidden = false;
  $("#player").dataset.eventId = eventId;
  $("#player-title").textContent = e.query_text ? `"${e.query_text}" on ${e.camera_id}` : eventId;
  const video = $("#player-video");
  let status = null;
  const r = await api(`/v1/events/${eventId}/media`);
  if (r.ok) status = await r.json();
  const clip = status && status.clip;
  if (!clip || clip.state !== "ok") {
    video.removeAttribute("src");
    video.load();
    $("#player-status").textContent = clip ? `clip ${clip.state}${clip.reason ? ": " + clip.reason : ""}` + (clip.state === "pending" ? " (made when the event ends)" : "")
      : "no clip yet (made when the event ends)";
    return;
  }
  const got = await blobUrl("player", `/v1/events/${eventId}/clip.mp4`);
  if (!got) { $("#player-status").textContent = "clip unavailable"; return; }
  video.dataset.spanS = String(clip.end_ts - clip.start_ts);
  video.src = got.url;
  $("#player-status").textContent = `${fmtTime(clip.start_ts)}–${fmtTime(clip.end_ts)}, ${clip.frames} frames` +
    (clip.missing_frames ? `, ${clip.missing_frames} missing (expired, or before the camera started)` : "");
  video.play().catch(() => {});
}

// ---- Queries ----------------------------------------------------------------------------
// The form edits every field of a query. Webhook secrets are write-only (the API answers "<redacted>"): an
// existing sink's secret field stays empty unless a new one is typed, and is sent as "<redacted>", which the API
// reads as "keep this sink's secret" (a sink the query does not have needs a real one).
const REDACTED = "<redacted>";
let editing = null;
async function loadQueries() {
  let qs;
  try { qs = await json("/v1/queries"); } catch { return; }
  const body = $("#query-table tbody");
  body.replaceChildren(...qs.map((q) => {
    const edit = el("button", { type: "button", class: "edit" }, "Edit");
    edit.addEventListener("click", () => startEdit(q));
    const rm = el("button", { type: "button", class: "remove" }, "Remove");
    rm.addEventListener("click", async () => {
      if ((await api(`/v1/queries/${encodeURIComponent(q.id)}`, { method: "DELETE" })).ok) loadQueries();
    });
    return el("tr", { "data-query-id": q.id }, el("td", {}, q.id), el("td", { class: "text" }, q.text),
      el("td", {}, q.cameras.join(", ")), el("td", {}, q.threshold ?? "default"), el("td", {}, `${q.min_duration_s} s`),
      el("td", {}, `${q.cooldown_s} s`), el("td", { class: "webhooks" }, q.webhooks.map((w) => w.url).join(" ")),
      el("td", {}, edit, " ", rm));
  }));
  fillSelect($("#f-query"), qs.map((q) => q.id));
}
function addSinkRow(url = "", known = false) {
  const secret = el("input", { type: "password", class: "sink-secret", autocomplete: "new-password",
    placeholder: known ? "unchanged" : "secret" });
  const row = el("div", { class: "sink" }, el("input", { class: "sink-url", value: url, placeholder: "URL the events are POSTed to" }),
    secret, el("button", { type: "button", class: "sink-remove", title: "remove this webhook" }, "×"));
  row.querySelector(".sink-remove").addEventListener("click", () => row.remove());
  $("#q-webhooks").append(row);
  return row;
}
function startEdit(q) {
  resetForm();
  editing = q.id;
  $("#query-form-title").textContent = `Edit ${q.id}`;
  $("#q-id").value = q.id; $("#q-id").disabled = true;
  $("#q-text").value = q.text;
  $("#q-cameras").value = q.cameras.join(", ");
  $("#q-threshold").value = q.threshold ?? "";
  $("#q-min-duration").value = q.min_duration_s;
  $("#q-cooldown").value = q.cooldown_s;
  for (const w of q.webhooks) addSinkRow(w.url, true);
  $("#q-submit").textContent = "Save";
  $("#q-cancel").hidden = false;
}
function resetForm() {
  editing = null;
  $("#query-form").reset();
  $("#q-webhooks").replaceChildren();
  $("#q-id").disabled = false;
  $("#query-form-title").textContent = "Add a standing query";
  $("#q-submit").textContent = "Add";
  $("#q-cancel").hidden = true;
  clearErrors();
}
function clearErrors() {
  for (const s of document.querySelectorAll("#query-form .error")) s.textContent = "";
  for (const i of document.querySelectorAll("#query-form input")) i.classList.remove("invalid");
}
function numberOrRaw(v) { const n = Number(v); return v.trim() !== "" && !Number.isNaN(n) ? n : v; }
function sinks() {
  const out = [];
  for (const row of document.querySelectorAll("#q-webhooks .sink")) {
    const url = row.querySelector(".sink-url").value.trim();
    const secret = row.querySelector(".sink-secret").value;
    if (!url && !secret) continue;
    // left empty: the secret the query has for this URL (editing), else none (the API says it is required)
    if (secret) out.push({ url, secret }); else if (editing) out.push({ url, secret: REDACTED }); else out.push({ url });
  }
  return out;
}
function showError(d) {
  const field = d.loc && d.loc.length > 1 ? String(d.loc[1]) : null;
  const span = field && $(`#query-form .error[data-for="${field}"]`);
  if (!span) { $("#q-form-error").textContent += `${(d.loc || []).join(".")}: ${d.msg} `; return; }
  span.textContent += (span.textContent ? " " : "") + (field === "webhooks" && d.loc.length > 2 ? `#${d.loc[2] + 1}: ${d.msg}` : d.msg);
  const inputs = field === "webhooks" && typeof d.loc[2] === "number"
    ? document.querySelectorAll(`#q-webhooks .sink:nth-child(${d.loc[2] + 1}) input`)
    : document.querySelectorAll(`#query-form input[name="${field}"]`);
  for (const input of inputs) input.classList.add("invalid");
}
async function submitQuery(ev) {
  ev.preventDefault();
  clearErrors();
  const body = { text: $("#q-text").value };
  if ($("#q-id").value.trim()) body.id = $("#q-id").value.trim();
  body.cameras = $("#q-cameras").value.split(",").map((s) => s.trim()).filter(Boolean);
  if ($("#q-threshold").value.trim()) body.threshold = numberOrRaw($("#q-threshold").value);
  if ($("#q-min-duration").value.trim()) body.min_duration_s = numberOrRaw($("#q-min-duration").value);
  if ($("#q-cooldown").value.trim()) body.cooldown_s = numberOrRaw($("#q-cooldown").value);
  body.webhooks = sinks();  // always sent: removing every row removes every sink
  const path = editing ? `/v1/queries/${encodeURIComponent(editing)}` : "/v1/queries";
  const r = await api(path, { method: editing ? "PUT" : "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (r.ok) { resetForm(); loadQueries(); return; }
  let detail = null;
  try { detail = (await r.json()).detail; } catch { /* not JSON */ }
  if (Array.isArray(detail)) for (const d of detail) showError(d);
  else $("#q-form-error").textContent = typeof detail === "string" ? detail : `error ${r.status}`;
}

// ---- pages ------------------------------------------------------------------------------
function show(page) {
  state.page = page;
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== `page-${page}`;
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.page === page);
  location.hash = page;
  if (page === "events") loadEvents();
  if (page === "queries") loadQueries();
  if (page === "live") refreshPreviews();
}

function start() {
  $("#token").value = token();
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
    banner("");
    location.reload();
  });
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => show(b.dataset.page));
  $("#event-filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadEvents(); });
  $("#query-form").addEventListener("submit", submitQuery);
  $("#q-cancel").addEventListener("click", resetForm);
  $("#q-add-webhook").addEventListener("click", () => addSinkRow().querySelector(".sink-url").focus());
  refreshCameras().then(refreshPreviews);
  loadQueries();
  setInterval(refreshCameras, 2000);
  setInterval(refreshPreviews, 1000);
  setInterval(() => { if (state.page === "events") loadEvents(); }, 5000);
  follow();
  const initial = (location.hash || "#live").slice(1);
  show(["live", "events", "queries"].includes(initial) ? initial : "live");
}
start();
