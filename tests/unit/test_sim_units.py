"""Simulated patrol units (simulators/units.py): pure, seeded, on the street graph."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import pytest

from dispatch.district import load_district
from dispatch.events import Area, DispatchOrder, IncidentKind, OrderAction, ReplyKind
from simulators.units import Behaviour, Delay, Fleet, Leg, SimClock, travel

REPO = Path(__file__).resolve().parents[2]
DRILL = "drill-1"
CAM03 = (30.2079451, 114.901426)


@pytest.fixture(scope="module")
def district():
    return load_district(REPO / "config" / "districts" / "tieshan.yaml")


def order(unit: str, n: int = 1, place: tuple[float, float] = CAM03, exercise: str | None = DRILL,
          action: OrderAction = OrderAction.assign) -> DispatchOrder:
    return DispatchOrder(order_id=f"o{n}", incident_id=f"i{n}", unit=unit, kind=IncidentKind.fight, action=action,
                         place=Area(lat=place[0], lon=place[1]), exercise=exercise)


def play(fleet: Fleet, until: float, orders: list[tuple[float, DispatchOrder]] = ()) -> list:
    """Run a fleet: start, orders at their times, everything up to `until`; returns what it sent."""
    outs = fleet.start(0.0)
    for t, o in sorted(orders, key=lambda x: x[0]):
        outs += fleet.order(o, t)
    outs += fleet.advance(until)
    return outs


def signature(outs: list) -> list[tuple]:
    """What was sent, without the message ids and wall-clock times (which differ by construction)."""
    out = []
    for o in outs:
        body = o.msg.model_dump(exclude={"id", "time"})
        out.append((round(o.t, 6), o.kind, o.unit, tuple(sorted((k, str(v)) for k, v in body.items()))))
    return out


# --------------------------------------------------------------------------- delays


def test_delays_fixed_uniform_lognormal() -> None:
    rng = random.Random(1)
    assert Delay.fixed(5).draw(rng) == 5
    u = [Delay.uniform(2, 4).draw(rng) for _ in range(2000)]
    assert 2 <= min(u) and max(u) <= 4 and abs(sum(u) / len(u) - 3) < 0.1
    ln = sorted(Delay.lognormal(6, 15).draw(rng) for _ in range(4000))
    assert abs(ln[len(ln) // 2] - 6) < 0.6  # median
    assert abs(ln[int(len(ln) * 0.9)] - 15) < 2.0  # 90th percentile
    assert min(ln) > 0 and max(ln) <= 150


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_decisions_paths_and_messages(district) -> None:
    orders = [(100.0, order("p07", 1)), (400.0, order("a21", 2)), (700.0, order("p12", 3, place=(30.2045, 114.91)))]
    a, b = Fleet(district, seed=11, exercise=DRILL), Fleet(district, seed=11, exercise=DRILL)
    sa, sb = signature(play(a, 1800.0, orders)), signature(play(b, 1800.0, orders))
    assert sa == sb and len(sa) > 5000
    assert a.log == b.log
    for uid in a.units:
        assert [(lg.t0, lg.seconds, lg.pts) for lg in a.units[uid].legs] == [(lg.t0, lg.seconds, lg.pts) for lg in b.units[uid].legs]


def test_a_different_seed_gives_another_drill(district) -> None:
    a, b = Fleet(district, seed=11, exercise=DRILL), Fleet(district, seed=12, exercise=DRILL)
    play(a, 1200.0), play(b, 1200.0)
    moved = [u for u in a.units if a.position(u, 1200.0) != b.position(u, 1200.0)]
    assert len(moved) > len(a.units) // 2


def test_the_shell_tick_rate_changes_nothing(district) -> None:
    """Positions are a function of simulated time: advancing in 1 s or 37 s steps gives the same messages."""
    a, b = Fleet(district, seed=4, exercise=DRILL), Fleet(district, seed=4, exercise=DRILL)
    outs_a = a.start(0.0) + a.advance(900.0)
    outs_b = b.start(0.0)
    t = 0.0
    while t < 900.0:
        t = min(t + 37.0, 900.0)
        outs_b += b.advance(t)
    assert signature(outs_a) == signature(outs_b)


# --------------------------------------------------------------------------- moving


def test_units_walk_their_beat_on_the_streets_and_report_every_interval(district) -> None:
    graph = district.load_streets()
    nodes = {graph.coords(n) for n in range(graph.node_count)}
    f = Fleet(district, Behaviour(position_interval_s=30.0), seed=3, exercise=DRILL)
    outs = play(f, 3600.0)
    for uid, u in f.units.items():
        reports = [o.t for o in outs if o.kind == "position" and o.unit == uid]
        gaps = {round(b - a, 6) for a, b in zip(reports, reports[1:])}
        assert gaps == {30.0}, (uid, gaps)
        moving = [lg for lg in u.legs if len(lg.pts) > 2]
        assert moving, f"{uid} never walked its beat"
        for lg in moving:
            assert all(p in nodes for p in lg.pts[1:-1]), "between the access legs, a path runs over street nodes"
            if lg.seconds == 0:
                assert lg.length_m < 1.0  # already there: no teleporting
                continue
            pace = lg.length_m / lg.seconds
            assert pace <= f.speeds[u.mode] * 0.6 * 1.01, (uid, u.mode, pace)  # patrol_speed 0.6 of the mode
    comm = {c.id: c for c in district.communities}
    homes_in_beat = sum(comm[u.beat].contains(*u.home) for u in f.units.values())
    assert homes_in_beat >= len(f.units) * 0.8


def test_volunteers_go_on_foot(district) -> None:
    f = Fleet(district, seed=3, exercise=DRILL)
    vols = [u for u in f.units.values() if u.kind == "volunteer"]
    assert vols and all(u.mode == "foot" and math.isclose(u.speed_mps, 5 / 3.6) for u in vols)


def test_travel_time_is_the_engines_estimate(district) -> None:
    """Road time between the nearest usable nodes plus both access legs at the mode's speed."""
    graph = district.load_streets()
    a, b = (30.2035905, 114.9063417), CAM03
    pts, secs = travel(graph, 40 / 3.6, "car", a, b)
    na, da = graph.nearest_node(*a, "car")
    nb, db = graph.nearest_node(*b, "car")
    assert secs == pytest.approx(graph.shortest_time("car", na, nb) + (da + db) / (40 / 3.6))
    assert pts[0] == a and pts[-1] == b and pts[1:-1] == graph.route("car", na, nb)


def test_leg_positions_and_the_path_so_far() -> None:
    leg = Leg(10.0, 100.0, [(30.0, 114.0), (30.0, 114.01), (30.01, 114.01)])
    assert leg.at(0.0)[:2] == (30.0, 114.0) and leg.at(500.0)[:2] == (30.01, 114.01)
    lat, lon, speed, heading = leg.at(35.0)
    assert lat == 30.0 and 114.0 < lon < 114.01 and speed == pytest.approx(leg.length_m / 100.0) and heading == pytest.approx(90.0)
    assert leg.path_until(35.0)[-1] == pytest.approx((lat, lon)) and len(leg.path_until(35.0)) == 2


# --------------------------------------------------------------------------- orders


def replies(outs: list, unit: str) -> list[tuple[float, ReplyKind]]:
    return [(o.t, o.msg.reply) for o in outs if o.kind == "reply" and o.unit == unit]


def test_an_order_is_acknowledged_driven_served_and_cleared(district) -> None:
    b = Behaviour(answer_delay=Delay.fixed(7.0), decline_p=0.0, silent_p=0.0, on_scene=Delay.fixed(100.0))
    f = Fleet(district, b, seed=5, exercise=DRILL)
    outs = play(f, 1500.0, [(50.0, order("p03", 1))])
    r = replies(outs, "p03")
    assert [k for _, k in r] == [ReplyKind.ack, ReplyKind.en_route, ReplyKind.on_scene, ReplyKind.cleared]
    t_ack, t_scene, t_clear = r[0][0], r[2][0], r[3][0]
    assert t_ack == pytest.approx(57.0)
    drive = next(lg for lg in f.units["p03"].legs if lg.t0 == t_ack)
    assert t_scene == pytest.approx(t_ack + drive.seconds) and drive.pts[-1] == CAM03
    assert drive.length_m / drive.seconds == pytest.approx(40 / 3.6, rel=0.35)  # full speed, not the patrol pace
    assert t_clear == pytest.approx(t_scene + 100.0)
    assert f.position("p03", t_scene + 50.0) == pytest.approx(CAM03)
    assert any(lg.t0 > t_clear and len(lg.pts) > 1 for lg in f.units["p03"].legs), "back on the beat after clearing"
    assert all(o.msg.exercise == DRILL for o in outs), "every message carries the drill id"


def test_declines_and_radio_dead_spots(district) -> None:
    decline = Fleet(district, Behaviour(answer_delay=Delay.fixed(3.0), decline_p=1.0, silent_p=0.0), seed=5, exercise=DRILL)
    assert [k for _, k in replies(play(decline, 300.0, [(10.0, order("p03"))]), "p03")] == [ReplyKind.decline]
    silent = Fleet(district, Behaviour(silent_p=1.0), seed=5, exercise=DRILL)
    assert replies(play(silent, 300.0, [(10.0, order("p03"))]), "p03") == []


def test_probabilities_come_out_as_configured(district) -> None:
    f = Fleet(district, Behaviour(answer_delay=Delay.fixed(1.0), decline_p=0.2, silent_p=0.1), seed=9, exercise=DRILL)
    f.start(0.0)
    kinds = []
    for n in range(600):
        uid = list(f.units)[n % len(f.units)]
        outs = f.order(order(uid, n), 10.0 * n) + f.advance(10.0 * n + 5.0)
        kinds += [o.msg.reply for o in outs if o.kind == "reply" and o.unit == uid and o.msg.order_id == f"o{n}"][:1] or [None]
        f.order(order(uid, n, action=OrderAction.cancel), 10.0 * n + 6.0)
    assert abs(kinds.count(None) / 600 - 0.1) < 0.04
    assert abs(kinds.count(ReplyKind.decline) / 600 - 0.2) < 0.05


def test_a_cancel_ends_the_job(district) -> None:
    b = Behaviour(answer_delay=Delay.fixed(5.0), decline_p=0.0, silent_p=0.0)
    pending = Fleet(district, b, seed=5, exercise=DRILL)
    outs = play(pending, 600.0, [(10.0, order("p03")), (12.0, order("p03", action=OrderAction.cancel))])
    assert replies(outs, "p03") == []
    driving = Fleet(district, b, seed=5, exercise=DRILL)
    outs = play(driving, 600.0, [(10.0, order("p05")), (20.0, order("p05", action=OrderAction.cancel))])
    assert [k for _, k in replies(outs, "p05")] == [ReplyKind.ack, ReplyKind.en_route]  # never on scene
    assert driving.units["p05"].job is None


def test_orders_of_other_drills_and_of_real_operations_are_not_ours(district) -> None:
    f = Fleet(district, Behaviour(silent_p=0.0, decline_p=0.0), seed=5, exercise=DRILL)
    outs = play(f, 300.0, [(10.0, order("p03", 1, exercise=None)), (20.0, order("p04", 2, exercise="other-drill"))])
    assert replies(outs, "p03") == replies(outs, "p04") == []
    assert f.units["p03"].orders_heard == [] and f.units["p04"].orders_heard == []


def test_a_silent_radio_sends_nothing_and_hears_nothing(district) -> None:
    f = Fleet(district, Behaviour(answer_delay=Delay.fixed(3.0), silent_p=0.0, decline_p=0.0), seed=5, exercise=DRILL)
    f.start(0.0)
    f.silence("p07", 100.0, 400.0)
    outs = f.advance(90.0) + f.order(order("p07", 1), 150.0) + f.advance(600.0)
    pos = [o.t for o in outs if o.kind == "position" and o.unit == "p07"]
    assert pos and not any(100.0 <= t < 400.0 for t in pos) and any(t >= 400.0 for t in pos)
    assert replies(outs, "p07") == []
    assert any(what == "missed" for _, u, what, _ in f.log if u == "p07")
    assert [t for t, *_ in f.units["p07"].track if 100 <= t < 400], "it keeps moving (the map shows where it went)"


def test_a_fleet_of_some_units_only(district) -> None:
    f = Fleet(district, seed=1, exercise=DRILL, units=["p01", "a02"])
    assert set(f.units) == {"p01", "a02"}
    with pytest.raises(ValueError, match="unknown unit"):
        Fleet(district, seed=1, units=["zz"])


def test_sim_clock_runs_speed_times_faster() -> None:
    c = SimClock(20.0).start()
    time.sleep(0.1)
    assert 1.8 <= c.now() <= 3.0
    assert c.sim_of(c.wall_of(123.0)) == pytest.approx(123.0)
    with pytest.raises(ValueError):
        SimClock(0)
