"""Camera pipeline benchmark: `python -m bench.camera [--seconds S] [--with-nats]`.

Progress goes to stderr; the LAST line of stdout is one JSON object. Everything
runs single-threaded (cv2.setNumThreads(1), the FFmpeg decoder with one thread)
and is timed in CPU seconds of this process (time.process_time), so "per core"
means per core. The clips are rendered by simulators/scene.py and encoded to
640x360, 15 fps MPEG-4 Part 2 files (mp4v: this OpenCV build has no H.264
encoder; a camera's sub-stream is usually H.264 or MPEG-4 at this size), then
decoded by OpenCV like a camera stream:

* ``typical``: an entrance with a few people walking by (4 passers-by plus a
  walk through the gate, 1-3 in view at once);
* ``busy``: 12 people (6+ in view at once) and a car (the renderer's ``busy``).

Keys (fps = frames of the 15 fps file consumed per CPU second):

* ``baseline_fps_per_core``: a bare OpenCV loop on the busy file: decode, resize
  to 320x180, cv2.createBackgroundSubtractorMOG2().apply() on every frame;
* ``fps_motion_per_core``: decode every frame + downscale + our motion detector
  (grey, blur, running-average background, guard, tamper signals) on every frame;
* ``fps_full_per_core``: the whole Pipeline on the busy file as deployed: every
  frame decoded, analysed at detect.fps = 5 (motion, HOG on motion regions and
  tracked people only, tracker, rules, alert lifecycle with JPEG snapshots);
* ``fps_full_every_frame_per_core``: the same analysing all 15 frames a second
  (the like-for-like comparison with the baseline, which also works on every frame);
* ``cameras_per_core_at_5fps``: typical scene, 15 fps camera analysed at 5 fps:
  fps_full (typical) / 15; ``busy`` and ``typical`` carry their own breakdown
  (decode ms per frame, ms per analysed frame per stage);
* ``event_latency_ms_p99``: only with ``--with-nats``. HOOK for the runtime:
  it needs the camera runner and NATS (first frame of the event to alert
  acknowledged by JetStream); `_event_latency_ms_p99` below calls
  `adapters.camera.runner.bench_event_latency()` when the runtime provides it,
  else reports null with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2

from adapters.camera.analyze import iter_video
from adapters.camera.motion import MotionDetector
from adapters.camera.pipeline import Pipeline
from adapters.camera.types import Frame
from dispatch.district import Camera
from simulators.scene import GATE_ZONE, SCENARIOS, STREET_ZONE, Scene, write_clip


def log(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


def camera(fps: float = 5.0) -> Camera:
    return Camera.model_validate(
        {
            "id": "bench",
            "name": "bench",
            "community": "x",
            "position": {"lat": 30.2, "lon": 114.9},
            "stream": "bench.mp4",
            "detect": {"fps": fps},
            "zones": [
                {"name": "gate", "polygon": GATE_ZONE, "restricted": True, "schedule": "22:00-06:00"},
                {"name": "street", "polygon": STREET_ZONE},
            ],
            "rules": {"running": {"speed": 1.6}, "loitering": {"zones": ["gate"]}},
        }
    )


def typical_scene(seconds: float) -> Scene:
    sc = Scene(seed=7)
    sc.add_passersby(4, 0.0, max(1.0, seconds - 8.0))
    sc.add_person([(-0.08, 0.92), (0.14, 0.92), (0.46, 0.50), (1.08, 0.48)], start=1.0)
    sc.length = seconds
    return sc


def capture(path: Path) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    if not cap.isOpened():
        raise SystemExit(f"cannot decode {path}")
    return cap


def bench_decode(path: Path) -> tuple[int, float]:
    cap = capture(path)
    n = 0
    t0 = time.process_time()
    while cap.grab():
        n += 1
    dt = time.process_time() - t0
    cap.release()
    return n, dt


def bench_baseline(path: Path) -> tuple[int, float]:
    cap = capture(path)
    mog = cv2.createBackgroundSubtractorMOG2()
    n = 0
    t0 = time.process_time()
    while True:
        ok, img = cap.read()
        if not ok:
            break
        small = cv2.resize(img, (320, 180), interpolation=cv2.INTER_AREA)
        mog.apply(small)
        n += 1
    dt = time.process_time() - t0
    cap.release()
    return n, dt


def bench_motion(path: Path, cam: Camera) -> tuple[int, float]:
    cap = capture(path)
    size = (cam.detect.width, cam.detect.height)
    md = MotionDetector(cam.motion, size)
    n = 0
    t0 = time.process_time()
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if (img.shape[1], img.shape[0]) != size:
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        md.detect(img)
        n += 1
    dt = time.process_time() - t0
    cap.release()
    return n, dt


class _Timed:
    """Wraps a stage's method and adds up its CPU time."""

    def __init__(self, obj: Any, name: str):
        self.total = 0.0
        self.calls = 0
        inner = getattr(obj, name)

        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.process_time()
            try:
                return inner(*a, **kw)
            finally:
                self.total += time.process_time() - t0
                self.calls += 1

        setattr(obj, name, timed)


def bench_full(path: Path, cam: Camera) -> dict[str, Any]:
    pipe = Pipeline(cam, clock_minutes=lambda t: 23 * 60)
    stages = {
        "motion": _Timed(pipe.motion, "detect"),
        "detector": _Timed(pipe.detector, "detect_guided" if hasattr(pipe.detector, "detect_guided") else "detect"),
        "tracker": _Timed(pipe.tracker, "update"),
        "rules": _Timed(pipe.rules, "step"),
        "lifecycle": _Timed(pipe.lifecycle, "step"),
    }
    n = analysed = events = 0
    t0 = time.process_time()
    for frame in iter_video(path, pipe, threads=1):
        n += 1
        if frame.image is None:
            continue
        r = pipe.process(Frame(frame.image, frame.t, frame.index))
        analysed += not r.skipped
        events += len(r.events)
    dt = time.process_time() - t0
    return {
        "frames": n,
        "analysed": analysed,
        "cpu_s": round(dt, 3),
        "fps_per_core": round(n / dt, 1),
        "ms_per_analysed_frame": round(1000 * dt / max(1, analysed), 2),
        "stage_ms_per_analysed_frame": {k: round(1000 * s.total / max(1, analysed), 3) for k, s in stages.items()},
        "detector_calls": stages["detector"].calls,
        "alert_events": events,
    }


def _event_latency_ms_p99(args: argparse.Namespace) -> tuple[float | None, str]:
    """HOOK (runtime + NATS): first frame of an event to the alert acknowledged by JetStream."""
    try:
        from adapters.camera import runner  # the runtime colleague's module
    except Exception as e:  # pragma: no cover - depends on the runtime being there
        return None, f"adapters.camera.runner not importable: {e}"
    fn = getattr(runner, "bench_event_latency", None)
    if fn is None:
        return None, "adapters.camera.runner.bench_event_latency() not provided yet"
    return float(fn()), "measured by adapters.camera.runner.bench_event_latency()"


def run(args: argparse.Namespace) -> dict[str, Any]:
    cv2.setNumThreads(1)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-camera-"))
    folder.mkdir(parents=True, exist_ok=True)
    clips = {}
    log(f"rendering {args.seconds:g} s clips into {folder} ...")
    clips["typical"] = write_clip(typical_scene(args.seconds), folder / "typical.mp4", seconds=args.seconds)
    clips["busy"] = write_clip(SCENARIOS["busy"](1), folder / "busy.mp4", seconds=args.seconds)

    out: dict[str, Any] = {}
    per: dict[str, dict[str, Any]] = {}
    for name, path in clips.items():
        log(f"{name}: decode, baseline, motion, full pipeline ...")
        nd, td = bench_decode(path)
        nb, tb = bench_baseline(path)
        nm, tm = bench_motion(path, camera())
        full = bench_full(path, camera(5.0))
        every = bench_full(path, camera(15.0))
        per[name] = {
            "decode_ms_per_frame": round(1000 * td / nd, 3),
            "baseline_fps_per_core": round(nb / tb, 1),
            "fps_motion_per_core": round(nm / tm, 1),
            "fps_full_per_core": full["fps_per_core"],
            "fps_full_every_frame_per_core": every["fps_per_core"],
            "cameras_per_core_at_5fps": round(full["fps_per_core"] / 15.0, 1),
            "full_5fps": full,
            "full_every_frame": {k: every[k] for k in ("ms_per_analysed_frame", "stage_ms_per_analysed_frame", "alert_events")},
        }
        log(f"  {json.dumps(per[name])}")
    busy, typical = per["busy"], per["typical"]
    out["fps_motion_per_core"] = busy["fps_motion_per_core"]
    out["fps_full_per_core"] = busy["fps_full_per_core"]
    out["fps_full_every_frame_per_core"] = busy["fps_full_every_frame_per_core"]
    out["baseline_fps_per_core"] = busy["baseline_fps_per_core"]
    out["cameras_per_core_at_5fps"] = typical["cameras_per_core_at_5fps"]
    out["cameras_per_core_at_5fps_busy"] = busy["cameras_per_core_at_5fps"]
    if args.with_nats:
        value, how = _event_latency_ms_p99(args)
        out["event_latency_ms_p99"] = value
        out["event_latency_note"] = how
    out["targets"] = {
        "16_cameras_at_5fps_typical": {"value": typical["cameras_per_core_at_5fps"], "target": 16, "met": typical["cameras_per_core_at_5fps"] >= 16},
        "full_vs_baseline": {
            "value": round(busy["fps_full_per_core"] / busy["baseline_fps_per_core"], 2),
            "every_frame": round(busy["fps_full_every_frame_per_core"] / busy["baseline_fps_per_core"], 2),
            "target": 0.5,
            "met": busy["fps_full_per_core"] >= 0.5 * busy["baseline_fps_per_core"],
        },
    }
    out["typical"] = typical
    out["busy"] = busy
    out["source"] = {"size": [640, 360], "fps": 15, "codec": "MPEG-4 Part 2 (mp4v)", "seconds": args.seconds}
    out["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "opencv": cv2.__version__, "threads": 1}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.camera", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="length of each rendered clip (default 30)")
    p.add_argument("--with-nats", action="store_true", help="also measure event_latency_ms_p99 (needs the runtime; a hook)")
    p.add_argument("--keep", metavar="DIR", help="render the clips into DIR and keep them")
    args = p.parse_args(argv)
    result = run(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
