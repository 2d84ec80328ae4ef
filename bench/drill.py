"""Drill benchmark: `python -m bench.drill [--quick]`.

Progress goes to stderr; the LAST line of stdout is one JSON object:

    {"sample": {"sim_units", "sim_cameras", "speedup", "cpu_per_camera", ...},
     "city":   {"sim_units", "sim_cameras", "speedup", "cpu_per_camera", ...},
     "machine": {...}}

Everything runs on an embedded nats-server, with the real engine (`dispatch.app.build_app`).

* cameras (sample district): every camera of Tieshan rendered live (`simulators.scene.Scene` served
  as MJPEG by `simulators.mjpeg.MjpegServer`, 10 fps, 640x360) and watched by the real camera
  adapter (`adapters.camera.runner.CameraRunner`, a child process per camera), an incident scripted
  into each camera every ~12 s so the detector has people to look at. ``cpu_per_camera`` is CPU
  seconds per wall second per camera (rendering + JPEG in this process, decoding + analysis in the
  child), i.e. the fraction of a core one synthetic camera costs. The video always plays at real
  time, whatever the drill's speed.
* units + engine (both districts): every unit simulated (positions every 10 simulated seconds,
  beat walking, orders answered), the engine on a policy scaled by the speed, and incidents raised
  at a steady simulated rate (one per simulated minute in the sample; in the city each of the 200
  cameras raises one about every 10 simulated minutes, at the ALERT level - 200 live video pipelines do not fit on
  2 cores, see cpu_per_camera). The speed is raised step by step; ``speedup`` is the highest
  simulated-seconds-per-wall-second at which the drill kept up: the unit simulator's p99 lag under
  0.25 s wall, 95% of incidents ordered (or escalated) within 0.5 s wall of their alert, none
  left unanswered. In the sample the live cameras keep running during the ladder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def say(*parts: Any) -> None:
    print("[bench]", *parts, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, int(math.ceil(q / 100.0 * len(s))) - 1))]


def proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) a process has used; 0 when it is gone."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


# --------------------------------------------------------------------------- districts


def sample_district() -> Any:
    from dispatch.district import load_district

    return load_district(REPO / "config" / "districts" / "tieshan.yaml")


def city_district(n_units: int = 2000, n_cameras: int = 200, n_nodes: int = 10_000, seed: int = 1) -> tuple[Any, Any]:
    """A generated city: synthetic_city streets, 5x5 communities, units on their beats, cameras at street nodes."""
    from dispatch.district import District
    from dispatch.streets import synthetic_city

    rng = random.Random(seed)
    graph = synthetic_city(n_nodes, seed=seed)
    lats = [graph.coords(i)[0] for i in range(graph.node_count)]
    lons = [graph.coords(i)[1] for i in range(graph.node_count)]
    s, n, w, e = min(lats), max(lats), min(lons), max(lons)
    k = 5
    comms = []
    for i in range(k):
        for j in range(k):
            a, b = s + (n - s) * i / k, s + (n - s) * (i + 1) / k
            c, d = w + (e - w) * j / k, w + (e - w) * (j + 1) / k
            comms.append({"id": f"c{i}{j}", "name": f"Block {i}{j}", "boundary": [[a, c], [b, c], [b, d], [a, d]]})
    by_comm: dict[str, list[int]] = {c["id"]: [] for c in comms}
    for v in range(graph.node_count):
        lat, lon = graph.coords(v)
        i = min(int((lat - s) / (n - s) * k), k - 1)
        j = min(int((lon - w) / (e - w) * k), k - 1)
        by_comm[f"c{i}{j}"].append(v)
    units = []
    for u in range(n_units):
        kind = ("police", "auxiliary", "auxiliary", "volunteer")[u % 4]
        mode = "foot" if kind == "volunteer" else ("car", "motorbike", "bicycle", "foot")[u % 4 if u % 4 != 3 else 0]
        beat = comms[u % len(comms)]["id"]
        lat, lon = graph.coords(rng.choice(by_comm[beat]))
        units.append({"id": f"u{u:04d}", "callsign": f"U{u}", "kind": kind, "mode": mode, "beat": beat,
                      "talkgroup": kind, "home": {"lat": lat, "lon": lon}})
    cams = []
    for c in range(n_cameras):
        beat = comms[c % len(comms)]["id"]
        lat, lon = graph.coords(rng.choice(by_comm[beat]))
        cams.append({"id": f"cam{c:03d}", "name": f"Camera {c}", "community": beat, "position": {"lat": lat, "lon": lon},
                     "stream": f"rtsp://127.0.0.1:8554/cam{c:03d}"})
    d = District.model_validate({
        "name": "Generated city", "timezone": "Asia/Shanghai", "center": {"lat": (s + n) / 2, "lon": (w + e) / 2},
        "communities": comms, "cameras": cams, "units": units,
    })
    d._graph = graph  # no street file: the graph is handed over directly
    return d, graph


# --------------------------------------------------------------------------- cameras


async def bench_cameras(urls: list[str], district: Any, seconds: float, fps: float, n: int | None) -> tuple[dict[str, Any], Any]:
    """All (or n) cameras live; returns the figures and the still-running runtime (the ladder runs beside it)."""
    from simulators.drill import DEFAULT_CAMERA_RULES, DrillRuntime
    from simulators.units import SimClock

    cams = [c.id for c in district.cameras][: n or None]
    clock = SimClock(1.0)
    rt = DrillRuntime(district, urls, exercise="bench-cameras", clock=clock, prefix="benchcam", seed=1, cameras=cams,
                      camera_fps=fps, camera_rules=DEFAULT_CAMERA_RULES, sim_units=[], scale_policy=False)
    t0 = time.monotonic()
    await rt.serve_cameras()
    await rt.start()
    down = await rt.wait_cameras(90.0)
    say(f"cameras: {len(cams)} live at {fps:g} fps, adapter up after {time.monotonic() - t0:.1f} s" + (f" (not online: {down})" if down else ""))
    clock.start()
    kinds = ["intrusion", "crowd", "fight", "intrusion"]
    stop = asyncio.Event()

    async def incidents() -> None:
        k = 0
        while not stop.is_set():
            for i, cid in enumerate(cams):
                if (i + k) % 3 == 0:
                    rt.inject_camera(cid, kinds[(i + k) % len(kinds)], source="bench")
            k += 1
            await asyncio.sleep(12.0)

    task = asyncio.create_task(incidents())
    await asyncio.sleep(3.0)
    pids = [rt.runner.cams[c].worker.pid for c in cams if rt.runner.cams[c].worker]
    w0 = sum(proc_cpu(p) for p in pids)
    c0, t1 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - t1
    main = time.process_time() - c0
    workers = sum(proc_cpu(p) for p in pids) - w0
    st = rt.runner.status()
    fps_seen = [st[c]["fps"] for c in cams]
    out = {
        "cameras": len(cams), "fps": fps, "seconds": round(wall, 1),
        "cpu_per_camera": round((main + workers) / (len(cams) * wall), 3),
        "cpu_per_camera_worker": round(workers / (len(cams) * wall), 3),
        "cpu_per_camera_render": round(main / (len(cams) * wall), 3),
        "measured_fps_p50": round(pct(fps_seen, 50) or 0.0, 1), "measured_fps_min": round(min(fps_seen), 1),
        "online": sum(1 for c in cams if st[c]["state"] == "online"),
        "alerts": sum(st[c]["alerts"] for c in cams),
    }
    say(f"cameras: {out['cpu_per_camera']:.3f} of a core per camera (render+JPEG {out['cpu_per_camera_render']:.3f}, "
        f"decode+analysis {out['cpu_per_camera_worker']:.3f}); fps p50 {out['measured_fps_p50']}, min {out['measured_fps_min']}; "
        f"{out['online']}/{len(cams)} online; {out['alerts']} alerts")

    async def stop_all() -> None:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rt.stop()

    return out, stop_all


# --------------------------------------------------------------------------- units + engine


async def run_step(urls: list[str], district: Any, graph: Any, speed: float, seconds: float, incident_every_s: float,
                   camera_alerts: bool, step: int) -> dict[str, Any]:
    import nats

    from dispatch.app import build_app
    from dispatch.events import Alert, AlertSource, Area, CapCertainty, CapStatus, IncidentEvent, IncidentKind, encode, new_id
    from dispatch.subjects import Subjects
    from simulators.drill import make_drill_district
    from simulators.units import Behaviour, Fleet, SimClock, UnitSimulator, _quiet

    prefix = f"bench{step}"
    s = Subjects(prefix)
    exercise = f"bench-{step}"
    d = make_drill_district(district, speed=speed)
    d._graph = graph
    app, ert = build_app(d, urls, prefix=prefix, name=f"bench-engine-{step}", graph=graph)
    await app.start()
    clock = SimClock(speed)
    fleet = Fleet(d, Behaviour(), seed=step, exercise=exercise, graph=graph)
    sim = UnitSimulator(fleet, urls, clock, prefix=prefix, name=exercise)
    await sim.connect()
    nc = await nats.connect(urls, error_cb=_quiet)
    js = nc.jetstream()
    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    alerts_of: dict[str, tuple[str, ...]] = {}
    escalated: set[str] = set()

    async def on_event(m: Any) -> None:
        ev = IncidentEvent.model_validate_json(m.data)
        if ev.event.value in ("opened", "merged"):
            alerts_of[ev.incident_id] = alerts_of.get(ev.incident_id, ()) + ev.alert_ids
            if ev.event.value == "merged":  # joined an incident that already had its order
                for a in ev.alert_ids:
                    if a in sent:
                        answered.setdefault(a, time.time() - sent[a])
        if ev.event.value == "assigned":
            for a in alerts_of.get(ev.incident_id, ()):
                if a in sent and a not in answered:
                    answered[a] = time.time() - sent[a]
        elif ev.event.value == "escalated":
            escalated.add(ev.incident_id)

    sub = await nc.subscribe(s.all_incident_events, cb=on_event)
    rng = random.Random(step)
    c0, t0 = time.process_time(), time.monotonic()
    clock.start()
    await sim.start()
    kinds = [IncidentKind.intrusion, IncidentKind.theft, IncidentKind.suspicious, IncidentKind.medical, IncidentKind.crowd]
    next_at = 5.0
    while time.monotonic() - t0 < seconds:
        now = clock.now()
        while next_at <= now:
            if camera_alerts and d.cameras:
                cam = rng.choice(d.cameras)
                alert = Alert(event_id=new_id(), source=AlertSource.camera, camera=cam.id, kind=rng.choice(kinds), priority=2,
                              zones=("gate",), label="person", score=0.8, exercise=exercise, status=CapStatus.Exercise)
                subject = s.camera_alert(cam.id)
            else:
                lat, lon = graph.coords(rng.randrange(graph.node_count))
                alert = Alert(event_id=new_id(), source=AlertSource.operator, kind=rng.choice(kinds), priority=2,
                              area=Area(lat=lat, lon=lon), certainty=CapCertainty.Observed, console="bench",
                              exercise=exercise, status=CapStatus.Exercise)
                subject = s.operator_alert("bench")
            sent[alert.id] = time.time()
            await js.publish(subject, encode(alert), headers={"Nats-Msg-Id": alert.id})
            next_at += rng.expovariate(1.0 / incident_every_s)
        await asyncio.sleep(0.05)
    # how current the engine's picture is: units whose last position it processed is at most two report
    # intervals (plus half a second) old
    from datetime import datetime, timezone

    now_utc = datetime.now(timezone.utc)
    limit = 2 * fleet.b.position_interval_s / speed + 0.5
    engine_units = ert.shell.state.units if ert.shell else {}
    fresh = sum(1 for uid in fleet.units if (u := engine_units.get(uid)) is not None and u.fix_time is not None
                and (now_utc - u.fix_time).total_seconds() <= limit)
    await asyncio.sleep(1.0)  # answers to the last alerts
    wall = time.monotonic() - t0
    cpu = time.process_time() - c0
    sim_s = clock.now()
    lags = [x / speed for x in sim.lags]
    lat = sorted(answered.values())
    await sub.unsubscribe()
    await sim.stop()
    await app.stop()
    await nc.close()
    res = {
        "speed": speed, "wall_s": round(wall, 1), "sim_s": round(sim_s, 1), "units": len(fleet.units),
        "positions_sent": sim.sent["position"], "positions_per_wall_s": round(sim.sent["position"] / wall, 1),
        "unit_lag_p99_wall_s": round(pct(lags, 99) or 0.0, 3),
        "incidents": len(sent), "answered": len(answered), "escalated": len(escalated),
        "engine_positions_fresh": round(fresh / max(len(fleet.units), 1), 3),
        "alert_to_order_p50_ms": None if not lat else round(1000 * pct(lat, 50), 1),
        "alert_to_order_p95_ms": None if not lat else round(1000 * pct(lat, 95), 1),
        "cpu_main_cores": round(cpu / wall, 2),
        "engine_deadletters": ert.shell.deadletters if ert.shell else None,
    }
    res["kept_up"] = bool(res["unit_lag_p99_wall_s"] < 0.25 and len(answered) >= 0.95 * len(sent)
                          and (res["alert_to_order_p95_ms"] or 0) < 500 and res["engine_positions_fresh"] >= 0.95)
    say(f"  {speed:g}x: {res['sim_s']:.0f} simulated s in {res['wall_s']:.0f} s; {res['positions_per_wall_s']:.0f} positions/s; "
        f"unit lag p99 {res['unit_lag_p99_wall_s'] * 1000:.0f} ms; engine positions fresh {res['engine_positions_fresh']:.0%}; "
        f"{len(answered)}/{len(sent)} incidents ordered, "
        f"p95 {res['alert_to_order_p95_ms']} ms; main process {res['cpu_main_cores']:.2f} cores -> "
        f"{'kept up' if res['kept_up'] else 'FELL BEHIND'}")
    return res


async def ladder(urls: list[str], district: Any, graph: Any, speeds: list[float], seconds: float, incident_every_s: float,
                 camera_alerts: bool, first_step: int) -> tuple[float, list[dict[str, Any]]]:
    steps = []
    best = 0.0
    for k, sp in enumerate(speeds):
        r = await run_step(urls, district, graph, sp, seconds, incident_every_s, camera_alerts, first_step + k)
        steps.append(r)
        if r["kept_up"]:
            best = sp
        elif best and k > 0 and not steps[-2]["kept_up"]:
            break  # two failures in a row: no point going faster
    return best, steps


# --------------------------------------------------------------------------- main


def alert_cost_s(n: int = 2000) -> float:
    """CPU seconds to build, validate and encode one camera alert (what an alert-level camera does)."""
    from dispatch.events import Alert, AlertSource, CapStatus, IncidentKind, encode, new_id

    c0 = time.process_time()
    for _ in range(n):
        encode(Alert(event_id=new_id(), source=AlertSource.camera, camera="cam001", kind=IncidentKind.intrusion, priority=2,
                     zones=("gate",), label="person", score=0.8, exercise="bench", status=CapStatus.Exercise))
    return (time.process_time() - c0) / n


async def sample_part(urls: list[str], a: argparse.Namespace) -> dict[str, Any]:
    d = sample_district()
    graph = d.load_streets()
    say(f"sample district {d.name}: {len(d.units)} units, {len(d.cameras)} cameras")
    cams, stop_cams = await bench_cameras(urls, d, 6.0 if a.quick else a.camera_seconds, 10.0, 4 if a.quick else None)
    try:
        say("sample: units + engine, raising the speed, the live cameras running beside")
        speeds = [10.0, 20.0] if a.quick else [10.0, 20.0, 40.0, 60.0, 100.0]
        best, steps = await ladder(urls, d, graph, speeds, 5.0 if a.quick else a.step_seconds, 60.0, False, 1)
    finally:
        await stop_cams()
    say("sample: units + engine alone (no live cameras)")
    speeds = [20.0, 40.0] if a.quick else [20.0, 40.0, 60.0, 100.0]
    best_alone, steps_alone = await ladder(urls, d, graph, speeds, 5.0 if a.quick else a.step_seconds, 60.0, False, 20)
    return {
        "district": d.name, "sim_units": len(d.units), "sim_cameras": cams["cameras"], "camera_level": "video",
        "speedup": best, "cpu_per_camera": cams["cpu_per_camera"], "speedup_without_cameras": best_alone,
        "ladder_max": speeds[-1], "cameras": cams, "steps": steps, "steps_without_cameras": steps_alone,
        "target_10x": best >= 10.0,
    }


async def city_part(urls: list[str], a: argparse.Namespace, sample: dict[str, Any] | None) -> dict[str, Any]:
    n_units, n_cams = (300, 40) if a.quick else (2000, 200)
    t0 = time.monotonic()
    city, graph = city_district(n_units, n_cams, 2500 if a.quick else 10_000)
    say(f"city: {n_units} units, {n_cams} cameras (alert level), {graph.node_count} street nodes, built in {time.monotonic() - t0:.1f} s")
    every = 600.0 / n_cams  # a busy city night: every camera raises an incident about every 10 simulated minutes
    speeds = [1.0, 2.0] if a.quick else [1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 60.0]
    best, steps = await ladder(urls, city, graph, speeds, 5.0 if a.quick else a.step_seconds, every, True, 100)
    per_alert = alert_cost_s()
    rate = max((st["incidents"] / st["wall_s"] for st in steps if st["speed"] == best), default=0.0)
    video = sample["cpu_per_camera"] if sample else None
    return {
        "district": city.name, "sim_units": n_units, "sim_cameras": n_cams, "camera_level": "alert",
        "speedup": best, "ladder_max": speeds[-1],
        "cpu_per_camera": round(per_alert * rate / n_cams, 7), "cpu_per_alert_ms": round(per_alert * 1000, 3),
        "cpu_per_camera_video": video, "cores_for_video_cameras": None if video is None else round(n_cams * video, 1),
        "street_nodes": graph.node_count, "steps": steps, "target_1x": best >= 1.0,
    }


async def amain(a: argparse.Namespace) -> dict[str, Any]:
    from dispatch.logs import configure
    from dispatch.natsserver import EmbeddedNats

    configure(level="error")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-drill-") as tmp:
        server = EmbeddedNats(Path(tmp) / "nats", name="bench-drill")
        await server.astart()
        try:
            out["sample"] = None if a.city_only else await sample_part([server.url], a)
            out["city"] = await city_part([server.url], a, out["sample"])
        finally:
            await server.astop()
    from bench.engine import machine

    out["machine"] = machine()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.drill", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a few cameras, small city, short steps (a smoke run)")
    p.add_argument("--camera-seconds", type=float, default=20.0, help="how long the cameras are measured")
    p.add_argument("--step-seconds", type=float, default=10.0, help="wall seconds per speed step")
    p.add_argument("--city-only", action="store_true", help="only the generated city")
    a = p.parse_args(argv)
    result = asyncio.run(amain(a))
    s, c = result["sample"], result["city"]
    if s:
        say(f"sample: {s['sim_units']} units, {s['sim_cameras']} live cameras: speedup {s['speedup']:g}x "
            f"({s['speedup_without_cameras']:g}x without cameras), {s['cpu_per_camera']:.3f} core per camera")
    say(f"city: {c['sim_units']} units, {c['sim_cameras']} cameras at the alert level: speedup {c['speedup']:g}x")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
