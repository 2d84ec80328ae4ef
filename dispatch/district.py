"""The district configuration: one YAML file per district, validated Frigate-style.

    from dispatch.district import load_district, check_config
    district = load_district("config/districts/tieshan.yaml")   # raises ConfigError
    for issue in check_config("my.yaml"):                       # [] when fine
        print(issue)          # my.yaml:42: cameras[3].zones[0].polygon: needs at least 3 points

Load -> parse -> validate. The YAML is composed with its node positions kept, so
every problem pydantic finds maps back to the line it came from. Every problem is
reported, not only the first: field errors, unknown keys, duplicate ids, dangling
references, points outside the district and an unreadable street file all come
back together in one `ConfigError`.

The models are frozen; the engine reads them and never changes them. The format
is documented field by field in docs/district-config.md.
"""

from __future__ import annotations

import difflib
import math
import re
import types
import typing
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dispatch.events import CapCategory, IncidentKind, Point, TravelMode, UnitKind
from dispatch.subjects import check_token

if TYPE_CHECKING:  # the street graph is imported lazily, only where it is needed
    from dispatch.streets import StreetGraph

__all__ = [
    "DEFAULT_ACK_TIMEOUT_S",
    "DEFAULT_KINDS",
    "DEFAULT_SPEEDS_KMH",
    "Camera",
    "Community",
    "ConfigError",
    "ConfigIssue",
    "District",
    "KindRule",
    "Policy",
    "Streets",
    "Unit",
    "Zone",
    "check_config",
    "load_district",
]

_M_PER_DEG_LAT = 111_320.0


# --------------------------------------------------------------------------- issues


class ConfigIssue(NamedTuple):
    """One problem in a config file: where it is and what is wrong."""

    file: str
    line: int | None
    field: str
    reason: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


class ConfigError(Exception):
    """The config cannot be used; `issues` lists every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue]):
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


# --------------------------------------------------------------------------- small types


def _token(what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        return check_token(value, what)

    return check


def _point_from_pair(value: Any) -> Any:
    """Accept `[lat, lon]` as well as `{lat: .., lon: ..}` for a point."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"a point is [lat, lon] or {{lat: .., lon: ..}}, got {len(value)} numbers")
        return {"lat": value[0], "lon": value[1]}
    return value


PointIn = Annotated[Point, BeforeValidator(_point_from_pair)]
"""A `Point`, written in YAML as `{lat: 30.2, lon: 114.9}` or `[30.2, 114.9]`."""

_point_adapter: TypeAdapter[Point] = TypeAdapter(PointIn)


def _ring(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Drop a repeated closing point (GeoJSON style) so every ring is open."""
    pts = [tuple(p) for p in points]
    if len(pts) > 1 and pts[0] == pts[-1]:
        pts.pop()
    return pts  # type: ignore[return-value]


def _shoelace(points: Sequence[tuple[float, float]]) -> float:
    s = 0.0
    n = len(points)
    for i in range(n):
        x1, y1 = points[i]
        x2, y2 = points[(i + 1) % n]
        s += x1 * y2 - x2 * y1
    return s / 2.0


def _inside(x: float, y: float, ring: Sequence[tuple[float, float]]) -> bool:
    """Ray casting; points on an edge may fall either way."""
    inside = False
    n = len(ring)
    j = n - 1
    for i in range(n):
        xi, yi = ring[i]
        xj, yj = ring[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def _fmt(v: float) -> str:
    return f"{v:g}"


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


DEFAULT_SPEEDS_KMH: dict[TravelMode, float] = {
    TravelMode.foot: 5.0,
    TravelMode.bicycle: 15.0,
    TravelMode.motorbike: 35.0,
    TravelMode.car: 40.0,
}
"""Average speeds over the street graph, km/h (stops, crossings and turns included)."""


class Streets(_Model):
    """The street graph the engine routes over."""

    file: str = Field(
        ...,
        min_length=1,
        title="street file",
        description="GeoJSON street file (.geojson) or OSM XML (.osm, .osm.bz2); "
        "a relative path resolves against the folder of the district YAML",
    )
    speeds_kmh: dict[TravelMode, float] = Field(
        default_factory=lambda: dict(DEFAULT_SPEEDS_KMH),
        title="speeds per travel mode",
        description="average km/h per travel mode; modes left out keep the defaults "
        "(foot 5, bicycle 15, motorbike 35, car 40)",
    )

    @field_validator("file")
    @classmethod
    def _file_exists(cls, v: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        path = _resolve(v, base)
        if not path.exists():
            raise ValueError(f"street file {path} does not exist")
        if not path.is_file():
            raise ValueError(f"street file {path} is not a file")
        return v

    @field_validator("speeds_kmh", mode="before")
    @classmethod
    def _merge_speeds(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            return {**DEFAULT_SPEEDS_KMH, **v}
        return v

    @field_validator("speeds_kmh")
    @classmethod
    def _positive_speeds(cls, v: dict[TravelMode, float]) -> dict[TravelMode, float]:
        for mode, kmh in v.items():
            if not (kmh > 0 and math.isfinite(kmh)):
                raise ValueError(f"speed for {mode.value} must be a positive number of km/h, got {_fmt(kmh)}")
        return v

    def path(self, base_dir: str | Path | None = None) -> Path:
        """The street file, resolved against `base_dir` (the YAML's folder) or the working directory."""
        return _resolve(self.file, base_dir)


def _resolve(file: str, base_dir: str | Path | None) -> Path:
    p = Path(file).expanduser()
    if not p.is_absolute():
        p = Path(base_dir if base_dir is not None else Path.cwd()) / p
    return p


class Community(_Model):
    """A neighbourhood (社区): the unit of beats and of the district's area."""

    id: Annotated[str, AfterValidator(_token("community id"))] = Field(
        ..., title="community id", description="letters, digits, '_' or '-'; units name it as their beat"
    )
    name: str = Field(..., min_length=1, title="name", description="what people call it")
    boundary: tuple[tuple[float, float], ...] = Field(
        ...,
        title="boundary polygon",
        description="[lat, lon] corners, at least 3, in order; a repeated closing point is dropped",
    )

    @field_validator("boundary")
    @classmethod
    def _valid_boundary(cls, v: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        pts = _ring(v)
        if len(pts) < 3:
            raise ValueError(f"needs at least 3 points, got {len(pts)}")
        for i, (lat, lon) in enumerate(pts, start=1):
            bad = []
            if not (-90.0 <= lat <= 90.0):
                bad.append("latitude must be within -90..90")
            if not (-180.0 <= lon <= 180.0):
                bad.append("longitude must be within -180..180")
            if bad:
                hint = " (looks like [lon, lat]; write [lat, lon])" if abs(lon) <= 90 < abs(lat) else ""
                raise ValueError(f"point {i} ({_fmt(lat)}, {_fmt(lon)}) is not a valid [lat, lon]: {', '.join(bad)}{hint}")
        if len(set(pts)) < 3:
            raise ValueError("needs at least 3 distinct points")
        if abs(_area_m2(pts)) < 1.0:
            raise ValueError("boundary has zero area (its points are repeated or on one line)")
        return tuple(pts)

    @property
    def area_m2(self) -> float:
        return abs(_area_m2(self.boundary))

    @property
    def centroid(self) -> Point:
        """Area-weighted centre of the boundary polygon."""
        lat0 = self.boundary[0][0]
        k = math.cos(math.radians(lat0))
        xy = [(lon * k, lat) for lat, lon in self.boundary]
        a = _shoelace(xy)
        cx = cy = 0.0
        n = len(xy)
        for i in range(n):
            x1, y1 = xy[i]
            x2, y2 = xy[(i + 1) % n]
            c = x1 * y2 - x2 * y1
            cx += (x1 + x2) * c
            cy += (y1 + y2) * c
        return Point(lat=cy / (6 * a), lon=cx / (6 * a) / k)

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(min lat, min lon, max lat, max lon)."""
        lats = [p[0] for p in self.boundary]
        lons = [p[1] for p in self.boundary]
        return min(lats), min(lons), max(lats), max(lons)

    def contains(self, lat: float, lon: float) -> bool:
        return _inside(lon, lat, [(q, p) for p, q in self.boundary])


def _area_m2(pts: Sequence[tuple[float, float]]) -> float:
    k = math.cos(math.radians(pts[0][0])) * _M_PER_DEG_LAT
    return _shoelace([(lon * k, lat * _M_PER_DEG_LAT) for lat, lon in pts])


_SCHEDULE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_schedule(v: str) -> tuple[int, int]:
    """'22:00-06:00' -> (start, end) in minutes after midnight; raises ValueError with the reason."""
    m = _SCHEDULE.match(v)
    if not m:
        raise ValueError(f"schedule {v!r} is not HH:MM-HH:MM (e.g. '22:00-06:00')")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    for h, mi in ((h1, m1), (h2, m2)):
        if h > 24 or mi > 59 or (h == 24 and mi):
            raise ValueError(f"schedule {v!r}: {h:02d}:{mi:02d} is not a time of day")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise ValueError(f"schedule {v!r} starts and ends at the same time (leave it out for 'always')")
    return start, end


def schedule_active(v: str | None, minute_of_day: int) -> bool:
    """Is a schedule on at this local minute of the day? None = always."""
    if v is None:
        return True
    start, end = parse_schedule(v)
    if start < end:
        return start <= minute_of_day < end
    return minute_of_day >= start or minute_of_day < end  # crosses midnight


def _check_schedule(v: str | None) -> str | None:
    if v is not None:
        parse_schedule(v)
    return v


class Zone(_Model):
    """A named area of a camera's frame (Frigate zone), in relative coordinates."""

    name: Annotated[str, AfterValidator(_token("zone name"))] = Field(
        ..., title="zone name", description="letters, digits, '_' or '-'; alerts list the zones an object entered"
    )
    polygon: tuple[tuple[float, float], ...] = Field(
        ...,
        title="zone polygon",
        description="[x, y] corners relative to the frame: 0,0 top left, 1,1 bottom right; at least 3",
    )
    restricted: bool = Field(
        False, title="restricted", description="an object entering this zone raises an intrusion alert"
    )
    schedule: Annotated[str | None, AfterValidator(_check_schedule)] = Field(
        None,
        title="restricted hours",
        description="when the zone is restricted, local district time, e.g. '22:00-06:00' (may cross midnight); "
        "absent = always",
    )
    inertia: int = Field(
        3, ge=1, le=50, title="inertia", description="frames an object's bottom-centre must be inside (or outside) before it counts as entered (left)"
    )

    @field_validator("polygon")
    @classmethod
    def _valid_polygon(cls, v: tuple[tuple[float, float], ...], info: ValidationInfo) -> tuple[tuple[float, float], ...]:
        name = info.data.get("name")
        zone = f"zone {name!r}" if name else "zone"
        pts = _ring(v)
        if len(pts) < 3:
            raise ValueError(f"needs at least 3 points, got {len(pts)}")
        for i, (x, y) in enumerate(pts, start=1):
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(f"{zone} point {i} ({_fmt(x)}, {_fmt(y)}) is outside the frame (0..1)")
        if abs(_shoelace(pts)) < 1e-9:
            raise ValueError(f"{zone} polygon has zero area (its points are repeated or on one line)")
        return tuple(pts)

    def contains(self, x: float, y: float) -> bool:
        """Is the relative frame point (x, y) inside the zone?"""
        return _inside(x, y, self.polygon)


_STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")


def _check_stream(v: str) -> str:
    v = v.strip()
    if not v:
        raise ValueError("stream is empty (use rtsp://..., http(s)://..., a file path or device:N)")
    if "://" in v:
        scheme, rest = v.split("://", 1)
        if scheme.lower() not in _STREAM_SCHEMES:
            raise ValueError(
                f"stream scheme {scheme!r} is not supported (use rtsp://, rtsps://, http://, https://, a file path or device:N)"
            )
        if not rest or rest.startswith("/"):
            raise ValueError(f"stream {v!r} names no host")
        return v
    if v.lower().startswith("device:"):
        n = v.split(":", 1)[1]
        if not n.isdigit():
            raise ValueError(f"stream {v!r}: device:N needs a device number such as device:0")
        return v
    if ":" in v.split("/", 1)[0] and not (len(v) > 1 and v[1] == ":"):  # 'foo:bar' but not 'C:\\...'
        raise ValueError(
            f"stream {v!r} is neither a URL, a file path nor device:N (use rtsp://, rtsps://, http://, https://, a file path or device:N)"
        )
    return v


def _polygon01(v: tuple[tuple[float, float], ...], what: str) -> tuple[tuple[float, float], ...]:
    pts = _ring(v)
    if len(pts) < 3:
        raise ValueError(f"{what} needs at least 3 points, got {len(pts)}")
    for i, (x, y) in enumerate(pts, start=1):
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"{what} point {i} ({_fmt(x)}, {_fmt(y)}) is outside the frame (0..1)")
    return tuple(pts)


class Detect(_Model):
    """Frame size and rate the pipeline analyses (a camera's sub-stream, usually)."""

    width: int = Field(640, ge=64, le=3840, title="detect width", description="pixels; frames are resized to this")
    height: int = Field(360, ge=48, le=2160, title="detect height", description="pixels")
    fps: float = Field(5.0, gt=0, le=30, title="detect fps", description="frames analysed per second")
    enabled: bool = Field(True, title="enabled", description="detection on at start (runtime controls can change it)")


class Motion(_Model):
    """Motion detection on a small grey frame gates the (costly) object detector."""

    threshold: int = Field(25, ge=1, le=255, title="pixel threshold", description="grey-level change that counts as motion")
    sensitivity: float = Field(
        0.5, ge=0.0, le=1.0, title="sensitivity", description="0 = only large movements, 1 = the smallest; tunes the minimum blob area"
    )
    masks: tuple[tuple[tuple[float, float], ...], ...] = Field(
        (), title="motion masks", description="polygons (relative [x, y]) where motion is ignored: trees, clocks, road traffic"
    )
    global_change: float = Field(
        0.35, gt=0.0, le=1.0, title="global change guard",
        description="fraction of the frame changing at once that means lights or clouds, not objects: the background recalibrates",
    )

    @field_validator("masks")
    @classmethod
    def _masks(cls, v: tuple[tuple[tuple[float, float], ...], ...]) -> tuple[tuple[tuple[float, float], ...], ...]:
        return tuple(_polygon01(m, f"mask {i}") for i, m in enumerate(v, start=1))


class Objects(_Model):
    min_score: float = Field(0.5, ge=0.0, le=1.0, title="minimum score", description="detections below are ignored")
    threshold: float = Field(
        0.6, ge=0.0, le=1.0, title="confirm threshold", description="an object is real once its median score over `confirm_frames` passes this"
    )
    confirm_frames: int = Field(3, ge=1, le=30, title="confirm frames", description="frames of history for the median score")


class RuleBase(_Model):
    enabled: bool = Field(True, title="enabled", description="raise alerts for this rule")
    priority: int = Field(2, ge=1, le=3, title="priority", description="priority of the alerts it raises")


class IntrusionRule(RuleBase):
    zones: tuple[str, ...] = Field((), title="zones", description="zones watched; empty = every restricted zone")


class LoiteringRule(RuleBase):
    priority: int = Field(3, ge=1, le=3, title="priority", description="priority of the alerts it raises")
    seconds: float = Field(60.0, gt=0, title="loitering time", description="seconds a person stays in a zone before it counts")
    zones: tuple[str, ...] = Field((), title="zones", description="zones watched; empty = the whole frame")


class CrowdRule(RuleBase):
    min_people: int = Field(5, ge=2, title="crowd size", description="people in view (or in the zones) at once")
    zones: tuple[str, ...] = Field((), title="zones", description="zones counted; empty = the whole frame")


class RunningRule(RuleBase):
    priority: int = Field(1, ge=1, le=3, title="priority", description="priority of the alerts it raises")
    speed: float = Field(
        1.5, gt=0, title="running speed", description="speed in body heights per second above which a person is running (walking is about 0.8)"
    )
    min_people: int = Field(1, ge=1, title="people", description="how many must run (2+ close together reads as a scuffle)")


class TamperRule(RuleBase):
    seconds: float = Field(3.0, gt=0, title="tamper time", description="covered, blurred or turned away for this long")


class OfflineRule(RuleBase):
    priority: int = Field(3, ge=1, le=3, title="priority", description="priority of the alerts it raises")
    seconds: float = Field(10.0, gt=0, title="offline after", description="no frame for this long raises camera-offline")


class Rules(_Model):
    intrusion: IntrusionRule = Field(default_factory=IntrusionRule, title="intrusion")
    loitering: LoiteringRule = Field(default_factory=LoiteringRule, title="loitering")
    crowd: CrowdRule = Field(default_factory=CrowdRule, title="crowd")
    running: RunningRule = Field(default_factory=RunningRule, title="running / scuffle")
    tamper: TamperRule = Field(default_factory=TamperRule, title="camera tamper")
    offline: OfflineRule = Field(default_factory=OfflineRule, title="camera offline")


class Camera(_Model):
    """A camera and where it looks. The camera adapter reads the stream; the engine places alerts here."""

    id: Annotated[str, AfterValidator(_token("camera id"))] = Field(
        ..., title="camera id", description="letters, digits, '_' or '-'; alerts arrive on alerts.camera.<id>"
    )
    name: str = Field(..., min_length=1, title="name", description="what operators call it")
    community: str = Field(..., title="community", description="id of the community it watches")
    position: PointIn = Field(..., title="position", description="where the camera's scene is; alerts are placed here")
    stream: Annotated[str, AfterValidator(_check_stream)] = Field(
        ...,
        title="stream",
        description="rtsp://, rtsps://, http(s):// URL, a video file path, or device:N for a local capture device",
    )
    zones: tuple[Zone, ...] = Field((), title="zones", description="named areas of the frame")
    loop: bool = Field(False, title="loop", description="for a video file: start again at the end (demos, drills)")
    detect: Detect = Field(default_factory=Detect, title="detect", description="analysis size and rate")
    motion: Motion = Field(default_factory=Motion, title="motion", description="motion detection and masks")
    objects: Objects = Field(default_factory=Objects, title="objects", description="detector score thresholds")
    rules: Rules = Field(default_factory=Rules, title="rules", description="which events raise alerts, at what priority")

    @field_validator("zones")
    @classmethod
    def _unique_zones(cls, v: tuple[Zone, ...]) -> tuple[Zone, ...]:
        seen: set[str] = set()
        for z in v:
            if z.name in seen:
                raise ValueError(f"zone name {z.name!r} is used twice")
            seen.add(z.name)
        return v

    @model_validator(mode="after")
    def _rule_zones_exist(self) -> "Camera":
        names = {z.name for z in self.zones}
        for rule in ("intrusion", "loitering", "crowd"):
            for z in getattr(self.rules, rule).zones:
                if z not in names:
                    known = ", ".join(sorted(names)) or "none"
                    raise ValueError(f"rules.{rule}.zones names zone {z!r}, which this camera does not have (zones: {known})")
        return self

    def zone(self, name: str) -> Zone | None:
        return next((z for z in self.zones if z.name == name), None)


class Unit(_Model):
    """A patrol unit: an officer, an auxiliary, or a volunteer team."""

    id: Annotated[str, AfterValidator(_token("unit id"))] = Field(
        ..., title="unit id", description="letters, digits, '_' or '-'; orders go to radio.<id>.order"
    )
    callsign: str = Field(..., min_length=1, title="callsign", description="what the radio operator says")
    kind: UnitKind = Field(..., title="kind", description="police, auxiliary or volunteer")
    mode: TravelMode = Field(..., title="travel mode", description="foot, bicycle, motorbike or car")
    beat: str = Field(..., title="beat", description="id of the community the unit patrols")
    talkgroup: Annotated[str, AfterValidator(_token("talkgroup"))] = Field(
        ..., title="talkgroup", description="radio talkgroup it listens to (radio.talkgroup.<name>)"
    )
    home: PointIn | None = Field(
        None, title="home", description="where the unit starts and patrols from; default: its beat's centroid"
    )

    @field_validator("mode")
    @classmethod
    def _volunteer_mode(cls, v: TravelMode, info: ValidationInfo) -> TravelMode:
        if info.data.get("kind") is UnitKind.volunteer and v not in (TravelMode.foot, TravelMode.bicycle):
            raise ValueError(f"volunteers patrol on foot or by bicycle, not by {v.value}")
        return v


class KindRule(_Model):
    """How the district treats one incident kind."""

    violent: bool = Field(..., title="violent", description="violent incidents never go to volunteers")
    category: CapCategory = Field(..., title="CAP category", description="CAP 1.2 category of alerts of this kind")
    default_priority: int = Field(
        ..., ge=1, le=3, title="default priority", description="1 = life at risk now, 3 = check when free"
    )
    unit_kinds: tuple[UnitKind, ...] = Field(..., title="unit kinds", description="who may take it")

    @field_validator("unit_kinds")
    @classmethod
    def _who(cls, v: tuple[UnitKind, ...], info: ValidationInfo) -> tuple[UnitKind, ...]:
        if not v:
            raise ValueError("at least one unit kind must be allowed to take it")
        if len(set(v)) != len(v):
            raise ValueError("a unit kind is listed twice")
        if info.data.get("violent") and UnitKind.volunteer in v:
            raise ValueError("volunteers never take violent incidents")
        return v


def _rule(violent: bool, category: CapCategory, priority: int, *kinds: UnitKind) -> KindRule:
    return KindRule(violent=violent, category=category, default_priority=priority, unit_kinds=kinds)


_P, _A, _V = UnitKind.police, UnitKind.auxiliary, UnitKind.volunteer
_K = IncidentKind
_C = CapCategory

DEFAULT_KINDS: dict[IncidentKind, KindRule] = {
    _K.assault: _rule(True, _C.Security, 1, _P, _A),
    _K.robbery: _rule(True, _C.Security, 1, _P, _A),
    _K.fight: _rule(True, _C.Security, 1, _P, _A),
    _K.weapon: _rule(True, _C.Security, 1, _P),
    _K.intrusion: _rule(False, _C.Security, 2, _P, _A),
    _K.theft: _rule(False, _C.Security, 2, _P, _A),
    _K.vandalism: _rule(False, _C.Security, 3, _P, _A),
    _K.loitering: _rule(False, _C.Security, 3, _P, _A, _V),
    _K.crowd: _rule(False, _C.Safety, 2, _P, _A, _V),
    _K.suspicious: _rule(False, _C.Security, 3, _P, _A, _V),
    _K.traffic: _rule(False, _C.Transport, 2, _P, _A),
    _K.medical: _rule(False, _C.Health, 1, _P, _A, _V),
    _K.fire: _rule(False, _C.Fire, 1, _P, _A),
    _K.camera_tamper: _rule(False, _C.Security, 3, _A, _P, _V),
    _K.camera_offline: _rule(False, _C.Infra, 3, _A, _P, _V),
    _K.other: _rule(False, _C.Other, 2, _P, _A),
}
"""Rules for every incident kind; a district's `policy.kinds` merges over these."""

DEFAULT_ACK_TIMEOUT_S: dict[int, float] = {1: 20.0, 2: 30.0, 3: 45.0}


class Policy(_Model):
    """The knobs of the routing engine; every one has a default."""

    ack_timeout_s: dict[int, float] = Field(
        default_factory=lambda: dict(DEFAULT_ACK_TIMEOUT_S),
        title="acknowledge timeout per priority",
        description="seconds a unit has to acknowledge an order before it goes to the next unit; "
        "keys exactly 1, 2 and 3",
    )
    correlation_window_s: float = Field(
        120.0, gt=0, title="correlation window", description="alerts of one kind and place within this many seconds join one incident"
    )
    correlation_radius_m: float = Field(
        150.0, gt=0, title="correlation radius", description="... and within this many metres"
    )
    max_attempts: int = Field(
        4, ge=1, title="max attempts", description="orders timed out or declined before the incident escalates"
    )
    stale_position_s: float = Field(
        120.0, gt=0, title="stale position", description="a unit whose last position is older than this is not chosen"
    )
    preemption: bool = Field(
        True, title="pre-emption", description="a priority-1 incident may take a unit away from a lower-priority one"
    )
    preemptable_priorities: tuple[int, ...] = Field(
        (3,), title="pre-emptable priorities", description="priorities of incidents a priority-1 incident may take a unit away from (2 and/or 3)"
    )
    preempt_margin_s: float = Field(
        60.0, ge=0, title="pre-emption margin",
        description="pre-empt only when the busy unit would arrive at least this many seconds sooner than the best free one",
    )
    escalation_talkgroup: Annotated[str, AfterValidator(_token("talkgroup"))] = Field(
        "supervisors", title="escalation talkgroup", description="talkgroup that hears escalations"
    )
    max_candidates: int = Field(
        6, ge=1, title="max candidates", description="how many candidates an explanation lists"
    )
    district_margin_m: float = Field(
        500.0, ge=0, title="district margin", description="how far beyond the communities' bounding box still counts as the district"
    )
    kinds: dict[IncidentKind, KindRule] = Field(
        default_factory=lambda: dict(DEFAULT_KINDS),
        title="incident kinds",
        description="rule per incident kind; kinds and fields left out keep the defaults",
    )

    @field_validator("ack_timeout_s")
    @classmethod
    def _three_priorities(cls, v: dict[int, float]) -> dict[int, float]:
        extra = sorted(k for k in v if k not in (1, 2, 3))
        if extra:
            raise ValueError(f"priority {extra[0]} does not exist (priorities are 1, 2 and 3)")
        missing = [k for k in (1, 2, 3) if k not in v]
        if missing:
            raise ValueError(
                f"missing timeout for priority {', '.join(map(str, missing))} (needs one for each of 1, 2 and 3)"
            )
        for k in (1, 2, 3):
            if not (v[k] > 0 and math.isfinite(v[k])):
                raise ValueError(f"timeout for priority {k} must be a positive number of seconds, got {_fmt(v[k])}")
        return {k: v[k] for k in (1, 2, 3)}

    @field_validator("preemptable_priorities")
    @classmethod
    def _preemptable(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        for p in v:
            if p == 1:
                raise ValueError("a priority-1 incident cannot be pre-empted (list 2 and/or 3)")
            if p not in (2, 3):
                raise ValueError(f"priority {p} does not exist (list 2 and/or 3)")
        return tuple(sorted(set(v)))

    @field_validator("kinds", mode="before")
    @classmethod
    def _merge_kinds(cls, v: Any) -> Any:
        if not isinstance(v, Mapping):
            return v
        merged: dict[Any, Any] = dict(DEFAULT_KINDS)
        for key, rule in v.items():
            try:
                base = DEFAULT_KINDS.get(IncidentKind(key))
            except ValueError:
                base = None  # pydantic reports the unknown kind
            if isinstance(rule, Mapping) and base is not None:
                merged[key] = {**base.model_dump(), **rule}
            else:
                merged[key] = rule
        # one key per kind: the given spelling replaces the default's
        out: dict[Any, Any] = {}
        for key, rule in merged.items():
            out[str(key)] = rule
        return out

    def ack_timeout(self, priority: int) -> float:
        """Seconds to wait for an acknowledgement of an order of this priority."""
        try:
            return self.ack_timeout_s[int(priority)]
        except KeyError:
            raise ValueError(f"priority {priority} does not exist (priorities are 1, 2 and 3)") from None

    def rule(self, kind: IncidentKind | str) -> KindRule:
        return self.kinds[IncidentKind(kind)]

    def allows(self, kind: IncidentKind | str, unit_kind: UnitKind | str) -> bool:
        """May a unit of this kind take an incident of this kind?"""
        return UnitKind(unit_kind) in self.rule(kind).unit_kinds


class District(_Model):
    """One district: its area, street graph, communities, cameras, units and policy."""

    name: str = Field(..., min_length=1, title="name", description="the district's name")
    timezone: str = Field(..., title="time zone", description="IANA time zone, e.g. Asia/Shanghai")
    center: PointIn = Field(..., title="centre", description="where maps open")
    streets: Streets | None = Field(None, title="streets", description="street graph; without it the engine uses straight lines")
    communities: tuple[Community, ...] = Field(..., min_length=1, title="communities", description="neighbourhoods tiling the district")
    cameras: tuple[Camera, ...] = Field((), title="cameras", description="cameras and what they watch")
    units: tuple[Unit, ...] = Field((), title="units", description="patrol units")
    policy: Policy = Field(default_factory=Policy, title="policy", description="engine rules and timeouts")

    _source: Path | None = PrivateAttr(None)
    _graph: Any = PrivateAttr(None)
    _index: dict[str, dict[str, Any]] | None = PrivateAttr(None)
    _box: tuple[float, float, float, float] | None = PrivateAttr(None)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Asia/Shanghai)") from None
        return v

    @model_validator(mode="after")
    def _whole(self, info: ValidationInfo) -> "District":
        # default home: the beat community's centroid
        by_id = {c.id: c for c in self.communities}
        units = tuple(
            u.model_copy(update={"home": by_id[u.beat].centroid}) if u.home is None and u.beat in by_id else u
            for u in self.units
        )
        object.__setattr__(self, "units", units)
        if (info.context or {}).get("defer_cross_checks"):
            return self  # load_district runs these itself, with line numbers
        problems = [f"{_loc_str(loc)}: {msg}" for loc, msg in _reference_issues(_view(self))]
        problems += [f"{_loc_str(loc)}: {msg}" for loc, msg in _geometry_issues(self.communities, self.policy.district_margin_m, _points(self))]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def __eq__(self, other: object) -> bool:
        # the configuration only: not where it was read from, nor the caches
        if not isinstance(other, District):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # dict fields: not hashable anyway

    # -- where it came from
    @property
    def source(self) -> Path | None:
        """The YAML file this district was loaded from (None when built in code)."""
        return self._source

    @property
    def base_dir(self) -> Path:
        return self._source.parent if self._source is not None else Path.cwd()

    # -- look-ups
    def _idx(self) -> dict[str, dict[str, Any]]:
        if self._index is None:
            self._index = {
                "camera": {c.id: c for c in self.cameras},
                "unit": {u.id: u for u in self.units},
                "community": {c.id: c for c in self.communities},
            }
        return self._index

    def camera(self, id: str) -> Camera | None:
        return self._idx()["camera"].get(id)

    def unit(self, id: str) -> Unit | None:
        return self._idx()["unit"].get(id)

    def community(self, id: str) -> Community | None:
        return self._idx()["community"].get(id)

    def community_at(self, lat: float, lon: float) -> Community | None:
        """The community whose boundary contains the point, if any."""
        return next((c for c in self.communities if c.contains(lat, lon)), None)

    @property
    def talkgroups(self) -> set[str]:
        """Every talkgroup a unit listens to, plus the escalation talkgroup."""
        return {u.talkgroup for u in self.units} | {self.policy.escalation_talkgroup}

    # -- area
    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(min lat, min lon, max lat, max lon) of all community boundaries."""
        return _bbox(self.communities)

    def contains(self, lat: float, lon: float) -> bool:
        """Inside a community, or within `policy.district_margin_m` of the communities' bounding box."""
        if self._box is None:
            s, w, n, e = _bbox(self.communities)
            dlat = self.policy.district_margin_m / _M_PER_DEG_LAT
            dlon = self.policy.district_margin_m / (_M_PER_DEG_LAT * max(math.cos(math.radians((s + n) / 2)), 1e-6))
            self._box = (s - dlat, w - dlon, n + dlat, e + dlon)
        s, w, n, e = self._box
        return s <= lat <= n and w <= lon <= e

    # -- streets
    @property
    def streets_path(self) -> Path | None:
        return None if self.streets is None else self.streets.path(self.base_dir)

    def load_streets(self) -> "StreetGraph | None":
        """The street graph (loaded once, then cached); None when the district has no streets."""
        if self.streets is None:
            return None
        if self._graph is None:
            self._graph = _load_graph(self.streets.path(self.base_dir), self.streets.speeds_kmh)
        return self._graph


def _load_graph(path: Path, speeds_kmh: Mapping[TravelMode, float]) -> "StreetGraph":
    from dispatch.streets import StreetGraph  # lazy: only districts with streets need it

    return StreetGraph.from_file(path, dict(speeds_kmh))


def _bbox(communities: Sequence[Community]) -> tuple[float, float, float, float]:
    boxes = [c.bbox for c in communities]
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _contains(communities: Sequence[Community], margin_m: float, lat: float, lon: float) -> bool:
    # every community lies inside the bounding box, so the box plus margin decides alone;
    # this runs for every position report, so no polygon tests here
    if not communities:
        return False
    s, w, n, e = _bbox(communities)
    dlat = margin_m / _M_PER_DEG_LAT
    dlon = margin_m / (_M_PER_DEG_LAT * max(math.cos(math.radians((s + n) / 2)), 1e-6))
    return s - dlat <= lat <= n + dlat and w - dlon <= lon <= e + dlon


# --------------------------------------------------------------------------- cross-field checks
#
# They run on plain data (dicts and lists) so that load_district can report them
# even when other parts of the file failed validation.

Loc = tuple[Any, ...]


def _view(d: District) -> dict[str, Any]:
    return {
        "communities": [{"id": c.id} for c in d.communities],
        "cameras": [{"id": c.id, "community": c.community} for c in d.cameras],
        "units": [{"id": u.id, "beat": u.beat, "callsign": u.callsign} for u in d.units],
    }


def _points(d: District) -> list[tuple[Loc, str, Point]]:
    pts: list[tuple[Loc, str, Point]] = [(("center",), "the district centre", d.center)]
    pts += [(("cameras", i, "position"), f"camera {c.id!r}", c.position) for i, c in enumerate(d.cameras)]
    pts += [(("units", i, "home"), f"unit {u.id!r}'s home", u.home) for i, u in enumerate(d.units) if u.home is not None]
    return pts


def config_items(data: Mapping[str, Any], section: str) -> list[tuple[int, Mapping[str, Any]]]:
    """The mappings of a list section of raw config data, with their indexes (anything else is skipped: the model reports it)."""
    seq = data.get(section)
    if not isinstance(seq, list):
        return []
    return [(i, x) for i, x in enumerate(seq) if isinstance(x, Mapping)]


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    listed = ", ".join(sorted(known)[:12]) + (" ..." if len(known) > 12 else "")
    return f" (known: {listed})" if known else " (no communities are defined)"


def _reference_issues(data: Mapping[str, Any], line_of: Callable[[Loc], int | None] | None = None) -> list[tuple[Loc, str]]:
    """Duplicate ids and callsigns, and references to communities that do not exist."""
    out: list[tuple[Loc, str]] = []

    def where(loc: Loc) -> str:
        line = line_of(loc) if line_of else None
        return _loc_str(loc) + (f" (line {line})" if line is not None else "")

    for section, what, key in (
        ("communities", "community id", "id"),
        ("cameras", "camera id", "id"),
        ("units", "unit id", "id"),
        ("units", "callsign", "callsign"),
    ):
        first: dict[Any, int] = {}
        for i, item in config_items(data, section):
            value = item.get(key)
            if not isinstance(value, str):
                continue
            if value in first:
                loc0, loc1 = (section, first[value], key), (section, i, key)
                out.append((loc1, f"{what} {value!r} is used twice: {where(loc0)} and {where(loc1)}"))
            else:
                first[value] = i

    communities = config_items(data, "communities")
    ids = [c.get("id") for _, c in communities]
    if isinstance(data.get("communities"), list) and len(communities) == len(data["communities"]) and all(
        isinstance(x, str) for x in ids
    ):
        known = list(dict.fromkeys(x for x in ids if isinstance(x, str)))
        for section, key, what in (("cameras", "community", "camera"), ("units", "beat", "unit")):
            for i, item in config_items(data, section):
                ref = item.get(key)
                if isinstance(ref, str) and ref not in known:
                    who = item.get("id") if isinstance(item.get("id"), str) else f"{section}[{i}]"
                    out.append(
                        ((section, i, key), f"{what} {who!r} names community {ref!r}, which is not defined{_suggest(ref, known)}")
                    )
    return out


def _geometry_issues(
    communities: Sequence[Community], margin_m: float, points: Sequence[tuple[Loc, str, Point]]
) -> list[tuple[Loc, str]]:
    """Points (centre, cameras, unit homes) that lie outside the district."""
    out: list[tuple[Loc, str]] = []
    if not communities:
        return out
    for loc, what, p in points:
        if not _contains(communities, margin_m, p.lat, p.lon):
            out.append(
                (
                    loc,
                    f"{what} at ({p.lat:.6f}, {p.lon:.6f}) is outside the district "
                    f"(not in any community, and more than {_fmt(margin_m)} m beyond their bounding box)",
                )
            )
    return out


# --------------------------------------------------------------------------- YAML with line numbers


def _loc_str(loc: Loc) -> str:
    s = ""
    for p in loc:
        if isinstance(p, int):
            s += f"[{p}]"
        else:
            s += f".{p}" if s else str(p)
    return s


class YamlDoc:
    """A parsed YAML document's node tree, to turn a pydantic `loc` into (field, line)."""

    def __init__(self, root: yaml.Node | None):
        self.root = root

    def locate(self, loc: Loc) -> tuple[str, int | None]:
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        parts = ""
        for p in loc:
            if p == "[key]":
                continue  # the error is about the key just named; its line is already set
            if isinstance(node, yaml.MappingNode):
                found = None
                for k, v in node.value:
                    if isinstance(k, yaml.ScalarNode) and k.value == str(p):
                        found = (k, v)
                parts += f".{p}" if parts else str(p)
                if found is not None:
                    line = found[0].start_mark.line + 1
                    node = found[1]
                else:
                    node = None
            elif isinstance(node, yaml.SequenceNode):
                if isinstance(p, int) and 0 <= p < len(node.value):
                    parts += f"[{p}]"
                    node = node.value[p]
                    line = node.start_mark.line + 1
                elif p in ("lat", "lon") and len(node.value) == 2:  # a point written as [lat, lon]
                    parts += f".{p}"
                    node = node.value[0 if p == "lat" else 1]
                    line = node.start_mark.line + 1
                else:
                    parts += f"[{p}]" if isinstance(p, int) else f".{p}"
                    node = None
            else:
                parts += f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p))
                node = None
        return parts, line

    def line(self, loc: Loc) -> int | None:
        return self.locate(loc)[1]


def _duplicate_keys(node: yaml.Node | None, path: Loc = ()) -> list[tuple[Loc, int, str]]:
    """Keys written twice in one mapping (YAML keeps the last one silently)."""
    out: list[tuple[Loc, int, str]] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                line = k.start_mark.line + 1
                if k.value in seen:
                    out.append(
                        (path + (k.value,), line, f"key {k.value!r} is written twice (lines {seen[k.value]} and {line}); remove one")
                    )
                else:
                    seen[k.value] = line
                out += _duplicate_keys(v, path + (k.value,))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out += _duplicate_keys(v, path + (i,))
    return out


def _model_at(loc: Loc, root: type[BaseModel]) -> type[BaseModel] | None:
    """The model class under `root` that validates the mapping at `loc`, for listing allowed fields."""
    tp: Any = root
    for p in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            f = tp.model_fields.get(str(p))
            if f is None:
                return None
            tp = f.annotation
            continue
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is tuple and args:
            tp = args[0]
        elif origin is dict and len(args) == 2:
            tp = args[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def config_reason(err: Mapping[str, Any], root: type[BaseModel] | None = None) -> str:
    """A pydantic error as a person reads it: unknown fields with a suggestion, no pydantic jargon.
    `root` is the model the whole file validates against (default District)."""
    kind = err["type"]
    loc = tuple(err["loc"])
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        model = _model_at(loc[:-1], root or District)
        if model is not None:
            allowed = list(model.model_fields)
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (allowed: {', '.join(allowed)})"
            return f"unknown field {name!r}{hint}"
        return f"unknown field {name!r}"
    if kind == "missing":
        return "required field is missing"
    msg = str(err["msg"])
    if loc and loc[-1] == "[key]" and len(loc) >= 2:
        return f"unknown key {str(loc[-2])!r}: {msg[0].lower() + msg[1:]}"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    got = err.get("input")
    if isinstance(got, (str, int, float, bool)) or got is None:
        msg += f" (got {got!r})"
    return msg[0].lower() + msg[1:] if msg[:1].isupper() and not msg[1:2].isupper() else msg


# --------------------------------------------------------------------------- load / check


def read_yaml(path: Path, error: type[ConfigError] = ConfigError, empty_hint: str = "") -> tuple[dict[Any, Any], YamlDoc, list[tuple[Loc, int, str]]]:
    """Read a YAML config file whose top level is a mapping: (data, its node tree, keys written twice).
    Raises `error` naming the file (and the line, for a syntax error) when it cannot be read or parsed."""
    fname = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error([ConfigIssue(fname, None, "", f"file not found ({path.resolve()})")]) from None
    except IsADirectoryError:
        raise error([ConfigIssue(fname, None, "", "is a folder, not a YAML file")]) from None
    except UnicodeDecodeError as e:
        raise error([ConfigIssue(fname, None, "", f"not UTF-8 text ({e.reason} at byte {e.start})")]) from None
    except OSError as e:
        raise error([ConfigIssue(fname, None, "", f"cannot read: {e.strerror or e}")]) from None

    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        dups = _duplicate_keys(root)
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = " ".join(x for x in (e.context, e.problem) if x)
        raise error([ConfigIssue(fname, mark.line + 1 if mark else None, "", f"YAML syntax error: {what}")]) from None
    except yaml.YAMLError as e:
        raise error([ConfigIssue(fname, None, "", f"YAML error: {e}")]) from None
    finally:
        loader.dispose()
    if data is None:
        raise error([ConfigIssue(fname, 1, "", "the file is empty" + (f"; {empty_hint}" if empty_hint else ""))])
    if not isinstance(data, dict):
        raise error([ConfigIssue(fname, root.start_mark.line + 1 if root else 1, "",
                                 f"the top level must be a mapping (key: value), got a {type(data).__name__}")])
    return data, YamlDoc(root), dups


def load_district(path: str | Path) -> District:
    """Read, parse and validate a district YAML; raise ConfigError listing every problem."""
    path = Path(path)
    fname = str(path)
    issues: list[ConfigIssue] = []

    def issue(line: int | None, field: str, reason: str) -> None:
        issues.append(ConfigIssue(fname, line, field, reason))

    data, doc, dups = read_yaml(path, ConfigError, "a district needs name, timezone, center and communities")
    # docker-compose style extension fields (`x-zones: &gate ...`) are for anchors only
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}

    for loc, line, reason in dups:
        issue(line, _loc_str(loc), reason)

    base_dir = path.parent.resolve()
    context = {"base_dir": base_dir, "defer_cross_checks": True}
    district: District | None = None
    try:
        district = District.model_validate(data, context=context)
    except ValidationError as e:
        errors = e.errors()
        # a bad dict key (an unknown incident kind ...) makes the errors under it noise
        bad_keys = [tuple(err["loc"][:-1]) for err in errors if err["loc"] and err["loc"][-1] == "[key]"]
        for err in errors:
            loc = tuple(err["loc"])
            if any(len(loc) > len(k) and loc[: len(k)] == k and loc[-1] != "[key]" for k in bad_keys):
                continue
            field, line = doc.locate(loc)
            issue(line, field, config_reason(err))

    # cross-field checks, on the raw data so they run even when other parts failed
    for loc, reason in _reference_issues(data, doc.line):
        field, line = doc.locate(loc)
        issue(line, field, reason)

    communities, policy = _valid_parts(data)
    if communities is not None:
        margin = policy.district_margin_m if policy is not None else Policy().district_margin_m
        for loc, reason in _geometry_issues(communities, margin, _raw_points(data)):
            field, line = doc.locate(loc)
            issue(line, field, reason)

    graph = None
    raw_streets = data.get("streets")
    if isinstance(raw_streets, Mapping):
        try:
            streets = Streets.model_validate(raw_streets, context=context)
        except ValidationError:
            streets = None  # already reported
        if streets is not None:
            field, line = doc.locate(("streets", "file"))
            try:
                graph = _load_graph(streets.path(base_dir), streets.speeds_kmh)
            except ImportError as e:
                issue(line, field, f"cannot load the street graph: {e}")
            except (ValueError, OSError) as e:  # StreetGraphError is a ValueError
                issue(line, field, f"street file {streets.path(base_dir)} cannot be loaded: {e}")

    if issues:
        issues.sort(key=lambda i: (i.line is None, i.line or 0))
        raise ConfigError(dedupe_issues(issues))
    assert district is not None
    district._source = path.resolve()
    district._graph = graph
    return district


def dedupe_issues(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """The issues in order, each once."""
    seen: set[ConfigIssue] = set()
    out = []
    for i in issues:
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def _valid_parts(data: Mapping[str, Any]) -> tuple[list[Community] | None, Policy | None]:
    """The communities (only if every one is valid) and the policy (if valid), validated on their own."""
    raw = data.get("communities")
    communities: list[Community] | None = None
    if isinstance(raw, list) and raw:
        try:
            communities = [Community.model_validate(c) for c in raw]
        except ValidationError:
            communities = None
    policy: Policy | None
    try:
        policy = Policy.model_validate(data.get("policy") or {})
    except ValidationError:
        policy = None
    return communities, policy


def _raw_points(data: Mapping[str, Any]) -> list[tuple[Loc, str, Point]]:
    out: list[tuple[Loc, str, Point]] = []

    def add(loc: Loc, what: str, raw: Any) -> None:
        if raw is None:
            return
        try:
            out.append((loc, what, _point_adapter.validate_python(raw)))
        except ValidationError:
            pass  # reported by the model

    add(("center",), "the district centre", data.get("center"))
    for section, key, what in (("cameras", "position", "camera"), ("units", "home", "unit")):
        for i, item in config_items(data, section):
            who = item.get("id") if isinstance(item.get("id"), str) else f"{section}[{i}]"
            add((section, i, key), f"{what} {who!r}" + ("'s home" if section == "units" else ""), item.get(key))
    return out


def check_config(path: str | Path) -> list[ConfigIssue]:
    """Every problem in a district file; [] when it is fine."""
    try:
        load_district(path)
    except ConfigError as e:
        return e.issues
    return []
