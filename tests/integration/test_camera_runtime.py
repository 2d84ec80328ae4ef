"""The camera adapter's runtime over a real nats-server, real MJPEG over HTTP, real files and child processes.

The synthetic cameras' MJPEG server (simulators/mjpeg.py) plays rendered scenes
live at 10 fps; a test can stop a stream (dropped, or hanging with the
connection open) and resume it, or make it send garbage. The detection pipeline
is a scripted stand-in (`ScriptedPipeline`): it emits the alert phases a test
appends to a per-camera script file, with the current frame as the snapshot,
or aborts its process on request, so these tests check the runtime (workers,
restarts, health, outbox, JetStream, object store, controls, feedback) and not
the detector, which has its own tests.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from adapters.camera.types import AlertEvent, FrameResult
from dispatch.subjects import Subjects

REPO = Path(__file__).resolve().parents[2]
TIESHAN = REPO / "config" / "districts" / "tieshan.yaml"

FAST = dict(open_timeout_s=2.0, read_timeout_s=2.0, backoff_initial_s=0.3, backoff_max_s=2.0,
            restart_initial_s=0.5, restart_max_s=4.0, health_interval_s=1.0, drain_timeout_s=3.0)


# --------------------------------------------------------------------------- a scripted pipeline (runs in the workers)


class ScriptedPipeline:
    """Stand-in for adapters.camera.pipeline.Pipeline: does what `<script_dir>/<camera>.jsonl` says.

    Lines appended after the worker started: {"phase": "new"|"update"|"end", "event_id": ..., "kind": ...}
    emits that phase (snapshot = the current frame), {"crash": true} aborts the process.
    """

    def __init__(self, camera: Any, tz: str = "UTC", *, script_dir: str, **_: Any) -> None:
        self.camera = camera
        self.path = Path(script_dir) / f"{camera.id}.jsonl"
        self.pos = self.path.stat().st_size if self.path.exists() else 0  # a restarted worker does not replay
        self.enabled = True
        self.sensitivity = 0.5
        self.start: dict[str, float] = {}

    def set_enabled(self, on: bool) -> None:
        self.enabled = on

    def set_sensitivity(self, s: float) -> None:
        self.sensitivity = s

    def _commands(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        nl = data.rfind(b"\n")
        if nl < 0:
            return []
        self.pos += nl + 1
        return [json.loads(line) for line in data[:nl].splitlines() if line.strip()]

    def process(self, frame: Any) -> FrameResult:
        events = []
        for cmd in self._commands():
            if cmd.get("crash"):
                os.abort()  # as a decoder fed a crafted file does
            eid = cmd.get("event_id", "ev1")
            self.start.setdefault(eid, frame.t)
            ok, jpg = cv2.imencode(".jpg", frame.image)
            h, w = frame.image.shape[:2]
            events.append(AlertEvent(
                phase=cmd["phase"], event_id=eid, kind=cmd.get("kind", "intrusion"), priority=2, t=frame.t,
                start_t=self.start[eid], end_t=frame.t if cmd["phase"] == "end" else None, zones=("gate",),
                label="person", score=0.8, box=(10, 10, 60, 120), frame_size=(w, h),
                snapshot_jpeg=jpg.tobytes() if cmd.get("snapshot", cmd["phase"] != "end") else None,
                detail={"frame_index": frame.index},
            ))
        return FrameResult(frame.index, frame.t, [], [], [], events, skipped=not self.enabled)

    def flush(self, t: float) -> list[AlertEvent]:
        return []


def say(script_dir: Path, camera: str, **cmd: Any) -> None:
    with open(script_dir / f"{camera}.jsonl", "a") as f:
        f.write(json.dumps(cmd) + "\n")


# --------------------------------------------------------------------------- live MJPEG cameras


@pytest.fixture(scope="module")
async def cameras():
    """The synthetic cameras' live MJPEG server (simulators/mjpeg.py), one per module."""
    from simulators.mjpeg import MjpegServer

    srv = await MjpegServer().astart()
    try:
        yield srv
    finally:
        await srv.astop()


def live(srv: Any, cid: str, fps: float = 10.0) -> str:
    """A live camera on the server: the gate scene with a person walking through, looped; its URL."""
    from simulators.scene import SCENARIOS

    return srv.add_camera(cid, SCENARIOS["walk_through_gate"](1), fps=fps, loop_s=20.0)


# --------------------------------------------------------------------------- helpers


def write_clip(path: Path, frames: int = 40, fps: float = 10.0, fourcc: str = "mp4v") -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (160, 120))
    for i in range(frames):
        img = np.full((120, 160, 3), (i * 6) % 256, np.uint8)
        cv2.putText(img, str(i), (20, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
        w.write(img)
    w.release()
    return path


def cam(cid: str, stream: str, offline_s: float = 2.0, **extra: Any) -> dict[str, Any]:
    return {
        "id": cid, "name": f"Camera {cid}", "community": "c1", "position": {"lat": 30.2, "lon": 114.9}, "stream": stream,
        "zones": [{"name": "gate", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]], "restricted": True}],
        "rules": {"offline": {"seconds": offline_s}}, **extra,
    }


def make_runner(cams: list[dict[str, Any]], servers: list[str], prefix: str, tmp: Path, state: str = "state", **kw: Any):
    from district_fixtures import make_district

    from adapters.camera.runner import CameraRunner

    scripts = tmp / "scripts"
    scripts.mkdir(exist_ok=True)
    district = make_district(cameras=cams)
    opts = {**FAST, **kw}
    return CameraRunner(district, None, servers, prefix=prefix, state_dir=tmp / state,
                        pipeline_factory=functools.partial(ScriptedPipeline, script_dir=str(scripts)), **opts), scripts


async def until(pred, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(every)


async def stored_alerts(js: Any, s: Subjects) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Every message in the prefix's ALERTS stream: (alert, headers)."""
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(s.stream_alerts)
    except NotFoundError:
        return []
    out = []
    if info.state.messages == 0:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            m = await js.get_msg(s.stream_alerts, seq)
        except NotFoundError:
            continue
        out.append((json.loads(m.data), dict(m.headers or {})))
    return out


def of_event(msgs, event_id: str) -> list[dict[str, Any]]:
    return [a for a, _ in msgs if a["event_id"] == event_id]


class HealthLog:
    def __init__(self) -> None:
        self.msgs: list[tuple[float, dict[str, Any]]] = []

    async def cb(self, m: Any) -> None:
        self.msgs.append((time.monotonic(), json.loads(m.data)))

    def of(self, camera: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, h) for t, h in self.msgs if h["camera"] == camera]

    def last(self, camera: str) -> dict[str, Any] | None:
        got = self.of(camera)
        return got[-1][1] if got else None

    def first(self, camera: str, state: str, after: float = 0.0) -> float | None:
        return next((t for t, h in self.of(camera) if h["state"] == state and t >= after), None)


# --------------------------------------------------------------------------- tests


async def test_a_live_camera_reports_health_and_sends_each_event_phase_once_with_its_snapshot(
    nats_server, nc, fresh_prefix, cameras, tmp_path
):
    from dispatch.events import CameraFeedback
    from dispatch.events import CameraHealth, IncidentEvent, Area, IncidentEventKind, IncidentKind, encode

    s = Subjects(fresh_prefix)
    health = HealthLog()
    await nc.subscribe(s.all_camera_health, cb=health.cb)
    runner, scripts = make_runner([cam("gate1", live(cameras, "gate1"))], [nats_server.url], fresh_prefix, tmp_path)
    await runner.start()
    try:
        await until(lambda: (h := health.last("gate1")) and h["state"] == "online" and h["fps"] >= 5,
                    15, "gate1 online with its fps")
        await asyncio.sleep(3.5)  # past the burst of frames FFmpeg buffered while probing the stream
        h = CameraHealth.model_validate(health.last("gate1"))
        assert h.state.value == "online" and 8.0 <= h.fps <= 12.0, h  # the server plays 10 fps

        say(scripts, "gate1", phase="new", event_id="ev1")
        js = nc.jetstream()
        await until(lambda: _has(js, s, "ev1", 1), 5, "the new alert in the stream")
        say(scripts, "gate1", phase="update", event_id="ev1")
        say(scripts, "gate1", phase="end", event_id="ev1")
        await until(lambda: _has(js, s, "ev1", 3), 5, "update and end in the stream")
        await asyncio.sleep(1.0)  # frames keep coming: still one message per phase, not one per frame
        msgs = await stored_alerts(js, s)
        ev = of_event(msgs, "ev1")
        assert [a["phase"] for a in ev] == ["new", "update", "end"]
        assert len({a["id"] for a in ev}) == 3
        for a, hdr in msgs:
            assert hdr.get("Nats-Msg-Id") == a["id"]  # de-duplication id = alert id
        new, upd, end = ev
        assert new["source"] == "camera" and new["camera"] == "gate1" and new["kind"] == "intrusion"
        assert new["zones"] == ["gate"] and new["label"] == "person" and new["box"] == [10, 10, 60, 120]
        assert new["frame_size"] == [640, 360] and new["start_time"] and end["end_time"]
        assert new["snapshot"] == upd["snapshot"] == end["snapshot"] == "gate1/ev1.jpg"

        obs = await js.object_store(s.bucket_snapshots)
        jpeg = (await obs.get("gate1/ev1.jpg")).data
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (360, 640, 3)  # the frame of the last update: the best view so far

        # runtime controls: detection off and a new sensitivity, answered with the new state
        rep = await nc.request(s.camera_control("gate1"), json.dumps({"enabled": False, "sensitivity": 0.8}).encode(), timeout=5)
        state = json.loads(rep.data)
        assert state["camera"] == "gate1" and state["enabled"] is False and state["sensitivity"] == 0.8
        assert state["applied"] is True and state["state"] == "online" and not state["error"]
        rep = await nc.request(s.camera_control("gate1"), b'{"sensitivity": 3}', timeout=5)
        bad = json.loads(rep.data)
        assert bad["applied"] is False and "sensitivity" in bad["error"] and bad["sensitivity"] == 0.8
        rep = await nc.request(s.camera_control("gate1"), b"{}", timeout=5)
        assert json.loads(rep.data)["enabled"] is False  # a query
        await nc.request(s.camera_control("gate1"), b'{"enabled": true}', timeout=5)

        # feedback: an operator dismisses ev1; a second event is closed as a false alarm by the engine
        fb = CameraFeedback(event_id="ev1", verdict="dismissed", reason="tree shadow")
        ack = json.loads((await nc.request(s.camera_feedback("gate1"), encode(fb), timeout=5)).data)
        assert ack["ok"] is True and ack["recorded"] is True
        say(scripts, "gate1", phase="new", event_id="ev2", kind="loitering")
        await until(lambda: _has(js, s, "ev2", 1), 5, "ev2 in the stream")
        ev2 = of_event(await stored_alerts(js, s), "ev2")[0]
        inc = IncidentEvent(incident_id="inc1", seq=5, event=IncidentEventKind.resolved, state="resolved",
                            kind=IncidentKind.loitering, priority=3, place=Area(lat=30.2, lon=114.9),
                            alert_ids=(ev2["id"],), camera="gate1", detail="false alarm: a delivery rider waiting")
        await nc.publish(s.incident_event("inc1", "resolved"), encode(inc))
        await nc.flush()
        await asyncio.sleep(0.3)
        res = await _cli("camera", "stats", "--state-dir", str(tmp_path / "state"))
        assert res[0] == 0, res
        rows = {tuple(line.split()[:2]): line.split()[2:] for line in res[1].splitlines()[2:]}
        assert rows[("gate1", "intrusion")] == ["1", "0", "1", "100%"]
        assert rows[("gate1", "loitering")] == ["1", "0", "1", "100%"]
    finally:
        await runner.stop()
    # stopped: the camera says so
    await asyncio.sleep(0.2)
    assert health.last("gate1")["state"] == "offline"


async def _has(js: Any, s: Subjects, event_id: str, n: int) -> bool:
    return len(of_event(await stored_alerts(js, s), event_id)) >= n


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "dispatch.cli", *args, cwd=REPO,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_a_stopped_stream_raises_camera_offline_and_comes_back_by_itself(nats_server, nc, fresh_prefix, cameras, tmp_path):
    s = Subjects(fresh_prefix)
    health = HealthLog()
    await nc.subscribe(s.all_camera_health, cb=health.cb)
    js = nc.jetstream()
    runner, _ = make_runner([cam("lane", live(cameras, "lane"), offline_s=2.0)], [nats_server.url], fresh_prefix, tmp_path)
    await runner.start()
    try:
        await until(lambda: runner.status()["lane"]["state"] == "online", 15, "lane online")
        pid = runner.status()["lane"]["pid"]
        figures = []
        # "hang": the connection stays open and nothing comes (the read timeout fires);
        # "drop": connections are closed and new ones refused (503)
        for n, mode in enumerate(("hang", "drop"), start=1):
            cameras.stop_camera("lane", mode=mode)
            t_stop = time.monotonic()
            await until(lambda: health.first("lane", "offline", after=t_stop), 8, f"health offline ({mode})")
            msgs = await until(lambda: _offline_alerts(js, s, "new", n), 8, f"a camera_offline alert ({mode})")
            t_alert = time.monotonic()
            off = msgs[-1][0]
            assert off["camera"] == "lane" and off["priority"] == 3 and off["category"] == "Infra"
            # rules.offline.seconds, not before: counted from the last frame the adapter got, which came up
            # to one frame (0.1 s at 10 fps) before the stop (a CI run saw 1.998 s)
            assert t_alert - t_stop >= 2.0 - 0.15
            assert runner.status()["lane"]["offline_event"] == off["event_id"]
            why = next(h["detail"] for t, h in health.of("lane") if h["state"] == "offline" and t >= t_stop)
            assert ("timed out after 2 s" if mode == "hang" else "lane") in why, why

            cameras.resume_camera("lane")
            t_back = time.monotonic()
            await until(lambda: health.first("lane", "online", after=t_back), 10, f"health online again ({mode})")
            reconnect_s = health.first("lane", "online", after=t_back) - t_back
            ended = await until(lambda: _offline_alerts(js, s, "end", n), 5, f"the camera_offline end ({mode})")
            assert ended[-1][0]["event_id"] == off["event_id"]
            assert reconnect_s < FAST["backoff_max_s"] + 3.0
            figures.append(f"{mode}: camera_offline after {t_alert - t_stop:.1f} s, online again {reconnect_s:.1f} s after the stream returned")
        st = runner.status()["lane"]
        assert st["pid"] == pid and st["restarts"] == 0  # reconnected inside the same worker: no restart
        print("\n" + "\n".join(figures) + f" (backoff max {FAST['backoff_max_s']:g} s)")
    finally:
        await runner.stop()


async def _offline_alerts(js: Any, s: Subjects, phase: str, at_least: int = 1) -> list[Any]:
    got = [(a, h) for a, h in await stored_alerts(js, s) if a["kind"] == "camera_offline" and a["phase"] == phase]
    return got if len(got) >= at_least else []


async def test_garbage_corrupt_files_and_a_crashing_decoder_take_down_neither_the_adapter_nor_other_cameras(
    nats_server, nc, fresh_prefix, cameras, tmp_path
):
    good = write_clip(tmp_path / "good.avi", frames=40, fourcc="MJPG")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    mp4 = write_clip(tmp_path / "good.mp4", frames=40)
    truncated.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    scrambled = bytearray(data)
    scrambled[len(data) // 3 : len(data) // 3 + 6000] = np.random.default_rng(5).bytes(6000)
    (tmp_path / "scrambled.avi").write_bytes(bytes(scrambled))

    s = Subjects(fresh_prefix)
    health = HealthLog()
    await nc.subscribe(s.all_camera_health, cb=health.cb)
    js = nc.jetstream()
    runner, scripts = make_runner(
        [
            cam("good", live(cameras, "good")),
            cam("noise", live(cameras, "noise")),
            cam("raw", live(cameras, "raw")),
            cam("trunc", str(truncated)),
            cam("scram", str(tmp_path / "scrambled.avi"), loop=True),
            cam("crash", live(cameras, "crash")),
        ],
        [nats_server.url], fresh_prefix, tmp_path,
    )
    cameras.garbage("noise", mode="parts")  # multipart framing, bodies of random bytes
    cameras.garbage("raw", mode="raw")  # random bytes, no framing at all
    await runner.start()
    try:
        await until(lambda: all(runner.status()[c]["state"] == "online" for c in ("good", "crash")), 15, "good cameras online")
        good_pid = runner.status()["good"]["pid"]
        await until(lambda: "not a video file" in (runner.status()["trunc"]["detail"] or ""), 10, "trunc reported")
        for c in ("noise", "raw"):
            await until(lambda: runner.status()[c].get("worker_reconnects", 0) >= 1, 15, f"{c} tried and failed")
            assert runner.status()[c]["state"] in ("offline", "degraded")
        assert runner.status()["trunc"]["state"] == "offline"

        # an event is open on 'crash' when its worker aborts inside "the decoder"
        say(scripts, "crash", phase="new", event_id="cr1")
        await until(lambda: _has(js, s, "cr1", 1), 5, "cr1 new")
        crash_pid = runner.status()["crash"]["pid"]
        say(scripts, "crash", crash=True)
        await until(lambda: runner.status()["crash"]["restarts"] >= 1, 10, "crash's worker restarted")
        await until(lambda: any("SIGABRT" in h["detail"] for _, h in health.of("crash") if h["state"] == "offline"),
                    3, "crash reported offline with the signal")
        await until(lambda: runner.status()["crash"]["state"] == "online", 15, "crash back online")
        assert runner.status()["crash"]["pid"] != crash_pid
        # the parent ended the event the dead worker left open
        ev = of_event(await stored_alerts(js, s), "cr1")
        assert [a["phase"] for a in ev] == ["new", "end"] and ev[1]["end_time"]

        # through all of it: the adapter ran, the good camera never went down nor restarted
        st = runner.status()
        assert st["good"]["pid"] == good_pid and st["good"]["restarts"] == 0 and st["good"]["state"] == "online"
        first_online = health.first("good", "online")
        assert all(h["state"] == "online" for t, h in health.of("good") if t >= first_online)
        assert st["noise"]["state"] in ("offline", "degraded") and st["raw"]["state"] in ("offline", "degraded")
        assert st["trunc"]["state"] == "offline" and st["noise"]["restarts"] == st["raw"]["restarts"] == 0
        assert st["scram"]["state"] in ("online", "degraded", "offline")  # reported, whatever FFmpeg made of it
        print("\n" + "\n".join(f"{c}: {v['state']} {v['detail']}" for c, v in st.items()))
    finally:
        await runner.stop()


@pytest.mark.slow
async def test_nats_away_for_10_s_mid_incident_every_alert_reaches_the_stream_exactly_once(cameras, tmp_path, fresh_prefix):
    import nats

    from dispatch.natsserver import EmbeddedNats

    server = EmbeddedNats(tmp_path / "nats", name="camera-outage")
    await server.astart()
    s = Subjects(fresh_prefix)
    runner, scripts = make_runner([cam("yard", live(cameras, "yard"), offline_s=30)], [server.url], fresh_prefix, tmp_path)
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.3)
    try:
        await runner.start()
        await until(lambda: runner.status()["yard"]["state"] == "online", 15, "yard online")
        js = nc.jetstream()
        say(scripts, "yard", phase="new", event_id="inc")
        await until(lambda: _has(js, s, "inc", 1), 5, "new stored")

        await server.astop()
        t_down = time.monotonic()
        say(scripts, "yard", phase="update", event_id="inc")
        await asyncio.sleep(3)
        say(scripts, "yard", phase="update", event_id="inc")
        await asyncio.sleep(3)
        say(scripts, "yard", phase="end", event_id="inc")
        await until(lambda: runner.backlog >= 3, 5, "three alerts waiting in the outbox")
        assert (tmp_path / "state" / "outbox.jsonl").stat().st_size > 0  # spooled to disk too
        await asyncio.sleep(max(0.0, 10.0 - (time.monotonic() - t_down)))

        await server.astart()
        t_up = time.monotonic()
        await until(lambda: runner.backlog == 0, 20, "the outbox emptied")
        delivered_s = time.monotonic() - t_up
        await until(lambda: _has(js, s, "inc", 4), 10, "all four phases stored")
        msgs = await stored_alerts(js, s)
        ev = of_event(msgs, "inc")
        assert [a["phase"] for a in ev] == ["new", "update", "update", "end"]
        assert len({a["id"] for a in ev}) == 4  # each alert once: no duplicate reached the stream
        assert (tmp_path / "state" / "outbox.jsonl").stat().st_size == 0
        obs = await js.object_store(s.bucket_snapshots)
        assert (await obs.get("yard/inc.jpg")).data[:2] == b"\xff\xd8"
        pub = runner.publisher
        print(f"\nNATS down {t_up - t_down:.1f} s; outbox peaked at {runner.outbox.peak}; emptied {delivered_s:.1f} s after "
              f"the server was back; {pub.failures} failed attempts, {pub.duplicates} duplicates dropped by the server")
    finally:
        await runner.stop()
        await nc.close()
        await server.astop()


async def test_an_alert_sent_again_after_a_lost_acknowledgement_is_stored_once(nats_server, nc, fresh_prefix):
    from adapters.camera.publisher import Outbox, OutboxEntry, Publisher
    from dispatch.events import Alert, IncidentKind

    s = Subjects(fresh_prefix)
    pub = Publisher(Outbox(None), s)
    pub.attach(nc)
    alert = Alert(event_id="dup", source="camera", kind=IncidentKind.intrusion, camera="cam1")
    entry = OutboxEntry.for_alert(alert, s.camera_alert("cam1"), ("cam1/dup.jpg", b"\xff\xd8\xff\xe0 jpeg"))
    first = await pub.send_one(entry)
    entry.snapshot_stored = False  # as after an adapter restart: everything is done again
    again = await pub.send_one(entry)
    assert not first.duplicate and again.duplicate and again.seq == first.seq
    assert [a["id"] for a in of_event(await stored_alerts(nc.jetstream(), s), "dup")] == [alert.id]


@pytest.mark.slow
async def test_the_outbox_survives_a_restart_of_the_adapter(nats_server, nc, fresh_prefix, cameras, tmp_path):
    from dispatch.natsserver import free_port

    s = Subjects(fresh_prefix)
    nowhere = f"nats://127.0.0.1:{free_port()}"
    a, scripts = make_runner([cam("door", live(cameras, "door"), offline_s=30)], [nowhere], fresh_prefix, tmp_path)
    await a.start()
    try:
        await until(lambda: a.status()["door"]["state"] == "online", 15, "door online without NATS")
        say(scripts, "door", phase="new", event_id="kept")
        say(scripts, "door", phase="end", event_id="kept")
        await until(lambda: a.backlog == 2, 5, "two alerts in the outbox")
    finally:
        await a.stop()
    assert (tmp_path / "state" / "outbox.jsonl").stat().st_size > 0

    b, _ = make_runner([cam("door", cameras.url("door"), offline_s=30)], [nats_server.url], fresh_prefix, tmp_path)
    await b.start()
    try:
        assert b.outbox.recovered == 2
        await until(lambda: b.backlog == 0, 10, "the recovered outbox sent")
        ev = of_event(await stored_alerts(nc.jetstream(), s), "kept")
        assert [x["phase"] for x in ev] == ["new", "end"]
    finally:
        await b.stop()


def test_a_second_adapter_on_the_same_state_dir_is_refused(tmp_path):
    from district_fixtures import make_district

    from adapters.camera.runner import CameraRunner, StateDirBusy

    d = make_district()
    r1 = CameraRunner(d, ["cam1"], ["nats://127.0.0.1:1"], state_dir=tmp_path)
    r1._lock_state_dir()
    try:
        r2 = CameraRunner(d, ["cam1"], ["nats://127.0.0.1:1"], state_dir=tmp_path)
        with pytest.raises(StateDirBusy, match=rf"another camera adapter \(pid {os.getpid()}\) uses state dir"):
            r2._lock_state_dir()
    finally:
        r1._unlock_state_dir()


def test_unknown_cameras_and_a_missing_server_are_refused():
    from district_fixtures import make_district

    from adapters.camera.runner import CameraRunner

    d = make_district()
    with pytest.raises(ValueError, match=r"unknown camera 'cam9' \(district Rivertown has: cam1, cam2\)"):
        CameraRunner(d, ["cam9"], ["nats://127.0.0.1:4222"])
    with pytest.raises(ValueError, match="needs the engine's NATS server"):
        CameraRunner(d, None, None)


async def test_a_malformed_zone_or_stream_refuses_to_start_naming_file_camera_and_field(tmp_path, nats_server):
    from dispatch.district import ConfigError

    from adapters.camera.runner import load_district_for_cameras

    text = TIESHAN.read_text()
    text = text.replace("polygon: [[0.3, 0.45], [0.7, 0.45], [0.82, 1], [0.18, 1]]",
                        "polygon: [[0.3, 0.45], [1.2, 0.45], [0.82, 1], [0.18, 1]]", 1)
    text = text.replace("stream: rtsp://127.0.0.1:8554/cam02", "stream: ftp://127.0.0.1/cam02", 1)
    bad = tmp_path / "district.yaml"
    bad.write_text(text)
    (tmp_path / "tieshan-streets.geojson").symlink_to(TIESHAN.parent / "tieshan-streets.geojson")

    with pytest.raises(ConfigError) as e:
        load_district_for_cameras(bad)
    msg = str(e.value)
    assert "district.yaml:215: camera 'cam01': cameras[0].zones[0].polygon: zone 'gate' point 2 (1.2, 0.45) is outside the frame" in msg
    assert "district.yaml:223: camera 'cam02': cameras[1].stream: stream scheme 'ftp' is not supported" in msg

    code, out, err = await _cli("camera", "--district", str(bad), "--nats", nats_server.url,
                                "--state-dir", str(tmp_path / "state"))
    assert code == 2
    assert "the district configuration has errors" in err
    assert "camera 'cam01': cameras[0].zones[0].polygon" in err and "camera 'cam02': cameras[1].stream" in err
    assert not (tmp_path / "state").exists()  # refused before anything started


@pytest.mark.slow
async def test_patrollink_camera_runs_the_real_pipeline_on_a_rendered_clip_and_stops_cleanly(nats_server, nc, fresh_prefix, tmp_path):
    """The command a deployer runs: real pipeline (default detector) on a looped scene clip, Ctrl-C to stop."""
    import signal

    scene = pytest.importorskip("simulators.scene")
    scene.write_clip(scene.SCENARIOS["walk_through_gate"](1), tmp_path / "walk.mp4")
    text = TIESHAN.read_text().replace("stream: rtsp://127.0.0.1:8554/cam01", "stream: walk.mp4\n    loop: true", 1)
    (tmp_path / "district.yaml").write_text(text)
    (tmp_path / "tieshan-streets.geojson").symlink_to(TIESHAN.parent / "tieshan-streets.geojson")

    s = Subjects(fresh_prefix)
    health = HealthLog()
    await nc.subscribe(s.all_camera_health, cb=health.cb)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatch.cli", "camera", "cam01", "--district", str(tmp_path / "district.yaml"),
        "--nats", nats_server.url, "--prefix", fresh_prefix, "--state-dir", str(tmp_path / "state"), "--log-level", "warning",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        await until(lambda: (h := health.last("cam01")) and h["state"] == "online", 20, "cam01 online")
        assert 12.0 <= health.last("cam01")["fps"] <= 17.0  # the clip's own 15 fps
        js = nc.jetstream()
        intrusions = await until(
            lambda: _intrusions(js, s), 30, "an intrusion alert from the real pipeline")
        a = intrusions[0]
        assert a["camera"] == "cam01" and "gate" in a["zones"] and a["label"] == "person" and a["snapshot"]
        jpeg = (await (await js.object_store(s.bucket_snapshots)).get(a["snapshot"])).data
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (360, 640, 3)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "camera adapter watching 1 camera of Tieshan (cam01)" in err.decode()
    await asyncio.sleep(0.2)
    assert health.last("cam01")["state"] == "offline" and health.last("cam01")["detail"] == "camera adapter stopped"


async def _intrusions(js: Any, s: Subjects) -> list[dict[str, Any]]:
    return [a for a, _ in await stored_alerts(js, s) if a["kind"] == "intrusion"]


def _stats_rows(state_dir: Path) -> dict[tuple[str, str], tuple[int, int, int]]:
    from adapters.camera.stats import FeedbackStore

    store = FeedbackStore.in_dir(state_dir)
    try:
        return {(r.camera, r.rule): (r.alerts, r.confirmed, r.dismissed) for r in store.table()}
    finally:
        store.close()


async def test_verdicts_given_while_the_adapter_is_down_are_counted_when_it_is_back(nats_server, nc, fresh_prefix, cameras, tmp_path):
    """Console verdicts (ops.verdict.<camera>, stream OPS), confirmations and false-alarm closures reach
    `camera stats` through durable JetStream consumers: what was said while the adapter was stopped counts
    once it runs again, and nothing is counted twice."""
    from dispatch.events import Alert, Area, CameraFeedback, IncidentEvent, IncidentEventKind, IncidentKind, encode

    s = Subjects(fresh_prefix)
    js = nc.jetstream()
    state = tmp_path / "state"
    cams = [cam("fb1", live(cameras, "fb1"))]
    runner, scripts = make_runner(cams, [nats_server.url], fresh_prefix, tmp_path)
    await runner.start()
    try:
        await until(lambda: runner.nc is not None and runner.status()["fb1"]["state"] == "online", 20, "fb1 online")
        await asyncio.sleep(0.5)
        for eid, kind in (("evA", "intrusion"), ("evB", "intrusion"), ("evC", "loitering"), ("evD", "crowd")):
            say(scripts, "fb1", phase="new", event_id=eid, kind=kind)
        await until(lambda: _has(js, s, "evD", 1), 30, "the four alerts in the stream")
        ev_c = of_event(await stored_alerts(js, s), "evC")[0]
        # while it runs: a console dismisses evA
        await js.publish(s.verdict("fb1"), encode(CameraFeedback(event_id="evA", verdict="dismissed", reason="shadow",
                                                                camera="fb1", operator="op1")))
        await until(lambda: _stats_rows(state).get(("fb1", "intrusion")) == (2, 0, 1), 10, "evA dismissed")
    finally:
        await runner.stop()

    # the adapter is down: a dismissal, a confirmation (operator alert), an incident closed as a false alarm,
    # and a drill verdict (never counted)
    await js.publish(s.verdict("fb1"), encode(CameraFeedback(event_id="evB", verdict="dismissed", camera="fb1")))
    await js.publish(s.operator_alert("con1"), encode(Alert(source="operator", event_id="confirm-1", kind=IncidentKind.crowd, priority=2,
                                                            area=Area(lat=30.2, lon=114.9), console="con1",
                                                            operator="op2", confirms="evD")))
    await js.publish(s.incident_event("inc9", "resolved"), encode(IncidentEvent(
        incident_id="inc9", seq=3, event=IncidentEventKind.resolved, state="resolved", kind=IncidentKind.loitering,
        priority=3, place=Area(lat=30.2, lon=114.9), alert_ids=(ev_c["id"],), camera="fb1", detail="false alarm: a courier")))
    await js.publish(s.verdict("fb1"), encode(CameraFeedback(event_id="evD", verdict="dismissed", camera="fb1", exercise="d1")))
    assert _stats_rows(state)[("fb1", "intrusion")] == (2, 0, 1)  # nobody heard them yet

    runner2, _ = make_runner(cams, [nats_server.url], fresh_prefix, tmp_path)
    await runner2.start()
    try:
        want = {("fb1", "intrusion"): (2, 0, 2), ("fb1", "loitering"): (1, 0, 1), ("fb1", "crowd"): (1, 1, 0)}
        await until(lambda: _stats_rows(state) == want, 15, "the verdicts given while the adapter was down")
        await asyncio.sleep(1.5)
        assert _stats_rows(state) == want  # each once; the drill verdict not at all
    finally:
        await runner2.stop()
