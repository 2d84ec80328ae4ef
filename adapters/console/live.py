"""The console's view of the world, kept live from NATS, and the channel to every open page.

`Live` connects to NATS and follows:

| what | where from | how |
| --- | --- | --- |
| units (state, position, drill) | KV bucket `state`, keys `unit.>` | watch (current values, then changes) |
| incidents (state, unit, deadline, attempts) | KV bucket `state`, keys `incident.>` | watch |
| incident events (explanations, timeline, escalations) | `incidents.>` | core subscription; at start the last `assigned` event of each open incident from the INCIDENTS stream |
| orders (route, snapshot, deadline) | `radio.*.order` | core subscription; at start each unit's last order from the RADIO stream |
| talkgroup broadcasts, drill ones too | `radio.talkgroup.>` | core subscription |
| camera health | `cameras.*.health` | core subscription |
| camera alerts and operator confirmations | `alerts.>` | ordered JetStream consumer from `history_s` ago, then live |
| dismissals and incident actions from every console | `ops.>` (stream OPS) | ordered JetStream consumer from `history_s` ago, then live |

Every change becomes one small JSON message `{"t": type, "d": data}` pushed to the WebSocket
clients allowed to see it (`Client.allows`): operators and supervisors see everything; a unit
sees its own unit record, its own orders and the broadcasts of its talkgroup (drill broadcasts
only while it takes part in that drill), nothing else.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import structlog

from adapters.console.contract import all_ops, ensure_ops_stream
from dispatch.aio import cancel_and_wait
from dispatch.subjects import Subjects

log = structlog.get_logger("console.live")

CLOSED_KEPT_S = 1800.0  # closed incidents stay on the board this long
ALERTS_KEPT = 300
TIMELINE_KEPT = 60
BROADCASTS_KEPT = 50
CLIENT_QUEUE = 2000


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _ts(v: str | None) -> float:
    if not v:
        return 0.0
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


class Client:
    """One open page (WebSocket): who it is and what it may see."""

    def __init__(self, username: str, role: str, unit: str | None, ws: Any, live: "Live", sid: str = "") -> None:
        self.username = username
        self.sid = sid
        self.role = role
        self.unit = unit  # the unit whose channel this is (a unit's own; an operator watching one)
        self.ws = ws
        self.live = live
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=CLIENT_QUEUE)
        self.dropped = False

    @property
    def operator(self) -> bool:
        return self.role in ("operator", "supervisor") and self.unit is None

    def allows(self, t: str, d: dict[str, Any]) -> bool:
        if self.operator:
            return True
        u = self.unit
        if t == "unit":
            return d.get("id") == u
        if t == "order":
            return d.get("unit") == u
        if t == "broadcast":
            return self.live.hears(u, d)
        return False

    def send(self, text: str) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:  # a page that stopped reading: drop it, it reconnects and resyncs
            self.dropped = True
            try:
                self.queue.get_nowait()
                self.queue.put_nowait(None)
            except (asyncio.QueueEmpty, asyncio.QueueFull):
                pass


class Live:
    def __init__(self, district: Any, servers: list[str], prefix: str = "", console_id: str = "console",
                 history_s: float = 3600.0, replicas: int = 1) -> None:
        self.district = district
        self.servers = servers
        self.s = Subjects(prefix)
        self.console_id = console_id
        self.history_s = history_s
        self.replicas = replicas
        self.nc: Any = None
        self.js: Any = None
        self.connected = asyncio.Event()
        self.units: dict[str, dict[str, Any]] = {}
        self.incidents: dict[str, dict[str, Any]] = {}
        self.timeline: dict[str, deque[dict[str, Any]]] = {}
        self.explanations: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, dict[str, Any]] = {}  # order id -> order (assign or cancel)
        self.last_order: dict[str, dict[str, Any]] = {}  # unit -> its latest order message
        self.health: dict[str, dict[str, Any]] = {}
        self.alerts: OrderedDict[str, dict[str, Any]] = OrderedDict()  # camera event id -> merged alert
        self.alert_msg_to_event: dict[str, str] = {}
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.actions: deque[dict[str, Any]] = deque(maxlen=200)
        self.broadcasts: deque[dict[str, Any]] = deque(maxlen=BROADCASTS_KEPT)
        self.escalations: deque[dict[str, Any]] = deque(maxlen=50)
        self.clients: set[Client] = set()
        self.ready = {"units": False, "incidents": False, "alerts": False, "ops": False}
        self.counters: dict[str, int] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._subs: list[Any] = []
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._said: set[str] = set()
        for u in district.units:
            self.units[u.id] = {"id": u.id, "callsign": u.callsign, "kind": u.kind.value, "mode": u.mode.value,
                                "talkgroup": u.talkgroup, "state": "unknown", "lat": None, "lon": None,
                                "fix_time": None, "incident": None, "order": None, "exercise": None}

    # ------------------------------------------------------------------ start / stop
    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run(), name="console-live"))

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        for c in list(self.clients):
            c.send_close = True  # type: ignore[attr-defined]
            try:
                c.queue.put_nowait(None)
            except asyncio.QueueFull:
                pass
        if self.nc is not None and not self.nc.is_closed:
            try:
                await self.nc.close()
            except Exception:
                pass

    async def _run(self) -> None:
        import nats

        delay = 0.5
        while self.nc is None:
            try:
                self.nc = await nats.connect(
                    self.servers, name=f"patrollink-console-{self.console_id}", connect_timeout=3,
                    max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                    disconnected_cb=self._disconnected, reconnected_cb=self._reconnected, error_cb=self._error,
                )
            except Exception as e:
                log.warning("console cannot reach NATS yet", servers=self.servers, error=str(e), retry_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.js = self.nc.jetstream()
        self.connected.set()
        s = self.s
        self._subs += [
            await self.nc.subscribe(s.all_incident_events, cb=self._on_incident_event),
            await self.nc.subscribe(s.all_orders, cb=self._on_order),
            await self.nc.subscribe(s._p("radio.talkgroup.>"), cb=self._on_broadcast),
            await self.nc.subscribe(s.all_camera_health, cb=self._on_health),
        ]
        await self.nc.flush()
        self._push("status", self.status())
        self._tasks += [
            asyncio.create_task(self._watch_kv(s.bucket_state, s.unit_keys, "units", self._on_unit_rec)),
            asyncio.create_task(self._watch_kv(s.bucket_state, s.incident_keys, "incidents", self._on_incident_rec)),
            asyncio.create_task(self._follow_stream(s.all_alerts, "alerts", self._on_alert)),
            asyncio.create_task(self._ops()),
            asyncio.create_task(self._load_last_orders()),
            asyncio.create_task(self._prune_forever()),
        ]

    async def _disconnected(self) -> None:
        self.connected.clear()
        log.warning("console lost NATS")
        self._push("status", self.status())

    async def _reconnected(self) -> None:
        self.connected.set()
        log.info("console back on NATS")
        self._push("status", self.status())

    async def _error(self, e: Exception) -> None:
        log.info("nats client", error=str(e))

    def status(self) -> dict[str, Any]:
        return {"nats": self.connected.is_set(), "ready": dict(self.ready), "console": self.console_id}

    # ------------------------------------------------------------------ followers
    async def _watch_kv(self, bucket: str, keys: str, name: str, handle: Callable[[dict[str, Any]], None]) -> None:
        """Records of one kind (`keys`, a key filter such as `unit.>`) from a bucket that holds several."""
        while True:
            try:
                kv = await self.js.key_value(bucket)
                watcher = await kv.watch(keys)
                async for e in watcher:
                    if e is None:
                        self.ready[name] = True
                        self._push("status", self.status())
                        continue
                    if e.value is None or e.operation is not None:
                        continue
                    try:
                        handle(json.loads(e.value))
                    except Exception:
                        log.exception("bad record in bucket", bucket=bucket, key=e.key)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the bucket is not there yet (no engine has run): look again
                self._waiting(f"bucket {bucket}", str(e))
                await asyncio.sleep(2.0)

    async def _follow_stream(self, subject: str, name: str, handle: Callable[[Any], Any], max_msgs: int = 5000) -> None:
        """History (the last `history_s`, at most the stream's last `max_msgs` messages), then live,
        through one ordered consumer."""
        from nats.js.api import ConsumerConfig, DeliverPolicy

        while True:
            try:
                start = datetime.now(timezone.utc) - timedelta(seconds=self.history_s)
                info_pending, first_seq, last_seq = await self._pending(subject)
                if info_pending > max_msgs:  # a busy stream: the last messages are enough for the screens
                    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(first_seq, last_seq - max_msgs + 1))
                else:
                    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start)
                cutoff = start.timestamp()
                done = asyncio.Event()
                seen = {"n": 0}

                async def cb(msg: Any) -> None:
                    try:
                        md0 = msg.metadata
                        if md0.timestamp is not None and md0.timestamp.timestamp() < cutoff:
                            r = None  # older than the history window
                        else:
                            r = handle(msg)
                        if asyncio.iscoroutine(r):
                            await r
                    except Exception:
                        log.exception("bad message", subject=msg.subject)
                    seen["n"] += 1
                    md = msg.metadata
                    if not done.is_set() and (md.num_pending == 0):
                        done.set()

                sub = await self.js.subscribe(subject, cb=cb, ordered_consumer=True, config=config)
                self._subs.append(sub)
                if info_pending == 0:
                    done.set()
                try:
                    await asyncio.wait_for(done.wait(), 10.0)
                except asyncio.TimeoutError:
                    pass
                self.ready[name] = True
                self._push("status", self.status())
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # no stream yet
                self._waiting(f"stream for {subject}", str(e))
                await asyncio.sleep(2.0)

    def _waiting(self, what: str, detail: str) -> None:
        """Say once that something the console follows is not there yet (no engine has run)."""
        if what not in self._said:
            self._said.add(what)
            log.info("waiting for the engine's " + what, detail=detail)

    async def _pending(self, subject: str) -> tuple[int, int, int]:
        try:
            name = await self.js.find_stream_name_by_subject(subject)
            info = await self.js.stream_info(name)
            return int(info.state.messages), int(info.state.first_seq), int(info.state.last_seq)
        except Exception as e:
            raise RuntimeError(f"no stream for {subject}: {e}") from None

    async def _ops(self) -> None:
        while True:
            try:
                await ensure_ops_stream(self.js, self.s, replicas=self.replicas)
                break
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.info("cannot create the OPS stream yet", detail=str(e))
                await asyncio.sleep(2.0)
        await self._follow_stream(all_ops(self.s), "ops", self._on_ops)

    async def _load_last_orders(self) -> None:
        """Each unit's latest order, and the explanation of each open incident's assignment."""
        from nats.js.errors import NotFoundError

        for _ in range(60):
            try:
                await self.js.stream_info(self.s.stream_radio)
                break
            except Exception:
                await asyncio.sleep(2.0)

        async def one(unit: str) -> None:
            try:
                m = await self.js.get_last_msg(self.s.stream_radio, self.s.order(unit))
            except NotFoundError:
                return
            except Exception:
                return
            try:
                o = json.loads(m.data)
            except ValueError:
                return
            cur = self.last_order.get(unit)
            if cur is None or _ts(cur.get("time")) <= _ts(o.get("time")):
                self._store_order(o, push=True)

        await asyncio.gather(*(one(u.id) for u in self.district.units))
        for iid, inc in list(self.incidents.items()):
            if inc.get("state") in ("resolved", "cancelled") or iid in self.explanations:
                continue
            try:
                m = await self.js.get_last_msg(self.s.stream_incidents, self.s.incident_event(iid, "assigned"))
                ev = json.loads(m.data)
                if ev.get("explanation"):
                    self.explanations[iid] = ev["explanation"]
                    self._push("incident", self._incident_view(iid))
            except Exception:
                pass

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(30.0)
            self.prune()

    def prune(self) -> None:
        now = time.time()
        for iid, inc in list(self.incidents.items()):
            if inc.get("state") in ("resolved", "cancelled") and now - _ts(inc.get("closed_at") or inc.get("updated_at")) > CLOSED_KEPT_S:
                self.incidents.pop(iid, None)
                self.timeline.pop(iid, None)
                self.explanations.pop(iid, None)
        cutoff = now - self.history_s
        for eid, a in list(self.alerts.items()):
            if _ts(a.get("last_time")) < cutoff:
                self.alerts.pop(eid, None)
        while len(self.alerts) > ALERTS_KEPT:
            self.alerts.popitem(last=False)
        live_orders = {o for u in self.last_order.values() if (o := u.get("order_id"))}
        live_orders |= {i.get("order") for i in self.incidents.values() if i.get("order")}
        for oid in list(self.orders):
            if oid not in live_orders and now - _ts(self.orders[oid].get("time")) > self.history_s:
                self.orders.pop(oid, None)

    # ------------------------------------------------------------------ handlers
    def _count(self, k: str) -> None:
        self.counters[k] = self.counters.get(k, 0) + 1

    def _on_unit_rec(self, rec: dict[str, Any]) -> None:
        uid = rec.get("id")
        if not uid:
            return
        base = self.units.get(uid, {})
        view = {**base, **{k: rec.get(k) for k in ("id", "callsign", "kind", "mode", "talkgroup", "state", "lat", "lon",
                                                      "fix_time", "incident", "order", "exercise", "updated")}}
        self.units[uid] = view
        self._push("unit", view)

    def _on_incident_rec(self, rec: dict[str, Any]) -> None:
        iid = rec.get("id")
        if not iid:
            return
        rec.pop("outbox", None)
        if rec.get("state") in ("resolved", "cancelled") and iid not in self.incidents:
            if time.time() - _ts(rec.get("closed_at") or rec.get("updated_at")) > CLOSED_KEPT_S:
                return  # long closed: not for the board
        self.incidents[iid] = rec
        for eid in rec.get("event_ids") or ():
            a = self.alerts.get(eid)
            if a is not None and a.get("incident_id") != iid:
                a["incident_id"] = iid
                self._push("alert", a)
        self._push("incident", self._incident_view(iid))

    async def _on_incident_event(self, msg: Any) -> None:
        try:
            ev = json.loads(msg.data)
        except ValueError:
            return
        iid = ev.get("incident_id")
        if not iid:
            return
        self._count("incident_events")
        tl = self.timeline.setdefault(iid, deque(maxlen=TIMELINE_KEPT))
        tl.append({k: ev.get(k) for k in ("seq", "event", "state", "time", "unit", "order_id", "detail", "eta_s")})
        if ev.get("explanation"):
            self.explanations[iid] = ev["explanation"]
        for aid in ev.get("alert_ids") or ():
            eid = self.alert_msg_to_event.get(aid)
            if eid and eid in self.alerts and self.alerts[eid].get("incident_id") != iid:
                self.alerts[eid]["incident_id"] = iid
                self._push("alert", self.alerts[eid])
        if ev.get("event") == "escalated":
            self.escalations.append(ev)
        self._push("ievent", ev)

    def _store_order(self, o: dict[str, Any], push: bool) -> None:
        unit = o.get("unit")
        if not unit:
            return
        cur = self.last_order.get(unit)
        if cur is not None and cur.get("id") == o.get("id"):
            return
        if o.get("action") == "assign":
            self.orders[o["order_id"]] = o
        else:
            prev = self.orders.get(o.get("order_id"))
            if prev is not None:
                self.orders[o["order_id"]] = {**prev, "cancelled": o}
        self.last_order[unit] = o
        if push:
            self._push("order", o)
            iid = o.get("incident_id")
            if iid in self.incidents:
                self._push("incident", self._incident_view(iid))

    async def _on_order(self, msg: Any) -> None:
        try:
            o = json.loads(msg.data)
        except ValueError:
            return
        self._count("orders")
        self._store_order(o, push=True)

    async def _on_broadcast(self, msg: Any) -> None:
        try:
            b = json.loads(msg.data)
        except ValueError:
            return
        self.broadcasts.append(b)
        self._push("broadcast", b)

    async def _on_health(self, msg: Any) -> None:
        try:
            h = json.loads(msg.data)
        except ValueError:
            return
        cam = h.get("camera")
        if not cam:
            return
        prev = self.health.get(cam)
        self.health[cam] = h
        if prev is None or (prev.get("state"), prev.get("detail")) != (h.get("state"), h.get("detail")) or abs((prev.get("fps") or 0) - (h.get("fps") or 0)) > 0.5:
            self._push("health", h)

    def _on_alert(self, msg: Any) -> None:
        try:
            a = json.loads(msg.data)
        except ValueError:
            return
        self._count("alerts")
        if a.get("source") == "operator":
            conf = a.get("confirms")
            if conf:
                v = {"event_id": conf, "verdict": "confirmed", "by": a.get("operator") or a.get("console"),
                     "reason": a.get("note", ""), "time": a.get("time"), "alert_id": a.get("id")}
                self.verdicts[conf] = v
                entry = self.alerts.get(conf)
                if entry is not None:
                    entry["verdict"] = v
                    self._push("alert", entry)
            self.alert_msg_to_event[a["id"]] = a.get("event_id")
            return
        eid = a.get("event_id")
        if not eid:
            return
        self.alert_msg_to_event[a["id"]] = eid
        entry = self.alerts.get(eid)
        if entry is None:
            entry = {"event_id": eid, "first_time": a.get("time"), "alert_ids": [], "incident_id": None,
                     "verdict": self.verdicts.get(eid), "camera": a.get("camera"), "updates": 0}
            self.alerts[eid] = entry
        else:
            entry["updates"] += 1
        for k in ("camera", "kind", "priority", "score", "label", "zones", "box", "detections", "frame_size", "exercise",
                  "area", "start_time", "end_time", "phase", "category", "severity", "certainty"):
            if a.get(k) is not None or k not in entry:
                if k == "score" and entry.get("score") is not None and a.get("score") is not None:
                    entry[k] = max(entry["score"], a["score"])
                else:
                    entry[k] = a.get(k)
        if a.get("snapshot"):
            entry["snapshot"] = a["snapshot"]
        entry.setdefault("snapshot", None)
        entry["last_time"] = a.get("time")
        entry["alert_ids"] = (entry["alert_ids"] + [a["id"]])[-10:]
        cam = self.district.camera(a.get("camera") or "")
        entry["camera_name"] = cam.name if cam else a.get("camera")
        if entry.get("incident_id") is None:
            for iid, inc in self.incidents.items():
                if eid in (inc.get("event_ids") or ()):
                    entry["incident_id"] = iid
                    break
        self.alerts.move_to_end(eid)
        self._push("alert", entry)

    def _on_ops(self, msg: Any) -> None:
        try:
            d = json.loads(msg.data)
        except ValueError:
            return
        tokens = self.s.strip(msg.subject).split(".")
        if len(tokens) >= 2 and tokens[1] == "verdict":
            eid = d.get("event_id")
            v = {"event_id": eid, "verdict": d.get("verdict"), "by": d.get("operator"), "reason": d.get("reason", ""),
                 "time": d.get("time")}
            self.verdicts[eid] = v
            entry = self.alerts.get(eid)
            if entry is not None:
                entry["verdict"] = v
                self._push("alert", entry)
            self._push("verdict", v)
        elif len(tokens) >= 2 and tokens[1] == "incident":
            self.actions.append(d)
            self._push("action", d)

    # ------------------------------------------------------------------ views
    def _incident_view(self, iid: str) -> dict[str, Any]:
        inc = dict(self.incidents.get(iid) or {"id": iid})
        inc["explanation"] = self.explanations.get(iid)
        inc["timeline"] = list(self.timeline.get(iid, ()))[-20:]
        o = self.orders.get(inc.get("order") or "")
        if o is not None:
            inc["route"] = o.get("route") or []
            inc["eta_s"] = o.get("eta_s")
            if inc.get("explanation") is None and o.get("explanation"):
                inc["explanation"] = o["explanation"]
        else:
            inc["route"] = []
        return inc

    def active_order(self, unit: str) -> dict[str, Any] | None:
        """The order the unit holds now: its latest assign, while the engine still has the unit on it."""
        o = self.last_order.get(unit)
        if o is None or o.get("action") != "assign":
            return None
        u = self.units.get(unit) or {}
        if u.get("order") not in (None, o.get("order_id")):
            return None  # the engine moved the unit on (its record is newer than our copy of the order)
        if u.get("order") is None and u.get("state") in ("available", "busy", "off_duty") and _ts(u.get("updated")) > _ts(o.get("time")):
            return None  # finished or withdrawn since
        inc = self.incidents.get(o.get("incident_id") or "")
        if inc is not None and inc.get("state") in ("resolved", "cancelled"):
            return None
        return o

    def hears(self, unit: str | None, b: dict[str, Any]) -> bool:
        """Does this unit hear this broadcast? Its own talkgroup; a drill's only while in that drill."""
        if unit is None:
            return False
        u = self.units.get(unit) or {}
        tg = b.get("talkgroup")
        if tg != u.get("talkgroup"):
            return False
        return (b.get("exercise") or None) == (u.get("exercise") or None)

    def snapshot_for(self, c: Client) -> dict[str, Any]:
        base = {"status": self.status(), "now": _now_iso()}
        if c.operator:
            return {
                **base,
                "units": list(self.units.values()),
                "incidents": [self._incident_view(i) for i in self.incidents],
                "alerts": list(self.alerts.values())[-150:],
                "health": list(self.health.values()),
                "broadcasts": list(self.broadcasts)[-20:],
                "escalations": [e for e in self.escalations if time.time() - _ts(e.get("time")) < 3600],
                "actions": list(self.actions)[-30:],
            }
        u = c.unit
        return {
            **base,
            "unit": self.units.get(u or ""),
            "order": self.active_order(u or ""),
            "broadcasts": [b for b in self.broadcasts if self.hears(u, b)][-10:],
        }

    # ------------------------------------------------------------------ fan-out
    def drop_session(self, sid: str) -> None:
        """A session ended (logout): close its live channels now."""
        for c in list(self.clients):
            if c.sid == sid:
                c.dropped = True
                try:
                    c.queue.put_nowait(None)
                except asyncio.QueueFull:
                    pass

    def add_listener(self, fn: Callable[[str, dict[str, Any]], None]) -> None:
        self._listeners.append(fn)

    def _push(self, t: str, d: dict[str, Any]) -> None:
        for fn in self._listeners:
            try:
                fn(t, d)
            except Exception:
                log.exception("listener failed")
        if not self.clients:
            return
        text: str | None = None
        for c in list(self.clients):
            if c.allows(t, d):
                if text is None:
                    text = json.dumps({"t": t, "d": d}, default=str, separators=(",", ":"))
                c.send(text)
