"""The detection pipeline on real video: clips rendered by simulators/scene.py, encoded to MPEG-4 files,
decoded by OpenCV (cv2.VideoCapture), fed frame by frame to Pipeline.process (the live path's core)
and to analyze() (offline replay). Ground truth comes from <clip>.truth.jsonl.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from adapters.camera.analyze import analyze
from adapters.camera.detectors import HogDetector, iou
from adapters.camera.pipeline import Pipeline
from adapters.camera.types import AlertEvent, Frame
from dispatch.district import Camera
from district_fixtures import make_camera
from simulators.scene import GATE_ZONE, SCENARIOS, STREET_ZONE, point_in_polygon, write_clip

NIGHT, NOON = 23 * 60, 12 * 60
LOITER_S = 15.0


def camera(**rules) -> Camera:
    base = {
        # walkers move ~0.8 body heights/s; the district default (0.8) would call them runners
        "running": {"speed": 1.6},
        "loitering": {"seconds": LOITER_S, "zones": ["gate"]},
        "crowd": {"min_people": 5},
        "tamper": {"seconds": 3},
    }
    base.update(rules)
    zones = [
        {"name": "gate", "polygon": GATE_ZONE, "restricted": True, "schedule": "22:00-06:00"},
        {"name": "street", "polygon": STREET_ZONE},
    ]
    return make_camera(zones, base, community="gongren-xincun", position={"lat": 30.206, "lon": 114.897})


class Clip:
    def __init__(self, path: Path):
        self.path = path
        self.truth = [json.loads(line) for line in Path(str(path) + ".truth.jsonl").read_text().splitlines()]
        self.summary = json.loads(Path(str(path) + ".events.json").read_text())
        self.fps = float(self.summary["fps"])

    def enters(self, actor: str, polygon) -> float:
        """First time the actor's bottom-centre (of its drawn box) is inside the polygon."""
        for rec in self.truth:
            for a in rec["actors"]:
                if a["id"] == actor and point_in_polygon(a["bottom"][0], a["bottom"][1], polygon):
                    return rec["t"]
        raise AssertionError(f"{actor} never enters")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    made: dict[str, Clip] = {}

    def get(name: str) -> Clip:
        if name not in made:
            made[name] = Clip(write_clip(SCENARIOS[name](1), folder / f"{name}.mp4"))
        return made[name]

    return get


def live(clip: Clip, cam: Camera, minute: int, keep_frames: bool = False):
    """Decode the file with OpenCV and call Pipeline.process on every frame, as the live worker does."""
    pipe = Pipeline(cam, clock_minutes=lambda t: minute)
    cap = cv2.VideoCapture(str(clip.path))
    assert cap.isOpened()
    events: list[AlertEvent] = []
    results = []
    frames = {}
    n = 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        r = pipe.process(Frame(image, n / clip.fps, n))
        if not r.skipped:
            results.append(r)
            if keep_frames:
                frames[n] = image
        events += r.events
        n += 1
    cap.release()
    events += pipe.flush(results[-1].t if results else 0.0)
    return events, results, frames


def by_event(events: list[AlertEvent]) -> dict[str, list[AlertEvent]]:
    out: dict[str, list[AlertEvent]] = defaultdict(list)
    for e in events:
        out[e.event_id].append(e)
    return out


def assert_one_stream_per_event(events: list[AlertEvent]) -> None:
    for eid, evs in by_event(events).items():
        phases = [e.phase for e in evs]
        assert phases[0] == "new" and phases[-1] == "end" and set(phases[1:-1]) <= {"update"}, (eid, phases)
        assert len({e.kind for e in evs}) == 1 and all(e.start_t == evs[0].start_t for e in evs)


# --------------------------------------------------------------------------- intrusion


def test_intrusion_after_hours_within_a_second_one_event_best_snapshot(clips):
    clip = clips("walk_through_gate")
    entered = clip.enters("walker", GATE_ZONE)
    events, results, frames = live(clip, camera(), NIGHT, keep_frames=True)
    assert {e.kind for e in events} == {"intrusion"}
    [(eid, evs)] = by_event(events).items()  # one person, one incident: one event
    assert_one_stream_per_event(events)
    new = evs[0]
    assert entered - 0.2 <= new.t <= entered + 1.0, (entered, new.t)
    assert new.zones == ("gate",) and new.label == "person" and new.priority == 2 and new.frame_size == (640, 360)
    assert len(events) <= 6, [e.phase for e in events]  # not one per frame
    end = evs[-1]
    assert end.end_t is not None and end.end_t <= end.t

    # the snapshot is the frame with the biggest confident, whole view of the walker while the event ran
    def area(b):
        return (b[2] - b[0]) * (b[3] - b[1])

    views = [
        (area(tr.box) * tr.score, r.index, tr.box)
        for r in results
        if new.start_t <= r.t <= end.end_t
        for tr in r.tracks
        if tr.confirmed and "gate" in tr.zones and tr.box[0] > 2 and tr.box[2] < 638 and tr.box[3] < 358
    ]
    best_q, best_idx, best_box = max(views, key=lambda v: (v[0], -v[1]))  # the first of equals
    assert end.box == best_box
    snap = cv2.imdecode(np.frombuffer(end.snapshot_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert snap.shape == (360, 640, 3)
    diffs = {i: float(np.mean(cv2.absdiff(snap, img))) for i, img in frames.items()}
    assert min(diffs, key=diffs.get) == best_idx


def test_the_same_walk_in_daytime_raises_nothing_when_the_zone_is_night_only(clips):
    clip = clips("walk_through_gate")
    events, _, _ = live(clip, camera(), NOON)
    assert events == []
    # analyze's `start` sets the clock of a replayed file
    assert analyze(clip.path, camera(), None, start="12:00") == []
    assert [e.kind for e in analyze(clip.path, camera(), None, start="21:59:55")][:1] == ["intrusion"]


# --------------------------------------------------------------------------- loitering, crowd


def test_loitering_fires_after_t_seconds_and_not_before(clips):
    clip = clips("loiter_gate")
    entered = clip.enters("loiterer", GATE_ZONE)
    events, _, _ = live(clip, camera(), NOON)
    loiter = [e for e in events if e.kind == "loitering"]
    assert loiter and loiter[0].phase == "new"
    assert entered + LOITER_S <= loiter[0].t <= entered + LOITER_S + 1.5, (entered, loiter[0].t)
    assert len(by_event(loiter)) == 1
    assert_one_stream_per_event(events)
    assert {e.kind for e in events} == {"loitering"}  # daytime: the gate is not restricted


@pytest.mark.parametrize("name, fires", [("crowd_5", True), ("crowd_4", False)])
def test_a_crowd_fires_at_k_people_and_not_at_k_minus_1(clips, name, fires):
    events, _, _ = live(clips(name), camera(loitering={"enabled": False}), NOON)
    crowd = [e for e in events if e.kind == "crowd"]
    assert bool(crowd) == fires, [(e.phase, e.kind, e.t) for e in events]
    if fires:
        assert len(by_event(crowd)) == 1 and crowd[0].detail["people"] >= 5
        assert_one_stream_per_event(crowd)
    assert {e.kind for e in events} <= {"crowd"}


# --------------------------------------------------------------------------- running, scuffle


def test_a_runner_raises_one_running_alert_the_walker_before_none(clips):
    clip = clips("run")
    [running] = [e for e in clip.summary["events"] if e["kind"] == "running"]
    events, _, _ = live(clip, camera(), NOON)
    runs = [e for e in events if e.detail.get("rule") == "running"]
    assert len(by_event(runs)) == 1 and runs[0].kind == "suspicious" and runs[0].priority == 1
    assert running["start"] <= runs[0].t <= running["end"]
    assert_one_stream_per_event(events)
    assert {e.kind for e in events} == {"suspicious"}  # daytime; the walker (3-10 s) is no runner


def test_a_scuffle_raises_one_fight_alert(clips):
    clip = clips("scuffle")
    [fight] = [e for e in clip.summary["events"] if e["kind"] == "fight"]
    events, _, _ = live(clip, camera(), NOON)
    fights = [e for e in events if e.kind == "fight"]
    assert len(by_event(fights)) == 1, [(e.phase, e.kind, e.t) for e in events]
    assert fight["start"] <= fights[0].t <= fight["start"] + 3.0
    assert fights[0].detail["people"] == 2 and len(fights[0].boxes) == 2
    assert_one_stream_per_event(events)


def _fight_clip(folder: Path, kind: str, seed: int) -> Clip:
    from simulators.scene import Scene

    if kind == "scenario":  # two people scuffle 8 s, then one runs off
        scene = SCENARIOS["scuffle"](seed)
    else:  # a drill's fight incident: 10 s of scuffle in front of the gate
        scene = Scene(seed=seed)
        scene.add_incident("fight", 3.0, seconds=10.0, variant=seed)
        scene.length = 25.0
    return Clip(write_clip(scene, folder / f"fight-{kind}-{seed}.mp4"))


@pytest.mark.parametrize("kind, seed", [("scenario", 2), ("scenario", 5), ("scenario", 6), ("drill", 1), ("drill", 3), ("drill", 6)])
def test_a_scuffle_is_one_fight_alert_on_every_seed(tmp_path, kind, seed):
    """Seeds where the tracker loses one of the two behind the other (they were missed, late or split in two)."""
    clip = _fight_clip(tmp_path, kind, seed)
    [fight] = [e for e in clip.summary["events"] if e["kind"] == "fight"]
    events, _, _ = live(clip, camera(), NOON)
    fights = [e for e in events if e.kind == "fight"]
    assert len(by_event(fights)) == 1, [(e.phase, e.kind, round(e.t, 1)) for e in events]
    assert fight["start"] <= fights[0].t <= fight["start"] + 3.0, (fight, fights[0].t)
    assert fights[-1].phase == "end" and fights[-1].end_t >= fight["end"] - 3.0
    assert_one_stream_per_event(fights)


# --------------------------------------------------------------------------- no alarm from light and noise; tamper


def test_lights_switching_on_raise_nothing(clips):
    events, results, _ = live(clips("lights_on"), camera(), NIGHT)
    assert events == []
    assert not [tr for r in results for tr in r.tracks if tr.confirmed]


def test_slow_drift_flicker_noise_and_swaying_trees_raise_nothing(clips):
    events, _, _ = live(clips("drift_noise"), camera(), NIGHT)
    assert events == []


@pytest.mark.parametrize("name", ["cover", "knock", "blur"])
def test_a_covered_knocked_or_blurred_camera_raises_one_tamper_alert(clips, name):
    clip = clips(name)
    [tamper] = [e for e in clip.summary["events"] if e["kind"] == "camera_tamper"]
    events, _, _ = live(clip, camera(), NOON)
    t_events = [e for e in events if e.kind == "camera_tamper"]
    assert len(by_event(t_events)) == 1
    assert_one_stream_per_event(t_events)
    new = t_events[0]
    assert tamper["start"] + 3.0 <= new.t <= tamper["start"] + 3.0 + 1.5, (tamper, new.t)
    if tamper["end"] is not None:
        assert t_events[-1].end_t <= tamper["end"] + 3.0
    # nothing else is raised from a covered / turned / defocused view
    assert {e.kind for e in events} <= {"camera_tamper", "intrusion", "loitering"}
    assert all(e.t < tamper["start"] + 1.0 for e in events if e.kind != "camera_tamper")


# --------------------------------------------------------------------------- the detector's two windows


@pytest.mark.parametrize("name", ["walk_through_gate", "crowd_5"])
def test_the_small_hog_window_finds_the_people_the_trained_window_finds(clips, name):
    """The default detector runs OpenCV's people model on a 32x64 window (4 px cells) instead of
    the 64x128 it was trained on: the same descriptor layout, a quarter of the pixels per search.
    Searched around each person's box as a track would predict it (moved by up to 0.1 body heights,
    resized by up to 6 %, the same for both), it finds them as often as the trained window does."""
    clip = clips(name)
    small, trained = HogDetector(cell=4), HogDetector(cell=8)
    assert small.hog.winSize == (32, 64) and small.hog.cellSize == (4, 4) and small.hog.getDescriptorSize() == 3780
    rng = np.random.default_rng(7)
    found = {"small": 0, "trained": 0}
    n = 0
    cap = cv2.VideoCapture(str(clip.path))
    k = 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        if k % 3 == 0:
            for a in clip.truth[k]["actors"]:
                if a["kind"] != "person" or not a["fully_in_view"] or a.get("occluded", 0) > 0.2:
                    continue
                n += 1
                x1, y1, x2, y2 = a["box"]
                h = y2 - y1
                dx, dy = rng.uniform(-0.1, 0.1, 2) * h
                s = rng.uniform(0.94, 1.06)
                cx, cy = (x1 + x2) / 2 + dx, (y1 + y2) / 2 + dy
                guide = (int(cx - s * (x2 - x1) / 2), int(cy - s * h / 2), int(cx + s * (x2 - x1) / 2), int(cy + s * h / 2))
                for key, det in (("small", small), ("trained", trained)):
                    people = [d.box for d in det.detect_guided(image, [], [guide]) if d.label == "person"]
                    found[key] += any(iou(b, tuple(a["box"])) >= 0.3 for b in people)
        k += 1
    cap.release()
    assert n >= 50
    rates = {key: v / n for key, v in found.items()}
    print(f"{name}: {n} person-frames, found {rates}")
    # (the walk is hard for both: the walker comes in at the frame edge and walks away to 60 px)
    assert rates["small"] >= 0.8 and rates["small"] >= rates["trained"] - 0.03, rates


def test_cell_8_is_the_trained_hog_detector_as_it_was():
    """`HogDetector(cell=8)` keeps the detector the pipeline used before the small window: OpenCV's
    default people HOG, windows every 8 px, padding 8, tracked people searched 0.9 windows wider."""
    det, ref = HogDetector(cell=8), cv2.HOGDescriptor()
    for attr in ("winSize", "blockSize", "blockStride", "cellSize", "nbins", "derivAperture", "winSigma",
                 "histogramNormType", "L2HysThreshold", "gammaCorrection", "nlevels", "signedGradient"):
        assert getattr(det.hog, attr) == getattr(ref, attr), attr
    assert det.win_stride == (8, 8) and det.padding == (8, 8) and det.guide_width == 0.9 and det.k == 1.0
    assert HogDetector(cell=8, win_stride=8).win_stride == (8, 8)


def test_the_hog_detector_names_the_cell_sizes_it_has():
    with pytest.raises(ValueError, match="4 or 8"):
        HogDetector(cell=6)


# --------------------------------------------------------------------------- analyze: hit rate and equality with the live path


def hit_rates(clip: Clip, records: list[dict]) -> tuple[dict[str, float], float, int]:
    """Per scripted person: fraction of the analysed frames where they are fully in view in which a
    confirmed person track box overlaps their truth box with IoU >= 0.3; and the false-box rate."""
    seen: dict[str, int] = defaultdict(int)
    found: dict[str, int] = defaultdict(int)
    boxes = false = 0
    for rec in records:
        truth = clip.truth[rec["frame"]]
        tracks = [t["box"] for t in rec["tracks"] if t["confirmed"] and t["label"] == "person"]
        for a in truth["actors"]:
            if a["kind"] == "person" and a["fully_in_view"]:
                seen[a["id"]] += 1
                found[a["id"]] += any(iou(a["box"], b) >= 0.3 for b in tracks)
        boxes += len(tracks)
        false += sum(1 for b in tracks if not any(iou(a["box"], b) >= 0.3 for a in truth["actors"]))
    return {k: found[k] / seen[k] for k in seen}, false / max(1, boxes), boxes


def _key(e: AlertEvent | dict):
    if isinstance(e, dict):
        return (e["phase"], e["kind"], e["t"], tuple(e["zones"]), e["score"], tuple(e["box"]) if e["box"] else None)
    return (e.phase, e.kind, round(e.t, 4), e.zones, e.score, e.box)


@pytest.mark.parametrize("name, minute", [("walk_through_gate", NIGHT), ("crowd_5", NIGHT), ("loiter_gate", NOON)])
def test_analyze_finds_every_person_and_its_alerts_equal_the_live_path(clips, name, minute):
    clip = clips(name)
    out = io.StringIO()
    events = analyze(clip.path, camera(), out, clock_minutes=lambda t: minute)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    frames = [r for r in lines if r["type"] == "frame"]
    alerts = [r for r in lines if r["type"] == "alert"]
    assert frames and all({"frame", "t", "detections", "tracks", "motion"} <= set(r) for r in frames)
    assert len(frames) == pytest.approx(len(clip.truth) / 3, abs=2)  # 15 fps file, analysed at 5 fps

    rates, false_rate, n_boxes = hit_rates(clip, frames)
    print(f"{name}: per-person hit rate {rates}, false boxes {false_rate:.3f} of {n_boxes}")
    assert rates and all(r >= 0.9 for r in rates.values()), rates
    assert false_rate < 0.1

    live_events, live_results, _ = live(clip, camera(), minute)
    offline, online = [_key(e) for e in events], [_key(e) for e in live_events]
    if offline != online:
        # seen once in a full run (2026-11-30), never reproduced: say where the two paths part
        i = next((k for k, (a, b) in enumerate(zip(offline, online)) if a != b), min(len(offline), len(online)))
        analysed = [json.dumps({"t": r["t"], "tracks": [t["box"] for t in r["tracks"]]}) for r in frames]
        live_analysed = [json.dumps({"t": round(r.t, 4), "tracks": [list(t.box) for t in r.tracks]}) for r in live_results]
        j = next((k for k, (a, b) in enumerate(zip(analysed, live_analysed)) if a != b), None)
        pytest.fail(f"analyze and the live path part at alert {i}: {offline[max(0, i - 2):i + 3]} against {online[max(0, i - 2):i + 3]}; "
                    f"{len(frames)} against {len(live_results)} analysed frames, first differing frame "
                    f"{j if j is None else (analysed[j], live_analysed[j])}")
    assert [_key(a) for a in alerts] == online
    assert events, "every one of these clips has an incident"


# --------------------------------------------------------------------------- runtime controls, offline helper


def test_switching_detection_off_ends_the_open_event_and_skips_frames(clips):
    clip = clips("walk_through_gate")
    entered = clip.enters("walker", GATE_ZONE)
    pipe = Pipeline(camera(), clock_minutes=lambda t: NIGHT)
    cap = cv2.VideoCapture(str(clip.path))
    events, skipped_after_off, n = [], 0, 0
    off_at = entered + 2.0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        t = n / clip.fps
        if t >= off_at:
            pipe.set_enabled(False)
        r = pipe.process(Frame(image, t, n))
        events += r.events
        if t >= off_at:
            skipped_after_off += r.skipped
        n += 1
    assert [e.phase for e in events] == ["new", "end"] and events[1].t == pytest.approx(off_at, abs=0.1)
    assert skipped_after_off == sum(1 for k in range(n) if k / clip.fps >= off_at)
    pipe.set_sensitivity(0.9)
    assert pipe.motion.sensitivity == 0.9


def test_check_offline_raises_camera_offline_and_ends_it_when_frames_return():
    pipe = Pipeline(camera(offline={"seconds": 10}))
    assert pipe.check_offline(105.0, 100.0) == []
    [new] = pipe.check_offline(110.5, 100.0)
    assert new.phase == "new" and new.kind == "camera_offline" and new.priority == 3
    assert pipe.check_offline(115.0, 100.0) == []  # still offline: no repeat
    [end] = pipe.check_offline(116.0, 115.9)
    assert end.phase == "end" and end.event_id == new.event_id
