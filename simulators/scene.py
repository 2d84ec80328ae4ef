"""Synthetic CCTV camera: a seeded, deterministic renderer of a neighbourhood entrance.

A fixed camera, about 4.75 m up, looks across a small street at the gate of a
residential compound. Everything is drawn with numpy / cv2 (nothing is
downloaded): the background once per scene, the moving parts per frame.

Coordinates
-----------
Positions, paths and zones are *relative frame coordinates*: (0, 0) is the top
left of the frame, (1, 1) the bottom right, as in the district config's zone
polygons. A point on the ground is given by where it appears in the frame; the
renderer turns it into metres on the ground plane (pinhole camera, horizon at
y = ``HORIZON``) so that speeds are in m/s and figures scale with distance.

The scene (relative y of ground lines)::

    0.00 - 0.25   residential blocks inside the compound, sky, a tree canopy or two
    0.45          compound wall (solid base + iron railing) with the gate between
                  x = 0.31 and 0.69 (pillars, a sign beam, lamps, folded sliding gate)
    0.45 - 0.53   far pavement (wall side)
    0.54 - 0.83   the street (asphalt, dashed centre line at y ~ 0.65)
    0.84 - 1.00   near pavement (yellow tactile strip)

People walk where their feet are between y = 0.46 and y = 0.96 (``WALK_Y``);
there a figure is 50-130 px tall in a 640x360 frame (nearer = larger).

Zones (the district's cameras use these polygons; see config/districts/tieshan.yaml)
-------------------------------------------------------------------------------------
``GATE_ZONE``   = [(0.3, 0.45), (0.7, 0.45), (0.82, 1.0), (0.18, 1.0)]   restricted
``STREET_ZONE`` = [(0.0, 0.3), (1.0, 0.3), (1.0, 1.0), (0.0, 1.0)]
``GATE_APRON``  = [(0.3, 0.45), (0.7, 0.45), (0.71, 0.535), (0.29, 0.535)]
                  (just the pavement in front of the gate; not used by the district)

Note that GATE_ZONE spans the middle of the frame down to the bottom edge, so a
passer-by crossing the street in front of the gate walks through it.

Ground truth
------------
``Scene.truth(t)`` gives, per actor that has pixels in the frame, its box measured
from the pixels the renderer actually drew (exact), the bottom centre of that box
and the scripted ground point (relative), whether it is fully in view (inside the
frame, at most 25% hidden behind nearer actors, camera neither covered nor
blurred), and what it is doing. ``write_clip`` writes that per frame beside the
video, plus a summary of the scripted incidents (``Scene.events()``).

Scenarios
---------
``SCENARIOS[name](seed) -> Scene``; every scene has ``scene.zones`` (name ->
{"polygon", "restricted"}) = the gate and street zones above, and
``scene.duration``. Persons start after 3 s (and cameras events happen later) so
that a background model can settle on empty frames first.

    walk_through_gate  "walker" walks along the near pavement from 3 s, crosses to the gate
                       (enters GATE_ZONE at 5.4 s, leaves at 13.3 s) and walks off right; 21 s
    loiter_gate        "loiterer" walks to the gate and stands there 40 s (10.8-50.8 s); 60 s
    crowd_5, crowd_4   5 (4) people converge on (0.5, 0.62) from 4 s, all there at 14 s, stand
                       in a loose row 30 s (crowd event 14-44 s), then leave; 55 s
    run                "walker" from 3 s, then "runner" (4.5 m/s) across the street at ~11-14 s; 16 s
    scuffle            two people walk up to (0.45, 0.70) and scuffle 8-16 s, then one runs off; 27 s
    lights_on          night, nobody; lights switch on at 8 s (+60 grey levels and lamp cones); 20 s
    drift_noise        120 s of slow illumination drift, flicker, sensor noise (sigma 6) and
                       swaying trees; nobody
    cover              a walker (1-8 s); the camera is covered at 5 s for 10 s; 20 s
    knock              the camera is knocked (view turns ~10 degrees, shifts) at 5 s; 15 s
    blur               the camera is blurred (defocused) at 5 s for 8 s; 16 s
    traffic            three cars and a scooter, nobody on foot; 25 s
    busy               ~54 people over 60 s, 6-10 in view at once, both pavements both ways and
                       some crossing; two cars; 66 s

Drills (simulators/drill.py) script incidents into a scene while it is being served:
``Scene.add_incident(kind, start)`` (intrusion, loitering, fight, crowd, camera_covered,
stream_dies; seeded variations; thread-safe against the renderer).

Every event of a scene (``Scene.events()``; ``write_clip`` writes them) has ``kind``
(intrusion, loitering, crowd, running, fight, lights_on, camera_tamper, camera_offline,
vehicle), ``incident_kind`` (the contract's IncidentKind value an alert should carry, None
where no alert is expected), ``zone`` / ``zones``, ``start`` / ``end`` (scene seconds; ``end``
None = for good), ``ids`` (truth ids) and ``detail``. Intrusion events are every entry of a
person's scripted ground point into a restricted zone, whatever the time of day: whether it
counts is the camera's zone schedule's business (``clock_start`` says what local time t = 0 is,
when a scenario sets it).
"""

from __future__ import annotations

import json
import math
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# --------------------------------------------------------------------------- geometry

HORIZON = 0.035  # relative y of the horizon
FOCAL = 1.27  # focal length in frame heights (70 degrees horizontal field of view at 16:9)
CAM_HEIGHT = 4.75  # metres above the ground
PERSON_M = 1.72  # nominal person height; each person is 0.94-1.04 of it
WALK_Y = (0.46, 0.96)  # where feet may be for the 50-130 px size guarantee

Y_WALL = 0.45
Y_FAR_KERB = 0.53
Y_ROAD0 = 0.538
Y_ROAD1 = 0.83
Y_NEAR0 = 0.842
GATE_X = (0.31, 0.69)

GATE_ZONE: list[tuple[float, float]] = [(0.3, 0.45), (0.7, 0.45), (0.82, 1.0), (0.18, 1.0)]
STREET_ZONE: list[tuple[float, float]] = [(0.0, 0.3), (1.0, 0.3), (1.0, 1.0), (0.0, 1.0)]
GATE_APRON: list[tuple[float, float]] = [(0.3, 0.45), (0.7, 0.45), (0.71, 0.535), (0.29, 0.535)]

SHIFT = 4  # sub-pixel bits for cv2 drawing
ONE = 1 << SHIFT
AA = cv2.LINE_AA

WALK_SPEED = 1.3
RUN_SPEED = 4.5

# incident kinds of the event contract (dispatch.events.IncidentKind values) per scripted kind: what the
# camera adapter's alert for it carries (adapters/camera/rules.py: a runner is `suspicious` with
# detail.rule "running", a scuffle is `fight` with detail.rule "scuffle")
INCIDENT_KIND = {
    "intrusion": "intrusion",
    "loitering": "loitering",
    "crowd": "crowd",
    "running": "suspicious",
    "fight": "fight",
    "camera_tamper": "camera_tamper",
    "camera_offline": "camera_offline",
    "lights_on": None,
    "vehicle": None,
}


def _depth(y: float) -> float:
    """Ground distance (m) of a relative image row."""
    return FOCAL * CAM_HEIGHT / max(y - HORIZON, 1e-3)


def _stable_rng(*keys: Any) -> np.random.Generator:
    """A generator seeded from keys (ints or strings) without Python's salted hash()."""
    ints = [k if isinstance(k, int) else zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng([abs(int(i)) for i in ints])


def point_in_polygon(x: float, y: float, poly: Sequence[tuple[float, float]]) -> bool:
    inside = False
    n = len(poly)
    j = n - 1
    for i in range(n):
        xi, yi = poly[i]
        xj, yj = poly[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def path_fraction(path: Sequence[tuple[float, float]], index: int, aspect: float = 16 / 9) -> float:
    """Fraction of the ground length of `path` at its vertex `index` (for add_person(stop_at=...))."""
    pts = [_to_ground(x, y, aspect) for x, y in path]
    seg = [math.dist(pts[i], pts[i + 1]) for i in range(len(pts) - 1)]
    total = sum(seg) or 1.0
    return sum(seg[:index]) / total


def _to_ground(x: float, y: float, aspect: float) -> tuple[float, float]:
    z = _depth(y)
    return ((x - 0.5) * aspect * z / FOCAL, z)


def _to_image(gx: float, gz: float, aspect: float) -> tuple[float, float]:
    return (0.5 + FOCAL * gx / (gz * aspect), HORIZON + FOCAL * CAM_HEIGHT / gz)


# --------------------------------------------------------------------------- actors


@dataclass
class Actor:
    """A scripted person or vehicle.

    ``script`` is a list of waypoints ``(t, x, y)`` or ``(t, x, y, action)`` in seconds
    and relative frame coordinates (the ground point: feet, or a vehicle's footprint
    centre); between waypoints the actor moves in a straight line on the ground. It
    is on stage from the first waypoint's time to the last's. ``action`` is what it
    does from that waypoint to the next: "walk", "stand", "run", "scuffle" (people),
    "drive" or "stand" (vehicles); absent, it follows from the speed.
    The ``Scene.add_*`` helpers build these; ``Scene.add_actor`` takes one directly.
    """

    kind: str  # "person" | "vehicle"
    script: list[tuple]
    id: str | None = None
    label: str = ""  # person | car | scooter
    look: dict[str, Any] | None = None  # appearance overrides (see _person_look / _vehicle_look)
    face: dict[float, tuple[int, float, bool]] = field(default_factory=dict)  # t -> (side, sideness, toward camera) while standing/scuffling
    opponent: str | None = None  # scuffle partner: face it

    @property
    def waypoints(self) -> list[tuple[float, float, float]]:
        return [(float(w[0]), float(w[1]), float(w[2])) for w in self.script]

    @property
    def start(self) -> float:
        return float(self.script[0][0])

    @property
    def end(self) -> float:
        return float(self.script[-1][0])


class _Track:
    """An actor's script on the ground plane, ready to interpolate."""

    def __init__(self, actor: Actor, aspect: float):
        s = sorted(actor.script, key=lambda w: w[0])
        if len(s) < 2:
            raise ValueError(f"actor {actor.id}: a script needs at least two waypoints")
        self.t = np.array([w[0] for w in s], float)
        g = [_to_ground(w[1], w[2], aspect) for w in s]
        self.gx = np.array([p[0] for p in g], float)
        self.gz = np.array([p[1] for p in g], float)
        seg = np.hypot(np.diff(self.gx), np.diff(self.gz))
        self.cum = np.concatenate([[0.0], np.cumsum(seg)])
        dt = np.maximum(np.diff(self.t), 1e-9)
        speed = seg / dt
        acts = []
        for i in range(len(s) - 1):
            a = s[i][3] if len(s[i]) > 3 and s[i][3] else None
            if a is None:
                if actor.kind == "vehicle":
                    a = "drive" if speed[i] > 0.05 else "stand"
                else:
                    a = "stand" if speed[i] < 0.05 else ("run" if speed[i] > 2.6 else "walk")
            acts.append(a)
        self.action = acts
        self.speed = speed
        self.t0 = float(self.t[0])
        self.t1 = float(self.t[-1])

    def seg(self, t: float) -> int:
        i = int(np.searchsorted(self.t, t, side="right")) - 1
        return min(max(i, 0), len(self.action) - 1)

    def at(self, t: float) -> tuple[float, float, float, int]:
        """Ground x, z, distance travelled and segment index at t."""
        i = self.seg(t)
        t0, t1 = self.t[i], self.t[i + 1]
        f = 0.0 if t1 <= t0 else min(max((t - t0) / (t1 - t0), 0.0), 1.0)
        gx = self.gx[i] + f * (self.gx[i + 1] - self.gx[i])
        gz = self.gz[i] + f * (self.gz[i + 1] - self.gz[i])
        d = self.cum[i] + f * (self.cum[i + 1] - self.cum[i])
        return gx, gz, d, i

    def heading(self, i: int) -> tuple[float, float] | None:
        """Ground direction of segment i, or of the nearest moving one before it."""
        for j in range(i, -1, -1):
            dx, dz = self.gx[j + 1] - self.gx[j], self.gz[j + 1] - self.gz[j]
            n = math.hypot(dx, dz)
            if n > 1e-6:
                return dx / n, dz / n
        for j in range(i + 1, len(self.action)):
            dx, dz = self.gx[j + 1] - self.gx[j], self.gz[j + 1] - self.gz[j]
            n = math.hypot(dx, dz)
            if n > 1e-6:
                return dx / n, dz / n
        return None


_TOPS = [
    (30, 30, 32), (45, 40, 38), (235, 235, 232), (40, 40, 150), (150, 70, 40), (60, 110, 60),
    (40, 160, 200), (120, 60, 40), (95, 95, 100), (30, 60, 110), (170, 150, 140), (80, 40, 110),
    (200, 190, 60), (50, 50, 200), (210, 210, 200), (70, 70, 70),
]
_BOTTOMS = [(110, 70, 45), (40, 35, 30), (35, 35, 38), (90, 90, 92), (130, 160, 175), (70, 50, 30), (20, 20, 22), (120, 100, 80)]
_SKIN = [(150, 180, 220), (135, 165, 205), (120, 150, 195), (100, 130, 175), (80, 105, 150)]
_HAIR = [(20, 20, 24), (28, 28, 35), (35, 40, 55), (45, 55, 75), (120, 120, 125)]
_SHOES = [(25, 25, 25), (40, 40, 45), (215, 215, 215), (50, 60, 80)]
_CARS = [(225, 225, 225), (180, 180, 178), (35, 35, 38), (40, 40, 170), (150, 90, 40), (110, 110, 115), (60, 90, 40), (200, 200, 205)]


def _person_look(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "height": float(rng.uniform(0.94, 1.04)),
        "build": float(rng.uniform(0.92, 1.12)),
        "top": _jitter(_TOPS[int(rng.integers(len(_TOPS)))], rng),
        "bottom": _jitter(_BOTTOMS[int(rng.integers(len(_BOTTOMS)))], rng),
        "skin": _SKIN[int(rng.integers(len(_SKIN)))],
        "hair": _HAIR[int(rng.integers(len(_HAIR)))],
        "shoes": _SHOES[int(rng.integers(len(_SHOES)))],
        "long_hair": bool(rng.random() < 0.3),
        "sleeves": bool(rng.random() < 0.75),
        "bag": bool(rng.random() < 0.25),
        "phase": float(rng.uniform(0, 2 * math.pi)),
        "stride": float(rng.uniform(1.3, 1.5)),
    }


def _vehicle_look(rng: np.random.Generator, label: str) -> dict[str, Any]:
    return {"color": _jitter(_CARS[int(rng.integers(len(_CARS)))], rng), "rider": _person_look(rng), "label": label}


def _jitter(c: Sequence[int], rng: np.random.Generator, amount: int = 14) -> tuple[int, int, int]:
    return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in c)  # type: ignore[return-value]


def _shade(c: Sequence[float], f: float) -> tuple[int, int, int]:
    return (int(min(255, c[0] * f)), int(min(255, c[1] * f)), int(min(255, c[2] * f)))


def _p(x: float, y: float) -> tuple[int, int]:
    return (int(x * ONE + 0.5), int(y * ONE + 0.5))


_SUM3 = np.ones((1, 3), np.float32)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """uint8 mask (1 where any channel differs) of two same-size BGR images."""
    d = cv2.transform(cv2.absdiff(a, b), _SUM3)
    return (d > 0).view(np.uint8)


# --------------------------------------------------------------------------- the scene


@dataclass
class _CamEvent:
    kind: str  # lights_on | cover | knock | blur | stream_dies
    t: float
    seconds: float | None = None
    delta: float = 0.0
    cone: bool = False
    angle: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)

    @property
    def end(self) -> float | None:
        return None if self.seconds is None else self.t + self.seconds


class Scene:
    """A seeded entrance scene; see the module docstring for geometry, zones and scenarios."""

    def __init__(
        self,
        width: int = 640,
        height: int = 360,
        fps: float = 15.0,
        seed: int = 0,
        noise: float = 4.0,
        drift: bool = True,
        *,
        night: bool = False,
        flicker: float = 0.01,
        jpeg_quality: int | None = None,
        zones: dict[str, Sequence[tuple[float, float]]] | None = None,
        restricted: Sequence[str] = ("gate",),
        clock_start: str | None = None,
    ):
        if width < 64 or height < 48:
            raise ValueError("frame too small (at least 64x48)")
        self.width = int(width)
        self.height = int(height)
        self.fps = float(fps)
        self.seed = int(seed)
        self.noise = float(noise)
        self.drift = bool(drift)
        self.night = bool(night)
        self.flicker = float(flicker)
        self.jpeg_quality = jpeg_quality
        self.clock_start = clock_start  # local time at t = 0 ("23:40:00"), metadata for drills
        self.aspect = self.width / self.height
        self.length = 0.0  # minimum duration (scenarios set it for clips with nothing scripted late)
        self.zones: dict[str, dict[str, Any]] = {}
        for name, poly in (zones if zones is not None else {"gate": GATE_ZONE, "street": STREET_ZONE}).items():
            self.add_zone(name, poly, restricted=name in restricted)
        self._actors: dict[str, Actor] = {}
        self._tracks: dict[str, _Track] = {}
        self._incidents: list[dict[str, Any]] = []
        self._cam: list[_CamEvent] = []
        self._n = 0
        # scripting while the scene is being served (drills inject incidents into a live camera):
        # add_incident and _compose take this lock, so a frame never sees half an incident
        self._script_lock = threading.RLock()
        self._rng = _stable_rng(self.seed, "scene")
        self._lookup_cache: tuple[float, Any] | None = None
        rng = _stable_rng(self.seed, "drift")
        self._drift_phase = rng.uniform(0, 2 * math.pi, 3)
        self._drift_period = (rng.uniform(200, 320), rng.uniform(70, 110), rng.uniform(25, 40))
        self._build_background()
        self._build_noise()

    # ------------------------------------------------------------------ scripting

    def add_zone(self, name: str, polygon: Sequence[tuple[float, float]], restricted: bool = False) -> None:
        self.zones[name] = {"polygon": [(float(x), float(y)) for x, y in polygon], "restricted": bool(restricted)}

    def _new_id(self, prefix: str, truth_id: str | None) -> str:
        self._n += 1
        tid = truth_id or f"{prefix}{self._n}"
        if tid in self._actors:
            raise ValueError(f"truth id {tid!r} is already used")
        return tid

    def add_actor(self, actor: Actor) -> str:
        """Add a scripted actor (waypoints in relative coordinates); returns its truth id."""
        if actor.kind not in ("person", "vehicle"):
            raise ValueError(f"actor kind must be person or vehicle, not {actor.kind!r}")
        actor.id = self._new_id("p" if actor.kind == "person" else "v", actor.id)
        if not actor.label:
            actor.label = "person" if actor.kind == "person" else "car"
        rng = _stable_rng(self.seed, "look", actor.id)
        base = _person_look(rng) if actor.kind == "person" else _vehicle_look(rng, actor.label)
        base.update(actor.look or {})
        actor.look = base
        self._actors[actor.id] = actor
        self._tracks[actor.id] = _Track(actor, self.aspect)
        self._lookup_cache = None
        return actor.id

    def _walk_script(
        self,
        path: Sequence[tuple[float, float]],
        speed: float,
        start: float,
        action: str,
        stop_at: float | None = None,
        stay_s: float = 0.0,
    ) -> tuple[list[tuple], tuple[float, float] | None]:
        if len(path) < 2:
            raise ValueError("a path needs at least two points")
        if speed <= 0:
            raise ValueError("speed must be positive")
        g = [_to_ground(x, y, self.aspect) for x, y in path]
        seg = [math.dist(g[i], g[i + 1]) for i in range(len(g) - 1)]
        total = sum(seg)
        pts: list[tuple[float, float, float]] = []  # (distance, x, y)
        d = 0.0
        for i, (x, y) in enumerate(path):
            pts.append((d, float(x), float(y)))
            if i < len(seg):
                d += seg[i]
        stop_pt = None
        if stop_at is not None and stay_s > 0:
            ds = min(max(stop_at, 0.0), 1.0) * total
            for i in range(len(seg)):
                if pts[i][0] <= ds <= pts[i + 1][0] + 1e-9:
                    f = 0.0 if seg[i] == 0 else (ds - pts[i][0]) / seg[i]
                    gx = g[i][0] + f * (g[i + 1][0] - g[i][0])
                    gz = g[i][1] + f * (g[i + 1][1] - g[i][1])
                    x, y = _to_image(gx, gz, self.aspect)
                    pts.insert(i + 1, (ds, x, y))
                    stop_pt = (x, y)
                    break
        script: list[tuple] = []
        t = start
        stopped = False
        for k, (dk, x, y) in enumerate(pts):
            if k > 0:
                t = start + dk / speed + (stay_s if stopped else 0.0)
            if stop_pt is not None and not stopped and (x, y) == stop_pt:
                script.append((t, x, y, "stand"))
                script.append((t + stay_s, x, y, action))
                stopped = True
                continue
            script.append((t, x, y, action))
        return script, stop_pt

    def add_person(
        self,
        path: list[tuple[float, float]],
        speed: float = WALK_SPEED,
        start: float = 0.0,
        stop_at: float | None = None,
        stay_s: float = 0.0,
        run: bool = False,
        truth_id: str | None = None,
    ) -> str:
        """A person walking (or running) along `path` (relative ground points) at `speed` m/s.

        With `stop_at` (a fraction 0..1 of the path's ground length; see path_fraction)
        and `stay_s`, they stop there and stand for stay_s seconds (loitering).
        `run=True` with the default speed runs at 4.5 m/s.
        """
        if run and speed == WALK_SPEED:
            speed = RUN_SPEED
        action = "run" if run else "walk"
        script, stop_pt = self._walk_script(path, speed, start, action, stop_at, stay_s)
        pid = self.add_actor(Actor("person", script, id=truth_id, label="person"))
        if stop_pt is not None:
            t_stop = next(w[0] for w in script if w[3] == "stand")
            self._actors[pid].face[t_stop + 1.0] = (0, 0.3, True)  # turns to the street after a second
            self._incidents.append(
                {"kind": "loitering", "ids": [pid], "start": t_stop, "end": t_stop + stay_s, "at": list(stop_pt),
                 "detail": {"seconds": stay_s}}
            )
        if run:
            t_in, t_out = self._in_view_interval(pid)
            self._incidents.append({"kind": "running", "ids": [pid], "start": t_in, "end": t_out, "detail": {"speed_mps": speed}})
        return pid

    def add_vehicle(self, path: list[tuple[float, float]], speed: float = 8.0, start: float = 0.0, kind: str = "car",
                    truth_id: str | None = None) -> str:
        """A car (or kind="scooter", with its rider) driving along `path` at `speed` m/s."""
        if kind not in ("car", "scooter"):
            raise ValueError("vehicle kind must be car or scooter")
        script, _ = self._walk_script(path, speed, start, "drive")
        vid = self.add_actor(Actor("vehicle", script, id=truth_id, label=kind))
        t_in, t_out = self._in_view_interval(vid)
        self._incidents.append({"kind": "vehicle", "ids": [vid], "start": t_in, "end": t_out, "detail": {"label": kind}})
        return vid

    def add_scuffle(self, at: tuple[float, float], start: float, seconds: float) -> list[str]:
        """Two people walk up to `at`, scuffle (close, erratic, fast) from `start` for `seconds`, then leave
        (one runs off one way, the other walks off the other way)."""
        rng = _stable_rng(self.seed, "scuffle", self._n, start)
        gx, gz = _to_ground(at[0], at[1], self.aspect)
        ids = []
        for side in (-1, 1):
            # walk in along the street from 5 m away, to half a metre from the spot
            ax, az = gx + side * 0.35, gz + float(rng.uniform(-0.2, 0.2))
            fx, fz = ax + side * 5.5, az + float(rng.uniform(-1.0, 1.0))
            t_arrive = start
            t_from = t_arrive - 5.5 / 1.4
            script: list[tuple] = [(t_from, *_to_image(fx, fz, self.aspect), "walk")]
            t = t_arrive
            px, pz = ax, az
            while t < start + seconds:
                script.append((t, *_to_image(px, pz, self.aspect), "scuffle"))
                t += float(rng.uniform(0.15, 0.3))
                px = ax + float(rng.uniform(-0.45, 0.45)) + side * float(rng.uniform(-0.1, 0.3))
                pz = az + float(rng.uniform(-0.35, 0.35))
            script.append((start + seconds, *_to_image(px, pz, self.aspect), "run" if side < 0 else "walk"))
            ex = px + side * 14.0
            spd = RUN_SPEED if side < 0 else WALK_SPEED
            script.append((start + seconds + 14.0 / spd, *_to_image(ex, pz, self.aspect)))
            pid = self.add_actor(Actor("person", script, label="person"))
            ids.append(pid)
        self._actors[ids[0]].opponent = ids[1]
        self._actors[ids[1]].opponent = ids[0]
        self._incidents.append({"kind": "fight", "ids": ids, "start": start, "end": start + seconds, "at": list(at),
                                "detail": {"people": 2}})
        return ids

    def add_crowd(self, at: tuple[float, float], n: int, start: float, gather_s: float = 10.0, stay_s: float = 30.0) -> list[str]:
        """`n` people converge on `at` from both sides of the street, all there by start+gather_s, stand
        in a loose group (about 0.9 m apart, facing its centre) for stay_s seconds, then walk away."""
        if n < 1:
            raise ValueError("a crowd needs at least one person")
        rng = _stable_rng(self.seed, "crowd", self._n, start)
        cx, cz = _to_ground(at[0], at[1], self.aspect)
        spacing = 0.95
        slots = []
        for k in range(n):
            off = (k - (n - 1) / 2) * spacing
            slots.append((cx + off + float(rng.uniform(-0.15, 0.15)), cz + (0.6 if k % 2 else -0.4) * float(rng.uniform(0.5, 1.0))))
        slots.sort(key=lambda s: s[0])
        ids = []
        t_all = start + gather_s
        t_leave = t_all + stay_s
        for k, (sx, sz) in enumerate(slots):
            side = -1 if sx < cx or (sx == cx and k % 2 == 0) else 1
            # come in from off-frame along a pavement on this side, then cross to the slot
            lane_y = [0.49, 0.90, 0.87, 0.50][k % 4]
            ex_img = -0.08 if side < 0 else 1.08
            ox, oz = _to_ground(ex_img, lane_y, self.aspect)
            mx = sx + side * float(rng.uniform(1.5, 3.0))
            dist = math.hypot(mx - ox, oz - oz) + math.hypot(sx - mx, sz - oz)
            arrive = start + gather_s * float(rng.uniform(0.55, 1.0))
            walk_t = dist / WALK_SPEED
            t0 = arrive - walk_t
            t_mid = t0 + math.hypot(mx - ox, 0.0) / WALK_SPEED
            script: list[tuple] = [
                (t0, *_to_image(ox, oz, self.aspect), "walk"),
                (t_mid, *_to_image(mx, oz, self.aspect), "walk"),
                (arrive, *_to_image(sx, sz, self.aspect), "stand"),
                (t_leave + float(rng.uniform(0, 1.5)), *_to_image(sx, sz, self.aspect), "walk"),
            ]
            leave_side = -side if k % 3 == 0 else side
            lx = _to_ground(-0.1 if leave_side < 0 else 1.1, 0.7, self.aspect)[0]
            lx = lx * (sz / _depth(0.7))
            script.append((script[-1][0] + math.hypot(lx - sx, 0.5) / WALK_SPEED, *_to_image(lx, sz + 0.5, self.aspect), "walk"))
            pid = self.add_actor(Actor("person", script, label="person"))
            self._actors[pid].face[arrive] = (1 if cx > sx else -1, 0.55, True)
            ids.append(pid)
        self._incidents.append({"kind": "crowd", "ids": ids, "start": t_all, "end": t_leave, "at": list(at),
                                "detail": {"people": n, "gather_start": start}})
        return ids

    def add_passersby(self, n: int, start: float, end: float) -> list[str]:
        """`n` people walking along the pavements (either way) at random times in [start, end)."""
        rng = _stable_rng(self.seed, "passersby", self._n, start)
        ids = []
        for _ in range(n):
            t = float(rng.uniform(start, end))
            y0 = float(rng.choice([0.47, 0.49, 0.51, 0.88, 0.91, 0.94]))
            y1 = min(max(y0 + float(rng.uniform(-0.015, 0.015)), WALK_Y[0]), WALK_Y[1])
            path = [(-0.08, y0), (1.08, y1)] if rng.random() < 0.5 else [(1.08, y0), (-0.08, y1)]
            ids.append(self.add_person(path, speed=float(rng.uniform(1.0, 1.6)), start=t))
        return ids

    def lights_on(self, t: float, delta: float = 60.0, cone: bool = True) -> None:
        """Lights switch on at t: a sudden global brightness step of `delta` grey levels
        (plus, with cone=True, the gate lamps' light cones appearing)."""
        self._lookup_cache = None
        self._cam.append(_CamEvent("lights_on", t, None, delta=float(delta), cone=cone))

    def cover(self, t: float, seconds: float | None = None) -> None:
        """The camera is covered at t (dark, uniform over ~0.5 s), for `seconds` (None: for good)."""
        self._lookup_cache = None
        self._cam.append(_CamEvent("cover", t, seconds))

    def knock(self, t: float, angle: float | None = None, shift: tuple[float, float] | None = None) -> None:
        """The camera is knocked at t: the view turns and shifts sharply (over ~0.25 s) and stays so."""
        rng = _stable_rng(self.seed, "knock", t)
        ang = float(angle if angle is not None else rng.choice([-1, 1]) * rng.uniform(8, 14))
        sh = shift if shift is not None else (float(rng.uniform(0.06, 0.12) * rng.choice([-1, 1])), float(rng.uniform(0.06, 0.1)))
        self._lookup_cache = None
        self._cam.append(_CamEvent("knock", t, None, angle=ang, shift=(float(sh[0]), float(sh[1]))))

    def blur(self, t: float, seconds: float | None = None) -> None:
        """The camera is blurred (defocused, sprayed) at t for `seconds` (None: for good)."""
        self._lookup_cache = None
        self._cam.append(_CamEvent("blur", t, seconds))

    def stream_dies(self, t: float, seconds: float | None = None) -> None:
        """The live stream stops sending at t (for `seconds`; None: for good). Files are unaffected;
        the MJPEG server honours it."""
        self._lookup_cache = None
        self._cam.append(_CamEvent("stream_dies", t, seconds))

    # ------------------------------------------------------------------ drill incidents

    INCIDENTS = ("intrusion", "loitering", "fight", "crowd", "camera_covered", "stream_dies")
    """What `add_incident` scripts (drills: simulators/drill.py)."""

    def add_incident(self, kind: str, start: float, *, seconds: float | None = None, variant: int = 0,
                     people: int = 7) -> dict[str, Any]:
        """Script one drill incident whose actors appear (or whose camera event begins) at scene time `start`.

        Safe to call while the scene is being served: a frame is composed either before or after
        the whole incident is added. `variant` picks a seeded variation (side, spot); `seconds` is
        how long it lasts where that is a choice (loitering: standing time, default 40; fight:
        scuffle, default 20; crowd: standing together, default 30; camera_covered: default 20;
        stream_dies: None = for good). Returns ``{"kind", "incident_kind", "start", "ids",
        "seconds"}``; ``ids`` are the truth ids of its actors, to find its events in `events()`:

            intrusion       a person walks along the near pavement, crosses into the gate and away
                            along the far pavement (enters the gate zone ~2.4 s after `start`)
            loitering       a person walks to the gate and stands there `seconds` (from ~4 s after `start`)
            fight           two people walk up from either side and scuffle in front of the gate from `start` + 4 s
                            for `seconds`, then leave (one running); they cross the gate zone (intrusion too)
            crowd           `people` converge on the street in front of the gate (all there at `start` + 10 s)
            camera_covered  the camera is covered at `start` for `seconds`
            stream_dies     the live stream stops sending at `start` for `seconds` (None: for good)
        """
        if kind not in self.INCIDENTS:
            raise ValueError(f"unknown incident kind {kind!r} (known: {', '.join(self.INCIDENTS)})")
        rng = _stable_rng(self.seed, "incident", kind, int(variant))
        mirror = bool(rng.random() < 0.5)

        def mx(path: list[tuple[float, float]]) -> list[tuple[float, float]]:
            return [(1.0 - x, y) for x, y in path] if mirror else path

        with self._script_lock:
            self._lookup_cache = None
            ids: list[str] = []
            if kind == "intrusion":
                y_near = float(rng.uniform(0.90, 0.93))
                path = mx([(-0.08, y_near), (0.14, y_near), (float(rng.uniform(0.42, 0.54)), 0.50), (1.08, 0.48)])
                ids.append(self.add_person(path, start=start, speed=float(rng.uniform(1.2, 1.45))))
            elif kind == "loitering":
                seconds = 40.0 if seconds is None else float(seconds)
                path = mx([(1.08, 0.50), (float(rng.uniform(0.48, 0.56)), 0.52), (0.40, 0.60), (-0.08, 0.66)])
                ids.append(self.add_person(path, start=start, stop_at=path_fraction(path, 1, self.aspect), stay_s=seconds))
            elif kind == "fight":
                seconds = 20.0 if seconds is None else float(seconds)
                ids += self.add_scuffle((float(rng.uniform(0.45, 0.55)), float(rng.uniform(0.70, 0.74))), start=start + 4.0,
                                        seconds=seconds)
            elif kind == "crowd":
                seconds = 30.0 if seconds is None else float(seconds)
                ids += self.add_crowd((float(rng.uniform(0.42, 0.58)), 0.62), n=int(people), start=start, gather_s=10.0,
                                      stay_s=seconds)
            elif kind == "camera_covered":
                seconds = 20.0 if seconds is None else float(seconds)
                self.cover(start, seconds=seconds)
            else:  # stream_dies
                self.stream_dies(start, seconds=seconds)
            self._lookup_cache = None
        return {"kind": kind, "incident_kind": INCIDENT_KIND.get({"camera_covered": "camera_tamper",
                                                                  "stream_dies": "camera_offline"}.get(kind, kind)),
                "start": float(start), "ids": ids, "seconds": seconds}

    def stream_alive(self, t: float) -> bool:
        for e in self._cam:
            if e.kind == "stream_dies" and t >= e.t and (e.end is None or t < e.end):
                return False
        return True

    # ------------------------------------------------------------------ timeline

    @property
    def actors(self) -> dict[str, Actor]:
        return dict(self._actors)

    @property
    def duration(self) -> float:
        """End of the last scripted thing (at least `length`)."""
        ends = [self.length]
        ends += [tr.t1 for tr in self._tracks.values()]
        for e in self._cam:
            ends.append(e.t + (e.seconds or 0.0) + (2.0 if e.seconds is not None else 5.0))
        return float(max(ends))

    def _in_view_interval(self, aid: str) -> tuple[float, float]:
        tr = self._tracks[aid]
        ts = np.arange(tr.t0, tr.t1 + 1e-9, 0.1)
        inside = []
        for t in ts:
            gx, gz, _, _ = tr.at(float(t))
            x, y = _to_image(gx, gz, self.aspect)
            inside.append(0.0 <= x <= 1.0 and 0.0 <= y <= 1.0)
        idx = [i for i, v in enumerate(inside) if v]
        if not idx:
            return tr.t0, tr.t1
        return float(ts[idx[0]]), float(ts[idx[-1]])

    def ground_point(self, aid: str, t: float) -> tuple[float, float] | None:
        """Scripted relative ground point (feet / footprint centre) of an actor at t, None off stage."""
        tr = self._tracks[aid]
        if t < tr.t0 or t > tr.t1:
            return None
        gx, gz, _, _ = tr.at(t)
        return _to_image(gx, gz, self.aspect)

    def flags(self, t: float) -> dict[str, Any]:
        """Camera-level truth at t."""
        cover = self._cover_amount(t)
        return {
            "covered": cover >= 0.5,
            "lights_on": self._lights(t)[0] > 0,
            "knocked": self._knock(t) is not None,
            "blurred": self._blur_amount(t) >= 0.5,
            "stream_alive": self.stream_alive(t),
        }

    def _lights(self, t: float) -> tuple[float, bool]:
        delta, cone = 0.0, False
        for e in self._cam:
            if e.kind == "lights_on" and t >= e.t:
                delta += e.delta
                cone = cone or e.cone
        return delta, cone

    def _cover_amount(self, t: float) -> float:
        a = 0.0
        for e in self._cam:
            if e.kind != "cover" or t < e.t:
                continue
            v = min(1.0, (t - e.t) / 0.5)
            if e.end is not None and t >= e.end:
                v = max(0.0, 1.0 - (t - e.end) / 0.5)
            a = max(a, v)
        return a

    def _blur_amount(self, t: float) -> float:
        a = 0.0
        for e in self._cam:
            if e.kind != "blur" or t < e.t:
                continue
            v = min(1.0, (t - e.t) / 0.7)
            if e.end is not None and t >= e.end:
                v = max(0.0, 1.0 - (t - e.end) / 0.7)
            a = max(a, v)
        return a

    def _knock(self, t: float) -> np.ndarray | None:
        m = None
        for e in self._cam:
            if e.kind != "knock" or t < e.t:
                continue
            k = min(1.0, (t - e.t) / 0.25)
            wob = math.exp(-(t - e.t) / 0.4) * math.sin((t - e.t) * 40.0) * 0.25 if t - e.t < 1.5 else 0.0
            k = k + wob
            cx, cy = self.width / 2, self.height / 2
            mm = cv2.getRotationMatrix2D((cx, cy), e.angle * k, 1.0 + 0.25 * min(k, 1.0))
            mm[0, 2] += e.shift[0] * self.width * k
            mm[1, 2] += e.shift[1] * self.height * k
            m = mm if m is None else _compose_affine(mm, m)
        return m

    def events(self) -> list[dict[str, Any]]:
        """The scripted incidents and camera events, each with kind, incident_kind (the contract's
        IncidentKind value, None where no alert is expected), zone(s), start/end time (s), truth ids."""
        out: list[dict[str, Any]] = []
        # zone entries into restricted zones (intrusion), from the scripted ground point, sampled per frame
        for aid, actor in self._actors.items():
            if actor.kind != "person":
                continue
            for zname, iv in self.zone_intervals(aid).items():
                if not self.zones[zname]["restricted"]:
                    continue
                for a, b in iv:
                    out.append({"kind": "intrusion", "zone": zname, "zones": [zname], "ids": [aid], "start": a, "end": b, "detail": {}})
        for inc in self._incidents:
            e = dict(inc)
            at = e.pop("at", None)
            zs = [z for z, zd in self.zones.items() if at is not None and point_in_polygon(at[0], at[1], zd["polygon"])]
            if e["kind"] in ("running", "vehicle"):
                zs = sorted({z for aid in e["ids"] for z in self.zone_intervals(aid)})
            e["zones"] = zs
            e["zone"] = next((z for z in zs if self.zones[z]["restricted"]), zs[0] if zs else None)
            if at is not None:
                e["at"] = at
            out.append(e)
        for c in self._cam:
            if c.kind == "lights_on":
                out.append({"kind": "lights_on", "start": c.t, "end": c.t, "ids": [], "zone": None, "zones": [],
                            "detail": {"delta": c.delta, "cone": c.cone}})
            elif c.kind in ("cover", "knock", "blur"):
                how = {"cover": "covered", "knock": "knocked", "blur": "blurred"}[c.kind]
                out.append({"kind": "camera_tamper", "start": c.t, "end": c.end, "ids": [], "zone": None, "zones": [],
                            "detail": {"how": how}})
            elif c.kind == "stream_dies":
                out.append({"kind": "camera_offline", "start": c.t, "end": c.end, "ids": [], "zone": None, "zones": [], "detail": {}})
        for e in out:
            e["incident_kind"] = INCIDENT_KIND.get(e["kind"])
            for k in ("start", "end"):
                if e.get(k) is not None:
                    e[k] = round(float(e[k]), 3)
        out.sort(key=lambda e: (e["start"], e["kind"]))
        return out

    def zone_intervals(self, aid: str) -> dict[str, list[tuple[float, float]]]:
        """Per zone, the [enter, leave] times of the actor's scripted ground point, sampled at the frame rate."""
        tr = self._tracks[aid]
        dt = 1.0 / self.fps
        k0 = math.ceil(tr.t0 * self.fps - 1e-9)
        k1 = math.floor(tr.t1 * self.fps + 1e-9)
        out: dict[str, list[tuple[float, float]]] = {}
        for zname, zd in self.zones.items():
            iv: list[tuple[float, float]] = []
            cur = None
            last = None
            for k in range(k0, k1 + 1):
                t = k * dt
                gx, gz, _, _ = tr.at(t)
                x, y = _to_image(gx, gz, self.aspect)
                inside = point_in_polygon(x, y, zd["polygon"])
                if inside and cur is None:
                    cur = t
                if not inside and cur is not None:
                    iv.append((round(cur, 4), round(last if last is not None else cur, 4)))
                    cur = None
                last = t
            if cur is not None:
                iv.append((round(cur, 4), round(last if last is not None else cur, 4)))
            if iv:
                out[zname] = iv
        return out

    # ------------------------------------------------------------------ background

    def _P(self, x: float, y: float) -> tuple[int, int]:
        return _p(x * self.width, y * self.height)

    def _poly(self, img: np.ndarray, pts: Sequence[tuple[float, float]], color: Sequence[int]) -> None:
        a = np.array([[round(x * self.width * ONE), round(y * self.height * ONE)] for x, y in pts], np.int32)
        cv2.fillPoly(img, [a], tuple(int(c) for c in color), AA, SHIFT)

    def _line(self, img: np.ndarray, p: tuple[float, float], q: tuple[float, float], color: Sequence[int], th: int = 1) -> None:
        cv2.line(img, self._P(*p), self._P(*q), tuple(int(c) for c in color), max(1, int(th)), AA, SHIFT)

    def _build_background(self) -> None:
        W, H = self.width, self.height
        rng = _stable_rng(self.seed, "background")
        self._style = [int(v) for v in _stable_rng(self.seed, "style").integers(0, 4, 4)]  # wall, sign, pavement, pillars
        img = np.zeros((H, W, 3), np.uint8)
        s = H / 360.0  # line widths scale with the frame

        def depth_px(y: float, metres: float) -> float:
            """Image size (relative height) of `metres` standing at ground row y."""
            return metres * FOCAL / _depth(y)

        # sky
        top = np.array([205, 190, 175] if not self.night else [60, 38, 28], float)
        bot = np.array([225, 218, 210] if not self.night else [85, 60, 48], float)
        for r in range(int(0.3 * H)):
            f = r / (0.3 * H)
            img[r, :] = (top * (1 - f) + bot * f).astype(np.uint8)
        img[int(0.3 * H):, :] = bot.astype(np.uint8)

        # distant hazy blocks
        x = -0.05
        while x < 1.05:
            w = float(rng.uniform(0.08, 0.18))
            hgt = float(rng.uniform(0.06, 0.2))
            c = _shade((170, 168, 165), float(rng.uniform(0.85, 1.0)))
            self._poly(img, [(x, 0.235 - hgt), (x + w, 0.235 - hgt), (x + w, 0.235), (x, 0.235)], c)
            for wy in np.arange(0.235 - hgt + 0.012, 0.23, 0.022):
                for wx in np.arange(x + 0.01, x + w - 0.01, 0.018):
                    self._poly(img, [(wx, wy), (wx + 0.008, wy), (wx + 0.008, wy + 0.008), (wx, wy + 0.008)], _shade(c, 0.8))
            x += w + float(rng.uniform(0.0, 0.05))

        # residential blocks inside the compound
        facade_colors = [(185, 200, 212), (178, 182, 205), (198, 198, 192), (160, 175, 190), (205, 210, 214)]
        blocks = []
        x = float(rng.uniform(-0.08, 0.0))
        while x < 1.0:
            w = float(rng.uniform(0.26, 0.42))
            base = float(rng.uniform(0.235, 0.255))
            floors_top = float(rng.uniform(-0.25, 0.06)) if rng.random() < 0.8 else float(rng.uniform(0.02, 0.08))
            blocks.append((x, x + w, floors_top, base, facade_colors[int(rng.integers(len(facade_colors)))]))
            x += w + float(rng.uniform(0.03, 0.12))
        for x0, x1, ytop, base, col in blocks:
            self._poly(img, [(x0, ytop), (x1, ytop), (x1, base), (x0, base)], col)
            self._poly(img, [(x0, ytop), (x1, ytop), (x1, ytop + 0.012), (x0, ytop + 0.012)], _shade(col, 0.75))
            fh = depth_px(base, 3.0)  # one floor
            ww = 2.0 * FOCAL / (_depth(base) * self.aspect)  # a window's width (relative x)
            pitch = 3.6 * FOCAL / (_depth(base) * self.aspect)
            y = base - fh * 0.95
            fl = 0
            while y > ytop + 0.01:
                xx = x0 + pitch * 0.35
                while xx + ww < x1 - 0.005:
                    lit = self.night and rng.random() < 0.45
                    glass = (150, 205, 235) if lit else _shade((95, 88, 82), float(rng.uniform(0.8, 1.25)))
                    wy0, wy1 = y + fh * 0.22, y + fh * 0.7
                    self._poly(img, [(xx, wy0), (xx + ww, wy0), (xx + ww, wy1), (xx, wy1)], (225, 225, 222) if not self.night else (90, 90, 90))
                    m = 0.004
                    self._poly(img, [(xx + m, wy0 + m * 1.5), (xx + ww - m, wy0 + m * 1.5), (xx + ww - m, wy1 - m * 1.5), (xx + m, wy1 - m * 1.5)], glass)
                    self._line(img, (xx + ww / 2, wy0), (xx + ww / 2, wy1), (200, 200, 198) if not self.night else (80, 80, 80), int(1 * s))
                    if rng.random() < 0.5:  # balcony rail
                        self._poly(img, [(xx - 0.004, wy1 - fh * 0.18), (xx + ww + 0.004, wy1 - fh * 0.18), (xx + ww + 0.004, wy1 + fh * 0.06), (xx - 0.004, wy1 + fh * 0.06)], _shade(col, 0.82))
                    if rng.random() < 0.2:  # air conditioner
                        ax = xx + ww + 0.004
                        self._poly(img, [(ax, wy1 - fh * 0.2), (ax + ww * 0.3, wy1 - fh * 0.2), (ax + ww * 0.3, wy1), (ax, wy1)], (215, 215, 215))
                    xx += pitch
                y -= fh
                fl += 1
            # shrubs at the foot of the block
            xx = x0
            while xx < x1:
                r = float(rng.uniform(0.012, 0.022))
                cv2.ellipse(img, self._P(xx, base - r * 0.3), (int(r * W * ONE), int(r * 0.9 * H * ONE)), 0, 180, 360,
                            _shade((60, 120, 70), float(rng.uniform(0.7, 1.1))), -1, AA, SHIFT)
                xx += r * 1.4

        # compound ground
        self._poly(img, [(0, 0.245), (1, 0.245), (1, Y_WALL), (0, Y_WALL)], (150, 152, 150) if not self.night else (70, 68, 62))
        # inner road through the gate, converging on the vanishing point
        vx = 0.5
        def on_ground_toward_vp(x: float, y_from: float, y_to: float) -> float:
            return vx + (x - vx) * (y_to - HORIZON) / (y_from - HORIZON)
        ix0, ix1 = GATE_X[0] + 0.03, GATE_X[1] - 0.03
        self._poly(img, [(ix0, Y_WALL), (ix1, Y_WALL), (on_ground_toward_vp(ix1, Y_WALL, 0.25), 0.25), (on_ground_toward_vp(ix0, Y_WALL, 0.25), 0.25)],
                   (110, 110, 112) if not self.night else (55, 55, 55))
        # a parked car inside
        pc = _shade(_CARS[int(rng.integers(len(_CARS)))], 0.9)
        cxp = float(rng.choice([0.12, 0.82]))
        self._poly(img, [(cxp, 0.265), (cxp + 0.09, 0.265), (cxp + 0.09, 0.29), (cxp, 0.29)], pc)
        self._poly(img, [(cxp + 0.018, 0.248), (cxp + 0.07, 0.248), (cxp + 0.078, 0.266), (cxp + 0.01, 0.266)], _shade(pc, 0.6))
        # guard booth inside the gate
        gb0 = GATE_X[0] + 0.02
        self._poly(img, [(gb0, 0.30), (gb0 + 0.07, 0.30), (gb0 + 0.07, 0.41), (gb0, 0.41)], (200, 205, 210))
        self._poly(img, [(gb0 - 0.005, 0.29), (gb0 + 0.075, 0.29), (gb0 + 0.075, 0.305), (gb0 - 0.005, 0.305)], (70, 70, 160))
        self._poly(img, [(gb0 + 0.01, 0.325), (gb0 + 0.06, 0.325), (gb0 + 0.06, 0.365), (gb0 + 0.01, 0.365)], (120, 110, 100))

        # compound wall: solid base (1 m) + iron railing (1 m) on both sides of the gate
        wall_top = Y_WALL - depth_px(Y_WALL, 2.0)
        base_top = Y_WALL - depth_px(Y_WALL, 1.0)
        wall_c = [(196, 200, 204), (168, 186, 204), (182, 184, 186), (150, 162, 192)][self._style[0]]
        wall_c = wall_c if not self.night else _shade(wall_c, 0.48)
        for xa, xb in ((0.0, GATE_X[0] - 0.025), (GATE_X[1] + 0.025, 1.0)):
            self._poly(img, [(xa, base_top), (xb, base_top), (xb, Y_WALL), (xa, Y_WALL)], wall_c)
            self._poly(img, [(xa, base_top - 0.008), (xb, base_top - 0.008), (xb, base_top + 0.004), (xa, base_top + 0.004)], _shade(wall_c, 0.7))
            # tiles
            ty = base_top + 0.004
            while ty < Y_WALL:
                self._line(img, (xa, ty), (xb, ty), _shade(wall_c, 0.88))
                ty += 0.018
            tx = xa
            while tx < xb:
                self._line(img, (tx, base_top), (tx, Y_WALL), _shade(wall_c, 0.88))
                tx += 0.03
            # railing
            rail = (40, 45, 40) if not self.night else (25, 25, 25)
            self._line(img, (xa, wall_top), (xb, wall_top), rail, int(2 * s))
            self._line(img, (xa, (wall_top + base_top) / 2), (xb, (wall_top + base_top) / 2), rail, int(1 * s))
            bx = xa + 0.004
            while bx < xb:
                self._line(img, (bx, wall_top - 0.008), (bx, base_top - 0.008), rail, max(1, int(1.5 * s)))
                bx += 0.0125
            # pilasters every ~3 m
            px = xa + 0.06
            while px < xb - 0.01:
                self._poly(img, [(px - 0.008, wall_top - 0.01), (px + 0.008, wall_top - 0.01), (px + 0.008, Y_WALL), (px - 0.008, Y_WALL)], _shade(wall_c, 0.93))
                self._poly(img, [(px - 0.011, wall_top - 0.018), (px + 0.011, wall_top - 0.018), (px + 0.011, wall_top - 0.01), (px - 0.011, wall_top - 0.01)], _shade(wall_c, 0.7))
                px += 0.11

        # gate pillars, beam with a sign, lamps, folded sliding gate, speed bump
        pil_top = Y_WALL - depth_px(Y_WALL, 3.4)
        beam0 = Y_WALL - depth_px(Y_WALL, 4.6)
        beam1 = Y_WALL - depth_px(Y_WALL, 3.7)
        pil_c = [(150, 160, 172), (120, 140, 170), (165, 165, 160), (110, 120, 140)][self._style[3]]
        pil_c = pil_c if not self.night else _shade(pil_c, 0.47)
        for xa, xb in ((GATE_X[0] - 0.028, GATE_X[0]), (GATE_X[1], GATE_X[1] + 0.028)):
            self._poly(img, [(xa, beam0), (xb, beam0), (xb, Y_WALL), (xa, Y_WALL)], pil_c)
            self._poly(img, [(xb - 0.007, beam0), (xb, beam0), (xb, Y_WALL), (xb - 0.007, Y_WALL)], _shade(pil_c, 0.78))
            ty = pil_top
            while ty < Y_WALL:
                self._line(img, (xa, ty), (xb, ty), _shade(pil_c, 0.85))
                ty += 0.03
        self._poly(img, [(GATE_X[0] - 0.035, beam0), (GATE_X[1] + 0.035, beam0), (GATE_X[1] + 0.035, beam1), (GATE_X[0] - 0.035, beam1)],
                   _shade([(40, 40, 165), (140, 70, 25), (40, 40, 165), (50, 110, 40)][self._style[1]], 1.0 if not self.night else 0.55))
        self._poly(img, [(GATE_X[0] - 0.035, beam1), (GATE_X[1] + 0.035, beam1), (GATE_X[1] + 0.035, beam1 + 0.01), (GATE_X[0] - 0.035, beam1 + 0.01)], (60, 60, 70))
        # sign "characters": gold glyph blocks
        nch = 6
        gx0 = 0.5 - nch * 0.024 / 2
        for k in range(nch):
            cx0 = gx0 + k * 0.024 + 0.003
            gy0, gy1 = beam0 + 0.012, beam1 - 0.012
            gold = (70, 190, 230)
            self._line(img, (cx0, gy0), (cx0 + 0.016, gy0), gold, int(2 * s))
            self._line(img, (cx0 + 0.008, gy0), (cx0 + 0.008, gy1), gold, int(2 * s))
            self._line(img, (cx0, (gy0 + gy1) / 2), (cx0 + 0.016, (gy0 + gy1) / 2 + (k % 3 - 1) * 0.006), gold, int(2 * s))
            self._line(img, (cx0 + 0.002, gy1), (cx0 + 0.014 + (k % 2) * 0.004, gy1 - 0.004), gold, int(2 * s))
        self._lamps = []
        for xl in (GATE_X[0] - 0.014, GATE_X[1] + 0.014):
            ly = pil_top - 0.01
            cv2.circle(img, self._P(xl, ly), int(0.012 * H * ONE), (225, 228, 230) if not self.night else (120, 125, 125), -1, AA, SHIFT)
            self._lamps.append((xl, ly))
        # folded sliding gate at the right pillar
        fg0 = GATE_X[1] - 0.07
        fgy = Y_WALL - depth_px(Y_WALL, 1.6)
        for k in range(8):
            xa_ = fg0 + k * 0.0085
            self._line(img, (xa_, fgy), (xa_ + 0.0085, Y_WALL - 0.005), (120, 120, 125), max(1, int(1.5 * s)))
            self._line(img, (xa_ + 0.0085, fgy), (xa_, Y_WALL - 0.005), (120, 120, 125), max(1, int(1.5 * s)))
        self._line(img, (fg0, fgy), (GATE_X[1], fgy), (150, 150, 155), int(2 * s))

        # far pavement with tiles in perspective
        pav = [(165, 168, 172), (150, 160, 172), (172, 168, 160), (158, 158, 158)][self._style[2]]
        pav = pav if not self.night else _shade(pav, 0.47)
        self._poly(img, [(0, Y_WALL), (1, Y_WALL), (1, Y_FAR_KERB), (0, Y_FAR_KERB)], pav)
        self._ground_grid(img, Y_WALL, Y_FAR_KERB, 0.6, _shade(pav, 0.86))
        apron = (150, 160, 180) if not self.night else (70, 72, 80)  # paved apron in front of the gate
        self._poly(img, [(GATE_X[0], Y_WALL), (GATE_X[1], Y_WALL), (on_ground_toward_vp(GATE_X[1], Y_WALL, Y_FAR_KERB), Y_FAR_KERB),
                         (on_ground_toward_vp(GATE_X[0], Y_WALL, Y_FAR_KERB), Y_FAR_KERB)], apron)
        bump_y0, bump_y1 = Y_WALL + 0.004, Y_WALL + 0.012
        nb = 14
        for k in range(nb):
            xa_ = GATE_X[0] + (GATE_X[1] - GATE_X[0]) * k / nb
            xb_ = GATE_X[0] + (GATE_X[1] - GATE_X[0]) * (k + 1) / nb
            self._poly(img, [(xa_, bump_y0), (xb_, bump_y0), (xb_, bump_y1), (xa_, bump_y1)], (40, 200, 230) if k % 2 == 0 else (30, 30, 30))
        # kerb
        self._poly(img, [(0, Y_FAR_KERB), (1, Y_FAR_KERB), (1, Y_ROAD0), (0, Y_ROAD0)], (200, 202, 200) if not self.night else (95, 95, 92))

        # road
        asph = (92, 94, 98) if not self.night else (45, 44, 44)
        self._poly(img, [(0, Y_ROAD0), (1, Y_ROAD0), (1, Y_ROAD1), (0, Y_ROAD1)], asph)
        yc = HORIZON + FOCAL * CAM_HEIGHT / ((_depth(Y_ROAD0) + _depth(Y_ROAD1)) / 2)
        half = (FOCAL * CAM_HEIGHT / (_depth(yc) - 0.075) - FOCAL * CAM_HEIGHT / (_depth(yc) + 0.075)) / 2
        dash_m = FOCAL / (_depth(yc) * self.aspect)
        xx = -0.02
        while xx < 1.0:
            self._poly(img, [(xx, yc - half), (xx + 2.0 * dash_m, yc - half), (xx + 2.0 * dash_m, yc + half), (xx, yc + half)],
                       (210, 212, 212) if not self.night else (110, 110, 110))
            xx += 6.0 * dash_m
        # manhole and patches
        mh = (float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.70, 0.78)))
        cv2.ellipse(img, self._P(*mh), (int(0.03 * W * ONE), int(0.012 * H * ONE)), 0, 0, 360, (70, 72, 75), -1, AA, SHIFT)
        cv2.ellipse(img, self._P(*mh), (int(0.03 * W * ONE), int(0.012 * H * ONE)), 0, 0, 360, (120, 120, 122), max(1, int(s)), AA, SHIFT)
        # near kerb + near pavement with a yellow tactile strip
        self._poly(img, [(0, Y_ROAD1), (1, Y_ROAD1), (1, Y_NEAR0), (0, Y_NEAR0)], (190, 192, 190) if not self.night else (90, 90, 88))
        pav2 = (170, 172, 176) if not self.night else (80, 78, 74)
        self._poly(img, [(0, Y_NEAR0), (1, Y_NEAR0), (1, 1.0), (0, 1.0)], pav2)
        self._ground_grid(img, Y_NEAR0, 1.0, 0.5, _shade(pav2, 0.86))
        t0 = Y_NEAR0 + 0.035
        self._poly(img, [(0, t0), (1, t0), (1, t0 + 0.03), (0, t0 + 0.03)], (60, 175, 205) if not self.night else (30, 80, 95))
        for k in range(0, 80):
            self._line(img, (k / 80, t0 + 0.004), (k / 80, t0 + 0.026), (50, 150, 180) if not self.night else (25, 70, 85))

        # street furniture on the wall line: a lamp post, bins, a sign
        lp = float(rng.uniform(0.02, 0.06))
        self._poly(img, [(lp - 0.004, -0.01), (lp + 0.004, -0.01), (lp + 0.005, Y_WALL + 0.008), (lp - 0.005, Y_WALL + 0.008)], (90, 95, 100))
        bx_ = float(rng.choice([0.22, 0.76]))
        self._poly(img, [(bx_, Y_WALL - depth_px(Y_WALL, 1.0)), (bx_ + 0.022, Y_WALL - depth_px(Y_WALL, 1.0)), (bx_ + 0.02, Y_WALL + 0.006), (bx_ + 0.002, Y_WALL + 0.006)], (120, 110, 40))
        self._poly(img, [(bx_ + 0.026, Y_WALL - depth_px(Y_WALL, 1.0)), (bx_ + 0.048, Y_WALL - depth_px(Y_WALL, 1.0)), (bx_ + 0.046, Y_WALL + 0.006), (bx_ + 0.028, Y_WALL + 0.006)], (60, 120, 60))

        # trees on the wall side of the far pavement: trunks here, swaying canopies per frame
        self._trees = []
        for tx in (float(rng.uniform(0.08, 0.15)), float(rng.uniform(0.85, 0.92))):
            ty = Y_WALL + 0.008
            tw = depth_px(ty, 0.3) / self.aspect
            th_top = ty - depth_px(ty, 2.6)
            self._poly(img, [(tx - tw / 2, th_top), (tx + tw / 2, th_top), (tx + tw * 0.6, ty), (tx - tw * 0.6, ty)], (55, 70, 85))
            self._line(img, (tx, th_top + 0.03), (tx - 0.03, th_top - 0.03), (55, 70, 85), int(3 * s))
            self._line(img, (tx, th_top + 0.02), (tx + 0.035, th_top - 0.04), (55, 70, 85), int(3 * s))
            cv2.ellipse(img, self._P(tx, ty + 0.002), (int(tw * 1.6 * W * ONE), int(0.006 * H * ONE)), 0, 0, 360, (80, 85, 90), -1, AA, SHIFT)
            self._trees.append((tx, th_top, depth_px(ty, 5.0)))

        # texture: low-frequency blotches + fine grain, so the background is not flat
        low = rng.normal(0, 1, (max(2, H // 24), max(2, W // 24))).astype(np.float32)
        low = cv2.resize(low, (W, H), interpolation=cv2.INTER_CUBIC)
        grain = rng.normal(0, 1, (H, W)).astype(np.float32)
        grain = cv2.GaussianBlur(grain, (0, 0), 0.7)
        tex = 1.0 + 0.045 * low + 0.03 * grain
        img = np.clip(img.astype(np.float32) * tex[:, :, None], 0, 255).astype(np.uint8)
        # vignetting, as cheap lenses do
        yy, xx_ = np.mgrid[0:H, 0:W].astype(np.float32)
        r2 = ((xx_ - W / 2) / (W / 2)) ** 2 + ((yy - H / 2) / (H / 2)) ** 2
        vig = (1.0 - 0.12 * r2 / 2.0).astype(np.float32)
        img = np.clip(img.astype(np.float32) * vig[:, :, None], 0, 255).astype(np.uint8)
        self._bg = img
        self._build_canopies(rng)
        self._build_cones()

    def _ground_grid(self, img: np.ndarray, y0: float, y1: float, tile_m: float, color: Sequence[int]) -> None:
        z0, z1 = _depth(y0), _depth(y1)
        z = z0
        while z > z1:
            y = HORIZON + FOCAL * CAM_HEIGHT / z
            self._line(img, (0, y), (1, y), color)
            z -= tile_m
        # lines along the depth converge on the vanishing point
        zmid = (z0 + z1) / 2
        half_w = 0.5 * self.aspect * zmid / FOCAL + 2
        xg = -half_w
        while xg < half_w:
            xa, ya = _to_image(xg, z0, self.aspect)
            xb, yb = _to_image(xg, z1, self.aspect)
            self._line(img, (xa, y0), (xb, y1), color)
            xg += tile_m

    def _build_canopies(self, rng: np.random.Generator) -> None:
        W, H = self.width, self.height
        self._canopies = []
        for tx, ttop, size in self._trees:
            rx = size * 0.62 / self.aspect  # relative half width
            ry = size * 0.5
            x0 = int(max(0, (tx - rx * 1.25) * W))
            x1 = int(min(W, (tx + rx * 1.25) * W))
            y0 = int(max(0, (ttop - ry * 1.9) * H))
            y1 = int(min(H, (ttop + ry * 0.35) * H))
            if x1 - x0 < 4 or y1 - y0 < 4:
                continue
            ph, pw = y1 - y0, x1 - x0
            patch = np.zeros((ph, pw, 3), np.uint8)
            mask = np.zeros((ph, pw), np.uint8)
            cxp, cyp = tx * W - x0, (ttop - ry * 0.75) * H - y0
            for _ in range(int(90 * (H / 360) ** 0.5)):
                a = rng.uniform(0, 2 * math.pi)
                rr = math.sqrt(rng.uniform(0, 1))
                ex = cxp + math.cos(a) * rr * rx * W
                ey = cyp + math.sin(a) * rr * ry * H * 0.95
                ax_ = rng.uniform(0.08, 0.2) * rx * W
                ay_ = ax_ * rng.uniform(0.6, 0.9)
                shade = 0.55 + 0.6 * (1 - (ey / ph)) * rng.uniform(0.7, 1.1)
                col = _shade((50, 110, 65) if not self.night else (25, 45, 30), shade)
                c = _p(ex, ey)
                axes = (int(ax_ * ONE), int(ay_ * ONE))
                ang = float(rng.uniform(0, 180))
                cv2.ellipse(patch, c, axes, ang, 0, 360, col, -1, AA, SHIFT)
                cv2.ellipse(mask, c, axes, ang, 0, 360, 255, -1, cv2.LINE_8, SHIFT)
            # leaf speckle
            spk = rng.random((ph, pw)) < 0.12
            dark = (patch.astype(np.int16) - 22).clip(0, 255).astype(np.uint8)
            patch[spk] = dark[spk]
            ys = np.arange(ph, dtype=np.float32)
            # sway grows with height above the trunk (bottom of the patch moves least)
            weight = ((ph - ys) / ph) ** 1.3
            gx, gy = np.meshgrid(np.arange(pw, dtype=np.float32), ys)
            self._canopies.append({"x0": x0, "y0": y0, "patch": patch, "mask": mask, "gx": gx, "gy": gy, "ys": ys[:, None], "w": weight[:, None],
                                   "phase": float(rng.uniform(0, 6.28))})

    def _build_cones(self) -> None:
        """Additive light of the gate lamps (lights_on with cone=True)."""
        W, H = self.width, self.height
        cone = np.zeros((H, W), np.float32)
        for xl, yl in self._lamps:
            pts = np.array([[xl * W, yl * H], [(xl - 0.12) * W, 0.62 * H], [(xl + 0.12) * W, 0.62 * H]], np.int32)
            cv2.fillConvexPoly(cone, pts, 1.0)
            cv2.circle(cone, (int(xl * W), int(yl * H)), int(0.03 * H), 2.5, -1)
            cv2.ellipse(cone, (int(xl * W), int(0.55 * H)), (int(0.13 * W), int(0.06 * H)), 0, 0, 360, 1.0, -1)
        cone = cv2.GaussianBlur(cone, (0, 0), 0.02 * H + 1)
        self._cone = np.clip(cone * 55.0, 0, 255).astype(np.uint8)[:, :, None].repeat(3, axis=2)
        self._cone[:, :, 2] = np.clip(self._cone[:, :, 2].astype(np.int16) + self._cone[:, :, 2] // 6, 0, 255).astype(np.uint8)

    def _build_noise(self) -> None:
        """A small bank of Gaussian noise, split into its positive and negative parts for saturating adds."""
        rng = _stable_rng(self.seed, "noise")
        self._pad = 24
        self._noise_bank = []
        if self.noise <= 0:
            return
        for _ in range(3):
            n = rng.normal(0, self.noise, (self.height + self._pad, self.width + self._pad, 3)).round()
            self._noise_bank.append((np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)))

    # ------------------------------------------------------------------ drawing actors

    def _person_pose(self, actor: Actor, tr: _Track, t: float, gx: float, gz: float, dist: float, i: int) -> dict[str, Any]:
        look = actor.look or {}
        action = tr.action[i]
        # facing from the current (or last) direction of travel
        hd = tr.heading(i)
        side, sideness, toward = 1, 1.0, False
        if hd is not None:
            side = 1 if hd[0] >= 0 else -1
            sideness = abs(hd[0])
            toward = hd[1] < 0
        if action in ("stand", "scuffle"):
            for tf, face in sorted(actor.face.items()):
                if tr.t[i] - 1e-6 <= tf <= t:  # set within this segment and already due
                    fs, fsig, ftow = face
                    side = fs if fs else side
                    sideness, toward = fsig, ftow
        if action == "scuffle" and actor.opponent in self._tracks:
            ox, _, _, _ = self._tracks[actor.opponent].at(t)
            side = 1 if ox >= gx else -1
            sideness, toward = 0.9, True
        # gait amplitude ramps over 0.4 s at starts and stops
        ramp = 0.4
        if action == "stand":
            amp = max(0.0, 1.0 - (t - tr.t[i]) / ramp)
            if i > 0 and tr.action[i - 1] == "stand":
                amp = 0.0
        else:
            amp = 1.0
            if i > 0 and tr.action[i - 1] == "stand":
                amp = min(1.0, (t - tr.t[i]) / ramp)
        stride = look.get("stride", 1.4) * (1.65 if action == "run" else 1.0)
        phase = look.get("phase", 0.0) + 2 * math.pi * dist / stride
        if action == "scuffle":
            phase = look.get("phase", 0.0) + t * 2 * math.pi * 2.2
        return {"action": action, "side": side, "sideness": sideness, "toward": toward, "amp": amp, "phase": phase, "t": t}

    def _draw_person(self, img: np.ndarray, look: dict[str, Any], fx: float, fy: float, h: float, pose: dict[str, Any],
                     ambient: float) -> None:
        """Draw a person whose feet are at pixel (fx, fy) and who is h px tall."""
        action = pose["action"]
        s = pose["side"]
        sig = pose["sideness"]
        c = math.sqrt(max(0.0, 1.0 - sig * sig))
        toward = pose["toward"]
        ph = pose["phase"]
        amp = pose["amp"]
        t = pose["t"]
        run = action == "run"
        scuffle = action == "scuffle"
        build = look.get("build", 1.0)

        A_hip = (0.42 if run else (0.35 if scuffle else 0.40)) * amp
        A_knee = (0.95 if run else (0.5 if scuffle else 0.75)) * amp
        L1, L2, ANK = 0.245, 0.235, 0.045
        lean = 0.06 if run else (0.08 if scuffle else 0.02 * amp)

        legs = []
        for k, off in ((0, 0.0), (1, math.pi)):
            p = ph + off
            th = A_hip * math.sin(p)
            kn = A_knee * max(0.0, math.cos(p)) ** 1.2 + (0.12 * amp if run else 0.02)
            legs.append((th, kn))
        # hip height so that the lower foot touches the ground
        hip_u = ANK + max(L1 * math.cos(th) + L2 * math.cos(th - kn) for th, kn in legs)
        if run:
            hip_u += 0.025 * abs(math.sin(ph))  # flight phase
        if action == "stand" and amp == 0.0:
            hip_u = ANK + L1 + L2
        sway = 0.006 * math.sin(t * 1.3 + look.get("phase", 0.0)) if action == "stand" else 0.0

        def proj(fwd: float, lat: float, up: float) -> tuple[float, float]:
            x = fx + h * (s * sig * fwd + c * lat + sway)
            y = fy - h * up + h * c * fwd * 0.12 * (1 if toward else -1)
            return x, y

        skin = _shade(look["skin"], ambient)
        hair = _shade(look["hair"], ambient)
        top = _shade(look["top"], ambient)
        bottom = _shade(look["bottom"], ambient)
        shoes = _shade(look["shoes"], ambient)
        far = 0.72

        t_thigh = max(2, int(round(0.082 * h * build)))
        t_shin = max(2, int(round(0.066 * h * build)))
        t_uarm = max(2, int(round(0.055 * h * build)))
        t_farm = max(1, int(round(0.045 * h * build)))

        hw = 0.045 * build  # half distance between the legs (lateral)
        sh_u = hip_u + 0.29
        sh_f = lean * 0.29 / 0.3
        sw = 0.118 * build

        def leg(k: int, shade: float) -> None:
            th, kn = legs[k]
            lat = (-hw if k == 0 else hw)
            if action == "stand":
                lat *= 1.15
            hip = proj(0.0, lat, hip_u)
            knee_f, knee_u = L1 * math.sin(th), hip_u - L1 * math.cos(th)
            ank_f, ank_u = knee_f + L2 * math.sin(th - kn), knee_u - L2 * math.cos(th - kn)
            knee = proj(knee_f, lat * 1.05, knee_u)
            ank = proj(ank_f, lat * 1.1, ank_u)
            col = _shade(bottom, shade)
            cv2.line(img, _p(*hip), _p(*knee), col, t_thigh, AA, SHIFT)
            cv2.line(img, _p(*knee), _p(*ank), col, t_shin, AA, SHIFT)
            # shoe: forward along the walking direction in side view, a blob in front view
            toe = proj(ank_f + 0.075, lat * 1.1, max(ank_u - 0.03, 0.0))
            heel = proj(ank_f - 0.02, lat * 1.1, max(ank_u - 0.035, 0.0))
            cv2.line(img, _p(*heel), _p(*toe), _shade(shoes, shade), max(2, int(round(0.05 * h))), AA, SHIFT)

        def arm(k: int, shade: float) -> None:
            th = legs[1 - k][0]  # opposite to the leg on the same side
            if scuffle:
                r = math.sin(t * (11.0 + 3 * k) + k * 1.7 + look.get("phase", 0.0))
                a_up = 1.2 + 0.55 * r
                a_el = 0.9 - 0.7 * r
            elif run:
                a_up = 0.6 * math.sin(ph + (math.pi if k else 0.0)) * amp
                a_el = 1.3
            else:
                a_up = (-0.9 * th) + (0.03 * math.sin(t * 0.8 + k) if action == "stand" else 0.0)
                a_el = 0.25 + 0.25 * max(0.0, math.sin(a_up))
            lat = (-(sw - 0.015) if k == 0 else (sw - 0.015))
            spread = 0.018 if not scuffle else 0.05
            shp = proj(sh_f, lat, sh_u - 0.015)
            L_u, L_f = 0.165, 0.15
            el_f, el_u = sh_f + L_u * math.sin(a_up), sh_u - 0.015 - L_u * math.cos(a_up)
            wr_f, wr_u = el_f + L_f * math.sin(a_up + a_el), el_u - L_f * math.cos(a_up + a_el)
            el = proj(el_f, lat * 1.08 + math.copysign(spread, lat), el_u)
            wr = proj(wr_f, lat * 1.1 + math.copysign(spread, lat), wr_u)
            sleeve = look.get("sleeves", True)
            cv2.line(img, _p(*shp), _p(*el), _shade(top, shade), t_uarm, AA, SHIFT)
            cv2.line(img, _p(*el), _p(*wr), _shade(top if sleeve else skin, shade), t_farm, AA, SHIFT)
            cv2.circle(img, _p(*wr), max(1, int(0.026 * h * ONE)), _shade(skin, shade), -1, AA, SHIFT)

        def torso() -> None:
            tw_sh = h * (sig * 0.07 + c * sw) * 1.0
            tw_hip = h * (sig * 0.068 + c * 0.092 * build)
            tw_wa = h * (sig * 0.064 + c * 0.088 * build)
            scx, scy = proj(sh_f, 0.0, sh_u)
            wcx, wcy = proj(sh_f * 0.4, 0.0, hip_u + 0.1)
            hcx, hcy = proj(0.0, 0.0, hip_u)
            ncx, ncy = proj(sh_f * 1.05, 0.0, sh_u + 0.03)
            pts_top = [
                (ncx - tw_sh * 0.45, ncy), (ncx + tw_sh * 0.45, ncy),
                (scx + tw_sh, scy + 0.012 * h), (wcx + tw_wa, wcy), (hcx + tw_hip, hcy - 0.03 * h),
                (hcx - tw_hip, hcy - 0.03 * h), (wcx - tw_wa, wcy), (scx - tw_sh, scy + 0.012 * h),
            ]
            pts_bottom = [(hcx - tw_hip, hcy - 0.035 * h), (hcx + tw_hip, hcy - 0.035 * h), (hcx + tw_hip * 0.95, hcy + 0.035 * h),
                          (hcx - tw_hip * 0.95, hcy + 0.035 * h)]
            cv2.fillPoly(img, [np.array([_p(*q) for q in pts_bottom], np.int32)], bottom, AA, SHIFT)
            cv2.fillPoly(img, [np.array([_p(*q) for q in pts_top], np.int32)], top, AA, SHIFT)
            # shading: the side away from the light (top left) is darker
            dark = [(scx + tw_sh * 0.35, scy + 0.012 * h), (scx + tw_sh, scy + 0.012 * h), (wcx + tw_wa, wcy),
                    (hcx + tw_hip, hcy - 0.03 * h), (hcx + tw_hip * 0.4, hcy - 0.03 * h), (wcx + tw_wa * 0.3, wcy)]
            cv2.fillPoly(img, [np.array([_p(*q) for q in dark], np.int32)], _shade(top, 0.8), AA, SHIFT)
            if look.get("bag") and not scuffle and not run:  # a shoulder bag at the hip, on the far side
                bx, by = proj(-0.02, sw + 0.02, hip_u + 0.02)
                cv2.line(img, _p(*proj(0.0, -sw * 0.6, sh_u - 0.01)), _p(bx, by - 0.04 * h), _shade((40, 45, 50), ambient), max(1, int(0.015 * h)), AA, SHIFT)
                cv2.ellipse(img, _p(bx, by), (int(0.045 * h * ONE), int(0.055 * h * ONE)), 0, 0, 360, _shade((45, 55, 70), ambient), -1, AA, SHIFT)

        def head() -> None:
            nx, ny = proj(sh_f * 1.05, 0.0, sh_u + 0.045)
            cv2.line(img, _p(nx, ny + 0.02 * h), _p(nx, ny - 0.03 * h), _shade(skin, 0.85), max(2, int(0.05 * h)), AA, SHIFT)
            hx, hy = proj(sh_f * 1.1, 0.0, sh_u + 0.112)
            ry = 0.066 * h
            rx = 0.052 * h
            hxp, hyp = _p(hx, hy)
            cv2.ellipse(img, (hxp, hyp), (int(rx * ONE), int(ry * ONE)), 0, 0, 360, skin if toward or sig > 0.5 else hair, -1, AA, SHIFT)
            if toward and sig <= 0.5:  # face the camera: hair on top
                cv2.ellipse(img, _p(hx, hy - 0.018 * h), (int(rx * 1.03 * ONE), int(ry * 0.72 * ONE)), 0, 180, 360, hair, -1, AA, SHIFT)
                if look.get("long_hair"):
                    cv2.ellipse(img, _p(hx - rx * 0.9, hy + 0.02 * h), (int(rx * 0.3 * ONE), int(ry * 0.9 * ONE)), 0, 0, 360, hair, -1, AA, SHIFT)
                    cv2.ellipse(img, _p(hx + rx * 0.9, hy + 0.02 * h), (int(rx * 0.3 * ONE), int(ry * 0.9 * ONE)), 0, 0, 360, hair, -1, AA, SHIFT)
            elif sig > 0.5:  # profile: hair over the back and top
                cv2.ellipse(img, _p(hx - s * rx * 0.25, hy - 0.012 * h), (int(rx * 0.95 * ONE), int(ry * 0.85 * ONE)), 0,
                            90 + 90 * s, 270 + 90 * s, hair, -1, AA, SHIFT)
                cv2.ellipse(img, _p(hx, hy - 0.02 * h), (int(rx * ONE), int(ry * 0.7 * ONE)), 0, 180, 360, hair, -1, AA, SHIFT)
                if look.get("long_hair"):
                    cv2.ellipse(img, _p(hx - s * rx * 0.7, hy + 0.03 * h), (int(rx * 0.45 * ONE), int(ry * 0.9 * ONE)), 0, 0, 360, hair, -1, AA, SHIFT)

        # far limbs first (darker), then torso, near limbs, head
        if sig > 0.35:
            arm(1, far)
            leg(1, far)
            leg(0, 1.0)
            torso()
            arm(0, 1.0)
        else:
            leg(0, 0.93)
            leg(1, 0.93)
            torso()
            arm(0, 1.0)
            arm(1, 1.0)
        head()

    def _draw_vehicle(self, img: np.ndarray, actor: Actor, tr: _Track, t: float, gx: float, gz: float, i: int, ambient: float) -> None:
        look = actor.look or {}
        hd = tr.heading(i) or (1.0, 0.0)
        W, H = self.width, self.height
        scale = FOCAL * H / gz  # px per metre at this depth
        label = actor.label
        length = 4.3 if label == "car" else 1.8
        x_c, y_c = _to_image(gx, gz, self.aspect)
        fx, fy = x_c * W, y_c * H
        lx = max(abs(hd[0]) * length, 1.8 if label == "car" else 0.7) * scale
        s = 1 if hd[0] >= 0 else -1
        col = _shade(look.get("color", (180, 180, 180)), ambient)
        # soft shadow
        cv2.ellipse(img, _p(fx, fy), (int(lx * 0.55 * ONE), int(0.12 * scale * ONE)), 0, 0, 360, _shade((60, 60, 62), ambient), -1, AA, SHIFT)
        if label == "car":
            hc = 1.45 * scale
            x0, x1 = fx - lx / 2, fx + lx / 2

            def X(f: float) -> float:  # f from rear (0) to front (1)
                return x0 + f * lx if s > 0 else x1 - f * lx

            body = [(X(0.0), fy - 0.22 * hc), (X(0.0), fy - 0.55 * hc), (X(0.06), fy - 0.62 * hc), (X(0.8), fy - 0.63 * hc),
                    (X(1.0), fy - 0.52 * hc), (X(1.0), fy - 0.22 * hc)]
            cab = [(X(0.1), fy - 0.62 * hc), (X(0.26), fy - hc), (X(0.66), fy - hc), (X(0.8), fy - 0.62 * hc)]
            cv2.fillPoly(img, [np.array([_p(*q) for q in body], np.int32)], col, AA, SHIFT)
            cv2.fillPoly(img, [np.array([_p(*q) for q in cab], np.int32)], col, AA, SHIFT)
            glass = _shade((70, 60, 55), ambient * 1.2)
            win = [(X(0.15), fy - 0.64 * hc), (X(0.28), fy - 0.95 * hc), (X(0.64), fy - 0.95 * hc), (X(0.76), fy - 0.64 * hc)]
            cv2.fillPoly(img, [np.array([_p(*q) for q in win], np.int32)], glass, AA, SHIFT)
            cv2.line(img, _p(X(0.45), fy - 0.64 * hc), _p(X(0.45), fy - 0.95 * hc), col, max(1, int(0.05 * hc)), AA, SHIFT)
            cv2.line(img, _p(X(0.02), fy - 0.42 * hc), _p(X(0.98), fy - 0.42 * hc), _shade(col, 0.75), max(1, int(0.04 * hc)), AA, SHIFT)
            cv2.fillPoly(img, [np.array([_p(*q) for q in [(X(0.0), fy - 0.22 * hc), (X(1.0), fy - 0.22 * hc), (X(1.0), fy - 0.3 * hc), (X(0.0), fy - 0.3 * hc)]], np.int32)],
                         _shade(col, 0.6), AA, SHIFT)
            r = 0.22 * hc
            for f in (0.18, 0.8):
                cv2.circle(img, _p(X(f), fy - r), int(r * ONE), (22, 22, 24), -1, AA, SHIFT)
                cv2.circle(img, _p(X(f), fy - r), int(r * 0.5 * ONE), (150, 150, 155), -1, AA, SHIFT)
            cv2.ellipse(img, _p(X(0.985), fy - 0.47 * hc), (int(0.02 * lx * ONE), int(0.05 * hc * ONE)), 0, 0, 360, (170, 230, 240), -1, AA, SHIFT)
            cv2.ellipse(img, _p(X(0.015), fy - 0.5 * hc), (int(0.015 * lx * ONE), int(0.05 * hc * ONE)), 0, 0, 360, (30, 30, 200), -1, AA, SHIFT)
        else:  # scooter with its rider
            hc = 1.1 * scale
            x0, x1 = fx - lx / 2, fx + lx / 2

            def X(f: float) -> float:
                return x0 + f * lx if s > 0 else x1 - f * lx

            r = 0.2 * hc
            for f in (0.15, 0.85):
                cv2.circle(img, _p(X(f), fy - r), int(r * ONE), (25, 25, 25), -1, AA, SHIFT)
                cv2.circle(img, _p(X(f), fy - r), int(r * 0.45 * ONE), (140, 140, 140), -1, AA, SHIFT)
            body = [(X(0.05), fy - 0.35 * hc), (X(0.45), fy - 0.3 * hc), (X(0.7), fy - 0.3 * hc), (X(0.85), fy - 0.75 * hc),
                    (X(0.78), fy - 0.8 * hc), (X(0.6), fy - 0.42 * hc), (X(0.35), fy - 0.5 * hc), (X(0.0), fy - 0.52 * hc)]
            cv2.fillPoly(img, [np.array([_p(*q) for q in body], np.int32)], col, AA, SHIFT)
            cv2.line(img, _p(X(0.8), fy - 0.8 * hc), _p(X(0.72), fy - 1.0 * hc), (40, 40, 40), max(1, int(0.05 * hc)), AA, SHIFT)
            rl = look.get("rider", {})
            top = _shade(rl.get("top", (50, 50, 50)), ambient)
            bot = _shade(rl.get("bottom", (60, 50, 40)), ambient)
            hip = (X(0.3), fy - 0.58 * hc)
            knee = (X(0.55), fy - 0.62 * hc)
            foot = (X(0.55), fy - 0.33 * hc)
            sh = (X(0.36), fy - 1.12 * hc)
            hand = (X(0.72), fy - 0.98 * hc)
            t_l = max(2, int(0.11 * hc))
            cv2.line(img, _p(*hip), _p(*knee), bot, t_l, AA, SHIFT)
            cv2.line(img, _p(*knee), _p(*foot), bot, max(2, int(0.09 * hc)), AA, SHIFT)
            cv2.line(img, _p(*hip), _p(*sh), top, max(3, int(0.2 * hc)), AA, SHIFT)
            cv2.line(img, _p(*sh), _p(*hand), top, max(2, int(0.07 * hc)), AA, SHIFT)
            cv2.circle(img, _p(X(0.38), fy - 1.3 * hc), int(0.11 * hc * ONE), _shade((200, 200, 200) if look.get("color", (0, 0, 0))[0] < 128 else (40, 40, 160), ambient), -1, AA, SHIFT)

    # ------------------------------------------------------------------ frames

    def _compose(self, t: float) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, Any]]:
        """The scene at t before the sensor (gain, noise): image, actor truth, flags. Cached per t."""
        with self._script_lock:
            return self._compose_locked(t)

    def _compose_locked(self, t: float) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, Any]]:
        if self._lookup_cache is not None and self._lookup_cache[0] == t:
            return self._lookup_cache[1]
        W, H = self.width, self.height
        img = self._bg.copy()
        ambient = 0.55 if self.night else 1.0
        # swaying canopies
        gust = 0.6 + 0.4 * math.sin(t * 0.37 + self.seed) * math.sin(t * 0.11 + 1.0)
        for cp in self._canopies:
            amp = (1.2 + 1.6 * gust) * H / 360.0
            ph = cp["phase"]
            w = cp["w"]  # (rows, 1)
            dx = w * (amp * math.sin(t * 2 * math.pi * 0.45 + ph) + 0.5 * amp * np.sin(cp["ys"] * 0.15 + t * 5.0 + ph))
            dy = w * 0.35 * amp * math.sin(t * 2 * math.pi * 0.31 + ph)
            mx = cp["gx"] - dx.astype(np.float32)
            my = cp["gy"] - dy.astype(np.float32)
            patch = cv2.remap(cp["patch"], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            mask = cv2.remap(cp["mask"], mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
            ph_, pw_ = mask.shape
            roi = img[cp["y0"]:cp["y0"] + ph_, cp["x0"]:cp["x0"] + pw_]
            cv2.copyTo(patch, mask, roi)

        # actors, far to near
        present = []
        for aid, tr in self._tracks.items():
            if tr.t0 <= t <= tr.t1:
                gx, gz, d, i = tr.at(t)
                present.append((gz, aid, gx, d, i))
        present.sort(key=lambda p: -p[0])
        drawn: list[dict[str, Any]] = []
        for gz, aid, gx, d, i in present:
            actor = self._actors[aid]
            tr = self._tracks[aid]
            x_rel, y_rel = _to_image(gx, gz, self.aspect)
            fx, fy = x_rel * W, y_rel * H
            if actor.kind == "person":
                h = PERSON_M * actor.look["height"] * FOCAL * H / gz
                rx0, rx1 = fx - 0.75 * h, fx + 0.75 * h
                ry0, ry1 = fy - 1.15 * h, fy + 0.12 * h
            else:
                scale = FOCAL * H / gz
                half = 2.6 * scale
                rx0, rx1 = fx - half, fx + half
                ry0, ry1 = fy - 2.2 * scale, fy + 0.3 * scale
            X0, X1 = max(0, int(math.floor(rx0))), min(W, int(math.ceil(rx1)) + 1)
            Y0, Y1 = max(0, int(math.floor(ry0))), min(H, int(math.ceil(ry1)) + 1)
            if X1 <= X0 or Y1 <= Y0:
                continue
            before = img[Y0:Y1, X0:X1].copy()
            if actor.kind == "person":
                pose = self._person_pose(actor, tr, t, gx, gz, d, i)
                # contact shadow (drawn before the figure: not part of its box)
                cv2.ellipse(img, _p(fx, fy), (int(0.16 * h * ONE), int(0.025 * h * ONE)), 0, 0, 360, _shade((95, 95, 98), ambient * 0.9), -1, AA, SHIFT)
                shadowed = img[Y0:Y1, X0:X1].copy()
                self._draw_person(img, actor.look, fx, fy, h, pose, ambient)
                action = pose["action"]
                ref = shadowed
            else:
                self._draw_vehicle(img, actor, tr, t, gx, gz, i, ambient)
                action = "drive" if tr.action[i] == "drive" else "stand"
                ref = before
            after = img[Y0:Y1, X0:X1]
            mask = _changed(after, ref)
            bx, by, bw, bh = cv2.boundingRect(mask)
            if bw == 0 or bh == 0:
                continue
            drawn.append({
                "id": aid, "kind": actor.kind, "label": actor.label, "action": action,
                "box": [X0 + bx, Y0 + by, X0 + bx + bw, Y0 + by + bh],
                "ground": [round(x_rel, 5), round(y_rel, 5)],
                "_roi": (Y0, Y1, X0, X1), "_mask": mask, "_after": after.copy(),
                "_edge": X0 + bx <= 0 or Y0 + by <= 0 or X0 + bx + bw >= W or Y0 + by + bh >= H or fy > H - 1,
            })
        # occlusion by nearer actors
        for dd in drawn:
            Y0, Y1, X0, X1 = dd["_roi"]
            m = dd["_mask"]
            n = cv2.countNonZero(m)
            changed = cv2.bitwise_and(_changed(img[Y0:Y1, X0:X1], dd["_after"]), m)
            dd["occluded"] = round(cv2.countNonZero(changed) / max(n, 1), 3)

        delta, cone = self._lights(t)
        if cone:
            cv2.add(img, self._cone, dst=img)
        m = self._knock(t)
        if m is not None:
            img = cv2.warpAffine(img, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        blur = self._blur_amount(t)
        if blur > 0:
            sigma = 0.5 + 7.0 * blur * H / 360.0
            img = cv2.GaussianBlur(img, (0, 0), sigma)
        cover = self._cover_amount(t)
        flags = self.flags(t)
        truth = []
        for dd in drawn:
            x1, y1, x2, y2 = dd["box"]
            bottom = ((x1 + x2) / 2.0, float(y2))
            if m is not None:
                corners = np.array([[x1, y1, 1], [x2, y1, 1], [x1, y2, 1], [x2, y2, 1]], float) @ m.T
                bx1, by1 = corners.min(axis=0)
                bx2, by2 = corners.max(axis=0)
                bpt = np.array([bottom[0], bottom[1], 1.0]) @ m.T
                bottom = (float(bpt[0]), float(bpt[1]))
                edge = dd["_edge"] or bx1 < 0 or by1 < 0 or bx2 > W - 1 or by2 > H - 1
                x1, y1 = int(max(0, math.floor(bx1))), int(max(0, math.floor(by1)))
                x2, y2 = int(min(W, math.ceil(bx2))), int(min(H, math.ceil(by2)))
                if x2 <= x1 or y2 <= y1:
                    continue
            else:
                edge = dd["_edge"]
            full = (not edge) and dd["occluded"] <= 0.25 and cover < 0.3 and blur < 0.3
            truth.append({
                "id": dd["id"], "kind": dd["kind"], "label": dd["label"], "box": [int(x1), int(y1), int(x2), int(y2)],
                "bottom": [round(bottom[0] / W, 5), round(bottom[1] / H, 5)], "ground": dd["ground"],
                "fully_in_view": bool(full), "occluded": dd["occluded"], "action": dd["action"],
                "covered": flags["covered"], "lights_on": flags["lights_on"],
            })
        result = (img, truth, {**flags, "_cover": cover, "_delta": delta})
        self._lookup_cache = (t, result)
        return result

    def render(self, t: float) -> np.ndarray:
        """The BGR uint8 frame at time t (seconds)."""
        img, _, fl = self._compose(t)
        W, H = self.width, self.height
        k = int(round(t * self.fps))
        gain = 1.0
        if self.drift:
            p = self._drift_period
            ph = self._drift_phase
            gain *= 1.0 + 0.13 * math.sin(2 * math.pi * t / p[0] + ph[0]) + 0.04 * math.sin(2 * math.pi * t / p[1] + ph[1]) \
                + 0.015 * math.sin(2 * math.pi * t / p[2] + ph[2])
        frng = _stable_rng(self.seed, k, "frame")
        if self.flicker > 0:
            gain *= 1.0 + self.flicker * float(frng.standard_normal())
        out = cv2.convertScaleAbs(img, alpha=gain, beta=fl["_delta"])
        cover = fl["_cover"]
        if cover > 0:
            dark = np.full_like(out, (18, 19, 21))
            out = cv2.addWeighted(out, 1.0 - cover, dark, cover, 0.0)
            if cover >= 0.99:
                out[:] = (18, 19, 21)
        if self._noise_bank:
            pos, neg = self._noise_bank[int(frng.integers(len(self._noise_bank)))]
            dy, dx = int(frng.integers(self._pad)), int(frng.integers(self._pad))
            cv2.add(out, pos[dy:dy + H, dx:dx + W], dst=out)
            cv2.subtract(out, neg[dy:dy + H, dx:dx + W], dst=out)
        if self.jpeg_quality:
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(self.jpeg_quality)])
            if ok:
                out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        return out

    def truth(self, t: float) -> list[dict[str, Any]]:
        """Per actor with pixels in the frame at t: id, kind ("person" | "vehicle"), label, box [x1, y1, x2, y2]
        (px, exclusive right/bottom: the drawn pixels' bounding box), bottom [x, y] (relative bottom centre of
        the box), ground [x, y] (relative scripted ground point), fully_in_view, occluded (fraction hidden by
        nearer actors), action ("walk" | "stand" | "run" | "scuffle" | "drive"), and the scene flags
        covered / lights_on (all flags: Scene.flags(t))."""
        return [dict(d) for d in self._compose(t)[1]]


def _compose_affine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    A = np.vstack([a, [0, 0, 1]])
    B = np.vstack([b, [0, 0, 1]])
    return (A @ B)[:2]


# --------------------------------------------------------------------------- clips

FOURCC_FOR_SUFFIX = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v", ".webm": "VP80"}


def write_clip(scene: Scene, path: str | Path, seconds: float | None = None, fourcc: str = "mp4v") -> Path:
    """Encode `seconds` (default: the scene's duration) of the scene to a real video file with cv2.VideoWriter
    and write the ground truth beside it: <path>.truth.jsonl (one line per frame: frame, t, actors, flags)
    and <path>.events.json (scripted incidents, zones, actors, clip metadata).

    Encoders that work in this OpenCV build (opencv-python-headless 4.x wheels, FFmpeg backend):
    mp4v in .mp4 (MPEG-4 Part 2, the default), MJPG / XVID / FMP4 in .avi, VP80 / VP90 in .webm;
    there is no H.264 encoder (avc1 / H264 fail to open). For a .avi path with the default fourcc,
    MJPG is used.
    """
    path = Path(path)
    if seconds is None:
        seconds = scene.duration
    if path.suffix.lower() == ".avi" and fourcc == "mp4v":
        fourcc = "MJPG"
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), scene.fps, (scene.width, scene.height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot open a {fourcc!r} video writer for {path} (working here: mp4v .mp4, MJPG/XVID .avi, VP80 .webm)")
    n = int(round(seconds * scene.fps))
    truth_path = Path(str(path) + ".truth.jsonl")
    try:
        with truth_path.open("w") as f:
            for k in range(n):
                t = k / scene.fps
                writer.write(scene.render(t))
                fl = scene.flags(t)
                f.write(json.dumps({"frame": k, "t": round(t, 4), "actors": scene.truth(t), "flags": fl}, separators=(",", ":")) + "\n")
    finally:
        writer.release()
    summary = {
        "video": path.name, "fourcc": fourcc, "fps": scene.fps, "width": scene.width, "height": scene.height,
        "frames": n, "seconds": n / scene.fps, "seed": scene.seed, "clock_start": scene.clock_start,
        "zones": scene.zones,
        "actors": {
            aid: {"kind": a.kind, "label": a.label, "start": a.start, "end": a.end, "zones": scene.zone_intervals(aid)}
            for aid, a in scene.actors.items()
        },
        "events": scene.events(),
    }
    Path(str(path) + ".events.json").write_text(json.dumps(summary, indent=1))
    return path


# --------------------------------------------------------------------------- scenarios


def _walk_through_gate(seed: int) -> Scene:
    sc = Scene(seed=seed)
    sc.add_person([(-0.08, 0.92), (0.14, 0.92), (0.46, 0.50), (1.08, 0.48)], start=3.0, truth_id="walker")
    sc.length = sc.duration + 2.0
    return sc


def _loiter_gate(seed: int) -> Scene:
    sc = Scene(seed=seed)
    path = [(1.08, 0.50), (0.52, 0.52), (0.40, 0.60), (-0.08, 0.66)]
    sc.add_person(path, start=3.0, stop_at=path_fraction(path, 1, sc.aspect), stay_s=40.0, truth_id="loiterer")
    sc.length = sc.duration + 2.0
    return sc


def _crowd(n: int) -> Callable[[int], Scene]:
    def build(seed: int) -> Scene:
        sc = Scene(seed=seed)
        sc.add_crowd((0.5, 0.62), n=n, start=4.0, gather_s=10.0, stay_s=30.0)
        sc.length = sc.duration + 2.0
        return sc

    return build


def _run(seed: int) -> Scene:
    sc = Scene(seed=seed)
    sc.add_person([(-0.08, 0.9), (1.08, 0.88)], start=3.0, truth_id="walker")
    sc.add_person([(1.1, 0.72), (-0.1, 0.76)], start=11.0, run=True, truth_id="runner")
    sc.length = sc.duration + 2.0
    return sc


def _scuffle(seed: int) -> Scene:
    sc = Scene(seed=seed)
    sc.add_scuffle((0.45, 0.70), start=8.0, seconds=8.0)
    sc.length = 8.0 + 8.0 + 6.0
    return sc


def _lights_on(seed: int) -> Scene:
    sc = Scene(seed=seed, night=True)
    sc.lights_on(8.0, delta=60.0)
    sc.length = 20.0
    return sc


def _drift_noise(seed: int) -> Scene:
    sc = Scene(seed=seed, noise=6.0)
    sc.length = 120.0
    return sc


def _cover(seed: int) -> Scene:
    sc = Scene(seed=seed)
    sc.add_person([(1.08, 0.9), (-0.08, 0.93)], start=1.0, truth_id="walker")
    sc.cover(5.0, seconds=10.0)
    sc.length = 20.0
    return sc


def _knock(seed: int) -> Scene:
    sc = Scene(seed=seed)
    sc.knock(5.0)
    sc.length = 15.0
    return sc


def _blur(seed: int) -> Scene:
    sc = Scene(seed=seed)
    sc.blur(5.0, seconds=8.0)
    sc.length = 16.0
    return sc


def _traffic(seed: int) -> Scene:
    sc = Scene(seed=seed)
    sc.add_vehicle([(-0.35, 0.74), (1.35, 0.74)], speed=8.0, start=2.0)
    sc.add_vehicle([(1.35, 0.62), (-0.35, 0.62)], speed=7.0, start=9.0)
    sc.add_vehicle([(-0.2, 0.78), (1.2, 0.78)], speed=6.0, start=15.0, kind="scooter")
    sc.add_vehicle([(1.35, 0.63), (-0.35, 0.63)], speed=9.0, start=21.0)
    sc.length = sc.duration + 1.0
    return sc


def _busy(seed: int) -> Scene:
    """About 8 people in view at any time (6+ throughout), walking both ways on both pavements, some
    crossing the street; two cars. For benchmarks."""
    sc = Scene(seed=seed)
    rng = _stable_rng(seed, "busy")
    far = [0.47, 0.49, 0.51]
    near = [0.88, 0.91, 0.94]

    def walk(t0: float, y: float, rightward: bool, x0: float | None = None, speed: float | None = None) -> None:
        y1 = y + float(rng.uniform(-0.008, 0.008))
        a, b = (-0.08, 1.08) if rightward else (1.08, -0.08)
        sc.add_person([(a if x0 is None else x0, y), (b, y1)], speed=speed or float(rng.uniform(1.0, 1.5)), start=t0)

    for k in range(8):  # already in view at t = 0
        walk(0.0, (far + near)[k % 6], bool(k % 2), x0=float(rng.uniform(0.1, 0.9)))
    t = float(rng.uniform(0, 2))
    while t < 52.0:
        walk(t, far[int(rng.integers(3))], bool(rng.random() < 0.5))
        t += float(rng.uniform(2.5, 4.0))
    t = float(rng.uniform(0, 2))
    while t < 55.0:
        walk(t, near[int(rng.integers(3))], bool(rng.random() < 0.5), speed=float(rng.uniform(0.9, 1.3)))
        t += float(rng.uniform(1.8, 2.8))
    t = 4.0
    while t < 50.0:
        x0 = float(rng.uniform(0.05, 0.4))
        x1 = float(rng.uniform(0.5, 0.9))
        path = [(-0.08, 0.92), (x0, 0.92), (x1, 0.49), (1.08, 0.48)]
        if rng.random() < 0.5:
            path = [(1.08, 0.48), (x1, 0.49), (x0, 0.92), (-0.08, 0.93)]
        sc.add_person(path, speed=float(rng.uniform(1.1, 1.5)), start=t)
        t += float(rng.uniform(7.0, 11.0))
    sc.add_vehicle([(-0.35, 0.72), (1.35, 0.72)], speed=7.0, start=20.0)
    sc.add_vehicle([(1.35, 0.63), (-0.35, 0.63)], speed=8.0, start=41.0)
    sc.length = 60.0
    return sc


SCENARIOS: dict[str, Callable[[int], Scene]] = {
    "walk_through_gate": _walk_through_gate,
    "loiter_gate": _loiter_gate,
    "crowd_5": _crowd(5),
    "crowd_4": _crowd(4),
    "run": _run,
    "scuffle": _scuffle,
    "lights_on": _lights_on,
    "drift_noise": _drift_noise,
    "cover": _cover,
    "knock": _knock,
    "blur": _blur,
    "traffic": _traffic,
    "busy": _busy,
}

# zone polygons each scenario's scene carries (all use the district's camera zones)
SCENARIO_ZONES: dict[str, dict[str, list[tuple[float, float]]]] = {name: {"gate": GATE_ZONE, "street": STREET_ZONE} for name in SCENARIOS}

__all__ = [
    "Actor", "Scene", "write_clip", "SCENARIOS", "SCENARIO_ZONES", "GATE_ZONE", "STREET_ZONE", "GATE_APRON",
    "WALK_Y", "path_fraction", "point_in_polygon",
]
