"""One camera's detection pipeline: frames in, tracks and alert events out.

    pipe = Pipeline(camera, tz="Asia/Shanghai")
    for frame in source:                          # any size; t = video position or wall clock
        result = pipe.process(frame)              # FrameResult (skipped=True when rate-limited)
        for ev in result.events: ...              # AlertEvent new / update / end
    pipe.flush(last_t)                            # end open events at the end of input

Stages per analysed frame (docs/camera-adapter.md):
resize to the camera's detect size -> rate limit to `detect.fps` by frame time
-> motion (small grey frame, background model, masks, global-change guard,
tamper signals) -> detector on the motion regions and on the predicted boxes of
live tracks only (nothing moves and nothing is tracked: no detector call)
-> tracker (identities, median-score confirmation, speed, zones with inertia)
-> rules (intrusion, loitering, crowd, running, scuffle, tamper) -> alert
lifecycle (new / update / end, best snapshot JPEG).

Deterministic: the same frames give the same results (event ids aside, which
are uuid4 unless `new_id` is given). Not thread-safe: one per camera.
"""

from __future__ import annotations

import datetime as _dt
import math
import zoneinfo
from collections import deque
from collections.abc import Callable

import cv2
import numpy as np

from adapters.camera.detectors import make_detector, overlaps
from adapters.camera.lifecycle import Lifecycle
from adapters.camera.motion import MotionDetector, merge_boxes
from adapters.camera.rules import RuleEngine, tamper_reason
from adapters.camera.tracker import Tracker
from adapters.camera.types import AlertEvent, Box, Detection, Detector, Frame, FrameResult
from dispatch.district import Camera

__all__ = ["Pipeline", "minute_clock"]

# analysed frames a tracked person has gone unfound before the motion blob that is theirs alone gets a search
# of its own at any size when their guide finds nobody (see HogDetector._hidden)
LOST_MISSES = 2


def minute_clock(tz: str) -> Callable[[float], int]:
    """t (UNIX seconds) -> local minute of the day in `tz`."""
    zone = zoneinfo.ZoneInfo(tz)

    def minutes(t: float) -> int:
        d = _dt.datetime.fromtimestamp(t, zone)
        return d.hour * 60 + d.minute

    return minutes


class Pipeline:
    """motion -> detector (motion regions only) -> tracker -> rules -> alert lifecycle, for one camera."""

    def __init__(
        self,
        camera: Camera,
        detector: Detector | None = None,
        tz: str = "UTC",
        clock_minutes: Callable[[float], int] | None = None,
        *,
        hold_off: float = 2.0,
        update_interval: float = 5.0,
        new_id: Callable[[], str] | None = None,
        jpeg_quality: int = 85,
        motion_model: str = "average",
        cadence: bool = True,
        perspective: bool = True,
    ):
        self.camera = camera
        self.size = (camera.detect.width, camera.detect.height)
        self.fps = camera.detect.fps
        self.period = 1.0 / self.fps
        self.detector = detector if detector is not None else make_detector("hog")
        self.clock_minutes = clock_minutes or minute_clock(tz)
        self.motion = MotionDetector(camera.motion, self.size, model=motion_model)
        self.tracker = Tracker(camera.objects, camera.zones, self.size)
        self.rules = RuleEngine(camera, self.fps, self.size)
        self.lifecycle = Lifecycle(hold_off=hold_off, update_interval=update_interval, frame_size=self.size, new_id=new_id)
        # camera_offline has its own lifecycle: the watchdog drives it by wall clock, between frames
        self._offline = Lifecycle(hold_off=0.0, update_interval=update_interval, frame_size=self.size, new_id=new_id)
        self.jpeg_quality = jpeg_quality
        self.enabled = camera.detect.enabled
        self._was_enabled = self.enabled
        self._next_t: float | None = None
        self._last_t: float | None = None
        self.frames_in = 0
        self.frames_analysed = 0
        self.detector_calls = 0
        self._suspect = False
        self._heat = np.zeros((18, 32), np.float32)  # how often each cell (20x20 px at 640x360) moves
        self.heat_rate = 0.1
        self.hot_every = 1.0  # seconds between searches of an area that moves all the time
        self._tick = 0
        self._rest: set[int] = set()
        self._odd: list[Box] = []  # last frame's blobs with more in them than the people tracked there
        self.cadence = cadence  # steady tracked people are searched every other frame
        # a confirmed person alone in their motion blob is followed by the blob, and searched by the
        # detector only every `carry_every` frames (or when the blob changes shape); 1: off
        self.carry_every = 3 if cadence else 1
        self._carried: dict[int, Box] = {}
        self._blob_cal: dict[int, tuple[float, ...]] = {}  # id -> blob vs box, when last found
        # person size from where the feet are, learned from the people found (None: off)
        self.perspective: Perspective | None = Perspective(self.size[1]) if perspective else None
        if self.perspective is not None:
            self.tracker.size_at = self.perspective.at
        self.min_person_px = 40.0 * self.size[1] / 360.0

    # ------------------------------------------------------------------ runtime controls

    def set_enabled(self, enabled: bool) -> None:
        """Detection on or off (runtime control); off ends the open events at the next frame."""
        self.enabled = bool(enabled)

    def set_sensitivity(self, sensitivity: float) -> None:
        """Motion sensitivity 0..1 (runtime control): the minimum blob area."""
        self.motion.set_sensitivity(sensitivity)

    # ------------------------------------------------------------------ per frame

    def wants(self, t: float) -> bool:
        """Would a frame at time `t` be analysed? (Lets file readers skip decoding colour for the others.)"""
        if not self.enabled:
            return self._was_enabled  # one more frame, to end the open events
        return self._next_t is None or t >= self._next_t - 0.2 * self.period

    def process(self, frame: Frame) -> FrameResult:
        self.frames_in += 1
        t = float(frame.t)
        if not self.enabled:
            events: list[AlertEvent] = []
            if self._was_enabled:
                events = self.lifecycle.flush(t)
                self.tracker.reset()
                self.motion.reset()
                self._was_enabled = False
                self._next_t = None
            return FrameResult(frame.index, t, [], [], [], events, skipped=True)
        self._was_enabled = True
        if self._next_t is not None and t < self._next_t - 0.2 * self.period:
            return FrameResult(frame.index, t, [], [], [], [], skipped=True)
        # the next slot: on the grid when keeping up, from here when we fell behind (or time jumped back)
        if self._next_t is None or t - self._next_t >= self.period or t < self._next_t - self.period:
            self._next_t = t + self.period
        else:
            self._next_t += self.period
        self._last_t = t
        self.frames_analysed += 1

        image = frame.image
        if image.shape[1] != self.size[0] or image.shape[0] != self.size[1]:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)

        m = self.motion.detect(image)
        regions: list[Box] = list(m.boxes)
        detections: list[Detection] = []
        suspect = tamper_reason(m.tamper) is not None
        if suspect or m.recalibrated:
            # the view cannot be trusted (covered, blurred, turned, lights changing): look at nothing
            if suspect and not self._suspect:
                self.tracker.reset()
            regions = []
        self._suspect = suspect
        if not suspect:
            detections = self._detect(image, regions, t)
        looks = [_look(image, d.box) if d.label == "person" else None for d in detections]
        tracks = self.tracker.update(detections, t, self._rest, looks, self._carried)
        self._rest = set()
        self._carried = {}
        # the people the detector found in this frame (not coasting, not carried by their blob, not skipped)
        hits = self.tracker.hit_ids()
        if self.carry_every > 1:
            self._calibrate(regions, hits)
        if self.perspective is not None:
            confirmed = {tr.id for tr in tracks if tr.confirmed}
            for tid, b in hits:
                if tid in confirmed and b[3] < self.size[1] - 2 and b[1] > 2:
                    self.perspective.add(b[3], b[3] - b[1])
        conditions = self.rules.step(t, self.clock_minutes(t), tracks, m.tamper)

        cache: dict[str, bytes | None] = {}

        def snapshot() -> bytes | None:
            if "jpeg" not in cache:
                ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                cache["jpeg"] = buf.tobytes() if ok else None
            return cache["jpeg"]

        # an event of a person found now that holds (they left the zone) is not continued by somebody walking in
        present = {tid for tid, _ in hits}
        events = self.lifecycle.step(t, conditions, snapshot, present=present)
        return FrameResult(frame.index, t, list(m.boxes), detections, tracks, events)

    def _detect(self, image: np.ndarray, regions: list[Box], t: float) -> list[Detection]:
        """The detector on motion regions and around tracked people, skipping what needs no look:

        * people we track are searched around where they should be, at their known size
          (cheap); steady confirmed ones every other frame (they coast in between);
        * a motion region that the people found in the last frame explain is not searched again,
          and one in an area that moves most of the time (trees, flags, water, a standing group;
          a slow heat map of motion, 0.1 per frame) neither: both only once a second. A region
          that has just grown past the people in it is searched at their size at once.
        """
        heat = self._heat
        gw, gh = heat.shape[1], heat.shape[0]
        W, H = self.size
        cells = []
        cur = np.zeros_like(heat)
        for r in regions:
            x1, y1 = int(r[0] * gw / W), int(r[1] * gh / H)
            c = (x1, y1, max(x1 + 1, int(np.ceil(r[2] * gw / W))), max(y1 + 1, int(np.ceil(r[3] * gh / H))))
            cells.append(c)
            cur[c[1]:c[3], c[0]:c[2]] = 1.0
        heat *= 1.0 - self.heat_rate
        heat += self.heat_rate * cur
        self._tick += 1
        once_a_second = self._tick % max(1, int(round(self.fps * self.hot_every))) == 0
        guided = getattr(self.detector, "detect_guided", None)
        rest: set[int] = set()
        guides: list[Box] = []
        known: list[Box] = []
        lost: list[Box] = []
        if guided is not None:
            rest = self.tracker.resting(self._tick) if self.cadence else set()
            people = self.tracker.predicted(t, "person")
            if self.carry_every > 1:
                carried = self._carry(regions, people)
                rest |= set(carried)
                self._carried = carried
            guides = [b for tid, b in people if tid not in rest]
            # around a person the detector just missed the blob is searched (the track lags)
            misses = {tid: self.tracker.misses(tid) for tid, _ in people}
            known = [b for tid, b in people if misses[tid] == 0]
            lost = [b for tid, b in people if tid not in rest and misses[tid] >= LOST_MISSES]
        self._rest = rest
        fresh: list[Box] = []
        sized: list[tuple[Box, float]] = []
        hot_searched: list[Box] = []
        odd: list[Box] = []
        for r, c in zip(regions, cells):
            if known and _covered(r, known) >= 0.7:
                # a person hidden in a group we track is searched for at the group's size -- unless the
                # people in the blob fill it (a blob is about 1.2 person heights tall, its people wide):
                # once a second, and at once when the blob has just grown past its people (somebody
                # stepping out from behind the person we track, often right into a zone: waiting for the
                # once-a-second search made those entries 1.2-3.8 s late)
                inside = [b for b in known if overlaps(b, r)]
                hs = sorted(b[3] - b[1] for b in inside)
                more = bool(hs) and not _explained(r, inside)
                if more:
                    odd.append(r)
                if once_a_second or (more and not any(overlaps(r, o) for o in self._odd)):
                    if not hs:
                        fresh.append(r)
                    elif more:
                        sized.append((r, float(hs[len(hs) // 2])))
                continue
            hot = float(heat[c[1]:c[3], c[0]:c[2]].mean()) >= 0.5
            if hot and not once_a_second:
                continue  # moves all the time: trees, flags; once a second
            if hot:
                hot_searched.append(r)
            bands = None
            if guided is not None and self.perspective is not None:
                # people shorter than the detector's floor are never reported: no need to look for them
                floor = 0.7 * self.min_person_px
                bands = self.perspective.bands(r, min_h=floor)
                if bands == [] and once_a_second:
                    # where nobody has stood yet: once a second
                    bands = self.perspective.bands(r, min_h=floor, anywhere=True)
            if bands is not None:
                sized += bands  # type: ignore[arg-type]
                continue
            fresh.append(r)
        self._odd = odd
        if guided is not None:
            # (vehicles are told from moving blobs, which are among the regions anyway)
            detections = guided(image, fresh, guides, sized, lost) if (fresh or guides or sized) else []
        else:
            searched = merge_boxes(fresh + self.tracker.predicted_boxes(t), gap=0)
            detections = self.detector.detect(image, searched) if searched else []
        if fresh or guides or sized:
            self.detector_calls += 1
        if hot_searched:
            # an area that keeps "moving" where the detector found nobody and no track is near: a ghost
            # of somebody who stood there when the background was learned (or a tree): into the background
            near = [d.box for d in detections if d.label == "person"] + self.tracker.predicted_boxes(t)
            empty = [r for r in hot_searched if not any(overlaps(r, b) for b in near)]
            if empty:
                self.motion.absorb(empty)
        return detections

    def _alone_in(self, box: Box, regions: list[Box], others: list[Box]) -> Box | None:
        """The one motion blob that overlaps `box` and no other tracked box (None: no such blob)."""
        a = max(1.0, _area(box))
        main = [r for r in regions if _inter(r, box) >= 0.6 * a]
        if len(main) != 1 or any(r is not main[0] and _inter(r, box) > 0.15 * a for r in regions):
            return None
        if any(overlaps(main[0], o) for o in others):
            return None
        return main[0]

    def _calibrate(self, regions: list[Box], hits: list[tuple[int, Box]]) -> None:
        """For each person the detector found in this frame alone in a motion blob: where the blob lies
        against the box (the blob is the dilated mask: larger, and lower at the feet)."""
        live = {tid: b for tid, b in self.tracker.predicted(self._last_t or 0.0)}
        cal: dict[int, tuple[float, ...]] = {}
        hit = dict(hits)
        for tid, b in hit.items():
            r = self._alone_in(b, regions, [o for k, o in live.items() if k != tid])
            if r is None:
                continue
            cal[tid] = ((r[0] + r[2]) / 2 - (b[0] + b[2]) / 2, r[3] - b[3], float(r[3] - r[1]), float(r[2] - r[0]),
                        float(b[3] - b[1]), float(b[2] - b[0]))
        # the others keep their last calibration until their blob changes shape (checked in _carry)
        for tid in live:
            if tid in cal:
                self._blob_cal[tid] = cal[tid]
            elif tid in hit:
                self._blob_cal.pop(tid, None)
        for tid in [k for k in self._blob_cal if k not in live]:
            del self._blob_cal[tid]

    def _carry(self, regions: list[Box], people: list[tuple[int, Box]]) -> dict[int, Box]:
        """Steady confirmed people alone in a motion blob of the shape it had when the detector last found
        them: their box follows the blob (centre and feet); the detector looks again every `carry_every`
        frames, or at once when the blob splits, merges or changes size."""
        steady = self.tracker.steady(self.carry_every - 1)
        out: dict[int, Box] = {}
        for tid, p in people:
            cal = self._blob_cal.get(tid)
            if cal is None or tid not in steady:
                continue
            r = self._alone_in(p, regions, [o for k, o in people if k != tid])
            if r is None:
                continue
            dx, dy, bh, bw, h0, w0 = cal
            h, w = r[3] - r[1], r[2] - r[0]
            if not (0.85 <= h / bh <= 1.15 and 0.75 <= w / bw <= 1.33):
                continue
            # the person grows and shrinks with the blob (walking towards or away from the camera)
            k = h / bh
            cx, y2 = (r[0] + r[2]) / 2 - dx * k, r[3] - dy * k
            ph, pw = h0 * k, w0 * k
            out[tid] = (int(round(cx - pw / 2)), int(round(y2 - ph)), int(round(cx + pw / 2)), int(round(y2)))
        return out

    # ------------------------------------------------------------------ end of input, offline

    def flush(self, t: float | None = None) -> list[AlertEvent]:
        """End every open event (end of a file, shutdown)."""
        when = t if t is not None else (self._last_t if self._last_t is not None else 0.0)
        return self.lifecycle.flush(when) + self._offline.flush(when)

    def check_offline(self, now: float, last_frame_t: float | None, started_t: float | None = None) -> list[AlertEvent]:
        """The runtime's watchdog calls this while no frames come: camera_offline new, then end when frames return.

        Call it periodically with the wall clock `now` and the time of the last frame
        received (None if none yet; `started_t` = when the source was opened).
        """
        return self._offline.step(now, self.rules.offline(now, last_frame_t, started_t))


class Perspective:
    """Person height as a function of where the feet are (image row), learned from confirmed people.

    On a flat ground seen by a fixed camera a person's height in pixels grows linearly with the row of
    their feet; a least-squares line through (bottom row, box height) of the people the detector found
    gives, for any motion blob, the size of a person standing there: the detector then searches that size
    only, and a blob where no person can stand (above the horizon: trees, sky, walls up high) is searched
    once a second only. Until it has seen enough people over enough rows (or when they do not fit a line:
    stairs, a second level) it says nothing and everything is searched as before.
    """

    def __init__(self, height: int, *, keep: int = 400, min_samples: int = 40, min_spread: float = 0.12):
        self.height = height
        self.samples: deque[tuple[float, float]] = deque(maxlen=keep)
        self.min_samples = min_samples
        self.min_spread = min_spread
        self.line: tuple[float, float] | None = None  # h = a * y + b
        self.top_feet = 0.0  # the highest row where feet were seen
        self.margin = 0.08  # of the frame height: how far above that a person may still stand
        self._since = 0

    def add(self, y_bottom: float, h: float) -> None:
        self.samples.append((float(y_bottom), float(h)))
        self._since += 1
        if self._since >= 20:
            self._since = 0
            self._fit()

    def _fit(self) -> None:
        self.line = None
        if len(self.samples) < self.min_samples:
            return
        ys = np.array([p[0] for p in self.samples])
        hs = np.array([p[1] for p in self.samples])
        if np.percentile(ys, 90) - np.percentile(ys, 10) < self.min_spread * self.height:
            return
        a, b = np.polyfit(ys, hs, 1)
        if a <= 0:
            return
        rel = np.abs(a * ys + b - hs) / np.maximum(hs, 1.0)
        if float(np.median(rel)) > 0.12:
            return
        self.line = (float(a), float(b))
        self.top_feet = float(np.min(ys))

    def at(self, y_bottom: float) -> float | None:
        """Expected height of a person whose feet are at this row (None: not known)."""
        if self.line is None:
            return None
        a, b = self.line
        return a * y_bottom + b

    def bands(self, box: Box, ratio: float = 1.25, min_h: float = 1.0, anywhere: bool = False) -> list[tuple[Box, float, float]] | None:
        """`box` cut into horizontal bands in each of which the people who could stand there differ in
        height by at most `ratio`: (band box, smallest, largest height), nearest first. A tall blob
        (people near and far merged) is then searched band by band, each at its own scale, instead of
        all of it at the scale of the smallest person. Rows more than `margin` above the highest feet
        seen so far are left out unless `anywhere`; people who would be shorter than `min_h` too."""
        if self.line is None:
            return None
        a, b = self.line
        top = box[1]
        feet_min = (top + b) / (1.0 - a) if a < 1.0 else top  # the person whose head is at the top
        floor = -math.inf if anywhere else self.top_feet - self.margin * self.height  # nobody stands higher up
        y = float(box[3])
        if y < floor:
            return []
        if y < feet_min:
            # shorter than a person standing on its bottom row: part of one (the legs move, the torso is
            # as dark as the background behind it and the head is a blob of its own); search the person
            # who would stand there, grown up to their height
            h_hi = a * y + b
            if h_hi < min_h:
                return []
            return [((box[0], int(max(0.0, y - h_hi)), box[2], int(round(y))), max(min_h, h_hi / ratio), h_hi)]
        feet_min = max(feet_min, floor)
        out: list[tuple[Box, float, float]] = []
        while len(out) < 8:
            h_hi = a * y + b
            if h_hi < min_h:
                break
            y_lo = max((h_hi / ratio - b) / a, feet_min)
            h_lo = max(min_h, a * y_lo + b)
            band = (box[0], int(max(top, y_lo - h_lo)), box[2], int(round(y)))
            out.append((band, h_lo, h_hi))
            if y_lo <= feet_min + 1.0:
                break
            y = y_lo
        return out


def _look(image: np.ndarray, box: Box) -> tuple[float, ...] | None:
    """A person's appearance for the tracker: the mean colour (B, G, R, 0..1) of the middle of the upper
    body and of the legs. Cheap, and enough to tell two people apart who cross."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    if w < 6 or h < 16:
        return None
    H, W = image.shape[:2]
    a, b = max(0, int(x1 + 0.3 * w)), min(W, int(x2 - 0.3 * w))
    out: list[float] = []
    for top, bottom in ((0.2, 0.48), (0.58, 0.85)):
        r1, r2 = max(0, int(y1 + top * h)), min(H, int(y1 + bottom * h))
        if r2 <= r1 or b <= a:
            return None
        m = cv2.mean(image[r1:r2, a:b])
        out += [m[0] / 255.0, m[1] / 255.0, m[2] / 255.0]
    return tuple(out)


def _covered(r: Box, boxes: list[Box]) -> float:
    """Fraction of `r` inside the union of `boxes` grown by 30% (an upper bound: overlaps are counted once each)."""
    area = max(1, (r[2] - r[0]) * (r[3] - r[1]))
    inter = 0
    for b in boxes:
        gw, gh = 0.3 * (b[2] - b[0]), 0.15 * (b[3] - b[1])
        ix = min(r[2], b[2] + gw) - max(r[0], b[0] - gw)
        iy = min(r[3], b[3] + gh) - max(r[1], b[1] - gh)
        if ix > 0 and iy > 0:
            inter += ix * iy
    return min(1.0, inter / area)


def _explained(r: Box, people: list[Box]) -> bool:
    """Do these people account for the whole motion blob `r`? Its height at most 1.3 of the tallest, its
    width at most their widths together plus 0.3 of a person height (the dilated mask's margins: 95% of
    the blobs of a person alone are within these)."""
    h = max(b[3] - b[1] for b in people)
    w = sum(b[2] - b[0] for b in people)
    return (r[3] - r[1]) <= 1.3 * h and (r[2] - r[0]) <= w + 0.3 * h


def _area(b: Box) -> float:
    return max(0, b[2] - b[0]) * max(0, b[3] - b[1])


def _inter(a: Box, b: Box) -> float:
    ix, iy = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    return ix * iy if ix > 0 and iy > 0 else 0.0
