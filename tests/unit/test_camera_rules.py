"""Rules and alert lifecycle on hand-made tracks: pure tables, no video, no clock."""

from __future__ import annotations

import itertools

import pytest

from adapters.camera.lifecycle import Lifecycle
from adapters.camera.rules import (
    TRANSITIONS,
    Condition,
    Debounce,
    RuleEngine,
    TamperSignals,
    offline_condition,
    tamper_reason,
)
from adapters.camera.types import Track
from dispatch.district import Camera, OfflineRule
from district_fixtures import make_camera

FPS = 5.0
DT = 1.0 / FPS
NIGHT, NOON = 23 * 60, 12 * 60


def camera(**rules) -> Camera:
    zones = [
        {"name": "gate", "polygon": [[0.3, 0.45], [0.7, 0.45], [0.82, 1], [0.18, 1]], "restricted": True, "schedule": "22:00-06:00"},
        {"name": "street", "polygon": [[0, 0.3], [1, 0.3], [1, 1], [0, 1]]},
    ]
    return make_camera(zones, rules)


def person(id: int, x: float = 320, y: float = 300, h: float = 100, zones=("gate",), speed=0.2, confirmed=True, score=0.8) -> Track:
    w = h * 0.4
    return Track(id, "person", (int(x - w / 2), int(y - h), int(x + w / 2), int(y)), score, confirmed, tuple(zones), speed)


def run(engine: RuleEngine, frames, minute=NIGHT, tamper=None):
    """frames: list of track lists, one per analysed frame; returns [(t, [kinds])]."""
    out = []
    for i, tracks in enumerate(frames):
        t = i * DT
        conds = engine.step(t, minute, tracks, tamper(t) if callable(tamper) else tamper)
        out.append((round(t, 3), sorted(c.kind for c in conds)))
    return out


# --------------------------------------------------------------------------- the debounce table


def test_the_debounce_table_covers_every_state_and_input():
    states = {s for s, _ in TRANSITIONS} | set(TRANSITIONS.values())
    assert {(s, v) for s in states for v in (False, True)} == set(TRANSITIONS)


@pytest.mark.parametrize(
    "inputs, on_after, off_after, expected",
    [
        ([1, 1, 1, 1], 0.4, 0.0, [0, 0, 1, 1]),  # on after 0.4 s held
        ([1, 1, 0, 1, 1, 1], 0.4, 0.0, [0, 0, 0, 0, 0, 1]),  # a gap restarts the wait
        ([1, 0, 0, 0, 0], 0.0, 0.4, [1, 1, 1, 0, 0]),  # released after 0.4 s off
        ([1, 0, 1, 0, 0, 0], 0.0, 0.4, [1, 1, 1, 1, 1, 0]),  # coming back cancels the release
    ],
)
def test_debounce(inputs, on_after, off_after, expected):
    d = Debounce(on_after, off_after)
    assert [int(d.step(i * DT, bool(v))) for i, v in enumerate(inputs)] == expected


# --------------------------------------------------------------------------- intrusion


def test_intrusion_only_while_the_schedule_is_on_and_only_for_confirmed_people():
    cam = camera()
    frames = [[person(1, zones=())], [person(1)], [person(1)]]
    assert [k for _, k in run(RuleEngine(cam, FPS), frames, NIGHT)] == [[], ["intrusion"], ["intrusion"]]
    assert [k for _, k in run(RuleEngine(cam, FPS), frames, NOON)] == [[], [], []]
    unconfirmed = [[person(1, confirmed=False)]] * 3
    assert [k for _, k in run(RuleEngine(cam, FPS), unconfirmed, NIGHT)] == [[], [], []]
    # not a restricted zone
    assert [k for _, k in run(RuleEngine(cam, FPS), [[person(1, zones=("street",))]] * 2, NIGHT)] == [[], []]


def test_intrusion_rule_zones_filter_and_switch():
    cam = camera(intrusion={"zones": ["street"]})
    conds = RuleEngine(cam, FPS).step(0.0, NOON, [person(1, zones=("street", "gate"))])
    assert [(c.kind, c.zones) for c in conds] == [("intrusion", ("street",))]
    assert RuleEngine(camera(intrusion={"enabled": False}), FPS).step(0.0, NIGHT, [person(1)]) == []


def test_intrusion_is_one_condition_per_person_with_its_zones_and_priority():
    cam = camera(intrusion={"priority": 1})
    conds = RuleEngine(cam, FPS).step(0.0, NIGHT, [person(1), person(2, x=400), person(3, zones=())])
    assert sorted(c.key for c in conds) == [("intrusion", 1), ("intrusion", 2)]
    assert {c.priority for c in conds} == {1} and all(c.zones == ("gate",) for c in conds)


# --------------------------------------------------------------------------- loitering


def test_loitering_fires_after_t_seconds_in_the_zone_and_not_before():
    cam = camera(loitering={"seconds": 4, "zones": ["gate"]}, intrusion={"enabled": False})
    frames = [[person(1, zones=())]] * 5 + [[person(1)]] * 30  # enters the zone at t=1.0
    res = run(RuleEngine(cam, FPS), frames)
    first = next(t for t, k in res if "loitering" in k)
    assert first == pytest.approx(5.0)  # 1.0 + 4 s
    assert all("loitering" in k for t, k in res if t >= 5.0)


def test_loitering_timer_restarts_when_the_person_leaves_the_zone():
    cam = camera(loitering={"seconds": 2, "zones": ["gate"]}, intrusion={"enabled": False})
    frames = [[person(1)]] * 8 + [[person(1, zones=())]] + [[person(1)]] * 12
    res = run(RuleEngine(cam, FPS), frames)
    hits = [t for t, k in res if "loitering" in k]
    # 1.4 s in the zone, out at 1.6 s, back at 1.8 s: the clock starts again there
    assert hits[0] == pytest.approx(1.8 + 2.0)


def test_loitering_without_zones_counts_time_in_view():
    cam = camera(loitering={"seconds": 3}, intrusion={"enabled": False})
    res = run(RuleEngine(cam, FPS), [[person(1, zones=())]] * 20)
    assert next(t for t, k in res if "loitering" in k) == pytest.approx(3.0)


# --------------------------------------------------------------------------- crowd


@pytest.mark.parametrize("n, fires", [(4, False), (5, True), (6, True)])
def test_crowd_fires_at_k_people_and_not_at_k_minus_1(n, fires):
    cam = camera(crowd={"min_people": 5}, intrusion={"enabled": False})
    people = [person(i, x=100 + 60 * i) for i in range(1, n + 1)]
    res = run(RuleEngine(cam, FPS), [people] * 10)
    assert any("crowd" in k for _, k in res) == fires


def test_crowd_needs_two_frames_and_counts_only_confirmed_people():
    cam = camera(crowd={"min_people": 3}, intrusion={"enabled": False})
    three = [person(i, x=100 + 60 * i) for i in range(3)]
    flicker = [three, three[:2], three, three[:2]]
    assert not any("crowd" in k for _, k in run(RuleEngine(cam, FPS), flicker))
    half = [three[:2] + [person(9, confirmed=False)]] * 5
    assert not any("crowd" in k for _, k in run(RuleEngine(cam, FPS), half))
    conds = RuleEngine(cam, FPS)
    conds.step(0.0, NIGHT, three)
    [c] = conds.step(DT, NIGHT, three)
    assert c.key == ("crowd",) and c.detail["people"] == 3 and len(c.boxes) == 3


# --------------------------------------------------------------------------- running and scuffle


def test_running_needs_speed_above_the_threshold_for_four_frames():
    cam = camera(running={"speed": 1.0}, intrusion={"enabled": False})
    walk = [[person(1, speed=0.6)]] * 5
    assert not any(k for _, k in run(RuleEngine(cam, FPS), walk))
    sprint = [[person(1, speed=0.6)]] + [[person(1, speed=2.0)]] * 5
    assert [k for _, k in run(RuleEngine(cam, FPS), sprint)] == [[], [], [], [], ["suspicious"], ["suspicious"]]
    # a track that jumps is fast while its speed window spans the jump (3 frames): no runner
    jump = [[person(1, speed=0.6)]] + [[person(1, speed=2.0)]] * 3 + [[person(1, speed=0.6)]] * 2
    assert not any(k for _, k in run(RuleEngine(cam, FPS), jump))


def test_two_people_close_fast_and_erratic_are_a_fight_two_walking_together_are_not():
    cam = camera(running={"speed": 0.8}, intrusion={"enabled": False})
    scuffle, together = [], []
    for i in range(15):
        jig = 15 if i % 2 else -15  # back and forth, 0.3 body heights each frame
        scuffle.append([person(1, x=310 + jig, speed=0.3), person(2, x=350 - jig, speed=0.3)])
        together.append([person(1, x=100 + 20 * i, speed=1.0), person(2, x=150 + 20 * i, speed=1.0)])
    res = run(RuleEngine(cam, FPS), scuffle)
    assert any("fight" in k for _, k in res)
    assert not any("fight" in k for _, k in run(RuleEngine(cam, FPS), together))
    # far apart, each jittering: no fight
    apart = [[person(1, x=100 + (30 if i % 2 else -30)), person(2, x=560 - (30 if i % 2 else -30))] for i in range(15)]
    assert not any("fight" in k for _, k in run(RuleEngine(cam, FPS), apart))


def test_a_walker_passing_somebody_who_fidgets_is_not_a_fight():
    """The pair test on sums let one erratic track make a scuffle of anybody walking past it (busy
    scenes: a track handed between people in a crowd next to a passer-by). Each of the two must be
    going nowhere."""
    cam = camera(running={"speed": 0.8}, intrusion={"enabled": False})
    frames = []
    for i in range(15):
        jig = 15 if i % 2 else -15  # 0.3 body heights back and forth every frame, going nowhere
        frames.append([person(1, x=320 + jig, speed=0.3), person(2, x=250 + 10 * i, speed=0.5)])  # 0.5 body heights/s past
    assert not any("fight" in k for _, k in run(RuleEngine(cam, FPS), frames))

    # two who scuffle while the pair drifts 14 px a frame: the one who fidgets less still goes back and
    # forth (net about 0.6 of their path, as much as in any rendered scuffle) -- a fight; fidgeting less
    # still (net about 0.9 of the path: walking on, with a wobble) -- not one
    def drifting(wobble: int) -> list[list[Track]]:
        return [[person(1, x=100 + (30 if i % 2 else -30) + 14 * i, speed=0.3),
                 person(2, x=130 - (wobble if i % 2 else -wobble) + 14 * i, speed=0.3)] for i in range(15)]

    assert any("fight" in k for _, k in run(RuleEngine(cam, FPS), drifting(12)))
    assert not any("fight" in k for _, k in run(RuleEngine(cam, FPS), drifting(8)))


# --------------------------------------------------------------------------- tamper and offline

NORMAL = TamperSignals(brightness=110, contrast=40, sharpness=300, similarity=0.97, contrast_ref=40, sharpness_ref=300)


@pytest.mark.parametrize(
    "signals, reason",
    [
        (NORMAL, None),
        (TamperSignals(8, 2, 1, 0.1, 40, 300), "covered"),
        (TamperSignals(60, 5, 10, 0.2, 40, 300), "covered"),
        (TamperSignals(110, 35, 20, 0.8, 40, 300), "blurred"),
        (TamperSignals(120, 45, 280, 0.1, 40, 300), "turned_away"),
        (TamperSignals(200, 60, 500, 0.9, 40, 300), None),  # lights on: brighter, sharper, same scene
        (TamperSignals(8, 2, 1, 0.1, 40, 300, learning=True), None),
    ],
)
def test_tamper_reasons(signals, reason):
    assert tamper_reason(signals) == reason


def test_tamper_fires_after_the_configured_seconds_and_ends_when_the_view_returns():
    cam = camera(tamper={"seconds": 2})
    covered = TamperSignals(8, 2, 1, 0.1, 40, 300)
    sig = lambda t: covered if 1.0 <= t < 6.0 else NORMAL  # noqa: E731
    res = run(RuleEngine(cam, FPS), [[]] * 45, tamper=sig)
    on = [t for t, k in res if "camera_tamper" in k]
    assert on[0] == pytest.approx(3.0) and on[-1] < 7.2 and on[-1] >= 6.0


def test_offline_after_the_configured_seconds():
    rule = OfflineRule(seconds=10)
    assert not offline_condition(105.0, 100.0, rule)
    assert offline_condition(110.0, 100.0, rule)
    assert not offline_condition(5.0, None, rule, started_t=0.0) and offline_condition(12.0, None, rule, started_t=0.0)
    assert not offline_condition(500.0, 100.0, OfflineRule(enabled=False))


# --------------------------------------------------------------------------- lifecycle


def ids():
    counter = itertools.count(1)
    return lambda: f"ev{next(counter)}"


def cond(key=("intrusion", 1), zones=("gate",), score=0.7, box=(100, 100, 140, 200), quality=None, **kw) -> Condition:
    q = quality if quality is not None else (1, (box[2] - box[0]) * (box[3] - box[1]) * score)
    return Condition(key=key, kind=kw.pop("kind", "intrusion"), priority=2, zones=zones, label="person", score=score, box=box, quality=q, **kw)


def drive(lc: Lifecycle, seq, snaps=None):
    """seq: per frame a list of conditions; returns [(t, phase, id)]."""
    out = []
    for i, conds in enumerate(seq):
        t = round(i * DT, 3)
        snap = (lambda i=i: f"jpeg{i}".encode()) if snaps is None else snaps(i)
        for e in lc.step(t, conds, snap):
            out.append((t, e.phase, e.event_id, e))
    return out


def test_one_event_new_then_end_after_the_hold_off_not_one_per_frame():
    lc = Lifecycle(hold_off=1.0, update_interval=5.0, new_id=ids())
    res = drive(lc, [[cond()]] * 10 + [[]] * 10)
    assert [(t, p, i) for t, p, i, _ in res] == [(0.0, "new", "ev1"), (2.8, "end", "ev1")]
    end = res[-1][3]
    assert end.start_t == 0.0 and end.end_t == pytest.approx(1.8)


def test_a_short_gap_continues_the_event_a_long_one_starts_another():
    lc = Lifecycle(hold_off=1.0, new_id=ids())
    res = drive(lc, [[cond()]] * 3 + [[]] * 3 + [[cond()]] * 3 + [[]] * 6 + [[cond()]])
    assert [(p, i) for _, p, i, _ in res] == [("new", "ev1"), ("end", "ev1"), ("new", "ev2")]


def test_updates_when_zones_grow_at_once_and_for_a_better_score_at_most_every_interval():
    lc = Lifecycle(hold_off=1.0, update_interval=2.0, new_id=ids())
    seq = [[cond(score=0.6)]] * 3 + [[cond(zones=("gate", "street"), score=0.6)]] + [[cond(score=0.6 + 0.02 * i)] for i in range(20)]
    res = drive(lc, seq)
    phases = [(t, p) for t, p, _, _ in res]
    assert phases[0] == (0.0, "new") and phases[1] == (0.6, "update")
    assert res[1][3].zones == ("gate", "street")
    ups = [t for t, p in phases[2:] if p == "update"]
    assert ups and all(b - a >= 2.0 - 1e-9 for a, b in zip([0.6] + ups, ups))


def test_the_snapshot_is_the_best_view_encoded_once_when_it_becomes_the_best():
    lc = Lifecycle(hold_off=0.4, update_interval=0.0, new_id=ids())
    calls = []

    def snaps(i):
        def enc():
            calls.append(i)
            return f"jpeg{i}".encode()

        return enc

    sizes = [40, 60, 100, 80, 100, 50]
    seq = [[cond(box=(100, 100, 100 + s // 2, 100 + s), score=0.8)] for s in sizes]
    # frame 6: the biggest box, but cut by the frame edge: not better than a whole view
    seq.append([cond(box=(0, 100, 90, 300), score=0.9, quality=(0, 90 * 200 * 0.9))])
    res = drive(lc, seq + [[]] * 3, snaps)
    assert calls == [0, 1, 2]
    end = res[-1][3]
    assert end.phase == "end" and end.snapshot_jpeg == b"jpeg2" and end.box == (100, 100, 150, 200)


def test_a_lost_and_refound_person_continues_the_same_event():
    lc = Lifecycle(hold_off=1.0, new_id=ids())
    seq = [[cond(key=("intrusion", 1))]] * 3 + [[]] + [[cond(key=("intrusion", 7), box=(104, 100, 144, 200))]] * 3 + [[]] * 6
    res = drive(lc, seq)
    assert [(p, i) for _, p, i, _ in res] == [("new", "ev1"), ("end", "ev1")]


def test_a_track_seen_beside_the_lost_one_is_somebody_else():
    """A track that existed while the event's person was still being found is a second person."""
    lc = Lifecycle(hold_off=1.0, new_id=ids())
    seq = [[cond(key=("intrusion", 1), since=0.0)]] * 3 + [[]] + [[cond(key=("intrusion", 7), box=(104, 100, 144, 200), since=0.1)]] * 3 + [[]] * 6
    res = drive(lc, seq)
    assert [(p, i) for _, p, i, _ in res][:2] == [("new", "ev1"), ("new", "ev2")]
    # born after the last frame that found the first one: the same person under a new id
    lc = Lifecycle(hold_off=1.0, new_id=ids())
    seq = [[cond(key=("intrusion", 1), since=0.0)]] * 3 + [[]] + [[cond(key=("intrusion", 7), box=(104, 100, 144, 200), since=0.6)]] * 3 + [[]] * 6
    assert [(p, i) for _, p, i, _ in drive(lc, seq)] == [("new", "ev1"), ("end", "ev1")]


def test_flush_ends_every_open_event():
    lc = Lifecycle(new_id=ids())
    drive(lc, [[cond(), cond(key=("crowd",), kind="crowd")]])
    ends = lc.flush(9.0)
    assert sorted(e.event_id for e in ends) == ["ev1", "ev2"] and all(e.phase == "end" for e in ends)
    assert lc.open == []
