/* PatrolLink operator console. */
"use strict";

const NO_UNIT_WARN_S = 15;     // an incident waiting this long for a unit gets a warning
const NOT_MOVING_S = 60;       // acknowledged but not en route after this long
const ONSCENE_GRACE_S = 60;    // en route for longer than the ETA plus this
const ALERT_HIGHLIGHT_S = 90;  // a camera tile stays highlighted this long after its alert's last news
const RTC_FIRST_FRAME_S = 8;   // no video frame this long after connecting: fall back to stills

const S = {
  me: null, map: null, mapData: null,
  units: new Map(), incidents: new Map(), alerts: new Map(), health: new Map(), broadcasts: [], escalations: new Map(),
  tiles: new Map(), selected: null, pick: null, drills: new Map(), connected: false,
  seenEsc: new Set(JSON.parse(sessionStorage.getItem("pl.seenEsc") || "[]")),
  dirty: { alerts: true, board: true, map: true, tiles: true, banners: true },
  sound: localStorage.getItem("pl.sound") !== "off", chimes: [],
};
window.PLConsole = S;  // for tests and for a curious operator's devtools

// ------------------------------------------------------------------ start
(async function main() {
  const me = await PL.api("GET", "/api/me");
  S.me = me.user;
  PL.setServerNow(me.now);
  document.body.classList.toggle("is-supervisor", S.me.role === "supervisor");
  document.getElementById("district").textContent = me.district + " — console " + me.console;
  document.getElementById("me").innerHTML = `${PL.esc(S.me.name)} <span class="badge ${S.me.role === "supervisor" ? "st-on_scene" : "st-unknown"}">${S.me.role.toUpperCase()}</span>`;
  document.getElementById("logout").onclick = PL.logout;
  wireSound();
  for (const el of document.querySelectorAll(".supervisor-only")) el.classList.toggle("hidden", S.me.role !== "supervisor");
  S.mapData = await PL.api("GET", "/api/map");
  S.map = new PL.DistrictMap(document.getElementById("map"), S.mapData, { onClick: (lat, lon) => openFlag(lat, lon) });
  legend();
  buildTiles(S.mapData.cameras);
  fillKinds();
  wireDialogs();
  PL.live("/ws", onLive, (ok) => { S.connected = ok; connState(); });
  setInterval(tick, 1000);
  requestAnimationFrame(frame);
})().catch((e) => PL.toast("console failed to start: " + e.message, true));

function onLive(t, d) {
  switch (t) {
    case "snapshot":
      S.units.clear(); for (const u of d.units || []) S.units.set(u.id, u);
      S.incidents.clear(); for (const i of d.incidents || []) S.incidents.set(i.id, i);
      S.alerts.clear(); for (const a of d.alerts || []) S.alerts.set(a.event_id, a);
      S.health.clear(); for (const h of d.health || []) S.health.set(h.camera, h);
      S.broadcasts = d.broadcasts || [];
      S.escalations.clear(); for (const e of d.escalations || []) S.escalations.set(e.incident_id, e);
      S.status = d.status; connState();
      markAll(); break;
    case "unit": S.units.set(d.id, d); S.dirty.map = true; S.dirty.board = true; noteDrill(d.exercise); break;
    case "incident": S.incidents.set(d.id, d); S.dirty.board = true; S.dirty.map = true; S.dirty.banners = true; noteDrill(d.exercise); break;
    case "ievent": {
      const i = S.incidents.get(d.incident_id);
      if (i) { i.timeline = (i.timeline || []).concat([d]).slice(-20); if (d.explanation) i.explanation = d.explanation; }
      if (d.event === "escalated") { S.escalations.set(d.incident_id, d); S.dirty.banners = true; chime("escalation"); }
      S.dirty.board = true; noteDrill(d.exercise); break;
    }
    case "alert":
      if (!S.alerts.has(d.event_id)) chime("alert");  // a new camera alert to check
      S.alerts.set(d.event_id, d); S.dirty.alerts = true; S.dirty.tiles = true; noteDrill(d.exercise); break;
    case "health": S.health.set(d.camera, d); S.dirty.tiles = true; break;
    case "order": {
      const i = S.incidents.get(d.incident_id);
      if (i && d.action === "assign" && i.order === d.order_id) { i.route = d.route; i.eta_s = d.eta_s; if (d.explanation) i.explanation = d.explanation; }
      S.dirty.map = true; S.dirty.board = true; noteDrill(d.exercise); break;
    }
    case "broadcast": S.broadcasts.push(d); noteDrill(d.exercise); break;
    case "status": S.status = d; connState(); break;
  }
}
function markAll() { for (const k in S.dirty) S.dirty[k] = true; }
function noteDrill(ex) { if (ex) { S.drills.set(ex, PL.now()); S.dirty.banners = true; } }

function frame() {
  try {
    if (S.dirty.tiles) { S.dirty.tiles = false; renderTiles(); }
    if (S.dirty.alerts) { S.dirty.alerts = false; renderAlerts(); }
    if (S.dirty.board) { S.dirty.board = false; renderBoard(); }
    if (S.dirty.map) { S.dirty.map = false; renderMap(); }
    if (S.dirty.banners) { S.dirty.banners = false; renderBanners(); }
  } catch (e) { console.error(e); }
  requestAnimationFrame(frame);
}
function tick() {
  document.getElementById("clock").textContent = new Date(PL.now()).toTimeString().slice(0, 8);
  S.dirty.board = true; S.dirty.tiles = true; S.dirty.banners = true;
  if (Math.floor(PL.now() / 1000) % 3 === 0) S.dirty.alerts = true;
}
function connState() {
  const el = document.getElementById("conn");
  const nats = S.status ? S.status.nats : false;
  if (!S.connected) { el.className = "conn bad"; el.textContent = "✗ SERVER LOST — reconnecting"; }
  else if (!nats) { el.className = "conn bad"; el.textContent = "✗ NATS DOWN"; }
  else { el.className = "conn ok"; el.textContent = "● LIVE"; }
}

// ------------------------------------------------------------------ sound: a chime for a new camera alert, an alarm for an escalation
// Browsers play sound only after a gesture on the page: the first click anywhere unlocks it.
let audio = null;
function wireSound() {
  const b = document.getElementById("sound");
  const show = () => { b.textContent = S.sound ? "🔔 Sound on" : "🔕 Sound off"; b.classList.toggle("off", !S.sound); };
  b.onclick = () => { S.sound = !S.sound; localStorage.setItem("pl.sound", S.sound ? "on" : "off"); show(); if (S.sound) chime("test"); };
  show();
  document.addEventListener("click", () => { unlockAudio(); }, { capture: true });
}
function unlockAudio() {
  try {
    if (!audio) audio = new (window.AudioContext || window.webkitAudioContext)();
    if (audio.state === "suspended") audio.resume();
  } catch (e) { audio = null; }
}
function chime(what) {
  S.chimes.push({ what, t: Date.now(), played: false });
  if (S.chimes.length > 50) S.chimes.shift();
  if (!S.sound || !audio || audio.state !== "running") return;
  // two short tones for an alert, three lower, longer ones for an escalation
  const tones = what === "escalation" ? [[440, 0, 0.35], [330, 0.4, 0.35], [440, 0.8, 0.35]] : [[880, 0, 0.12], [1175, 0.16, 0.14]];
  const t0 = audio.currentTime + 0.02;
  for (const [f, at, len] of tones) {
    const o = audio.createOscillator(), g = audio.createGain();
    o.frequency.value = f; o.type = "sine";
    g.gain.setValueAtTime(0.0001, t0 + at); g.gain.exponentialRampToValueAtTime(0.3, t0 + at + 0.02);
    g.gain.exponentialRampToValueAtTime(0.0001, t0 + at + len);
    o.connect(g).connect(audio.destination); o.start(t0 + at); o.stop(t0 + at + len + 0.05);
  }
  S.chimes[S.chimes.length - 1].played = true;
}

// ------------------------------------------------------------------ banners: supervisor (escalations) and drill
function activeDrills() {
  const out = new Set();
  for (const i of S.incidents.values()) if (i.exercise && !["resolved", "cancelled"].includes(i.state)) out.add(i.exercise);
  for (const u of S.units.values()) if (u.exercise) out.add(u.exercise);
  for (const [ex, t] of S.drills) if (PL.now() - t < 600000) out.add(ex);
  return [...out].sort();
}
function renderBanners() {
  const box = document.getElementById("banners");
  const parts = [];
  for (const [iid, e] of S.escalations) {
    const i = S.incidents.get(iid);
    if (!i || ["resolved", "cancelled"].includes(i.state)) continue;
    if (i.unit && ["acknowledged", "en_route", "on_scene"].includes(i.state)) continue;  // somebody took it since
    const key = iid + ":" + e.seq;
    if (S.seenEsc.has(key)) continue;
    const place = (i.place && i.place.description) || "";
    parts.push(`<div class="banner banner-escalation" data-incident="${PL.esc(iid)}" role="alert"><span>⚠ SUPERVISOR</span>` +
      `<span class="txt">${PL.pri(i.priority)} ${PL.esc(PL.kindWord(i.kind).toUpperCase())} at ${PL.esc(place)} — ESCALATED: ${PL.esc(e.detail || "")} ` +
      `<span class="dim">(${PL.hms(e.time)}, ${PL.ago(e.time)} ago)</span> ${PL.drillTag(i.exercise)}</span>` +
      `<button type="button" data-seen="${PL.esc(key)}">Seen</button></div>`);
  }
  const drills = activeDrills();
  if (drills.length) {
    parts.push(`<div class="banner banner-drill" id="drillBanner"><span>▲ DRILL IN PROGRESS — exercise ${drills.map(PL.esc).join(", ")} — drill traffic is marked DRILL and kept apart from real incidents</span></div>`);
  }
  if (S.status && !S.status.nats) parts.push(`<div class="banner banner-offline">✗ The console has lost NATS: nothing you see is live until it is back.</div>`);
  const html = parts.join("");
  if (box.dataset.html !== html) {
    box.innerHTML = html; box.dataset.html = html;
    for (const b of box.querySelectorAll("[data-seen]")) b.onclick = () => { S.seenEsc.add(b.dataset.seen); sessionStorage.setItem("pl.seenEsc", JSON.stringify([...S.seenEsc])); S.dirty.banners = true; };
  }
  document.body.classList.toggle("drilling", drills.length > 0);
}

// ------------------------------------------------------------------ camera tiles and live video
function buildTiles(cams) {
  const box = document.getElementById("tiles");
  document.getElementById("camCount").textContent = cams.length;
  cams.forEach((c, n) => {
    const el = document.createElement("div");
    el.className = "tile"; el.dataset.camera = c.id; el.dataset.frames = "0";
    el.innerHTML = `<video muted autoplay playsinline></video><img class="still hidden" alt="">` +
      `<svg class="boxes" preserveAspectRatio="none"></svg><div class="novideo">connecting…</div>` +
      `<div class="cap"><span class="hl h-unknown">?</span><b>${PL.esc(c.id)}</b><span class="nm">${PL.esc(c.name)}</span>` +
      `<button type="button" class="flagbtn" data-flag="${PL.esc(c.id)}" title="flag an incident seen on ${PL.esc(c.id)}">⚑ flag</button></div>` +
      `<div class="alertcap hidden"></div><div class="mode">…</div>`;
    el.title = `${c.id}: ${c.name}`;
    el.onclick = () => el.classList.toggle("big");
    // what the operator sees on this feed: an incident at the camera, with the camera named
    el.querySelector(".flagbtn").onclick = (ev) => { ev.stopPropagation(); openFlag(c.lat, c.lon, c); };
    box.appendChild(el);
    const t = { cam: c, el, video: el.querySelector("video"), img: el.querySelector("img.still"), pc: null, peer: null, mode: "connecting", frames: 0, lastFrame: 0, started: 0, retryAt: 0, snapT: null, reason: "" };
    S.tiles.set(c.id, t);
    setTimeout(() => startRtc(t), 150 * n);
  });
}

function countFrames(t) {
  const v = t.video;
  const seen = () => { t.frames++; t.lastFrame = performance.now(); t.el.dataset.frames = String(t.frames); if (t.mode !== "live" && t.frames >= 3) setMode(t, "live"); };
  const cb = () => { seen(); v.requestVideoFrameCallback(cb); };
  if (v.requestVideoFrameCallback) v.requestVideoFrameCallback(cb);
  else v.addEventListener("timeupdate", seen);
}

function setMode(t, mode, reason) {
  t.mode = mode; if (reason !== undefined) t.reason = reason;
  t.el.dataset.mode = mode;
  t.el.querySelector(".mode").textContent = mode === "live" ? "LIVE" : mode === "still" ? "STILL" : mode === "none" ? "" : "…";
  t.el.querySelector(".mode").title = mode === "live" ? "live video over WebRTC" : mode === "still" ? "WebRTC cannot connect: stills every 2 s" : "";
  t.video.classList.toggle("hidden", mode !== "live");
  t.img.classList.toggle("hidden", mode !== "still");
  const nv = t.el.querySelector(".novideo");
  nv.classList.toggle("hidden", mode === "live" || mode === "still");
  if (mode === "none") nv.innerHTML = "<b>NO VIDEO</b>" + (t.reason ? PL.esc(t.reason) : "");
  else if (mode === "connecting") nv.textContent = "connecting…";
}

async function startRtc(t) {
  stopRtc(t);
  t.started = performance.now(); t.frames = 0; t.el.dataset.frames = "0";
  if (t.mode !== "still") setMode(t, "connecting");
  try {
    const pc = new RTCPeerConnection({ iceServers: [] });
    t.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (ev) => { t.video.srcObject = new MediaStream([ev.track]); t.video.play().catch(() => {}); };
    pc.onconnectionstatechange = () => { if (pc.connectionState === "failed" && t.pc === pc) fallback(t, "WebRTC connection failed"); };
    if (!t.counting) { countFrames(t); t.counting = true; }
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((res) => {
      if (pc.iceGatheringState === "complete") return res();
      const to = setTimeout(res, 1500);
      pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") { clearTimeout(to); res(); } });
    });
    const ans = await PL.api("POST", `/api/cameras/${encodeURIComponent(t.cam.id)}/webrtc`, { sdp: pc.localDescription.sdp, type: "offer" });
    if (t.pc !== pc) return;
    t.peer = ans.peer;
    await pc.setRemoteDescription({ sdp: ans.sdp, type: ans.type });
  } catch (e) {
    fallback(t, "WebRTC: " + e.message);
  }
}
function stopRtc(t) {
  if (t.pc) { try { t.pc.close(); } catch (e) {} t.pc = null; }
  if (t.peer) { PL.api("POST", `/api/webrtc/${encodeURIComponent(t.peer)}/close`, {}).catch(() => {}); t.peer = null; }
}
function fallback(t, why) {
  stopRtc(t);
  t.reason = why; t.retryAt = performance.now() + 45000;
  if (t.mode !== "still") setMode(t, "none", why);
  snapshotLoop(t, 0);
}
async function snapshotLoop(t, delay) {
  clearTimeout(t.snapT);
  t.snapT = setTimeout(async () => {
    if (t.mode === "live" || t.mode === "connecting") return;
    let next = 2000;
    try {
      const r = await fetch(`/api/cameras/${encodeURIComponent(t.cam.id)}/snapshot.jpg?t=${Date.now()}`, { credentials: "same-origin" });
      if (!r.ok) { const d = await r.json().catch(() => ({})); throw new Error(d.error || r.statusText); }
      const url = URL.createObjectURL(await r.blob());
      const old = t.img.src; t.img.src = url; if (old && old.startsWith("blob:")) URL.revokeObjectURL(old);
      setMode(t, "still");
    } catch (e) { setMode(t, "none", e.message.replace(/^no picture from camera \S+: /, "")); next = 15000; }
    // try live video again now and then, but only for a camera that gives pictures
    if (t.mode === "still" && performance.now() > t.retryAt) { startRtc(t); return; }
    snapshotLoop(t, next + Math.random() * 1000);
  }, delay);
}

function tileAlert(camId) {
  let best = null;
  for (const a of S.alerts.values()) {
    if (a.camera !== camId || (a.verdict && a.verdict.verdict === "dismissed")) continue;
    const age = (PL.now() - PL.ts(a.last_time)) / 1000;
    if (age > ALERT_HIGHLIGHT_S) continue;
    if (a.phase === "end" && age > 20) continue;
    if (!best || PL.ts(a.last_time) > PL.ts(best.last_time)) best = a;
  }
  return best;
}
function renderTiles() {
  const now = performance.now();
  for (const t of S.tiles.values()) {
    // watchdogs: no first frame, or frames stopped
    if (t.mode === "connecting" && now - t.started > RTC_FIRST_FRAME_S * 1000) fallback(t, "no video frames over WebRTC");
    else if (t.mode === "live" && t.lastFrame && now - t.lastFrame > 6000) fallback(t, "video stalled");
    const h = S.health.get(t.cam.id);
    const hl = t.el.querySelector(".hl");
    const st = h ? h.state : "unknown";
    const label = h ? (st === "online" ? "● OK" : st === "degraded" ? "◐ SLOW" : "✗ OFF") : "?";
    const txt = label + (h && h.fps && st !== "offline" ? ` ${h.fps.toFixed(0)}fps` : "");
    if (hl.textContent !== txt) { hl.textContent = txt; hl.className = "hl h-" + st; hl.title = h ? `${st}: ${h.detail}` : "no health report from the camera adapter"; }
    t.el.dataset.health = st;
    const a = tileAlert(t.cam.id);
    t.el.classList.toggle("alerting", !!a);
    const ac = t.el.querySelector(".alertcap");
    const svg = t.el.querySelector("svg.boxes");
    if (a) {
      const txt2 = `⚠ ${a.exercise ? "DRILL " : ""}${PL.kindWord(a.kind).toUpperCase()} ${(a.zones || []).join(",")} ${a.score != null ? a.score.toFixed(2) : ""}`;
      if (ac.textContent !== txt2) ac.textContent = txt2;
      ac.classList.remove("hidden");
      const key = a.event_id + ":" + a.updates;
      if (svg.dataset.key !== key) {
        svg.dataset.key = key;
        const fs = a.frame_size || [640, 360];
        svg.setAttribute("viewBox", `0 0 ${fs[0]} ${fs[1]}`);
        const boxes = (a.detections && a.detections.length ? a.detections.map((d) => d.box) : (a.box ? [a.box] : []));
        svg.innerHTML = boxes.map((b) => `<rect x="${b[0]}" y="${b[1]}" width="${b[2] - b[0]}" height="${b[3] - b[1]}" fill="none" stroke="#ff2d2d" stroke-width="${Math.max(2, fs[0] / 200)}"/>`).join("");
      }
    } else {
      ac.classList.add("hidden");
      if (svg.dataset.key) { svg.innerHTML = ""; svg.dataset.key = ""; }
    }
  }
}

// ------------------------------------------------------------------ alert queue
function renderAlerts() {
  const list = [...S.alerts.values()];
  const pending = list.filter((a) => !a.verdict).sort((x, y) => PL.ts(y.last_time) - PL.ts(x.last_time));
  const done = list.filter((a) => a.verdict).sort((x, y) => PL.ts(y.last_time) - PL.ts(x.last_time)).slice(0, 25);
  document.getElementById("alertCount").textContent = `${pending.length} to check`;
  const ul = document.getElementById("aq");
  const html = pending.concat(done).slice(0, 80).map(alertItem).join("");
  if (ul.dataset.html !== html) {
    ul.innerHTML = html; ul.dataset.html = html;
    for (const b of ul.querySelectorAll("button[data-act]")) b.onclick = () => alertAction(b.dataset.act, b.dataset.event);
  }
  for (const sp of ul.querySelectorAll("span.ago")) { const t = PL.ago(sp.dataset.t); if (sp.textContent !== t) sp.textContent = t; }
}
function alertItem(a) {
  const inc = a.incident_id ? S.incidents.get(a.incident_id) : null;
  const snap = a.snapshot ? `<img loading="lazy" src="/api/snapshots/${a.snapshot.split("/").map(encodeURIComponent).join("/")}" alt="snapshot ${PL.esc(a.camera)}">` : `<img alt="no snapshot">`;
  const v = a.verdict;
  const verdict = v ? `<div class="verdict ${PL.esc(v.verdict)}">${v.verdict === "confirmed" ? "✓ CONFIRMED" : "✗ DISMISSED"} by ${PL.esc(v.by || "?")} ${PL.hms(v.time)}${v.reason ? " — " + PL.esc(v.reason) : ""}</div>` : "";
  const incl = inc ? `<div class="incl">→ incident ${PL.badge(PL.INC_STATE, inc.state)} ${inc.unit ? PL.esc(inc.unit) : ""}</div>` : "";
  const acts = v ? "" : `<div class="acts"><button class="go" data-act="confirm" data-event="${PL.esc(a.event_id)}">✓ Confirm</button>` +
    `<button class="stop" data-act="dismiss" data-event="${PL.esc(a.event_id)}">✗ Dismiss…</button>` +
    `<button data-act="view" data-event="${PL.esc(a.event_id)}">⤢ Camera</button></div>`;
  const ended = a.phase === "end" ? " · ended" : "";
  return `<li data-event="${PL.esc(a.event_id)}" data-camera="${PL.esc(a.camera)}" class="${v ? "done" : ""} ${a.exercise ? "drill" : ""}">${snap}<div>` +
    `<div>${PL.pri(a.priority || 2)} <span class="kind">${PL.esc(PL.kindWord(a.kind))}</span> ${PL.drillTag(a.exercise)}</div>` +
    `<div class="meta"><b>${PL.esc(a.camera)}</b> ${PL.esc(a.camera_name || "")}</div>` +
    `<div class="meta">zone ${PL.esc((a.zones || []).join(", ") || "—")} · ${PL.esc(a.label || "")} ${a.score != null ? "score " + a.score.toFixed(2) : ""}</div>` +
    `<div class="meta">${PL.hms(a.first_time)} (<span class="ago" data-t="${PL.esc(a.first_time)}"></span> ago)${ended}</div>${incl}${verdict}${acts}</div></li>`;
}
async function alertAction(act, eid) {
  const a = S.alerts.get(eid);
  if (!a) return;
  if (act === "view") { const t = S.tiles.get(a.camera); if (t) t.el.classList.add("big"); return; }
  if (act === "confirm") {
    try {
      await PL.api("POST", `/api/alerts/${encodeURIComponent(eid)}/confirm`, {});
      a.verdict = { verdict: "confirmed", by: S.me.username, time: new Date(PL.now()).toISOString() };  // the live channel will confirm it
      S.dirty.alerts = true;
      PL.toast(`Confirmed ${PL.kindWord(a.kind)} at ${a.camera}`);
    } catch (e) { PL.toast("confirm failed: " + e.message, true); }
    return;
  }
  if (act === "dismiss") {
    const d = document.getElementById("dlgDismiss");
    d.dataset.event = eid;
    document.getElementById("dismissWhat").innerHTML = `${PL.pri(a.priority || 2)} ${PL.esc(PL.kindWord(a.kind))} at ${PL.esc(a.camera)} ${PL.esc(a.camera_name || "")}`;
    document.getElementById("dismissNote").value = "";
    d.showModal();
  }
}

// ------------------------------------------------------------------ incident board
function currentAttempt(i) { const at = i.attempts || []; for (let k = at.length - 1; k >= 0; k--) if (at[k].order_id === i.order) return at[k]; return null; }
function evTime(i, kinds, after) {
  for (const e of (i.timeline || [])) if (kinds.includes(e.event) && (!after || PL.ts(e.time) >= after)) return PL.ts(e.time);
  return NaN;
}
function ackCell(i) {
  const late = (i.attempts || []).filter((a) => a.outcome === "timed_out");
  const lateTxt = late.length ? `<span class="warnbadge warn-late" data-warn="ack-late">⚠ ACK LATE: ${late.map((a) => PL.esc(a.unit)).join(", ")} (no answer in ${Math.round((PL.ts(late[0].deadline) - PL.ts(late[0].sent_at)) / 1000)}s)</span> ` : "";
  const at = currentAttempt(i);
  if (i.state === "assigned" && at) {
    const left = (PL.ts(at.deadline) - PL.now()) / 1000, win = (PL.ts(at.deadline) - PL.ts(at.sent_at)) / 1000;
    if (left < 0) return lateTxt + `<span class="warnbadge warn-late" data-warn="ack-late" data-timer="running">⚠ ACK LATE +${Math.floor(-left)}s</span>`;
    if (left < Math.max(5, win / 3)) return lateTxt + `<span class="warnbadge warn-due" data-timer="running">◔ ACK DUE ${Math.ceil(left)}s</span>`;
    return lateTxt + `<span class="tm" data-timer="running">◔ ${Math.ceil(left)}s left</span>`;
  }
  if (at && ["acknowledged", "en_route", "on_scene", "resolved"].includes(i.state)) {
    const t = evTime(i, ["acknowledged", "en_route", "on_scene"], PL.ts(at.sent_at));
    const took = isNaN(t) ? "" : ((t - PL.ts(at.sent_at)) / 1000).toFixed(1) + "s";
    return lateTxt + `<span class="ok-done" data-timer="stopped">✓ ACK ${took}</span>`;
  }
  return lateTxt || `<span class="dim">—</span>`;
}
function nextStep(i) {
  const since = (iso) => (PL.now() - PL.ts(iso)) / 1000;
  const closed = ["resolved", "cancelled"].includes(i.state);
  if (closed) return `<span class="dim">${PL.esc(i.disposition || "")}</span>`;
  if (i.state === "escalated" && !i.unit) return `<span class="warnbadge warn-late" data-warn="no-unit">⚠ NO UNIT FREE — supervisors told</span>`;
  if (["new", "queued"].includes(i.state) && !i.unit) {
    const s = since(i.updated_at || i.opened_at);
    return s > NO_UNIT_WARN_S ? `<span class="warnbadge warn-late" data-warn="no-unit">⚠ NO UNIT ${PL.dur(s)}</span>` : `<span class="dim">choosing a unit…</span>`;
  }
  const at = currentAttempt(i);
  if (i.state === "acknowledged") {
    const t = evTime(i, ["acknowledged"], at ? PL.ts(at.sent_at) : 0);
    const s = isNaN(t) ? 0 : (PL.now() - t) / 1000;
    return s > NOT_MOVING_S ? `<span class="warnbadge warn-due" data-warn="not-moving">⚠ NOT EN ROUTE ${PL.dur(s)}</span>` : `<span class="dim">expect EN ROUTE</span>`;
  }
  if (i.state === "en_route") {
    const t = evTime(i, ["en_route"], at ? PL.ts(at.sent_at) : 0);
    const eta = (at && at.eta_s) || i.eta_s || 0;
    const s = isNaN(t) ? 0 : (PL.now() - t) / 1000;
    return s > eta + ONSCENE_GRACE_S ? `<span class="warnbadge warn-due" data-warn="overdue">⚠ NOT ON SCENE ${PL.dur(s)} (ETA ${PL.dur(eta)})</span>` : `<span class="dim">on scene in ~${PL.dur(Math.max(0, eta - s))}</span>`;
  }
  if (i.state === "on_scene") return `<span class="dim">on scene ${PL.dur(since(i.updated_at))}</span>`;
  if (i.state === "assigned") return `<span class="dim">waiting for ACK</span>`;
  return "";
}
function whyCell(i) {
  const x = i.explanation;
  if (!x) return "";
  const cands = (x.candidates || []).map((c) => `${PL.esc(c.unit)} ${PL.dur(c.eta_s)} (${Math.round(c.distance_m)} m, ${PL.esc(c.method)})`).join("<br>");
  const sk = (x.skipped || []).slice(0, 8).map((s) => `${PL.esc(s.unit)}: ${PL.esc(s.reason)}`).join("<br>");
  const stale = !i.unit && x.chosen ? "last choice: " : "";
  return `<details><summary>${stale}${PL.esc(x.note || "")}</summary><div><b>candidates</b><br>${cands || "none"}</div><div><b>not chosen</b><br>${sk || "—"}</div></details>`;
}
function row(i) {
  const u = i.unit ? S.units.get(i.unit) : null;
  const closed = ["resolved", "cancelled"].includes(i.state);
  const at = currentAttempt(i);
  const place = (i.place && i.place.description) || (i.place ? `${i.place.lat.toFixed(5)}, ${i.place.lon.toFixed(5)}` : "");
  const canAct = !closed;
  const acts = canAct ? `<button data-act="close" data-incident="${PL.esc(i.id)}">Close…</button> <button data-act="reassign" data-incident="${PL.esc(i.id)}" ${i.unit ? "" : "disabled"}>Reassign…</button> <button data-act="escalate" data-incident="${PL.esc(i.id)}" ${i.escalated ? "disabled" : ""}>Escalate…</button>` : "";
  const cls = [closed ? "closed" : "", i.exercise ? "drillrow" : "", i.state === "escalated" ? "escal" : "", S.selected === i.id ? "sel" : ""].join(" ");
  return `<tr data-incident="${PL.esc(i.id)}" data-state="${PL.esc(i.state)}" class="${cls}">` +
    `<td>${PL.pri(i.priority)}</td>` +
    `<td title="incident ${PL.esc(i.id)} · ${PL.esc(i.certainty || "")}"><b>${PL.esc(PL.kindWord(i.kind).toUpperCase())}</b> ${i.camera ? `<span class="dim small">${PL.esc(i.camera)}</span> ` : ""}${i.certainty === "Observed" ? `<span class="dim small">✓ seen</span> ` : ""}${PL.drillTag(i.exercise)}<span class="place small">${PL.esc(place)}</span><div class="why">${whyCell(i)}</div></td>` +
    `<td>${PL.badge(PL.INC_STATE, i.state)}</td>` +
    `<td class="unitcell" title="${u ? PL.esc(u.callsign || "") : ""}">${i.unit ? `<b>${PL.esc(i.unit)}</b> ${u ? PL.badge(PL.UNIT_STATE, u.state) : ""}` : `<span class="dim">none</span>`}</td>` +
    `<td class="tm c-alert"></td><td class="tm c-order"></td>` +
    `<td class="ackcell"></td><td class="nextcell"></td><td class="acts">${acts}</td></tr>`;
}
function dynamicCells(i) {
  const closed = ["resolved", "cancelled"].includes(i.state);
  const at = currentAttempt(i);
  return {
    "c-alert": closed ? PL.dur((PL.ts(i.closed_at || i.updated_at) - PL.ts(i.opened_at)) / 1000) + " total" : PL.dur((PL.now() - PL.ts(i.opened_at)) / 1000),
    "c-order": at && !closed ? PL.dur((PL.now() - PL.ts(at.sent_at)) / 1000) + (i.attempts.length > 1 ? ` <span class="dim">try ${i.attempts.length}</span>` : "") : "—",
    "ackcell": ackCell(i),
    "nextcell": nextStep(i),
  };
}
function renderBoard() {
  const all = [...S.incidents.values()];
  const order = (a, b) => (["resolved", "cancelled"].includes(a.state) - ["resolved", "cancelled"].includes(b.state)) || a.priority - b.priority || PL.ts(a.opened_at) - PL.ts(b.opened_at);
  const real = all.filter((i) => !i.exercise).sort(order), drill = all.filter((i) => i.exercise).sort(order);
  const open = (l) => l.filter((i) => !["resolved", "cancelled"].includes(i.state)).length;
  document.getElementById("incCount").textContent = `${open(real)} open` + (drill.length ? ` · drill ${open(drill)} open` : "");
  let html = `<tr class="section real"><td colspan="9">Real incidents — ${open(real)} open</td></tr>` + (real.length ? real.map(row).join("") : `<tr><td colspan="9" class="dim">No incidents.</td></tr>`);
  if (drill.length) {
    const ids = [...new Set(drill.map((i) => i.exercise))].join(", ");
    html += `<tr class="section drill"><td colspan="9">▲ DRILL incidents (exercise ${PL.esc(ids)}) — ${open(drill)} open — not real</td></tr>` + drill.map(row).join("");
  }
  const tb = document.getElementById("incRows");
  if (tb.dataset.html !== html) {
    // keep open <details> open across re-renders
    const openDetails = new Set([...tb.querySelectorAll("tr[data-incident] details[open]")].map((d) => d.closest("tr").dataset.incident));
    tb.innerHTML = html; tb.dataset.html = html;
    for (const id of openDetails) { const d = tb.querySelector(`tr[data-incident="${CSS.escape(id)}"] details`); if (d) d.open = true; }
    for (const b of tb.querySelectorAll("button[data-act]")) b.onclick = (ev) => { ev.stopPropagation(); incidentAction(b.dataset.act, b.dataset.incident); };
    for (const r of tb.querySelectorAll("tr[data-incident]")) r.onclick = (ev) => { if (ev.target.closest("details, button")) return; S.selected = S.selected === r.dataset.incident ? null : r.dataset.incident; S.dirty.board = true; S.dirty.map = true; };
  }
  for (const r of tb.querySelectorAll("tr[data-incident]")) {
    const i = S.incidents.get(r.dataset.incident);
    if (!i) continue;
    const cells = dynamicCells(i);
    for (const cls in cells) { const td = r.querySelector("td." + cls); if (td && td.dataset.v !== cells[cls]) { td.innerHTML = cells[cls]; td.dataset.v = cells[cls]; } }
  }
}

function incidentAction(act, iid) {
  const i = S.incidents.get(iid);
  if (!i) return;
  const what = `${PL.pri(i.priority)} ${PL.esc(PL.kindWord(i.kind))} — ${PL.esc((i.place && i.place.description) || "")} ${i.unit ? "— unit " + PL.esc(i.unit) : ""}`;
  if (act === "close") {
    const d = document.getElementById("dlgClose"); d.dataset.incident = iid;
    document.getElementById("closeWhat").innerHTML = what; document.getElementById("closeNote").value = ""; document.getElementById("closeCancel").checked = false;
    d.showModal();
  } else {
    const d = document.getElementById("dlgReassign"); d.dataset.incident = iid; d.dataset.act = act;
    document.getElementById("reassignTitle").textContent = act === "reassign" ? "Reassign to another unit" : "Escalate to supervisors";
    document.getElementById("reassignWhat").innerHTML = what;
    document.getElementById("reassignUnitRow").classList.toggle("hidden", act !== "reassign" || S.me.role !== "supervisor");
    const sel = document.getElementById("reassignUnit");
    sel.innerHTML = `<option value="">engine chooses the next best</option>` + [...S.units.values()].filter((u) => u.state === "available" && (u.exercise || null) === (i.exercise || null)).map((u) => `<option value="${PL.esc(u.id)}">${PL.esc(u.id)} ${PL.esc(u.callsign || "")} (${PL.esc(u.kind)})</option>`).join("");
    document.getElementById("reassignReason").value = "";
    d.showModal();
  }
}

// ------------------------------------------------------------------ map
function legend() {
  const items = [["available", "free"], ["assigned", "ordered"], ["en_route", "en route / ack"], ["on_scene", "on scene"], ["busy", "busy"], ["off_duty", "off duty"]];
  document.getElementById("legend").innerHTML = items.map(([s, w]) => `<span><span class="sw" style="background:${PL.UNIT_COLOR[s]}"></span>${w}</span>`).join(" &nbsp;") +
    `<br>◆ incident (P1 red, P2 orange, P3 grey) · ▭ camera · — route · yellow dashes = DRILL`;
}
function renderMap() {
  if (!S.map) return;
  S.map.setUnits([...S.units.values()]);
  S.map.setIncidents([...S.incidents.values()], S.selected);
  S.map.setMarks(S.pick ? [S.pick] : []);
}

// ------------------------------------------------------------------ flag by clicking the map
function fillKinds() {
  document.getElementById("flagKind").innerHTML = PL.KINDS.filter((k) => !k.startsWith("camera_")).map((k) => `<option value="${k}">${PL.kindWord(k)}</option>`).join("");
}
function openFlag(lat, lon, cam) {
  S.pick = { lat, lon, kind: "pick", label: cam ? `flag at ${cam.id}?` : "flag here?" }; S.dirty.map = true;
  const d = document.getElementById("dlgFlag");
  d.dataset.lat = lat; d.dataset.lon = lon; d.dataset.camera = cam ? cam.id : "";
  document.getElementById("flagPlace").textContent = cam ? `seen on camera ${cam.id} (${cam.name})` : `at ${lat.toFixed(5)}, ${lon.toFixed(5)}`;
  document.getElementById("flagNote").value = "";
  const drills = activeDrills();
  document.getElementById("flagDrill").innerHTML = `<option value="">Real operations</option>` + drills.map((x) => `<option value="${PL.esc(x)}">DRILL ${PL.esc(x)}</option>`).join("");
  // a drill camera's picture is drill traffic: offer its drill first
  const h = cam && S.health.get(cam.id);
  if (h && h.exercise && drills.includes(h.exercise)) document.getElementById("flagDrill").value = h.exercise;
  d.showModal();
}

function wireDialogs() {
  const flag = document.getElementById("dlgFlag");
  document.getElementById("flagCancel").onclick = () => { flag.close(); S.pick = null; S.dirty.map = true; };
  document.getElementById("flagForm").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {
      lat: parseFloat(flag.dataset.lat), lon: parseFloat(flag.dataset.lon), kind: document.getElementById("flagKind").value,
      priority: parseInt(document.querySelector('input[name="flagPri"]:checked').value, 10), note: document.getElementById("flagNote").value,
    };
    const ex = document.getElementById("flagDrill").value; if (ex) body.exercise = ex;
    if (flag.dataset.camera) body.camera = flag.dataset.camera;
    try {
      const r = await PL.api("POST", "/api/incidents/flag", body);
      flag.close(); S.pick = null; S.dirty.map = true;
      PL.toast(`Flagged P${body.priority} ${PL.kindWord(body.kind)} at ${r.place}: dispatching…`);
    } catch (e) { PL.toast("flag failed: " + e.message, true); }
  });
  const dis = document.getElementById("dlgDismiss");
  document.getElementById("dismissNo").onclick = () => dis.close();
  document.getElementById("dismissForm").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const eid = dis.dataset.event, note = document.getElementById("dismissNote").value.trim();
    const reason = document.getElementById("dismissReason").value + (note ? ": " + note : "");
    try {
      const r = await PL.api("POST", `/api/alerts/${encodeURIComponent(eid)}/dismiss`, { reason, cancel_incident: document.getElementById("dismissCancel").checked });
      dis.close();
      const a = S.alerts.get(eid); if (a) { a.verdict = { verdict: "dismissed", by: S.me.username, reason, time: new Date(PL.now()).toISOString() }; S.dirty.alerts = true; }
      PL.toast("Dismissed" + (r.cancelled_incident ? "; its incident is being cancelled" : ""));
    } catch (e) { PL.toast("dismiss failed: " + e.message, true); }
  });
  const cl = document.getElementById("dlgClose");
  document.getElementById("closeNo").onclick = () => cl.close();
  document.getElementById("closeForm").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const note = document.getElementById("closeNote").value.trim();
    const disposition = document.getElementById("closeDisp").value + (note ? ": " + note : "");
    try {
      await PL.api("POST", `/api/incidents/${encodeURIComponent(cl.dataset.incident)}/close`, { disposition, cancel: document.getElementById("closeCancel").checked });
      cl.close(); PL.toast("Close sent: " + disposition);
    } catch (e) { PL.toast("close failed: " + e.message, true); }
  });
  const ra = document.getElementById("dlgReassign");
  document.getElementById("reassignNo").onclick = () => ra.close();
  document.getElementById("reassignForm").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const act = ra.dataset.act, reason = document.getElementById("reassignReason").value.trim();
    const body = { reason };
    if (act === "reassign") { const u = document.getElementById("reassignUnit").value; if (u) body.unit = u; }
    try {
      await PL.api("POST", `/api/incidents/${encodeURIComponent(ra.dataset.incident)}/${act}`, body);
      ra.close(); PL.toast(act === "reassign" ? "Reassign sent" : "Escalation sent");
    } catch (e) { PL.toast(act + " failed: " + e.message, true); }
  });
}
