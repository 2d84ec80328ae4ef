"""The pure core: decide(state, event, now) with no NATS, no clock, no I/O."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from district_fixtures import BRIDGE_LON, make_district, make_river_graph

from dispatch.core.decide import (
    AlertIn,
    CloseIncident,
    EngineState,
    Loaded,
    PositionIn,
    Publish,
    Reject,
    ReplyIn,
    Save,
    StatusIn,
    Tick,
    decide,
)
from dispatch.core.records import IncidentRec, IncidentState, UnitRec, UnitState
from dispatch.events import (
    Alert,
    AlertPhase,
    AlertSource,
    Area,
    Broadcast,
    CapStatus,
    DispatchOrder,
    IncidentEvent,
    OrderAction,
    OrderReply,
    ReplyKind,
    UnitPosition,
    UnitStatus,
)

T0 = datetime(2026, 11, 30, 22, 0, tzinfo=timezone.utc)
NORTH, SOUTH = 30.2012, 30.1988


class Run:
    """Drive the core like the shell does, keeping every command."""

    def __init__(self, units=None, policy=None, graph=True):
        self.district = make_district(units=units, policy=policy)
        self.state = EngineState(self.district, make_river_graph() if graph else None)
        self.now = T0
        self.log: list = []

    def step(self, event, dt: float = 0.0):
        self.now += timedelta(seconds=dt)
        _, cmds = decide(self.state, event, self.now)
        self.log.extend(cmds)
        return cmds

    def place(self, unit, lat, lon, exercise=None, dt=0.0):
        return self.step(PositionIn(UnitPosition(unit=unit, lat=lat, lon=lon, time=self.now + timedelta(seconds=dt), exercise=exercise)), dt)

    def alert(self, lat=NORTH, lon=114.900, kind="intrusion", priority=2, exercise=None, dt=0.0, **kw):
        a = Alert(
            event_id=kw.pop("event_id", None) or f"ev{len(self.log)}",
            source=AlertSource.operator,
            kind=kind,
            priority=priority,
            area=Area(lat=lat, lon=lon, description="test place"),
            exercise=exercise,
            status=CapStatus.Exercise if exercise else CapStatus.Actual,
            console="c1",
            **kw,
        )
        return self.step(AlertIn(a), dt)

    def reply(self, order: DispatchOrder, kind: ReplyKind, dt=0.0, reason=""):
        return self.step(ReplyIn(OrderReply(order_id=order.order_id, incident_id=order.incident_id, unit=order.unit, reply=kind, reason=reason)), dt)


def orders(cmds, action=OrderAction.assign):
    return [c.message for c in cmds if isinstance(c, Publish) and isinstance(c.message, DispatchOrder) and c.message.action is action]


def events(cmds, kind=None):
    return [c.message for c in cmds if isinstance(c, Publish) and isinstance(c.message, IncidentEvent) and (kind is None or c.message.event.value == kind)]


def rejects(cmds):
    return [c.reason for c in cmds if isinstance(c, Reject)]


def test_alert_goes_to_unit_nearest_by_road_not_the_one_across_the_river():
    r = Run()
    r.place("a1", SOUTH, 114.900)  # 267 m away in a straight line, across the river
    r.place("b1", NORTH, 114.892)  # 770 m away, same bank
    cmds = r.alert()
    [order] = orders(cmds)
    assert order.unit == "b1"
    ex = order.explanation
    assert ex is not None and ex.chosen == "b1"
    by_unit = {c.unit: c for c in ex.candidates}
    assert by_unit["a1"].method == "road" and by_unit["a1"].eta_s > 3 * by_unit["b1"].eta_s
    assert by_unit["a1"].distance_m < by_unit["b1"].distance_m
    [why_a1] = [s.reason for s in ex.skipped if s.unit == "a1"]
    assert "slower" in why_a1 and "nearer in a straight line" in why_a1
    assert order.eta_s == pytest.approx(by_unit["b1"].eta_s, abs=0.1)
    assert order.route[0] == pytest.approx((NORTH, 114.892)) and order.route[-1] == pytest.approx((NORTH, 114.900))


def test_without_a_street_graph_the_straight_line_decides():
    r = Run(graph=False)
    r.place("a1", SOUTH, 114.900)
    r.place("b1", NORTH, 114.892)
    [order] = orders(r.alert())
    assert order.unit == "a1"
    assert all(c.method == "straight" for c in order.explanation.candidates)


def test_every_decision_is_saved_and_published_as_an_incident_event():
    r = Run()
    r.place("b1", NORTH, 114.892)
    cmds = r.alert()
    assert [e.event.value for e in events(cmds)] == ["opened", "assigned"]
    assert [e.seq for e in events(cmds)] == [1, 2]
    saved = [c.record for c in cmds if isinstance(c, Save)]
    [inc] = [s for s in saved if isinstance(s, IncidentRec)]
    [unit] = [s for s in saved if isinstance(s, UnitRec)]
    assert inc.state is IncidentState.assigned and unit.state is UnitState.assigned and unit.order == inc.order
    assert {o.type for o in inc.outbox} == {"order", "event"}  # a restart can re-send them


def test_volunteers_never_get_a_violent_incident_but_take_a_watch_task():
    r = Run(units=[{"id": "v1", "kind": "volunteer", "mode": "foot", "talkgroup": "volunteers"}])
    r.place("v1", NORTH, 114.899)
    cmds = r.alert(kind="assault", priority=1)
    assert orders(cmds) == []
    [esc] = events(cmds, "escalated")
    assert esc.state == "escalated"
    ex_skip = events(cmds, "escalated")
    assert ex_skip  # and the reason is recorded on the choice
    cmds = r.alert(kind="loitering", lat=NORTH, lon=114.880, priority=3)
    [order] = orders(cmds)
    assert order.unit == "v1"


def test_units_with_a_stale_position_are_skipped():
    r = Run(policy={"stale_position_s": 60})
    r.place("a1", NORTH, 114.899)
    r.place("b1", NORTH, 114.880, dt=100)  # a1's fix is now 100 s old
    [order] = orders(r.alert())
    assert order.unit == "b1"
    assert any(s.unit == "a1" and "stale position" in s.reason for s in order.explanation.skipped)


def test_unacknowledged_order_goes_to_next_unit_after_the_timeout():
    r = Run(policy={"ack_timeout_s": {1: 10, 2: 20, 3: 30}})
    r.place("a1", NORTH, 114.899)
    r.place("b1", NORTH, 114.880)
    [first] = orders(r.alert())
    assert first.unit == "a1" and first.ack_deadline == r.now + timedelta(seconds=20)
    assert orders(r.step(Tick(), dt=19)) == []
    cmds = r.step(Tick(), dt=2)
    [cancel] = orders(cmds, OrderAction.cancel)
    assert cancel.unit == "a1" and "not acknowledged" in cancel.reason
    [second] = orders(cmds)
    assert second.unit == "b1" and second.attempt == 2
    assert [e.event.value for e in events(cmds)] == ["timed_out", "assigned"]
    assert r.state.units["a1"].state is UnitState.available


def test_a_decline_goes_to_the_next_unit_at_once():
    r = Run()
    r.place("a1", NORTH, 114.899)
    r.place("b1", NORTH, 114.880)
    [first] = orders(r.alert())
    cmds = r.reply(first, ReplyKind.decline, reason="flat tyre")
    [second] = orders(cmds)
    assert second.unit == "b1"
    [dec] = events(cmds, "declined")
    assert dec.detail == "flat tyre"


def test_no_candidate_left_means_talkgroup_broadcast_and_escalated_event():
    r = Run()
    r.place("a1", NORTH, 114.899)
    r.place("b1", NORTH, 114.880)
    [o1] = orders(r.alert(priority=1))
    [o2] = orders(r.reply(o1, ReplyKind.decline))
    cmds = r.reply(o2, ReplyKind.decline)
    assert orders(cmds) == []
    [esc] = events(cmds, "escalated")
    assert esc.state == "escalated"
    groups = {c.message.talkgroup for c in cmds if isinstance(c, Publish) and isinstance(c.message, Broadcast)}
    assert {"supervisors", "police"} <= groups


def test_too_many_failures_escalates_even_with_candidates_left():
    r = Run(units=[{"id": f"u{i}", "kind": "police", "mode": "car"} for i in range(4)], policy={"max_attempts": 2})
    for i in range(4):
        r.place(f"u{i}", NORTH, 114.880 + 0.004 * i)
    [o] = orders(r.alert(lon=114.880))
    [o] = orders(r.reply(o, ReplyKind.decline))
    cmds = r.reply(o, ReplyKind.decline)
    assert events(cmds, "escalated") and len(orders(cmds)) == 1  # supervisors told, and the next unit asked


def test_two_alerts_from_one_camera_and_zone_within_the_window_make_one_incident():
    r = Run()
    r.place("a1", NORTH, 114.899)
    cam = dict(source=AlertSource.camera, camera="cam1", kind="intrusion", zones=("gate",))
    c1 = r.step(AlertIn(Alert(event_id="e1", **cam)))
    c2 = r.step(AlertIn(Alert(event_id="e2", **cam)), dt=30)
    [opened] = events(c1, "opened")
    [merged] = events(c2, "merged")
    assert merged.incident_id == opened.incident_id
    assert len(r.state.incidents) == 1
    c3 = r.step(AlertIn(Alert(event_id="e3", **cam)), dt=200)  # outside the 120 s window
    assert events(c3, "opened")


def test_updates_and_end_of_one_detection_event_stay_in_its_incident():
    r = Run()
    cam = dict(source=AlertSource.camera, camera="cam1", kind="loitering", event_id="e1")
    r.step(AlertIn(Alert(phase=AlertPhase.new, **cam)))
    cmds = r.step(AlertIn(Alert(phase=AlertPhase.update, priority=1, **cam)), dt=5)
    [merged] = events(cmds, "merged")
    assert merged.priority == 1
    r.step(AlertIn(Alert(phase=AlertPhase.end, **cam)), dt=5)
    assert len(r.state.incidents) == 1


def test_priority_one_takes_a_unit_off_a_priority_three_incident_which_is_requeued_and_served_later():
    r = Run(units=[{"id": "a1", "kind": "police", "mode": "car"}, {"id": "b1", "kind": "police", "mode": "car"}])
    r.place("a1", NORTH, 114.899)
    r.place("b1", NORTH, 114.880)
    [low] = orders(r.alert(kind="theft", priority=3, lon=114.900))
    r.reply(low, ReplyKind.ack)
    [other] = orders(r.alert(kind="vandalism", priority=3, lon=114.882))
    assert other.unit == "b1"
    cmds = r.alert(kind="assault", priority=1, lon=114.901)
    [cancel] = orders(cmds, OrderAction.cancel)
    assert cancel.unit == "a1" and cancel.incident_id == low.incident_id
    [p1] = orders(cmds)
    assert p1.unit == "a1"
    # b1 is busy too, so the re-queued incident has nobody left: supervisors hear of it
    assert [e.event.value for e in events(cmds) if e.incident_id == low.incident_id] == ["preempted", "requeued", "escalated"]
    assert r.state.incidents[low.incident_id].unit is None
    # the priority-1 incident is dealt with; a1 is free again and serves the re-queued one
    r.reply(p1, ReplyKind.ack)
    r.reply(p1, ReplyKind.on_scene, dt=60)
    r.place("a1", NORTH, 114.901, dt=300)  # still reporting its position from the scene
    cmds = r.reply(p1, ReplyKind.cleared, reason="arrest made")
    [again] = orders(cmds)
    assert again.incident_id == low.incident_id and again.unit == "a1"


def test_preemption_off_means_the_priority_one_incident_escalates_instead():
    r = Run(units=[{"id": "a1", "kind": "police", "mode": "car"}], policy={"preemption": False})
    r.place("a1", NORTH, 114.899)
    [low] = orders(r.alert(kind="theft", priority=3))
    cmds = r.alert(kind="assault", priority=1, lon=114.910)
    assert orders(cmds) == [] and events(cmds, "escalated")


def test_drill_incident_only_goes_to_units_in_that_drill():
    r = Run()
    r.place("a1", NORTH, 114.899)  # real unit, closest
    r.place("b1", NORTH, 114.880, exercise="drill-7")
    [order] = orders(r.alert(exercise="drill-7"))
    assert order.unit == "b1" and order.exercise == "drill-7"
    [real] = orders(r.alert(kind="theft", lon=114.881))
    assert real.unit == "a1" and real.exercise is None


def test_full_lifecycle_ack_en_route_on_scene_cleared_frees_the_unit():
    r = Run()
    r.place("a1", NORTH, 114.899)
    [o] = orders(r.alert())
    kinds = []
    for k in (ReplyKind.ack, ReplyKind.en_route, ReplyKind.on_scene, ReplyKind.cleared):
        kinds += [e.event.value for e in events(r.reply(o, k, dt=10))]
    assert kinds == ["acknowledged", "en_route", "on_scene", "resolved"]
    assert r.state.units["a1"].state is UnitState.available and r.state.units["a1"].order is None
    assert o.incident_id not in r.state.incidents


def test_bad_inputs_are_refused_with_a_reason_and_change_nothing():
    r = Run()
    assert "unknown unit 'zz'" in rejects(r.place("zz", NORTH, 114.9))[0]
    assert "outside district" in rejects(r.place("a1", 31.5, 114.9))[0]
    bad_cam = r.step(AlertIn(Alert(event_id="x", source=AlertSource.camera, camera="nope", kind="theft")))
    assert "unknown camera 'nope'" in rejects(bad_cam)[0]
    far = r.alert(lat=35.0, lon=110.0)
    assert "outside district" in rejects(far)[0]
    assert r.state.incidents == {}


def test_the_same_alert_id_twice_is_refused_as_a_replay_but_a_redelivery_is_silent():
    r = Run()
    r.place("a1", NORTH, 114.899)
    a = Alert(event_id="e1", source=AlertSource.camera, camera="cam1", kind="theft")
    assert orders(r.step(AlertIn(a)))
    assert "replayed message id" in rejects(r.step(AlertIn(a)))[0]
    assert r.step(AlertIn(a, redelivered=True)) == []
    assert len(r.state.incidents) == 1


def test_late_acknowledgement_of_a_timed_out_order_is_refused():
    r = Run()
    r.place("a1", NORTH, 114.899)
    [o] = orders(r.alert())
    r.step(Tick(), dt=100)
    assert "not active" in rejects(r.reply(o, ReplyKind.ack))[0]


def test_unit_going_off_duty_with_an_order_requeues_the_incident_to_the_next_unit():
    r = Run()
    r.place("a1", NORTH, 114.899)
    r.place("b1", NORTH, 114.880)
    [o] = orders(r.alert())
    r.reply(o, ReplyKind.ack)
    cmds = r.step(StatusIn(UnitStatus(unit="a1", status="off_duty")))
    assert [e.event.value for e in events(cmds)] == ["requeued", "assigned"]
    assert orders(cmds)[0].unit == "b1"


def test_operator_close_withdraws_the_order_and_frees_the_unit():
    r = Run()
    r.place("a1", NORTH, 114.899)
    [o] = orders(r.alert())
    cmds = r.step(CloseIncident(incident_id=o.incident_id, by="op1", disposition="false alarm"))
    assert orders(cmds, OrderAction.cancel)[0].unit == "a1"
    assert events(cmds, "resolved")
    assert r.state.units["a1"].state is UnitState.available


def test_records_loaded_from_the_bucket_rebuild_state_and_pending_timeouts_still_fire():
    r = Run()
    r.place("a1", NORTH, 114.899)
    r.place("b1", NORTH, 114.880)
    cmds = r.alert()
    saved = [c.record.model_copy(update={"rev": i + 1}) for i, c in enumerate(cmds) if isinstance(c, Save)]
    # a new engine, as after a crash: only what the buckets held
    fresh = EngineState(r.district, make_river_graph())
    units = {c.record.id: c.record for c in r.log if isinstance(c, Save) and isinstance(c.record, UnitRec)}
    for rec in [u.model_copy(update={"rev": 100}) for u in units.values()] + saved:
        decide(fresh, Loaded(rec), r.now)
    _, cmds = decide(fresh, Tick(), r.now + timedelta(seconds=31))
    assert [e.event.value for e in events(cmds)] == ["timed_out", "assigned"]
    assert orders(cmds)[0].unit == "b1"


def test_choice_is_exact_among_many_units_on_a_grid():
    from dispatch.streets import synthetic_city

    g = synthetic_city(3000, seed=3, center=(30.2, 114.9))
    lats = [g.coords(n)[0] for n in range(g.node_count)]
    lons = [g.coords(n)[1] for n in range(g.node_count)]
    units = [{"id": f"u{i}", "kind": "police", "mode": "car" if i % 2 else "foot"} for i in range(120)]
    district = make_district(units=units, cameras=[])
    # widen the district to the synthetic city
    district = district.model_copy(update={"communities": (district.communities[0].model_copy(update={"boundary": ((min(lats), min(lons)), (max(lats), min(lons)), (max(lats), max(lons)), (min(lats), max(lons)))}),)})
    state = EngineState(district, g)
    import random

    rng = random.Random(5)
    for i in range(120):
        n = rng.randrange(g.node_count)
        decide(state, PositionIn(UnitPosition(unit=f"u{i}", lat=lats[n], lon=lons[n], time=T0)), T0)
    for k in range(15):
        n = rng.randrange(g.node_count)
        _, cmds = decide(state, AlertIn(Alert(event_id=f"e{k}", source=AlertSource.operator, kind="theft", area=Area(lat=lats[n], lon=lons[n]), console="c")), T0)
        got = orders(cmds)
        # brute force: every available unit's ETA over the same graph
        best = None
        for uid, u in state.units.items():
            if u.state is not UnitState.available and u.order != (got[0].order_id if got else None):
                continue
            mode = u.mode.value
            speed = 40 / 3.6 if mode == "car" else 5 / 3.6
            un, ud = g.nearest_node(u.lat, u.lon, mode)
            tn, td = g.nearest_node(lats[n], lons[n], mode)
            t = g.shortest_time(mode, un, tn)
            if t is None:
                continue
            eta = t + (ud + td) / speed
            best = min(best or (eta, uid), (eta, uid))
        assert got and best is not None
        assert got[0].eta_s == pytest.approx(best[0], abs=0.2)


def test_preempted_incident_goes_to_another_free_unit_at_once_when_there_is_one():
    units = [{"id": "a1", "kind": "police", "mode": "car"}, {"id": "v1", "kind": "volunteer", "mode": "foot", "talkgroup": "volunteers"}]
    r = Run(units=units)
    r.place("a1", NORTH, 114.899)
    [low] = orders(r.alert(kind="loitering", priority=3, lon=114.900))
    assert low.unit == "a1"  # the car is faster than the volunteers on foot
    r.place("v1", NORTH, 114.896)
    cmds = r.alert(kind="assault", priority=1, lon=114.901)  # volunteers may not take it: a1 is pre-empted
    by_incident = {o.incident_id: o.unit for o in orders(cmds)}
    assert len(by_incident) == 2
    assert by_incident.pop(low.incident_id) == "v1"
    assert list(by_incident.values()) == ["a1"]


def test_unit_left_holding_an_order_no_incident_knows_is_freed_by_the_sweep():
    r = Run()
    r.place("a1", NORTH, 114.899)
    orphan = r.state.units["a1"].model_copy(
        update={"state": UnitState.assigned, "incident": "gone", "order": "o-lost", "updated": r.now, "rev": 99}
    )
    r.step(Loaded(orphan))  # as a half-finished write by another replica would leave it
    assert r.state.units["a1"].state is UnitState.assigned
    r.step(Tick(), dt=5)
    assert r.state.units["a1"].state is UnitState.assigned  # within the grace period
    r.step(Tick(), dt=20)
    assert r.state.units["a1"].state is UnitState.assigned  # 25 s: another replica's commit may still be writing
    cmds = r.step(Tick(), dt=10)
    assert r.state.units["a1"].state is UnitState.available
    assert any(isinstance(c, Save) and c.record.id == "a1" for c in cmds)


def test_a_unit_left_holding_a_lost_order_is_freed_by_the_sweep_even_while_it_reports_positions():
    """Positions do not restart the sweep's grace (a unit reports every 10 s): it runs from the unit's
    last change of state or order."""
    r = Run()
    r.place("a1", NORTH, 114.899)
    orphan = r.state.units["a1"].model_copy(
        update={"state": UnitState.assigned, "incident": "gone", "order": "o-lost", "updated": r.now, "rev": 99}
    )
    r.step(Loaded(orphan))
    for i in range(4):  # 40 s of positions every 10 s, a tick after each
        r.place("a1", NORTH, 114.899 - 0.0001 * i, dt=10)
        r.step(Tick())
    assert (r.state.units["a1"].state, r.state.units["a1"].order) == (UnitState.available, None)
    assert r.state.units["a1"].lon == pytest.approx(114.899 - 0.0003), "the positions were taken"


def test_operator_reassign_withdraws_the_unit_and_gives_the_incident_to_another():
    from dispatch.core.decide import Reassign

    r = Run()
    r.place("a1", NORTH, 114.899)
    r.place("b1", NORTH, 114.880)
    [o] = orders(r.alert())
    r.reply(o, ReplyKind.ack)
    cmds = r.step(Reassign(incident_id=o.incident_id, by="op1", reason="a1 is on foot today"))
    assert orders(cmds, OrderAction.cancel)[0].unit == "a1"
    assert orders(cmds)[0].unit == "b1"
    [req] = events(cmds, "requeued")
    assert "reassigned by op1: a1 is on foot today" in req.detail


def test_supervisor_escalation_broadcasts_and_records_who():
    from dispatch.core.decide import Escalate

    r = Run()
    r.place("a1", NORTH, 114.899)
    [o] = orders(r.alert())
    cmds = r.step(Escalate(incident_id=o.incident_id, by="sup1", reason="armed suspect"))
    [esc] = events(cmds, "escalated")
    assert "escalated by sup1: armed suspect" in esc.detail
    assert any(isinstance(c, Publish) and isinstance(c.message, Broadcast) for c in cmds)
    assert "is not open" in rejects(r.step(Escalate(incident_id="nope", by="sup1")))[0]


def test_a_cleared_reply_finishes_an_incident_whose_units_release_was_stored_alone():
    """A unit's `cleared` failed half-way while the store went away: the unit's release was stored, the
    incident's close was not, and the undo failed too. The redelivered reply must close the incident
    (it waited for that unit for good: a drill's NATS restart), and leave the unit as the bucket has it."""
    r = Run()
    r.place("a1", NORTH, 114.899)
    [o] = orders(r.alert())
    for k in (ReplyKind.ack, ReplyKind.on_scene):
        r.reply(o, k, dt=10)
    half = r.state.units["a1"].model_copy(update={"state": UnitState.available, "order": None, "incident": None})
    r.state.units["a1"] = half
    assert r.state.incidents[o.incident_id].order == o.order_id
    # an on_scene or acknowledgement of that order is still refused: the unit no longer holds it
    assert "not active" in rejects(r.reply(o, ReplyKind.on_scene, dt=5))[0]
    cmds = r.reply(o, ReplyKind.cleared, dt=5)
    assert not rejects(cmds) and [e.event.value for e in events(cmds)] == ["resolved"]
    assert o.incident_id not in r.state.incidents and r.state.units["a1"].order is None
    # the unit is saved back as it was, at its revision: a copy that only lags behind the bucket loses
    # that write, and the shell decides the reply again on the records read back
    [unit] = [c.record for c in cmds if isinstance(c, Save) and isinstance(c.record, UnitRec)]
    assert (unit.state, unit.order, unit.rev) == (half.state, None, half.rev)


def test_a_timeout_of_a_unit_whose_record_went_busy_with_the_order_still_fires_and_frees_the_order():
    """Records out of step (a unit stored busy while still holding its order, its incident still
    waiting for it): the timeout must not fail, or every later deadline would wait behind it."""
    r = Run()
    r.place("a1", NORTH, 114.899)
    [o] = orders(r.alert())
    r.state.units["a1"] = r.state.units["a1"].model_copy(update={"state": UnitState.busy})
    cmds = r.step(Tick(), dt=200)
    assert not rejects(cmds) and [e.event.value for e in events(cmds)][:1] == ["timed_out"]
    assert (r.state.units["a1"].state, r.state.units["a1"].order) == (UnitState.busy, None)


def test_a_status_from_a_unit_holding_an_order_its_incident_does_not_hold_is_refused_and_the_sweep_keeps_it_busy():
    """Records out of step (an order no incident holds): a status is refused with why, nothing changes
    (stored busy with that order, the unit's incident could wait for it); the orphan sweep frees the
    order after its grace, and a unit that reported busy meanwhile is not made available by it."""
    r = Run()
    r.place("a1", NORTH, 114.899)
    r.state.units["a1"] = r.state.units["a1"].model_copy(
        update={"state": UnitState.busy, "order": "o-lost", "incident": "i-lost", "updated": r.now})
    cmds = r.step(StatusIn(UnitStatus(unit="a1", status="available")))
    [why] = rejects(cmds)
    assert "records out of step" in why and "o-lost" in why and "is not stored" in why
    assert r.state.units["a1"].order == "o-lost"
    r.step(Tick(), dt=31)
    assert (r.state.units["a1"].state, r.state.units["a1"].order) == (UnitState.busy, None)
    assert not rejects(r.step(StatusIn(UnitStatus(unit="a1", status="available"))))
    assert r.state.units["a1"].state is UnitState.available


def test_a_late_cleared_does_not_free_the_new_order_of_a_unit_that_moved_on():
    r = Run()
    r.place("a1", NORTH, 114.899)
    [o] = orders(r.alert())
    r.reply(o, ReplyKind.on_scene, dt=10)
    # the half-stored release, then the unit took another order meanwhile
    r.state.units["a1"] = r.state.units["a1"].model_copy(update={"state": UnitState.assigned, "order": "o-next", "incident": "i-next"})
    cmds = r.reply(o, ReplyKind.cleared, dt=5)
    assert [e.event.value for e in events(cmds)] == ["resolved"]
    assert r.state.units["a1"].order == "o-next", "the unit keeps its new order"
