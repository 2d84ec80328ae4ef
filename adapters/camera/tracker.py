"""Keep object identities across frames; confirm objects by their median score; zones with inertia.

    tr = Tracker(camera.objects, camera.zones, (640, 360))
    tracks = tr.update(detections, t)          # every live track, confirmed or not

* Matching: greedy on a cost mixing IoU with the centre distance in body
  heights, against each track's box predicted from its velocity (a runner at
  5 fps moves more than its own width between frames, so IoU alone loses it).
  A track that misses frames coasts on its last box for up to `max_age`
  seconds (short occlusions, a missed detection) and then ends.
* Confirmation (Frigate's rule): the median of the last `objects.confirm_frames`
  scores must reach `objects.threshold`, with at least that many scores seen,
  and the object must have travelled (a person 0.25 of its height, a vehicle
  0.6 of its width: swaying trees and static look-alikes never do); once
  confirmed a track stays confirmed. Detections below `objects.min_score`
  are ignored.
* Speed: displacement of the box centre over about 0.6 s, in body heights per
  second, smoothed (EMA); cancels the box jitter of the detector.
* Zones: the bottom-centre of the box, relative to the frame; a zone is entered
  after `zone.inertia` consecutive frames inside and left after as many outside.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from adapters.camera.detectors import iou
from adapters.camera.types import Box, Detection, Track
from dispatch.district import Objects, Zone

__all__ = ["Tracker", "look_distance"]

LOOK_SETTLED = 3  # clear hits before a track's look is trusted
LOOK_WEIGHT = 2.0  # matching cost per unit of look distance
# What a track whose look has not settled pays for a detection's look: about the 90th percentile of the
# look distance between a settled track and its own person's detection (0.14; median 0.055, measured on
# busy and gate clips). Paying nothing, a young track beat a settled neighbour that looked as usual
# for a box between the two, and the tracks swapped (in1 / p11 in docs/camera-adapter.md).
LOOK_NEUTRAL = 0.15
# A settled track's detection this far (body heights) from where its velocity put it has most likely
# been taken by somebody else (two people crossing, HOG finding only one): speed is not measured
# across such a jump, or the jump itself reads as a sprint (a false `running` alert).
JUMP_BH = 0.6


def look_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Largest difference of two appearance vectors in any channel (0..1)."""
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


def _label(s: "_State") -> str:
    """The label a track was given most often ("person", "vehicle")."""
    return s.labels.most_common(1)[0][0]


def _settled(s: "_State") -> bool:
    """Confirmed, seen in the last frame, with a history, not turning back and forth: a track whose
    velocity can be trusted for a frame or two without the detector."""
    return s.confirmed and s.misses == 0 and s.hits >= 4 and not _erratic(s.history)


def _steer(s: "_State", cx: float, cy: float, dt: float) -> None:
    """Fold the move of the box centre from `s.box` to (cx, cy) over dt seconds into the velocity (EMA)."""
    if dt > 0:
        a = 0.5
        s.vx = (1 - a) * s.vx + a * (cx - (s.box[0] + s.box[2]) / 2) / dt
        s.vy = (1 - a) * s.vy + a * (cy - (s.box[1] + s.box[3]) / 2) / dt


def _erratic(history: Sequence[tuple[float, float, float, float]]) -> bool:
    """Did the last few matched positions turn back (a scuffle, a person dodging)? Those are not left to coast."""
    h = list(history)[-4:]
    for i in range(2, len(h)):
        ax, ay = h[i - 1][1] - h[i - 2][1], h[i - 1][2] - h[i - 2][2]
        bx, by = h[i][1] - h[i - 1][1], h[i][2] - h[i - 1][2]
        if ax * bx + ay * by < 0 and math.hypot(bx, by) > 0.05 * h[i][3]:
            return True
    return False


def _inside_frac(b: Sequence[float], W: int, H: int) -> float:
    """Fraction of the box inside the frame (a coasting track that left the frame ends)."""
    area = max(1e-6, (b[2] - b[0]) * (b[3] - b[1]))
    ix = min(b[2], W) - max(b[0], 0)
    iy = min(b[3], H) - max(b[1], 0)
    return 0.0 if ix <= 0 or iy <= 0 else ix * iy / area


@dataclass
class _State:
    id: int
    box: list[float]
    first_t: float
    last_t: float
    scores: deque
    labels: Counter = field(default_factory=Counter)
    vx: float = 0.0  # px / s of the centre
    vy: float = 0.0
    hits: int = 1
    misses: int = 0
    confirmed: bool = False
    speed: float = 0.0
    history: deque = field(default_factory=lambda: deque(maxlen=30))  # (t, cx, cy, h) of matched frames
    inside: dict[str, int] = field(default_factory=dict)  # zone -> consecutive frames inside
    outside: dict[str, int] = field(default_factory=dict)
    zones: list[str] = field(default_factory=list)  # current membership, in entering order
    best_score: float = 0.0
    box_t: float = 0.0  # when `box` was last moved (a hit, or coasting)
    rested: int = 0  # frames in a row the detector skipped it (see `resting`)
    look: tuple[float, ...] | None = None  # appearance (see `Tracker.update`'s looks), smoothed over clear hits
    looks: int = 0  # clear hits that went into `look`
    speed_from: float = float("-inf")  # speed is measured over matched points from this time on (see JUMP_BH)


class Tracker:
    """IoU + centre-distance tracker with score-median confirmation and zone inertia."""

    def __init__(
        self,
        objects: Objects,
        zones: Sequence[Zone],
        size: tuple[int, int],
        *,
        max_age: float = 1.5,
        speed_window: float = 0.6,
        max_dist: float = 1.0,
    ):
        self.objects = objects
        self.zones = tuple(zones)
        self.size = (int(size[0]), int(size[1]))
        self.max_age = max_age
        self.speed_window = speed_window
        self.max_dist = max_dist
        self.size_at: Callable[[float], float | None] | None = None  # person height at a feet row (perspective)
        self._tracks: list[_State] = []
        self._next_id = 1
        self._last_t: float | None = None

    def reset(self) -> None:
        self._tracks = []
        self._last_t = None

    @property
    def active(self) -> list[Track]:
        return [self._public(s) for s in self._tracks]

    def predicted_boxes(self, t: float, label: str | None = None) -> list[Box]:
        """Where the live tracks (of `label`) should be at `t`: the pipeline looks there even without motion."""
        W, H = self.size
        out = []
        for s in self._tracks:
            if label is not None and _label(s) != label:
                continue
            b = self._predict(s, t)
            out.append((max(0, int(b[0])), max(0, int(b[1])), min(W, int(math.ceil(b[2]))), min(H, int(math.ceil(b[3])))))
        return out

    def predicted(self, t: float, label: str | None = None) -> list[tuple[int, Box]]:
        """(track id, predicted box) of the live tracks (of `label`)."""
        ids = [s.id for s in self._tracks if label is None or _label(s) == label]
        return list(zip(ids, self.predicted_boxes(t, label)))

    def _predict(self, s: _State, t: float) -> list[float]:
        dt = min(max(0.0, t - s.box_t), 0.6)
        b = [s.box[0] + s.vx * dt, s.box[1] + s.vy * dt, s.box[2] + s.vx * dt, s.box[3] + s.vy * dt]
        if self.size_at is not None and dt > 0 and s.vy != 0.0:
            # walking towards or away from the camera: the size the perspective says, about the feet
            h0, h1 = self.size_at(s.box[3]), self.size_at(b[3])
            if h0 and h1 and h0 > 1.0 and h1 > 1.0:
                k = min(1.2, max(0.83, h1 / h0))
                cx, w, h = (b[0] + b[2]) / 2, (b[2] - b[0]) * k, (b[3] - b[1]) * k
                b = [cx - w / 2, b[3] - h, cx + w / 2, b[3]]
        return b

    def resting(self, tick: int) -> set[int]:
        """Tracks the detector may skip this frame: confirmed, steady (seen in the last frame, with
        a history), on alternate frames. They coast on their velocity without counting a miss."""
        return {s.id for s in self._tracks if s.rested == 0 and (tick + s.id) % 2 == 0 and _settled(s)}

    def steady(self, max_rested: int) -> set[int]:
        """Confirmed people seen in the last frame, with a history, not erratic, that the detector has
        skipped fewer than `max_rested` frames in a row: the ones the pipeline may follow by their motion
        blob instead (see `update`'s `carried`)."""
        return {
            s.id for s in self._tracks
            if s.rested < max_rested and _label(s) == "person" and _settled(s)
        }

    def update(
        self,
        detections: Sequence[Detection],
        t: float,
        rest: set[int] | frozenset[int] = frozenset(),
        looks: Sequence[tuple[float, ...] | None] | None = None,
        carried: dict[int, Box] | None = None,
    ) -> list[Track]:
        """Match this frame's detections; tracks in `rest` were not looked for (see `resting`).

        `carried` (optional): track id -> where its motion blob says the person is now, for tracks in
        `rest` (the pipeline followed them by their blob instead of the detector). Such a track moves
        there (and its velocity follows) instead of coasting; it counts as neither a hit nor a miss.

        `looks` (optional, one per detection): an appearance vector each (the pipeline gives the mean
        colours of the upper and the lower body, 0..1). Where people cross, the detector often finds only
        one of the two; position alone then hands that detection to whichever track is nearer (the one
        it is not: the other coasts and falls behind), and the two swap identities. With looks, the cost
        of a pair grows with how different they look once a track's appearance has settled, so the
        detection goes to the track that looks like it and the other track coasts. Not a hard gate: the
        colours in a box change when it is cut by the frame edge, a car or another person. A track whose
        look is not known yet pays LOOK_NEUTRAL: no advantage over a settled track that looks as usual."""
        keep = [i for i, d in enumerate(detections) if d.score >= self.objects.min_score]
        dets = [detections[i] for i in keep]
        dlooks = [looks[i] for i in keep] if looks is not None else [None] * len(dets)
        preds = [self._predict(s, t) for s in self._tracks]
        pairs: list[tuple[float, int, int]] = []
        for i, (s, p) in enumerate(zip(self._tracks, preds)):
            ph = max(1.0, p[3] - p[1])
            pcx, pcy = (p[0] + p[2]) / 2, (p[1] + p[3]) / 2
            for j, d in enumerate(dets):
                b = d.box
                bh = max(1.0, b[3] - b[1])
                ratio = bh / ph
                if ratio < 0.5 or ratio > 2.0:
                    continue
                ov = iou(p, b)
                dist = math.hypot((b[0] + b[2]) / 2 - pcx, (b[1] + b[3]) / 2 - pcy) / max(ph, bh)
                if ov < 0.1 and dist > self.max_dist:
                    continue
                label_penalty = 0.0 if _label(s) == d.label else 0.5
                unlike = 0.0
                lk = dlooks[j]
                if s.look is not None and lk is not None and s.looks >= LOOK_SETTLED:
                    unlike = look_distance(s.look, lk)
                elif lk is not None:
                    unlike = LOOK_NEUTRAL
                pairs.append(((1.0 - ov) + 0.5 * dist + label_penalty + LOOK_WEIGHT * unlike, i, j))
        pairs.sort()
        used_t: set[int] = set()
        used_d: set[int] = set()
        for _, i, j in pairs:
            if i in used_t or j in used_d:
                continue
            used_t.add(i)
            used_d.add(j)
            self._hit(self._tracks[i], dets[j], t)
            self._learn_look(self._tracks[i], dets, dlooks, j)
        for i, s in enumerate(self._tracks):
            if i not in used_t and carried and s.id in carried and s.id in rest:
                b = [float(v) for v in carried[s.id]]
                _steer(s, (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, t - s.box_t)
                s.box = b
                s.box_t = t
                s.last_t = t
                s.rested += 1
                self._zones(s)
            elif i not in used_t and s.id in rest:
                s.box = self._predict(s, t)
                s.box_t = t
                s.last_t = t  # not a miss: nobody looked
                s.rested += 1
                s.vx *= 0.85  # people slow down and stop: do not overshoot
                s.vy *= 0.85
                self._zones(s)
            elif i not in used_t:
                s.misses += 1
                # coast along the last velocity, slowing down, for at most max_age
                s.box = self._predict(s, t)
                s.box_t = t
                s.vx *= 0.7
                s.vy *= 0.7
                self._zones(s)
        W, H = self.size
        self._tracks = [
            s for i, s in enumerate(self._tracks)
            if i in used_t or (t - s.last_t <= self.max_age and _inside_frac(s.box, W, H) >= 0.5)
        ]
        for j, d in enumerate(dets):
            if j in used_d:
                continue
            s = _State(
                id=self._next_id,
                box=[float(v) for v in d.box],
                first_t=t,
                last_t=t,
                scores=deque([d.score], maxlen=self.objects.confirm_frames),
                best_score=d.score,
                box_t=t,
            )
            s.labels[d.label] += 1
            s.history.append((t, (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2, max(1, d.box[3] - d.box[1])))
            self._next_id += 1
            self._learn_look(s, dets, dlooks, j)
            self._confirm(s)
            self._zones(s)
            self._tracks.append(s)
        self._last_t = t
        return [self._public(s) for s in self._tracks]

    def _hit(self, s: _State, d: Detection, t: float) -> None:
        b = d.box
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        h = max(1, b[3] - b[1])
        if s.hits >= 3:
            p = self._predict(s, t)
            if math.hypot(cx - (p[0] + p[2]) / 2, cy - (p[1] + p[3]) / 2) / max(h, p[3] - p[1], 1.0) > JUMP_BH:
                s.speed_from = t
        _steer(s, cx, cy, t - s.last_t)
        # smooth the box a little against detector jitter (size more than position)
        hb = [float(v) for v in b]
        if s.hits > 0:
            ow, oh = s.box[2] - s.box[0], s.box[3] - s.box[1]
            nw, nh = 0.6 * (hb[2] - hb[0]) + 0.4 * ow, 0.6 * (hb[3] - hb[1]) + 0.4 * oh
            s.box = [cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2]
        else:
            s.box = hb
        s.history.append((t, cx, cy, h))
        if _erratic(s.history):
            # turning back and forth (a scuffle, dodging): the velocity says nothing about the next frame;
            # a track lost now must wait where it was, not drift off along a stale direction
            s.vx *= 0.2
            s.vy *= 0.2
        s.last_t = t
        s.box_t = t
        s.rested = 0
        s.hits += 1
        s.misses = 0
        s.scores.append(d.score)
        s.labels[d.label] += 1
        s.best_score = max(s.best_score, d.score)
        self._speed(s, t)
        self._confirm(s)
        self._zones(s)

    @staticmethod
    def _learn_look(s: _State, dets: Sequence[Detection], looks: Sequence[tuple[float, ...] | None], j: int) -> None:
        """Fold a detection's look into the track's, only when no other detection overlaps it (two people
        overlapping mix their colours in both boxes)."""
        lk = looks[j]
        if lk is None or any(k != j and iou(dets[k].box, dets[j].box) > 0.0 for k in range(len(dets))):
            return
        if s.look is None:
            s.look = tuple(lk)
        else:
            s.look = tuple(0.7 * a + 0.3 * b for a, b in zip(s.look, lk))
        s.looks += 1

    def hit_ids(self) -> list[tuple[int, Box]]:
        """(id, box) of the person tracks a detection matched in the last update."""
        return [
            (s.id, (int(s.box[0]), int(s.box[1]), int(math.ceil(s.box[2])), int(math.ceil(s.box[3]))))
            for s in self._tracks
            if s.misses == 0 and s.rested == 0 and s.last_t == self._last_t and _label(s) == "person"
        ]

    def _speed(self, s: _State, t: float) -> None:
        hist = [p for p in s.history if p[0] >= s.speed_from]
        if len(hist) < 2 or (s.speed_from > float("-inf") and t - hist[0][0] < self.speed_window / 2):
            return  # since a jump: keep the last speed until there is a window's worth to measure again
        # the oldest matched point at least speed_window old (or the oldest we have)
        ref = hist[0]
        for p in reversed(hist[:-1]):
            if t - p[0] >= self.speed_window:
                ref = p
                break
        dt = t - ref[0]
        if dt <= 0:
            return
        cur = hist[-1]
        hs = [p[3] for p in hist[-4:]]
        h = sorted(hs)[len(hs) // 2]
        v = math.hypot(cur[1] - ref[1], cur[2] - ref[2]) / h / dt
        s.speed = v if s.hits <= 2 else 0.6 * v + 0.4 * s.speed

    def _confirm(self, s: _State) -> None:
        if s.confirmed:
            return
        # an object must also have travelled: a vehicle (told from a blob's shape) at least 0.6 of
        # its width, a person 0.25 of its height -- swaying trees and static look-alikes (a lamp post
        # HOG likes) never do
        (_, x0, y0, _), (_, x1, y1, _) = s.history[0], s.history[-1]
        moved = math.hypot(x1 - x0, y1 - y0)
        if _label(s) == "vehicle":
            if moved < 0.6 * max(1.0, s.box[2] - s.box[0]):
                return
        elif moved < 0.25 * max(1.0, s.box[3] - s.box[1]):
            return
        n = self.objects.confirm_frames
        if len(s.scores) >= n:
            sc = sorted(s.scores)
            med = sc[n // 2] if n % 2 else (sc[n // 2 - 1] + sc[n // 2]) / 2
            if med >= self.objects.threshold:
                s.confirmed = True

    def _zones(self, s: _State) -> None:
        if not self.zones:
            return
        W, H = self.size
        x = (s.box[0] + s.box[2]) / 2 / W
        y = s.box[3] / H
        for z in self.zones:
            if z.contains(x, y):
                s.inside[z.name] = s.inside.get(z.name, 0) + 1
                s.outside[z.name] = 0
                if z.name not in s.zones and s.inside[z.name] >= z.inertia:
                    s.zones.append(z.name)
            else:
                s.outside[z.name] = s.outside.get(z.name, 0) + 1
                s.inside[z.name] = 0
                if z.name in s.zones and s.outside[z.name] >= z.inertia:
                    s.zones.remove(z.name)

    @staticmethod
    def _median(scores: deque) -> float:
        sc = sorted(scores)
        n = len(sc)
        if n == 0:
            return 0.0
        return sc[n // 2] if n % 2 else (sc[n // 2 - 1] + sc[n // 2]) / 2

    def _public(self, s: _State) -> Track:
        label = max(s.labels.items(), key=lambda kv: (kv[1], kv[0] == "person"))[0]
        return Track(
            id=s.id,
            label=label,
            box=(int(round(s.box[0])), int(round(s.box[1])), int(round(s.box[2])), int(round(s.box[3]))),
            score=round(self._median(s.scores), 4),
            confirmed=s.confirmed,
            zones=tuple(s.zones),
            speed=round(s.speed, 4),
            misses=s.misses,
        )

    def misses(self, track_id: int) -> int:
        """Frames since the track last matched a detection (0 = seen in this frame)."""
        for s in self._tracks:
            if s.id == track_id:
                return s.misses
        return -1
