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
REFINE_GROWTH = 1.1  # each refinement of a unit's bound searches at least this factor further
REFINE_MIN_S = 2.0  # and at least this many seconds further
SEARCH_CACHE_MIN = 512  # road searches kept (per mode and target node), at least
SEARCH_CACHE_MAX = 4096  # every (mode, target) pair of a graph with at most this many pairs
SEARCH_CACHE_NODES = 300_000  # nodes settled across the kept searches (~50 MB), checked now and then
SEARCH_CACHE_CHECK_EVERY = 256  # searches asked (kept or new) between two checks of that budget
_STRIDE = 1 << 32  # cell (i, j) -> i * _STRIDE + j, one int per cell; unique while |j| < 2**31 cells


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
        # a cell (i, j) is kept under the one integer i * _STRIDE + j: the ring walk looks up a few hundred
        # cells per choice, and an int key needs no tuple built and hashed (neighbours are key +- 1, +- _STRIDE)
        self._cells: dict[int, set[str]] = {}
        self._where: dict[str, int] = {}
        self._lo: list[int] | None = None  # extents ever occupied, bounds the ring search
        self._hi: list[int] | None = None

    def cell(self, lat: float, lon: float) -> tuple[int, int]:
        return (math.floor(lat / self._dlat), math.floor(lon / self._dlon))

    def move(self, unit_id: str, lat: float, lon: float) -> None:
        c = self.cell(lat, lon)
        key = c[0] * _STRIDE + c[1]
        old = self._where.get(unit_id)
        if old == key:
            return
        if old is not None:
            self._cells[old].discard(unit_id)
        self._cells.setdefault(key, set()).add(unit_id)
        self._where[unit_id] = key
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

    def units_in_cell(self, lat: float, lon: float) -> set[str]:
        ci, cj = self.cell(lat, lon)
        return self._cells.get(ci * _STRIDE + cj, set())

    def rings(self, lat: float, lon: float) -> Iterator[tuple[float, list[str]]]:
        """Yield (lower bound in metres on the distance of any unit in the NEXT ring, units of this ring)."""
        if self._lo is None or self._hi is None:
            return
        ci, cj = self.cell(lat, lon)
        max_r = max(abs(ci - self._lo[0]), abs(ci - self._hi[0]), abs(cj - self._lo[1]), abs(cj - self._hi[1]))
        get = self._cells.get
        centre = ci * _STRIDE + cj
        for r in range(max_r + 1):
            found: list[str] = []
            if r == 0:
                c = get(centre)
                if c:
                    found.extend(c)
            else:
                # the cells in the same order as ever: rows ci - r and ci + r (j from cj - r up), then
                # columns cj - r and cj + r (i from ci - r + 1 up); an empty cell adds nothing. The two
                # loops are written out: one loop over a list of the keys made the walk 40 % slower
                top, bottom = centre - r * _STRIDE, centre + r * _STRIDE
                for dj in range(-r, r + 1):
                    c = get(top + dj)
                    if c:
                        found.extend(c)
                    c = get(bottom + dj)
                    if c:
                        found.extend(c)
                left, right = centre - r, centre + r
                for di in range(-r + 1, r):
                    k = di * _STRIDE
                    c = get(left + k)
                    if c:
                        found.extend(c)
                    c = get(right + k)
                    if c:
                        found.extend(c)
            yield r * self.cell_m, found


class ModeGrids:
    """Units bucketed per travel mode, each mode in its own grid: the ring walk for a slow mode stops
    much nearer the incident than the one for cars (its units cannot be fast from afar)."""

    def __init__(self, cell_m: float = 300.0, ref_lat: float = 30.0) -> None:
        self.cell_m = cell_m
        self.ref_lat = ref_lat
        self.grids: dict[str, UnitGrid] = {}
        self._mode_of: dict[str, str] = {}

    def move(self, unit_id: str, lat: float, lon: float, mode: str) -> None:
        old = self._mode_of.get(unit_id)
        if old is not None and old != mode:
            self.grids[old].remove(unit_id)
        g = self.grids.get(mode)
        if g is None:
            g = self.grids[mode] = UnitGrid(self.cell_m, self.ref_lat)
        g.move(unit_id, lat, lon)
        self._mode_of[unit_id] = mode

    def remove(self, unit_id: str) -> None:
        mode = self._mode_of.pop(unit_id, None)
        if mode is not None:
            self.grids[mode].remove(unit_id)

    def __len__(self) -> int:
        return len(self._mode_of)


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

    def __init__(self, graph: Any | None, speeds_kmh: dict[str, float], cache_size: int | None = None) -> None:
        self.graph = graph
        self.speed_mps = {str(m): v / 3.6 for m, v in speeds_kmh.items()}
        self._vmax = {m: (graph.max_speed_mps(m) if graph is not None else s) for m, s in self.speed_mps.items()}
        self.vmax_any = max(self._vmax.values())
        self._snaps: dict[str, tuple[float, float, int, float]] = {}
        self._searches: OrderedDict[tuple[str, int], Any] = OrderedDict()
        if cache_size is None:
            # A search is the same whenever it is asked again, only further along: on a district's graph
            # (Tieshan: 724 nodes, 4 modes) every (mode, target) pair fits, and a new alert's place mostly
            # reuses searches earlier alerts near it began (choosing a unit: a third less time than with
            # 512, the same answers). Big graphs keep the minimum, and the settled-node budget holds
            # either way.
            pairs = len(self.speed_mps) * (graph.node_count if graph is not None else 0)
            cache_size = max(SEARCH_CACHE_MIN, pairs) if pairs <= SEARCH_CACHE_MAX else SEARCH_CACHE_MIN
        self._cache_size = cache_size
        self._new_searches = 0
        # settled nodes across the kept searches as last counted, per search and in all; searches handed
        # out since (they may have grown)
        self._settled_seen: dict[tuple[str, int], int] = {}
        self._settled_total = 0
        self._touched: set[tuple[str, int]] = set()
        self._targets: dict[tuple[float, float, str], tuple[int, float]] = {}

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

    def target(self, lat: float, lon: float, mode: str) -> tuple[int, float]:
        """Nearest usable street node to an incident place for a mode, and its distance (remembered for
        the last few places: choosing asks once per mode, the route once more; modes that may use the
        same nodes share the answer)."""
        key = (lat, lon, self.graph.same_nodes_as(mode))
        hit = self._targets.get(key)
        if hit is None:
            hit = self._targets[key] = self.graph.nearest_node(lat, lon, mode)
            if len(self._targets) > 64:
                del self._targets[next(iter(self._targets))]
        return hit

    def search(self, mode: str, target: int) -> Any:
        key = (mode, target)
        s = self._searches.get(key)
        if s is None:
            s = self.graph.search(mode, target)
            self._searches[key] = s
            if len(self._searches) > self._cache_size:
                old, _ = self._searches.popitem(last=False)
                self._settled_total -= self._settled_seen.pop(old, 0)
                self._touched.discard(old)
        else:
            self._searches.move_to_end(key)
        self._touched.add(key)  # it may grow from now on: counted again at the next check
        # checked on hits too: once every pair of a small graph is kept there are no more misses, but the
        # kept searches still grow as they are asked further
        self._new_searches += 1
        if self._new_searches % SEARCH_CACHE_CHECK_EVERY == 0:
            self._trim()
        return s

    def _trim(self) -> None:
        """Searches grow as they are asked further: drop the least recently used ones while the kept
        searches hold more than SEARCH_CACHE_NODES settled nodes (a cost of memory only). Only the searches
        handed out since the last check can have grown, so only they are counted again (summing every
        kept search, up to 4,096, was a few per cent of a saturated engine)."""
        seen, searches = self._settled_seen, self._searches
        for key in self._touched:
            x = searches.get(key)
            if x is not None:
                n = getattr(x, "settled_count", 0)
                self._settled_total += n - seen.get(key, 0)
                seen[key] = n
        self._touched.clear()
        while self._settled_total > SEARCH_CACHE_NODES and len(searches) > 1:
            old, _ = searches.popitem(last=False)
            self._settled_total -= seen.pop(old, 0)

    def route(self, unit: UnitRec, lat: float, lon: float) -> tuple[tuple[float, float], ...]:
        """Points from the unit to the place, for the order; straight when there is no graph."""
        if unit.lat is None or unit.lon is None:
            return ()
        if self.graph is None:
            return ((unit.lat, unit.lon), (lat, lon))
        mode = str(unit.mode)
        target, _ = self.target(lat, lon, mode)
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
    grid: UnitGrid | ModeGrids,
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

    Every unit waits in one queue under a lower bound on its travel time: first
    the straight line at the mode's top speed, then what the road search has
    proved ("not within t seconds"). The unit at the head is refined: its road
    time is searched only as far as the next unit's bound, so the searches never
    go further than the `want`-th best travel time needs. A unit whose exact time
    reaches the head is the next best; rings of grid cells are walked outward
    only while a unit in the next ring could still come first.
    """
    graph = router.graph
    speed_of = router.speed_mps
    vmax_of = router._vmax
    targets: dict[str, tuple[int, float, Any]] = {}  # mode -> (incident node, snap metres, search)
    # (bound or exact time s, unit, straight m, exact?, road legs s or -1 before the first refinement)
    heap: list[tuple[float, str, float, bool, float]] = []
    found: list[Cand] = []
    skipped: list[tuple[str, str]] = []
    examined = 0
    vmax_any = router.vmax_any
    push, pop = heapq.heappush, heapq.heappop
    inf = math.inf
    # one ring walk per grid: (bound in s on any unit in its next ring, order, next ring, speed bound)
    walks: list[tuple[float, int, Iterator[tuple[float, list[str]]], float]] = []
    if isinstance(grid, ModeGrids):
        for n, (mode, g) in enumerate(sorted(grid.grids.items())):
            walks.append((0.0, n, g.rings(lat, lon), vmax_of.get(mode, vmax_any)))
    else:
        walks.append((0.0, 0, grid.rings(lat, lon), vmax_any))
    heapq.heapify(walks)
    ring_bound = 0.0  # no unit in a ring not walked yet arrives sooner than this
    cos, radians, hypot = math.cos, math.radians, math.hypot
    units_get = units.get
    snaps: dict[str, tuple[int, float]] = {}  # unit -> its street node and snap metres, once per choice

    while len(found) < want:
        if walks and (not heap or heap[0][0] > ring_bound):
            _, n, rings, speed_bound = pop(walks)
            ring = next(rings, None)
            if ring is not None:
                next_ring_m, ring_units = ring
                for uid in ring_units:
                    u = units_get(uid)
                    if u is None:
                        continue
                    ulat, ulon = u.lat, u.lon
                    if ulat is None or ulon is None:
                        continue
                    examined += 1
                    reason = why_not(u)
                    if reason is not None:
                        if len(skipped) < skipped_limit:
                            skipped.append((uid, reason))
                        continue
                    # straight_m(lat, lon, ulat, ulon), written out (the same operations, the same result)
                    dist = EARTH_M_PER_DEG * hypot((ulon - lon) * cos(radians((lat + ulat) / 2.0)), ulat - lat)
                    # a StrEnum hashes and compares as its value: no str() needed for the lookup
                    push(heap, (dist / vmax_of[u.mode], uid, dist, False, -1.0))
                push(walks, (next_ring_m / speed_bound, n, rings, speed_bound))
            ring_bound = walks[0][0] if walks else inf
            continue
        if not heap:
            break
        key, uid, dist, exact, legs = pop(heap)
        if exact:
            found.append(Cand(uid, key, dist, "straight" if graph is None else "road"))
            continue
        u = units[uid]
        mode = u.mode
        speed = speed_of[mode]
        if graph is None:
            push(heap, (dist / speed, uid, dist, True, 0.0))
            continue
        t = targets.get(mode)
        if t is None:
            mode = str(mode)
            tnode, tsnap = router.target(lat, lon, mode)
            t = targets[mode] = (tnode, tsnap, router.search(mode, tnode))
        snap = snaps.get(uid)
        if snap is None:
            snap = snaps[uid] = router.snap(uid, u.lat, u.lon, str(mode))  # type: ignore[arg-type]
        unode, usnap = snap
        legs = (usnap + t[1]) / speed
        search = t[2]
        road = search.settled_time(unode)
        if road is None:
            # at least as far as the next unit's bound (before it, this one cannot be next anyway), and a
            # tenth further than its own: units that are all slower than the answer do not leapfrog one
            # another a node at a time
            nxt = min(heap[0][0] if heap else inf, ring_bound)
            horizon = max(nxt, key * REFINE_GROWTH, key + REFINE_MIN_S) if nxt < inf else inf
            road = search.time_from(unode, horizon - legs)
        if road is not None:
            push(heap, (road + legs, uid, dist, True, legs))
            continue
        frontier = search.frontier_s  # the unit's node is not settled, so it is at least this far
        if frontier == inf:
            continue  # unreachable by road
        push(heap, (max(frontier + legs, key), uid, dist, False, legs))
    return Choice(found[0] if found else None, found, skipped, examined)
