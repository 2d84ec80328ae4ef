"""Street network for travel-time unit selection.

The dispatch engine asks one question many times: "which of these units
reaches this place first over the streets?".  This module answers it with a
per-mode directed graph held in compact arrays and a *lazy* backward Dijkstra
(`StreetGraph.search`) that grows from the incident only as far as the
candidates it is asked about, so a nearby unit costs a few hundred node
expansions even in a 100,000-node city.

Pure Python (stdlib only): no networkx, no numpy, no I/O beyond reading the
street file.

Loading
    `StreetGraph.from_file` picks the reader by suffix: ``.geojson``/``.json``
    (the district street file), ``.osm`` / ``.osm.xml`` (OSM XML) and
    ``.osm.bz2`` (streamed through bz2 + iterparse, never unpacked to disk).
    `StreetGraph.from_edges` builds a graph from plain lists (tests,
    synthetic cities).  Every load error is a `StreetGraphError` whose message
    starts with the file name and says what is wrong and where.

What becomes a street
    Only ways/features with a ``highway`` tag.  Railways, waterways and water
    areas are kept in ``graph.barriers`` for maps; they block travel simply
    because no street crosses them except where a street shares a node with
    them (level crossings) or passes over/under them on its own geometry.
    Skipped: highway=construction/proposed/abandoned/platform/... and area=yes.

Access per mode (class defaults; explicit tags override, see `_mode_rules`)
    ======================  ====  =======  =========  ===
    highway                 foot  bicycle  motorbike  car
    ======================  ====  =======  =========  ===
    motorway(_link)         no    no       yes        yes
    trunk(_link)            no    yes      yes        yes
    primary .. residential  yes   yes      yes        yes
    living_street, service  yes   yes      yes        yes
    track, road             yes   yes      yes        yes
    footway, pedestrian     yes   walk     no         no
    path, cycleway          yes   yes      no         no
    bridleway               yes   yes      no         no
    steps                   yes   no       no         no
    corridor, elevator      yes   no       no         no
    busway, bus_guideway    no    no       no         no
    ======================  ====  =======  =========  ===

    Tags are read from general to specific (foot: access, foot; bicycle:
    access, vehicle, bicycle; motorbike: access, vehicle, motor_vehicle,
    motorcycle; car: access, vehicle, motor_vehicle, motorcar); the most
    specific one present decides.  A value in `DENIED_ACCESS_VALUES` forbids
    the mode; any other value of a *mode* tag (foot=yes, motor_vehicle=
    destination, ...) allows it even on a class that forbids it by default,
    while ``access=yes`` alone never opens a footway to cars.  ``private``
    counts as denied: a gate may be shut, and routing a unit into a private
    compound is worse than routing it round.

One-way
    foot ignores one-way.  Vehicles follow ``oneway=yes|true|1`` (forward),
    ``-1|reverse`` (backward), ``junction=roundabout|circular`` and
    highway=motorway(_link) (implied forward).  Bicycles use
    ``oneway:bicycle`` when present and ride both ways on
    ``cycleway=opposite*``.  ``reversible``/``alternating`` are treated as
    two-way (we cannot know the current direction).

Speed (seconds per edge = haversine length / speed)
    foot: its mode speed everywhere.  bicycle: mode speed, walking speed
    (the foot speed) on footway/pedestrian or with bicycle=dismount.
    car and motorbike: min(mode speed, class cap, numeric ``maxspeed``), with
    class caps in km/h from `MOTOR_CLASS_CAP_KMH` (residential 30,
    living_street/service 20, primary/secondary/tertiary uncapped, ...).
    bicycle is also capped by ``maxspeed``.

Node ids are 0..node_count-1.  ``edge_count`` counts directed street
segments usable by at least one mode (a two-way street segment counts 2, so
does a one-way one, since people walk it both ways); `mode_edge_count` gives
the directed edges one mode may use.
"""

from __future__ import annotations

import bz2
import heapq
import itertools
import json
import math
import random
import re
import xml.etree.ElementTree as ET
from array import array
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "DEFAULT_SPEEDS_KMH",
    "DENIED_ACCESS_VALUES",
    "MODES",
    "MOTOR_CLASS_CAP_KMH",
    "StreetGraph",
    "StreetGraphError",
    "StreetLine",
    "TravelSearch",
    "haversine_m",
    "synthetic_city",
]

MODES = ("foot", "bicycle", "motorbike", "car")
DEFAULT_SPEEDS_KMH = {"foot": 5.0, "bicycle": 15.0, "motorbike": 35.0, "car": 40.0}

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius
_M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0

# Speed caps (km/h) for car and motorbike by highway class; math.inf means
# "only the mode speed (and maxspeed) limits it".  Classes missing here are
# closed to motor vehicles unless a tag opens them (then capped like "road").
MOTOR_CLASS_CAP_KMH: dict[str, float] = {
    "motorway": 100.0,
    "motorway_link": 60.0,
    "trunk": 80.0,
    "trunk_link": 50.0,
    "primary": math.inf,
    "primary_link": 40.0,
    "secondary": math.inf,
    "secondary_link": 40.0,
    "tertiary": math.inf,
    "tertiary_link": 30.0,
    "unclassified": 30.0,
    "residential": 30.0,
    "road": 30.0,
    "living_street": 20.0,
    "service": 20.0,
    "track": 15.0,
}
_OPENED_MOTOR_CAP_KMH = 30.0

DENIED_ACCESS_VALUES = frozenset({"no", "private", "agricultural", "forestry", "military"})

# Classes that are not travelled at all (not built, gone, or areas/stops).
_SKIP_CLASSES = frozenset({
    "construction", "proposed", "abandoned", "platform", "razed", "disused",
    "planned", "demolished", "no", "rest_area", "services", "bus_stop",
})
_FOOT_DENIED = frozenset({
    "motorway", "motorway_link", "trunk", "trunk_link", "busway", "bus_guideway", "raceway",
})
_BICYCLE_DENIED = frozenset({
    "motorway", "motorway_link", "steps", "corridor", "elevator", "busway",
    "bus_guideway", "via_ferrata", "raceway",
})
_BICYCLE_WALK = frozenset({"footway", "pedestrian"})
_KNOWN_CLASSES = frozenset(MOTOR_CLASS_CAP_KMH) | _FOOT_DENIED | _BICYCLE_DENIED | frozenset({
    "footway", "pedestrian", "path", "cycleway", "bridleway", "escape",
})

_ACCESS_KEYS = {
    "foot": ("access", "foot"),
    "bicycle": ("access", "vehicle", "bicycle"),
    "motorbike": ("access", "vehicle", "motor_vehicle", "motorcycle"),
    "car": ("access", "vehicle", "motor_vehicle", "motorcar"),
}
_BARRIER_KEYS = ("railway", "waterway", "natural")
_NOT_BARRIER_RAILWAY = frozenset({
    "abandoned", "razed", "disused", "proposed", "construction", "platform", "station", "halt",
})
_MAXSPEED_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(mph|km/h|kmh|kph)?\s*$", re.IGNORECASE)


try:  # the road search's inner loop in C (dispatch/_search.c), built by pip install when a compiler is there
    from dispatch._search import Heap as _Heap
    from dispatch._search import expand as _expand
    from dispatch._search import nearest as _nearest
except ImportError:  # pragma: no cover - the same loops in Python (TravelSearch._expand, _Grid._nearest)
    _Heap = _expand = _nearest = None


class StreetGraphError(ValueError):
    """A street file or street input is unusable; the message names file and problem."""


class StreetLine(NamedTuple):
    """One street polyline for drawing maps."""

    highway: str
    points: list[tuple[float, float]]  # (lat, lon)
    name: str | None = None
    oneway: str = "no"


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    a = math.sin((p2 - p1) * 0.5) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(
        math.radians(lon2 - lon1) * 0.5
    ) ** 2
    return 2.0 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def _check_speeds(speeds_kmh: Mapping[str, float] | None) -> dict[str, float]:
    speeds = dict(DEFAULT_SPEEDS_KMH)
    if speeds_kmh is None:
        return speeds
    if not isinstance(speeds_kmh, Mapping):
        raise StreetGraphError(f"speeds_kmh: expected a mapping of mode to km/h, got {speeds_kmh!r}")
    for mode, value in speeds_kmh.items():
        if mode not in MODES:
            raise StreetGraphError(f"speeds_kmh: unknown mode {mode!r} (known: {', '.join(MODES)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0
        ):
            raise StreetGraphError(f"speeds_kmh: {mode} speed must be a positive number, got {value!r}")
        speeds[mode] = float(value)
    return speeds


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")


def _parse_maxspeed(value: object) -> float | None:
    """Numeric km/h from an OSM maxspeed value; None for "none", "MX:urban" and the like."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) and value > 0 else None
    # "30;50" lists lane/conditional values: the lowest is the safe reading.
    best = None
    for part in str(value).split(";"):
        m = _MAXSPEED_RE.match(part)
        if m:
            kmh = float(m.group(1)) * (1.609344 if (m.group(2) or "").lower() == "mph" else 1.0)
            if kmh > 0 and (best is None or kmh < best):
                best = kmh
    return best


def _oneway_dir(value: str | None) -> int | None:
    """1 forward only, -1 backward only, 0 both ways, None if not stated."""
    if value is None:
        return None
    v = value.strip().lower()
    if v in ("yes", "true", "1"):
        return 1
    if v in ("-1", "reverse"):
        return -1
    if v in ("no", "false", "0", "reversible", "alternating"):
        return 0
    return None


def _mode_access(mode: str, tags: Mapping[str, str], default: bool) -> bool:
    """Whether the mode may use the way, after the access tag hierarchy."""
    allowed = default
    for key in _ACCESS_KEYS[mode]:
        value = tags.get(key)
        if value is None:
            continue
        if value in DENIED_ACCESS_VALUES:
            allowed = False
        elif key == "access":
            allowed = default  # access=yes keeps class rules, never opens footways to cars
        else:
            allowed = True
    return allowed


def _mode_rules(
    tags: Mapping[str, str], speeds_mps: Mapping[str, float]
) -> dict[str, tuple[bool, bool, float]]:
    """Per allowed mode: (forward allowed, backward allowed, speed m/s)."""
    hw = tags["highway"]
    rules: dict[str, tuple[bool, bool, float]] = {}
    maxspeed = _parse_maxspeed(tags.get("maxspeed"))
    max_mps = maxspeed / 3.6 if maxspeed is not None else math.inf
    general = _oneway_dir(tags.get("oneway"))
    if general is None:
        implied = tags.get("junction") in ("roundabout", "circular") or hw in (
            "motorway", "motorway_link",
        )
        general = 1 if implied else 0

    if _mode_access("foot", tags, hw not in _FOOT_DENIED):
        rules["foot"] = (True, True, speeds_mps["foot"])

    if _mode_access("bicycle", tags, hw not in _BICYCLE_DENIED):
        # On footways cyclists push unless a bicycle tag explicitly lets them ride.
        bicycle = tags.get("bicycle")
        walk = bicycle == "dismount" or (hw in _BICYCLE_WALK and bicycle is None)
        speed = speeds_mps["foot"] if walk else min(speeds_mps["bicycle"], max_mps)
        direction = _oneway_dir(tags.get("oneway:bicycle"))
        if direction is None:
            direction = 0 if str(tags.get("cycleway", "")).startswith("opposite") else general
        rules["bicycle"] = (direction != -1, direction != 1, speed)

    for mode in ("motorbike", "car"):
        cap = MOTOR_CLASS_CAP_KMH.get(hw)
        if _mode_access(mode, tags, cap is not None):
            cap_mps = (cap if cap is not None else _OPENED_MOTOR_CAP_KMH) / 3.6
            speed = min(speeds_mps[mode], cap_mps, max_mps)
            rules[mode] = (general != -1, general != 1, speed)
    return rules


class _Builder:
    """Collects nodes, ways and barriers from any reader, then freezes them into a StreetGraph."""

    def __init__(self, source: str, speeds_kmh: Mapping[str, float] | None, strict: bool) -> None:
        self.source = source
        self.strict = strict  # unknown highway classes are errors in our own files, tolerated in OSM
        self.speeds_kmh = _check_speeds(speeds_kmh)
        self.speeds_mps = {m: v / 3.6 for m, v in self.speeds_kmh.items()}
        self.lat = array("d")
        self.lon = array("d")
        self.osm_ids: list[int] | None = None
        self.lines: list[StreetLine] = []
        self.barriers: list[tuple[str, list[tuple[float, float]]]] = []
        # Per mode: parallel arrays of directed edges src -> dst with seconds.
        self.src = {m: array("l") for m in MODES}
        self.dst = {m: array("l") for m in MODES}
        self.sec = {m: array("d") for m in MODES}
        self.any_edges = 0
        self.max_mps = {m: 0.0 for m in MODES}
        self._rule_cache: dict[tuple, dict[str, tuple[bool, bool, float]]] = {}

    def error(self, where: str, what: str) -> StreetGraphError:
        return StreetGraphError(f"{self.source}: {where}: {what}" if where else f"{self.source}: {what}")

    def add_node(self, lat: float, lon: float) -> int:
        self.lat.append(lat)
        self.lon.append(lon)
        return len(self.lat) - 1

    def add_way(self, nodes: Sequence[int], tags: Mapping[str, str], where: str) -> bool:
        """Adds one street; returns False if the way is skipped (not travelled)."""
        hw = tags.get("highway")
        if _not_travelled(tags):
            return False
        if self.strict and hw not in _KNOWN_CLASSES:
            raise self.error(where, f"unknown highway class {hw!r}")
        key = tuple(sorted(tags.items()))
        rules = self._rule_cache.get(key)
        if rules is None:
            rules = self._rule_cache[key] = _mode_rules(tags, self.speeds_mps)
        lat, lon = self.lat, self.lon
        for mode, (_, _, mps) in rules.items():
            self.max_mps[mode] = max(self.max_mps[mode], mps)
        plan = [(self.src[m], self.dst[m], self.sec[m], fwd, bwd, mps) for m, (fwd, bwd, mps) in rules.items()]
        for a, b in itertools.pairwise(nodes):
            if a == b:
                continue
            length = haversine_m(lat[a], lon[a], lat[b], lon[b])
            any_fwd = any_bwd = False
            for src, dst, sec, fwd, bwd, mps in plan:
                seconds = length / mps
                if fwd:
                    src.append(a)
                    dst.append(b)
                    sec.append(seconds)
                    any_fwd = True
                if bwd:
                    src.append(b)
                    dst.append(a)
                    sec.append(seconds)
                    any_bwd = True
            self.any_edges += any_fwd + any_bwd
        oneway = tags.get("oneway", "no")
        self.lines.append(
            StreetLine(hw, [(lat[n], lon[n]) for n in nodes], tags.get("name"), oneway)
        )
        return True

    def build(self) -> StreetGraph:
        if not self.lines:
            raise self.error("", "no streets (no way or feature with a highway tag)")
        return StreetGraph._from_builder(self)


def _not_travelled(tags: Mapping[str, str]) -> bool:
    return tags.get("highway") in _SKIP_CLASSES or tags.get("area") == "yes"


def _barrier_kind(tags: Mapping[str, object]) -> str | None:
    for key in _BARRIER_KEYS:
        value = tags.get(key)
        if value is None:
            continue
        if key == "railway" and value in _NOT_BARRIER_RAILWAY:
            return None
        if key == "natural" and value not in ("water", "wetland", "coastline"):
            return None
        return f"{key}={value}"
    return None


def _group_by(keys: Sequence[int], groups: int) -> tuple[array, array]:
    """Indices 0..len(keys)-1 grouped by key (a stable counting sort, CSR): the indices with key g are
    order[start[g]:start[g + 1]], in ascending order."""
    start = array("l", [0]) * (groups + 1)
    for g in keys:
        start[g + 1] += 1
    for g in range(groups):
        start[g + 1] += start[g]
    fill = array("l", start[:-1])
    order = array("l", [0]) * len(keys)
    for i, g in enumerate(keys):
        order[fill[g]] = i
        fill[g] += 1
    return start, order


class _Grid:
    """Bucket grid over a local equirectangular projection for nearest-node queries.

    Cells are numbered ix * ny + iy; the nodes of cell c are cell_nodes[cell_start[c]:cell_start[c + 1]],
    in ascending order (arrays, so that the compiled loop reads them as they are)."""

    def __init__(self, lat: array, lon: array) -> None:
        n = len(lat)
        self.lat0 = (min(lat) + max(lat)) / 2 if n else 0.0
        self.lon0 = (min(lon) + max(lon)) / 2 if n else 0.0
        self.kx = _M_PER_DEG * math.cos(math.radians(self.lat0))
        self.ky = _M_PER_DEG
        xs = array("d", [(x - self.lon0) * self.kx for x in lon])
        ys = array("d", [(y - self.lat0) * self.ky for y in lat])
        self.xs, self.ys = xs, ys
        self.x0 = min(xs) if n else 0.0
        self.y0 = min(ys) if n else 0.0
        width = (max(xs) - self.x0) if n else 0.0
        height = (max(ys) - self.y0) if n else 0.0
        # About four nodes per cell on average keeps both empty-cell scans and candidate lists short.
        cell = math.sqrt(max(width * height, 1.0) * 4.0 / max(n, 1))
        self.cell = max(cell, 10.0)
        self.nx = int(width / self.cell) + 1
        self.ny = int(height / self.cell) + 1
        keys = [int((xs[i] - self.x0) / self.cell) * self.ny + int((ys[i] - self.y0) / self.cell) for i in range(n)]
        self.cell_start, self.cell_nodes = _group_by(keys, self.nx * self.ny)

    def nearest(self, lat: float, lon: float, usable: bytearray) -> int | None:
        x = (lon - self.lon0) * self.kx
        y = (lat - self.lat0) * self.ky
        if _nearest is not None:  # the loop below, compiled: the same cells in the same order
            best = _nearest(self.xs, self.ys, self.cell_start, self.cell_nodes, usable, x, y, self.x0, self.y0, self.cell, self.nx, self.ny)
            if best != -2:  # -2: too far away for the compiled loop's integers
                return best if best >= 0 else None
        return self._nearest(x, y, usable)

    def _nearest(self, x: float, y: float, usable: bytearray) -> int | None:
        cell = self.cell
        cx = math.floor((x - self.x0) / cell)
        cy = math.floor((y - self.y0) / cell)
        nx, ny = self.nx, self.ny
        # Rings nearer than the grid's edge hold no cells: a far query starts there.
        r = max(0, -cx, cx - (nx - 1), -cy, cy - (ny - 1))
        r_max = r + max(nx, ny)
        start, nodes, xs, ys = self.cell_start, self.cell_nodes, self.xs, self.ys
        best = -1
        best_d2 = math.inf
        while r <= r_max:
            for ix, iy in self._ring(cx, cy, r):
                c = ix * ny + iy
                for k in range(start[c], start[c + 1]):
                    i = nodes[k]
                    if usable[i]:
                        dx = xs[i] - x
                        dy = ys[i] - y
                        d2 = dx * dx + dy * dy
                        if d2 < best_d2:
                            best_d2 = d2
                            best = i
            # Every point of ring r + 1 lies at least r cells away.
            reach = r * cell
            if best >= 0 and best_d2 <= reach * reach:
                break
            r += 1
        return best if best >= 0 else None

    def _ring(self, cx: int, cy: int, r: int) -> Iterator[tuple[int, int]]:
        """Grid cells at Chebyshev distance r from (cx, cy), clipped to the grid."""
        nx, ny = self.nx, self.ny
        if r == 0:
            if 0 <= cx < nx and 0 <= cy < ny:
                yield cx, cy
            return
        x_lo, x_hi = max(cx - r, 0), min(cx + r, nx - 1)
        for iy in (cy - r, cy + r):
            if 0 <= iy < ny:
                for ix in range(x_lo, x_hi + 1):
                    yield ix, iy
        y_lo, y_hi = max(cy - r + 1, 0), min(cy + r - 1, ny - 1)
        for ix in (cx - r, cx + r):
            if 0 <= ix < nx:
                for iy in range(y_lo, y_hi + 1):
                    yield ix, iy


class StreetGraph:
    """Directed per-mode street graph with fast nearest-node and lazy travel-time search."""

    node_count: int
    edge_count: int
    lines: list[StreetLine]
    barriers: list[tuple[str, list[tuple[float, float]]]]
    bounds: tuple[float, float, float, float]
    speeds_kmh: dict[str, float]
    osm_ids: list[int] | None
    source: str

    def __init__(self) -> None:  # use the from_* constructors
        raise TypeError("use StreetGraph.from_file / from_geojson / from_osm / from_edges")

    # ------------------------------------------------------------------ building
    @classmethod
    def _from_builder(cls, b: _Builder) -> StreetGraph:
        g = object.__new__(cls)
        n = len(b.lat)
        g.source = b.source
        g.node_count = n
        g.edge_count = b.any_edges
        g.speeds_kmh = dict(b.speeds_kmh)
        g.lines = b.lines
        g.barriers = b.barriers
        g.osm_ids = b.osm_ids
        g._lat = b.lat
        g._lon = b.lon
        g.bounds = (min(b.lat), min(b.lon), max(b.lat), max(b.lon))
        g._max_mps = {m: (b.max_mps[m] or b.speeds_mps[m]) for m in MODES}
        g._rev = {}
        g._usable = {}
        any_usable = bytearray(n)
        for mode in MODES:
            src, dst, sec = b.src[mode], b.dst[mode], b.sec[mode]
            # Reversed CSR (edges grouped by head): the search walks from the target backwards along
            # incoming edges.
            start, order = _group_by(dst, n)
            nbr = array("l", [src[k] for k in order])
            rsec = array("d", [sec[k] for k in order])
            usable = bytearray(n)
            for v in src:
                usable[v] = 1
            for v in dst:
                usable[v] = 1
            for i, flag in enumerate(usable):
                if flag:
                    any_usable[i] = 1
            g._rev[mode] = (start, nbr, rsec)
            g._usable[mode] = usable
        g._usable[None] = any_usable
        g._grid = _Grid(b.lat, b.lon)
        g._osm_index = None
        return g

    @classmethod
    def from_file(cls, path: str | Path, speeds_kmh: Mapping[str, float] | None = None) -> StreetGraph:
        """Load by suffix: .geojson/.json, .osm/.osm.xml, .osm.bz2."""
        name = Path(path).name.lower()
        if name.endswith((".geojson", ".json")):
            return cls.from_geojson(path, speeds_kmh)
        if name.endswith((".osm", ".osm.xml", ".osm.bz2")):
            return cls.from_osm(path, speeds_kmh)
        raise StreetGraphError(
            f"{Path(path).name}: unknown street file type (expected .geojson, .json, .osm or .osm.bz2)"
        )

    @classmethod
    def from_edges(
        cls,
        coords: Sequence[tuple[float, float]],
        ways: Sequence[tuple],
        speeds_kmh: Mapping[str, float] | None = None,
        barriers: Sequence[tuple[str, Sequence[tuple[float, float]]]] = (),
    ) -> StreetGraph:
        """Graph from (lat, lon) coords and ways ``(node indices, highway, oneway[, extra tags])``.

        oneway is "yes", "no", "-1" or a bool; the optional fourth item is a
        dict of further OSM tags (maxspeed, access, foot, name, ...).  Node i
        of the graph is coords[i].  barriers are (kind, (lat, lon) polyline)
        pairs kept for maps only.
        """
        b = _Builder("from_edges", speeds_kmh, strict=True)
        for i, c in enumerate(coords):
            lat, lon = _check_latlon(b, f"coords[{i}]", c)
            b.add_node(lat, lon)
        n = len(coords)
        for w, way in enumerate(ways):
            where = f"ways[{w}]"
            if not isinstance(way, (tuple, list)) or len(way) not in (3, 4):
                raise b.error(where, "expected (node indices, highway, oneway[, tags])")
            nodes, hw, oneway = way[0], way[1], way[2]
            extra = way[3] if len(way) == 4 else {}
            if not isinstance(hw, str) or not hw:
                raise b.error(where, f"highway must be a non-empty string, got {hw!r}")
            if not isinstance(extra, Mapping):
                raise b.error(where, f"tags must be a dict, got {extra!r}")
            if not isinstance(nodes, (list, tuple)) or len(nodes) < 2:
                raise b.error(where, "a way needs at least 2 nodes")
            for v in nodes:
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
                    raise b.error(where, f"node index {v!r} out of range 0..{n - 1}")
            tags = {str(k): str(v) for k, v in extra.items()}
            tags["highway"] = hw
            tags["oneway"] = _check_oneway(b, where, oneway)
            b.add_way(list(nodes), tags, where)
        for kind, line in barriers:
            b.barriers.append((kind, [(float(la), float(lo)) for la, lo in line]))
        return b.build()

    @classmethod
    def from_geojson(cls, path: str | Path, speeds_kmh: Mapping[str, float] | None = None) -> StreetGraph:
        """District street file: FeatureCollection of LineString/MultiLineString streets.

        Lines connect where they share a coordinate (rounded to 7 decimals).
        Features without ``highway`` are barriers (railway, waterway, water)
        kept for maps.  Errors name the feature by its index in ``features``.
        """
        path = Path(path)
        b = _Builder(path.name, speeds_kmh, strict=True)
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except FileNotFoundError:
            raise b.error("", "file not found") from None
        except json.JSONDecodeError as exc:
            raise b.error("", f"not valid JSON: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise b.error("", f"cannot read: {exc}") from None
        if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
            raise b.error("", "expected a GeoJSON FeatureCollection")
        features = doc.get("features")
        if not isinstance(features, list):
            raise b.error("", "FeatureCollection has no 'features' list")
        index: dict[tuple[float, float], int] = {}

        def node_for(where: str, pos: object) -> int:
            lat, lon = _check_lonlat(b, where, pos)
            key = (round(lon, 7), round(lat, 7))
            node = index.get(key)
            if node is None:
                node = index[key] = b.add_node(lat, lon)
            return node

        for f, feat in enumerate(features):
            where = f"feature {f}"
            if not isinstance(feat, dict) or feat.get("type") != "Feature":
                raise b.error(where, "not a GeoJSON Feature")
            props = feat.get("properties") or {}
            if not isinstance(props, dict):
                raise b.error(where, "properties must be an object")
            label = props.get("name") or feat.get("id")
            if label is not None:
                where = f"{where} ({label})"
            geom = feat.get("geometry")
            if not isinstance(geom, dict) or "type" not in geom:
                raise b.error(where, "missing geometry")
            gtype = geom["type"]
            coords = geom.get("coordinates")
            hw = props.get("highway")
            if hw is None:
                kind = _barrier_kind(props)
                if kind is not None:
                    for part in _lines_of(b, where, gtype, coords, polygons=True):
                        b.barriers.append((kind, [_check_lonlat(b, where, p) for p in part]))
                continue
            if not isinstance(hw, str) or not hw:
                raise b.error(where, f"highway must be a non-empty string, got {hw!r}")
            tags = {k: _tag_str(v) for k, v in props.items() if v is not None and k != "oneway"}
            if _not_travelled(tags) or gtype in ("Point", "MultiPoint", "Polygon", "MultiPolygon"):
                continue  # not built, gone, or points (signals) and areas (squares)
            if props.get("oneway") is not None:  # absent: roundabouts and motorways imply one-way
                tags["oneway"] = _check_oneway(b, where, props["oneway"])
            maxspeed = props.get("maxspeed")
            if maxspeed is not None and _parse_maxspeed(maxspeed) is None:
                raise b.error(where, f"maxspeed must be a positive km/h number, got {maxspeed!r}")
            for part in _lines_of(b, where, gtype, coords, polygons=False):
                b.add_way([node_for(where, p) for p in part], tags, where)
        return b.build()

    @classmethod
    def from_osm(cls, path: str | Path, speeds_kmh: Mapping[str, float] | None = None) -> StreetGraph:
        """OSM XML, plain or .bz2, streamed with iterparse (nodes must precede ways, as in OSM dumps).

        Graph nodes are the OSM nodes used by street ways; segments whose
        nodes are missing from the extract are dropped.  ``osm_ids[i]`` is the
        OSM id of node i.
        """
        path = Path(path)
        b = _Builder(path.name, speeds_kmh, strict=False)
        b.osm_ids = []
        osm_pos: dict[int, tuple[float, float]] = {}
        graph_id: dict[int, int] = {}

        def node_for(ref: int) -> int:
            node = graph_id.get(ref)
            if node is None:
                lat, lon = osm_pos[ref]
                node = graph_id[ref] = b.add_node(lat, lon)
                b.osm_ids.append(ref)
            return node

        opener = bz2.open if path.name.lower().endswith(".bz2") else open
        try:
            with opener(path, "rb") as fh:
                context = ET.iterparse(fh, events=("start", "end"))
                _, root = next(context)
                if root.tag != "osm":
                    raise b.error("", f"not an OSM XML file (root element <{root.tag}>)")
                for event, el in context:
                    if event != "end":
                        continue
                    tag = el.tag
                    if tag == "node":
                        _osm_node(b, el, osm_pos)
                    elif tag == "way":
                        _osm_way(b, el, osm_pos, node_for)
                    elif tag not in ("relation", "bounds"):
                        continue  # <nd>/<tag> inside an element still being read
                    root.clear()  # drop finished elements: memory stays flat on big extracts
        except ET.ParseError as exc:
            raise b.error("", f"bad XML: {exc}") from None
        except FileNotFoundError:
            raise b.error("", "file not found") from None
        except (OSError, EOFError) as exc:
            raise b.error("", f"cannot read: {exc}") from None
        return b.build()

    # ------------------------------------------------------------------ queries
    def __repr__(self) -> str:
        return f"<StreetGraph {self.source}: {self.node_count} nodes, {self.edge_count} directed edges>"

    def coords(self, node: int) -> tuple[float, float]:
        """(lat, lon) of a node."""
        return (self._lat[node], self._lon[node])

    def node_for_osm_id(self, osm_id: int) -> int | None:
        """Graph node of an OSM node id (graphs loaded from OSM only)."""
        if self.osm_ids is None:
            return None
        if self._osm_index is None:
            self._osm_index = {o: i for i, o in enumerate(self.osm_ids)}
        return self._osm_index.get(int(osm_id))

    def is_usable(self, node: int, mode: str | None = None) -> bool:
        """True if the node has at least one edge for the mode (any mode if None)."""
        if mode is not None:
            _check_mode(mode)
        return bool(self._usable[mode][node])

    def mode_edge_count(self, mode: str) -> int:
        """Directed edges the mode may use."""
        _check_mode(mode)
        return len(self._rev[mode][1])

    def edges(self, mode: str) -> Iterator[tuple[int, int, float]]:
        """Directed edges (from, to, seconds) of a mode, for checks and exports."""
        _check_mode(mode)
        start, nbr, sec = self._rev[mode]
        for v in range(self.node_count):
            for k in range(start[v], start[v + 1]):
                yield nbr[k], v, sec[k]

    def max_speed_mps(self, mode: str) -> float:
        """Fastest speed any edge allows the mode: straight distance / this never overestimates."""
        _check_mode(mode)
        return self._max_mps[mode]

    def nearest_node(self, lat: float, lon: float, mode: str | None = None) -> tuple[int, float]:
        """Nearest node having an edge for the mode (any mode if None) and its distance in metres.

        Candidates are ranked in a local flat projection (exact to well under a
        millimetre at district scale); the distance returned is haversine.
        """
        if mode is not None:
            _check_mode(mode)
        if not (math.isfinite(lat) and math.isfinite(lon)):
            raise ValueError(f"bad position ({lat}, {lon})")
        node = self._grid.nearest(lat, lon, self._usable[mode])
        if node is None:
            raise StreetGraphError(f"{self.source}: no node usable by {mode or 'any mode'}")
        return node, haversine_m(lat, lon, self._lat[node], self._lon[node])

    def same_nodes_as(self, mode: str) -> str:
        """The first mode (in MODES order) that may use exactly the nodes this mode may use: their
        nearest-node answers are the same, so one can stand for the other."""
        known: dict[str, str] = self.__dict__.setdefault("_same_nodes", {})
        rep = known.get(mode)
        if rep is None:
            _check_mode(mode)
            mine = self._usable[mode]
            rep = known[mode] = next(m for m in MODES if self._usable[m] == mine)
        return rep

    def search(self, mode: str, target: int) -> TravelSearch:
        """Lazy travel times from every node to target for the mode."""
        return TravelSearch(self, mode, target)

    def _check_node(self, node: int, what: str = "node") -> None:
        if isinstance(node, bool) or not isinstance(node, int) or not 0 <= node < self.node_count:
            raise ValueError(f"{what} {node!r} out of range 0..{self.node_count - 1}")

    def shortest_time(self, mode: str, source: int, target: int) -> float | None:
        """Seconds from source to target, None if unreachable."""
        self._check_node(source, "source")
        return self.search(mode, target).time_from(source)

    def route(self, mode: str, source: int, target: int) -> list[tuple[float, float]] | None:
        """(lat, lon) points of the fastest path source -> target, None if unreachable."""
        self._check_node(source, "source")
        path = self.search(mode, target).path_from(source)
        return None if path is None else [self.coords(v) for v in path]


class TravelSearch:
    """Backward Dijkstra from one target, expanded only as far as the questions asked need.

    Not thread-safe: one search belongs to one decision.
    """

    def __init__(self, graph: StreetGraph, mode: str, target: int) -> None:
        _check_mode(mode)
        graph._check_node(target, "target")
        self.graph = graph
        self.mode = mode
        self.target = target
        self._n = graph.node_count
        self._start, self._nbr, self._sec = graph._rev[mode]
        self._best: dict[int, float] = {target: 0.0}  # tentative, final once in _done
        self._done: dict[int, float] = {}
        self._next: dict[int, int] = {}  # next hop towards the target
        self._heap: Any  # (seconds, node) not settled yet: the compiled loop's Heap, else a heapq list
        if _Heap is not None:
            self._heap = _Heap()
            self._heap.push(0.0, target)
        else:
            self._heap = [(0.0, target)]

    @property
    def settled_count(self) -> int:
        """Nodes whose time is final so far (a measure of the work done)."""
        return len(self._done)

    def settled_time(self, node: int) -> float | None:
        """The node's final time if the search has reached it already (costs no search)."""
        return self._done.get(node)

    @property
    def frontier_s(self) -> float:
        """Every node not settled yet is at least this far from the target; inf once the search is exhausted."""
        if type(self._heap) is not list:
            return self._heap.min()
        return self._heap[0][0] if self._heap else math.inf

    def time_from(self, node: int, bound_s: float = math.inf) -> float | None:
        """Seconds from node to the target; None if unreachable or longer than bound_s."""
        done = self._done
        t = done.get(node)
        if t is not None:
            return t if t <= bound_s else None
        if isinstance(node, bool) or not isinstance(node, int) or not 0 <= node < self._n:
            raise ValueError(f"node {node!r} out of range 0..{self._n - 1}")
        if type(self._heap) is not list:  # the compiled heap: the loop below, compiled, on the same dicts
            return _expand(self._heap, self._best, done, self._next, self._start, self._nbr, self._sec, node, bound_s)
        return self._expand(node, bound_s)

    def _expand(self, node: int, bound_s: float) -> float | None:
        """Settle nodes until node is (its time) or the next one is further than bound_s (None)."""
        done = self._done
        heap, best, nxt = self._heap, self._best, self._next
        start, nbr, sec = self._start, self._nbr, self._sec
        pop, push = heapq.heappop, heapq.heappush
        inf = math.inf
        while heap:
            d, u = pop(heap)
            if d > bound_s:
                push(heap, (d, u))  # keep it for a later, wider question
                return None
            if u in done:
                continue
            done[u] = d
            for k in range(start[u], start[u + 1]):
                v = nbr[k]
                nd = d + sec[k]
                if nd < best.get(v, inf):
                    best[v] = nd
                    nxt[v] = u
                    push(heap, (nd, v))
            if u == node:
                return d
        return None

    def path_from(self, node: int) -> list[int] | None:
        """Node sequence node -> target along the fastest path, None if unreachable."""
        if self.time_from(node) is None:
            return None
        path = [node]
        nxt = self._next
        target = self.target
        while path[-1] != target:
            path.append(nxt[path[-1]])
        return path


# ---------------------------------------------------------------------- readers' helpers
def _tag_str(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _check_oneway(b: _Builder, where: str, value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and _oneway_dir(value) is not None:
        return value.strip().lower()
    raise b.error(where, f"oneway must be 'yes', 'no', '-1' or a boolean, got {value!r}")


def _check_latlon(b: _Builder, where: str, c: object) -> tuple[float, float]:
    if not isinstance(c, (tuple, list)) or len(c) != 2:
        raise b.error(where, f"expected (lat, lon), got {c!r}")
    return _check_range(b, where, c[0], c[1])


def _check_lonlat(b: _Builder, where: str, pos: object) -> tuple[float, float]:
    # GeoJSON positions are [lon, lat] (optionally with altitude).
    if not isinstance(pos, (list, tuple)) or len(pos) < 2:
        raise b.error(where, f"position must be [lon, lat], got {pos!r}")
    return _check_range(b, where, pos[1], pos[0])


def _check_range(b: _Builder, where: str, lat: object, lon: object) -> tuple[float, float]:
    for v in (lat, lon):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise b.error(where, f"coordinate must be a finite number, got {v!r}")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise b.error(where, f"lat/lon out of range ({lat}, {lon}); GeoJSON order is [lon, lat]")
    return float(lat), float(lon)


def _lines_of(b: _Builder, where: str, gtype: str, coords: object, polygons: bool) -> list[list]:
    """The point lists of a (Multi)LineString, or of (Multi)Polygon rings when polygons is set."""
    if gtype == "LineString":
        parts = [coords]
    elif gtype == "MultiLineString" or (polygons and gtype == "Polygon"):
        parts = coords if isinstance(coords, list) else None
    elif polygons and gtype == "MultiPolygon":
        ok = isinstance(coords, list) and all(isinstance(poly, list) for poly in coords)
        parts = [ring for poly in coords for ring in poly] if ok else None
    elif polygons and gtype in ("Point", "MultiPoint"):
        return []
    else:
        raise b.error(where, f"geometry must be LineString or MultiLineString, got {gtype!r}")
    if parts is None:
        raise b.error(where, f"{gtype} coordinates must be a list")
    for part in parts:
        if not isinstance(part, list) or len(part) < 2:
            raise b.error(where, f"{gtype if gtype != 'MultiLineString' else 'each line'} needs at least 2 points")
    return parts


def _osm_node(b: _Builder, el: ET.Element, osm_pos: dict[int, tuple[float, float]]) -> None:
    nid = el.get("id")
    if el.get("visible") == "false" or el.get("action") == "delete":
        return  # deleted nodes in history/change files carry no position
    try:
        lat = float(el.get("lat"))
        lon = float(el.get("lon"))
        key = int(nid)
    except (TypeError, ValueError):
        raise b.error(f"node {nid}", "missing or bad id/lat/lon") from None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise b.error(f"node {nid}", f"lat/lon out of range ({lat}, {lon})")
    osm_pos[key] = (lat, lon)


def _osm_way(b: _Builder, el: ET.Element, osm_pos: dict[int, tuple[float, float]], node_for) -> None:
    tags = {t.get("k"): t.get("v") for t in el.iter("tag")}
    where = f"way {el.get('id')}"
    try:
        refs = [int(nd.get("ref")) for nd in el.iter("nd")]
    except (TypeError, ValueError):
        raise b.error(where, "node reference without a numeric ref") from None
    if "highway" not in tags:
        kind = _barrier_kind(tags)
        if kind is not None:
            line = [osm_pos[r] for r in refs if r in osm_pos]
            if len(line) >= 2:
                b.barriers.append((kind, line))
        return
    if _not_travelled(tags):
        return
    # Extracts cut ways at the border: keep each run of nodes we know.
    run: list[int] = []
    for r in refs + [None]:
        if r is not None and r in osm_pos:
            run.append(r)
            continue
        if len(run) >= 2:
            b.add_way([node_for(x) for x in run], tags, where)
        run = []


# ---------------------------------------------------------------------- synthetic city
def synthetic_city(n_nodes: int, seed: int = 0, center: tuple[float, float] = (30.20, 114.90)) -> StreetGraph:
    """A jittered-grid city of about n_nodes nodes for benchmarks and tests.

    100 m blocks; every 8th street primary, every 4th secondary, the rest
    residential with a third of them one-way (alternating direction), ~4% of
    residential links missing, ~2% footway-only, and an east-west river
    across the middle crossed only by the bridges of every 16th north-south
    street (plus footbridges half-way between).
    """
    if n_nodes < 4:
        raise ValueError("synthetic_city needs at least 4 nodes")
    rng = random.Random(seed)
    cols = max(2, round(math.sqrt(n_nodes)))
    rows = max(2, math.ceil(n_nodes / cols))
    block = 100.0
    lat0, lon0 = center
    ky = _M_PER_DEG
    kx = _M_PER_DEG * math.cos(math.radians(lat0))
    half_w, half_h = (cols - 1) * block / 2, (rows - 1) * block / 2
    coords = []
    for r in range(rows):
        for c in range(cols):
            x = c * block - half_w + rng.uniform(-15, 15)
            y = r * block - half_h + rng.uniform(-15, 15)
            coords.append((lat0 + y / ky, lon0 + x / kx))
    river = rows // 2 - 1  # the river runs between row `river` and `river + 1`

    def street_class(i: int) -> str:
        return "primary" if i % 8 == 0 else "secondary" if i % 4 == 0 else "residential"

    def oneway_of(i: int, cls: str) -> str:
        if cls == "residential" and i % 3 == 1:
            return "yes" if i % 2 else "-1"
        return "no"

    ways: list[tuple[list[int], str, str]] = []

    def emit(seq: list[int], cls: str, oneway: str) -> None:
        # Split a street into runs: missing links cut it, footway links become their own ways.
        run: list[int] = [seq[0]]
        for a, b in itertools.pairwise(seq):
            kind = cls
            if cls == "residential" and oneway == "no":
                roll = rng.random()
                kind = None if roll < 0.04 else "footway" if roll < 0.06 else cls
            if kind == cls:
                run.append(b)
                continue
            if len(run) >= 2:
                ways.append((run, cls, oneway))
            if kind == "footway":
                ways.append(([a, b], "footway", "no"))
            run = [b]
        if len(run) >= 2:
            ways.append((run, cls, oneway))

    for r in range(rows):
        cls = street_class(r)
        emit([r * cols + c for c in range(cols)], cls, oneway_of(r, cls))
    for c in range(cols):
        cls = street_class(c)
        column = [r * cols + c for r in range(rows)]
        if rows >= 4:
            south, north = column[: river + 1], column[river + 1:]
            emit(south, cls, oneway_of(c, cls))
            emit(north, cls, oneway_of(c, cls))
            if c % 16 == 8:
                ways.append(([south[-1], north[0]], "primary", "no"))
            elif c % 16 == 0:
                ways.append(([south[-1], north[0]], "footway", "no"))
        else:
            emit(column, cls, oneway_of(c, cls))
    y_river = (river + 0.5) * block - half_h
    river_line = [
        (lat0 + (y_river + 20 * math.sin(x / 300.0)) / ky, lon0 + x / kx)
        for x in [-half_w - 50 + i * 50 for i in range(int((2 * half_w + 100) / 50) + 1)]
    ]
    return StreetGraph.from_edges(coords, ways, barriers=[("waterway=river", river_line)])
