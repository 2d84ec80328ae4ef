"""The engine app on a real nats-server with JetStream: streams, key-value state, timers.

Each test starts `build_app(...)` under its own prefix on the session's server,
plays the outside world with a nats-py client (positions over core NATS, alerts
and replies as JetStream publishes de-duplicated by `Nats-Msg-Id`) and watches
everything under the prefix with ONE subscription, so messages are seen in the
order the server delivered them. Waits are bounded reads (10 s), never sleeps
standing in for an assertion.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from district_fixtures import RIVER_LATS, make_district, make_river_graph
from nats.js.api import StorageType

from dispatch.app import EngineRuntime, build_app, meet_replicas
from dispatch.core.records import IncidentState
from dispatch.events import (
    Alert,
    AlertSource,
    Area,
    Broadcast,
    CapStatus,
    DispatchOrder,
    IncidentEvent,
    Message,
    OrderReply,
    Rejected,
    ReplyKind,
    UnitPosition,
    encode,
    new_id,
)
from dispatch.subjects import Subjects

NORTH, SOUTH = RIVER_LATS
SCENE = (NORTH, 114.900)
WAIT_S = 10.0
QUICK = {"ack_timeout_s": {1: 1, 2: 1, 3: 1}}  # timeouts fire within about a second
PATIENT = {"ack_timeout_s": {1: 30, 2: 30, 3: 30}}  # no timeout can overtake a reply


class Live:
    """One engine app under a prefix on the real server, and the world around it."""

    def __init__(self, nc: Any, url: str, prefix: str, district: Any) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.url = url
        self.prefix = prefix
        self.district = district
        self.subjects = Subjects(prefix)
        self.app: Any = None
        self.rt: EngineRuntime | None = None
        self.seen: list[tuple[str, Message]] = []  # (subject, message) in delivery order
        self._changed = asyncio.Condition()
        self._sub: Any = None

    # -- lifecycle
    async def watch(self) -> None:
        self._sub = await self.nc.subscribe(f"{self.prefix}.>", cb=self._on_msg)
        await self.nc.flush()

    async def start(self) -> "Live":
        self.app, self.rt = build_app(self.district, [self.url], prefix=self.prefix, graph=make_river_graph())
        await self.app.start()
        # the app returns once its subscriptions are queued on the connection; a round trip makes
        # sure the server has them, so a position sent over core NATS right now is not dropped
        await self.rt.extras["broker"].connection.flush()
        return self

    async def stop(self) -> None:
        if self.app is not None:
            app, self.app = self.app, None
            await app.stop()

    async def close(self) -> None:
        await self.stop()
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    @property
    def shell(self) -> Any:
        assert self.rt is not None
        return self.rt.need_shell()

    # -- the outside world talking to the engine
    async def position(self, unit: str, lat: float, lon: float, **kw: Any) -> UnitPosition:
        """Report a position over core NATS and wait until the engine holds it.

        Positions do not travel through a stream, so nothing orders them before a following
        alert; and like a terminal, the helper reports again (the same fix) until it is heard:
        under heavy load the first core message right after start-up was seen to go missing."""
        p = UnitPosition(unit=unit, lat=lat, lon=lon, **kw)

        def holds() -> bool:
            u = self.shell.state.units.get(unit)
            return u is not None and (u.lat, u.lon, u.fix_time, u.exercise) == (p.lat, p.lon, p.time, p.exercise)

        async def report_until_held() -> None:
            while True:
                await self.nc.publish(self.subjects.unit_position(unit), encode(p))
                for _ in range(50):
                    if holds():
                        return
                    await asyncio.sleep(0.01)

        try:
            await asyncio.wait_for(report_until_held(), WAIT_S)
        except TimeoutError:
            raise AssertionError(f"the engine did not take {unit}'s position within {WAIT_S} s: {self.shell.state.units.get(unit)!r}") from None
        return p

    async def alert(self, lat: float = SCENE[0], lon: float = SCENE[1], kind: str = "intrusion", **kw: Any) -> Alert:
        exercise = kw.get("exercise")
        a = Alert(
            event_id=kw.pop("event_id", None) or new_id(),
            source=AlertSource.operator,
            console="c1",
            kind=kind,
            area=Area(lat=lat, lon=lon, description="test place"),
            status=CapStatus.Exercise if exercise else CapStatus.Actual,
            **kw,
        )
        await self.jpub(self.subjects.operator_alert("c1"), encode(a), a.id)
        return a

    async def camera_alert(self, camera: str, **kw: Any) -> Alert:
        a = Alert(event_id=kw.pop("event_id", None) or new_id(), source=AlertSource.camera, camera=camera, **kw)
        await self.jpub(self.subjects.camera_alert(camera), encode(a), a.id)
        return a

    async def reply(self, order: DispatchOrder, kind: ReplyKind, reason: str = "") -> OrderReply:
        r = OrderReply(order_id=order.order_id, incident_id=order.incident_id, unit=order.unit, reply=kind, reason=reason)
        await self.jpub(self.subjects.reply(order.unit), encode(r), r.id)
        return r

    async def jpub(self, subject: str, data: bytes, msg_id: str) -> Any:
        return await self.js.publish(subject, data, headers={"Nats-Msg-Id": msg_id})

    # -- what the engine says
    async def _on_msg(self, msg: Any) -> None:
        parts = self.subjects.strip(msg.subject).split(".")
        model: type[Message] | None = None
        if parts[0] == "radio" and parts[1] == "talkgroup":
            model = Broadcast
        elif parts[0] == "radio" and parts[-1] == "order":
            model = DispatchOrder
        elif parts[0] == "incidents":
            model = IncidentEvent
        elif parts[0] == "deadletter":
            model = Rejected
        if model is None:
            return  # our own inputs coming back
        self.seen.append((msg.subject, model.model_validate_json(msg.data)))
        async with self._changed:
            self._changed.notify_all()

    def select(self, model: type[Message], **where: Any) -> list[Any]:
        def fits(m: Message) -> bool:
            for k, v in where.items():
                got = getattr(m, k)
                if callable(v) and not isinstance(v, str):
                    if not v(got):
                        return False
                elif got != v:
                    return False
            return True

        return [m for _, m in self.seen if isinstance(m, model) and fits(m)]

    def subject_of(self, m: Message) -> str:
        return next(s for s, x in self.seen if x is m)

    async def wait(self, model: type[Message], n: int = 1, **where: Any) -> list[Any]:
        """Wait until at least n messages of this type match `where`; return all that match."""

        async def enough() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.select(model, **where)) >= n)

        try:
            await asyncio.wait_for(enough(), WAIT_S)
        except TimeoutError:
            got = [(s, type(m).__name__) for s, m in self.seen]
            raise AssertionError(f"no {n} x {model.__name__} matching {where} within {WAIT_S} s; saw {got}") from None
        return self.select(model, **where)

    async def order(self, **where: Any) -> DispatchOrder:
        """The first order (assign) that matches, once it has arrived."""
        return (await self.wait(DispatchOrder, **{"action": "assign", **where}))[0]

    async def event(self, event: str, **where: Any) -> IncidentEvent:
        """The first incident event of this kind that matches, once it has arrived."""
        return (await self.wait(IncidentEvent, event=event, **where))[0]


@pytest.fixture
async def engine_on(nc, nats_server, fresh_prefix):
    """`await engine_on(units=..., policy=...)` starts an engine app under this test's prefix."""
    lives: list[Live] = []

    async def start(units: Any = None, policy: Any = None) -> Live:
        live = Live(nc, nats_server.url, fresh_prefix, make_district(units=units, policy=policy))
        lives.append(live)
        await live.watch()
        return await live.start()

    try:
        yield start
    finally:
        for live in lives:
            await live.close()


def utc(seconds_ago: float = 0.0) -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)


# --------------------------------------------------------------------------- durability of the plumbing


async def test_streams_use_file_storage_and_state_lives_in_file_backed_buckets(engine_on, nc):
    live = await engine_on()
    s = live.subjects
    js = nc.jetstream()
    for stream in (s.stream_alerts, s.stream_radio, s.stream_incidents, s.stream_deadletter):
        info = await js.stream_info(stream)
        assert info.config.storage == StorageType.FILE, stream
    assert (await js.stream_info(s.stream_alerts)).config.subjects == [s.all_alerts]
    status = await (await js.key_value(s.bucket_state)).status()
    assert status.bucket == s.bucket_state
    assert (await js.stream_info(f"KV_{s.bucket_state}")).config.storage == StorageType.FILE


async def test_a_lone_engine_writes_each_decision_in_one_burst_and_switches_to_phased_and_atomic_writes_when_a_replica_starts(engine_on, nc):
    first = await engine_on()
    s = first.subjects
    assert (await nc.jetstream().stream_info(f"KV_{s.bucket_state}")).config.allow_atomic
    assert first.shell.store.atomic and not first.shell.shared, "alone: nobody can get between its writes"
    second = await engine_on()
    assert second.shell.shared, "the newcomer heard the first engine answer its hello"
    assert first.shell.shared, "the first engine heard the newcomer's hello before it took any input"
    await second.stop()
    assert first.shell.shared, "a replica that went quiet may be cut off, not gone: it stays on"


async def test_a_hello_answered_after_the_wait_still_switches_the_newcomer(nc, fresh_prefix):
    subject = Subjects(fresh_prefix).engine_hello

    async def busy_replica(msg) -> None:  # answers, but only after a long batch
        await asyncio.sleep(0.3)
        await nc.publish(msg.reply, b"busy")

    await nc.subscribe(subject, cb=busy_replica)
    seen: list[int] = []
    assert not await meet_replicas(nc, subject, lambda: seen.append(1), wait_s=0.05)
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.02)
    assert seen == [1]


# --------------------------------------------------------------------------- choosing a unit


async def test_an_alert_whose_straight_line_nearest_unit_is_across_the_river_goes_to_the_unit_nearest_by_road(engine_on):
    live = await engine_on()
    await live.position("a1", SOUTH, 114.900)  # 267 m away in a straight line, across the river
    await live.position("b1", NORTH, 114.892)  # 770 m away on the same bank
    await live.alert()
    order = await live.order()

    assert order.unit == "b1"
    assert live.subject_of(order) == live.subjects.order("b1")
    ex = order.explanation
    assert ex is not None and ex.chosen == "b1"
    cands = {c.unit: c for c in ex.candidates}
    assert set(cands) == {"a1", "b1"} and cands["a1"].method == "road"
    assert cands["a1"].distance_m < cands["b1"].distance_m and cands["a1"].eta_s > cands["b1"].eta_s
    assert order.eta_s == pytest.approx(cands["b1"].eta_s, abs=0.1)
    [why_a1] = [sk.reason for sk in ex.skipped if sk.unit == "a1"]
    assert "slower" in why_a1 and "nearer in a straight line" in why_a1
    opened, assigned = await live.event("opened"), await live.event("assigned")
    assert opened.incident_id == assigned.incident_id == order.incident_id and assigned.eta_s == order.eta_s


async def test_volunteers_never_get_a_violent_incident_but_do_take_a_watch_task(engine_on):
    live = await engine_on(
        units=[
            {"id": "v1", "kind": "volunteer", "mode": "bicycle", "talkgroup": "volunteers"},
            {"id": "a1", "kind": "police", "mode": "car"},
        ]
    )
    await live.position("v1", NORTH, 114.899)  # right next to the scene
    await live.position("a1", NORTH, 114.884)
    await live.alert(kind="assault", priority=1)
    violent = await live.order()
    await live.alert(kind="loitering", priority=3, lat=NORTH, lon=114.898)
    watch = await live.order(kind="loitering")

    assert violent.unit == "a1"
    assert any(sk.unit == "v1" and "volunteer units do not take assault incidents" in sk.reason for sk in violent.explanation.skipped)
    assert watch.unit == "v1"
    assert live.select(DispatchOrder, unit="v1", kind="assault") == []


async def test_a_unit_whose_position_is_stale_is_skipped(engine_on):
    live = await engine_on(policy={"stale_position_s": 30})
    await live.position("a1", NORTH, 114.899, time=utc(seconds_ago=300))  # nearest, but the fix is 5 minutes old
    await live.position("b1", NORTH, 114.884)
    await live.alert()
    order = await live.order()

    assert order.unit == "b1"
    assert any(sk.unit == "a1" and "stale position" in sk.reason for sk in order.explanation.skipped)


# --------------------------------------------------------------------------- acknowledge or move on


async def test_an_order_not_acknowledged_in_time_goes_to_the_next_unit_and_the_first_is_cancelled(engine_on):
    live = await engine_on(policy=QUICK)
    await live.position("a1", NORTH, 114.899)
    await live.position("b1", NORTH, 114.884)
    await live.alert()
    first = await live.order()
    second = await live.order(unit="b1")
    [cancel] = await live.wait(DispatchOrder, action="cancel", unit="a1")
    timed_out = await live.event("timed_out")

    assert first.unit == "a1" and first.ack_deadline is not None
    assert second.incident_id == first.incident_id and second.attempt == 2
    assert cancel.order_id == first.order_id and "not acknowledged" in cancel.reason
    assert timed_out.unit == "a1" and timed_out.order_id == first.order_id
    assert live.shell.state.units["a1"].order is None


async def test_a_decline_sends_the_order_to_the_next_unit_at_once(engine_on):
    live = await engine_on(policy=PATIENT)
    await live.position("a1", NORTH, 114.899)
    await live.position("b1", NORTH, 114.884)
    await live.alert()
    first = await live.order()
    await live.reply(first, ReplyKind.decline, reason="flat tyre")
    second = await live.order(unit="b1")
    declined = await live.event("declined")

    assert first.unit == "a1"
    assert second.incident_id == first.incident_id and second.attempt == 2
    assert declined.unit == "a1" and declined.detail == "flat tyre"
    assert live.select(IncidentEvent, event="timed_out") == []


async def test_when_no_candidate_is_left_the_talkgroups_hear_a_broadcast_and_the_incident_escalates(engine_on):
    live = await engine_on(policy=PATIENT)
    await live.position("a1", NORTH, 114.899)  # b1 never reports a position: not a candidate
    await live.alert(priority=1)
    first = await live.order()
    await live.reply(first, ReplyKind.decline, reason="already on a call")
    escalated = await live.event("escalated")
    casts = await live.wait(Broadcast, n=2, incident_id=first.incident_id)

    assert escalated.incident_id == first.incident_id and escalated.state == "escalated"
    assert {live.subject_of(b) for b in casts} == {live.subjects.talkgroup("supervisors"), live.subjects.talkgroup("police")}
    assert all(b.reason == "escalation" and b.priority == 1 for b in casts)
    assert live.select(DispatchOrder, action="assign") == [first]


# --------------------------------------------------------------------------- correlation and pre-emption


async def test_two_alerts_from_one_camera_and_zone_within_the_window_make_one_incident(engine_on):
    live = await engine_on(policy=PATIENT)
    await live.position("a1", NORTH, 114.899)
    first = await live.camera_alert("cam1", kind="intrusion", zones=("gate",))
    opened = await live.event("opened")
    second = await live.camera_alert("cam1", kind="intrusion", zones=("gate",))
    merged = await live.event("merged")

    assert merged.incident_id == opened.incident_id
    assert first.id in opened.alert_ids and second.id in merged.alert_ids
    assert len(live.select(IncidentEvent, event="opened")) == 1
    assert len(live.shell.state.incidents) == 1
    assert len(live.select(DispatchOrder, action="assign")) == 1


async def test_a_priority_one_incident_takes_the_unit_off_a_priority_three_one_which_is_requeued_and_served_later(engine_on):
    live = await engine_on(units=[{"id": "a1", "kind": "police", "mode": "car"}], policy=PATIENT)
    await live.position("a1", NORTH, 114.899)
    await live.alert(kind="theft", priority=3, lon=114.900)
    low = await live.order()
    await live.reply(low, ReplyKind.ack)
    await live.event("acknowledged", incident_id=low.incident_id)

    await live.alert(kind="assault", priority=1, lon=114.901)
    urgent = await live.order(kind="assault")
    [cancel] = await live.wait(DispatchOrder, action="cancel", incident_id=low.incident_id)
    preempted = await live.event("preempted", incident_id=low.incident_id)
    await live.event("requeued", incident_id=low.incident_id)
    assert urgent.unit == "a1" and urgent.priority == 1
    assert cancel.unit == "a1" and cancel.order_id == low.order_id
    assert preempted.unit == "a1" and urgent.incident_id in preempted.detail
    waiting = live.shell.state.incidents[low.incident_id]  # open, without a unit (no other unit is free)
    assert waiting.state in (IncidentState.queued, IncidentState.escalated) and waiting.unit is None

    # the priority-1 incident is dealt with; a1 reports from the scene and clears
    await live.reply(urgent, ReplyKind.ack)
    await live.reply(urgent, ReplyKind.on_scene)
    await live.event("on_scene", incident_id=urgent.incident_id)
    await live.position("a1", NORTH, 114.901)
    await live.reply(urgent, ReplyKind.cleared, reason="arrest made")
    await live.event("resolved", incident_id=urgent.incident_id)
    again = await live.order(incident_id=low.incident_id, attempt=2)

    assert again.unit == "a1" and again.kind == "theft"


# --------------------------------------------------------------------------- drills


async def test_drill_alerts_only_reach_units_in_that_drill_and_orders_carry_the_drill_id(engine_on):
    live = await engine_on(policy=PATIENT)
    await live.position("a1", NORTH, 114.899)  # a real unit, right next to the scene
    await live.position("b1", NORTH, 114.884, exercise="drill-1")
    await live.alert(exercise="drill-1")
    drill = await live.order()
    await live.reply(drill, ReplyKind.decline, reason="exercise: simulate no answer")
    escalated = await live.event("escalated", exercise="drill-1")
    await live.alert(kind="theft", lon=114.898)
    real = await live.order(kind="theft")

    assert drill.unit == "b1" and drill.exercise == "drill-1"
    assert escalated.incident_id == drill.incident_id  # the real unit was never the fallback
    assert all(b.exercise == "drill-1" for b in live.select(Broadcast))
    assert real.unit == "a1" and real.exercise is None
    assert [o.unit for o in live.select(DispatchOrder, action="assign", exercise="drill-1")] == ["b1"]


# --------------------------------------------------------------------------- bad input


def _schema_v2() -> bytes:
    a = Alert(event_id="e9", source="operator", console="c1", kind="theft", area=Area(lat=NORTH, lon=114.9))
    return json.dumps({**json.loads(encode(a)), "schema_version": 2}).encode()


BAD_INPUTS: dict[str, tuple[str, Any, Any, str]] = {
    # name: (how it is sent, its subject, its payload, words the reason holds)
    "malformed-json": (
        "js",
        lambda s: s.operator_alert("c1"),
        lambda: b'{"event_id": "e1", "source": ',
        "malformed JSON",
    ),
    "wrong-schema-version": ("js", lambda s: s.operator_alert("c1"), _schema_v2, "schema version 2 is not supported"),
    "unknown-unit": (
        "core",
        lambda s: s.unit_position("zz9"),
        lambda: encode(UnitPosition(unit="zz9", lat=NORTH, lon=114.9)),
        "unknown unit 'zz9'",
    ),
    "unknown-camera": (
        "js",
        lambda s: s.camera_alert("nope"),
        lambda: encode(Alert(event_id="e8", source="camera", camera="nope", kind="theft")),
        "unknown camera 'nope'",
    ),
    "position-outside-district": (
        "core",
        lambda s: s.unit_position("b1"),
        lambda: encode(UnitPosition(unit="b1", lat=31.5, lon=114.9)),
        "outside district",
    ),
}


@pytest.mark.parametrize("case", [*sorted(BAD_INPUTS), "replayed-id"])
async def test_bad_input_ends_on_deadletter_with_its_reason_is_counted_and_the_next_alert_is_answered(engine_on, case):
    live = await engine_on(policy=PATIENT)
    s = live.subjects
    await live.position("a1", NORTH, 114.899)
    await live.position("b1", NORTH, 114.884)
    if case == "replayed-id":
        a = await live.alert()
        await live.order(unit="a1")
        subject, data, words = s.operator_alert("c1"), encode(a), f"replayed message id {a.id}"
        await live.jpub(subject, data, new_id())  # the same message again, under a new JetStream id
    else:
        how, subject_of, build, words = BAD_INPUTS[case]
        subject, data = subject_of(s), build()
        if how == "js":
            await live.jpub(subject, data, new_id())
        else:
            await live.nc.publish(subject, data)
    [rej] = await live.wait(Rejected)
    good = await live.alert(kind="theft", lon=114.885)
    opened = await live.event("opened", alert_ids=lambda ids: good.id in ids)
    answer = await live.order(incident_id=opened.incident_id)

    assert live.subject_of(rej) == f"{live.prefix}.deadletter.{s.strip(subject)}"  # deadletter.<original subject>
    assert rej.subject == subject and words in rej.reason
    assert base64.b64decode(rej.raw) == data
    assert live.shell.deadletters == 1
    assert answer.unit == "b1"
    assert len(live.select(Rejected)) == 1


async def test_the_same_alert_published_twice_with_one_msg_id_is_stored_once_and_harmless(engine_on):
    live = await engine_on(policy=PATIENT)
    await live.position("a1", NORTH, 114.899)
    await live.position("b1", NORTH, 114.884)
    a = Alert(event_id="e1", source=AlertSource.operator, console="c1", kind="intrusion", area=Area(lat=NORTH, lon=114.9))
    first = await live.jpub(live.subjects.operator_alert("c1"), encode(a), a.id)
    again = await live.jpub(live.subjects.operator_alert("c1"), encode(a), a.id)
    good = await live.alert(kind="theft", lon=114.885)  # delivered after anything stored before it
    await live.event("opened", alert_ids=lambda ids: good.id in ids)

    assert not first.duplicate and again.duplicate and again.seq == first.seq
    assert len(live.select(IncidentEvent, event="opened", alert_ids=lambda ids: a.id in ids)) == 1
    assert live.select(Rejected) == [] and live.shell.deadletters == 0
    assert len(live.shell.state.incidents) == 2


# --------------------------------------------------------------------------- restart


async def test_state_survives_a_restart_and_a_pending_order_still_times_out_to_the_next_unit(engine_on, nc):
    live = await engine_on(policy={"ack_timeout_s": {1: 4, 2: 4, 3: 4}})
    await live.position("a1", NORTH, 114.899)
    await live.position("b1", NORTH, 114.884)
    await live.alert()
    first = await live.order()
    await live.stop()
    # the premise: the first engine was gone before the deadline could fire
    assert first.ack_deadline is not None and utc() < first.ack_deadline, "stopping took longer than the ack timeout"
    kv = await nc.jetstream().key_value(live.subjects.bucket_state)
    stored = json.loads((await kv.get(live.subjects.incident_key(first.incident_id))).value)
    assert stored["state"] == "assigned" and stored["order"] == first.order_id

    await live.start()  # a new app, same prefix, same server
    state = live.shell.state
    assert first.incident_id in state.incidents
    assert state.units["b1"].lat == NORTH and state.units["b1"].fix_time is not None
    second = await live.order(unit="b1")
    timed_out = await live.event("timed_out")

    assert second.incident_id == first.incident_id and second.attempt == 2
    assert timed_out.order_id == first.order_id
    assert len(live.select(DispatchOrder, action="assign", unit="a1")) == 1  # nothing re-sent twice
    assert len(live.select(IncidentEvent, event="opened")) == 1


async def test_a_restart_re_sends_no_broadcast_that_was_already_delivered(engine_on):
    live = await engine_on(policy=PATIENT)
    await live.alert(kind="theft")  # no unit has reported a position: it escalates at once
    first = await live.event("escalated")
    await live.alert(kind="robbery", lon=114.910)  # a second escalation on the same talkgroups
    await live.wait(IncidentEvent, n=2, event="escalated")
    heard = len(live.select(Broadcast, incident_id=first.incident_id))
    await live.stop()
    await live.start()
    await live.alert(kind="fire", lon=114.890)  # its broadcasts arrive after anything the restart sent
    await live.wait(IncidentEvent, n=3, event="escalated")

    assert heard >= 1
    assert len(live.select(Broadcast, incident_id=first.incident_id)) == heard
