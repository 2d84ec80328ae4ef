"""Offline replay: run the live pipeline over a recorded file as fast as it can, one JSON line per frame and per alert.

    from adapters.camera.analyze import analyze
    with open("out.jsonl", "w") as out:
        events = analyze("gate.mp4", district.camera("cam01"), out)

    patrollink camera analyze VIDEO --camera ID [--out FILE] [--district FILE]   (wired by the runtime's CLI)

Lines (JSON, one object each):

    {"type": "frame", "frame": 12, "t": 2.4, "motion": [[x1, y1, x2, y2], ...],
     "detections": [{"box": [...], "label": "person", "score": 0.81}, ...],
     "tracks": [{"id": 3, "box": [...], "label": "person", "score": 0.8, "zones": ["gate"],
                 "confirmed": true, "speed": 0.4}, ...]}
    {"type": "alert", "phase": "new", "event_id": "...", "kind": "intrusion", "zones": ["gate"],
     "t": 2.6, "start_t": 2.6, "end_t": null, "priority": 2, "label": "person", "score": 0.82,
     "box": [...], "snapshot_bytes": 23110, "detail": {...}}

Only analysed frames are written (the pipeline's `detect.fps` rate limit
applies, exactly as live). Frame times are the video position,
`frame / fps`, as the runtime's unpaced file source stamps them, so the
alerts equal those of the live path fed the same file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import cv2

from adapters.camera.pipeline import Pipeline
from adapters.camera.types import AlertEvent, Detector, Frame, FrameResult, SourceError
from dispatch.district import Camera

__all__ = ["alert_record", "analyze", "frame_record", "iter_video", "start_clock"]


def start_clock(start: str) -> Callable[[float], int]:
    """'23:00' -> (t -> local minute of the day, counting from 23:00 at t = 0)."""
    parts = start.strip().split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        h, m = int(parts[0]), int(parts[1])
        sec = int(parts[2]) if len(parts) == 3 else 0
        if not (0 <= h < 24 and 0 <= m < 60 and 0 <= sec < 60):
            raise ValueError
    except ValueError:
        raise ValueError(f"start {start!r} is not a time of day HH:MM or HH:MM:SS") from None
    base = h * 3600 + m * 60 + sec
    return lambda t: int(((base + t) % 86400) // 60)


def frame_record(r: FrameResult) -> dict[str, Any]:
    return {
        "type": "frame",
        "frame": r.index,
        "t": round(r.t, 4),
        "motion": [list(b) for b in r.motion],
        "detections": [{"box": list(d.box), "label": d.label, "score": round(d.score, 4)} for d in r.detections],
        "tracks": [
            {
                "id": tr.id,
                "box": list(tr.box),
                "label": tr.label,
                "score": round(tr.score, 4),
                "zones": list(tr.zones),
                "confirmed": tr.confirmed,
                "speed": round(tr.speed, 3),
            }
            for tr in r.tracks
        ],
    }


def alert_record(e: AlertEvent) -> dict[str, Any]:
    return {
        "type": "alert",
        "phase": e.phase,
        "event_id": e.event_id,
        "kind": e.kind,
        "priority": e.priority,
        "zones": list(e.zones),
        "t": round(e.t, 4),
        "start_t": round(e.start_t, 4),
        "end_t": None if e.end_t is None else round(e.end_t, 4),
        "label": e.label,
        "score": e.score,
        "box": None if e.box is None else list(e.box),
        "boxes": [{"box": list(d.box), "label": d.label, "score": d.score} for d in e.boxes],
        "snapshot_bytes": len(e.snapshot_jpeg) if e.snapshot_jpeg else 0,
        "detail": {k: v for k, v in e.detail.items() if isinstance(v, (str, int, float, bool, list, type(None)))},
    }


def iter_video(path: str | Path, pipeline: Pipeline | None = None, *, threads: int | None = None):
    """Frames of a file, stamped `frame / fps`; frames the pipeline would skip are decoded but not converted."""
    params = [cv2.CAP_PROP_N_THREADS, int(threads)] if threads else []
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        raise SourceError(f"cannot open {path}: not a video file OpenCV can decode")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not (0.5 <= fps <= 240):
        fps = 15.0
    n = 0
    try:
        while True:
            t = n / fps
            if pipeline is not None and not pipeline.wants(t):
                if not cap.grab():
                    return
                yield Frame(image=None, t=t, index=n)  # type: ignore[arg-type]
            else:
                ok, image = cap.read()
                if not ok or image is None:
                    return
                yield Frame(image=image, t=t, index=n)
            n += 1
    finally:
        cap.release()


def analyze(
    video_path: str | Path,
    camera: Camera,
    out: TextIO | None,
    speed: str = "max",
    *,
    detector: Detector | None = None,
    tz: str = "UTC",
    clock_minutes: Callable[[float], int] | None = None,
    pipeline: Pipeline | None = None,
    frames: bool = True,
    start: str | None = None,
) -> list[AlertEvent]:
    """Run `camera`'s pipeline over the file; write JSON lines to `out`; return every AlertEvent.

    speed: "max" (as fast as it can) or "realtime" (paced at the file's frame rate).
    start: local time of day at the file's first frame, "HH:MM" or "HH:MM:SS", for zone
    schedules (default: `clock_minutes`, else t read as UNIX time in `tz`, i.e. 1970-01-01).
    """
    if speed not in ("max", "realtime"):
        raise ValueError(f"speed must be 'max' or 'realtime', got {speed!r}")
    if start is not None and clock_minutes is None:
        clock_minutes = start_clock(start)
    pipe = pipeline or Pipeline(camera, detector=detector, tz=tz, clock_minutes=clock_minutes)
    events: list[AlertEvent] = []
    start = time.monotonic()
    last_t = 0.0

    def write(rec: dict[str, Any]) -> None:
        if out is not None:
            out.write(json.dumps(rec, separators=(",", ":")) + "\n")

    for frame in iter_video(video_path, pipe):
        last_t = frame.t
        if speed == "realtime":
            due = start + frame.t
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
        if frame.image is None:
            continue  # skipped by the rate limit; the pipeline would return skipped=True
        r = pipe.process(frame)
        if not r.skipped and frames:
            write(frame_record(r))
        for e in r.events:
            events.append(e)
            write(alert_record(e))
    for e in pipe.flush(last_t):
        events.append(e)
        write(alert_record(e))
    if out is not None:
        out.flush()
    return events
