"""The console web server: both pages, a JSON API and a live WebSocket channel bridged to NATS.

    app = create_app(district, ["nats://127.0.0.1:4222"], prefix="", users_file="console-users.yaml")
    server = await ConsoleServer(app, host="127.0.0.1", port=8080).start()
    print(server.url)
    ...
    await server.stop()

Pages: `/login`, `/console` (operators, supervisors), `/terminal` (units). Every asset is served
from adapters/console/static/ (no CDN, no web fonts; the Content-Security-Policy allows 'self' only).

Roles (docs/console.md has the full table):

* operator   — watches video, confirms / dismisses camera alerts, flags incidents, closes,
               escalates and reassigns (the engine chooses) incidents;
* supervisor — all of that, plus cancelling an incident and reassigning to a named unit;
* unit       — its own order, replies, status and position; nothing else.

Every operator action carries the user name: `Alert.operator`, `CameraFeedback.operator`,
`IncidentAction.operator`, and a log line.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
from aiohttp import WSMsgType, web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.console.auth import COOKIE, LoginThrottle, Session, Sessions, User, Users
from adapters.console.contract import IncidentAction, action_subject, verdict_subject
from adapters.console.live import Client, Live
from adapters.console.mapdata import district_map, place_name
from adapters.console.video import FeedError, FeedHub
from dispatch.events import (
    Alert,
    AlertSource,
    Area,
    CameraFeedback,
    CapCertainty,
    CapStatus,
    IncidentKind,
    OrderReply,
    ReplyKind,
    UnitAvailability,
    UnitPosition,
    UnitStatus,
    describe_error,
    encode,
    new_id,
)
from dispatch.subjects import check_token

log = structlog.get_logger("console")

STATIC = Path(__file__).parent / "static"
OPERATOR_ROLES = ("operator", "supervisor")

K_CONSOLE: web.AppKey["Console"] = web.AppKey("console", object)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- request bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginBody(_Body):
    username: str = Field(..., min_length=1, max_length=64)
    password: str = Field(..., min_length=1, max_length=200)


class ConfirmBody(_Body):
    kind: IncidentKind | None = None
    priority: int | None = Field(None, ge=1, le=3)
    note: str = Field("", max_length=500)


class DismissBody(_Body):
    reason: str = Field(..., min_length=1, max_length=300)
    cancel_incident: bool = True


class FlagBody(_Body):
    lat: float = Field(..., ge=-90, le=90)
    lon: float = Field(..., ge=-180, le=180)
    kind: IncidentKind
    priority: int = Field(2, ge=1, le=3)
    note: str = Field("", max_length=500)
    camera: str | None = Field(None, max_length=64)
    exercise: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")


class CloseBody(_Body):
    disposition: str = Field(..., min_length=1, max_length=300)
    cancel: bool = False


class ReassignBody(_Body):
    reason: str = Field("", max_length=300)
    unit: str | None = Field(None, max_length=64)


class EscalateBody(_Body):
    reason: str = Field("", max_length=300)


class ReplyBody(_Body):
    order_id: str = Field(..., max_length=64)
    reply: ReplyKind
    reason: str = Field("", max_length=300)


class StatusBody(_Body):
    status: UnitAvailability


class PositionBody(_Body):
    lat: float = Field(..., ge=-90, le=90)
    lon: float = Field(..., ge=-180, le=180)
    accuracy_m: float = Field(10.0, ge=0, le=100000)
    speed_mps: float | None = Field(None, ge=0, le=200)
    heading_deg: float | None = Field(None, ge=0, lt=360)
    source: str = Field("manual", max_length=20)


class OfferBody(_Body):
    sdp: str = Field(..., max_length=20000)
    type: str = Field("offer", pattern="^offer$")


# --------------------------------------------------------------------------- the console


class Console:
    """Everything a request handler needs: district, NATS view, video, accounts, sessions."""

    def __init__(self, district: Any, servers: list[str], prefix: str, users: Users, sessions: Sessions,
                 console_id: str, cookie_secure: str, feeds: FeedHub, graph: Any, replicas: int = 1,
                 history_s: float = 3600.0) -> None:
        self.district = district
        self.users = users
        self.sessions = sessions
        self.console_id = check_token(console_id, "console id")
        self.cookie_secure = cookie_secure
        self.live = Live(district, servers, prefix, console_id, history_s=history_s, replicas=replicas)
        self.s = self.live.s
        self.feeds = feeds
        self.graph = graph
        self.throttle = LoginThrottle()  # per user name: 5 failures a minute
        self.throttle_addr = LoginThrottle(limit=30)  # per address: a control room shares one
        self._map_json: bytes | None = None
        self._snap_cache: OrderedDict[str, bytes] = OrderedDict()
        self.started = time.time()

    # -- NATS
    async def _js_publish(self, subject: str, msg: Any) -> Any:
        if not self.live.connected.is_set() or self.live.js is None:
            raise web.HTTPServiceUnavailable(text=json.dumps({"error": "not connected to NATS; try again"}),
                                             content_type="application/json")
        try:
            return await self.live.js.publish(subject, encode(msg), headers={"Nats-Msg-Id": msg.id}, timeout=3.0)
        except Exception as e:
            log.warning("publish failed", subject=subject, error=str(e))
            raise web.HTTPServiceUnavailable(text=json.dumps({"error": f"NATS did not store it: {e}"}),
                                             content_type="application/json") from None

    async def _core_publish(self, subject: str, msg: Any) -> None:
        if not self.live.connected.is_set() or self.live.nc is None:
            raise web.HTTPServiceUnavailable(text=json.dumps({"error": "not connected to NATS; try again"}),
                                             content_type="application/json")
        await self.live.nc.publish(subject, encode(msg))
        await self.live.nc.flush(timeout=3)

    def map_json(self) -> bytes:
        if self._map_json is None:
            self._map_json = json.dumps(district_map(self.district, self.graph), separators=(",", ":")).encode()
        return self._map_json


# --------------------------------------------------------------------------- helpers


def _json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _session(request: web.Request) -> Session | None:
    c: Console = request.app[K_CONSOLE]
    s = c.sessions.read(request.cookies.get(COOKIE))
    if s is None:
        return None
    u = c.users.get(s.username)
    if u is None or u.role != s.role or u.unit != s.unit:
        return None  # account removed or changed since the login
    return s


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if not origin:
        return True
    return origin.split("://", 1)[-1] == request.host


Handler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


def require(*roles: str) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """The handler runs only for a logged-in user with one of these roles; writes need JSON from this origin."""

    def wrap(fn: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            s = _session(request)
            if s is None:
                return _json_error(401, "log in first")
            if s.role not in roles:
                return _json_error(403, f"a {s.role} account may not do this")
            if request.method not in ("GET", "HEAD"):
                if not _same_origin(request):
                    return _json_error(403, "cross-site request refused")
                if request.content_type != "application/json":
                    return _json_error(415, "send JSON (Content-Type: application/json)")
            return await fn(request, s)

        handler.__name__ = fn.__name__
        return handler

    return wrap


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        raw = await request.read()
        if len(raw) > 64 * 1024:
            raise web.HTTPRequestEntityTooLarge(max_size=64 * 1024, actual_size=len(raw))
        return model.model_validate_json(raw or b"{}")
    except ValidationError as e:
        raise web.HTTPBadRequest(text=json.dumps({"error": describe_error(e)}), content_type="application/json") from None


def _page(name: str) -> web.FileResponse:
    return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-store"})


# --------------------------------------------------------------------------- pages and login


async def index(request: web.Request) -> web.StreamResponse:
    s = _session(request)
    if s is None:
        raise web.HTTPFound("/login")
    raise web.HTTPFound("/terminal" if s.role == "unit" else "/console")


async def login_page(request: web.Request) -> web.StreamResponse:
    return _page("login.html")


async def console_page(request: web.Request) -> web.StreamResponse:
    s = _session(request)
    if s is None:
        raise web.HTTPFound("/login?next=/console")
    if s.role not in OPERATOR_ROLES:
        raise web.HTTPFound("/terminal")
    return _page("console.html")


async def terminal_page(request: web.Request) -> web.StreamResponse:
    s = _session(request)
    if s is None:
        raise web.HTTPFound("/login?next=/terminal")
    if s.role != "unit" and "unit" not in request.query:
        raise web.HTTPFound("/console")
    return _page("terminal.html")


async def api_login(request: web.Request) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    if not _same_origin(request):
        return _json_error(403, "cross-site request refused")
    if request.content_type != "application/json":
        return _json_error(415, "send JSON (Content-Type: application/json)")
    body: LoginBody = await _body(request, LoginBody)
    peer = request.remote or "?"
    wait = max(c.throttle.blocked(f"u:{body.username}"), c.throttle_addr.blocked(f"a:{peer}"))
    if wait > 0:
        return _json_error(429, f"too many failed logins; try again in {wait:.0f} s")
    user = await asyncio.get_running_loop().run_in_executor(None, c.users.check, body.username, body.password)
    if user is None:
        c.throttle.failed(f"u:{body.username}")
        c.throttle_addr.failed(f"a:{peer}")
        log.info("login refused", username=body.username, remote=peer)
        return _json_error(401, "wrong user name or password")
    c.throttle.ok(f"u:{body.username}")
    token, sess = c.sessions.issue(user)
    resp = web.json_response({"user": user.public(), "go": "/terminal" if user.role == "unit" else "/console"})
    secure = c.cookie_secure == "always" or (c.cookie_secure == "auto" and (request.secure or request.headers.get("X-Forwarded-Proto") == "https"))
    resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=secure, path="/", max_age=int(c.sessions.ttl_s))
    log.info("login", username=user.username, role=user.role, unit=user.unit, remote=peer)
    return resp


async def api_logout(request: web.Request) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    s = c.sessions.read(request.cookies.get(COOKIE))
    if s is not None:
        if not _same_origin(request):
            return _json_error(403, "cross-site request refused")
        c.sessions.revoke(s)
        c.live.drop_session(s.sid)
        log.info("logout", username=s.username)
    resp = web.json_response({"ok": True})
    resp.del_cookie(COOKIE, path="/")
    return resp


@require("operator", "supervisor", "unit")
async def api_me(request: web.Request, s: Session) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    u = c.users.get(s.username)
    unit = c.district.unit(s.unit) if s.unit else None
    return web.json_response({
        "user": u.public() if u else {"username": s.username, "role": s.role, "unit": s.unit},
        "console": c.console_id, "district": c.district.name,
        "unit": {"id": unit.id, "callsign": unit.callsign, "kind": unit.kind.value, "mode": unit.mode.value,
                 "talkgroup": unit.talkgroup} if unit else None,
        "now": time.time(),
    })


async def api_health(request: web.Request) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    return web.json_response({"ok": True, **c.live.status()})


@require("operator", "supervisor", "unit")
async def api_map(request: web.Request, s: Session) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    return web.Response(body=c.map_json(), content_type="application/json", headers={"Cache-Control": "private, max-age=300"})


@require("operator", "supervisor", "unit")
async def api_state(request: web.Request, s: Session) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    client = Client(s.username, s.role, s.unit, None, c.live)
    return web.json_response(c.live.snapshot_for(client), dumps=lambda o: json.dumps(o, default=str))


# --------------------------------------------------------------------------- cameras and video


def _camera(c: Console, cid: str) -> Any:
    cam = c.district.camera(cid)
    if cam is None:
        raise web.HTTPNotFound(text=json.dumps({"error": f"no camera {cid!r}"}), content_type="application/json")
    return cam


@require("operator", "supervisor")
async def api_cameras(request: web.Request, s: Session) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    feeds = c.feeds.status()
    return web.json_response([
        {"id": cam.id, "name": cam.name, "community": cam.community, "lat": cam.position.lat, "lon": cam.position.lon,
         "health": c.live.health.get(cam.id), "feed": feeds.get(cam.id),
         "zones": [{"name": z.name, "polygon": [list(p) for p in z.polygon], "restricted": z.restricted} for z in cam.zones]}
        for cam in c.district.cameras
    ], dumps=lambda o: json.dumps(o, default=str))


@require("operator", "supervisor")
async def api_camera_snapshot(request: web.Request, s: Session) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    cam = _camera(c, request.match_info["cid"])
    feed = c.feeds.get(cam.id)
    assert feed is not None
    try:
        data = await feed.snapshot_jpeg(timeout=3.0)
    except FeedError as e:  # known broken: answer at once (a browser has only 6 connections to this server)
        return _json_error(503, f"no picture from camera {cam.id}: {e}")
    except (asyncio.TimeoutError, TimeoutError):
        return _json_error(504, f"no picture from camera {cam.id}: {feed.error or 'no frame yet'}")
    return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


@require("operator", "supervisor")
async def api_webrtc(request: web.Request, s: Session) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    cam = _camera(c, request.match_info["cid"])
    body: OfferBody = await _body(request, OfferBody)
    try:
        answer = await c.feeds.answer(cam.id, body.sdp, body.type, who=s.username)
    except Exception as e:
        log.warning("webrtc offer refused", camera=cam.id, error=str(e))
        return _json_error(400, f"cannot answer that offer: {e}")
    return web.json_response(answer)


@require("operator", "supervisor")
async def api_webrtc_close(request: web.Request, s: Session) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    peer = request.match_info["peer"]
    if c.feeds.owner(peer) == s.username:
        await c.feeds.close_peer(peer)
    return web.json_response({"ok": True})


_SNAP_NAME = re.compile(r"^[A-Za-z0-9_\-]+/[A-Za-z0-9_\-]+\.jpg$")


@require("operator", "supervisor", "unit")
async def api_snapshot(request: web.Request, s: Session) -> web.StreamResponse:
    """A detection snapshot from the object store. A unit may only fetch its own order's."""
    c: Console = request.app[K_CONSOLE]
    name = request.match_info["name"]
    if not _SNAP_NAME.match(name):
        return _json_error(400, "bad snapshot name")
    if s.role == "unit":
        o = c.live.active_order(s.unit or "")
        if o is None or o.get("snapshot") != name:
            return _json_error(403, "this snapshot is not for your order")
    data = c._snap_cache.get(name)
    if data is None:
        if c.live.js is None:
            return _json_error(503, "not connected to NATS")
        try:
            obs = await c.live.js.object_store(c.s.bucket_snapshots)
            res = await asyncio.wait_for(obs.get(name), 5.0)
            data = res.data or b""
        except Exception as e:
            return _json_error(404, f"snapshot {name} not found: {type(e).__name__}")
        c._snap_cache[name] = data
        while len(c._snap_cache) > 200:
            c._snap_cache.popitem(last=False)
    return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


# --------------------------------------------------------------------------- operator actions


def _alert_entry(c: Console, event_id: str) -> dict[str, Any]:
    a = c.live.alerts.get(event_id)
    if a is None:
        raise web.HTTPNotFound(text=json.dumps({"error": f"no camera alert {event_id!r} in the queue"}), content_type="application/json")
    return a


def _area(d: dict[str, Any] | None) -> Area | None:
    if not d:
        return None
    return Area(lat=d["lat"], lon=d["lon"], radius_m=d.get("radius_m", 0.0), description=d.get("description", "")[:200])


@require("operator", "supervisor")
async def api_confirm(request: web.Request, s: Session) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    a = _alert_entry(c, request.match_info["event_id"])
    body: ConfirmBody = await _body(request, ConfirmBody)
    ex = a.get("exercise")
    alert = Alert(
        event_id=new_id(), source=AlertSource.operator, kind=body.kind or IncidentKind(a["kind"]),
        priority=body.priority or a.get("priority") or 2, camera=a.get("camera"), area=_area(a.get("area")),
        certainty=CapCertainty.Observed, console=c.console_id, operator=s.username, confirms=a["event_id"],
        note=body.note, snapshot=a.get("snapshot"), exercise=ex, status=CapStatus.Exercise if ex else CapStatus.Actual,
    )
    ack = await c._js_publish(c.s.operator_alert(c.console_id), alert)
    log.info("operator confirmed", operator=s.username, event_id=a["event_id"], camera=a.get("camera"), alert_id=alert.id)
    return web.json_response({"ok": True, "alert_id": alert.id, "seq": getattr(ack, "seq", None)})


@require("operator", "supervisor")
async def api_dismiss(request: web.Request, s: Session) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    a = _alert_entry(c, request.match_info["event_id"])
    body: DismissBody = await _body(request, DismissBody)
    fb = CameraFeedback(event_id=a["event_id"], verdict="dismissed", reason=body.reason, camera=a.get("camera"),
                        operator=s.username, exercise=a.get("exercise"))
    cam = a.get("camera")
    if cam:
        await c._core_publish(c.s.camera_feedback(cam), fb)  # the adapter's statistics
    await c._js_publish(verdict_subject(c.s, cam or "none"), fb)  # every console, kept
    cancelled = None
    iid = a.get("incident_id")
    inc = c.live.incidents.get(iid or "")
    if body.cancel_incident and inc is not None and inc.get("state") not in ("resolved", "cancelled"):
        others = [e for e in (inc.get("event_ids") or ()) if e != a["event_id"]]
        if not any(c.live.verdicts.get(e, {}).get("verdict") != "dismissed" for e in others if e in c.live.alerts):
            act = IncidentAction(incident_id=iid, action="cancel", operator=s.username, console=c.console_id,
                                 disposition=f"false alarm: {body.reason}", exercise=inc.get("exercise"))
            await c._js_publish(action_subject(c.s, iid, "cancel"), act)  # type: ignore[arg-type]
            cancelled = iid
    log.info("operator dismissed", operator=s.username, event_id=a["event_id"], camera=cam, reason=body.reason, cancelled=cancelled)
    return web.json_response({"ok": True, "cancelled_incident": cancelled})


@require("operator", "supervisor")
async def api_flag(request: web.Request, s: Session) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    body: FlagBody = await _body(request, FlagBody)
    if not c.district.contains(body.lat, body.lon):
        return _json_error(400, f"({body.lat:.5f}, {body.lon:.5f}) is outside district {c.district.name}")
    if body.camera and c.district.camera(body.camera) is None:
        return _json_error(400, f"no camera {body.camera!r}")
    ex = body.exercise or None
    alert = Alert(
        event_id=new_id(), source=AlertSource.operator, kind=body.kind, priority=body.priority,
        area=Area(lat=body.lat, lon=body.lon, description=place_name(c.district, c.graph, body.lat, body.lon)[:200]),
        camera=body.camera, certainty=CapCertainty.Observed, console=c.console_id, operator=s.username, note=body.note,
        exercise=ex, status=CapStatus.Exercise if ex else CapStatus.Actual,
    )
    await c._js_publish(c.s.operator_alert(c.console_id), alert)
    log.info("operator flagged", operator=s.username, kind=body.kind.value, priority=body.priority, lat=body.lat, lon=body.lon,
             alert_id=alert.id, exercise=ex)
    return web.json_response({"ok": True, "alert_id": alert.id, "event_id": alert.event_id, "place": alert.area.description})  # type: ignore[union-attr]


def _open_incident(c: Console, iid: str) -> dict[str, Any]:
    inc = c.live.incidents.get(iid)
    if inc is None or inc.get("state") in ("resolved", "cancelled"):
        raise web.HTTPNotFound(text=json.dumps({"error": f"incident {iid} is not open"}), content_type="application/json")
    return inc


async def _action(c: Console, s: Session, iid: str, action: str, **fields: Any) -> web.StreamResponse:
    inc = _open_incident(c, iid)
    act = IncidentAction(incident_id=iid, action=action, operator=s.username, console=c.console_id,  # type: ignore[arg-type]
                         exercise=inc.get("exercise"), **fields)
    await c._js_publish(action_subject(c.s, iid, action), act)
    log.info("operator action", operator=s.username, role=s.role, incident_id=iid, action=action, **fields)
    return web.json_response({"ok": True, "action_id": act.id})


@require("operator", "supervisor")
async def api_close(request: web.Request, s: Session) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    body: CloseBody = await _body(request, CloseBody)
    if body.cancel and s.role != "supervisor":
        return _json_error(403, "only a supervisor may cancel an incident (close it with a disposition instead)")
    return await _action(c, s, request.match_info["iid"], "cancel" if body.cancel else "close", disposition=body.disposition)


@require("operator", "supervisor")
async def api_reassign(request: web.Request, s: Session) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    body: ReassignBody = await _body(request, ReassignBody)
    if body.unit is not None:
        if s.role != "supervisor":
            return _json_error(403, "only a supervisor may choose the unit; an operator's reassign lets the engine choose")
        if c.district.unit(body.unit) is None:
            return _json_error(400, f"no unit {body.unit!r}")
    return await _action(c, s, request.match_info["iid"], "reassign", reason=body.reason, unit=body.unit)


@require("operator", "supervisor")
async def api_escalate(request: web.Request, s: Session) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    body: EscalateBody = await _body(request, EscalateBody)
    return await _action(c, s, request.match_info["iid"], "escalate", reason=body.reason)


# --------------------------------------------------------------------------- the unit's terminal


def _own_unit(s: Session) -> str:
    if s.role != "unit" or not s.unit:
        raise web.HTTPForbidden(text=json.dumps({"error": "only a unit account acts as a unit"}), content_type="application/json")
    return s.unit


@require("operator", "supervisor", "unit")
async def api_unit_order(request: web.Request, s: Session) -> web.StreamResponse:
    """The order a unit holds now. A unit may only ask for its own."""
    c: Console = request.app[K_CONSOLE]
    unit = request.match_info.get("unit") or s.unit
    if unit is None:
        return _json_error(400, "which unit?")
    if s.role == "unit" and unit != s.unit:
        log.warning("unit asked for another unit's order", username=s.username, unit=s.unit, asked=unit)
        return _json_error(403, "a unit sees only its own orders")
    if c.district.unit(unit) is None:
        return _json_error(404, f"no unit {unit!r}")
    return web.json_response({"unit": c.live.units.get(unit), "order": c.live.active_order(unit)},
                             dumps=lambda o: json.dumps(o, default=str))


@require("unit")
async def api_unit_reply(request: web.Request, s: Session) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    unit = _own_unit(s)
    body: ReplyBody = await _body(request, ReplyBody)
    o = c.live.orders.get(body.order_id)
    if o is None or o.get("unit") != unit:
        return _json_error(403 if o is not None else 404, "that order is not yours" if o is not None else "no such order")
    active = c.live.active_order(unit)
    if active is None or active.get("order_id") != body.order_id:
        return _json_error(409, "that order is no longer active (withdrawn, timed out or finished)")
    if body.reply is ReplyKind.decline and not body.reason.strip():
        return _json_error(400, "say why you decline")
    reply = OrderReply(order_id=o["order_id"], incident_id=o["incident_id"], unit=unit, reply=body.reply,
                       reason=body.reason, exercise=o.get("exercise"))
    await c._js_publish(c.s.reply(unit), reply)
    log.info("unit reply", unit=unit, username=s.username, reply=body.reply.value, order_id=o["order_id"])
    return web.json_response({"ok": True, "reply_id": reply.id})


@require("unit")
async def api_unit_status(request: web.Request, s: Session) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    unit = _own_unit(s)
    body: StatusBody = await _body(request, StatusBody)
    ex = (c.live.units.get(unit) or {}).get("exercise")
    st = UnitStatus(unit=unit, status=body.status, exercise=ex)
    await c._core_publish(c.s.unit_status(unit), st)
    log.info("unit status", unit=unit, status=body.status.value)
    return web.json_response({"ok": True})


@require("unit")
async def api_unit_position(request: web.Request, s: Session) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    unit = _own_unit(s)
    body: PositionBody = await _body(request, PositionBody)
    if not c.district.contains(body.lat, body.lon):
        return _json_error(400, f"({body.lat:.5f}, {body.lon:.5f}) is outside district {c.district.name}")
    ex = (c.live.units.get(unit) or {}).get("exercise")
    p = UnitPosition(unit=unit, lat=body.lat, lon=body.lon, accuracy_m=body.accuracy_m, speed_mps=body.speed_mps,
                     heading_deg=body.heading_deg, exercise=ex)
    await c._core_publish(c.s.unit_position(unit), p)
    return web.json_response({"ok": True})


# --------------------------------------------------------------------------- the live channel


async def ws_handler(request: web.Request) -> web.StreamResponse:
    c: Console = request.app[K_CONSOLE]
    s = _session(request)
    if s is None:
        return _json_error(401, "log in first")
    if not _same_origin(request):
        return _json_error(403, "cross-site WebSocket refused")
    want = request.query.get("unit")
    if s.role == "unit":
        if want and want != s.unit:
            log.warning("unit asked for another unit's channel", username=s.username, unit=s.unit, asked=want)
            return _json_error(403, "a unit sees only its own channel")
        unit: str | None = s.unit
    else:
        if want and c.district.unit(want) is None:
            return _json_error(404, f"no unit {want!r}")
        unit = want or None  # an operator may watch one unit's channel (read only)
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=64 * 1024)
    await ws.prepare(request)
    client = Client(s.username, s.role, unit, ws, c.live, sid=s.sid)
    c.live.clients.add(client)
    hello = {"t": "hello", "d": {"user": s.username, "role": s.role, "unit": unit, "console": c.console_id,
                                  "district": c.district.name, "now": time.time()}}
    await ws.send_str(json.dumps(hello))
    await ws.send_str(json.dumps({"t": "snapshot", "d": c.live.snapshot_for(client)}, default=str, separators=(",", ":")))

    async def writer() -> None:
        while True:
            text = await client.queue.get()
            if text is None:
                await ws.close(code=1013, message=b"resync")
                return
            await ws.send_str(text)

    wtask = asyncio.create_task(writer())
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                try:
                    d = json.loads(msg.data)
                except ValueError:
                    continue
                if d.get("op") == "ping":
                    await ws.send_str(json.dumps({"t": "pong", "d": {"now": time.time(), "id": d.get("id")}}))
                elif d.get("op") == "resync":
                    await ws.send_str(json.dumps({"t": "snapshot", "d": c.live.snapshot_for(client)}, default=str))
            elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break
            if _session(request) is None:  # logged out (or account removed) meanwhile
                break
    finally:
        c.live.clients.discard(client)
        wtask.cancel()
        try:
            await wtask
        except (asyncio.CancelledError, Exception):
            pass
    return ws


# --------------------------------------------------------------------------- the app


@web.middleware
async def security_headers(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except web.HTTPException as e:
        if e.status >= 400 and request.path.startswith("/api/") and e.content_type != "application/json":
            resp = _json_error(e.status, e.reason)
        else:
            raise
    h = resp.headers
    h.setdefault("Content-Security-Policy",
                 "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self' 'unsafe-inline'; "
                 "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("X-Frame-Options", "DENY")
    if request.path.startswith("/api/") and "Cache-Control" not in h:
        h["Cache-Control"] = "no-store"
    return resp


def create_app(
    district: Any,
    servers: Sequence[str],
    prefix: str = "",
    users_file: str | Path | None = None,
    *,
    users: dict[str, User] | None = None,
    console_id: str = "console",
    secret: bytes | None = None,
    cookie_secure: str = "auto",
    ice_hosts: Sequence[str] | None = ("127.0.0.1",),
    video_encode: str = "shared",
    stream_urls: dict[str, str] | None = None,
    graph: Any | None = None,
    replicas: int = 1,
    history_s: float = 3600.0,
    session_ttl_s: float = 12 * 3600,
) -> web.Application:
    """The console as an aiohttp application (start it with ConsoleServer, web.run_app or an AppRunner).

    district     the District (dispatch.district.load_district)
    servers      NATS URLs (dispatch.cli._client_urls finds them)
    prefix       subject prefix, as the engine's
    users_file   YAML accounts (auth.py); or `users=` a dict of User for tests
    console_id   this console's id: operator alerts go to alerts.operator.<console_id>
    secret       cookie signing key (auth.load_or_create_secret); random when None (sessions end with the process)
    cookie_secure  "auto" (Secure when the request came over https), "always" or "never"
    ice_hosts    WebRTC host candidate addresses; ("127.0.0.1",) for a console on this machine; None = all of
                 this machine's non-loopback addresses (aioice's choice) for operators on other machines
    video_encode "shared" (encode once per camera) or "per-viewer"
    stream_urls  camera id -> stream URL, overriding the district's (tests, simulators)
    """
    if cookie_secure not in ("auto", "always", "never"):
        raise ValueError("cookie_secure is auto, always or never")
    known_units = {u.id for u in district.units}
    if users is not None:
        accounts = Users(users=users, known_units=known_units)
    elif users_file is not None:
        accounts = Users(users_file, known_units=known_units)
    else:
        raise ValueError("the console needs accounts: pass users_file (YAML) or users")
    if graph is None:
        try:
            graph = district.load_streets()
        except Exception:
            graph = None
    feeds = FeedHub(district, ice_hosts=ice_hosts, stream_urls=stream_urls, encode=video_encode)
    console = Console(district, list(servers), prefix, accounts, Sessions(secret, ttl_s=session_ttl_s), console_id,
                      cookie_secure, feeds, graph, replicas=replicas, history_s=history_s)
    app = web.Application(middlewares=[security_headers], client_max_size=256 * 1024)
    app[K_CONSOLE] = console
    r = app.router
    r.add_get("/", index)
    r.add_get("/login", login_page)
    r.add_get("/console", console_page)
    r.add_get("/terminal", terminal_page)
    r.add_static("/static/", STATIC, append_version=False)
    r.add_post("/api/login", api_login)
    r.add_post("/api/logout", api_logout)
    r.add_get("/api/me", api_me)
    r.add_get("/api/health", api_health)
    r.add_get("/api/map", api_map)
    r.add_get("/api/state", api_state)
    r.add_get("/api/cameras", api_cameras)
    r.add_get("/api/cameras/{cid}/snapshot.jpg", api_camera_snapshot)
    r.add_post("/api/cameras/{cid}/webrtc", api_webrtc)
    r.add_post("/api/webrtc/{peer}/close", api_webrtc_close)
    r.add_get("/api/snapshots/{name:.+}", api_snapshot)
    r.add_post("/api/alerts/{event_id}/confirm", api_confirm)
    r.add_post("/api/alerts/{event_id}/dismiss", api_dismiss)
    r.add_post("/api/incidents/flag", api_flag)
    r.add_post("/api/incidents/{iid}/close", api_close)
    r.add_post("/api/incidents/{iid}/reassign", api_reassign)
    r.add_post("/api/incidents/{iid}/escalate", api_escalate)
    r.add_get("/api/unit/order", api_unit_order)
    r.add_get("/api/units/{unit}/order", api_unit_order)
    r.add_post("/api/unit/reply", api_unit_reply)
    r.add_post("/api/unit/status", api_unit_status)
    r.add_post("/api/unit/position", api_unit_position)
    r.add_get("/ws", ws_handler)

    async def on_startup(app: web.Application) -> None:
        await console.live.start()
        await console.feeds.start()

    async def on_shutdown(app: web.Application) -> None:
        for cl in list(console.live.clients):
            try:
                await cl.ws.close(code=1001, message=b"server shutdown")
            except Exception:
                pass

    async def on_cleanup(app: web.Application) -> None:
        await console.feeds.stop()
        await console.live.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


def console_of(app: web.Application) -> Console:
    return app[K_CONSOLE]


class ConsoleServer:
    """Run a console app on host:port (port 0: a free one) inside the current event loop."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.runner: web.AppRunner | None = None

    async def start(self) -> "ConsoleServer":
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True)
        await site.start()
        for s in site._server.sockets:  # type: ignore[union-attr]
            if s.family in (socket.AF_INET, socket.AF_INET6):
                self.port = s.getsockname()[1]
                break
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def console(self) -> Console:
        return self.app[K_CONSOLE]

    async def stop(self) -> None:
        if self.runner is not None:
            r, self.runner = self.runner, None
            await r.cleanup()

    async def __aenter__(self) -> "ConsoleServer":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


async def start_for_run(
    district: Any, servers: Sequence[str], prefix: str = "", state_dir: str | Path = ".state",
    host: str = "127.0.0.1", port: int = 8080, users_file: str | Path | None = None,
) -> tuple[ConsoleServer, dict[str, str], Path]:
    """The console as `patrollink run` starts it: accounts from the users file, or demo accounts made
    on the first run (random passwords listed in <state_dir>/console-demo-accounts.txt), the cookie key
    kept in <state_dir>/console-secret, WebRTC on 127.0.0.1 when listening there.
    Returns (server, the demo credentials made now or {}, the users file)."""
    from adapters.console.auth import create_demo_users, load_or_create_secret

    state = Path(state_dir)
    users = Path(users_file) if users_file else state / "console-users.yaml"
    made = create_demo_users(users, [u.id for u in district.units], state / "console-demo-accounts.txt")
    loopback = host in ("127.0.0.1", "localhost", "::1")
    app = create_app(district, servers, prefix=prefix, users_file=users, secret=load_or_create_secret(state / "console-secret"),
                     ice_hosts=["127.0.0.1"] if loopback else None)
    server = await ConsoleServer(app, host, port).start()
    return server, made, users
