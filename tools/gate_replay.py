"""Offline replays for the gate-entry work (docs/camera-adapter.md, "Two people meeting in the gate").

    PYTHONPATH=. python tools/gate_replay.py render DIR     # latency clip (60 s) + busy seeds 1-8 into DIR
    PYTHONPATH=. python tools/gate_replay.py latency DIR [--timings 27]
    PYTHONPATH=. python tools/gate_replay.py busy DIR [--seeds 1-8] [--jpeg]

Clips are decoded with OpenCV and fed to `Pipeline.process` frame by frame. The latency clip's frames
are JPEG-encoded at q85 and decoded again (as the MJPEG server sends them) and replayed at several
timings: timing i starts at frame i % 3 (the 5 fps phase), frame times jittered by +-12 ms and 3% of
frames dropped (rng seed i; timings 0-2 without jitter or drops). New intrusion alerts are credited to
scripted gate entries with bench.camera.credit_alerts (entries shorter than 1 s left out, as in the
bench). Busy clips: the bench camera (gate restricted at night, clock at 23:00), decoded frames, or with
`--jpeg` the JPEG round trip too. Prints per run: entries alerted / entries, duplicate intrusion `new`s (an alert for an entry
already alerted), unmatched alerts, missed entries, entries alerted late (the alert's frame more than 0.7 s
of video time after the entry: detection only, no publishing, so not the bench's wall-clock latency),
and the other alerts' `new`s by kind. One process,
one core."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from adapters.camera.pipeline import Pipeline
from adapters.camera.types import Frame
from bench.camera import camera as bench_camera
from bench.camera import credit_alerts, latency_district, latency_scene
from simulators.scene import SCENARIOS, write_clip

NIGHT = 23 * 60


def render(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_clip(latency_scene(60.0), folder / "latency.mp4", seconds=60.0)
    for s in range(1, 9):
        write_clip(SCENARIOS["busy"](s), folder / f"busy{s}.mp4")


def replay(clip: Path, cam, *, start: int = 0, jitter: float = 0.0, drop: float = 0.0, seed: int = 0,
           jpeg: bool = False) -> dict:
    summary = json.loads(Path(str(clip) + ".events.json").read_text())
    truth = [json.loads(line) for line in Path(str(clip) + ".truth.jsonl").read_text().splitlines()]
    fps = float(summary["fps"])
    rng = np.random.default_rng(seed)
    pipe = Pipeline(cam, clock_minutes=lambda t: NIGHT)
    cap = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    news: list[tuple[float, float, float, object]] = []
    others: Counter = Counter()
    k = -1
    last = 0.0
    while True:
        ok = cap.grab()
        if not ok:
            break
        k += 1
        if k < start:
            continue
        if drop and rng.random() < drop:
            continue
        t = k / fps + (float(rng.uniform(-jitter, jitter)) if jitter else 0.0)
        t = max(t, last + 1e-3)
        last = t
        if not pipe.wants(t):
            r = pipe.process(Frame(image=np.zeros((1, 1, 3), np.uint8), t=t, index=k))
            assert r.skipped
            continue
        ok, img = cap.retrieve()
        if not ok:
            break
        if jpeg:
            _, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        r = pipe.process(Frame(image=img, t=t, index=k))
        for e in r.events:
            if e.phase != "new":
                continue
            if e.kind == "intrusion":
                news.append((e.t, e.start_t, k / fps, e.box))
            else:
                others[e.kind] += 1
    cap.release()
    played = k / fps
    intrusions = [e for e in summary["events"] if e["kind"] == "intrusion"]
    credited, unmatched = credit_alerts(news, truth, intrusions, fps)
    # duplicates: matched alerts that credited no entry (every candidate entry already had an alert)
    dups = len(news) - unmatched - len(credited)
    entries = [e for e in intrusions if e["start"] <= played and (e["end"] is None or e["end"] - e["start"] >= 1.0)]
    missed = [f"{e['ids'][0]}@{e['start']}" for e in entries if (e["ids"][0], e["start"]) not in credited]
    # late: alerted more than 0.7 s (video time) after the person's ground point entered the zone
    late = [f"{e['ids'][0]}@{e['start']}:{credited[(e['ids'][0], e['start'])][0] - e['start']:.1f}s" for e in entries
            if (e["ids"][0], e["start"]) in credited and credited[(e["ids"][0], e["start"])][0] - e["start"] > 0.7]
    return {"entries": len(entries), "alerted": len(entries) - len(missed), "dups": dups, "unmatched": unmatched,
            "missed": missed, "late": late, "others": dict(others), "news": len(news)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["render", "latency", "busy"])
    p.add_argument("folder", type=Path)
    p.add_argument("--timings", type=int, default=27)
    p.add_argument("--seeds", default="1-8")
    p.add_argument("--jpeg", action="store_true", help="busy: JPEG q85 round trip too")
    a = p.parse_args(argv)
    cv2.setNumThreads(1)
    if a.what == "render":
        render(a.folder)
        return 0
    tot = Counter()
    others: Counter = Counter()
    if a.what == "latency":
        cam = latency_district({"lat1": "x"}).cameras[0]
        for i in range(a.timings):
            jit = (0.012, 0.03) if i >= 3 else (0.0, 0.0)
            r = replay(a.folder / "latency.mp4", cam, start=i % 3, jitter=jit[0], drop=jit[1], seed=i, jpeg=True)
            print(f"timing {i}: {r['alerted']}/{r['entries']} dups {r['dups']} unmatched {r['unmatched']} "
                  f"missed {r['missed']} late {r['late']} others {r['others']}", flush=True)
            tot.update({k: r[k] for k in ("entries", "alerted", "dups", "unmatched")})
            tot["late"] += len(r["late"])
            others.update(r["others"])
    else:
        lo, _, hi = a.seeds.partition("-")
        cam = bench_camera(5.0)
        for s in range(int(lo), int(hi or lo) + 1):
            r = replay(a.folder / f"busy{s}.mp4", cam, jpeg=a.jpeg)
            print(f"seed {s}: {r['alerted']}/{r['entries']} dups {r['dups']} unmatched {r['unmatched']} "
                  f"missed {len(r['missed'])} late {len(r['late'])} others {r['others']}", flush=True)
            tot.update({k: r[k] for k in ("entries", "alerted", "dups", "unmatched")})
            tot["late"] += len(r["late"])
            others.update(r["others"])
    print(f"TOTAL {a.what}: alerted {tot['alerted']}/{tot['entries']} late {tot['late']} dups {tot['dups']} unmatched {tot['unmatched']} "
          f"others {dict(others)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
