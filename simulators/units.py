"""Simulated patrol units: a seeded discrete-event simulation in simulated seconds, and its NATS shell.

    fleet = Fleet(district, Behaviour(), seed=7, exercise="drill-1")   # pure: no clock, no I/O
    outs = fleet.start(0.0)                  # [Out(t, subject kind, message)]: status + first positions
    outs += fleet.advance(60.0)              # everything due up to simulated t = 60 s
    outs += fleet.order(dispatch_order, 61.0)  # an order heard at t = 61 s (answer scheduled)

    sim = UnitSimulator(fleet, servers, SimClock(speed=10), prefix="")   # drives it on NATS
    await sim.start(); ...; await sim.stop()

Every unit of the district (or those named) moves along the street graph at its
travel mode's speed (the district's `streets.speeds_kmh`, over the graph's own
edge times, exactly as the engine estimates travel time), walks its beat when
idle (to a random street node of its beat community, dwells there, goes on, at
`patrol_speed` of its mode speed), reports its position every
`position_interval_s`, answers an order after a drawn delay (acknowledges,
declines with `decline_p`, or never answers with `silent_p` - a radio dead
spot), drives its own fastest route to the scene from wherever it is when it
acknowledges, reports en route / on scene / cleared and stays on scene for a
drawn time. A cancel order ends the job at once. A unit whose radio is silent
(a failure injection) neither hears orders nor sends anything, but keeps moving.

Determinism: every unit draws from its own generators, seeded from (seed, unit
id, purpose): patrol choices from one, answers from another, so the same seed
and the same orders at the same simulated times give the same decisions,
paths and messages; a different seed gives other ones. Positions are a pure
function of simulated time (legs with a start time, a path and a duration), so
the tick rate of the shell changes nothing.

Every message carries the fleet's `exercise` (the drill id): the engine only
orders units whose positions carry the incident's drill id, and a drill's orders
are recognised by theirs.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import heapq
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dispatch.aio import cancel_and_wait
from dispatch.events import (
    DispatchOrder,
    Message,
    OrderAction,
    OrderReply,
    ReplyKind,
    UnitAvailability,
    UnitPosition,
    UnitStatus,
    encode,
)
from dispatch.subjects import Subjects

__all__ = ["Behaviour", "Delay", "Fleet", "Out", "SimClock", "UnitSimulator", "travel"]

_M_PER_DEG = 111_320.0
_DEFAULT_KMH = {"foot": 5.0, "bicycle": 15.0, "motorbike": 35.0, "car": 40.0}


# --------------------------------------------------------------------------- distributions


@dataclass(frozen=True)
class Delay:
    """A delay in simulated seconds: fixed, uniform [lo, hi], or log-normal from its median and 90th percentile."""

    lo: float
    hi: float | None = None
    median: float | None = None
    p90: float | None = None

    @classmethod
    def fixed(cls, s: float) -> "Delay":
        return cls(float(s))

    @classmethod
    def uniform(cls, lo: float, hi: float) -> "Delay":
        return cls(float(lo), float(hi))

    @classmethod
    def lognormal(cls, median: float, p90: float) -> "Delay":
        return cls(0.0, None, float(median), float(p90))

    def draw(self, rng: random.Random) -> float:
        if self.median is not None:
            p90 = max(self.p90 or self.median, self.median)
            sigma = math.log(p90 / self.median) / 1.2815515655446004 if self.median > 0 else 0.0
            return min(self.median * math.exp(sigma * rng.gauss(0.0, 1.0)), 10.0 * p90)
        if self.hi is None:
            rng.random()  # keep the draws in step whatever the form
            return self.lo
        return rng.uniform(self.lo, self.hi)

    @property
    def mean(self) -> float:
        if self.median is not None:
            p90 = max(self.p90 or self.median, self.median)
            sigma = math.log(p90 / self.median) / 1.2815515655446004 if self.median > 0 else 0.0
            return self.median * math.exp(sigma * sigma / 2)
        return self.lo if self.hi is None else (self.lo + self.hi) / 2

    def describe(self) -> str:
        if self.median is not None:
            return f"median {self.median:g} s, 90% under {self.p90:g} s"
        return f"{self.lo:g} s" if self.hi is None else f"{self.lo:g}-{self.hi:g} s"


@dataclass(frozen=True)
class Behaviour:
    """How simulated units behave; every time in simulated seconds."""

    position_interval_s: float = 10.0
    answer_delay: Delay = Delay.lognormal(6.0, 15.0)
    decline_p: float = 0.05
    silent_p: float = 0.02
    on_scene: Delay = Delay.uniform(120.0, 300.0)
    patrol_dwell: Delay = Delay.uniform(60.0, 300.0)
    patrol_speed: float = 0.6  # fraction of the mode's speed while walking the beat
    accuracy_m: float = 8.0


# --------------------------------------------------------------------------- geometry


def _dist_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    k = math.cos(math.radians((a[0] + b[0]) / 2))
    return math.hypot((a[0] - b[0]) * _M_PER_DEG, (a[1] - b[1]) * _M_PER_DEG * k)


def travel(graph: Any, speed_mps: float, mode: str, a: tuple[float, float], b: tuple[float, float],
           search_cache: dict[tuple[str, int], Any] | None = None) -> tuple[list[tuple[float, float]], float]:
    """Fastest path a -> b for the mode and its time in seconds, as the engine estimates it: the road time
    between the nearest usable street nodes plus both access legs at the mode's speed. Without a graph (or
    when b cannot be reached), a straight line at the mode's speed."""
    if graph is None:
        return [a, b], _dist_m(a, b) / speed_mps
    na, da = graph.nearest_node(a[0], a[1], mode)
    nb, db = graph.nearest_node(b[0], b[1], mode)
    key = (mode, nb)
    s = search_cache.get(key) if search_cache is not None else None
    if s is None:
        s = graph.search(mode, nb)
        if search_cache is not None:
            if len(search_cache) > 256:
                search_cache.pop(next(iter(search_cache)))
            search_cache[key] = s
    road = s.time_from(na)
    if road is None:
        return [a, b], _dist_m(a, b) / speed_mps
    path = s.path_from(na) or [na]
    pts = [a] + [graph.coords(n) for n in path] + [b]
    return pts, road + (da + db) / speed_mps


@dataclass
class Leg:
    """Movement from t0 for `seconds` along pts at a constant pace (a single point: standing)."""

    t0: float
    seconds: float
    pts: list[tuple[float, float]]
    cum: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.cum:
            c = [0.0]
            for p, q in zip(self.pts, self.pts[1:]):
                c.append(c[-1] + _dist_m(p, q))
            self.cum = c

    @property
    def t1(self) -> float:
        return self.t0 + self.seconds

    @property
    def length_m(self) -> float:
        return self.cum[-1]

    def path_until(self, t: float) -> list[tuple[float, float]]:
        """The points travelled from t0 up to t (ending at the position at t)."""
        if len(self.pts) == 1 or self.seconds <= 0 or t >= self.t1:
            return list(self.pts)
        if t <= self.t0:
            return [self.pts[0]]
        d = (t - self.t0) / self.seconds * self.length_m
        i = bisect.bisect_right(self.cum, d)
        lat, lon, _, _ = self.at(t)
        return list(self.pts[:i]) + [(lat, lon)]

    def at(self, t: float) -> tuple[float, float, float, float | None]:
        """(lat, lon, speed m/s, heading deg or None) at t."""
        if len(self.pts) == 1 or self.seconds <= 0 or self.length_m <= 0:
            return self.pts[-1][0], self.pts[-1][1], 0.0, None
        f = min(max((t - self.t0) / self.seconds, 0.0), 1.0)
        d = f * self.length_m
        i = min(max(bisect.bisect_right(self.cum, d) - 1, 0), len(self.pts) - 2)
        seg = self.cum[i + 1] - self.cum[i]
        g = 0.0 if seg <= 0 else (d - self.cum[i]) / seg
        (la, lo), (lb, lob) = self.pts[i], self.pts[i + 1]
        lat, lon = la + g * (lb - la), lo + g * (lob - lo)
        moving = 0.0 < f < 1.0
        heading = None
        if moving and seg > 0:
            dy = (lb - la) * _M_PER_DEG
            dx = (lob - lo) * _M_PER_DEG * math.cos(math.radians(la))
            heading = math.degrees(math.atan2(dx, dy)) % 360.0
            if heading >= 360.0:
                heading = 0.0
        return lat, lon, (self.length_m / self.seconds if moving else 0.0), heading


# --------------------------------------------------------------------------- the simulation


@dataclass(frozen=True)
class Out:
    """A message a unit sends at simulated time t: kind is position, status or reply."""

    t: float
    kind: str
    unit: str
    msg: Message


@dataclass
class Job:
    order: DispatchOrder
    phase: str  # pending | en_route | on_scene
    gen: int
    will: str  # ack | decline | silent
    heard_at: float


@dataclass
class SimUnit:
    id: str
    kind: str
    mode: str
    beat: str
    home: tuple[float, float]
    speed_mps: float
    rng_patrol: random.Random
    rng_answer: random.Random
    leg: Leg
    legs: list[Leg] = field(default_factory=list)
    job: Job | None = None
    patrolling: bool = True  # a patrol event of the current patrol_gen is pending
    gen: int = 0
    patrol_gen: int = 0
    silent: list[tuple[float, float]] = field(default_factory=list)  # [from, until)
    track: list[tuple[float, float, float]] = field(default_factory=list)  # (t, lat, lon) at each report
    orders_heard: list[str] = field(default_factory=list)

    def pos(self, t: float) -> tuple[float, float]:
        lat, lon, _, _ = self.leg_at(t).at(t)
        return lat, lon

    def leg_at(self, t: float) -> Leg:
        if t >= self.leg.t0:
            return self.leg
        i = bisect.bisect_right([lg.t0 for lg in self.legs], t) - 1
        return self.legs[max(i, 0)] if self.legs else self.leg

    def is_silent(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.silent)


class Fleet:
    """The simulated units of one drill; pure (no clock, no I/O): the shell feeds it time and orders."""

    def __init__(
        self,
        district: Any,
        behaviour: Behaviour | None = None,
        seed: int = 1,
        exercise: str | None = None,
        units: Iterable[str] | None = None,
        graph: Any = "district",
    ) -> None:
        self.district = district
        self.b = behaviour or Behaviour()
        self.seed = int(seed)
        self.exercise = exercise
        self.graph = district.load_streets() if graph == "district" else graph
        kmh = dict(_DEFAULT_KMH)
        if getattr(district, "streets", None) is not None:
            kmh.update({str(k): float(v) for k, v in district.streets.speeds_kmh.items()})
        self.speeds = {m: v / 3.6 for m, v in kmh.items()}
        wanted = None if units is None else list(units)
        by_id = {u.id: u for u in district.units}
        if wanted is not None:
            unknown = [u for u in wanted if u not in by_id]
            if unknown:
                raise ValueError(f"unknown unit(s) {', '.join(unknown)} (not in district {district.name})")
        chosen = [by_id[u] for u in wanted] if wanted is not None else list(district.units)
        self.units: dict[str, SimUnit] = {}
        for u in chosen:
            home = (u.home.lat, u.home.lon) if u.home is not None else _centroid(district, u.beat)
            self.units[u.id] = SimUnit(
                id=u.id, kind=str(u.kind), mode=str(u.mode), beat=u.beat, home=home,
                speed_mps=self.speeds[str(u.mode)],
                rng_patrol=random.Random(f"{self.seed}/{u.id}/patrol"),
                rng_answer=random.Random(f"{self.seed}/{u.id}/answers"),
                leg=Leg(0.0, 0.0, [home]),
            )
        self._posts: dict[tuple[str, str], list[int]] = {}
        self._heap: list[tuple[float, int, str, str, int]] = []
        self._seq = 0
        self._searches: dict[tuple[str, int], Any] = {}
        self.now = 0.0
        self.log: list[tuple[float, str, str, str]] = []  # (t, unit, what, detail): decisions, for tests and reports
        self.drives: list[tuple[str, str, Leg]] = []  # (unit, incident id, leg): every drive to a scene, for the map
        self.events_processed = 0
        self.max_lag_s = 0.0

    # ------------------------------------------------------------------ scheduling

    def _push(self, t: float, unit: str, what: str, gen: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, unit, what, gen))

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def start(self, t: float = 0.0) -> list[Out]:
        """Every unit available at home; first position reports spread over one interval; patrols begin."""
        self.now = t
        outs: list[Out] = []
        iv = self.b.position_interval_s
        for u in self.units.values():
            u.leg = Leg(t, 0.0, [u.home])
            u.legs = [u.leg]
            outs.append(Out(t, "status", u.id, UnitStatus(unit=u.id, status=UnitAvailability.available, exercise=self.exercise)))
            self._push(t + u.rng_patrol.uniform(0.0, min(iv, 2.0)), u.id, "report")
            self._push(t + self.b.patrol_dwell.draw(u.rng_patrol) * u.rng_patrol.random(), u.id, "patrol", u.patrol_gen)
        return outs

    def advance(self, t: float) -> list[Out]:
        """Process everything due up to simulated time t."""
        outs: list[Out] = []
        heap = self._heap
        while heap and heap[0][0] <= t:
            te, _, uid, what, gen = heapq.heappop(heap)
            self.now = max(self.now, te)
            self.max_lag_s = max(self.max_lag_s, t - te)
            self.events_processed += 1
            u = self.units[uid]
            getattr(self, f"_on_{what}")(u, te, gen, outs)
        self.now = max(self.now, t)
        return outs

    # ------------------------------------------------------------------ movement

    def _set_leg(self, u: SimUnit, leg: Leg) -> None:
        u.leg = leg
        u.legs.append(leg)

    def _posts_of(self, u: SimUnit) -> list[int]:
        key = (u.beat, u.mode)
        if key not in self._posts:
            g = self.graph
            nodes: list[int] = []
            if g is not None:
                comm = self.district.community(u.beat) if hasattr(self.district, "community") else None
                for n in range(g.node_count):
                    if not g.is_usable(n, u.mode):
                        continue
                    lat, lon = g.coords(n)
                    if comm is not None and comm.contains(lat, lon):
                        nodes.append(n)
                if not nodes:  # a beat with no street of its own: the streets around home
                    near = sorted(range(g.node_count), key=lambda n: _dist_m(g.coords(n), u.home))
                    nodes = [n for n in near[:60] if g.is_usable(n, u.mode)]
            self._posts[key] = nodes
        return self._posts[key]

    def _walk_to(self, u: SimUnit, t: float, dest: tuple[float, float], pace: float) -> Leg:
        here = u.pos(t)
        pts, secs = travel(self.graph, u.speed_mps, u.mode, here, dest, self._searches)
        leg = Leg(t, secs / pace, pts)
        self._set_leg(u, leg)
        return leg

    def _on_patrol(self, u: SimUnit, t: float, gen: int, outs: list[Out]) -> None:
        """Idle: walk to the next post of the beat (then dwell there)."""
        if gen != u.patrol_gen or u.job is not None and u.job.phase != "pending":
            return
        posts = self._posts_of(u)
        if posts and self.graph is not None:
            dest = self.graph.coords(posts[u.rng_patrol.randrange(len(posts))])
        else:  # no streets: wander around home
            ang = u.rng_patrol.uniform(0, 2 * math.pi)
            r = u.rng_patrol.uniform(50, 300) / _M_PER_DEG
            dest = (u.home[0] + r * math.sin(ang), u.home[1] + r * math.cos(ang) / math.cos(math.radians(u.home[0])))
        leg = self._walk_to(u, t, dest, self.b.patrol_speed)
        self._push(leg.t1 + self.b.patrol_dwell.draw(u.rng_patrol), u.id, "patrol", u.patrol_gen)

    def _resume_patrol(self, u: SimUnit, t: float, pause: float = 0.0) -> None:
        lat, lon = u.pos(t)
        self._set_leg(u, Leg(t, 0.0, [(lat, lon)]))
        u.patrol_gen += 1
        u.patrolling = True
        self._push(t + pause, u.id, "patrol", u.patrol_gen)

    def _on_report(self, u: SimUnit, t: float, gen: int, outs: list[Out]) -> None:
        self._push(t + self.b.position_interval_s, u.id, "report")
        lat, lon, spd, hdg = u.leg_at(t).at(t)
        u.track.append((t, lat, lon))
        if u.is_silent(t):
            return
        outs.append(Out(t, "position", u.id, UnitPosition(
            unit=u.id, lat=round(lat, 7), lon=round(lon, 7), accuracy_m=self.b.accuracy_m,
            speed_mps=round(spd, 2), heading_deg=None if hdg is None else round(hdg, 1) % 360.0, exercise=self.exercise,
        )))

    # ------------------------------------------------------------------ orders

    def order(self, o: DispatchOrder, t: float) -> list[Out]:
        """An order published by the engine, heard at simulated time t (if it is this drill's and this fleet's)."""
        outs = self.advance(t)
        u = self.units.get(o.unit)
        if u is None or o.exercise != self.exercise:
            return outs
        if u.is_silent(t):
            self.log.append((t, u.id, "missed", f"{o.action.value} {o.order_id} (radio silent)"))
            return outs
        if o.action is OrderAction.cancel:
            if u.job is not None and u.job.order.order_id == o.order_id:
                self.log.append((t, u.id, "withdrawn", f"{o.order_id} {u.job.phase}: {o.reason}"))
                u.job = None
                u.gen += 1
                self._resume_patrol(u, t, pause=30.0)
            return outs
        u.orders_heard.append(o.order_id)
        r = u.rng_answer.random()
        delay = self.b.answer_delay.draw(u.rng_answer)
        will = "silent" if r < self.b.silent_p else "decline" if r < self.b.silent_p + self.b.decline_p else "ack"
        u.gen += 1
        if u.job is not None and u.job.phase in ("en_route", "on_scene"):
            self.log.append((t, u.id, "diverted", f"from {u.job.order.incident_id[:8]}"))
        u.job = Job(order=o, phase="pending", gen=u.gen, will=will, heard_at=t)  # walks on while it answers
        self.log.append((t, u.id, "heard", f"{o.order_id[:8]} incident {o.incident_id[:8]} -> {will} after {delay:.1f} s"))
        if will != "silent":
            self._push(t + delay, u.id, "answer", u.gen)
        return outs

    def _reply(self, u: SimUnit, t: float, kind: ReplyKind, outs: list[Out], reason: str = "") -> None:
        job = u.job
        assert job is not None
        if u.is_silent(t):
            return
        outs.append(Out(t, "reply", u.id, OrderReply(
            order_id=job.order.order_id, incident_id=job.order.incident_id, unit=u.id, reply=kind, reason=reason,
            exercise=self.exercise,
        )))

    def _on_answer(self, u: SimUnit, t: float, gen: int, outs: list[Out]) -> None:
        job = u.job
        if job is None or gen != job.gen or job.phase != "pending":
            return
        if u.is_silent(t):
            return  # the radio died before it could answer: the engine's timeout passes the order on
        if job.will == "decline":
            self._reply(u, t, ReplyKind.decline, outs, "busy with a matter here")
            self.log.append((t, u.id, "declined", job.order.order_id[:8]))
            u.job = None
            if not u.patrolling:  # it was diverted from another job: back to the beat
                self._resume_patrol(u, t, pause=10.0)
            return
        self._reply(u, t, ReplyKind.ack, outs)
        self._reply(u, t, ReplyKind.en_route, outs)
        job.phase = "en_route"
        place = (job.order.place.lat, job.order.place.lon)
        leg = self._walk_to(u, t, place, 1.0)
        self.drives.append((u.id, job.order.incident_id, leg))
        u.patrol_gen += 1  # the beat walk stops
        u.patrolling = False
        self.log.append((t, u.id, "en_route", f"{job.order.order_id[:8]} eta {leg.seconds:.0f} s"))
        self._push(leg.t1, u.id, "arrive", gen)

    def _on_arrive(self, u: SimUnit, t: float, gen: int, outs: list[Out]) -> None:
        job = u.job
        if job is None or gen != job.gen or job.phase != "en_route":
            return
        job.phase = "on_scene"
        self._reply(u, t, ReplyKind.on_scene, outs)
        self.log.append((t, u.id, "on_scene", job.order.order_id[:8]))
        self._push(t + self.b.on_scene.draw(u.rng_answer), u.id, "clear", gen)

    def _on_clear(self, u: SimUnit, t: float, gen: int, outs: list[Out]) -> None:
        job = u.job
        if job is None or gen != job.gen or job.phase != "on_scene":
            return
        self._reply(u, t, ReplyKind.cleared, outs, "dealt with on scene; no further action")
        self.log.append((t, u.id, "cleared", job.order.order_id[:8]))
        u.job = None
        self._resume_patrol(u, t, pause=10.0)

    # ------------------------------------------------------------------ failures and looking in

    def silence(self, unit: str, t_from: float, t_until: float | None = None) -> None:
        """The unit's radio is silent from t_from (until t_until; None: for good)."""
        self.units[unit].silent.append((t_from, math.inf if t_until is None else t_until))

    def position(self, unit: str, t: float) -> tuple[float, float]:
        """Where the unit truly was at simulated time t (not what it last reported)."""
        return self.units[unit].pos(t)

    def eta(self, unit: str, t: float, place: tuple[float, float]) -> float:
        """Travel time the unit would have needed from where it truly was at t (hindsight)."""
        u = self.units[unit]
        return travel(self.graph, u.speed_mps, u.mode, u.pos(t), place, self._searches)[1]


def _centroid(district: Any, beat: str) -> tuple[float, float]:
    c = district.community(beat)
    p = c.centroid if c is not None else district.center
    return (p.lat, p.lon)


# --------------------------------------------------------------------------- the clock


class SimClock:
    """Simulated seconds since start(), running `speed` times faster than wall time."""

    def __init__(self, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError("speed must be positive")
        self.speed = float(speed)
        self._m0: float | None = None
        self.wall0: float | None = None  # time.time() at simulated t = 0

    def start(self, at_sim: float = 0.0) -> "SimClock":
        self._m0 = time.monotonic() - at_sim / self.speed
        self.wall0 = time.time() - at_sim / self.speed
        return self

    @property
    def started(self) -> bool:
        return self._m0 is not None

    def now(self) -> float:
        if self._m0 is None:
            return 0.0
        return (time.monotonic() - self._m0) * self.speed

    def wall_of(self, t_sim: float) -> float:
        assert self.wall0 is not None
        return self.wall0 + t_sim / self.speed

    def sim_of(self, wall: float) -> float:
        assert self.wall0 is not None
        return (wall - self.wall0) * self.speed

    async def sleep_until(self, t_sim: float) -> None:
        await asyncio.sleep(max(0.0, (t_sim - self.now()) / self.speed))


# --------------------------------------------------------------------------- the NATS shell


async def _quiet(e: Exception) -> None:
    """nats-py's error callback: while the server is away every reconnect attempt is an error; not news."""


async def _quiet_disc() -> None:
    pass


class UnitSimulator:
    """Runs a Fleet on NATS: positions and status over core NATS, replies through JetStream (retried until
    stored, in order), orders from a durable pull consumer on the RADIO stream (so an order published while
    the connection was down is still heard once it is back)."""

    def __init__(
        self,
        fleet: Fleet,
        servers: Sequence[str],
        clock: SimClock,
        prefix: str = "",
        name: str = "units",
        on_out: Callable[[Out], None] | None = None,
    ) -> None:
        self.fleet = fleet
        self.servers = list(servers)
        self.clock = clock
        self.s = Subjects(prefix)
        self.name = name
        self.on_out = on_out
        self.nc: Any = None
        self.js: Any = None
        self._replies: asyncio.Queue[OrderReply] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._durable = f"sim_{(fleet.exercise or 'live')}_{name}".replace(".", "_")[:60]
        self.sent = {"position": 0, "status": 0, "reply": 0}
        self.failed = {"position": 0, "status": 0, "reply_retries": 0}
        self.lags: collections.deque[float] = collections.deque(maxlen=20_000)
        self.running = False

    async def connect(self) -> None:
        import nats

        self.nc = await nats.connect(self.servers, name=f"patrollink-sim-{self.name}", max_reconnect_attempts=-1,
                                     reconnect_time_wait=0.25, connect_timeout=5, error_cb=_quiet, disconnected_cb=_quiet_disc,
                                     reconnected_cb=_quiet_disc)
        self.js = self.nc.jetstream()

    async def start(self) -> "UnitSimulator":
        """Connect, subscribe to orders, start the clock's loop (the clock must be started)."""
        if self.nc is None:
            await self.connect()
        await self._subscribe_orders()
        self.running = True
        await self._send(self.fleet.start(self.clock.now()))
        self._tasks = [
            asyncio.create_task(self._drive(), name="sim-units-drive"),
            asyncio.create_task(self._fetch_orders(), name="sim-units-orders"),
            asyncio.create_task(self._send_replies(), name="sim-units-replies"),
        ]
        return self

    async def stop(self, drain_s: float = 3.0) -> None:
        self.running = False
        deadline = time.monotonic() + drain_s
        while not self._replies.empty() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await cancel_and_wait(self._tasks)
        self._tasks = []
        if self.nc is not None:
            try:
                await self.js.delete_consumer(self.s.stream_radio, self._durable)
            except Exception:
                pass
            try:  # flush what is sent, then close (draining waits on the pull subscription's inbox)
                await self.nc.flush(timeout=2)
            except Exception:
                pass
            try:
                await self.nc.close()
            except Exception:
                pass
            self.nc = None

    # -- orders
    async def _subscribe_orders(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        cfg = ConsumerConfig(
            durable_name=self._durable, deliver_policy=DeliverPolicy.NEW, ack_policy=AckPolicy.EXPLICIT,
            filter_subject=self.s.all_orders, ack_wait=5.0, inactive_threshold=3600.0, max_ack_pending=10_000,
        )
        for attempt in range(50):
            try:
                try:
                    await self.js.delete_consumer(self.s.stream_radio, self._durable)  # a leftover of an earlier run
                except Exception:
                    pass
                self._psub = await self.js.pull_subscribe(self.s.all_orders, durable=self._durable,
                                                          stream=self.s.stream_radio, config=cfg)
                return
            except Exception:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.1)  # the RADIO stream is created by the engine: wait for it

    async def _fetch_orders(self) -> None:
        import nats.errors

        while True:
            try:
                msgs = await self._psub.fetch(batch=200, timeout=0.25)
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.2)  # reconnecting
                continue
            for m in msgs:
                try:
                    o = DispatchOrder.model_validate_json(m.data)
                except ValueError:
                    o = None
                if o is not None and o.exercise == self.fleet.exercise and o.unit in self.fleet.units:
                    await self._send(self.fleet.order(o, self.clock.now()))
                    self._wake.set()
                try:
                    await m.ack()
                except Exception:
                    pass

    # -- time
    async def _drive(self) -> None:
        speed = self.clock.speed
        while True:
            now = self.clock.now()
            nt = self.fleet.next_time()
            if nt is not None and nt <= now:
                self.lags.append(now - nt)
                await self._send(self.fleet.advance(now))
                continue
            wait = 0.25 if nt is None else min(0.25, max(0.002, (nt - now) / speed))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                pass

    # -- sending
    async def _send(self, outs: list[Out]) -> None:
        for o in outs:
            if self.on_out is not None:
                self.on_out(o)
            if o.kind == "reply":
                self._replies.put_nowait(o.msg)  # type: ignore[arg-type]
                continue
            subject = self.s.unit_position(o.unit) if o.kind == "position" else self.s.unit_status(o.unit)
            try:
                await self.nc.publish(subject, encode(o.msg))
                self.sent[o.kind] += 1
            except Exception:
                self.failed[o.kind] += 1  # a position is a state: the next one replaces it

    async def _send_replies(self) -> None:
        while True:
            r = await self._replies.get()
            backoff = 0.05
            while True:
                try:
                    await self.js.publish(self.s.reply(r.unit), encode(r), headers={"Nats-Msg-Id": r.id}, timeout=2.0)
                    self.sent["reply"] += 1
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.failed["reply_retries"] += 1
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
