"""Per-frame rule conditions -> one new / update / end stream per detection event (pure: no OpenCV, no clock).

    lc = Lifecycle()
    events = lc.step(t, conditions, snapshot)   # snapshot(): JPEG bytes of this frame, called lazily
    events += lc.flush(t)                       # end what is still open (end of input, detection off)

The event's states and what moves it:

| state | input | -> state | emits |
| --- | --- | --- | --- |
| (none) | condition appears | open | new (id, zones, score, box, best snapshot so far) |
| open | condition holds, zones grew | open | update at once |
| open | condition holds, score up by >= `score_step` or a better view | open | update, at most one per `update_interval` s |
| open | condition missing | holding | nothing |
| holding | condition back within `hold_off` s | open | nothing (the same event goes on) |
| holding | missing for `hold_off` s | (gone) | end (end_t = last time it held) |

Event ids are uuid4 hex (or what `new_id` makes), stable across the event.
A condition whose key is new but that sits where an event of the same kind is
holding (the tracker lost and re-found a person) continues that event
instead of opening another: one incident, one alert stream -- unless the
condition's track was already seen while the holding event's subject was still
being found by the detector (`Condition.since` < the event's last `found`
frame): two people at once, the second one walking where the first was, get
an event each.

The best snapshot is the frame with the best `Condition.quality`: first
"fully in frame", then box area x score. The JPEG is encoded once, when a
frame becomes the best, by calling `snapshot()`; the caller memoises it per
frame so that several events share one encoding.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.camera.rules import Condition
from adapters.camera.types import AlertEvent, Box, Detection

__all__ = ["Lifecycle"]


@dataclass
class _Event:
    id: str
    kind: str
    key: tuple[Any, ...]
    priority: int
    start_t: float
    last_seen: float
    zones: list[str] = field(default_factory=list)
    label: str | None = None
    score: float | None = None
    box: Box | None = None
    boxes: tuple[Detection, ...] = ()
    last_box: Box | None = None
    quality: tuple[int, float] = (-1, -1.0)
    snapshot: bytes | None = None
    snapshot_version: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    found_t: float | None = None  # when the detector last found its subject (`Condition.found`)
    track: int | None = None  # `Condition.track` of its subject
    # what was last published
    pub_t: float = 0.0
    pub_zones: int = 0
    pub_score: float | None = None
    pub_snapshot: int = 0
    pub_detail: dict[str, Any] = field(default_factory=dict)
    updates: int = 0


class Lifecycle:
    """Turns per-frame `Condition`s into `AlertEvent`s: one event per incident, not one per frame."""

    def __init__(
        self,
        *,
        hold_off: float = 2.0,
        update_interval: float = 5.0,
        score_step: float = 0.05,
        rebind_dist: float = 1.0,
        frame_size: tuple[int, int] | None = None,
        new_id: Callable[[], str] | None = None,
        material_detail: Sequence[str] = ("people", "reason"),
    ):
        self.hold_off = hold_off
        self.update_interval = update_interval
        self.score_step = score_step
        self.rebind_dist = rebind_dist
        self.frame_size = frame_size
        self.new_id = new_id or (lambda: uuid.uuid4().hex)
        self.material_detail = tuple(material_detail)
        self._events: dict[tuple[Any, ...], _Event] = {}

    @property
    def open(self) -> list[str]:
        """Ids of the events not yet ended."""
        return [e.id for e in self._events.values()]

    def _emit(self, e: _Event, phase: str, t: float) -> AlertEvent:
        if phase != "end":
            e.pub_t = t
            e.pub_zones = len(e.zones)
            e.pub_score = e.score
            e.pub_snapshot = e.snapshot_version
            e.pub_detail = {k: e.detail.get(k) for k in self.material_detail}
        if phase == "update":
            e.updates += 1
        return AlertEvent(
            phase=phase,
            event_id=e.id,
            kind=e.kind,
            priority=e.priority,
            t=t,
            start_t=e.start_t,
            end_t=e.last_seen if phase == "end" else None,
            zones=tuple(e.zones),
            label=e.label,
            score=e.score,
            box=e.box,
            boxes=e.boxes,
            frame_size=self.frame_size,
            snapshot_jpeg=e.snapshot,
            detail=dict(e.detail, snapshot_version=e.snapshot_version, updates=e.updates),
        )

    def _rebind(self, c: Condition, active_keys: set[tuple[Any, ...]], present: Collection[Any] = ()) -> _Event | None:
        """An event of the same kind that is holding (its subject vanished) right where this condition is."""
        if c.box is None:
            return None
        best, best_d = None, math.inf
        for key, e in self._events.items():
            if key in active_keys or e.kind != c.kind or e.last_box is None:
                continue
            if c.since is not None and e.found_t is not None and c.since <= e.found_t + 1e-9:
                continue  # this subject was tracked while (or in the frame) that one was still being found: somebody else
            if e.track is not None and e.track in present:
                continue  # its subject is still followed and found by the detector now (it left the zone): not lost
            b, o = c.box, e.last_box
            h = max(1, max(b[3] - b[1], o[3] - o[1]))
            d = math.hypot((b[0] + b[2] - o[0] - o[2]) / 2.0, (b[1] + b[3] - o[1] - o[3]) / 2.0) / h
            if d < self.rebind_dist and d < best_d:
                best, best_d = e, d
        return best

    def step(self, t: float, conditions: Sequence[Condition], snapshot: Callable[[], bytes | None] | None = None,
             present: Collection[Any] = ()) -> list[AlertEvent]:
        """`present` (optional): ids of the tracks the detector found in this frame (not coasting, not carried by
        their blob, not skipped); a holding event of one of them (the person left the zone) is nobody else's."""
        out: list[AlertEvent] = []
        keys = {c.key for c in conditions}
        for c in conditions:
            e = self._events.get(c.key)
            fresh = False
            if e is None:
                e = self._rebind(c, keys, present)
                if e is not None:
                    del self._events[e.key]
                    e.key = c.key
                    self._events[c.key] = e
            if e is None:
                e = _Event(id=self.new_id(), kind=c.kind, key=c.key, priority=c.priority, start_t=t, last_seen=t, label=c.label)
                self._events[c.key] = e
                fresh = True
            e.last_seen = t
            e.track = c.track
            if c.found:
                e.found_t = t
            e.priority = min(e.priority, c.priority)
            for z in c.zones:
                if z not in e.zones:
                    e.zones.append(z)
            if c.score is not None and (e.score is None or c.score > e.score):
                e.score = c.score
            if c.label is not None:
                e.label = c.label
            e.last_box = c.box
            e.detail.update(c.detail)
            if c.quality > e.quality:
                e.quality = c.quality
                e.box = c.box
                e.boxes = c.boxes
                if snapshot is not None:
                    jpeg = snapshot()
                    if jpeg is not None:
                        e.snapshot = jpeg
                        e.snapshot_version += 1
            if fresh:
                out.append(self._emit(e, "new", t))
                continue
            if len(e.zones) > e.pub_zones:
                out.append(self._emit(e, "update", t))
                continue
            if t - e.pub_t >= self.update_interval - 1e-9 and self._material(e):
                out.append(self._emit(e, "update", t))
        for key in [k for k, e in self._events.items() if k not in keys]:
            e = self._events[key]
            if t - e.last_seen >= self.hold_off - 1e-9:
                out.append(self._emit(e, "end", t))
                del self._events[key]
        return out

    def _material(self, e: _Event) -> bool:
        if e.score is not None and (e.pub_score is None or e.score >= e.pub_score + self.score_step):
            return True
        if e.snapshot_version > e.pub_snapshot:
            return True
        for k in self.material_detail:
            now, before = e.detail.get(k), e.pub_detail.get(k)
            if now != before and now is not None:
                if isinstance(now, (int, float)) and isinstance(before, (int, float)) and now < before:
                    continue  # fewer people is not news; the end says when it is over
                return True
        return False

    def flush(self, t: float, kinds: Sequence[str] | None = None) -> list[AlertEvent]:
        """End every open event (of these kinds) now: end of input, detection switched off."""
        out = []
        for key in list(self._events):
            e = self._events[key]
            if kinds is not None and e.kind not in kinds:
                continue
            out.append(self._emit(e, "end", t))
            del self._events[key]
        return out
