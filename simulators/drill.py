"""The drill runner: the real system (NATS, engine, camera adapter) with synthetic cameras and simulated units.

    report = await Drill(load_scenario("config/scenarios/quiet-night.yaml"), out_dir="var/drills/x").run()
    await run_live(district, ["nats://127.0.0.1:4222"])      # `make run`: a never-ending drill at 1x

`Drill.run()`:

1. starts an embedded nats-server (unless NATS URLs are given);
2. serves one synthetic camera per camera the scenario uses (a `simulators.scene.Scene`
   rendered live by `simulators.mjpeg.MjpegServer`, MJPEG over HTTP);
3. starts the routing engine (`dispatch.app.build_app`) on a copy of the district whose
   policy times are divided by the speed, and whose drilled cameras stream from the
   MJPEG server (with the scenario's camera-rule overrides);
4. starts the real camera adapter (`adapters.camera.runner.CameraRunner`, with
   `exercise` = the drill id) watching those streams, waits until every camera is online;
5. starts the simulated units (`simulators.units`) and the drill clock (t = 0);
6. plays the timeline: camera incidents are scripted into the camera's scene a moment
   before they happen (and rendered, and detected - or not - by the adapter); operator
   reports are published as operator alerts; failures are injected (a stream dies, a
   unit's radio goes silent, the NATS server restarts);
7. shows progress on stderr until every incident is closed (or the time is up);
8. reads the drill's incident events back from the INCIDENTS stream and writes the
   report (simulators/report.py).

Every message of the drill carries the drill id as `exercise`. Time scaling: see
docs/drills.md ("Time").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dispatch.aio import cancel_and_wait
from dispatch.events import (
    Alert,
    AlertSource,
    Area,
    CapCertainty,
    CapStatus,
    DrillInject,
    DrillInjectResult,
    IncidentEvent,
    IncidentKind,
    describe_error,
    encode,
    new_id,
)
from dispatch.subjects import Subjects, check_token
from simulators.scenario import CAMERA_KINDS, INCIDENT_KIND_OF, RULE_OF_KIND, Scenario, merged_rules
from simulators.units import Behaviour, Fleet, SimClock, UnitSimulator, _quiet, _quiet_disc

__all__ = [
    "DEFAULT_CAMERA_RULES",
    "Drill",
    "DrillRuntime",
    "LiveDrill",
    "make_drill_district",
    "new_drill_id",
    "read_stream",
    "run_live",
    "scaled_policy",
]

DEFAULT_CAMERA_RULES: dict[str, Any] = {"running": {"speed": 1.6}}
"""Camera-rule overrides for live drills (`run_live`): the district default running speed
(0.8 body heights/s) calls every walker in the synthetic video a runner."""

TRUTH_KIND = {"intrusion": "intrusion", "loitering": "loitering", "fight": "fight", "crowd": "crowd",
              "camera_covered": "camera_tamper", "stream_dies": "camera_offline"}


def _now() -> float:
    return time.time()


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_drill_id(name: str, seed: int) -> str:
    """<scenario>-s<seed>-<UTC yyyymmddThhmmss>, a valid exercise id and subject token."""
    return check_token(f"{name}-s{seed}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"[:64], "drill id")


def scaled_policy(policy: Any, speed: float) -> Any:
    """The engine policy for a drill at `speed`: every wall-clock limit divided by the speed (acknowledge
    timeouts, correlation window, stale-position limit), so they last as long in simulated time as in real
    life. ETA comparisons (pre-emption margin) are simulated seconds already and stay."""
    if speed == 1:
        return policy
    return policy.model_copy(update={
        "ack_timeout_s": {k: v / speed for k, v in policy.ack_timeout_s.items()},
        "correlation_window_s": policy.correlation_window_s / speed,
        "stale_position_s": policy.stale_position_s / speed,
    })


def make_drill_district(district: Any, *, speed: float = 1.0, streams: dict[str, str] | None = None,
                        camera_rules: dict[str, Any] | None = None, priorities: dict[str, dict[str, int]] | None = None) -> Any:
    """A copy of the district for a drill: drilled cameras stream from `streams` with the scenario's rule
    overrides (and per-rule priorities) merged in; the policy scaled by the speed."""
    cams = []
    for c in district.cameras:
        if streams and c.id in streams:
            rules = merged_rules(c, camera_rules or {}, (priorities or {}).get(c.id))
            c = c.model_copy(update={"stream": streams[c.id], "rules": rules, "loop": False})
        cams.append(c)
    d = district.model_copy(update={"cameras": tuple(cams), "policy": scaled_policy(district.policy, speed)})
    d._index = None  # the copy shares the look-up caches of the original otherwise
    d._box = None
    return d


async def read_stream(nc: Any, stream: str, subject: str, since: datetime | None = None, timeout: float = 2.0) -> list[Any]:
    """Every message of `stream` on `subject` stored at or after `since`, oldest first (an ephemeral pull consumer)."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    js = nc.jetstream()
    try:
        info = await js.stream_info(stream)
    except Exception:
        return []
    if info.state.messages == 0:
        return []
    cfg = ConsumerConfig(
        ack_policy=AckPolicy.NONE, inactive_threshold=60.0, filter_subject=subject,
        deliver_policy=DeliverPolicy.BY_START_TIME if since else DeliverPolicy.ALL,
        opt_start_time=since.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if since else None,
    )
    psub = await js.pull_subscribe(subject, stream=stream, config=cfg)
    out: list[Any] = []
    try:
        while True:
            try:
                msgs = await psub.fetch(batch=1000, timeout=timeout)
            except Exception:
                break
            out += msgs
            if msgs and msgs[-1].metadata.num_pending == 0:
                break
    finally:
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
    return out


# --------------------------------------------------------------------------- the moving parts


class DrillRuntime:
    """Synthetic cameras (served and watched by the real camera adapter), simulated units, the injection
    listener and an incident watch, on a NATS server where an engine runs."""

    def __init__(
        self,
        district: Any,
        servers: Sequence[str],
        *,
        exercise: str,
        clock: SimClock,
        prefix: str = "",
        seed: int = 1,
        cameras: Sequence[str] = (),
        camera_fps: float = 10.0,
        night: bool = False,
        camera_rules: dict[str, Any] | None = None,
        camera_priorities: dict[str, dict[str, int]] | None = None,
        behaviour: Behaviour | None = None,
        sim_units: Sequence[str] | None = None,
        state_dir: str | Path | None = None,
        scale_policy: bool = True,
        log: Any = None,
    ) -> None:
        self.base_district = district
        self.servers = list(servers)
        self.exercise = exercise
        self.clock = clock
        self.prefix = prefix
        self.s = Subjects(prefix)
        self.seed = int(seed)
        self.camera_ids = list(dict.fromkeys(cameras))
        self.camera_fps = float(camera_fps)
        self.night = night
        self.camera_rules = camera_rules or {}
        self.camera_priorities = camera_priorities or {}
        self.behaviour = behaviour or Behaviour()
        self.sim_units = None if sim_units is None else list(sim_units)
        self._own_state_dir = not state_dir
        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="patrollink-drill-"))
        self.scale_policy = scale_policy
        if log is None:
            from dispatch.logs import get_logger

            log = get_logger("drill")
        self.log = log
        self.server: Any = None
        self.scenes: dict[str, Any] = {}
        self.district: Any = None  # the drill's copy (streams, rules, scaled policy), after serve_cameras()
        self.runner: Any = None
        self.fleet: Fleet | None = None
        self.units: UnitSimulator | None = None
        self.nc: Any = None
        self.scripted: list[dict[str, Any]] = []
        self.events: dict[str, IncidentEvent] = {}  # message id -> event, this drill only
        self.on_event: list[Callable[[IncidentEvent], None]] = []
        self._variant: dict[tuple[str, str], int] = {}
        self._subs: list[Any] = []
        self._bg: set[asyncio.Task[Any]] = set()
        self.place_alerts = 0

    # ------------------------------------------------------------------ start / stop

    async def serve_cameras(self) -> dict[str, str]:
        """Render one scene per drilled camera, served live; build the drill's district copy."""
        from simulators.mjpeg import MjpegServer
        from simulators.scene import Scene

        self.server = MjpegServer(quality=80)
        await self.server.astart()
        urls = {}
        for i, cid in enumerate(self.camera_ids):
            scene = Scene(seed=(self.seed * 1009 + i * 7919) % 2**31, fps=self.camera_fps, night=self.night)
            self.scenes[cid] = scene
            urls[cid] = self.server.add_camera(cid, scene, fps=self.camera_fps)
        self.district = make_drill_district(
            self.base_district, speed=self.clock.speed if self.scale_policy else 1.0, streams=urls,
            camera_rules=self.camera_rules, priorities=self.camera_priorities,
        )
        return urls

    async def start(self) -> None:
        """Connect; start the camera adapter on the drilled cameras; subscribe to incident events and injections."""
        import nats

        if self.district is None:
            await self.serve_cameras()
        self.nc = await nats.connect(self.servers, name=f"patrollink-drill-{self.exercise}", max_reconnect_attempts=-1,
                                     reconnect_time_wait=0.25, connect_timeout=5, error_cb=_quiet, disconnected_cb=_quiet_disc,
                                     reconnected_cb=_quiet_disc)
        self._subs.append(await self.nc.subscribe(self.s.all_incident_events, cb=self._on_incident_event))
        for subj in (self.s.drill_inject(self.exercise), self.s.drill_inject()):
            self._subs.append(await self.nc.subscribe(subj, queue="drill-inject", cb=self._on_inject))
        if self.camera_ids:
            from adapters.camera.runner import CameraRunner

            self.runner = CameraRunner(
                self.district, self.camera_ids, servers=self.servers, prefix=self.prefix,
                state_dir=self.state_dir / "camera", exercise=self.exercise, backoff_max_s=2.0, health_interval_s=2.0,
                name=f"drill-camera-{self.exercise}"[:60], drain_timeout_s=5.0, log=self.log,
            )
            await self.runner.start()
        self.fleet = Fleet(self.district, self.behaviour, seed=self.seed, exercise=self.exercise, units=self.sim_units)
        self.units = UnitSimulator(self.fleet, self.servers, self.clock, prefix=self.prefix, name=self.exercise)
        await self.units.connect()

    async def wait_cameras(self, timeout_s: float = 60.0, settle_s: float = 2.0) -> list[str]:
        """Until every drilled camera is online (returns those that are not, after timeout_s)."""
        deadline = time.monotonic() + timeout_s
        while self.runner is not None:
            st = self.runner.status()
            down = [c for c in self.camera_ids if st[c]["state"] != "online"]
            if not down:
                await asyncio.sleep(settle_s)  # the background model settles on a few empty frames
                return []
            if time.monotonic() > deadline:
                return down
            await asyncio.sleep(0.2)
        return []

    async def start_units(self) -> None:
        assert self.units is not None
        await self.units.start()

    async def stop_units(self) -> None:
        if self.units is not None:
            await self.units.stop()

    async def stop(self) -> None:
        for t in list(self._bg):
            t.cancel()
        await self.stop_units()
        if self.runner is not None:
            with contextlib.suppress(Exception):
                await self.runner.stop()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.astop()
        if self.nc is not None:
            for s in self._subs:
                with contextlib.suppress(Exception):
                    await s.unsubscribe()
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=2)
            with contextlib.suppress(Exception):
                await self.nc.close()
            self.nc = None
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    # ------------------------------------------------------------------ incident events

    async def _on_incident_event(self, m: Any) -> None:
        try:
            ev = IncidentEvent.model_validate_json(m.data)
        except ValueError:
            return
        if ev.exercise != self.exercise or ev.id in self.events:
            return
        self.events[ev.id] = ev
        for cb in self.on_event:
            cb(ev)

    # ------------------------------------------------------------------ incidents

    def _record(self, **kw: Any) -> dict[str, Any]:
        rec = {"n": len(self.scripted) + 1, "at_s": round(self.clock.now(), 1) if self.clock.started else 0.0, **kw}
        self.scripted.append(rec)
        return rec

    def inject_camera(self, camera: str, kind: str, *, seconds: float | None = None, source: str = "trainer",
                      description: str = "", at_s: float | None = None) -> dict[str, Any]:
        """Script an incident into the camera's video, starting now."""
        if camera not in self.scenes:
            raise ValueError(f"camera {camera!r} is not in this drill (drilled cameras: {', '.join(self.camera_ids) or 'none'})")
        if kind not in CAMERA_KINDS:
            raise ValueError(f"a camera cannot play {kind!r} (camera incidents: {', '.join(sorted(CAMERA_KINDS))})")
        k = CAMERA_KINDS[kind]
        cam = self.district.camera(camera)
        if k == "loitering" and seconds is None:
            seconds = cam.rules.loitering.seconds + 20.0  # long enough to count, with margin
        key = (camera, k)
        self._variant[key] = self._variant.get(key, -1) + 1
        scene = self.scenes[camera]
        start = self.server.scene_time(camera) + 0.5
        info = scene.add_incident(k, start, seconds=seconds, variant=self._variant[key], people=cam.rules.crowd.min_people + 2)
        rule = getattr(cam.rules, RULE_OF_KIND[k])
        rec = self._record(source=source, camera=camera, place=None, kind=k, expected_kind=INCIDENT_KIND_OF[k],
                           priority=rule.priority, injected_wall=self.server.camera_started(camera) + start,
                           scene_start=start, ids=info["ids"], seconds=info["seconds"], description=description)
        if at_s is not None:
            rec["at_s"] = at_s
        self.log.info("drill.incident", n=rec["n"], camera=camera, kind=k, source=source)
        return rec

    async def inject_place(self, kind: str, lat: float, lon: float, *, priority: int | None = None, source: str = "trainer",
                           description: str = "", at_s: float | None = None) -> dict[str, Any]:
        """An operator reports an incident at a place: an operator alert, published (retried until stored)."""
        ik = IncidentKind("fight" if kind == "scuffle" else kind)
        if not self.district.contains(lat, lon):
            raise ValueError(f"({lat:.6f}, {lon:.6f}) is outside district {self.district.name}")
        prio = priority or self.district.policy.rule(ik).default_priority
        alert = Alert(
            event_id=new_id(), source=AlertSource.operator, kind=ik, priority=prio,
            area=Area(lat=lat, lon=lon, description=(description or f"drill: {ik.value} reported")[:200]),
            certainty=CapCertainty.Observed, console="drill", operator=source,
            note=f"drill {self.exercise}", exercise=self.exercise, status=CapStatus.Exercise,
        )
        rec = self._record(source=source, camera=None, place={"lat": lat, "lon": lon}, kind=ik.value, expected_kind=ik.value,
                           priority=prio, injected_wall=_now(), alert_id=alert.id, description=description)
        if at_s is not None:
            rec["at_s"] = at_s
        await self.publish_durably(self.s.operator_alert("drill"), alert)
        self.place_alerts += 1
        return rec

    async def publish_durably(self, subject: str, msg: Any, give_up_s: float = 60.0) -> None:
        js = self.nc.jetstream()
        deadline = time.monotonic() + give_up_s
        backoff = 0.05
        while True:
            try:
                await js.publish(subject, encode(msg), headers={"Nats-Msg-Id": msg.id}, timeout=2.0)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    def camera_dies(self, camera: str, seconds_real: float | None) -> dict[str, Any]:
        scene = self.scenes[camera]
        start = self.server.scene_time(camera)
        scene.add_incident("stream_dies", start, seconds=seconds_real)
        wall = self.server.camera_started(camera) + start
        return {"camera": camera, "wall": wall, "until_wall": None if seconds_real is None else wall + seconds_real}

    def radio_silent(self, unit: str, t_sim: float, seconds_sim: float | None) -> dict[str, Any]:
        assert self.fleet is not None
        if unit in self.fleet.units:
            self.fleet.silence(unit, t_sim, None if seconds_sim is None else t_sim + seconds_sim)
        return {"unit": unit, "wall": self.clock.wall_of(t_sim),
                "until_wall": None if seconds_sim is None else self.clock.wall_of(t_sim + seconds_sim)}

    async def _on_inject(self, m: Any) -> None:
        try:
            req = DrillInject.model_validate_json(m.data or b"{}")
        except ValidationError as e:  # a trainer's typo must not stop the drill
            await self._answer(m, DrillInjectResult(ok=False, drill=self.exercise, error=describe_error(e)[:300]))
            return
        if req.drill and req.drill != self.exercise:
            return  # for another drill
        try:
            rec = await self.inject(req)
            reply = DrillInjectResult(ok=True, drill=self.exercise, n=rec["n"], at_s=rec["at_s"], camera=rec.get("camera"),
                                      kind=rec["kind"], expected_kind=rec["expected_kind"], priority=rec.get("priority"))
        except Exception as e:  # a camera not in the drill, a place outside the district: say so, go on
            reply = DrillInjectResult(ok=False, drill=self.exercise, error=str(e)[:300])
        await self._answer(m, reply)

    @staticmethod
    async def _answer(m: Any, reply: DrillInjectResult) -> None:
        if m.reply:
            with contextlib.suppress(Exception):
                await m.respond(encode(reply))

    async def inject(self, req: DrillInject) -> dict[str, Any]:
        """Script the requested incident (in a camera's video, or reported at a place) -> the scripted record."""
        if req.camera is not None:
            return self.inject_camera(req.camera, req.kind, seconds=req.seconds, source="trainer", description=req.description)
        assert req.at is not None  # DrillInject checks one of the two is given
        return await self.inject_place(req.kind, req.at.lat, req.at.lon, priority=req.priority, source="trainer",
                                       description=req.description)

    # ------------------------------------------------------------------ ground truth

    def truth_of(self, rec: dict[str, Any]) -> dict[str, Any] | None:
        """The scripted incident's ground truth from its scene: start / end (wall), zones, truth ids."""
        if not rec.get("camera"):
            return None
        scene = self.scenes[rec["camera"]]
        base = self.server.camera_started(rec["camera"])
        want = TRUTH_KIND[rec["kind"]]
        ids = set(rec.get("ids") or [])
        evs = [e for e in scene.events() if e["kind"] == want
               and ((ids and ids & set(e.get("ids") or [])) or (not ids and abs(e["start"] - rec["scene_start"]) < 0.05))]
        if not evs:
            return None
        e = min(evs, key=lambda e: e["start"])
        start = e["start"]
        if want == "crowd":
            start = min(start, float((e.get("detail") or {}).get("gather_start", start)))  # from when people gather
        return {"kind": want, "video_start_s": round(start, 2), "start_wall": base + start,
                "end_wall": None if e.get("end") is None else base + e["end"], "zones": e.get("zones") or [],
                "truth_ids": sorted(ids)}

    def camera_truth(self) -> dict[str, list[dict[str, Any]]]:
        """Every event of every drilled camera's video that should raise an alert, with wall times."""
        out: dict[str, list[dict[str, Any]]] = {}
        for cid, scene in self.scenes.items():
            base = self.server.camera_started(cid)
            out[cid] = [{"kind": e["kind"], "incident_kind": e["incident_kind"], "start_wall": base + e["start"],
                         "end_wall": None if e.get("end") is None else base + e["end"]}
                        for e in scene.events() if e.get("incident_kind")]
        return out


# --------------------------------------------------------------------------- progress


class Progress:
    """A progress bar and one live line per scripted incident on stderr (redrawn on a terminal)."""

    def __init__(self, drill: "Drill", stream: Any = None, enabled: bool = True) -> None:
        self.drill = drill
        self.out = stream or sys.stderr
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.enabled = enabled
        self._drawn = 0
        self._last: dict[int, str] = {}
        self._last_bar = -1

    def lines(self) -> tuple[str, list[tuple[int, str]]]:
        d = self.drill
        now = d.clock.now() if d.clock.started else 0.0
        total = max(d.expected_end_s, 1.0)
        frac = min(now / total, 1.0)
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        done = sum(1 for s in d.rt.scripted if d.status_of(s)[0] in ("resolved", "cancelled"))
        played = sum(1 for s in d.rt.scripted if s["source"] == "timeline")
        extra = len(d.rt.scripted) - played
        head = (f"[{bar}] {_mmss(now)} / ~{_mmss(total)} simulated  {played}/{len(d.scenario.incidents)} "
                f"incidents started{f' (+{extra} injected)' if extra else ''}, {done} closed")
        rows = []
        for s in d.rt.scripted:
            state, text = d.status_of(s)
            where = s.get("camera") or "operator"
            rows.append((s["n"], f"  #{s['n']:<2} {_mmss(s['at_s']):>6} {where:<9} {s['expected_kind']:<13} {text}"))
        return head, rows

    def update(self, final: bool = False) -> None:
        if not self.enabled:
            return
        head, rows = self.lines()
        if self.tty:
            if self._drawn:
                self.out.write(f"\x1b[{self._drawn}F")
            block = [head] + [r for _, r in rows]
            for line in block:
                self.out.write("\x1b[2K" + line[:160] + "\n")
            self._drawn = len(block)
            self.out.flush()
            return
        for n, r in rows:
            if self._last.get(n) != r:
                self._last[n] = r
                self.out.write(r.strip() + "\n")
        step = int(10 * min(self.drill.clock.now() / max(self.drill.expected_end_s, 1.0), 1.0)) if self.drill.clock.started else 0
        if step != self._last_bar or final:
            self._last_bar = step
            self.out.write(head + "\n")
        self.out.flush()


def _mmss(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(max(s, 0.0)))
    return f"{s // 60}:{s % 60:02d}"


# --------------------------------------------------------------------------- a scripted drill


class Drill:
    """One run of a scenario. See the module docstring."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        speed: float | None = None,
        seed: int | None = None,
        out_dir: str | Path | None = None,
        nats_urls: Sequence[str] | None = None,
        prefix: str | None = None,
        engine: str = "own",
        drill_id: str | None = None,
        progress: bool = True,
        progress_stream: Any = None,
        keep_state: bool = False,
        camera_timeout_s: float = 60.0,
    ) -> None:
        self.scenario = scenario
        self.speed = float(speed if speed is not None else scenario.speed)
        self.seed = int(seed if seed is not None else scenario.seed)
        if not self.speed > 0:
            raise ValueError("speed must be positive")
        self.id = drill_id or new_drill_id(scenario.name, self.seed)
        check_token(self.id, "drill id")
        self.out_dir = Path(out_dir) if out_dir else Path("var/drills") / self.id
        self.nats_urls = list(nats_urls) if nats_urls else None
        if engine not in ("own", "running"):
            raise ValueError("engine is 'own' (the drill starts one) or 'running' (use the one on that NATS)")
        if engine == "running" and not self.nats_urls:
            raise ValueError("--engine running needs --nats: the running engine's server")
        if engine == "running" and self.speed != 1:
            raise ValueError(f"a drill on the running engine must run at real time (speed 1, not {self.speed:g}): "
                             "that engine's timeouts are real ones")
        if self.nats_urls and any(f.nats_restart for f in scenario.failures):
            raise ValueError("the scenario restarts the NATS server (failures: nats_restart), which needs the embedded "
                             "server: run it without --nats")
        self.engine = engine
        # beside real operations on a shared server, the drill's own engine works under its own prefix
        self._auto_prefix = prefix is None and bool(self.nats_urls) and engine == "own"
        self.prefix = prefix if prefix is not None else (f"drill-{self.id}"[:60] if self._auto_prefix else "")
        self.progress_enabled = progress
        self.progress_stream = progress_stream
        self.keep_state = keep_state
        self.camera_timeout_s = camera_timeout_s
        self.clock = SimClock(self.speed)
        self.nats_server: Any = None
        self.app: Any = None
        self.rt: DrillRuntime = None  # type: ignore[assignment]
        self.failures: list[dict[str, Any]] = []
        self.report: dict[str, Any] | None = None
        self.paths: dict[str, Path] = {}
        self.interrupted = False
        self.ended_wall: float | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.state_dir: Path = None  # type: ignore[assignment]  # a temporary folder, made by run()
        self._quiet_since: float | None = None
        self._engine_stopped = False
        self.errors: list[str] = []

    # -- what the progress display and the end condition read
    @property
    def expected_end_s(self) -> float:
        return self.scenario.last_event_s + 3.0 * self.scenario.units.on_scene_s.mean + 120.0

    def status_of(self, s: dict[str, Any]) -> tuple[str, str]:
        """(state, text) of a scripted incident as the live events tell it."""
        iid = s.get("incident_id")
        if iid is None:
            if self.ended_wall is not None or (s.get("camera") and _now() > self._give_up_wall(s)):
                return "missed", "NOT DETECTED"
            return "playing", "in the video ..." if s.get("camera") else "reported ..."
        evs = sorted((e for e in self.rt.events.values() if e.incident_id == iid), key=lambda e: e.seq)
        if not evs:
            return "open", "alert"
        a = next((e for e in evs if e.event.value == "opened"), evs[0])
        t0 = a.time.timestamp()
        parts = []
        if s.get("injected_wall") and s.get("camera"):
            parts.append(f"alert {t0 - s['injected_wall']:+.1f}s(video)")
        unit = None
        for e in evs:
            k = e.event.value
            dt = (e.time.timestamp() - t0) * self.speed
            if k in ("assigned", "acknowledged", "on_scene", "resolved", "timed_out", "declined", "escalated", "cancelled"):
                label = {"acknowledged": "ack", "assigned": "order", "on_scene": "on scene", "timed_out": "timed out"}.get(k, k)
                parts.append(f"{label}{' ' + e.unit if e.unit else ''} +{dt:.0f}s")
            if e.unit:
                unit = e.unit
        state = evs[-1].state
        return state, " ".join(parts[-4:]) + (f"  [{unit}]" if unit and state in ("resolved", "on_scene") else "")

    def _give_up_wall(self, s: dict[str, Any]) -> float:
        seconds = float(s.get("seconds") or 0.0)
        return float(s.get("injected_wall") or _now()) + seconds + 90.0

    # -- the run
    async def run(self) -> dict[str, Any]:
        """Run the drill to its end; write and return the report. Raises only if it could not start."""
        sc = self.scenario
        stack = contextlib.AsyncExitStack()
        started = False
        self.state_dir = Path(tempfile.mkdtemp(prefix="patrollink-drill-"))
        try:
            urls = await self._start_nats(stack)
            if self._auto_prefix:  # a shared server: remove the drill's own streams and buckets at the end
                stack.push_async_callback(self._drop_prefix, urls)
            priorities: dict[str, dict[str, int]] = {}
            for inc in sc.incidents:
                if inc.camera and inc.priority:
                    priorities.setdefault(inc.camera, {})[RULE_OF_KIND[inc.scripted_kind]] = inc.priority
            self.rt = DrillRuntime(
                sc.district_obj, urls, exercise=self.id, clock=self.clock, prefix=self.prefix, seed=self.seed,
                cameras=sc.drilled_cameras, camera_fps=sc.cameras.fps, night=sc.cameras.night,
                camera_rules=dict(sc.cameras.rules), camera_priorities=priorities, behaviour=sc.units.behaviour(),
                sim_units=sc.simulated_units, state_dir=self.state_dir, scale_policy=self.engine == "own",
            )
            await self.rt.serve_cameras()
            stack.push_async_callback(self.rt.stop)
            if self.engine == "own":
                await self._start_engine(stack, urls)
            await self.rt.start()
            self._say(f"drill {self.id}: {sc.name} at {self.speed:g}x, seed {self.seed}; "
                      f"{len(sc.drilled_cameras)} camera(s), {len(self.rt.fleet.units)} simulated unit(s); NATS {', '.join(urls)}"
                      + (f", prefix {self.prefix}" if self.prefix else ""))
            if sc.drilled_cameras:
                self._say(f"waiting for the camera adapter to see {', '.join(sc.drilled_cameras)} ...")
                down = await self.rt.wait_cameras(self.camera_timeout_s)
                if down:
                    raise RuntimeError(f"camera(s) {', '.join(down)} not online after {self.camera_timeout_s:g} s: "
                                       + "; ".join(f"{c}: {self.rt.runner.status()[c]['detail']}" for c in down))
            self.clock.start()
            await self.rt.start_units()
            started = True
            self.rt.on_event.append(self._on_event)
            self._tasks = [asyncio.create_task(self._timeline(), name="drill-timeline")]
            await self._until_done()
        except (KeyboardInterrupt, asyncio.CancelledError):
            self.interrupted = True
            if not started:
                raise
        finally:
            self.ended_wall = _now()
            await cancel_and_wait(self._tasks)
            try:
                if started:
                    await self._finish(stack)
            finally:
                await stack.aclose()
                if not self.keep_state:
                    shutil.rmtree(self.state_dir, ignore_errors=True)
                else:
                    self._say(f"drill state (NATS data, camera adapter spool) kept in {self.state_dir}")
        assert self.report is not None
        return self.report

    def _say(self, text: str) -> None:
        if self.progress_enabled:
            out = self.progress_stream or sys.stderr
            out.write(text + "\n")
            out.flush()

    async def _start_nats(self, stack: contextlib.AsyncExitStack) -> list[str]:
        if self.nats_urls:
            return list(self.nats_urls)
        from dispatch.natsserver import EmbeddedNats

        self.nats_server = EmbeddedNats(self.state_dir / "nats", name="patrollink-drill")
        await self.nats_server.astart()
        stack.push_async_callback(self.nats_server.astop)
        url_file = _current_url_file()
        with contextlib.suppress(OSError):
            url_file.parent.mkdir(parents=True, exist_ok=True)
            url_file.write_text(self.nats_server.url)
            stack.callback(lambda: url_file.unlink(missing_ok=True))
        return [self.nats_server.url]

    async def _drop_prefix(self, urls: list[str]) -> None:
        import nats

        s = Subjects(self.prefix)
        try:
            nc = await nats.connect(urls, connect_timeout=5, error_cb=_quiet)
        except Exception:
            return
        js = nc.jetstream()
        for name in (s.stream_alerts, s.stream_radio, s.stream_incidents, s.stream_deadletter):
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
        with contextlib.suppress(Exception):
            await js.delete_key_value(s.bucket_state)
        with contextlib.suppress(Exception):
            await js.delete_object_store(s.bucket_snapshots)
        await nc.close()

    async def _start_engine(self, stack: contextlib.AsyncExitStack, urls: list[str]) -> None:
        from dispatch.app import build_app

        self.app, self.engine_rt = build_app(self.rt.district, urls, prefix=self.prefix, name="drill-engine",
                                             graph=self.rt.district.load_streets())
        await self.app.start()
        stack.push_async_callback(self._stop_engine)

    async def _stop_engine(self) -> None:
        if self.app is not None and not self._engine_stopped:
            self._engine_stopped = True
            await self.app.stop()

    # -- the timeline
    async def _timeline(self) -> None:
        sc = self.scenario
        plan: list[tuple[float, int, str, Any]] = [(i.at, 0, "incident", i) for i in sc.incidents]
        plan += [(f.at, 1, "failure", (k, f)) for k, f in enumerate(sc.failures, start=1)]
        plan.sort(key=lambda p: (p[0], p[1]))
        for at, _, what, item in plan:
            await self.clock.sleep_until(at)
            try:
                if what == "incident":
                    await self._play(item)
                else:
                    await self._fail(*item)
            except Exception as e:  # one broken step must not end the drill silently
                self.errors.append(f"t={at:g}s {what}: {e}")
                self.rt.log.error("drill.step.failed", at=at, what=what, error=str(e))

    async def _play(self, inc: Any) -> None:
        if inc.camera:
            self.rt.inject_camera(inc.camera, inc.kind, seconds=inc.seconds, source="timeline",
                                  description=inc.description, at_s=inc.at)
            return
        d = self.rt.district
        if isinstance(inc.place, str):
            p = d.community(inc.place).centroid
            lat, lon = p.lat, p.lon
            graph = d.load_streets()
            if graph is not None:  # on the nearest street of that community
                node, _ = graph.nearest_node(lat, lon)
                lat, lon = graph.coords(node)
        else:
            lat, lon = inc.place.lat, inc.place.lon
        await self.rt.inject_place(inc.kind, lat, lon, priority=inc.priority, source="timeline",
                                   description=inc.description, at_s=inc.at)

    async def _fail(self, k: int, f: Any) -> None:
        rec: dict[str, Any] = {"n": k, "at_s": f.at, "what": f.what, "seconds": f.seconds}
        if f.camera_dies:
            rec.update(self.rt.camera_dies(f.camera_dies, None if f.seconds is None else f.seconds / self.speed))
        elif f.radio_silent:
            rec.update(self.rt.radio_silent(f.radio_silent, f.at, f.seconds))
        else:
            assert self.nats_server is not None
            t0 = _now()
            rec.update({"wall": t0})
            self._say(f"failure #{k}: restarting the NATS server ...")
            await self.nats_server.arestart()
            rec["down_s"] = round(_now() - t0, 2)
            self._say(f"failure #{k}: NATS server back after {rec['down_s']:.1f} s")
        self.failures.append(rec)

    # -- watching
    def _on_event(self, ev: IncidentEvent) -> None:
        if ev.event.value not in ("opened", "merged"):
            return
        # attach the incident to the scripted incident it belongs to, as soon as it opens
        from simulators.report import incident_times, match_incidents

        groups: dict[str, list[IncidentEvent]] = {}
        for e in self.rt.events.values():
            groups.setdefault(e.incident_id, []).append(e)
        incs = {iid: incident_times(sorted(x, key=lambda e: e.seq)) for iid, x in groups.items()}
        for s in self.rt.scripted:
            if s.get("camera") and s.get("truth") is None:
                s["truth"] = self.rt.truth_of(s)
        for n, iid in match_incidents(self.rt.scripted, incs).items():
            self.rt.scripted[n - 1]["incident_id"] = iid

    def _finished(self) -> bool:
        sc = self.scenario
        now = self.clock.now()
        if now < sc.last_event_s or len([s for s in self.rt.scripted if s["source"] == "timeline"]) < len(sc.incidents):
            return False
        if len(self.failures) < len(sc.failures):
            return False
        for s in self.rt.scripted:
            if s.get("incident_id") is None and _now() <= self._give_up_wall(s):
                return False  # not detected yet; wait a while
        states: dict[str, str] = {}
        for e in sorted(self.rt.events.values(), key=lambda e: (e.incident_id, e.seq)):
            states[e.incident_id] = e.state
        if not all(st in ("resolved", "cancelled") for st in states.values()):
            self._quiet_since = None
            return False
        # everything is closed; end once the cameras are quiet too (no detection event in progress, nothing
        # unsent, no incident event for a moment), or a minute later whatever they do
        if self._quiet_since is None:
            self._quiet_since = _now()
        runner = self.rt.runner
        busy = runner is not None and (runner.backlog > 0 or any(c.open_events for c in runner.cams.values()))
        last = max((e.time.timestamp() for e in self.rt.events.values()), default=0.0)
        return (not busy and _now() - last > 1.5) or _now() - self._quiet_since > 60.0

    async def _until_done(self) -> None:
        progress = Progress(self, self.progress_stream, self.progress_enabled)
        limit = self.scenario.max_duration_s
        while True:
            progress.update()
            if self._finished():
                break
            if self.clock.now() >= limit:
                self.errors.append(f"time is up: {limit:g} simulated seconds and some incidents are still open")
                break
            for t in self._tasks:
                if t.done() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            await asyncio.sleep(0.5 if progress.tty else 0.25)
        progress.update(final=True)

    # -- the end
    async def _finish(self, stack: contextlib.AsyncExitStack) -> None:
        from simulators.report import build_report, write_report

        rt = self.rt
        end_sim = self.clock.now()
        await rt.stop_units()
        runner_alerts = 0
        if rt.runner is not None:
            with contextlib.suppress(Exception):
                await rt.runner.stop()  # drains its outbox: every alert raised is stored before we count
            runner_alerts = sum(c.alerts for c in rt.runner.cams.values())
        if self.engine == "own":  # let it take in the last alerts, then stop it: the stream is final when read
            await asyncio.sleep(0.5)
            with contextlib.suppress(Exception):
                await self._stop_engine()
        since = datetime.fromtimestamp(self.clock.wall0 - 5.0, timezone.utc)
        s = Subjects(self.prefix)
        events = [IncidentEvent.model_validate_json(m.data) for m in await read_stream(rt.nc, s.stream_incidents, s.all_incident_events, since)]
        events = [e for e in events if e.exercise == self.id]
        alerts = {json.loads(m.data).get("id") for m in await read_stream(rt.nc, s.stream_alerts, s.all_alerts, since)
                  if json.loads(m.data).get("exercise") == self.id}
        orders = [json.loads(m.data) for m in await read_stream(rt.nc, s.stream_radio, s.all_orders, since)]
        orders = [o for o in orders if o.get("exercise") == self.id and o.get("action") == "assign"]
        for srec in rt.scripted:
            if srec.get("camera"):
                srec["truth"] = rt.truth_of(srec)
        facts = self._facts(end_sim, runner_alerts, alerts, orders, events)
        self.report = build_report(facts, events, fleet=rt.fleet)
        self.paths = write_report(self.report, self.out_dir, self.scenario.district_obj, rt.district.load_streets(), rt.fleet,
                                  cameras=self.scenario.drilled_cameras)

    def _facts(self, end_sim: float, runner_alerts: int, alerts: set[str], orders: list[dict[str, Any]],
               events: list[IncidentEvent]) -> dict[str, Any]:
        sc = self.scenario
        rt = self.rt
        fleet = rt.fleet
        wall_s = (self.ended_wall or _now()) - (self.clock.wall0 or _now())
        raised = runner_alerts + rt.place_alerts
        checks: dict[str, dict[str, Any]] = {
            "alerts": {"raised": raised, "stored": len(alerts), "lost": max(0, raised - len(alerts)), "pass": len(alerts) >= raised,
                       "summary": f"{raised} alert(s) raised by the cameras and operators, {len(alerts)} stored in the ALERTS stream"},
        }
        assigned = [e for e in events if e.event.value == "assigned"]
        to_sim = [e for e in assigned if fleet is not None and e.unit in fleet.units]
        heard = {o for u in (fleet.units.values() if fleet else []) for o in u.orders_heard}
        missed_silent = {ln[3].split()[1] for ln in (fleet.log if fleet else []) if ln[2] == "missed"}
        stored_orders = {o["order_id"] for o in orders}
        lost = [e.order_id for e in to_sim if e.order_id not in heard and e.order_id not in missed_silent]
        checks["orders"] = {
            "assigned": len(assigned), "to_simulated_units": len(to_sim), "in_radio_stream": len(stored_orders & {e.order_id for e in assigned}),
            "heard": len([e for e in to_sim if e.order_id in heard]), "missed_radio_silent": len([e for e in to_sim if e.order_id in missed_silent]),
            "lost": len(lost), "pass": not lost and all(e.order_id in stored_orders for e in assigned),
            "summary": f"{len(assigned)} order(s) sent, all stored in RADIO: {all(e.order_id in stored_orders for e in assigned)}; "
                       f"to simulated units {len(to_sim)}, heard {len([e for e in to_sim if e.order_id in heard])}, "
                       f"missed while radio-silent {len([e for e in to_sim if e.order_id in missed_silent])}, lost {len(lost)}",
        }
        by_inc: dict[str, list[IncidentEvent]] = {}
        for e in events:
            by_inc.setdefault(e.incident_id, []).append(e)
        for f in self.failures:
            name = f"failure #{f['n']}: {f['what']}"
            if "camera" in f and f.get("camera"):
                opened = sorted((e for e in events if e.event.value == "opened" and e.camera == f["camera"]
                                 and e.kind.value == "camera_offline" and e.time.timestamp() >= f["wall"]), key=lambda e: e.time)
                after = opened[0].time.timestamp() - f["wall"] if opened else None
                checks[name] = {"camera_offline_alert": bool(opened), "after_real_s": None if after is None else round(after, 1),
                                "incident_id": opened[0].incident_id if opened else None, "pass": bool(opened),
                                "summary": (f"camera_offline raised {after:.1f} s (real) after the stream died" if opened
                                            else "no camera_offline alert was raised")}
            elif f.get("unit"):
                uid = f["unit"]
                mine = [e for e in assigned if e.unit == uid and e.time.timestamp() >= f["wall"]
                        and (f.get("until_wall") is None or e.time.timestamp() < f["until_wall"])]
                passed_on = 0
                for e in mine:
                    evs = sorted(by_inc.get(e.incident_id, []), key=lambda x: x.seq)
                    to = next((x for x in evs if x.seq > e.seq and x.event.value == "timed_out" and x.unit == uid), None)
                    nxt = next((x for x in evs if to is not None and x.seq > to.seq and x.event.value == "assigned" and x.unit != uid), None)
                    passed_on += nxt is not None
                checks[name] = {"orders_to_unit": len(mine), "timed_out_and_passed_on": passed_on,
                                "pass": len(mine) > 0 and passed_on == len(mine),
                                "summary": (f"{len(mine)} order(s) to {uid} while silent; {passed_on} timed out and went to the next unit"
                                            if mine else f"no order went to {uid} while it was silent (nothing to show)")}
            else:
                after = [e for e in events if e.time.timestamp() >= f["wall"]]
                checks[name] = {"down_s": f.get("down_s"), "alerts_lost": checks["alerts"]["lost"], "orders_lost": checks["orders"]["lost"],
                                "incident_events_after": len(after),
                                "pass": checks["alerts"]["pass"] and checks["orders"]["pass"] and len(after) > 0,
                                "summary": f"server down {f.get('down_s')} s; afterwards {len(after)} incident event(s); "
                                           f"alerts lost {checks['alerts']['lost']}, orders lost {checks['orders']['lost']}"}
        if self.errors:
            checks["runner"] = {"pass": False, "errors": self.errors, "summary": "; ".join(self.errors)}
        failures = []
        for f in self.failures:
            failures.append({k: v for k, v in f.items()} | {"wall_iso": _iso(f.get("wall"))})
        return {
            "drill": {
                "id": self.id, "scenario": sc.name, "scenario_file": str(sc.source) if sc.source else None,
                "description": sc.description.strip(), "district": sc.district_obj.name, "speed": self.speed, "seed": self.seed,
                "wall0": self.clock.wall0, "started": _iso(self.clock.wall0), "ended": _iso(self.ended_wall),
                "wall_s": round(wall_s, 1), "sim_s": round(end_sim, 1), "clock_start": sc.clock_start, "engine": self.engine,
                "nats": "embedded" if self.nats_server else ", ".join(self.nats_urls or []), "prefix": self.prefix,
                "interrupted": self.interrupted, "cameras": sc.drilled_cameras,
                "simulated_units": len(fleet.units) if fleet else 0, "real_units": list(sc.units.real),
            },
            "targets": sc.targets.model_dump(),
            "scripted": [self._public(s) for s in rt.scripted],
            "failures": failures,
            "camera_truth": rt.camera_truth(),
            "camera_hours": len(sc.drilled_cameras) * max(wall_s, 0.0) / 3600.0,
            "checks": checks,
        }

    @staticmethod
    def _public(s: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in s.items() if k not in ("incident_id",)}


def _current_url_file() -> Path:
    return Path(os.environ.get("PATROLLINK_STATE", ".state")) / "drill.url"


def summary_text(report: dict[str, Any], paths: dict[str, Path] | None = None) -> str:
    """What the runner prints at the end."""
    t = report["totals"]
    lines = [
        "",
        f"drill {report['drill']['id']}: {report['result']}",
        *(f"  {'PASS' if v['pass'] else 'FAIL'}  {v['target']}: "
          f"{'-' if v['fraction'] is None else format(v['fraction'], '.0%')}" for v in report["verdicts"].values()),
        *(f"  {'PASS' if c.get('pass', True) else 'FAIL'}  {name}: {c.get('summary', '')}" for name, c in report["checks"].items()),
        f"  incidents: {t['scripted']} scripted, {t['detected']}/{t['camera_incidents']} camera incidents detected, "
        f"{t['dispatched']} dispatched, {t['acknowledged']} acknowledged, {t['served']} served, best choice {t['best_choice']}",
        f"  detection: recall {'-' if t['detection_recall'] is None else format(t['detection_recall'], '.0%')}, "
        f"{t['false_alerts']} false alert(s) in {t['camera_hours']:.3f} camera-hours"
        + ("" if t["false_alerts_per_camera_hour"] is None else f" ({t['false_alerts_per_camera_hour']:.1f} per camera-hour)"),
    ]
    p = report["percentiles_s"]
    lines.append("  from the alert (simulated s, p50/p90/max): " + ", ".join(
        f"{k} {_n(v['p50'])}/{_n(v['p90'])}/{_n(v['max'])}" for k, v in p.items() if k != "detect_real_s"))
    lines.append(f"  detection delay (real s, p50/p90/max): {_n(p['detect_real_s']['p50'])}/{_n(p['detect_real_s']['p90'])}/{_n(p['detect_real_s']['max'])}")
    if paths:
        lines.append(f"  report: {paths.get('html')}")
    return "\n".join(lines)


def _n(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


# --------------------------------------------------------------------------- the live drill (`make run`)


LIVE_CAMERA_KINDS = ("intrusion", "fight", "crowd", "loitering", "intrusion", "camera_covered")
LIVE_PLACE_KINDS = ("medical", "theft", "suspicious", "assault", "vandalism")


class LiveDrill:
    """A never-ending drill at real time on a running engine: synthetic cameras watched by the real camera
    adapter, every unit simulated, a gentle trickle of incidents, and `patrollink drill inject`."""

    def __init__(
        self,
        district: Any,
        servers: Sequence[str],
        *,
        prefix: str = "",
        seed: int = 1,
        exercise: str | None = "live",
        cameras: Sequence[str] | int | None = 4,
        incident_every_s: float = 180.0,
        camera_rules: dict[str, Any] | None = None,
        behaviour: Behaviour | None = None,
        state_dir: str | Path | None = None,
        camera_fps: float = 10.0,
    ) -> None:
        if cameras is None:  # every camera of the district
            cameras = len(district.cameras)
        if isinstance(cameras, int):
            cameras = [c.id for c in district.cameras[:max(0, cameras)]]
        self.clock = SimClock(1.0)
        self.rng = random.Random(f"{seed}/live")
        self.incident_every_s = incident_every_s
        self.exercise = exercise or "live"
        self.rt = DrillRuntime(
            district, servers, exercise=self.exercise, clock=self.clock, prefix=prefix, seed=seed, cameras=cameras,
            camera_fps=camera_fps, camera_rules=DEFAULT_CAMERA_RULES if camera_rules is None else camera_rules,
            behaviour=behaviour or Behaviour(), state_dir=state_dir, scale_policy=False,
        )
        self._task: asyncio.Task[Any] | None = None

    async def start(self) -> "LiveDrill":
        await self.rt.serve_cameras()
        await self.rt.start()
        self.clock.start()
        await self.rt.start_units()
        self._task = asyncio.create_task(self._trickle(), name="live-drill-trickle")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
        await self.rt.stop()

    async def _trickle(self) -> None:
        rt = self.rt
        await asyncio.sleep(20.0)  # let the cameras settle first
        while True:
            try:
                if rt.camera_ids and self.rng.random() < 0.7:
                    rt.inject_camera(self.rng.choice(rt.camera_ids), self.rng.choice(LIVE_CAMERA_KINDS), source="trickle")
                else:
                    graph = rt.district.load_streets()
                    if graph is not None:
                        lat, lon = graph.coords(self.rng.randrange(graph.node_count))
                    else:
                        lat, lon = rt.district.center.lat, rt.district.center.lon
                    await rt.inject_place(self.rng.choice(LIVE_PLACE_KINDS), lat, lon, source="trickle")
            except Exception as e:
                rt.log.warning("live.incident.failed", error=str(e))
            await asyncio.sleep(self.rng.expovariate(1.0 / self.incident_every_s))


async def run_live(district: Any, urls: Sequence[str], *, prefix: str = "", seed: int = 1, exercise: str | None = "live",
                   cameras: Sequence[str] | int | None = 4, incident_every_s: float = 180.0, state_dir: str | Path | None = None,
                   stop: asyncio.Event | None = None, started: Callable[[LiveDrill], None] | None = None) -> None:
    """`make run`: a never-ending drill at 1x on the engine already running on `urls` (it starts none).

    Runs until `stop` is set or the task is cancelled, then stops its cameras, camera adapter and units.
    `started(live)` is called once everything runs (e.g. to print where to look).
    """
    live = LiveDrill(district, urls, prefix=prefix, seed=seed, exercise=exercise, cameras=cameras,
                     incident_every_s=incident_every_s, state_dir=state_dir)
    try:
        await live.start()
        if started is not None:
            started(live)
        if stop is None:
            await asyncio.Event().wait()
        else:
            await stop.wait()
    finally:
        await live.stop()
