"""The camera adapter process: one worker per camera, their health and alerts onto NATS.

    district = load_district_for_cameras("config/districts/tieshan.yaml")   # ConfigError naming file, line, camera, field
    runner = CameraRunner(district, ["cam01", "cam02"], servers=["nats://127.0.0.1:4222"], state_dir=".state/camera")
    await runner.start()
    ...
    await runner.stop()

What it does, per camera:

* runs the camera's capture and analysis in a child process (adapters/camera/worker.py)
  and restarts a child that died, with backoff (1 s doubling to 30 s; reset after
  a minute of good running), reporting the camera offline meanwhile with the reason;
* publishes `CameraHealth` on `cameras.<id>.health` when the state changes and
  every `health_interval_s`;
* raises a `camera_offline` alert (district `rules.offline`) after `seconds`
  without a frame, and ends it when frames return;
* turns the pipeline's AlertEvents into contract `Alert`s (snapshot JPEG into
  the object store bucket `snapshots` as `<camera>/<event_id>.jpg`) and sends
  them through the outbox (adapters/camera/publisher.py): JetStream with
  acknowledgement, `Nats-Msg-Id` = alert id, retried until stored, spooled to
  disk so a restart of the adapter keeps them;
* ends events a dead worker left open, so no incident waits for an `end` forever;
* answers runtime controls on `cameras.<id>.control` (`CameraControl`: detection
  on/off, motion sensitivity) with the new state (`CameraControlState`);
* records alerts and operator verdicts for `patrollink camera stats` (adapters/camera/stats.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from adapters.camera.publisher import Outbox, OutboxEntry, Publisher, snapshot_name, to_alert
from adapters.camera.sources import check_url
from adapters.camera.stats import FeedbackListener, FeedbackStore, consumer_token
from adapters.camera.types import AlertEvent, SourceError
from adapters.camera.worker import CameraWorker, WorkerSpec, describe_exit
from dispatch.aio import cancel_and_wait
from dispatch.events import CameraControl, CameraControlState, CameraHealth, CameraState, describe_error, encode, new_id
from dispatch.subjects import Subjects

__all__ = [
    "CameraRunner",
    "StateDirBusy",
    "load_district_for_cameras",
]


STARTUP_GRACE_S = 30.0
"""How long a first worker may take to come up before its silence counts towards camera_offline."""


# --------------------------------------------------------------------------- runtime controls (move to dispatch/events.py)


# --------------------------------------------------------------------------- config


def load_district_for_cameras(path: str | Path) -> Any:
    """`load_district`, with each problem under `cameras[i]` also naming the camera's id.

    Raises `ConfigError`; its lines read e.g.
    `district.yaml:215: camera 'cam01': cameras[0].zones[0].polygon: zone 'gate' point 2 (1.2, 0.45) is outside the frame (0..1)`.
    """
    import yaml

    from dispatch.district import ConfigError, ConfigIssue, load_district

    try:
        return load_district(path)
    except ConfigError as e:
        ids: dict[int, str] = {}
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            for i, c in enumerate((raw or {}).get("cameras") or []):
                if isinstance(c, dict) and isinstance(c.get("id"), str):
                    ids[i] = c["id"]
        except Exception:
            pass
        issues = []
        for iss in e.issues:
            m = re.match(r"cameras\[(\d+)\]", iss.field or "")
            if m and int(m.group(1)) in ids:
                iss = ConfigIssue(iss.file, iss.line, f"camera {ids[int(m.group(1))]!r}: {iss.field}", iss.reason)
            issues.append(iss)
        raise ConfigError(issues) from None


class StateDirBusy(RuntimeError):
    """Another camera adapter runs on this state dir (its outbox and stats are not shared)."""


# --------------------------------------------------------------------------- per camera


@dataclasses.dataclass
class _Cam:
    camera: Any
    enabled: bool
    sensitivity: float
    worker: CameraWorker | None = None
    gen: int = 0
    state: CameraState = CameraState.offline
    fps: float = 0.0
    detail: str = "starting"
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    watch_since: float = dataclasses.field(default_factory=time.monotonic)
    last_frame: float | None = None  # monotonic, parent clock
    last_frame_wall: float | None = None
    restarts: int = 0
    restart_backoff: float = 0.0
    restart_at: float | None = None
    open_events: dict[str, AlertEvent] = dataclasses.field(default_factory=dict)
    snapshots: dict[str, str] = dataclasses.field(default_factory=dict)
    offline_event: dict[str, Any] | None = None
    pending: dict[str, asyncio.Future[Any]] = dataclasses.field(default_factory=dict)
    exited: dict[int, asyncio.Event] = dataclasses.field(default_factory=dict)
    published: tuple[str, str] | None = None
    published_at: float = 0.0
    online_since: float | None = None
    alerts: int = 0
    hello_seen: bool = False
    logged_why: str | None = None

    @property
    def id(self) -> str:
        return str(self.camera.id)


class CameraRunner:
    """Watches the cameras of a district (all, or those named) and speaks for them on NATS."""

    def __init__(
        self,
        district: Any,
        camera_ids: Sequence[str] | None = None,
        servers: Sequence[str] | str | None = None,
        prefix: str = "",
        *,
        state_dir: str | Path = ".state/camera",
        pipeline_factory: Callable[..., Any] | None = None,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 5.0,
        restart_initial_s: float = 1.0,
        restart_max_s: float = 30.0,
        stuck_s: float = 30.0,
        health_interval_s: float = 5.0,
        replicas: int = 1,
        exercise: str | None = None,
        name: str = "camera",
        drain_timeout_s: float = 3.0,
        log: Any = None,
    ) -> None:
        if not servers:
            raise ValueError("the camera adapter needs the engine's NATS server: pass servers (--nats, $PATROLLINK_NATS)")
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.district = district
        self.s = Subjects(prefix)
        self.state_dir = Path(state_dir)
        self.pipeline_factory = pipeline_factory
        self.opts = dict(
            open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s, backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s, stuck_s=stuck_s,
        )
        self.restart_initial_s = restart_initial_s
        self.restart_max_s = restart_max_s
        self.health_interval_s = health_interval_s
        self.replicas = replicas
        self.exercise = exercise
        self.name = name
        self.drain_timeout_s = drain_timeout_s
        if log is None:
            from dispatch.logs import get_logger

            log = get_logger("camera")
        self.log = log

        cams = list(district.cameras)
        if camera_ids:
            known = {c.id: c for c in cams}
            unknown = [c for c in camera_ids if c not in known]
            if unknown:
                listed = ", ".join(sorted(known)) or "none"
                raise ValueError(f"unknown camera {', '.join(map(repr, unknown))} (district {district.name} has: {listed})")
            cams = [known[c] for c in dict.fromkeys(camera_ids)]
        if not cams:
            raise ValueError(f"district {district.name} has no cameras to watch")
        where = str(district.source) if getattr(district, "source", None) else f"district {district.name}"
        for i, c in enumerate(cams):
            try:
                check_url(c.stream)
            except SourceError as e:
                raise ValueError(f"{where}: camera {c.id!r}: stream: {e}") from None
        self.cams: dict[str, _Cam] = {
            c.id: _Cam(camera=c, enabled=bool(c.detect.enabled), sensitivity=float(c.motion.sensitivity)) for c in cams
        }
        self.nc: Any = None
        self.outbox: Outbox | None = None
        self.publisher: Publisher | None = None
        self.feedback: FeedbackStore | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._subs: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._lock_fd: int | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self.started = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> "CameraRunner":
        self._loop = asyncio.get_running_loop()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_state_dir()
        try:
            self.outbox = Outbox(self.state_dir / "outbox.jsonl")
            self.feedback = FeedbackStore.in_dir(self.state_dir)
        except BaseException:
            self._unlock_state_dir()
            raise
        if self.outbox.recovered:
            self.log.info("camera.outbox.recovered", pending=self.outbox.recovered, spool=str(self.outbox.path))
        self.publisher = Publisher(self.outbox, self.s, replicas=self.replicas, log=self.log, on_sent=self._on_sent)
        self._load_offline()
        for cam in self.cams.values():
            self._spawn(cam)
        self._tasks = [
            asyncio.create_task(self.publisher.run(), name="camera-publisher"),
            asyncio.create_task(self._supervise(), name="camera-supervisor"),
            asyncio.create_task(self._connect(), name="camera-nats"),
        ]
        self.started = True
        self.log.info("camera.adapter.started", cameras=list(self.cams), nats=self.servers, state_dir=str(self.state_dir))
        return self

    async def stop(self) -> None:
        if not self.started:
            return
        self._stopping = True
        # 1. workers: each ends its open events (pipeline.flush) and exits. All are asked first, so
        # they wind down together; the blocking joins below run on the default pool's few threads
        # and would otherwise stop the cameras a handful at a time.
        for cam in self.cams.values():
            if cam.worker is not None:
                cam.worker.request_stop()
        await asyncio.gather(*(self._stop_worker(cam) for cam in self.cams.values()))
        # 2. whatever is still open (a worker that could not flush) is ended here
        for cam in self.cams.values():
            self._end_open_events(cam, "the camera adapter stopped")
        # 3. last chance to send; what is left stays in the spool for the next start
        if self.publisher is not None and self.nc is not None and self.nc.is_connected:
            if not await self.publisher.drain(self.drain_timeout_s):
                self.log.warning("camera.outbox.kept", pending=len(self.outbox or ()), spool=str(self.state_dir / "outbox.jsonl"))
        await cancel_and_wait(self._tasks)
        self._tasks = []
        if self.nc is not None:
            for cam in self.cams.values():
                cam.state, cam.fps, cam.detail = CameraState.offline, 0.0, "camera adapter stopped"
                await self._publish_health(cam, force=True)
            try:
                await self.nc.drain()
            except Exception:
                try:
                    await self.nc.close()
                except Exception:
                    pass
            self.nc = None
        if self.outbox is not None:
            self.outbox.close()
        if self.feedback is not None:
            self.feedback.close()
        self._unlock_state_dir()
        self.started = False
        self.log.info("camera.adapter.stopped")

    async def __aenter__(self) -> "CameraRunner":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _lock_state_dir(self) -> None:
        path = self.state_dir / "camera.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StateDirBusy(
                f"another camera adapter (pid {other}) uses state dir {self.state_dir}; give each adapter its own --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _unlock_state_dir(self) -> None:
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    # ------------------------------------------------------------------ NATS

    async def _connect(self) -> None:
        import nats

        backoff = 0.5
        while not self._stopping:
            try:
                nc = await nats.connect(
                    self.servers,
                    name=f"patrollink-{self.name}",
                    connect_timeout=2,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=self._nats_error,
                    disconnected_cb=self._nats_disconnected,
                    reconnected_cb=self._nats_reconnected,
                )
            except Exception as e:
                self.log.warning("camera.nats.unreachable", servers=self.servers, error=str(e) or type(e).__name__,
                                 retry_in_s=backoff, pending=len(self.outbox or ()))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            try:
                for cid in self.cams:
                    self._subs.append(await nc.subscribe(self.s.camera_control(cid), cb=self._on_control))
                assert self.feedback is not None
                listener = FeedbackListener(self.feedback, self.s, list(self.cams), log=self.log,
                                            durable=f"camstats_{consumer_token(self.state_dir)}")
                self._subs += await listener.subscribe(nc)
            except Exception as e:  # lost the server between connecting and subscribing: start over
                self.log.warning("camera.nats.subscribe_failed", error=str(e) or type(e).__name__)
                self._subs = []
                try:
                    await nc.close()
                except Exception:
                    pass
                await asyncio.sleep(backoff)
                continue
            self.nc = nc
            assert self.publisher is not None
            self.publisher.attach(nc)
            self._tasks.append(asyncio.create_task(listener.run(nc), name="camera-feedback"))
            self.log.info("camera.nats.connected", server=str(nc.connected_url.netloc if nc.connected_url else ""))
            for cam in self.cams.values():
                await self._publish_health(cam, force=True)
            return

    async def _nats_error(self, e: Exception) -> None:
        self.log.debug("camera.nats.error", error=str(e) or type(e).__name__)

    async def _nats_disconnected(self) -> None:
        self.log.warning("camera.nats.disconnected", pending=len(self.outbox or ()))

    async def _nats_reconnected(self) -> None:
        self.log.info("camera.nats.reconnected", pending=len(self.outbox or ()))
        if self.publisher is not None:
            self.publisher.wake()
        for cam in self.cams.values():
            await self._publish_health(cam, force=True)

    # ------------------------------------------------------------------ workers

    def _spec(self, cam: _Cam) -> WorkerSpec:
        return WorkerSpec(
            camera=cam.camera,
            tz=self.district.timezone,
            base_dir=str(self.district.base_dir),
            pipeline_factory=self.pipeline_factory,
            enabled=cam.enabled,
            sensitivity=cam.sensitivity,
            **self.opts,
        )

    def _spawn(self, cam: _Cam) -> None:
        cam.gen += 1
        gen = cam.gen
        cam.exited = {g: e for g, e in cam.exited.items() if g >= gen - 1}
        cam.exited[gen] = asyncio.Event()
        loop = self._loop
        assert loop is not None

        def deliver(msg: tuple[Any, ...], cid: str = cam.id, gen: int = gen) -> None:
            try:
                loop.call_soon_threadsafe(self._on_message, cid, gen, msg)
            except RuntimeError:
                pass  # the loop is closed: the adapter is gone

        cam.worker = CameraWorker(self._spec(cam), deliver)
        cam.restart_at = None
        try:
            cam.worker.start()
        except Exception as e:  # cannot even spawn (out of memory, too many processes)
            cam.worker = None
            self._schedule_restart(cam, f"worker could not start: {e}")
            return
        self.log.info("camera.worker.started", camera=cam.id, pid=cam.worker.pid, generation=gen)

    async def _stop_worker(self, cam: _Cam) -> None:
        w = cam.worker
        if w is None:
            return
        gen = cam.gen
        await asyncio.to_thread(w.stop, 5.0)
        ev = cam.exited.get(gen)
        if ev is not None:
            try:
                await asyncio.wait_for(ev.wait(), 5.0)  # every message it sent has been handled
            except asyncio.TimeoutError:
                pass

    def _schedule_restart(self, cam: _Cam, why: str) -> None:
        now = time.monotonic()
        ran = now - cam.worker.started_at if cam.worker is not None and cam.worker.started_at else 0.0
        if ran > 60.0 or cam.restart_backoff <= 0:
            cam.restart_backoff = self.restart_initial_s
        else:
            cam.restart_backoff = min(cam.restart_backoff * 2, self.restart_max_s)
        cam.worker = None
        cam.restart_at = now + cam.restart_backoff
        cam.restarts += 1
        self._set_health(cam, CameraState.offline, 0.0, f"{why}; restarting in {cam.restart_backoff:g} s")

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            for cam in self.cams.values():
                if self._stopping:
                    return
                if cam.worker is None and cam.restart_at is not None and now >= cam.restart_at:
                    self._spawn(cam)
                self._check_offline(cam, now)
                if now - cam.published_at >= self.health_interval_s:
                    await self._publish_health(cam, force=True)

    def _on_message(self, cid: str, gen: int, msg: tuple[Any, ...]) -> None:
        cam = self.cams.get(cid)
        if cam is None or not msg:
            return
        kind = msg[0]
        if kind == "exit":
            ev = cam.exited.get(gen)
            if ev is not None:
                ev.set()
        if gen != cam.gen:
            return  # from a worker already replaced
        try:
            if kind == "health":
                _, state, fps, detail = msg
                self._set_health(cam, CameraState(state), float(fps), str(detail))
            elif kind == "stats":
                st = dict(msg[1])
                cam.stats = st
                age = st.get("last_frame_age_s")
                if age is not None:
                    cam.last_frame = time.monotonic() - float(age)
                    cam.last_frame_wall = time.time() - float(age)
            elif kind == "alert":
                self._on_event(cam, msg[1])
            elif kind == "control":
                _, req, state, error = msg
                fut = cam.pending.pop(req, None)
                if state:
                    cam.enabled = bool(state.get("enabled", cam.enabled))
                    cam.sensitivity = float(state.get("sensitivity", cam.sensitivity))
                if fut is not None and not fut.done():
                    fut.set_result((state, error))
            elif kind == "fatal":
                cam.detail = str(msg[1])[:300]
                self.log.error("camera.worker.fatal", camera=cid, reason=str(msg[1]))
            elif kind == "error":
                self.log.warning("camera.worker.error", camera=cid, error=str(msg[1])[:500])
            elif kind == "hello":
                self.log.debug("camera.worker.hello", camera=cid, pid=msg[1])
                if not cam.hello_seen:
                    # the offline clock starts when the first worker is up, not while Python imports;
                    # later hellos (restarts) do not reset it, so a crash loop still raises camera_offline
                    cam.hello_seen = True
                    cam.watch_since = time.monotonic()
            elif kind == "exit":
                code = msg[1]
                for fut in cam.pending.values():
                    if not fut.done():
                        fut.set_result((None, "the camera's worker ended"))
                cam.pending.clear()
                self._end_open_events(cam, "the camera's worker ended")
                if self._stopping:
                    cam.worker = None
                    return
                why = f"worker {describe_exit(code)}"
                if cam.detail and ("cannot start" in cam.detail or "stuck" in cam.detail):
                    why += f" ({cam.detail})"
                self.log.warning("camera.worker.died", camera=cid, exitcode=code, reason=why)
                self._schedule_restart(cam, why)
        except Exception as e:  # a malformed message must not stop the adapter
            self.log.error("camera.message.failed", camera=cid, kind=str(kind), error=f"{type(e).__name__}: {e}")

    # ------------------------------------------------------------------ health

    def _set_health(self, cam: _Cam, state: CameraState, fps: float, detail: str) -> None:
        changed = state != cam.state
        if changed and state is CameraState.online:
            cam.online_since = time.monotonic()
        cam.state, cam.fps, cam.detail = state, fps, detail
        # log a change of state, or of the reason (without its "retrying in ..."), not every report
        why = re.sub(r"\d+(\.\d+)?", "#", detail.split(";")[0]) if state is not CameraState.online else ""
        if changed or why != cam.logged_why:
            cam.logged_why = why
            self.log.info("camera.health", camera=cam.id, state=state.value, fps=round(fps, 1), detail=detail)
        if changed:
            if self._loop is not None:
                task = self._loop.create_task(self._publish_health(cam, force=True))
                self._bg.add(task)
                task.add_done_callback(self._bg.discard)

    async def _publish_health(self, cam: _Cam, force: bool = False) -> None:
        key = (cam.state.value, cam.detail)
        if not force and key == cam.published:
            return
        cam.published_at = time.monotonic()
        nc = self.nc
        if nc is None or not nc.is_connected:
            return  # health is a state, not a record: the next one after reconnecting says it
        msg = CameraHealth(camera=cam.id, state=cam.state, fps=max(0.0, round(cam.fps, 2)), detail=cam.detail[:300],
                           exercise=self.exercise)
        try:
            await nc.publish(self.s.camera_health(cam.id), encode(msg))
            cam.published = key
        except Exception as e:
            self.log.debug("camera.health.unsent", camera=cam.id, error=str(e))

    # ------------------------------------------------------------------ alerts

    def _on_event(self, cam: _Cam, ev: AlertEvent) -> None:
        if ev.phase not in ("new", "update", "end"):
            self.log.error("camera.event.refused", camera=cam.id, phase=ev.phase, event_id=ev.event_id)
            return
        snap: tuple[str, bytes] | None = None
        if ev.snapshot_jpeg:
            name = snapshot_name(cam.id, ev.event_id)
            cam.snapshots[ev.event_id] = name
            snap = (name, bytes(ev.snapshot_jpeg))
        if ev.phase == "end":
            cam.open_events.pop(ev.event_id, None)
        else:
            cam.open_events[ev.event_id] = dataclasses.replace(ev, snapshot_jpeg=None)
        self._emit(cam, ev, snap)
        if ev.phase == "end":
            cam.snapshots.pop(ev.event_id, None)

    def _emit(self, cam: _Cam, ev: AlertEvent, snap: tuple[str, bytes] | None = None) -> None:
        try:
            alert = to_alert(ev, cam.camera, policy=self.district.policy, snapshot=cam.snapshots.get(ev.event_id),
                             exercise=self.exercise)
        except ValidationError as e:
            self.log.error("camera.event.invalid", camera=cam.id, event_id=ev.event_id, reason=describe_error(e))
            return
        assert self.outbox is not None and self.publisher is not None
        self.outbox.add(OutboxEntry.for_alert(alert, self.s.camera_alert(cam.id), snap))
        self.publisher.wake()
        cam.alerts += 1
        if self.feedback is not None and self.exercise is None:
            try:
                rule = str((ev.detail or {}).get("rule") or alert.kind.value)
                self.feedback.record_alert(ev.event_id, alert.id, cam.id, rule, ev.phase, alert.priority)
            except Exception as e:
                self.log.warning("camera.stats.unrecorded", error=str(e))
        self.log.info("camera.alert", camera=cam.id, kind=alert.kind.value, phase=alert.phase.value,
                      event_id=alert.event_id, alert_id=alert.id, zones=list(alert.zones), snapshot=alert.snapshot,
                      backlog=len(self.outbox))

    def _on_sent(self, entry: OutboxEntry, ack: Any) -> None:
        self.log.debug("camera.alert.stored", alert_id=entry.id, seq=getattr(ack, "seq", None),
                       duplicate=bool(getattr(ack, "duplicate", False)))

    def _end_open_events(self, cam: _Cam, why: str) -> None:
        for eid, last in list(cam.open_events.items()):
            end_t = last.t
            ev = dataclasses.replace(last, phase="end", end_t=end_t, t=end_t, snapshot_jpeg=None,
                                     detail={**(last.detail or {}), "ended_by": why})
            cam.open_events.pop(eid, None)
            self._emit(cam, ev)
            cam.snapshots.pop(eid, None)

    # ------------------------------------------------------------------ camera offline

    def _offline_file(self) -> Path:
        return self.state_dir / "offline.json"

    def _load_offline(self) -> None:
        try:
            data = json.loads(self._offline_file().read_text())
        except (OSError, ValueError):
            return
        for cid, ev in (data or {}).items():
            cam = self.cams.get(cid)
            if cam is not None and isinstance(ev, dict) and ev.get("event_id"):
                cam.offline_event = {**ev, "raised": time.monotonic()}

    def _save_offline(self) -> None:
        data = {c.id: {k: v for k, v in c.offline_event.items() if k != "raised"}
                for c in self.cams.values() if c.offline_event}
        try:
            tmp = self._offline_file().with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self._offline_file())
        except OSError as e:
            self.log.warning("camera.offline.unsaved", error=str(e))

    def _check_offline(self, cam: _Cam, now: float) -> None:
        rule = cam.camera.rules.offline
        if cam.offline_event is not None:
            if cam.last_frame is not None and cam.last_frame > cam.offline_event["raised"]:
                ev = cam.offline_event
                back = cam.last_frame_wall or time.time()
                self._emit(cam, AlertEvent(
                    phase="end", event_id=ev["event_id"], kind="camera_offline", priority=int(ev["priority"]),
                    t=back, start_t=float(ev["start"]), end_t=back, detail={"rule": "offline"},
                ))
                cam.offline_event = None
                self._save_offline()
            return
        if not rule.enabled:
            return
        if not cam.hello_seen and now - cam.watch_since < rule.seconds + STARTUP_GRACE_S:
            return  # the first worker is still starting (a spawned interpreter importing OpenCV)
        since = cam.last_frame if cam.last_frame is not None else cam.watch_since
        if now - since < rule.seconds:
            return
        start_wall = cam.last_frame_wall if cam.last_frame_wall is not None else time.time() - (now - cam.watch_since)
        eid = new_id()
        cam.offline_event = {"event_id": eid, "start": start_wall, "priority": rule.priority, "raised": now}
        self._save_offline()
        self._emit(cam, AlertEvent(
            phase="new", event_id=eid, kind="camera_offline", priority=rule.priority, t=time.time(), start_t=start_wall,
            detail={"rule": "offline", "reason": cam.detail},
        ))

    # ------------------------------------------------------------------ controls

    async def control(self, camera_id: str, enabled: bool | None = None, sensitivity: float | None = None,
                      timeout_s: float = 3.0) -> CameraControlState:
        """Change detection on/off and/or sensitivity; returns the state after it."""
        cam = self.cams.get(camera_id)
        if cam is None:
            raise KeyError(camera_id)
        changes = {"enabled": enabled, "sensitivity": sensitivity}
        if enabled is not None:
            cam.enabled = bool(enabled)
        if sensitivity is not None:
            cam.sensitivity = float(sensitivity)
        applied, error = False, ""
        w = cam.worker
        if w is not None and w.alive:
            req = uuid.uuid4().hex
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            cam.pending[req] = fut
            if w.control(req, changes):
                try:
                    state, error = await asyncio.wait_for(fut, timeout_s)
                    applied = state is not None and not error
                except asyncio.TimeoutError:
                    error = f"the camera's worker did not answer in {timeout_s:g} s; the change applies when it does"
            cam.pending.pop(req, None)
        self.log.info("camera.control", camera=camera_id, enabled=cam.enabled, sensitivity=cam.sensitivity,
                      applied=applied, error=error or None)
        return CameraControlState(camera=camera_id, enabled=cam.enabled, sensitivity=cam.sensitivity, state=cam.state,
                                  fps=max(0.0, round(cam.fps, 2)), applied=applied, error=error[:300],
                                  exercise=self.exercise)

    async def _on_control(self, msg: Any) -> None:
        cid = msg.subject.split(".")[-2]
        try:
            req = CameraControl.model_validate_json(msg.data or b"{}")
            if req.camera is not None and req.camera != cid:
                raise ValueError(f"the request names camera {req.camera!r} but came on {cid!r}'s subject")
        except (ValidationError, ValueError) as e:
            reason = describe_error(e) if isinstance(e, ValidationError) else str(e)
            cam = self.cams[cid]
            reply = CameraControlState(camera=cid, enabled=cam.enabled, sensitivity=cam.sensitivity, state=cam.state,
                                       fps=max(0.0, round(cam.fps, 2)), applied=False, error=reason[:300])
        else:
            reply = await self.control(cid, req.enabled, req.sensitivity)
        if msg.reply:
            try:
                await msg.respond(encode(reply))
            except Exception as e:
                self.log.debug("camera.control.unanswered", error=str(e))

    # ------------------------------------------------------------------ looking in

    def status(self) -> dict[str, dict[str, Any]]:
        out = {}
        for cid, cam in self.cams.items():
            out[cid] = {
                "state": cam.state.value, "fps": cam.fps, "detail": cam.detail, "pid": cam.worker.pid if cam.worker else None,
                "restarts": cam.restarts, "enabled": cam.enabled, "sensitivity": cam.sensitivity,
                "open_events": list(cam.open_events), "offline_event": (cam.offline_event or {}).get("event_id"),
                "alerts": cam.alerts, **{f"worker_{k}": v for k, v in cam.stats.items()},
            }
        return out

    @property
    def backlog(self) -> int:
        return len(self.outbox) if self.outbox is not None else 0
