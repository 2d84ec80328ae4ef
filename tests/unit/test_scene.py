"""The synthetic camera's renderer: deterministic frames, exact truth, camera events, real clips."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from simulators.scene import (
    GATE_ZONE,
    SCENARIOS,
    STREET_ZONE,
    WALK_Y,
    Actor,
    Scene,
    path_fraction,
    point_in_polygon,
    write_clip,
)


def clean(seed: int = 0, **kw) -> Scene:
    """A scene without sensor effects, so that pixel comparisons are exact."""
    return Scene(seed=seed, noise=0.0, drift=False, flicker=0.0, **kw)


def people(scene: Scene, t: float) -> list[dict]:
    return [a for a in scene.truth(t) if a["kind"] == "person"]


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_frames_different_seed_differs():
    a, b, c = SCENARIOS["busy"](3), SCENARIOS["busy"](3), SCENARIOS["busy"](4)
    for t in (0.0, 7.3, 21.0):
        fa, fb, fc = a.render(t), b.render(t), c.render(t)
        assert fa.shape == (360, 640, 3) and fa.dtype == np.uint8
        assert np.array_equal(fa, fb)
        assert a.truth(t) == b.truth(t)
        assert np.abs(fa.astype(int) - fc.astype(int)).mean() > 3.0


def test_render_is_a_pure_function_of_t():
    sc = SCENARIOS["walk_through_gate"](1)
    f1 = sc.render(6.0)
    sc.render(9.0)
    assert np.array_equal(sc.render(6.0), f1)


def test_noise_and_drift_change_frames_over_time_without_actors():
    sc = SCENARIOS["drift_noise"](0)
    f0, f1 = sc.render(0.0), sc.render(1 / 15)
    diff = np.abs(f0.astype(int) - f1.astype(int))
    assert 1.5 < diff.mean() < 12  # sensor noise, not a different picture
    # slow drift: the mean moves over a minute
    means = [float(sc.render(t).mean()) for t in np.arange(0, 120, 10)]
    assert max(means) - min(means) > 4


def test_frame_size_and_rate_are_configurable():
    sc = Scene(width=320, height=180, fps=5, seed=2)
    sc.add_person([(-0.1, 0.9), (1.1, 0.9)], start=0.0)
    f = sc.render(3.0)
    assert f.shape == (180, 320, 3)
    (p,) = people(sc, 3.0)
    assert 25 <= p["box"][3] - p["box"][1] <= 66  # half of 50..130


# ----------------------------------------------------------------------------- people and truth


@pytest.mark.parametrize("name", ["walk_through_gate", "loiter_gate", "crowd_5", "run", "scuffle", "busy"])
def test_people_are_50_to_130_px_tall(name):
    sc = SCENARIOS[name](0)
    heights = []
    for k in range(0, int(sc.duration * sc.fps), 4):
        for p in people(sc, k / sc.fps):
            if p["fully_in_view"]:
                heights.append(p["box"][3] - p["box"][1])
    assert heights, "nobody fully in view"
    assert 50 <= min(heights) and max(heights) <= 130, (min(heights), max(heights))


def test_people_at_both_ends_of_the_walkable_band_across_seeds():
    lo, hi = [], []
    for seed in range(25):
        sc = clean(seed)
        far = sc.add_person([(0.3, WALK_Y[0]), (0.7, WALK_Y[0])])
        sc.add_person([(0.2, WALK_Y[1]), (0.6, WALK_Y[1])], run=bool(seed % 2))
        for k in range(0, 30, 3):
            for p in people(sc, k / 15):
                (lo if p["id"] == far else hi).append(p["box"][3] - p["box"][1])
    assert min(lo) >= 50 and max(hi) <= 130
    assert max(hi) > 1.8 * min(lo)  # perspective: near is much larger


def test_truth_boxes_match_the_drawn_pixels():
    sc = clean(5)
    sc.add_person([(-0.08, 0.92), (0.14, 0.92), (0.46, 0.50), (1.08, 0.48)], start=0.0, truth_id="w")
    sc.add_person([(1.08, 0.75), (-0.08, 0.7)], start=1.0, run=True, truth_id="r")
    sc.add_vehicle([(-0.35, 0.64), (1.35, 0.64)], start=2.0, speed=6.0)
    empty = clean(5)
    checked = 0
    for t in np.arange(0.5, 9.0, 0.7):
        frame, bg = sc.render(float(t)), empty.render(float(t))
        changed = np.abs(frame.astype(int) - bg.astype(int)).max(axis=2) > 0
        truth = sc.truth(float(t))
        union = np.zeros_like(changed)
        for a in truth:
            x1, y1, x2, y2 = a["box"]
            union[y1:y2, x1:x2] = True
            inside = changed[y1:y2, x1:x2]
            if not a["fully_in_view"] or a["occluded"] > 0:
                continue
            checked += 1
            assert inside.mean() > 0.3, a  # the box is mostly figure
            # tight: every edge row and column of the box has drawn pixels
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any(), a
        # outside every box, only the soft contact shadows under feet / wheels change anything
        ring = np.zeros_like(changed)
        for a in truth:
            gx, gy = a["ground"][0] * 640, a["ground"][1] * 360
            half = 140 if a["kind"] == "vehicle" else 30
            ring[max(0, int(gy) - 12):int(gy) + 12, max(0, int(gx) - half):int(gx) + half] = True
        stray = changed & ~union & ~ring
        assert stray.sum() == 0, (t, int(stray.sum()))
    assert checked >= 10


def test_truth_bottom_is_the_scripted_ground_point():
    sc = SCENARIOS["walk_through_gate"](0)
    for t in np.arange(3.5, 18, 1.0):
        for p in people(sc, float(t)):
            if p["fully_in_view"]:
                assert math.dist(p["bottom"], p["ground"]) < 0.03, p


def test_truth_fields_and_flags():
    sc = SCENARIOS["walk_through_gate"](0)
    (p,) = people(sc, 6.0)
    assert set(p) >= {"id", "kind", "box", "bottom", "fully_in_view", "action", "covered", "lights_on"}
    assert p["id"] == "walker" and p["action"] == "walk" and p["covered"] is False
    assert sc.flags(6.0) == {"covered": False, "lights_on": False, "knocked": False, "blurred": False, "stream_alive": True}
    assert people(sc, 1.0) == []  # not on stage yet


def test_partly_out_of_frame_is_not_fully_in_view():
    sc = clean()
    sc.add_person([(-0.1, 0.9), (1.1, 0.9)], start=0.0)
    first = next(p for k in range(40) for p in people(sc, k / 15))
    assert first["box"][0] == 0 and not first["fully_in_view"]


def test_occlusion_by_a_nearer_person():
    sc = clean()
    far = sc.add_actor(Actor("person", [(0.0, 0.5, 0.6, "stand"), (10.0, 0.5, 0.6, "stand")]))
    sc.add_actor(Actor("person", [(0.0, 0.5, 0.66, "stand"), (10.0, 0.5, 0.66, "stand")]))
    truth = {a["id"]: a for a in sc.truth(2.0)}
    assert truth[far]["occluded"] > 0.5 and not truth[far]["fully_in_view"]


def test_stop_and_stand_then_walk_on():
    sc = clean()
    path = [(1.08, 0.5), (0.5, 0.52), (-0.08, 0.6)]
    pid = sc.add_person(path, start=0.0, stop_at=path_fraction(path, 1, sc.aspect), stay_s=20.0)
    (ev,) = [e for e in sc.events() if e["kind"] == "loitering"]
    assert ev["ids"] == [pid] and ev["end"] - ev["start"] == pytest.approx(20.0)
    assert ev["zone"] == "gate"
    mid = (ev["start"] + ev["end"]) / 2
    (p,) = people(sc, mid)
    assert p["action"] == "stand" and math.dist(p["ground"], (0.5, 0.52)) < 1e-3
    assert people(sc, ev["end"] + 2.0)[0]["action"] == "walk"


def test_running_is_faster_than_walking():
    sc = clean()
    w = sc.add_person([(-0.1, 0.8), (1.1, 0.8)], start=0.0)
    r = sc.add_person([(-0.1, 0.7), (1.1, 0.7)], start=0.0, run=True)
    assert sc.actors[r].end < sc.actors[w].end / 2.5
    assert people(sc, 1.0)[0]["action"] in ("walk", "run")
    assert {p["id"]: p["action"] for p in people(sc, 1.0)} == {w: "walk", r: "run"}


def test_scuffle_and_crowd_helpers():
    sc = clean()
    a, b = sc.add_scuffle((0.45, 0.7), start=6.0, seconds=6.0)
    acts = {p["id"]: p["action"] for p in people(sc, 8.0)}
    assert acts == {a: "scuffle", b: "scuffle"}
    boxes = {p["id"]: p["box"] for p in people(sc, 8.0)}
    assert abs(boxes[a][0] - boxes[b][0]) < 120  # close together
    crowd = clean(1)
    ids = crowd.add_crowd((0.5, 0.62), n=5, start=2.0, gather_s=10.0, stay_s=20.0)
    there = [p for p in people(crowd, 20.0) if p["id"] in ids]
    assert len(there) == 5 and all(p["action"] == "stand" for p in there)
    assert sum(p["fully_in_view"] for p in there) == 5
    (ev,) = [e for e in crowd.events() if e["kind"] == "crowd"]
    assert ev["start"] == pytest.approx(12.0) and ev["end"] == pytest.approx(32.0) and ev["detail"]["people"] == 5


def test_vehicles_are_vehicles():
    sc = SCENARIOS["traffic"](0)
    seen = {a["label"] for k in range(0, int(sc.duration * 15), 5) for a in sc.truth(k / 15)}
    assert seen == {"car", "scooter"}
    assert all(a["kind"] == "vehicle" for k in range(0, int(sc.duration * 15), 5) for a in sc.truth(k / 15))
    car = next(a for a in sc.truth(4.0) if a["label"] == "car")
    x1, y1, x2, y2 = car["box"]
    assert (x2 - x1) > 1.5 * (y2 - y1)  # wide, not person-shaped


# ----------------------------------------------------------------------------- camera events


def test_lights_on_steps_the_brightness_by_about_delta():
    for cone, lo, hi in ((False, 0.85, 1.1), (True, 0.85, 1.35)):
        sc = Scene(seed=1, night=True)
        sc.lights_on(5.0, delta=60.0, cone=cone)
        before = float(sc.render(4.95).mean())
        after = float(sc.render(5.0).mean())
        assert lo * 60 <= after - before <= hi * 60, (cone, before, after)
        assert sc.flags(5.0)["lights_on"] and not sc.flags(4.9)["lights_on"]
    sc = SCENARIOS["lights_on"](0)
    assert float(sc.render(8.1).mean()) - float(sc.render(7.9).mean()) > 45


def test_cover_makes_the_frame_nearly_uniform():
    sc = SCENARIOS["cover"](0)
    assert sc.render(4.0).std() > 30
    covered = sc.render(6.0)
    assert covered.std() < 6 and covered.mean() < 40
    assert sc.flags(6.0)["covered"] and not sc.flags(4.0)["covered"]
    assert all(not p["fully_in_view"] for p in people(sc, 6.0))
    assert sc.render(16.0).std() > 30  # uncovered again after 10 s (+0.5 s)
    half = sc.render(5.25)  # half way through the 0.5 s cover
    assert 6 < half.std() < sc.render(4.0).std()


def test_knock_turns_the_view_and_moves_the_truth():
    sc = clean()
    sc.add_actor(Actor("person", [(0.0, 0.3, 0.8, "stand"), (10.0, 0.3, 0.8, "stand")], id="still"))
    sc.knock(2.0, angle=10.0, shift=(0.05, 0.05))
    before, after = sc.render(1.9), sc.render(3.0)
    assert np.abs(before.astype(int) - after.astype(int)).mean() > 15
    b0 = people(sc, 1.9)[0]["box"]
    b1 = people(sc, 3.0)[0]["box"]
    assert abs(b0[0] - b1[0]) + abs(b0[1] - b1[1]) > 20
    assert sc.flags(3.0)["knocked"]
    # the box still frames the figure in the knocked view
    empty = clean()
    empty.knock(2.0, angle=10.0, shift=(0.05, 0.05))
    changed = np.abs(after.astype(int) - empty.render(3.0).astype(int)).max(axis=2) > 10
    x1, y1, x2, y2 = b1
    assert changed[y1:y2, x1:x2].mean() > 0.2 and changed.sum() - changed[y1:y2, x1:x2].sum() < 0.1 * changed.sum()


def test_blur_and_stream_death_flags():
    sc = SCENARIOS["blur"](0)
    sharp, blurred = sc.render(4.0), sc.render(7.0)
    lap = lambda f: cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()  # noqa: E731
    assert lap(blurred) < 0.2 * lap(sharp)
    s2 = Scene()
    s2.stream_dies(3.0, seconds=2.0)
    assert s2.stream_alive(2.9) and not s2.stream_alive(3.5) and s2.stream_alive(5.1)
    assert any(e["kind"] == "camera_offline" for e in s2.events())


# ----------------------------------------------------------------------------- events and zones


def test_walk_through_gate_events_follow_the_zone():
    sc = SCENARIOS["walk_through_gate"](0)
    assert sc.zones["gate"] == {"polygon": [tuple(p) for p in GATE_ZONE], "restricted": True}
    assert sc.zones["street"]["polygon"] == [tuple(p) for p in STREET_ZONE]
    (ev,) = [e for e in sc.events() if e["kind"] == "intrusion"]
    assert ev["zone"] == "gate" and ev["ids"] == ["walker"] and ev["incident_kind"] == "intrusion"
    assert 4.0 < ev["start"] < ev["end"] < sc.duration
    dt = 1 / sc.fps
    g_in = sc.ground_point("walker", ev["start"])
    g_before = sc.ground_point("walker", ev["start"] - dt)
    assert point_in_polygon(*g_in, GATE_ZONE) and not point_in_polygon(*g_before, GATE_ZONE)
    assert not point_in_polygon(*sc.ground_point("walker", ev["end"] + dt), GATE_ZONE)


@pytest.mark.parametrize(
    "name, kind, check",
    [
        ("walk_through_gate", "intrusion", lambda e: e["zone"] == "gate"),
        ("loiter_gate", "loitering", lambda e: e["zone"] == "gate" and e["end"] - e["start"] == pytest.approx(40.0)),
        ("crowd_5", "crowd", lambda e: e["detail"]["people"] == 5 and len(e["ids"]) == 5),
        ("crowd_4", "crowd", lambda e: e["detail"]["people"] == 4),
        ("run", "running", lambda e: e["ids"] == ["runner"] and e["incident_kind"] == "suspicious"),  # as the adapter says
        ("scuffle", "fight", lambda e: len(e["ids"]) == 2 and e["end"] - e["start"] == pytest.approx(8.0)),
        ("lights_on", "lights_on", lambda e: e["incident_kind"] is None and e["start"] == 8.0),
        ("cover", "camera_tamper", lambda e: e["start"] == 5.0 and e["detail"]["how"] == "covered"),
        ("knock", "camera_tamper", lambda e: e["detail"]["how"] == "knocked"),
        ("traffic", "vehicle", lambda e: e["incident_kind"] is None),
    ],
)
def test_scenario_events(name, kind, check):
    evs = [e for e in SCENARIOS[name](0).events() if e["kind"] == kind]
    assert evs and all(check(e) for e in evs), evs
    json.dumps(evs)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_each_scenario_builds_and_renders(name):
    sc = SCENARIOS[name](7)
    assert sc.duration > 5 and set(sc.zones) == {"gate", "street"}
    for t in (0.0, sc.duration / 2, sc.duration - 0.1):
        f = sc.render(t)
        assert f.shape == (360, 640, 3) and f.dtype == np.uint8 and 10 < f.mean() < 235
        json.dumps(sc.truth(t))
    json.dumps(sc.events())


def test_quiet_scenarios_have_no_people():
    for name in ("lights_on", "drift_noise", "traffic", "knock", "blur"):
        sc = SCENARIOS[name](0)
        assert not any(a.kind == "person" for a in sc.actors.values()), name


def test_busy_keeps_six_or_more_in_view():
    sc = SCENARIOS["busy"](0)
    counts = [len(people(sc, float(t))) for t in np.arange(0, 60, 2.0)]
    assert np.mean(counts) >= 6 and min(counts) >= 4


def test_bad_scripts_are_refused():
    sc = Scene()
    with pytest.raises(ValueError):
        sc.add_person([(0.5, 0.5)])
    with pytest.raises(ValueError):
        sc.add_person([(0.1, 0.5), (0.9, 0.5)], speed=0)
    sc.add_person([(0.1, 0.5), (0.9, 0.5)], truth_id="x")
    with pytest.raises(ValueError):
        sc.add_person([(0.1, 0.5), (0.9, 0.5)], truth_id="x")
    with pytest.raises(ValueError):
        sc.add_vehicle([(0.1, 0.7), (0.9, 0.7)], kind="tank")


# ----------------------------------------------------------------------------- clips


@pytest.mark.parametrize("suffix, fourcc", [(".mp4", "mp4v"), (".avi", "MJPG")])
def test_write_clip_reads_back(tmp_path, suffix, fourcc):
    sc = SCENARIOS["walk_through_gate"](0)
    out = write_clip(sc, tmp_path / f"clip{suffix}", seconds=2.0, fourcc=fourcc)
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened()
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15.0)
    n = 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        assert f.shape == (360, 640, 3)
        if n == 20:
            ref = sc.render(20 / 15)
            assert np.abs(f.astype(int) - ref.astype(int)).mean() < 6  # the same picture, lossy
        n += 1
    cap.release()
    assert n == 30
    lines = (tmp_path / f"clip{suffix}.truth.jsonl").read_text().splitlines()
    assert len(lines) == 30
    rows = [json.loads(x) for x in lines]
    assert [r["frame"] for r in rows] == list(range(30))
    assert rows[3]["t"] == pytest.approx(0.2) and "flags" in rows[3] and rows[3]["actors"] == []
    summary = json.loads((tmp_path / f"clip{suffix}.events.json").read_text())
    assert summary["frames"] == 30 and summary["fps"] == 15.0 and summary["width"] == 640
    assert summary["zones"]["gate"]["restricted"] is True
    assert any(e["kind"] == "intrusion" for e in summary["events"])
    assert "walker" in summary["actors"]


def test_write_clip_truth_lines_carry_people(tmp_path):
    sc = SCENARIOS["walk_through_gate"](2)
    write_clip(sc, tmp_path / "w.mp4", seconds=6.0)
    rows = [json.loads(x) for x in (tmp_path / "w.mp4.truth.jsonl").read_text().splitlines()]
    with_walker = [r for r in rows if any(a["id"] == "walker" for a in r["actors"])]
    assert with_walker and with_walker[-1]["actors"][0]["kind"] == "person"
