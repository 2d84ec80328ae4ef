"""The console server's API and live channel, against a real nats-server and the real engine.

One stack per module (adapters/console/devstack.py): the engine (build_app) and the console
(create_app, on a free port) under a fresh prefix on the session's nats-server, with units p07
(next to camera cam01) and p03 (1 km east) reporting positions. Clients are plain aiohttp
sessions with their own cookie jars, one per person. Waits are bounded reads, never sleeps
standing in for an assertion.

Operator actions (`ops.incident.<id>.<action>`, stream OPS) reach the engine through its own
durable consumer, as in production.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from yarl import URL

from adapters.console.auth import (
    COOKIE,
    Sessions,
    User,
    UsersFileError,
    Users,
    add_user,
    hash_password,
    parse_users,
    verify_password,
)
from adapters.console.devstack import DevStack
from dispatch.subjects import Subjects

pytestmark = pytest.mark.integration

NEAR_CAM01 = (30.2066, 114.8985)  # p07 waits here: the engine's choice for incidents at cam01
P03_HOME = (30.2035905, 114.9063417)
CAM01 = (30.2059883, 114.8971952)
WAIT_S = 10.0


async def _eventually(check, timeout: float = WAIT_S, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        r = check()
        if asyncio.iscoroutine(r):
            r = await r
        if r:
            return r
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


class Person:
    """One browser's worth of state: a cookie jar, and optionally its live channel."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.msgs: list[tuple[str, dict[str, Any]]] = []
        self.ws: Any = None
        self._reader: asyncio.Task[Any] | None = None

    async def login(self, user: str, pw: str) -> dict[str, Any]:
        async with self.http.post(self.base + "/api/login", json={"username": user, "password": pw}) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.base + path, allow_redirects=False) as r:
            ct = r.headers.get("Content-Type", "")
            body = await r.json() if "json" in ct else await r.read()
            return r.status, body

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        async with self.http.post(self.base + path, json=body if body is not None else {}, **kw) as r:
            try:
                return r.status, await r.json()
            except Exception:
                return r.status, await r.text()

    async def connect(self, path: str = "/ws") -> None:
        self.ws = await self.http.ws_connect(self.base.replace("http", "ws") + path, origin=self.base)

        async def read() -> None:
            async for m in self.ws:
                if m.type == aiohttp.WSMsgType.TEXT:
                    d = json.loads(m.data)
                    self.msgs.append((d["t"], d["d"]))

        self._reader = asyncio.create_task(read())
        await _eventually(lambda: any(t == "snapshot" for t, _ in self.msgs), what="the snapshot")

    def of(self, t: str) -> list[dict[str, Any]]:
        return [d for tt, d in self.msgs if tt == t]

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
        await self.http.close()


@pytest.fixture(scope="module")
async def stack(nats_server, tmp_path_factory):
    prefix = "capi" + str(int(time.time() * 1000) % 100000)
    st = DevStack(nats_server.url, prefix, tmp_path_factory.mktemp("console-api"),
                  positions={"p07": NEAR_CAM01, "p03": P03_HOME}, policy={"ack_timeout_s": {1: 60, 2: 60, 3: 60}})
    await st.start()
    try:
        yield st
    finally:
        await st.stop()


@pytest.fixture
async def people(stack):
    made: list[Person] = []

    async def make(user: str | None = None, ws: bool = False, path: str = "/ws") -> Person:
        p = Person(stack.console_url)
        made.append(p)
        if user:
            await p.login(user, stack.password(user))
            if ws:
                await p.connect(path)
        return p

    yield make
    for p in made:
        await p.close()


async def _flag_at(op: Person, lat: float, lon: float, kind: str = "fight", priority: int = 2, **kw: Any) -> dict[str, Any]:
    st, body = await op.post("/api/incidents/flag", {"lat": lat, "lon": lon, "kind": kind, "priority": priority, **kw})
    assert st == 200, body
    return body


async def _incident_of(op: Person, alert_id: str) -> str:
    ev = await _eventually(lambda: next((d for d in op.of("ievent") if alert_id in (d.get("alert_ids") or [])), None),
                           what=f"an incident for alert {alert_id}")
    return ev["incident_id"]


# --------------------------------------------------------------------------- logged out, roles, sessions


async def test_logged_out_browser_gets_nothing(stack, people):
    anon = await people()
    for path in ("/api/state", "/api/map", "/api/me", "/api/cameras", "/api/unit/order", "/api/units/p07/order",
                 "/api/snapshots/cam01/x.jpg", "/api/cameras/cam01/snapshot.jpg"):
        status, body = await anon.get(path)
        assert status == 401, (path, status, body)
    for path in ("/api/incidents/flag", "/api/unit/reply", "/api/alerts/x/confirm", "/api/cameras/cam01/webrtc"):
        status, _ = await anon.post(path, {})
        assert status == 401, path
    for page in ("/console", "/terminal", "/"):
        status, _ = await anon.get(page)
        assert status == 302, page
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await anon.http.ws_connect(stack.console_url.replace("http", "ws") + "/ws")
    assert e.value.status == 401
    # the login page and its assets are public, and come from this server only
    status, html = await anon.get("/login")
    assert status == 200 and b"/static/login.js" in html
    async with anon.http.get(stack.console_url + "/login") as r:
        csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp


async def test_login_cookie_throttle_and_logout(stack, people):
    p = await people()
    st, body = await p.post("/api/login", {"username": "op1", "password": "wrong"})
    assert st == 401 and "wrong user name or password" in body["error"]
    async with p.http.post(stack.console_url + "/api/login", json={"username": "op1", "password": stack.password("op1")}) as r:
        assert r.status == 200
        cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(COOKIE + "=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # cookie_secure="never" for http://127.0.0.1 tests
    st, me = await p.get("/api/me")
    assert st == 200 and me["user"]["role"] == "operator"
    token = p.http.cookie_jar.filter_cookies(URL(stack.console_url))[COOKIE].value
    # logging out revokes that very cookie, not only the browser's copy
    st, _ = await p.post("/api/logout", {})
    assert st == 200
    other = await people()
    other.http.cookie_jar.update_cookies({COOKIE: token})
    st, _ = await other.get("/api/me")
    assert st == 401
    # a forged or tampered cookie is refused
    forged = await people()
    b64, sig = token.rsplit(".", 1)
    payload = json.loads(base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)))
    payload["r"] = "supervisor"
    bad = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=") + "." + sig
    forged.http.cookie_jar.update_cookies({COOKIE: bad})
    assert (await forged.get("/api/me"))[0] == 401
    # five wrong passwords for a name, then even the right one waits
    t = await people()
    for _ in range(5):
        assert (await t.post("/api/login", {"username": "op2", "password": "nope"}))[0] == 401
    st, body = await t.post("/api/login", {"username": "op2", "password": stack.password("op2")})
    assert st == 429 and "too many failed logins" in body["error"]
    stack.server.console.throttle.ok("u:op2")


async def test_logout_closes_the_live_channel(stack, people):
    p = await people("op2", ws=True)
    st, _ = await p.post("/api/logout", {})
    assert st == 200
    await _eventually(lambda: p.ws.closed, what="the channel closed by the logout")
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await p.http.ws_connect(stack.console_url.replace("http", "ws") + "/ws", origin=stack.console_url)


async def test_writes_need_json_from_this_origin(stack, people):
    op = await people("op1")
    st, body = await op.post("/api/incidents/flag", {"lat": CAM01[0], "lon": CAM01[1], "kind": "fight"},
                             headers={"Origin": "http://evil.example"})
    assert st == 403 and "cross-site" in body["error"]
    async with op.http.post(stack.console_url + "/api/incidents/flag", data="lat=1&lon=2",
                            headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
        assert r.status == 415
    st, body = await op.post("/api/incidents/flag", {"lat": 10.0, "lon": 10.0, "kind": "fight"})
    assert st == 400 and "outside district" in body["error"]
    st, body = await op.post("/api/incidents/flag", {"lat": CAM01[0], "lon": CAM01[1], "kind": "dragon"})
    assert st == 400 and "kind" in body["error"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await op.http.ws_connect(stack.console_url.replace("http", "ws") + "/ws", origin="http://evil.example")
    assert e.value.status == 403


async def test_operator_cannot_act_as_a_unit_and_the_reverse(stack, people):
    op = await people("op1")
    unit = await people("p03")
    for path, body in (("/api/unit/reply", {"order_id": "x", "reply": "ack"}), ("/api/unit/status", {"status": "busy"}),
                       ("/api/unit/position", {"lat": CAM01[0], "lon": CAM01[1]})):
        st, _ = await op.post(path, body)
        assert st == 403, path
    for path, body in (("/api/incidents/flag", {"lat": CAM01[0], "lon": CAM01[1], "kind": "fight"}),
                       ("/api/alerts/x/confirm", {}), ("/api/alerts/x/dismiss", {"reason": "x"}),
                       ("/api/incidents/x/close", {"disposition": "x"}), ("/api/incidents/x/escalate", {}),
                       ("/api/cameras/cam01/webrtc", {"sdp": "v=0", "type": "offer"})):
        st, _ = await unit.post(path, body)
        assert st == 403, path
    for path in ("/api/cameras", "/api/cameras/cam01/snapshot.jpg"):
        assert (await unit.get(path))[0] == 403, path
    # the unit's pages: its terminal, not the console
    assert (await unit.get("/console"))[0] == 302
    status, me = await unit.get("/api/me")
    assert me["user"] == {"username": "p03", "role": "unit", "unit": "p03", "name": "p03"}


# --------------------------------------------------------------------------- orders: only the unit's own


async def test_unit_sees_only_its_own_order_api_and_live_channel(stack, people):
    op = await people("op1", ws=True)
    p07 = await people("p07", ws=True)
    p03 = await people("p03", ws=True)
    flag = await _flag_at(op, *CAM01, kind="fight", priority=2, note="two men fighting")
    iid = await _incident_of(op, flag["alert_id"])
    order = await _eventually(lambda: next((o for o in p07.of("order") if o["incident_id"] == iid), None), what="p07's order")
    assert order["unit"] == "p07" and order["action"] == "assign" and order["route"]
    # the operator's channel has it too, with the incident, the unit and the explanation
    await _eventually(lambda: any(o["order_id"] == order["order_id"] for o in op.of("order")), what="the order on the console")
    inc = await _eventually(lambda: next((i for i in op.of("incident") if i["id"] == iid and i.get("unit") == "p07" and i.get("explanation")), None),
                            what="the incident with its unit")
    assert inc["explanation"]["chosen"] == "p07" and inc["route"]
    # p03's channel: nothing of it, and nothing of any other unit
    await asyncio.sleep(0.5)
    assert not p03.of("order"), p03.of("order")
    assert {t for t, _ in p03.msgs} <= {"hello", "snapshot", "unit", "broadcast", "pong"}
    assert all(d["id"] == "p03" for d in p03.of("unit"))
    assert not [d for t, d in p03.msgs if t in ("incident", "ievent", "alert", "health")]
    # ... and the API refuses
    st, body = await p03.get("/api/units/p07/order")
    assert st == 403 and "only its own" in body["error"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await p03.http.ws_connect(stack.console_url.replace("http", "ws") + "/ws?unit=p07", origin=stack.console_url)
    assert e.value.status == 403
    st, body = await p03.post("/api/unit/reply", {"order_id": order["order_id"], "reply": "ack"})
    assert st == 403 and "not yours" in body["error"]
    st, mine = await p03.get("/api/unit/order")
    assert st == 200 and mine["order"] is None
    st, theirs = await p07.get("/api/unit/order")
    assert theirs["order"]["order_id"] == order["order_id"]
    st, seen_by_op = await op.get("/api/units/p07/order")
    assert st == 200 and seen_by_op["order"]["order_id"] == order["order_id"]

    # the officer acknowledges: a JetStream message with its id as Nats-Msg-Id, and the engine records it
    st, r = await p07.post("/api/unit/reply", {"order_id": order["order_id"], "reply": "ack"})
    assert st == 200, r
    js = stack.nc.jetstream()
    m = await js.get_last_msg(stack.engine_rt.subjects.stream_radio, stack.engine_rt.subjects.reply("p07"))
    assert m.headers["Nats-Msg-Id"] == r["reply_id"] and json.loads(m.data)["reply"] == "ack"
    await _eventually(lambda: any(d["incident_id"] == iid and d["event"] == "acknowledged" for d in op.of("ievent")), what="acknowledged")
    await _eventually(lambda: any(d["id"] == "p07" and d["state"] == "acknowledged" for d in p07.of("unit")), what="p07 acknowledged")
    st, body = await p07.post("/api/unit/reply", {"order_id": order["order_id"], "reply": "decline"})
    assert st == 400 and "why" in body["error"]
    for step in ("en_route", "on_scene"):
        assert (await p07.post("/api/unit/reply", {"order_id": order["order_id"], "reply": step}))[0] == 200
        await _eventually(lambda: any(d["incident_id"] == iid and d["event"] == step for d in op.of("ievent")), what=step)
    assert (await p07.post("/api/unit/reply", {"order_id": order["order_id"], "reply": "cleared", "reason": "resolved on scene"}))[0] == 200
    await _eventually(lambda: any(d["incident_id"] == iid and d["event"] == "resolved" for d in op.of("ievent")), what="resolved")
    # a finished order cannot be answered again
    st, body = await p07.post("/api/unit/reply", {"order_id": order["order_id"], "reply": "ack"})
    assert st == 409
    await _eventually(lambda: stack.server.console.live.units["p07"]["state"] == "available", what="p07 free again")


async def test_decline_with_a_reason_goes_to_the_next_unit(stack, people):
    op = await people("op1", ws=True)
    p07 = await people("p07", ws=True)
    p03 = await people("p03", ws=True)
    flag = await _flag_at(op, *CAM01, kind="theft", priority=2)
    iid = await _incident_of(op, flag["alert_id"])
    first = await _eventually(lambda: next((o for o in p07.of("order") if o["incident_id"] == iid), None), what="p07's order")
    st, _ = await p07.post("/api/unit/reply", {"order_id": first["order_id"], "reply": "decline", "reason": "already on another job"})
    assert st == 200
    dec = await _eventually(lambda: next((d for d in op.of("ievent") if d["incident_id"] == iid and d["event"] == "declined"), None), what="declined")
    assert dec["unit"] == "p07" and dec["detail"] == "already on another job"
    second = await _eventually(lambda: next((o for o in p03.of("order") if o["incident_id"] == iid), None), what="the next unit's order")
    assert second["attempt"] == 2 and not [o for o in p07.of("order") if o["order_id"] == second["order_id"]]
    st, _ = await op.post(f"/api/incidents/{iid}/close", {"disposition": "handled by phone"})
    assert st == 200
    await _eventually(lambda: any(o["order_id"] == second["order_id"] and o["action"] == "cancel" for o in p03.of("order")), what="p03's order withdrawn")


async def test_unit_status_and_position_go_to_the_engine(stack, people):
    unit = await people("p03", ws=True)
    st, body = await unit.post("/api/unit/position", {"lat": 10.0, "lon": 10.0})
    assert st == 400 and "outside district" in body["error"]
    st, _ = await unit.post("/api/unit/position", {"lat": P03_HOME[0] + 0.0005, "lon": P03_HOME[1], "accuracy_m": 8, "source": "gps"})
    assert st == 200
    shell = stack.engine_rt.need_shell()
    await _eventually(lambda: abs((shell.state.units["p03"].lat or 0) - (P03_HOME[0] + 0.0005)) < 1e-9, what="the engine's fix")
    assert (await unit.post("/api/unit/status", {"status": "busy"}))[0] == 200
    await _eventually(lambda: any(d["id"] == "p03" and d["state"] == "busy" for d in unit.of("unit")), what="busy on the channel")
    assert (await unit.post("/api/unit/status", {"status": "available"}))[0] == 200
    await _eventually(lambda: shell.state.units["p03"].state.value == "available", what="available again")
    await stack.report_positions(["p03"])


# --------------------------------------------------------------------------- operator actions, recorded with who did them


async def test_camera_alert_snapshot_confirm_dismiss_close_with_who(stack, people):
    op = await people("op1", ws=True)
    sup = await people("sup1")
    p07 = await people("p07", ws=True)
    p03 = await people("p03")
    s: Subjects = stack.engine_rt.subjects
    heard: list[tuple[str, dict[str, Any]]] = []

    async def hear(m: Any) -> None:
        if m.data[:1] == b"{":
            heard.append((m.subject, json.loads(m.data)))

    sub = await stack.nc.subscribe(f"{stack.prefix}.>", cb=hear)
    try:
        jpeg = _jpeg()
        a = await stack.publish_camera_alert("cam01", "intrusion", priority=2, snapshot=jpeg)
        entry = await _eventually(lambda: next((d for d in op.of("alert") if d["event_id"] == a.event_id and d.get("incident_id")), None),
                                  what="the camera alert in the queue, linked to its incident")
        assert entry["snapshot"] == f"cam01/{a.event_id}.jpg" and entry["camera_name"].startswith("Gongren Xincun west")
        st, data = await op.get(f"/api/snapshots/{entry['snapshot']}")
        assert st == 200 and data == jpeg
        iid = entry["incident_id"]
        order = await _eventually(lambda: next((o for o in p07.of("order") if o["incident_id"] == iid), None), what="p07's order")
        assert order["snapshot"] == entry["snapshot"]
        assert (await p07.get(f"/api/snapshots/{entry['snapshot']}"))[0] == 200  # its own order's picture
        assert (await p03.get(f"/api/snapshots/{entry['snapshot']}"))[0] == 403  # not another unit's

        # confirm: an operator alert naming op1, on alerts.operator.<console>; the engine upgrades the incident
        st, r = await op.post(f"/api/alerts/{a.event_id}/confirm", {"note": "seen on camera"})
        assert st == 200, r
        conf = await _eventually(lambda: next((d for subj, d in heard if subj == s.operator_alert("console1") and d.get("confirms") == a.event_id), None),
                                 what="the confirmation")
        assert conf["operator"] == "op1" and conf["console"] == "console1" and conf["certainty"] == "Observed"
        up = await _eventually(lambda: next((d for d in op.of("ievent") if d["incident_id"] == iid and d["event"] == "upgraded"), None), what="upgraded")
        assert "confirmed by op1" in up["detail"]
        await _eventually(lambda: any(d["event_id"] == a.event_id and (d.get("verdict") or {}).get("by") == "op1" for d in op.of("alert")), what="the verdict")

        # an operator may not cancel or pick the unit; a supervisor may
        st, body = await op.post(f"/api/incidents/{iid}/close", {"disposition": "x", "cancel": True})
        assert st == 403 and "supervisor" in body["error"]
        st, body = await op.post(f"/api/incidents/{iid}/reassign", {"unit": "p03", "reason": "nearer"})
        assert st == 403
        st, r = await sup.post(f"/api/incidents/{iid}/reassign", {"unit": "p03", "reason": "p03 knows the place"})
        assert st == 200
        act = await _eventually(lambda: next((d for subj, d in heard if subj == f"{stack.prefix}.ops.incident.{iid}.reassign"), None), what="reassign")
        assert act["operator"] == "sup1" and act["unit"] == "p03" and act["reason"] == "p03 knows the place"
        st, r = await op.post(f"/api/incidents/{iid}/escalate", {"reason": "crowd gathering"})
        assert st == 200
        # close with a disposition: recorded on the OPS stream with who; the engine resolves it
        st, r = await op.post(f"/api/incidents/{iid}/close", {"disposition": "resolved on scene: youths told to leave"})
        assert st == 200, r
        js = stack.nc.jetstream()
        m = await js.get_last_msg(f"{stack.prefix}_OPS", f"{stack.prefix}.ops.incident.{iid}.close")
        assert m.headers["Nats-Msg-Id"] == r["action_id"]
        rec = json.loads(m.data)
        assert rec["operator"] == "op1" and rec["console"] == "console1" and rec["disposition"].startswith("resolved on scene")
        res = await _eventually(lambda: next((d for d in op.of("ievent") if d["incident_id"] == iid and d["event"] == "resolved"), None), what="resolved")
        assert "(by op1@console1)" in res["detail"]
        await _eventually(lambda: any(o["order_id"] == order["order_id"] and o["action"] == "cancel" for o in p07.of("order")), what="the order withdrawn")
        st, body = await op.post(f"/api/incidents/{iid}/close", {"disposition": "again"})
        assert st == 404

        # dismiss: feedback to the adapter, the verdict kept for every console, the incident cancelled as a false alarm
        b = await stack.publish_camera_alert("cam01", "loitering", priority=3, snapshot=jpeg)
        entry_b = await _eventually(lambda: next((d for d in op.of("alert") if d["event_id"] == b.event_id and d.get("incident_id")), None), what="alert b")
        st, r = await op.post(f"/api/alerts/{b.event_id}/dismiss", {"reason": "tree shadow"})
        assert st == 200 and r["cancelled_incident"] == entry_b["incident_id"]
        fb = await _eventually(lambda: next((d for subj, d in heard if subj == s.camera_feedback("cam01") and d["event_id"] == b.event_id), None), what="feedback")
        assert fb["verdict"] == "dismissed" and fb["operator"] == "op1" and fb["reason"] == "tree shadow"
        cancelled = await _eventually(lambda: next((d for d in op.of("ievent") if d["incident_id"] == entry_b["incident_id"] and d["event"] == "cancelled"), None),
                                      what="cancelled")
        assert "false alarm: tree shadow" in cancelled["detail"] and "(by op1@console1)" in cancelled["detail"]
        # a second console, started now, sees both verdicts from the OPS and ALERTS streams
        late = await people("op2", ws=True)
        snap = late.of("snapshot")[0]
        verdicts = {x["event_id"]: x["verdict"] for x in snap["alerts"] if x.get("verdict")}
        assert verdicts.get(a.event_id, {}).get("verdict") == "confirmed" and verdicts.get(b.event_id, {}).get("verdict") == "dismissed"
    finally:
        await sub.unsubscribe()
        await stack.report_positions()


async def test_escalation_and_drill_traffic_reach_the_console_apart(stack, people):
    op = await people("op1", ws=True)
    p03 = await people("p03", ws=True)
    # a drill incident with no unit in the drill: nobody can take it, it escalates
    flag = await _flag_at(op, *CAM01, kind="fight", priority=1, exercise="exA")
    iid = await _incident_of(op, flag["alert_id"])
    esc = await _eventually(lambda: next((d for d in op.of("ievent") if d["incident_id"] == iid and d["event"] == "escalated"), None), what="escalated")
    assert esc["exercise"] == "exA"
    inc = await _eventually(lambda: next((i for i in op.of("incident") if i["id"] == iid and i["state"] == "escalated"), None), what="the record")
    assert inc["exercise"] == "exA"
    # the drill's broadcasts go to drill talkgroups: p03 (not in the drill) hears none of them
    await _eventually(lambda: any(b.get("exercise") == "exA" for b in op.of("broadcast")), what="the drill broadcast on the console")
    await asyncio.sleep(0.3)
    assert not p03.of("broadcast")
    # the close of a drill incident carries the drill id
    st, r = await op.post(f"/api/incidents/{iid}/close", {"disposition": "drill over"})
    assert st == 200
    m = await stack.nc.jetstream().get_last_msg(f"{stack.prefix}_OPS", f"{stack.prefix}.ops.incident.{iid}.close")
    assert json.loads(m.data)["exercise"] == "exA"


# --------------------------------------------------------------------------- accounts


def test_password_hashes_and_users_file(tmp_path):
    h = hash_password("correct horse")
    assert h.startswith("scrypt$16384$8$1$") and verify_password("correct horse", h) and not verify_password("wrong", h)
    assert hash_password("correct horse") != h  # salted
    f = tmp_path / "users.yaml"
    add_user(f, "chen", "operator", "pw-chen-123")
    add_user(f, "p07", "unit", "pw-p07-123", unit="p07", known_units={"p07"})
    add_user(f, "chen", "supervisor", "pw-chen-456")  # replaces
    assert (f.stat().st_mode & 0o777) == 0o600
    data = yaml.safe_load(f.read_text())
    assert [u["username"] for u in data["users"]] == ["p07", "chen"] and "pw-chen" not in f.read_text()
    users = Users(f)
    assert users.check("chen", "pw-chen-456").role == "supervisor"
    assert users.check("chen", "pw-chen-123") is None and users.check("nobody", "x") is None
    with pytest.raises(UsersFileError, match="needs `unit"):
        parse_users({"users": [{"username": "x", "role": "unit", "password": h}]})
    with pytest.raises(UsersFileError, match="must be a hash"):
        parse_users({"users": [{"username": "x", "role": "operator", "password": "plain"}]})
    with pytest.raises(UsersFileError, match="not in the district"):
        parse_users({"users": [{"username": "x", "role": "unit", "unit": "zz", "password": h}]}, known_units={"p07"})
    # an account removed from the file ends its sessions at the next request
    sessions = Sessions()
    token, _ = sessions.issue(users.get("p07"))
    assert sessions.read(token) is not None
    data["users"] = [u for u in data["users"] if u["username"] != "p07"]
    time.sleep(0.01)
    f.write_text(yaml.safe_dump(data))
    assert users.get("p07") is None
    expired = Sessions(sessions.secret, ttl_s=-1)
    assert expired.read(expired.issue(User("a", "operator", h))[0]) is None


def test_adduser_command(tmp_path):
    f = tmp_path / "u.yaml"
    cmd = [sys.executable, "-m", "dispatch.cli", "console", "adduser", "p07", "--role", "unit", "--unit", "p07",
           "--users", str(f), "--password-stdin"]
    r = subprocess.run(cmd, input="long-enough-pw\n", capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    assert Users(f).check("p07", "long-enough-pw").unit == "p07"
    r = subprocess.run(cmd[:-1] + ["--password-stdin"], input="short\n", capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode != 0 and "at least 8" in r.stderr
    r = subprocess.run([sys.executable, "-m", "dispatch.cli", "console", "users", "--users", str(f)], capture_output=True, text=True,
                       timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert "p07" in r.stdout and "1 accounts" in r.stdout


def _jpeg() -> bytes:
    import cv2
    import numpy as np

    img = np.zeros((36, 64, 3), np.uint8)
    img[:, :32] = (0, 0, 255)
    return cv2.imencode(".jpg", img)[1].tobytes()
