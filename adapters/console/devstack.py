"""A whole PatrolLink on one event loop, for the console's tests, its benchmark and demos.

NOT used by the console server itself: this is a harness that puts, on one NATS server under one
prefix, the real engine (dispatch.app.build_app), the console (create_app), synthetic cameras
(simulators.mjpeg.MjpegServer) and, when asked, the real camera adapter (CameraRunner) on them.

    async with DevStack(nats_url, prefix, workdir, positions={"p07": (30.2066, 114.8985)},
                        scenes={"cam01": "walk_through_gate"}, adapter_cameras=["cam01"]) as st:
        st.console_url, st.password("p07"), st.publish_camera_alert("cam01", "intrusion") ...
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml

from adapters.console.auth import User, hash_password
from dispatch.aio import cancel_and_wait

REPO = Path(__file__).resolve().parents[2]
TIESHAN = REPO / "config" / "districts" / "tieshan.yaml"


def write_district(workdir: Path, base: Path = TIESHAN, streams: dict[str, str] | None = None,
                   policy: dict[str, Any] | None = None) -> Path:
    """A copy of a district file with some camera streams and policy knobs replaced."""
    data = yaml.safe_load(base.read_text(encoding="utf-8"))
    if data.get("streets") and not Path(data["streets"]["file"]).is_absolute():
        data["streets"]["file"] = str((base.parent / data["streets"]["file"]).resolve())
    for cam in data.get("cameras", []):
        if streams and cam["id"] in streams:
            cam["stream"] = streams[cam["id"]]
    if policy:
        data["policy"] = {**(data.get("policy") or {}), **policy}
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "district.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


class DevStack:
    def __init__(
        self,
        nats_url: str,
        prefix: str,
        workdir: str | Path,
        *,
        positions: dict[str, tuple[float, float]] | None = None,
        scenes: dict[str, str] | None = None,
        streams: dict[str, str] | None = None,
        scene_t0: float = -8.0,
        scene_loop: bool = False,
        adapter_cameras: list[str] | None = None,
        policy: dict[str, Any] | None = None,
        unit_accounts: list[str] | None = None,
        console_id: str = "console1",
        keep_positions_fresh: bool = True,
        video_encode: str = "shared",
    ) -> None:
        self.nats_url = nats_url
        self.prefix = prefix
        self.workdir = Path(workdir)
        self.positions = dict(positions or {})
        self.scenes = dict(scenes or {})
        self.streams = dict(streams or {})  # camera id -> an external stream URL
        self.scene_t0 = scene_t0
        self.scene_loop = scene_loop
        self.adapter_cameras = list(adapter_cameras or [])
        self.policy = policy
        self.unit_accounts = list(unit_accounts or list(self.positions))
        self.console_id = console_id
        self.keep_positions_fresh = keep_positions_fresh
        self.video_encode = video_encode
        self.passwords: dict[str, str] = {}
        self.browser_units: set[str] = set()  # units whose position a browser reports (not refreshed here)
        self.mjpeg: Any = None
        self.engine_app: Any = None
        self.engine_rt: Any = None
        self.runner: Any = None
        self.server: Any = None
        self.nc: Any = None
        self.district: Any = None
        self._tasks: list[asyncio.Task[Any]] = []

    # -- accounts: op1 (operator), sup1 (supervisor), one per unit named after it
    def _users(self) -> dict[str, User]:
        users: dict[str, User] = {}

        def add(name: str, role: str, unit: str | None = None) -> None:
            pw = f"{name}-secret-pw"
            self.passwords[name] = pw
            users[name] = User(username=name, role=role, password=hash_password(pw), unit=unit)

        add("op1", "operator")
        add("op2", "operator")
        add("sup1", "supervisor")
        for u in self.unit_accounts:
            add(u, "unit", u)
        return users

    def password(self, user: str) -> str:
        return self.passwords[user]

    @property
    def console_url(self) -> str:
        return self.server.url

    async def start(self) -> "DevStack":
        import nats

        from adapters.console.server import ConsoleServer, create_app
        from dispatch.app import build_app
        from dispatch.district import load_district
        from simulators.mjpeg import MjpegServer
        from simulators.scene import SCENARIOS

        self.workdir.mkdir(parents=True, exist_ok=True)
        streams: dict[str, str] = dict(self.streams)
        if self.scenes:
            self.mjpeg = await MjpegServer(quality=80).astart()
            for cid, name in self.scenes.items():
                scene = SCENARIOS[name](1)
                streams[cid] = self.mjpeg.add_camera(cid, scene, fps=15, t0=self.scene_t0,
                                                     loop_s=scene.duration if self.scene_loop else None)
        path = write_district(self.workdir, streams=streams, policy=self.policy)
        self.district = load_district(path)
        self.nc = await nats.connect(self.nats_url, connect_timeout=5, name="devstack")
        self.engine_app, self.engine_rt = build_app(self.district, [self.nats_url], prefix=self.prefix)
        await self.engine_app.start()
        await self.engine_rt.extras["broker"].connection.flush()
        await self.engine_rt.need_shell().ready.wait()
        app = create_app(self.district, [self.nats_url], prefix=self.prefix, users=self._users(), console_id=self.console_id,
                         cookie_secure="never", ice_hosts=["127.0.0.1"], video_encode=self.video_encode)
        self.server = await ConsoleServer(app, "127.0.0.1", 0).start()
        live = self.server.console.live
        await asyncio.wait_for(live.connected.wait(), 10)
        for _ in range(200):  # the console has read the buckets and streams
            if all(live.ready.values()):
                break
            await asyncio.sleep(0.05)
        await self.report_positions()
        if self.keep_positions_fresh:
            self._tasks.append(asyncio.create_task(self._fresh_positions()))
        if self.adapter_cameras:
            from adapters.camera.runner import CameraRunner

            self.runner = CameraRunner(self.district, self.adapter_cameras, servers=[self.nats_url], prefix=self.prefix,
                                       state_dir=self.workdir / "camera", health_interval_s=2.0)
            await self.runner.start()
        return self

    async def report_positions(self, units: list[str] | None = None) -> None:
        """Report the stack's unit positions and wait until the engine holds them."""
        from dispatch.events import UnitPosition, encode

        shell = self.engine_rt.need_shell()
        for uid in units or list(self.positions):
            lat, lon = self.positions[uid]
            p = UnitPosition(unit=uid, lat=lat, lon=lon)
            for _ in range(100):
                await self.nc.publish(self.engine_rt.subjects.unit_position(uid), encode(p))
                await self.nc.flush()
                for _ in range(20):
                    u = shell.state.units.get(uid)
                    if u is not None and u.fix_time == p.time:
                        break
                    await asyncio.sleep(0.01)
                else:
                    continue
                break

    async def _fresh_positions(self) -> None:
        while True:
            await asyncio.sleep(20.0)
            try:
                await self.report_positions([u for u in self.positions if u not in self.browser_units])
            except Exception:
                pass

    async def publish_camera_alert(self, camera: str, kind: str = "intrusion", priority: int = 2, exercise: str | None = None,
                                   snapshot: bytes | None = None) -> Any:
        """A camera alert as the adapter sends it (snapshot in the object store first)."""
        from dispatch.events import Alert, AlertSource, CapStatus, IncidentKind, encode, new_id

        s = self.engine_rt.subjects
        js = self.nc.jetstream()
        eid = new_id()
        snap_name = None
        if snapshot is not None:
            from nats.js.api import ObjectStoreConfig, StorageType

            try:
                obs = await js.object_store(s.bucket_snapshots)
            except Exception:
                obs = await js.create_object_store(s.bucket_snapshots, ObjectStoreConfig(storage=StorageType.FILE))
            snap_name = f"{camera}/{eid}.jpg"
            await obs.put(snap_name, snapshot)
        a = Alert(event_id=eid, source=AlertSource.camera, camera=camera, kind=IncidentKind(kind), priority=priority,
                  zones=("gate",), label="person", score=0.87, box=(250, 120, 330, 330), frame_size=(640, 360),
                  snapshot=snap_name, exercise=exercise, status=CapStatus.Exercise if exercise else CapStatus.Actual)
        await js.publish(s.camera_alert(camera), encode(a), headers={"Nats-Msg-Id": a.id})
        return a

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        if self.runner is not None:
            await self.runner.stop()
        if self.server is not None:
            await self.server.stop()
        if self.engine_app is not None:
            await self.engine_app.stop()
        if self.nc is not None:
            await self.nc.close()
        if self.mjpeg is not None:
            await self.mjpeg.astop()

    async def __aenter__(self) -> "DevStack":
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


def state_json(obj: Any) -> str:
    return json.dumps(obj, default=str, indent=1)


__all__ = ["DevStack", "write_district"]
