"""The engine shell over FastStream's in-memory NATS test broker.

The real subscribers (`dispatch.app.register`) receive what the tests publish;
the shell keeps its state in a `MemoryStore` and publishes through the same
test broker, where test subscribers collect orders, incident events and dead
letters. No nats-server, no sleeps: every wait is a queue read with a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from district_fixtures import RIVER_LATS, make_district, make_river_graph
from faststream.nats import NatsBroker, NatsMessage, TestNatsBroker

from dispatch.app import EngineRuntime, register
from dispatch.core.decide import EngineState
from dispatch.core.records import IncidentRec, IncidentState, UnitRec, UnitState
from dispatch.engine import EngineShell
from dispatch.events import (
    Alert,
    AlertSource,
    Area,
    DispatchOrder,
    IncidentEvent,
    OrderAction,
    OrderReply,
    Rejected,
    ReplyKind,
    UnitAvailability,
    UnitPosition,
    UnitStatus,
    encode,
)
from dispatch.store import BrokerBus, MemoryStore
from dispatch.subjects import Subjects

NORTH, SOUTH = RIVER_LATS
SCENE = (NORTH, 114.900)
WAIT_S = 10.0


class ReplicaRaceStore(MemoryStore):
    """A store where another engine replica wins the race for one record, once.

    When armed with `arm(kind, id)`, the next save of that record finds it was just
    rewritten (same content, next revision) by somebody else, so the revision
    check fails with `Conflict` exactly as the key-value bucket would report it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.target: tuple[type, str] | None = None
        self.races = 0

    def arm(self, kind: type, key: str) -> None:
        self.target = (kind, key)

    async def save(self, rec: Any) -> int:
        if self.target is not None and (type(rec), rec.id) == self.target:
            self.target = None
            theirs = await self.get(type(rec), rec.id)
            assert theirs is not None, "arm the race only for a record that is stored"
            await super().save(theirs)  # the other replica's write: the revision moves on
            self.races += 1
        return await super().save(rec)  # raises Conflict when rec.rev is behind


@dataclass
class Engine:
    """One engine shell wired to a test broker, with collectors on its outputs."""

    br: Any
    shell: EngineShell
    store: MemoryStore
    subjects: Subjects
    orders: list[DispatchOrder] = field(default_factory=list)
    events: list[IncidentEvent] = field(default_factory=list)
    dead: list[tuple[str, Rejected]] = field(default_factory=list)
    subject_of: dict[str, str] = field(default_factory=dict)  # message id -> subject it arrived on
    order_q: asyncio.Queue[DispatchOrder] = field(default_factory=asyncio.Queue)
    event_q: asyncio.Queue[IncidentEvent] = field(default_factory=asyncio.Queue)
    dead_q: asyncio.Queue[tuple[str, Rejected]] = field(default_factory=asyncio.Queue)

    # -- inputs
    async def raw(self, subject: str, data: bytes) -> None:
        """Publish, then wait until the engine has decided everything queued (it decides in batches)."""
        await self.br.publish(data, subject)
        await asyncio.wait_for(self.shell.drained(), WAIT_S)

    async def position(self, unit: str, lat: float, lon: float, **kw: Any) -> UnitPosition:
        p = UnitPosition(unit=unit, lat=lat, lon=lon, **kw)
        await self.raw(self.subjects.unit_position(unit), encode(p))
        return p

    async def alert(self, lat: float = SCENE[0], lon: float = SCENE[1], kind: str = "intrusion", **kw: Any) -> Alert:
        a = Alert(
            event_id=kw.pop("event_id", None) or f"ev-{len(self.events)}-{lat}-{lon}",
            source=AlertSource.operator,
            console="c1",
            kind=kind,
            area=Area(lat=lat, lon=lon, description="test place"),
            **kw,
        )
        await self.raw(self.subjects.operator_alert("c1"), encode(a))
        return a

    async def reply(self, order: DispatchOrder, kind: ReplyKind, reason: str = "") -> OrderReply:
        r = OrderReply(order_id=order.order_id, incident_id=order.incident_id, unit=order.unit, reply=kind, reason=reason)
        await self.raw(self.subjects.reply(order.unit), encode(r))
        return r

    # -- outputs
    async def next_order(self) -> DispatchOrder:
        return await asyncio.wait_for(self.order_q.get(), WAIT_S)

    async def next_event(self, kind: str) -> IncidentEvent:
        while True:
            ev = await asyncio.wait_for(self.event_q.get(), WAIT_S)
            if ev.event.value == kind:
                return ev

    async def next_dead(self) -> tuple[str, Rejected]:
        return await asyncio.wait_for(self.dead_q.get(), WAIT_S)


@asynccontextmanager
async def engine(
    district: Any = None, store: MemoryStore | None = None, prefix: str = "svc"
) -> AsyncIterator[Engine]:
    district = district if district is not None else make_district()
    subjects = Subjects(prefix)
    broker = NatsBroker()
    rt = EngineRuntime(district=district, subjects=subjects)
    register(broker, rt)
    sink: dict[str, Engine] = {}

    @broker.subscriber(subjects.all_orders)
    async def _orders(msg: NatsMessage) -> None:
        o = DispatchOrder.model_validate_json(msg.body)
        sink["e"].subject_of[o.id] = msg.raw_message.subject
        sink["e"].orders.append(o)
        sink["e"].order_q.put_nowait(o)

    @broker.subscriber(subjects.all_incident_events)
    async def _events(msg: NatsMessage) -> None:
        ev = IncidentEvent.model_validate_json(msg.body)
        sink["e"].subject_of[ev.id] = msg.raw_message.subject
        sink["e"].events.append(ev)
        sink["e"].event_q.put_nowait(ev)

    @broker.subscriber(subjects.all_deadletters)
    async def _dead(msg: NatsMessage) -> None:
        item = (msg.raw_message.subject, Rejected.model_validate_json(msg.body))
        sink["e"].dead.append(item)
        sink["e"].dead_q.put_nowait(item)

    store = store if store is not None else MemoryStore()
    async with TestNatsBroker(broker) as br:
        shell = EngineShell(EngineState(district, make_river_graph()), store, BrokerBus(br), subjects)
        e = sink["e"] = Engine(br=br, shell=shell, store=store, subjects=subjects)
        await shell.load()
        rt.shell = shell
        try:
            yield e
        finally:
            await shell.stop()


# --------------------------------------------------------------------------- dispatch


async def test_an_alert_is_ordered_to_the_unit_nearest_by_road_and_recorded_as_opened_then_assigned():
    async with engine() as e:
        await e.position("a1", SOUTH, 114.900)  # 267 m in a straight line, but across the river
        await e.position("b1", NORTH, 114.892)  # 770 m away on the same bank
        a = await e.alert()
        order = await e.next_order()
        opened = await e.next_event("opened")
        assigned = await e.next_event("assigned")

    assert order.unit == "b1" and order.action is OrderAction.assign and order.attempt == 1
    assert e.subject_of[order.id] == "svc.radio.b1.order"
    assert e.subject_of[opened.id] == f"svc.incidents.{order.incident_id}.opened"
    assert e.subject_of[assigned.id] == f"svc.incidents.{order.incident_id}.assigned"
    assert order.eta_s is not None and order.eta_s > 0
    assert order.explanation is not None and order.explanation.chosen == "b1"
    assert any(s.unit == "a1" and "nearer in a straight line" in s.reason for s in order.explanation.skipped)
    assert opened.incident_id == assigned.incident_id == order.incident_id
    assert (opened.seq, assigned.seq) == (1, 2)
    assert a.id in opened.alert_ids
    assert assigned.unit == "b1" and assigned.order_id == order.order_id
    # the decision was committed to the store before it was published
    stored_unit = await e.store.get(UnitRec, "b1")
    stored_inc = await e.store.get(IncidentRec, order.incident_id)
    assert stored_unit is not None and stored_unit.state is UnitState.assigned and stored_unit.order == order.order_id
    assert stored_inc is not None and stored_inc.state is IncidentState.assigned and stored_inc.unit == "b1"


async def test_a_decline_moves_the_order_to_the_next_unit_at_once():
    async with engine() as e:
        await e.position("a1", NORTH, 114.899)
        await e.position("b1", NORTH, 114.880)
        await e.alert()
        first = await e.next_order()
        await e.reply(first, ReplyKind.decline, reason="flat tyre")
        declined = await e.next_event("declined")
        second = await e.next_order()
        unit_a1 = e.shell.state.units["a1"]

    assert first.unit == "a1"
    assert declined.unit == "a1" and declined.detail == "flat tyre"
    assert second.unit == "b1" and second.attempt == 2 and second.incident_id == first.incident_id
    assert second.action is OrderAction.assign
    assert unit_a1.state is UnitState.available and unit_a1.order is None


# --------------------------------------------------------------------------- bad input


def _schema_v2() -> bytes:
    a = Alert(event_id="e9", source="operator", console="c1", kind="theft", area=Area(lat=NORTH, lon=114.9))
    return json.dumps({**json.loads(encode(a)), "schema_version": 2}).encode()


BAD_INPUTS = {
    # name: (subject without prefix, payload builder, words the reason must contain)
    "malformed-json": ("alerts.operator.c1", lambda: b'{"event_id": "e1", "source": ', "malformed JSON"),
    "wrong-schema-version": ("alerts.operator.c1", _schema_v2, "schema version 2 is not supported"),
    "unknown-unit-position": (
        "units.zz9.position",
        lambda: encode(UnitPosition(unit="zz9", lat=NORTH, lon=114.9)),
        "unknown unit 'zz9'",
    ),
    "unknown-camera": (
        "alerts.camera.nope",
        lambda: encode(Alert(event_id="e8", source="camera", camera="nope", kind="theft")),
        "unknown camera 'nope'",
    ),
    "position-outside-district": (
        "units.b1.position",
        lambda: encode(UnitPosition(unit="b1", lat=31.5, lon=114.9)),
        "outside district",
    ),
    "alert-outside-district": (
        "alerts.operator.c1",
        lambda: encode(Alert(event_id="e7", source="operator", console="c1", kind="theft", area=Area(lat=35.0, lon=110.0))),
        "outside district",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
async def test_bad_input_is_dead_lettered_with_its_reason_and_the_next_alert_is_still_dispatched(case):
    subject_tail, build, words = BAD_INPUTS[case]
    async with engine(prefix="svc") as e:
        await e.position("a1", NORTH, 114.899)
        data = build()
        subject = f"svc.{subject_tail}"
        await e.raw(subject, data)
        dl_subject, rej = await e.next_dead()
        assert e.orders == [] and e.events == []  # the bad input changed nothing
        await e.alert()
        order = await e.next_order()
        deadletters = e.shell.deadletters

    assert dl_subject == f"svc.deadletter.{subject_tail}"
    assert words in rej.reason
    assert rej.subject == subject and base64.b64decode(rej.raw) == data and rej.refused_by == "engine"
    assert deadletters == 1
    assert order.unit == "a1"


async def test_a_replayed_alert_id_is_dead_lettered_and_opens_no_second_incident():
    async with engine() as e:
        await e.position("a1", NORTH, 114.899)
        await e.position("b1", NORTH, 114.880)
        a = await e.alert()
        first = await e.next_order()
        await e.raw(e.subjects.operator_alert("c1"), encode(a))  # the very same message again
        dl_subject, rej = await e.next_dead()
        await e.alert(lat=NORTH, lon=114.881, kind="theft")
        second = await e.next_order()
        opened = [ev for ev in e.events if ev.event.value == "opened"]

    assert dl_subject == "svc.deadletter.alerts.operator.c1"
    assert f"replayed message id {a.id}" in rej.reason
    assert first.unit == "a1" and second.unit == "b1"
    assert len(opened) == 2 and {o.incident_id for o in opened} == {first.incident_id, second.incident_id}


# --------------------------------------------------------------------------- replicas


async def test_a_write_conflict_with_another_replica_is_retried_and_gives_the_unit_exactly_one_order():
    store = ReplicaRaceStore()
    async with engine(store=store) as e:
        await e.position("a1", NORTH, 114.899)
        await e.position("b1", NORTH, 114.880)
        store.arm(UnitRec, "a1")  # the next write of a1 (claiming it for the alert) loses the race once
        await e.alert()
        order = await e.next_order()
        await e.reply(order, ReplyKind.ack)  # the order the unit holds is the live one
        acked = await e.next_event("acknowledged")
        conflicts = e.shell.conflicts
        orders = list(e.orders)
        opened = [ev for ev in e.events if ev.event.value == "opened"]
        stored_incidents = [k for (kind, k) in e.store.data if kind == "IncidentRec"]
        stored_a1 = await e.store.get(UnitRec, "a1")
        dead = list(e.dead)

    assert store.races == 1 and conflicts == 1
    assert [(o.unit, o.action) for o in orders] == [("a1", OrderAction.assign)]
    assert len(opened) == 1 and opened[0].incident_id == order.incident_id
    assert stored_incidents == [order.incident_id]
    assert stored_a1 is not None and stored_a1.order == order.order_id and stored_a1.state is UnitState.acknowledged
    assert acked.order_id == order.order_id
    assert dead == []


async def test_a_write_conflict_on_the_incident_while_a_unit_acknowledges_is_retried_and_the_ack_still_counts():
    store = ReplicaRaceStore()
    async with engine(store=store) as e:
        await e.position("a1", NORTH, 114.899)
        await e.alert()
        order = await e.next_order()
        store.arm(IncidentRec, order.incident_id)  # e.g. a camera update merged into it on another replica
        await e.reply(order, ReplyKind.ack)
        dead = [(s, r.reason) for s, r in e.dead]
        acked = [ev for ev in e.events if ev.event.value == "acknowledged"]
        stored_inc = await e.store.get(IncidentRec, order.incident_id)
        stored_a1 = await e.store.get(UnitRec, "a1")

    assert store.races == 1
    assert dead == []
    assert len(acked) == 1 and acked[0].order_id == order.order_id
    assert stored_a1 is not None and stored_a1.state is UnitState.acknowledged
    assert stored_inc is not None and stored_inc.state is IncidentState.acknowledged


# --------------------------------------------------------------------------- who may speak for whom


@pytest.mark.parametrize("case", ["reply", "position", "camera-alert"])
async def test_a_message_whose_payload_names_another_unit_or_camera_than_its_subject_is_dead_lettered(case):
    async with engine() as e:
        await e.position("a1", NORTH, 114.899)
        await e.position("b1", NORTH, 114.880)
        await e.alert()
        order = await e.next_order()  # to a1
        if case == "reply":  # b1's terminal declines a1's order
            subject = e.subjects.reply("b1")
            data = encode(
                OrderReply(order_id=order.order_id, incident_id=order.incident_id, unit="a1", reply=ReplyKind.decline)
            )
        elif case == "position":  # b1's terminal moves a1 across the river
            subject = e.subjects.unit_position("b1")
            data = encode(UnitPosition(unit="a1", lat=SOUTH, lon=114.920))
        else:  # camera 2's adapter reports for camera 1
            subject = e.subjects.camera_alert("cam2")
            data = encode(Alert(event_id="x1", source="camera", camera="cam1", kind="theft"))
        await e.raw(subject, data)
        a1 = e.shell.state.units["a1"]
        assert [(o.unit, o.action) for o in e.orders] == [("a1", OrderAction.assign)]  # nothing happened
        assert (a1.lat, a1.lon, a1.order) == (NORTH, 114.899, order.order_id)
        dl_subject, rej = await e.next_dead()

    assert dl_subject == f"svc.deadletter.{e.subjects.strip(subject)}"
    assert "subject" in rej.reason


# --------------------------------------------------------------------------- batches and positions

UNITS_6 = [{"id": f"u{i}", "kind": "police", "mode": "car"} for i in range(6)]
NORTH_LONS = [114.880 + 0.008 * i for i in range(6)]


async def _six_units(e: Engine) -> None:
    for i, lon in enumerate(NORTH_LONS):
        await e.position(f"u{i}", NORTH, lon)


def _submit_alerts(e: Engine, n: int) -> list[Alert]:
    """Queue n alerts at once (as when they wait in the subscription), without waiting in between."""
    alerts = []
    for i in range(n):
        a = Alert(
            event_id=f"burst-{i}", source=AlertSource.operator, console="c1", kind="theft",
            area=Area(lat=NORTH, lon=NORTH_LONS[i] + 0.0005, description=f"place {i}"),
        )
        alerts.append(a)
        e.shell.submit(e.subjects.operator_alert("c1"), encode(a))
    return alerts


async def test_alerts_queued_together_are_decided_as_one_batch_and_each_gets_its_own_unit_and_stored_record():
    async with engine(district=make_district(units=UNITS_6)) as e:
        await _six_units(e)
        alerts = _submit_alerts(e, 5)
        await asyncio.wait_for(e.shell.drained(), WAIT_S)
        orders = [await e.next_order() for _ in alerts]
        batches, fallbacks = e.shell.batches, e.shell.fallbacks
        stored = {o.unit: await e.store.get(UnitRec, o.unit) for o in orders}
        incidents = {o.incident_id: await e.store.get(IncidentRec, o.incident_id) for o in orders}

    assert batches >= 1 and fallbacks == 0
    assert sorted(o.unit for o in orders) == ["u0", "u1", "u2", "u3", "u4"]  # each alert its nearest unit
    for o in orders:
        assert stored[o.unit] is not None and stored[o.unit].order == o.order_id
        inc = incidents[o.incident_id]
        assert inc is not None and inc.state is IncidentState.assigned and inc.unit == o.unit
        assert {item.type for item in inc.outbox} == {"order", "event"}  # what a restart would re-send


async def test_a_conflict_inside_a_batch_undoes_it_and_each_alert_is_decided_again_on_its_own():
    store = ReplicaRaceStore()
    async with engine(district=make_district(units=UNITS_6), store=store) as e:
        await _six_units(e)
        store.arm(UnitRec, "u2")  # another replica writes u2 just before the batch claims it
        alerts = _submit_alerts(e, 4)
        await asyncio.wait_for(e.shell.drained(), WAIT_S)
        orders = [await e.next_order() for _ in alerts]
        opened = [ev for ev in e.events if ev.event.value == "opened"]
        fallbacks, conflicts = e.shell.fallbacks, e.shell.conflicts
        stored_incidents = sorted(k for (kind, k) in e.store.data if kind == "IncidentRec")
        units = {u: await e.store.get(UnitRec, u) for u in ("u0", "u1", "u2", "u3")}

    assert store.races == 1 and conflicts >= 1 and fallbacks == 1
    assert sorted(o.unit for o in orders) == ["u0", "u1", "u2", "u3"]  # one order per unit, none twice
    assert len(opened) == 4 and sorted(o.incident_id for o in orders) == stored_incidents
    for o in orders:
        assert units[o.unit] is not None and units[o.unit].order == o.order_id


async def test_a_refused_input_inside_a_batch_is_dead_lettered_and_the_others_are_decided():
    async with engine(district=make_district(units=UNITS_6)) as e:
        await _six_units(e)
        alerts = _submit_alerts(e, 2)
        bogus = OrderReply(order_id="nope", incident_id="nope", unit="u0", reply=ReplyKind.ack)
        e.shell.submit(e.subjects.reply("u0"), encode(bogus))
        alerts += _submit_alerts(e, 3)[2:]
        await asyncio.wait_for(e.shell.drained(), WAIT_S)
        orders = [await e.next_order() for _ in alerts]
        dl_subject, rej = await e.next_dead()

    assert sorted(o.unit for o in orders) == ["u0", "u1", "u2"]
    assert dl_subject == "svc.deadletter.radio.u0.reply" and "not active" in rej.reason


async def test_a_position_report_for_a_unit_with_a_recent_fix_is_held_in_memory_and_stored_by_the_next_flush():
    async with engine() as e:
        await e.position("a1", NORTH, 114.899)  # the first fix is stored at once
        first = await e.store.get(UnitRec, "a1")
        await e.position("a1", NORTH, 114.897)  # a move: in memory now, in the bucket with the next flush
        held = await e.store.get(UnitRec, "a1")
        in_memory = e.shell.state.units["a1"]
        written = await e.shell.flush_positions()
        flushed = await e.store.get(UnitRec, "a1")
        again = await e.shell.flush_positions()

    assert first is not None and (first.lat, first.lon) == (NORTH, 114.899)
    assert held is not None and held.lon == 114.899 and in_memory.lon == 114.897
    assert written == 1 and again == 0
    assert flushed is not None and flushed.lon == 114.897 and flushed.fix_time == in_memory.fix_time


async def test_a_refused_status_that_reads_the_unit_again_keeps_its_position_held_in_memory():
    async with engine() as e:
        await e.position("a1", NORTH, 114.899)
        await e.alert()
        await e.next_order()
        await e.position("a1", NORTH, 114.8985)  # held in memory until the next flush
        await e.raw(e.subjects.unit_status("a1"), encode(UnitStatus(unit="a1", status=UnitAvailability.available)))
        _, rejected = await e.next_dead()  # an assigned unit cannot report available: read again, then refused
        await asyncio.wait_for(e.shell.drained(), WAIT_S)
        await e.shell.flush_positions()
        stored = await e.store.get(UnitRec, "a1")
    assert "clear incident" in rejected.reason
    assert stored is not None and stored.lon == 114.8985, "the newer position held in memory was lost"


async def test_a_held_position_is_stored_when_the_engine_stops():
    store = MemoryStore()
    async with engine(store=store) as e:
        await e.position("a1", NORTH, 114.899)
        await e.position("a1", NORTH, 114.895)
    stored = await store.get(UnitRec, "a1")
    assert stored is not None and stored.lon == 114.895


async def test_a_held_position_survives_another_replica_writing_the_unit_and_is_stored_with_its_change():
    store = ReplicaRaceStore()
    async with engine(store=store) as e:
        await e.position("a1", NORTH, 114.899)
        await e.position("a1", NORTH, 114.893)
        store.arm(UnitRec, "a1")  # the other replica writes a1 before our flush does
        await e.shell.flush_positions()  # conflict: read a1 again, apply the held position again
        await asyncio.wait_for(e.shell.drained(), WAIT_S)
        await e.shell.flush_positions()
        stored = await store.get(UnitRec, "a1")
        dead = list(e.dead)

    assert store.races == 1 and dead == []
    assert stored is not None and stored.lon == 114.893


async def test_a_unit_that_is_ordered_while_its_position_is_held_stores_that_position_with_the_claim():
    async with engine() as e:
        await e.position("a1", NORTH, 114.899)
        await e.position("a1", NORTH, 114.898)
        await e.alert()
        order = await e.next_order()
        stored = await e.store.get(UnitRec, "a1")
        pending = await e.shell.flush_positions()

    assert order.unit == "a1"
    assert stored is not None and stored.lon == 114.898 and stored.order == order.order_id
    assert pending == 0  # the claim wrote it: nothing left to flush


async def test_a_message_arriving_while_the_engine_stops_is_handed_back_to_the_broker_undecided():
    async with engine() as e:
        await e.position("a1", NORTH, 114.899)
        await e.shell.stop()
        settled: list[bool] = []

        async def settle(ok: bool) -> None:
            settled.append(ok)

        a = Alert(event_id="late", source=AlertSource.operator, console="c1", kind="theft", area=Area(lat=NORTH, lon=114.9))
        e.shell.submit(e.subjects.operator_alert("c1"), encode(a), False, settle)
        for _ in range(20):
            if settled:
                break
            await asyncio.sleep(0.01)
        orders = list(e.orders)

    assert settled == [False]  # not acknowledged: redelivered to a replica that runs
    assert orders == []


async def test_an_older_revision_of_an_incident_this_engine_closed_does_not_bring_it_back():
    # A closed incident leaves memory; the engine remembers the revision of its closing write, so the
    # bucket watch can drop that write coming back, and an older revision arriving late (another
    # replica's write the watch had not delivered yet) is not taken for an open incident.
    async with engine() as e:
        await e.position("b1", NORTH, 114.892)
        await e.alert()
        order = await e.next_order()
        opened = await e.store.get(IncidentRec, order.incident_id)
        await e.reply(order, ReplyKind.cleared)
        await e.next_event("resolved")
        closed = await e.store.get(IncidentRec, order.incident_id)
        assert opened is not None and closed is not None and not closed.is_open
        assert order.incident_id not in e.shell.state.incidents
        assert e.shell._known_rev(IncidentRec, order.incident_id) == closed.rev
        e.store._changes.put_nowait(opened)  # the open record, at its older revision, through the watch
        for _ in range(20):
            await asyncio.sleep(0)
        assert order.incident_id not in e.shell.state.incidents


async def test_a_units_reply_is_decided_ahead_of_alerts_queued_before_it(monkeypatch: pytest.MonkeyPatch):
    # Under a backlog of alerts a unit's reply must not wait behind them: it frees or moves the unit
    # and is due within an acknowledgement deadline. Both arrive in one batch; the reply goes first.
    import dispatch.engine as engine_mod

    async with engine() as e:
        await e.position("b1", NORTH, 114.892)
        await e.alert()
        order = await e.next_order()
        decided: list[str] = []
        real = engine_mod.decide

        def spy(state: Any, inp: Any, now: Any) -> Any:
            decided.append(type(inp).__name__)
            return real(state, inp, now)

        monkeypatch.setattr(engine_mod, "decide", spy)
        settled: list[bool] = []

        async def settle(ok: bool) -> None:
            settled.append(ok)

        later = Alert(event_id="later", source=AlertSource.operator, console="c1", kind="theft", area=Area(lat=NORTH, lon=114.9))
        reply = OrderReply(order_id=order.order_id, incident_id=order.incident_id, unit="b1", reply=ReplyKind.cleared)
        # queued without yielding in between: the worker takes both in one batch
        e.shell.submit(e.subjects.operator_alert("c1"), encode(later), False, settle)
        e.shell.submit(e.subjects.reply("b1"), encode(reply), False, settle)
        for _ in range(200):
            if len(settled) == 2:
                break
            await asyncio.sleep(0.01)

    assert settled == [True, True]
    assert decided[:2] == ["ReplyIn", "AlertIn"], decided


async def test_incident_event_lines_are_logged_after_the_decisions_messages_are_sent_with_the_incident_bound():
    """The log line of an incident event waits for the next turn of the event loop, when nats-py's
    flusher has written the order to the socket: on an idle engine a line costs about 0.2 ms."""
    import structlog
    from structlog.testing import capture_logs

    from dispatch.core.decide import AlertIn, PositionIn

    sent: list[str] = []

    class Radio:
        async def publish(self, subject: str, data: bytes, msg_id: str) -> Any:
            sent.append(subject)
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

        async def last_message(self, stream: str, subject: str) -> Any:
            return None

    shell = EngineShell(EngineState(make_district(), make_river_graph()), MemoryStore(), Radio(), Subjects("t"),
                        name="A", position_flush_s=None)
    await shell.load()
    try:
        await shell.apply(PositionIn(UnitPosition(unit="a1", lat=SCENE[0], lon=114.899)))
        alert = Alert(event_id="ev-log", source=AlertSource.operator, console="c1", kind="theft",
                      area=Area(lat=SCENE[0], lon=SCENE[1]))
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            with structlog.contextvars.bound_contextvars(correlation_id=alert.id):  # as the shell binds it per input
                await shell.apply(AlertIn(alert))
            assert any(s.endswith(".order") for s in sent), "the order is sent"
            assert not [e for e in logs if e["event"] in ("opened", "assigned")], "not logged before the socket write"
            await asyncio.sleep(0)
        lines = [e for e in logs if e["event"] in ("opened", "assigned")]
        assert [e["event"] for e in lines] == ["opened", "assigned"]
        assert len({e["incident_id"] for e in lines}) == 1
        assert [e.get("correlation_id") for e in lines] == [alert.id, alert.id], "the input's ids still bound"
    finally:
        await shell.stop()
