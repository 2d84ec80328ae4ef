"""A live trickle for `make run`: simulated patrol units and a trickle of alerts.

Units walk or drive their beats along the streets, report positions, answer
orders (mostly acknowledge, sometimes decline or stay silent like a radio dead
spot), drive the route, report on scene and clear. Alerts come from random
cameras and from operators at random streets. It speaks only the public event
contract. The drills issue grows this into seeded scenarios with scoring.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import structlog

from dispatch.events import (
    Alert,
    AlertSource,
    Area,
    CapCertainty,
    DispatchOrder,
    IncidentKind,
    OrderAction,
    OrderReply,
    ReplyKind,
    UnitPosition,
    UnitStatus,
    UnitAvailability,
    encode,
    new_id,
)
from dispatch.subjects import Subjects

log = structlog.get_logger("simulators.trickle")

CAMERA_KINDS = [IncidentKind.intrusion, IncidentKind.loitering, IncidentKind.fight, IncidentKind.crowd, IncidentKind.theft]
OPERATOR_KINDS = [IncidentKind.assault, IncidentKind.robbery, IncidentKind.suspicious, IncidentKind.medical, IncidentKind.vandalism]


@dataclass
class SimUnit:
    id: str
    mode: str
    speed_mps: float
    lat: float
    lon: float
    path: list[tuple[float, float]] = field(default_factory=list)
    order: DispatchOrder | None = None
    phase: str = "patrol"  # patrol, to_scene, on_scene
    busy_until: float = 0.0


class Trickle:
    def __init__(
        self,
        district: Any,
        servers: list[str],
        prefix: str = "",
        seed: int = 1,
        alert_every_s: float = 20.0,
        position_every_s: float = 5.0,
        decline_p: float = 0.08,
        silent_p: float = 0.05,
    ) -> None:
        self.district = district
        self.servers = servers
        self.s = Subjects(prefix)
        self.rng = random.Random(seed)
        self.alert_every_s = alert_every_s
        self.position_every_s = position_every_s
        self.decline_p = decline_p
        self.silent_p = silent_p
        self.graph = district.load_streets()
        speeds = {str(k): v / 3.6 for k, v in district.streets.speeds_kmh.items()} if district.streets else {}
        self.units: dict[str, SimUnit] = {}
        for u in district.units:
            home = u.home or district.community(u.beat).centroid
            self.units[u.id] = SimUnit(u.id, str(u.mode), speeds.get(str(u.mode), 1.4), home.lat, home.lon)
        self.withdrawn: set[str] = set()  # orders cancelled before the unit answered
        self.nc: Any = None
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        import nats

        self.nc = await nats.connect(self.servers, name="patrollink-trickle", max_reconnect_attempts=-1)
        self.js = self.nc.jetstream()
        await self.nc.subscribe(self.s.all_orders, cb=self._on_order)
        for u in self.units.values():
            await self._status(u, UnitAvailability.available)
        self._tasks = [asyncio.create_task(self._move()), asyncio.create_task(self._alerts())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.nc is not None:
            await self.nc.drain()

    # -- radio
    async def _publish(self, subject: str, msg: Any, durable: bool = False) -> None:
        if durable:
            await self.js.publish(subject, encode(msg), headers={"Nats-Msg-Id": msg.id})
        else:
            await self.nc.publish(subject, encode(msg))

    async def _status(self, u: SimUnit, status: UnitAvailability) -> None:
        await self._publish(self.s.unit_status(u.id), UnitStatus(unit=u.id, status=status))

    async def _reply(self, u: SimUnit, kind: ReplyKind, reason: str = "") -> None:
        o = u.order
        assert o is not None
        await self._publish(
            self.s.reply(u.id),
            OrderReply(order_id=o.order_id, incident_id=o.incident_id, unit=u.id, reply=kind, reason=reason),
            durable=True,
        )

    async def _on_order(self, m: Any) -> None:
        try:
            o = DispatchOrder.model_validate_json(m.data)
        except ValueError:
            return
        u = self.units.get(o.unit)
        if u is None or o.exercise is not None:
            return
        if o.action is OrderAction.cancel:
            self.withdrawn.add(o.order_id)
            if u.order and u.order.order_id == o.order_id:
                u.order, u.phase, u.path = None, "patrol", []
            return
        asyncio.get_running_loop().call_later(self.rng.uniform(2, 8), lambda: asyncio.ensure_future(self._answer(u, o)))

    async def _answer(self, u: SimUnit, o: DispatchOrder) -> None:
        r = self.rng.random()
        if o.order_id in self.withdrawn:
            self.withdrawn.discard(o.order_id)
            return
        if r < self.silent_p:
            return  # a radio dead spot: the engine's timeout passes it on
        u.order = o
        if r < self.silent_p + self.decline_p:
            await self._reply(u, ReplyKind.decline, "already dealing with something here")
            u.order = None
            return
        await self._reply(u, ReplyKind.ack)
        await self._reply(u, ReplyKind.en_route)
        u.phase = "to_scene"
        u.path = list(o.route[1:]) or [(o.place.lat, o.place.lon)]

    # -- movement
    def _patrol_path(self, u: SimUnit) -> list[tuple[float, float]]:
        if self.graph is None:
            return []
        src, _ = self.graph.nearest_node(u.lat, u.lon, u.mode)
        for _ in range(5):
            dst = self.rng.randrange(self.graph.node_count)
            lat, lon = self.graph.coords(dst)
            if abs(lat - u.lat) + abs(lon - u.lon) > 0.01:  # stay roughly on the beat
                continue
            route = self.graph.route(u.mode, src, dst)
            if route:
                return list(route)
        return []

    async def _move(self) -> None:
        loop = asyncio.get_running_loop()
        last_report = 0.0
        dt = 1.0
        while True:
            now = loop.time()
            for u in self.units.values():
                if u.phase == "on_scene":
                    if now >= u.busy_until and u.order is not None:
                        await self._reply(u, ReplyKind.cleared, "dealt with; no further action")
                        u.order, u.phase = None, "patrol"
                    continue
                if not u.path and u.phase == "patrol":
                    u.path = self._patrol_path(u)
                step = u.speed_mps * dt * (0.6 if u.phase == "patrol" else 1.0)
                while step > 0 and u.path:
                    tlat, tlon = u.path[0]
                    dy = (tlat - u.lat) * 111_320
                    dx = (tlon - u.lon) * 111_320 * 0.86
                    d = (dx * dx + dy * dy) ** 0.5
                    if d <= step:
                        u.lat, u.lon = tlat, tlon
                        u.path.pop(0)
                        step -= d
                    else:
                        u.lat += (tlat - u.lat) * step / d
                        u.lon += (tlon - u.lon) * step / d
                        step = 0
                if u.phase == "to_scene" and not u.path and u.order is not None:
                    await self._reply(u, ReplyKind.on_scene)
                    u.phase = "on_scene"
                    u.busy_until = now + self.rng.uniform(30, 90)
            if now - last_report >= self.position_every_s:
                last_report = now
                for u in self.units.values():
                    await self._publish(self.s.unit_position(u.id), UnitPosition(unit=u.id, lat=u.lat, lon=u.lon, accuracy_m=8.0))
            await asyncio.sleep(dt)

    async def _alerts(self) -> None:
        d = self.district
        while True:
            await asyncio.sleep(self.rng.expovariate(1.0 / self.alert_every_s))
            try:
                if d.cameras and self.rng.random() < 0.7:
                    cam = self.rng.choice(d.cameras)
                    kind = self.rng.choice(CAMERA_KINDS)
                    zones = tuple(z.name for z in cam.zones[:1])
                    alert = Alert(
                        event_id=new_id(), source=AlertSource.camera, camera=cam.id, kind=kind, zones=zones,
                        label="person", score=round(self.rng.uniform(0.6, 0.95), 2),
                        priority=d.policy.rule(kind).default_priority,
                    )
                    subject = self.s.camera_alert(cam.id)
                else:
                    kind = self.rng.choice(OPERATOR_KINDS)
                    if self.graph is not None:
                        lat, lon = self.graph.coords(self.rng.randrange(self.graph.node_count))
                    else:
                        lat, lon = d.center.lat, d.center.lon
                    alert = Alert(
                        event_id=new_id(), source=AlertSource.operator, kind=kind, console="sim", operator="sim",
                        area=Area(lat=lat, lon=lon, description="reported by phone"), certainty=CapCertainty.Observed,
                        priority=d.policy.rule(kind).default_priority,
                    )
                    subject = self.s.operator_alert("sim")
                await self._publish(subject, alert, durable=True)
            except Exception:
                log.exception("simulated alert failed")

