"""Choosing the unit that can be on scene soonest.

Straight-line distance divided by the fastest speed a mode can reach is a lower
bound on its travel time by road, so units are examined in rings of grid cells
around the incident, nearest first, and a unit's road time is only computed
while its lower bound could still beat the best candidates found so far. The
answer is the exact road-time optimum, found after looking at a handful of
units even among thousands; the straight line is the prefilter, and the
travel-time fallback when no street graph is loaded.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from dispatch.core.records import UnitRec

EARTH_M_PER_DEG = 111_320.0


def straight_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Equirectangular distance in metres: exact enough at district scale and cheap."""
    x = (lon2 - lon1) * math.cos(math.radians((lat1 + lat2) / 2.0))
    y = lat2 - lat1
    return EARTH_M_PER_DEG * math.hypot(x, y)


class UnitGrid:
    """Units with a known position, bucketed in square cells for ring searches."""

    def __init__(self, cell_m: float = 300.0, ref_lat: float = 30.0) -> None:
        self.cell_m = cell_m
        self._dlat = cell_m / EARTH_M_PER_DEG
        self._dlon = cell_m / (EARTH_M_PER_DEG * max(0.1, math.cos(math.radians(ref_lat))))
        self._cells: dict[tuple[int, int], set[str]] = {}
        self._where: dict[str, tuple[int, int]] = {}
        self._lo: list[int] | None = None  # extents ever occupied, bounds the ring search
        self._hi: list[int] | None = None

    def cell(self, lat: float, lon: float) -> tuple[int, int]:
        return (math.floor(lat / self._dlat), math.floor(lon / self._dlon))

    def move(self, unit_id: str, lat: float, lon: float) -> None:
        c = self.cell(lat, lon)
        old = self._where.get(unit_id)
        if old == c:
            return
        if old is not None:
            self._cells[old].discard(unit_id)
        self._cells.setdefault(c, set()).add(unit_id)
        self._where[unit_id] = c
        if self._lo is None or self._hi is None:
            self._lo, self._hi = [c[0], c[1]], [c[0], c[1]]
        else:
            self._lo = [min(self._lo[0], c[0]), min(self._lo[1], c[1])]
            self._hi = [max(self._hi[0], c[0]), max(self._hi[1], c[1])]

    def remove(self, unit_id: str) -> None:
        old = self._where.pop(unit_id, None)
        if old is not None:
            self._cells[old].discard(unit_id)

    def __len__(self) -> int:
        return len(self._where)

    def rings(self, lat: float, lon: float) -> Iterator[tuple[float, list[str]]]:
        """Yield (lower bound in metres on the distance of any unit in the NEXT ring, units of this ring)."""
        if self._lo is None or self._hi is None:
            return
        ci, cj = self.cell(lat, lon)
        max_r = max(abs(ci - self._lo[0]), abs(ci - self._hi[0]), abs(cj - self._lo[1]), abs(cj - self._hi[1]))
        cells = self._cells
        for r in range(max_r + 1):
            found: list[str] = []
            if r == 0:
                found.extend(cells.get((ci, cj), ()))
            else:
                for dj in range(-r, r + 1):
                    found.extend(cells.get((ci - r, cj + dj), ()))
                    found.extend(cells.get((ci + r, cj + dj), ()))
                for di in range(-r + 1, r):
                    found.extend(cells.get((ci + di, cj - r), ()))
                    found.extend(cells.get((ci + di, cj + r), ()))
            yield r * self.cell_m, found


@dataclass(frozen=True)
class Cand:
    unit: str
    eta_s: float
    straight_m: float
    method: str  # "road" or "straight"


@dataclass
class Choice:
    chosen: Cand | None
    candidates: list[Cand] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    examined: int = 0


class Router:
    """Travel times to a place, over the street graph when there is one.

    Keeps unit snaps and lazy per-destination searches so that re-choosing for
    the same incident (after a decline or timeout) costs almost nothing.
    """

    def __init__(self, graph: Any | None, speeds_kmh: dict[str, float], cache_size: int = 512) -> None:
        self.graph = graph
        self.speed_mps = {str(m): v / 3.6 for m, v in speeds_kmh.items()}
        self._vmax = {m: (graph.max_speed_mps(m) if graph is not None else s) for m, s in self.speed_mps.items()}
        self.vmax_any = max(self._vmax.values())
        self._snaps: dict[str, tuple[float, float, int, float]] = {}
        self._searches: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._cache_size = cache_size

    def vmax(self, mode: str) -> float:
        return self._vmax[mode]

    def snap(self, key: str, lat: float, lon: float, mode: str) -> tuple[int, float]:
        """Nearest usable street node for a unit (cached until it moves)."""
        hit = self._snaps.get(key)
        if hit is not None and hit[0] == lat and hit[1] == lon:
            return hit[2], hit[3]
        node, d = self.graph.nearest_node(lat, lon, mode)
        self._snaps[key] = (lat, lon, node, d)
        return node, d

    def search(self, mode: str, target: int) -> Any:
        key = (mode, target)
        s = self._searches.get(key)
        if s is None:
            s = self.graph.search(mode, target)
            self._searches[key] = s
            if len(self._searches) > self._cache_size:
                self._searches.popitem(last=False)
        else:
            self._searches.move_to_end(key)
        return s

    def route(self, unit: UnitRec, lat: float, lon: float) -> tuple[tuple[float, float], ...]:
        """Points from the unit to the place, for the order; straight when there is no graph."""
        if unit.lat is None or unit.lon is None:
            return ()
        if self.graph is None:
            return ((unit.lat, unit.lon), (lat, lon))
        mode = str(unit.mode)
        target, _ = self.graph.nearest_node(lat, lon, mode)
        src, _ = self.snap(unit.id, unit.lat, unit.lon, mode)
        path = self.search(mode, target).path_from(src)
        if not path:
            return ((unit.lat, unit.lon), (lat, lon))
        pts = [(unit.lat, unit.lon)] + [self.graph.coords(n) for n in path] + [(lat, lon)]
        return tuple((round(a, 6), round(b, 6)) for a, b in _thin(pts, 120))


def _thin(pts: list[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    if len(pts) <= limit:
        return pts
    step = (len(pts) - 1) / (limit - 1)
    return [pts[round(i * step)] for i in range(limit)]


def choose(
    grid: UnitGrid,
    units: dict[str, UnitRec],
    router: Router,
    lat: float,
    lon: float,
    why_not: Callable[[UnitRec], str | None],
    want: int = 6,
    skipped_limit: int = 12,
) -> Choice:
    """The unit with the smallest travel time to (lat, lon) among those `why_not` accepts (returns None).

    Returns the best `want` candidates by travel time (exact) and the reasons
    for units seen nearby but ruled out.
    """
    graph = router.graph
    targets: dict[str, tuple[int, float]] = {}  # mode -> (incident node, snap metres)
    heap: list[tuple[float, str, float]] = []  # (lower bound s, unit, straight m)
    found: list[Cand] = []  # sorted by eta
    skipped: list[tuple[str, str]] = []
    examined = 0
    vmax_any = router.vmax_any

    def kth() -> float:
        return found[want - 1].eta_s if len(found) >= want else math.inf

    def evaluate(uid: str, dist: float) -> None:
        u = units[uid]
        mode = str(u.mode)
        speed = router.speed_mps[mode]
        if graph is None:
            cand = Cand(uid, dist / speed, dist, "straight")
        else:
            if mode not in targets:
                targets[mode] = graph.nearest_node(lat, lon, mode)
            tnode, tsnap = targets[mode]
            unode, usnap = router.snap(uid, u.lat, u.lon, mode)
            legs = (usnap + tsnap) / speed
            road = router.search(mode, tnode).time_from(unode, kth() - legs)
            if road is None:
                return  # unreachable, or slower than every candidate kept
            cand = Cand(uid, road + legs, dist, "road")
        found.append(cand)
        found.sort(key=lambda c: (c.eta_s, c.unit))
        del found[want:]

    for next_ring_m, ring_units in grid.rings(lat, lon):
        for uid in ring_units:
            u = units.get(uid)
            if u is None or u.lat is None or u.lon is None:
                continue
            examined += 1
            reason = why_not(u)
            if reason is not None:
                if len(skipped) < skipped_limit:
                    skipped.append((uid, reason))
                continue
            dist = straight_m(lat, lon, u.lat, u.lon)
            heapq.heappush(heap, (dist / router.vmax(str(u.mode)), uid, dist))
        # every unit in later rings is at least next_ring_m away
        ring_bound = next_ring_m / vmax_any
        while heap and heap[0][0] <= ring_bound and heap[0][0] < kth():
            _, uid, dist = heapq.heappop(heap)
            evaluate(uid, dist)
        if ring_bound >= kth():
            break
    while heap and heap[0][0] < kth():
        _, uid, dist = heapq.heappop(heap)
        evaluate(uid, dist)
    return Choice(found[0] if found else None, found, skipped, examined)
