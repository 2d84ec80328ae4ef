"""Rules on tracks and zones: which detection events hold in this frame (pure: no OpenCV, no clock).

    engine = RuleEngine(camera, fps=5)
    conds = engine.step(t, minute_of_day, tracks, tamper)     # -> [Condition]

A `Condition` is "this event is going on now": its `key` names the event's
subject (a track, the camera), so the alert lifecycle (adapters.camera.lifecycle)
turns the per-frame conditions into one new / update / end stream per event.

Each rule is a small state machine driven by frame time `t` (seconds) and,
for zone schedules, the local minute of the day; only confirmed tracks count.

| rule | subject | condition | kind |
| --- | --- | --- | --- |
| intrusion | a person track | its bottom-centre is in a watched zone (after inertia) whose schedule is on | intrusion |
| loitering | a person track | it has been in a watched zone (or in view) for >= `seconds` | loitering |
| crowd | the camera | >= `min_people` persons (in the zones, if any, found in the last 2 frames) for 2 frames | crowd |
| running | a person track | speed > `speed` body heights/s for 4 frames (>= `min_people` running) | suspicious |
| scuffle | the camera | 2+ persons close together (centres < 0.8 body height apart), quick on their paths (>= 0.4 body heights/s on average) but going nowhere (paths >= 2x net displacement, and each one's net at most 0.85 of its path), in 60% of the frames of 1.6 s; lulls up to 3 s bridged; a new track takes over the path of one that just ended where it begins | fight |
| tamper | the camera | covered, blurred or turned away for `seconds` | camera_tamper |
| offline | the camera | no frame for `seconds` (the runtime asks, see `offline_condition`) | camera_offline |

The debounced on/off rules share one transition table (`Debounce`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.camera.types import Box, Detection, Track
from dispatch.district import Camera, OfflineRule, Zone, schedule_active

__all__ = [
    "Condition",
    "Debounce",
    "RuleEngine",
    "TamperSignals",
    "offline_condition",
    "tamper_reason",
]


@dataclass(frozen=True)
class TamperSignals:
    """Per-frame measurements the tamper rule reads (adapters.camera.motion computes them)."""

    brightness: float  # mean grey, 0..255
    contrast: float  # grey standard deviation
    sharpness: float  # variance of the Laplacian (160-wide frame)
    similarity: float  # NCC with the long-term reference view, -1..1 (1 = same scene)
    contrast_ref: float  # learned normal contrast
    sharpness_ref: float  # learned normal sharpness
    learning: bool = False  # reference still being learned (first frames): no verdict


@dataclass(frozen=True)
class Condition:
    """One detection event holding in this frame."""

    key: tuple[Any, ...]  # the event's subject: ("intrusion", track_id), ("crowd",), ...
    kind: str  # IncidentKind value
    priority: int
    zones: tuple[str, ...] = ()
    label: str | None = None
    score: float | None = None
    box: Box | None = None
    boxes: tuple[Detection, ...] = ()
    quality: tuple[int, float] = (0, 0.0)  # (fully in frame, box area x score): the lifecycle keeps the best view
    detail: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # a person's condition: when its track was first seen, and whether the detector found it in this frame
    # (the lifecycle does not let a track continue the event of one it was seen beside: two people)
    since: float | None = None
    found: bool = True
    # a person's condition: its track id. An event whose track the detector found in this frame (the person
    # is still followed, just out of the zone) is not continued by somebody else (see Lifecycle.step's `present`)
    track: int | None = None


CROWD_MAX_MISSES = 2  # analysed frames a crowd member may go unseen (hidden by the others) and still count
RUNNING_FRAMES_AFTER_FIRST = 3  # a runner is fast on 1 + this many consecutive analysed frames
FIGHT_PATH_SPEED = 0.4
"""Body heights per second along the path (not net), averaged over a pair, above which their
back-and-forth motion is a scuffle (or half the running speed, if lower); measured on rendered
scuffles (0.4-0.7 as tracked at 5 fps) against standing people (< 0.2)."""
FIGHT_NEAR = 0.8  # body heights between the two
FIGHT_VOTES = 0.6  # share of the frames of the window the pair passed the test
FIGHT_EACH = 0.85
"""Each of the two goes nowhere: its net displacement is at most this share of its own path. A
passer-by walks straight (net ~ path); with only the pair's sums, one erratic track (a track handed
between people in a crowd) made a scuffle of whoever walked past it: rendered busy clips, 6 false
fights in 30 minutes before, 2 after; one of 39 rendered scuffles then raised its fight as two alerts.
Somebody standing still (no path at all) next to an erratic track still passes (see docs)."""

# --------------------------------------------------------------------------- a debounced on/off machine

OFF, PENDING, ON, RELEASING = "off", "pending", "on", "releasing"

# (state, condition now true?) -> next state; timed guards below promote PENDING -> ON and RELEASING -> OFF
TRANSITIONS: dict[tuple[str, bool], str] = {
    (OFF, False): OFF,
    (OFF, True): PENDING,
    (PENDING, False): OFF,
    (PENDING, True): PENDING,
    (ON, True): ON,
    (ON, False): RELEASING,
    (RELEASING, True): ON,
    (RELEASING, False): RELEASING,
}


class Debounce:
    """On after the input held `on_after` seconds; off after it failed `off_after` seconds."""

    def __init__(self, on_after: float, off_after: float = 0.0):
        self.on_after = on_after
        self.off_after = off_after
        self.state = OFF
        self.since = 0.0  # when the current state began

    def step(self, t: float, value: bool) -> bool:
        nxt = TRANSITIONS[(self.state, bool(value))]
        if nxt != self.state:
            self.state, self.since = nxt, t
        if self.state == PENDING and t - self.since >= self.on_after - 1e-6:
            self.state, self.since = ON, t
        if self.state == RELEASING and t - self.since >= self.off_after - 1e-6:
            self.state, self.since = OFF, t
        return self.state in (ON, RELEASING)


# --------------------------------------------------------------------------- tamper verdicts


def tamper_reason(s: TamperSignals) -> str | None:
    """covered | blurred | turned_away | None, from one frame's signals against the learned normal."""
    if s.learning:
        return None
    if s.brightness < 12.0 or s.contrast < max(3.0, 0.3 * s.contrast_ref):
        return "covered"  # dark, or flat and uniform
    if s.sharpness_ref > 1.0 and s.sharpness < 0.2 * s.sharpness_ref and s.similarity > 0.3:
        return "blurred"  # same scene, edges gone
    if s.similarity < 0.35:
        return "turned_away"
    return None


def offline_condition(now: float, last_frame_t: float | None, rule: OfflineRule, *, started_t: float | None = None) -> bool:
    """Has the camera been without frames for `rule.seconds`? (The runtime calls it; the pipeline sees no frames.)

    `last_frame_t` None means no frame yet: offline once `started_t` (when the source opened) is that old.
    """
    if not rule.enabled:
        return False
    since = last_frame_t if last_frame_t is not None else started_t
    return since is not None and now - since >= rule.seconds


# --------------------------------------------------------------------------- the engine


def _bottom(b: Box) -> tuple[float, float]:
    return (b[0] + b[2]) / 2.0, float(b[3])


def _union(boxes: Iterable[Box]) -> Box | None:
    bs = list(boxes)
    if not bs:
        return None
    return (min(b[0] for b in bs), min(b[1] for b in bs), max(b[2] for b in bs), max(b[3] for b in bs))


class RuleEngine:
    """Every rule of one camera; feed it every analysed frame in time order."""

    def __init__(self, camera: Camera, fps: float | None = None, frame_size: tuple[int, int] | None = None):
        self.camera = camera
        self.rules = camera.rules
        self.fps = float(fps or camera.detect.fps)
        self.frame_size = frame_size or (camera.detect.width, camera.detect.height)
        self.period = 1.0 / self.fps
        self.zones: dict[str, Zone] = {z.name: z for z in camera.zones}
        # per-track state
        self._first_seen: dict[int, float] = {}
        self._zone_since: dict[tuple[int, str], float] = {}
        self._running: dict[int, Debounce] = {}
        self._paths: dict[int, deque] = {}
        self._vanished: deque = deque(maxlen=16)  # paths of tracks that ended lately
        # per-camera state
        self._crowd = Debounce(on_after=self.period * 1.0)
        self._fight_votes: deque = deque(maxlen=max(3, int(round(1.6 * self.fps))))  # ~1.6 s of frames
        self._fight = Debounce(on_after=0.0, off_after=3.0)
        self._fight_group: list[Track] = []
        self._tamper = Debounce(on_after=self.rules.tamper.seconds, off_after=1.0)
        self._tamper_reason: str | None = None

    # -- helpers

    def _quality(self, box: Box, score: float) -> tuple[int, float]:
        W, H = self.frame_size
        m = 2
        full = int(box[0] > m and box[1] > m and box[2] < W - m and box[3] < H - m)
        return full, float((box[2] - box[0]) * (box[3] - box[1])) * float(score)

    def watched_intrusion_zones(self, minute_of_day: int) -> set[str]:
        """Zones where entering is intrusion right now (restricted, or listed by the rule, and in schedule)."""
        rule = self.rules.intrusion
        names = list(rule.zones) if rule.zones else [z.name for z in self.camera.zones if z.restricted]
        return {n for n in names if n in self.zones and schedule_active(self.zones[n].schedule, minute_of_day)}

    # -- the frame step

    def step(self, t: float, minute_of_day: int, tracks: Sequence[Track], tamper: TamperSignals | None = None) -> list[Condition]:
        people = [tr for tr in tracks if tr.confirmed and tr.label == "person"]
        live = {tr.id for tr in tracks}
        for tr in tracks:
            self._first_seen.setdefault(tr.id, t)
        self._forget(live)
        out: list[Condition] = []
        out += self._intrusion(t, minute_of_day, people)
        out += self._loitering(t, people)
        out += self._crowd_rule(t, people)
        out += self._running_rule(t, people)
        # a scuffle: people the detector is sure of count even before they have travelled (scufflers
        # going nowhere may never pass the tracker's travel test)
        sure = [tr for tr in tracks if tr.label == "person" and (tr.confirmed or tr.score >= self.camera.objects.threshold)]
        out += self._fight_rule(t, sure)
        out += self._tamper_rule(t, tamper)
        return out

    def _forget(self, live: set[int]) -> None:
        for tid in [k for k in self._first_seen if k not in live]:
            del self._first_seen[tid]
            self._running.pop(tid, None)
            path = self._paths.pop(tid, None)
            if path:
                self._vanished.append(path)  # a new track where it ended may take it over (see _fight_rule)
        for k in [k for k in self._zone_since if k[0] not in live]:
            del self._zone_since[k]

    def _person(self, tr: Track) -> Detection:
        return Detection(tr.label, tr.score, tr.box)

    def _intrusion(self, t: float, minute: int, people: Sequence[Track]) -> list[Condition]:
        rule = self.rules.intrusion
        if not rule.enabled:
            return []
        watched = self.watched_intrusion_zones(minute)
        out = []
        for tr in people:
            zones = tuple(z for z in tr.zones if z in watched)
            if zones:
                out.append(
                    Condition(
                        key=("intrusion", tr.id), kind="intrusion", priority=rule.priority, zones=zones, label=tr.label,
                        score=tr.score, box=tr.box, boxes=(self._person(tr),), quality=self._quality(tr.box, tr.score),
                        detail={"track": tr.id}, since=self._first_seen.get(tr.id), found=tr.misses == 0, track=tr.id,
                    )
                )
        return out

    def _loitering(self, t: float, people: Sequence[Track]) -> list[Condition]:
        rule = self.rules.loitering
        if not rule.enabled:
            return []
        out = []
        for tr in people:
            if rule.zones:
                current = {z for z in tr.zones if z in rule.zones}
                for z in current:
                    self._zone_since.setdefault((tr.id, z), t)
                for key in [k for k in self._zone_since if k[0] == tr.id and k[1] != "*" and k[1] not in current]:
                    del self._zone_since[key]
                long = [z for z in tr.zones if z in current and t - self._zone_since[(tr.id, z)] >= rule.seconds - 1e-6]
                since = min((self._zone_since[(tr.id, z)] for z in long), default=None)
            else:
                since = self._first_seen.get(tr.id, t)
                long = list(tr.zones) if t - since >= rule.seconds - 1e-6 else []
                if t - since < rule.seconds - 1e-6:
                    since = None
            if since is None:
                continue
            out.append(
                Condition(
                    key=("loitering", tr.id), kind="loitering", priority=rule.priority, zones=tuple(long), label=tr.label,
                    score=tr.score, box=tr.box, boxes=(self._person(tr),), quality=self._quality(tr.box, tr.score),
                    detail={"track": tr.id, "since": round(since, 3), "seconds": round(t - since, 3)},
                    since=self._first_seen.get(tr.id), found=tr.misses == 0,
                )
            )
        return out

    def _crowd_rule(self, t: float, people: Sequence[Track]) -> list[Condition]:
        rule = self.rules.crowd
        if not rule.enabled:
            return []
        # a person the detector has not found for a while may be one who left (a track coasting where
        # they were, while they walk off under a new id): not counted
        members = [tr for tr in people if tr.misses <= CROWD_MAX_MISSES and (not rule.zones or any(z in rule.zones for z in tr.zones))]
        if not self._crowd.step(t, len(members) >= rule.min_people) or len(members) < rule.min_people:
            return []
        # the best view of a crowd is the most people, then the surest
        return [self._group("crowd", rule.priority, members, lambda box, score: float(len(members)) * 1e6 + score,
                            {"people": len(members)})]

    def _running_rule(self, t: float, people: Sequence[Track]) -> list[Condition]:
        rule = self.rules.running
        if not rule.enabled:
            return []
        runners = []
        for tr in people:
            # 4 analysed frames (0.6 s at 5 fps): a track that jumps onto a detection a little off its walk
            # has a high speed for as long as its 0.6 s speed window spans the jump (3 frames), a runner
            # for seconds (the quiet-night drill raised a false running alert that way, about 1 run in 10)
            db = self._running.setdefault(tr.id, Debounce(on_after=self.period * RUNNING_FRAMES_AFTER_FIRST, off_after=0.0))
            if db.step(t, tr.speed > rule.speed):
                runners.append(tr)
        if len(runners) < rule.min_people:
            return []
        return [
            Condition(
                key=("running", tr.id), kind="suspicious", priority=rule.priority, zones=tr.zones, label=tr.label,
                score=tr.score, box=tr.box, boxes=(self._person(tr),), quality=self._quality(tr.box, tr.score),
                detail={"rule": "running", "track": tr.id, "speed": round(tr.speed, 3), "runners": len(runners)},
                since=self._first_seen.get(tr.id), found=tr.misses == 0,
            )
            for tr in runners
        ]

    def _fight_rule(self, t: float, people: Sequence[Track]) -> list[Condition]:
        rule = self.rules.running
        # short paths per person: (t, cx, cy, h)
        for tr in people:
            cx, cy = (tr.box[0] + tr.box[2]) / 2.0, (tr.box[1] + tr.box[3]) / 2.0
            h = max(1, tr.box[3] - tr.box[1])
            if tr.id not in self._paths:
                self._paths[tr.id] = self._take_over(t, cx, cy, h) or deque(maxlen=int(self.fps * 1.5) + 1)
            self._paths[tr.id].append((t, cx, cy, h))
        if not rule.enabled:
            return []
        # per person over the last ~1.5 s: speed along the path, net speed, turns back
        moves: dict[int, tuple[Track, float, float, int]] = {}
        for tr in people:
            p = list(self._paths.get(tr.id, ()))
            if len(p) < 4:
                continue
            dt = p[-1][0] - p[0][0]
            if dt <= 0:
                continue
            h = sorted(q[3] for q in p)[len(p) // 2]
            path = sum(math.hypot(p[i][1] - p[i - 1][1], p[i][2] - p[i - 1][2]) for i in range(1, len(p))) / h / dt
            net = math.hypot(p[-1][1] - p[0][1], p[-1][2] - p[0][2]) / h / dt
            turns = 0
            for i in range(2, len(p)):
                ax, ay = p[i - 1][1] - p[i - 2][1], p[i - 1][2] - p[i - 2][2]
                bx, by = p[i][1] - p[i - 1][1], p[i][2] - p[i - 1][2]
                if ax * bx + ay * by < 0:
                    turns += 1
            moves[tr.id] = (tr, path, net, turns)
        # a scuffle: two people close together, quick on their paths but going nowhere, each of them
        # (walking together: path = net; standing together: no path; passing by: one path = net)
        threshold = min(FIGHT_PATH_SPEED, 0.5 * rule.speed)
        members: dict[int, Track] = {}
        ids = sorted(moves)
        for i in ids:
            a, pa, na, _ = moves[i]
            for j in ids:
                if j <= i:
                    continue
                b, pb, nb, _ = moves[j]
                ha, hb = a.box[3] - a.box[1], b.box[3] - b.box[1]
                d = math.hypot((a.box[0] + a.box[2] - b.box[0] - b.box[2]) / 2.0, (a.box[3] - b.box[3]))
                if (d < FIGHT_NEAR * max(ha, hb) and (pa + pb) / 2 >= threshold and pa + pb >= 2.0 * (na + nb)
                        and na <= FIGHT_EACH * pa and nb <= FIGHT_EACH * pb):
                    members[i], members[j] = a, b
        group = [members[k] for k in sorted(members)]
        # on when the pair met the test in 60% of the last ~1.6 s (a tracked scuffle hovers around
        # the thresholds; passers-by meet it for a moment only)
        self._fight_votes.append(len(group) >= 2)
        votes = self._fight_votes
        held = len(votes) == votes.maxlen and sum(votes) >= FIGHT_VOTES * votes.maxlen and votes[-1]
        on = self._fight.step(t, held)
        if len(group) >= 2:
            self._fight_group = group
        elif on:
            # releasing: the same people, where they are now (a scuffle has lulls)
            live = {tr.id: tr for tr in people}
            group = [live[tr.id] for tr in self._fight_group if tr.id in live]
        if not on or len(group) < 2:
            return []
        # the best view of a scuffle is the largest, surest picture of the group
        return [self._group("fight", rule.priority, group, lambda box, score: float((box[2] - box[0]) * (box[3] - box[1])) * score,
                            {"rule": "scuffle", "people": len(group), "tracks": [tr.id for tr in group]})]

    def _group(self, kind: str, priority: int, members: Sequence[Track], rank: Callable[[Box, float], float],
               detail: dict[str, Any]) -> Condition:
        """One condition for a group of people (a crowd, a scuffle): their union box, mean score and zones;
        its snapshot quality is the worst member's view, then `rank(box, score)`."""
        box = _union(tr.box for tr in members)
        assert box is not None
        score = sum(tr.score for tr in members) / len(members)
        zones = tuple(dict.fromkeys(z for tr in members for z in tr.zones))
        return Condition(
            key=(kind,), kind=kind, priority=priority, zones=zones, label="person", score=round(score, 4),
            box=box, boxes=tuple(self._person(tr) for tr in members),
            quality=(min(self._quality(tr.box, 1.0)[0] for tr in members), rank(box, score)),
            detail=detail,
        )

    def _take_over(self, t: float, cx: float, cy: float, h: float) -> deque | None:
        """The path of a track that ended in the last 1.5 s within 0.8 body heights of where a new one
        begins: the tracker lost a person (two scufflers hide each other all the time) and found them
        again under a new id; their path goes on, so the scuffle test does not start from nothing."""
        best = None
        for path in self._vanished:
            lt, lx, ly, lh = path[-1]
            d = math.hypot(cx - lx, cy - ly) / max(h, lh)
            if t - lt <= 1.5 and d < 0.8 and (best is None or d < best[0]):
                best = (d, path)
        if best is None:
            return None
        self._vanished.remove(best[1])
        return best[1]

    def _tamper_rule(self, t: float, tamper: TamperSignals | None) -> list[Condition]:
        rule = self.rules.tamper
        if not rule.enabled or tamper is None:
            return []
        reason = tamper_reason(tamper)
        if reason is not None:
            self._tamper_reason = reason
        if not self._tamper.step(t, reason is not None):
            return []
        return [
            Condition(
                key=("camera_tamper",), kind="camera_tamper", priority=rule.priority,
                score=1.0, detail={"reason": self._tamper_reason, "since": round(self._tamper.since, 3)},
            )
        ]

    def offline(self, now: float, last_frame_t: float | None, started_t: float | None = None) -> list[Condition]:
        """camera_offline while no frame came for `rules.offline.seconds` (for the runtime's watchdog)."""
        rule = self.rules.offline
        if not offline_condition(now, last_frame_t, rule, started_t=started_t):
            return []
        return [
            Condition(
                key=("camera_offline",), kind="camera_offline", priority=rule.priority, score=1.0,
                detail={"last_frame_t": last_frame_t},
            )
        ]
