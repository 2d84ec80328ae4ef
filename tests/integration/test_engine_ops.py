"""Operator actions reach the engine over the OPS stream: close, cancel, reassign, escalate."""

from __future__ import annotations

import asyncio
import json

import pytest
from district_fixtures import make_district, make_river_graph

from dispatch.app import build_app
from dispatch.events import Alert, AlertSource, Area, IncidentAction, UnitPosition, encode
from dispatch.subjects import Subjects

NORTH = 30.2012


@pytest.fixture
async def engine(nats_server, nc, fresh_prefix):
    app, rt = build_app(make_district(), [nats_server.url], prefix=fresh_prefix, graph=make_river_graph())
    await app.start()
    s = Subjects(fresh_prefix)
    state = rt.need_shell().state
    for _ in range(50):  # core NATS positions: repeat until the engine holds both
        if all(state.units[u].fix_time is not None for u in ("a1", "b1")):
            break
        for u, lon in (("a1", 114.899), ("b1", 114.880)):
            await nc.publish(s.unit_position(u), encode(UnitPosition(unit=u, lat=NORTH, lon=lon)))
        await nc.flush()
        await asyncio.sleep(0.1)
    events: asyncio.Queue = asyncio.Queue()
    await nc.subscribe(s.all_incident_events, cb=events.put)
    await nc.subscribe(s.all_deadletters, cb=events.put)
    try:
        yield s, rt, events
    finally:
        await app.stop()


async def next_event(q: asyncio.Queue, kind: str) -> dict:
    while True:
        m = await asyncio.wait_for(q.get(), 10)
        body = json.loads(m.data)
        if body.get("event") == kind or (kind == "deadletter" and "reason" in body):
            return body


async def raise_alert(nc, s, q) -> str:
    a = Alert(event_id="e1", source=AlertSource.operator, kind="theft", area=Area(lat=NORTH, lon=114.9), console="c1")
    await nc.jetstream().publish(s.operator_alert("c1"), encode(a), headers={"Nats-Msg-Id": a.id})
    assigned = await next_event(q, "assigned")
    assert assigned["unit"] == "a1"
    return assigned["incident_id"]


async def act(nc, s, iid, action, **kw):
    a = IncidentAction(incident_id=iid, action=action, operator="op1", console="desk2", **kw)
    await nc.jetstream().publish(s.incident_action(iid, action), encode(a), headers={"Nats-Msg-Id": a.id})


async def test_reassign_from_a_console_moves_the_incident_to_another_unit_and_records_who(engine, nc):
    s, rt, q = engine
    iid = await raise_alert(nc, s, q)
    await act(nc, s, iid, "reassign", reason="a1 is on foot today")
    req = await next_event(q, "requeued")
    assert "reassigned by op1@desk2: a1 is on foot today" in req["detail"]
    assert (await next_event(q, "assigned"))["unit"] == "b1"


async def test_escalate_and_close_from_a_console(engine, nc):
    s, rt, q = engine
    iid = await raise_alert(nc, s, q)
    await act(nc, s, iid, "escalate", reason="armed suspect")
    assert "escalated by op1@desk2" in (await next_event(q, "escalated"))["detail"]
    await act(nc, s, iid, "close", disposition="suspect arrested")
    resolved = await next_event(q, "resolved")
    assert "suspect arrested" in resolved["detail"] and "op1@desk2" in resolved["detail"]
    assert iid not in rt.need_shell().state.incidents
    assert rt.need_shell().state.units["a1"].state.value == "available"


async def test_an_action_whose_subject_names_another_incident_is_dead_lettered(engine, nc):
    s, rt, q = engine
    iid = await raise_alert(nc, s, q)
    a = IncidentAction(incident_id=iid, action="close", operator="op1", console="desk2")
    await nc.jetstream().publish(s.incident_action("someother", "close"), encode(a), headers={"Nats-Msg-Id": a.id})
    dead = await next_event(q, "deadletter")
    assert "does not match subject" in dead["reason"]
    assert iid in rt.need_shell().state.incidents
