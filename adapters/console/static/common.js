/* PatrolLink pages: shared helpers (API, live channel, words and colours, the SVG district map). */
"use strict";

const PL = (() => {
  // ------------------------------------------------------------------ API
  async function api(method, path, body) {
    const opts = { method, credentials: "same-origin", headers: {} };
    if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
    const r = await fetch(path, opts);
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); throw new Error("log in first"); }
    if (!r.ok) { const err = new Error((data && data.error) || r.statusText); err.status = r.status; throw err; }
    return data;
  }

  // ------------------------------------------------------------------ clock (server time)
  let offsetMs = 0;  // server - browser
  function setServerNow(sec) { offsetMs = sec * 1000 - Date.now(); }
  function now() { return Date.now() + offsetMs; }
  function ts(iso) { return iso ? Date.parse(iso) : NaN; }
  function ago(iso) { const t = ts(iso); return isNaN(t) ? "" : dur((now() - t) / 1000); }
  function dur(s) {
    if (s == null || isNaN(s)) return "—";
    s = Math.max(0, s);
    if (s < 100) return Math.floor(s) + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(Math.floor(s % 60)).padStart(2, "0");
    return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0");
  }
  function hms(iso) { const t = ts(iso); if (isNaN(t)) return ""; const d = new Date(t); return d.toTimeString().slice(0, 8); }

  // ------------------------------------------------------------------ live channel
  function live(path, onMsg, onState) {
    let ws = null, backoff = 500, closed = false, pingT = null;
    function open() {
      const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
      ws = new WebSocket(url);
      ws.onopen = () => { backoff = 500; onState && onState(true); pingT = setInterval(() => { try { ws.send(JSON.stringify({ op: "ping" })); } catch (e) {} }, 15000); };
      ws.onmessage = (ev) => {
        let m; try { m = JSON.parse(ev.data); } catch (e) { return; }
        if (m.t === "hello" && m.d.now) setServerNow(m.d.now);
        if (m.t === "pong" && m.d.now) setServerNow(m.d.now);
        onMsg(m.t, m.d);
      };
      ws.onclose = (ev) => {
        clearInterval(pingT); onState && onState(false);
        if (closed) return;
        if (ev.code === 1008 || ev.code === 4401) { location.href = "/login"; return; }
        setTimeout(async () => {
          try { await api("GET", "/api/me"); } catch (e) { return; }  // logged out: api() went to /login
          open();
        }, backoff);
        backoff = Math.min(backoff * 2, 8000);
      };
    }
    open();
    return { close() { closed = true; ws && ws.close(); }, send(o) { ws && ws.readyState === 1 && ws.send(JSON.stringify(o)); } };
  }

  // ------------------------------------------------------------------ words, marks and colours
  const UNIT_STATE = {
    available: ["✓ FREE", "st-available"], assigned: ["◔ ORDERED", "st-assigned"], acknowledged: ["✓ ACK", "st-acknowledged"],
    en_route: ["→ EN ROUTE", "st-en_route"], on_scene: ["● ON SCENE", "st-on_scene"], busy: ["■ BUSY", "st-busy"],
    off_duty: ["– OFF DUTY", "st-off_duty"], unknown: ["? NO DATA", "st-unknown"],
  };
  const INC_STATE = {
    new: ["◌ NEW", "st-new"], queued: ["◌ WAITING FOR UNIT", "st-queued"], assigned: ["◔ ORDERED, NO ACK YET", "st-assigned"],
    acknowledged: ["✓ ACKNOWLEDGED", "st-acknowledged"], en_route: ["→ EN ROUTE", "st-en_route"], on_scene: ["● ON SCENE", "st-on_scene"],
    escalated: ["⚠ ESCALATED", "st-escalated"], resolved: ["✓ RESOLVED", "st-resolved"], cancelled: ["✗ CANCELLED", "st-cancelled"],
  };
  const UNIT_COLOR = { available: "#2fa84f", assigned: "#f0b400", acknowledged: "#2b7de0", en_route: "#2b7de0", on_scene: "#9b59d0", busy: "#7b8794", off_duty: "#3e4c59", unknown: "#55606b" };
  const KINDS = ["assault", "robbery", "fight", "weapon", "intrusion", "theft", "vandalism", "loitering", "crowd", "suspicious", "traffic", "medical", "fire", "camera_tamper", "camera_offline", "other"];
  function esc(s) { return String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c])); }
  function badge(map, state) { const [t, c] = map[state] || [String(state || "?").toUpperCase(), "st-unknown"]; return `<span class="badge ${c}" data-state="${esc(state)}">${esc(t)}</span>`; }
  function pri(p) { return `<span class="pri pri-${p}" title="priority ${p}">P${p}</span>`; }
  function kindWord(k) { return String(k || "").replace(/_/g, " "); }
  function drillTag(ex) { return ex ? `<span class="drilltag" title="drill ${esc(ex)}">DRILL ${esc(ex)}</span>` : ""; }

  let toastT = null;
  function toast(text, err) {
    let el = document.getElementById("toast");
    if (!el) { el = document.createElement("div"); el.id = "toast"; document.body.appendChild(el); }
    el.className = "toast" + (err ? " err" : ""); el.textContent = text; el.classList.remove("hidden");
    clearTimeout(toastT); toastT = setTimeout(() => el.classList.add("hidden"), err ? 7000 : 3500);
  }

  // ------------------------------------------------------------------ the district map (SVG, no tiles)
  const NS = "http://www.w3.org/2000/svg";
  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  const STREET_W = { primary: 9, secondary: 8, tertiary: 7, residential: 5, service: 3.5, pedestrian: 3.5, footway: 2, path: 2, living_street: 4, unclassified: 5 };

  class DistrictMap {
    constructor(svg, data, opts) {
      this.svg = svg; this.d = data; this.opts = opts || {};
      const [s, w, n, e] = data.bbox;
      this.lat0 = (s + n) / 2; this.k = Math.cos(this.lat0 * Math.PI / 180); this.M = 111320;
      this.ox = w; this.oy = n;
      const pad = 60;
      this.full = [-pad, -pad, (e - w) * this.k * this.M + 2 * pad, (n - s) * this.M + 2 * pad];
      this.view = this.full.slice();
      svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
      this.layers = {};
      for (const name of ["communities", "barriers", "streets", "labels", "cameras", "routes", "incidents", "units", "marks"]) this.layers[name] = el("g", { class: "L-" + name }, svg);
      this.drawBase();
      this.applyView();
      if (this.opts.interactive !== false) this.enablePanZoom();
    }
    xy(lat, lon) { return [(lon - this.ox) * this.k * this.M, (this.oy - lat) * this.M]; }
    ll(x, y) { return [this.oy - y / this.M, this.ox + x / (this.k * this.M)]; }
    pts(list) { return list.map((p) => this.xy(p[0], p[1]).map((v) => v.toFixed(1)).join(",")).join(" "); }
    applyView() {
      this.svg.setAttribute("viewBox", this.view.map((v) => v.toFixed(1)).join(" "));
      this.scale = this.view[2] / (this.svg.clientWidth || 800);
      this.svg.classList.toggle("far", this.scale > 2.2);  // labels of small things only when zoomed in
      this.restyle();
    }
    restyle() {
      const s = Math.max(this.scale || 1, 0.3);
      this.svg.style.setProperty("--s", s);
      for (const t of this.svg.querySelectorAll("[data-fs]")) t.setAttribute("font-size", (parseFloat(t.dataset.fs) * s).toFixed(1));
      for (const t of this.svg.querySelectorAll("[data-r]")) t.setAttribute("r", (parseFloat(t.dataset.r) * s).toFixed(1));
      for (const t of this.svg.querySelectorAll("[data-sw]")) t.setAttribute("stroke-width", (parseFloat(t.dataset.sw) * s).toFixed(2));
      for (const t of this.svg.querySelectorAll("[data-sym]")) { const [x, y] = t.dataset.at.split(",").map(Number); t.setAttribute("transform", `translate(${x},${y}) scale(${s})`); }
    }
    fit(latlons, padM) {
      if (!latlons.length) { this.view = this.full.slice(); this.applyView(); return; }
      const xs = [], ys = [];
      for (const p of latlons) { const [x, y] = this.xy(p[0], p[1]); xs.push(x); ys.push(y); }
      const pad = padM || 120;
      let x0 = Math.min(...xs) - pad, x1 = Math.max(...xs) + pad, y0 = Math.min(...ys) - pad, y1 = Math.max(...ys) + pad;
      const W = this.svg.clientWidth || 400, H = this.svg.clientHeight || 300, ar = W / H;
      if ((x1 - x0) / (y1 - y0) < ar) { const c = (x0 + x1) / 2, w = (y1 - y0) * ar; x0 = c - w / 2; x1 = c + w / 2; }
      else { const c = (y0 + y1) / 2, h = (x1 - x0) / ar; y0 = c - h / 2; y1 = c + h / 2; }
      this.view = [x0, y0, x1 - x0, y1 - y0]; this.applyView();
    }
    drawBase() {
      const L = this.layers;
      const tint = ["#cfd8c0", "#d6d0bd", "#c9d4cf", "#d8cfc6", "#cdd3c4", "#d2cdbf", "#c6d1c8"];
      this.d.communities.forEach((c, i) => {
        el("polygon", { points: this.pts(c.boundary), fill: tint[i % tint.length], stroke: "#8a927c", "stroke-dasharray": "14 8", "data-sw": 1.4 }, L.communities);
        const [x, y] = this.xy(c.centroid[0], c.centroid[1]);
        const t = el("text", { x, y, "text-anchor": "middle", fill: "#4d5546", "font-weight": "bold", "data-fs": 12, opacity: .75 }, L.labels);
        t.textContent = c.name;
      });
      for (const b of this.d.barriers) {
        const water = b.k.includes("water");
        if (water) el("polygon", { points: this.pts(b.p), fill: "#9cc3e4", stroke: "#6fa3cf", "data-sw": 1 }, L.barriers);
        else { el("polyline", { points: this.pts(b.p), fill: "none", stroke: "#555", "data-sw": 4 }, L.barriers); el("polyline", { points: this.pts(b.p), fill: "none", stroke: "#fff", "data-sw": 2, "stroke-dasharray": "10 10" }, L.barriers); }
      }
      for (const s of this.d.streets) {
        const w = STREET_W[s.h] || 3;
        el("polyline", { points: this.pts(s.p), fill: "none", stroke: w >= 7 ? "#f7d98b" : (w <= 2 ? "#f4f1ea" : "#ffffff"), "stroke-linecap": "round", "stroke-linejoin": "round", "data-sw": w * 0.8, opacity: w <= 2 ? .8 : 1 }, L.streets);
      }
      for (const c of this.d.cameras) {
        const [x, y] = this.xy(c.lat, c.lon);
        const g = el("g", { "data-sym": 1, "data-at": `${x},${y}`, class: "cam", "data-cam": c.id }, L.cameras);
        el("rect", { x: -6, y: -4.5, width: 12, height: 9, rx: 1.5, fill: "#263442", stroke: "#fff", "stroke-width": 1.2 }, g);
        el("polygon", { points: "6,-3 10,-5.5 10,5.5 6,3", fill: "#263442", stroke: "#fff", "stroke-width": 1 }, g);
        const t = el("text", { x: 0, y: 15, "text-anchor": "middle", "font-size": 9, fill: "#263442", "font-weight": "bold" }, g); t.textContent = c.id;
        const ti = el("title", {}, g); ti.textContent = `${c.id}: ${c.name}`;
      }
    }
    // units: [{id, state, lat, lon, exercise, callsign}]
    setUnits(units, focus) {
      const L = this.layers.units; L.textContent = "";
      for (const u of units) {
        if (u.lat == null || u.lon == null) continue;
        if (focus && !focus.has(u.id)) continue;
        const [x, y] = this.xy(u.lat, u.lon);
        const g = el("g", { "data-sym": 1, "data-at": `${x},${y}`, class: "unit", "data-unit": u.id, "data-state": u.state || "unknown" }, L);
        const col = UNIT_COLOR[u.state] || UNIT_COLOR.unknown;
        if (u.exercise) el("circle", { r: 10, fill: "none", stroke: "#ffd400", "stroke-width": 2.5, "stroke-dasharray": "3 2" }, g);
        el("circle", { r: 7.5, fill: col, stroke: "#111", "stroke-width": 1.3 }, g);
        const t = el("text", { x: 0, y: 3, "text-anchor": "middle", "font-size": 7, fill: "#fff", "font-weight": "bold" }, g);
        t.textContent = u.id.slice(0, 3);
        const ti = el("title", {}, g); ti.textContent = `${u.callsign || u.id} (${u.id}) — ${(UNIT_STATE[u.state] || ["?"])[0]}${u.exercise ? " — DRILL " + u.exercise : ""}`;
      }
      this.restyle();
    }
    // incidents: [{id, priority, state, place:{lat,lon}, exercise, kind, route}]
    setIncidents(incs, selected) {
      const L = this.layers.incidents, R = this.layers.routes; L.textContent = ""; R.textContent = "";
      for (const i of incs) {
        if (!i.place) continue;
        const closed = i.state === "resolved" || i.state === "cancelled";
        if (closed) continue;
        if (i.route && i.route.length > 1) {
          el("polyline", { points: this.pts(i.route), fill: "none", stroke: "#111", "data-sw": 7, opacity: .35, "stroke-linecap": "round" }, R);
          el("polyline", { points: this.pts(i.route), fill: "none", stroke: i.exercise ? "#ffd400" : "#1060ff", "data-sw": 4, "stroke-dasharray": i.state === "assigned" ? "10 7" : "", "stroke-linecap": "round", class: "route", "data-incident": i.id }, R);
        }
        const [x, y] = this.xy(i.place.lat, i.place.lon);
        const g = el("g", { "data-sym": 1, "data-at": `${x},${y}`, class: "incident", "data-incident": i.id }, L);
        const col = i.priority === 1 ? "#e0312b" : i.priority === 2 ? "#ef7d1a" : "#51606e";
        if (!i.unit) el("circle", { r: 17, fill: "none", stroke: col, "stroke-width": 3, opacity: .7 }, g);
        if (selected === i.id) el("circle", { r: 21, fill: "none", stroke: "#0af", "stroke-width": 3 }, g);
        el("polygon", { points: "0,-12 11,0 0,12 -11,0", fill: col, stroke: i.exercise ? "#ffd400" : "#fff", "stroke-width": i.exercise ? 3 : 2, "stroke-dasharray": i.exercise ? "3 2" : "" }, g);
        const t = el("text", { x: 0, y: 4, "text-anchor": "middle", "font-size": 10, fill: "#fff", "font-weight": "bold" }, g); t.textContent = "P" + i.priority;
        const ti = el("title", {}, g); ti.textContent = `P${i.priority} ${kindWord(i.kind)} — ${(INC_STATE[i.state] || ["?"])[0]}${i.exercise ? " — DRILL" : ""}`;
      }
      this.restyle();
    }
    setMarks(marks) {  // [{lat, lon, kind: "me"|"dest"|"pick", label}]
      const L = this.layers.marks; L.textContent = "";
      for (const m of marks) {
        const [x, y] = this.xy(m.lat, m.lon);
        const g = el("g", { "data-sym": 1, "data-at": `${x},${y}`, class: "mark-" + m.kind }, L);
        if (m.kind === "me") { el("circle", { r: 9, fill: "#1060ff", stroke: "#fff", "stroke-width": 3 }, g); }
        else if (m.kind === "dest") { el("path", { d: "M0,0 L-9,-16 A10,10 0 1,1 9,-16 Z", fill: "#e0312b", stroke: "#fff", "stroke-width": 2 }, g); el("circle", { cx: 0, cy: -19, r: 4, fill: "#fff" }, g); }
        else { el("circle", { r: 10, fill: "none", stroke: "#e0312b", "stroke-width": 3 }, g); el("path", { d: "M-14,0 H14 M0,-14 V14", stroke: "#e0312b", "stroke-width": 2 }, g); }
        if (m.label) { const t = el("text", { x: 12, y: 4, "font-size": 11, fill: "#111", "font-weight": "bold", stroke: "#fff", "stroke-width": 3, "paint-order": "stroke" }, g); t.textContent = m.label; }
      }
      this.restyle();
    }
    eventLatLon(ev) {
      const pt = this.svg.createSVGPoint(); pt.x = ev.clientX; pt.y = ev.clientY;
      const p = pt.matrixTransform(this.svg.getScreenCTM().inverse());
      return this.ll(p.x, p.y);
    }
    enablePanZoom() {
      const svg = this.svg; let drag = null;
      svg.addEventListener("wheel", (ev) => {
        ev.preventDefault();
        const [lat, lon] = this.eventLatLon(ev); const [cx, cy] = this.xy(lat, lon);
        const f = ev.deltaY > 0 ? 1.2 : 1 / 1.2;
        const v = this.view; const nw = Math.min(Math.max(v[2] * f, 200), this.full[2] * 1.5), r = nw / v[2];
        this.view = [cx - (cx - v[0]) * r, cy - (cy - v[1]) * r, v[2] * r, v[3] * r]; this.applyView();
      }, { passive: false });
      svg.addEventListener("mousedown", (ev) => { drag = { x: ev.clientX, y: ev.clientY, v: this.view.slice(), moved: false }; });
      window.addEventListener("mousemove", (ev) => {
        if (!drag) return;
        const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 4) drag.moved = true;
        if (!drag.moved) return;
        const s = drag.v[2] / (svg.clientWidth || 800);
        this.view = [drag.v[0] - dx * s, drag.v[1] - dy * s, drag.v[2], drag.v[3]]; this.applyView();
      });
      window.addEventListener("mouseup", () => { setTimeout(() => { drag = null; }, 0); });
      svg.addEventListener("click", (ev) => {
        if (drag && drag.moved) return;
        if (this.opts.onClick) { const [lat, lon] = this.eventLatLon(ev); this.opts.onClick(lat, lon, ev); }
      });
      svg.addEventListener("dblclick", () => { this.view = this.full.slice(); this.applyView(); });
      window.addEventListener("resize", () => this.applyView());
    }
  }

  async function logout() { try { await api("POST", "/api/logout", {}); } catch (e) {} location.href = "/login"; }

  return { api, live, now, ts, ago, dur, hms, setServerNow, esc, badge, pri, kindWord, drillTag, toast, DistrictMap, UNIT_STATE, INC_STATE, UNIT_COLOR, KINDS, logout };
})();
