"""Shared shapes of the camera adapter: frames in, detections and alert events out.

The pipeline (motion -> detector -> tracker -> rules -> alert lifecycle) turns
`Frame`s into `FrameResult`s; the runner turns `AlertEvent`s into contract
`Alert`s on NATS. Sources and detectors sit behind the small Protocols below,
each with an explicit registry, and the synthetic cameras implement them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in detect-frame pixels


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # BGR, uint8, any size (the pipeline resizes to the detect size)
    t: float  # seconds: the video position for files, wall clock (time.time()) for live streams
    index: int  # frame number from the source


class SourceError(RuntimeError):
    """The source cannot be opened or read; the message says which and why."""


class FrameSource(Protocol):
    url: str
    fps: float | None  # native rate when the source knows it

    def open(self) -> None: ...

    def read(self) -> Frame | None:
        """Next frame; None at the end of a file; raises SourceError on timeouts and broken streams."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Detection:
    label: str  # "person", "vehicle"
    score: float
    box: Box


class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray, regions: list[Box]) -> list[Detection]:
        """Objects in the detect-size BGR image, looking only inside `regions` (motion areas)."""


@dataclass(frozen=True)
class Track:
    id: int
    label: str
    box: Box
    score: float  # median over the confirmation window
    confirmed: bool
    zones: tuple[str, ...]  # zones its bottom-centre is in (after inertia)
    speed: float  # body heights per second, smoothed
    misses: int = 0  # analysed frames since the detector last found it (0: found now, or not looked for)


@dataclass
class AlertEvent:
    """One detection event's new / update / end, as the rules and the lifecycle decide it."""

    phase: str  # new | update | end
    event_id: str  # stable across the event
    kind: str  # an IncidentKind value: intrusion, loitering, crowd, fight, camera_tamper, camera_offline
    priority: int
    t: float  # frame time of this phase
    start_t: float
    end_t: float | None = None
    zones: tuple[str, ...] = ()
    label: str | None = None
    score: float | None = None
    box: Box | None = None
    boxes: tuple[Detection, ...] = ()
    frame_size: tuple[int, int] | None = None
    snapshot_jpeg: bytes | None = None  # best view so far; the runner stores it in the object store
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class FrameResult:
    index: int
    t: float
    motion: list[Box]
    detections: list[Detection]
    tracks: list[Track]
    events: list[AlertEvent]
    skipped: bool = False  # not analysed (rate limiting, detection disabled)
