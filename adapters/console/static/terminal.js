/* PatrolLink patrol terminal (phone-sized). A unit sees only its own orders and talkgroup. */
"use strict";

const T = {
  me: null, unitInfo: null, unit: null, order: null, mapData: null, broadcasts: [], readOnly: false, watchUnit: null,
  pos: null, sentPos: null, byHand: false, posMap: null, orderMap: null, orderKey: "", localState: null, busy: false,
  seenBc: new Set(),
};
window.PLTerminal = T;

(async function main() {
  const me = await PL.api("GET", "/api/me");
  PL.setServerNow(me.now);
  T.me = me.user;
  const q = new URLSearchParams(location.search);
  T.watchUnit = me.user.role === "unit" ? me.user.unit : q.get("unit");
  T.readOnly = me.user.role !== "unit";
  T.unitInfo = me.unit;
  document.getElementById("callsign").textContent = (me.unit && me.unit.callsign) || T.watchUnit || "?";
  document.getElementById("unitid").textContent = (T.watchUnit || "") + (T.readOnly ? " (viewed by operator, read only)" : "");
  document.getElementById("logout").onclick = PL.logout;
  T.mapData = await PL.api("GET", "/api/map");
  for (const b of document.querySelectorAll("#statusBtns button")) b.onclick = () => sendStatus(b.dataset.status);
  document.getElementById("byHand").onclick = toggleByHand;
  wireDialogs();
  PL.live("/ws" + (T.readOnly ? "?unit=" + encodeURIComponent(T.watchUnit) : ""), onLive, (ok) => {
    const c = document.getElementById("conn"); c.className = "conn " + (ok ? "ok" : "bad"); c.textContent = ok ? "● LIVE" : "✗ OFFLINE";
  });
  startGeolocation();
  setInterval(tick, 250);
  setInterval(() => { if (T.pos && !T.readOnly) { T.sentPos = null; setPos(T.pos); } }, 30000);  // keep the engine's fix fresh
  render();
})().catch((e) => PL.toast("terminal failed to start: " + e.message, true));

function onLive(t, d) {
  if (t === "snapshot") { T.unit = d.unit; setOrder(d.order); T.broadcasts = d.broadcasts || []; render(); }
  else if (t === "unit") { T.unit = d; if (T.localState && d.state === T.localState) T.localState = null; renderHeader(); renderOrder(); }
  else if (t === "order") {
    if (d.action === "assign") { setOrder(d); if (navigator.vibrate) navigator.vibrate([300, 100, 300]); }
    else if (T.order && d.order_id === T.order.order_id) { setOrder(null); PL.toast("Order withdrawn: " + (d.reason || "")); }
    render();
  } else if (t === "broadcast") { T.broadcasts.push(d); renderBanners(); }
}
function setOrder(o) {
  T.order = o; T.localState = null;
  if (o) T.order.receivedAt = PL.now();
}

function unitState() {
  if (T.localState) return T.localState;
  if (!T.unit) return "unknown";
  if (T.order && T.unit.order !== T.order.order_id && ["available", "unknown"].includes(T.unit.state)) return "assigned";  // order here before the record
  return T.unit.state;
}

function render() { renderHeader(); renderBanners(); renderOrder(); renderPos(); }

function renderHeader() {
  const st = unitState();
  document.getElementById("ustate").innerHTML = PL.badge(PL.UNIT_STATE, st) + (T.unit && T.unit.exercise ? " " + PL.drillTag(T.unit.exercise) : "");
  const holding = !!T.order;
  for (const b of document.querySelectorAll("#statusBtns button")) {
    b.classList.toggle("on", st === b.dataset.status);
    b.disabled = T.readOnly || holding;
    b.title = holding ? "finish or decline the order first" : "";
  }
}

function renderBanners() {
  const box = document.getElementById("banners");
  const parts = [];
  const ex = (T.order && T.order.exercise) || (T.unit && T.unit.exercise);
  if (ex) parts.push(`<div class="banner banner-drill" id="drillBanner"><span>▲ DRILL ${PL.esc(ex)} — exercise, not real</span></div>`);
  for (const b of T.broadcasts.slice(-3)) {
    const key = b.id;
    if (T.seenBc.has(key) || PL.now() - PL.ts(b.time) > 600000) continue;
    parts.push(`<div class="banner banner-broadcast t-bc" data-bc="${PL.esc(key)}"><div>⚠ ${PL.esc((b.talkgroup || "").toUpperCase())} ${b.priority ? "P" + b.priority : ""} ${PL.drillTag(b.exercise)}<br>${PL.esc(b.text)}</div><button type="button" data-seen="${PL.esc(key)}">OK</button></div>`);
  }
  const html = parts.join("");
  if (box.dataset.html !== html) {
    box.innerHTML = html; box.dataset.html = html;
    for (const b of box.querySelectorAll("[data-seen]")) b.onclick = () => { T.seenBc.add(b.dataset.seen); renderBanners(); };
  }
}

function renderOrder() {
  const box = document.getElementById("order");
  const none = document.getElementById("none");
  const o = T.order;
  none.classList.toggle("hidden", !!o);
  if (!o) { box.innerHTML = ""; T.orderKey = ""; return; }
  const st = unitState();
  const key = o.order_id + ":" + st;
  if (T.orderKey === key) return;
  const firstDraw = !T.orderKey.startsWith(o.order_id + ":");
  T.orderKey = key;
  const p = o.place || {};
  const snap = o.snapshot ? `<img class="snap" alt="snapshot" src="/api/snapshots/${o.snapshot.split("/").map(encodeURIComponent).join("/")}">` : "";
  let btns = "";
  const ro = T.readOnly ? "disabled" : "";
  if (st === "assigned") btns = `<button class="go" data-reply="ack" ${ro}>✓ ACKNOWLEDGE</button><div class="row2"><button data-reply="on_scene" ${ro}>● On scene</button><button class="stop" data-reply="decline" ${ro}>✗ Decline…</button></div>`;
  else if (st === "acknowledged") btns = `<button class="go" data-reply="en_route" ${ro}>→ EN ROUTE</button><button data-reply="on_scene" ${ro}>● ON SCENE</button>`;
  else if (st === "en_route") btns = `<button class="go" data-reply="on_scene" ${ro}>● ON SCENE</button>`;
  else if (st === "on_scene") btns = `<button class="go" data-reply="cleared" ${ro}>✓ CLEARED…</button>`;
  else btns = `<div class="dim">state: ${PL.esc(st)}</div>`;
  box.innerHTML = `<div class="t-order p${o.priority} ${o.exercise ? "drill" : ""}" data-order="${PL.esc(o.order_id)}" data-incident="${PL.esc(o.incident_id)}">` +
    `<div class="hd">${PL.pri(o.priority)}<span class="k">${PL.esc(PL.kindWord(o.kind))}</span>${PL.drillTag(o.exercise)}</div>` +
    `<div class="place">⚑ ${PL.esc(p.description || `${(p.lat || 0).toFixed(5)}, ${(p.lon || 0).toFixed(5)}`)}</div>` +
    `<div class="count" id="count"></div>` +
    `<div class="t-btns" id="btns">${btns}</div>` +
    `<svg class="minimap" id="ordermap"></svg>` +
    `<div class="eta">${o.eta_s != null ? "ETA " + PL.dur(o.eta_s) + " by the route shown" : ""}${o.attempt > 1 ? ` · you are unit ${o.attempt} asked` : ""}</div>` +
    snap + `</div>`;
  for (const b of box.querySelectorAll("button[data-reply]")) b.onclick = () => reply(b.dataset.reply);
  const svg = document.getElementById("ordermap");
  T.orderMap = new PL.DistrictMap(svg, T.mapData, { interactive: false });
  drawOrderMap();
  if (firstDraw) window.scrollTo(0, 0);
  tick();
}
function drawOrderMap() {
  const o = T.order; if (!o || !T.orderMap) return;
  const p = o.place;
  const route = (o.route || []).map((x) => [x[0], x[1]]);
  T.orderMap.setIncidents([{ id: o.incident_id, place: p, route, priority: o.priority, state: unitState() === "assigned" ? "assigned" : "en_route", unit: T.watchUnit, kind: o.kind, exercise: o.exercise }]);
  const marks = [{ lat: p.lat, lon: p.lon, kind: "dest" }];
  if (T.pos) marks.push({ lat: T.pos.lat, lon: T.pos.lon, kind: "me" });
  T.orderMap.setMarks(marks);
  const pts = route.concat([[p.lat, p.lon]]); if (T.pos) pts.push([T.pos.lat, T.pos.lon]);
  T.orderMap.fit(pts, 80);
}

function tick() {
  const o = T.order, el = document.getElementById("count");
  if (!o || !el) return;
  const st = unitState();
  if (st === "assigned") {
    const left = (PL.ts(o.ack_deadline) - PL.now()) / 1000;
    if (isNaN(left)) { el.className = "count"; el.textContent = "ACKNOWLEDGE NOW"; }
    else if (left >= 0) { el.className = "count"; el.textContent = `ACKNOWLEDGE WITHIN ${Math.ceil(left)}s`; el.dataset.left = String(Math.ceil(left)); }
    else { el.className = "count late"; el.textContent = "ACK OVERDUE — the order may pass to another unit"; }
  } else {
    el.className = "count done";
    el.textContent = { acknowledged: "✓ ACKNOWLEDGED — go when ready", en_route: "→ EN ROUTE", on_scene: "● ON SCENE" }[st] || st;
  }
}

async function reply(kind) {
  if (T.busy || !T.order) return;
  if (kind === "decline") { document.getElementById("dlgDecline").showModal(); return; }
  if (kind === "cleared") { document.getElementById("dlgClear").showModal(); return; }
  await sendReply(kind, "");
}
async function sendReply(kind, reason) {
  const o = T.order;
  T.busy = true;
  for (const b of document.querySelectorAll("#btns button")) b.disabled = true;
  try {
    await PL.api("POST", "/api/unit/reply", { order_id: o.order_id, reply: kind, reason });
    const next = { ack: "acknowledged", en_route: "en_route", on_scene: "on_scene" }[kind];
    if (next) T.localState = next;
    if (kind === "decline" || kind === "cleared") { setOrder(null); PL.toast(kind === "decline" ? "Declined" : "Cleared: " + reason); }
  } catch (e) {
    PL.toast(e.message, true);
    if (e.status === 409) setOrder(null);
  } finally {
    T.busy = false; T.orderKey = ""; render();
  }
}
function wireDialogs() {
  const dd = document.getElementById("dlgDecline");
  document.getElementById("declineNo").onclick = () => dd.close();
  document.getElementById("declineForm").addEventListener("submit", (ev) => { ev.preventDefault(); dd.close(); sendReply("decline", document.getElementById("declineReason").value); });
  const dc = document.getElementById("dlgClear");
  document.getElementById("clearNo").onclick = () => dc.close();
  document.getElementById("clearForm").addEventListener("submit", (ev) => { ev.preventDefault(); dc.close(); sendReply("cleared", document.getElementById("clearReason").value); });
}

async function sendStatus(status) {
  try { await PL.api("POST", "/api/unit/status", { status }); T.localState = status; renderHeader(); PL.toast("Status: " + status.replace("_", " ")); }
  catch (e) { PL.toast(e.message, true); }
}

// ------------------------------------------------------------------ position: GPS when allowed, else by hand
function startGeolocation() {
  if (T.readOnly || !navigator.geolocation) { document.getElementById("posHelp").textContent = T.readOnly ? "" : "This browser has no location: set it by hand."; return; }
  navigator.geolocation.watchPosition((p) => {
    if (T.byHand) return;
    document.getElementById("posHelp").textContent = "";
    setPos({ lat: p.coords.latitude, lon: p.coords.longitude, acc: p.coords.accuracy, speed: p.coords.speed, heading: p.coords.heading, src: "gps" });
  }, (err) => {
    document.getElementById("posHelp").textContent = "Location " + (err.code === 1 ? "not allowed" : "unavailable") + ": tap \"set by hand\", then your place on the map.";
  }, { enableHighAccuracy: true, maximumAge: 5000, timeout: 20000 });
}
async function setPos(p) {
  T.pos = { ...p, time: PL.now() };
  renderPos();
  const last = T.sentPos;
  const moved = last ? Math.hypot((p.lat - last.lat) * 111320, (p.lon - last.lon) * 111320 * Math.cos(p.lat * Math.PI / 180)) : Infinity;
  if (last && moved < 15 && PL.now() - last.time < 10000 && p.src === last.src) return;
  const body = { lat: p.lat, lon: p.lon, accuracy_m: Math.min(p.acc || 10, 100000), source: p.src };
  if (p.speed != null && !isNaN(p.speed)) body.speed_mps = p.speed;
  if (p.heading != null && !isNaN(p.heading)) body.heading_deg = p.heading % 360;
  try { await PL.api("POST", "/api/unit/position", body); T.sentPos = { ...p, time: PL.now() }; }
  catch (e) { PL.toast("position not sent: " + e.message, true); }
}
function renderPos() {
  const el = document.getElementById("pos");
  if (!T.pos) { el.textContent = T.unit && T.unit.lat != null ? `last known ${T.unit.lat.toFixed(5)}, ${T.unit.lon.toFixed(5)} (${PL.ago(T.unit.fix_time)} ago)` : "not known"; }
  else el.textContent = `${T.pos.src === "gps" ? "GPS" : "set by hand"} ${T.pos.lat.toFixed(5)}, ${T.pos.lon.toFixed(5)}` + (T.pos.src === "gps" ? ` ±${Math.round(T.pos.acc || 0)} m` : "");
  if (T.posMap) T.posMap.setMarks(T.pos ? [{ lat: T.pos.lat, lon: T.pos.lon, kind: "me", label: "me" }] : []);
  if (T.orderMap && T.pos) drawOrderMap();
}
function toggleByHand() {
  if (T.readOnly) return;
  T.byHand = !T.byHand;
  const svg = document.getElementById("posmap");
  svg.classList.toggle("hidden", !T.byHand);
  document.getElementById("byHand").textContent = T.byHand ? "Use GPS again" : "Set by hand";
  if (T.byHand && !T.posMap) {
    T.posMap = new PL.DistrictMap(svg, T.mapData, { onClick: (lat, lon) => setPos({ lat, lon, acc: 25, src: "hand" }) });
    const beat = T.mapData.communities.find((c) => T.mapData.units.some((u) => u.id === T.watchUnit && u.beat === c.id));
    if (beat) T.posMap.fit(beat.boundary, 100);
  }
  renderPos();
}
