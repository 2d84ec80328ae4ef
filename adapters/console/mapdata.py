"""The district map as JSON for the pages: drawn in SVG in the browser, no tile server.

Streets come from the district's street graph (`StreetGraph.lines`, `barriers`), community
boundaries, cameras and units' homes from the district config. Points are [lat, lon] rounded to
~1 m; long streets are simplified (Douglas-Peucker, 1.5 m) so the payload stays small.
"""

from __future__ import annotations

import math
from typing import Any

_M_PER_DEG = 111_320.0


def _round(p: tuple[float, float]) -> list[float]:
    return [round(p[0], 6), round(p[1], 6)]


def _simplify(pts: list[tuple[float, float]], tol_m: float, k: float) -> list[tuple[float, float]]:
    if len(pts) <= 2:
        return pts

    def xy(p: tuple[float, float]) -> tuple[float, float]:
        return p[1] * k * _M_PER_DEG, p[0] * _M_PER_DEG

    def dist(p: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        (px, py), (ax, ay), (bx, by) = xy(p), xy(a), xy(b)
        dx, dy = bx - ax, by - ay
        L = dx * dx + dy * dy
        if L == 0:
            return math.hypot(px - ax, py - ay)
        t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / L))
        return math.hypot(px - ax - t * dx, py - ay - t * dy)

    keep = [False] * len(pts)
    keep[0] = keep[-1] = True
    stack = [(0, len(pts) - 1)]
    while stack:
        i, j = stack.pop()
        best, idx = 0.0, -1
        for m in range(i + 1, j):
            d = dist(pts[m], pts[i], pts[j])
            if d > best:
                best, idx = d, m
        if idx >= 0 and best > tol_m:
            keep[idx] = True
            stack += [(i, idx), (idx, j)]
    return [p for p, k_ in zip(pts, keep) if k_]


def district_map(district: Any, graph: Any | None = None) -> dict[str, Any]:
    s, w, n, e = district.bbox
    k = math.cos(math.radians((s + n) / 2))
    streets: list[dict[str, Any]] = []
    barriers: list[dict[str, Any]] = []
    if graph is None:
        try:
            graph = district.load_streets()
        except Exception:
            graph = None
    if graph is not None:
        for line in graph.lines:
            pts = _simplify([tuple(p) for p in line.points], 1.5, k)  # type: ignore[misc]
            streets.append({"h": line.highway, "n": line.name or "", "p": [_round(p) for p in pts]})
        for kind, pts in graph.barriers:
            barriers.append({"k": kind, "p": [_round(p) for p in _simplify([tuple(p) for p in pts], 1.5, k)]})  # type: ignore[misc]
    return {
        "name": district.name,
        "center": [district.center.lat, district.center.lon],
        "bbox": [s, w, n, e],
        "communities": [
            {"id": c.id, "name": c.name, "boundary": [_round(p) for p in c.boundary],
             "centroid": [round(c.centroid.lat, 6), round(c.centroid.lon, 6)]}
            for c in district.communities
        ],
        "streets": streets,
        "barriers": barriers,
        "cameras": [
            {"id": c.id, "name": c.name, "community": c.community, "lat": c.position.lat, "lon": c.position.lon,
             "zones": [{"name": z.name, "polygon": [list(p) for p in z.polygon], "restricted": getattr(z, "restricted", False)}
                       for z in c.zones]}
            for c in district.cameras
        ],
        "units": [
            {"id": u.id, "callsign": u.callsign, "kind": u.kind.value, "mode": u.mode.value, "beat": u.beat,
             "talkgroup": u.talkgroup, "home": [u.home.lat, u.home.lon] if u.home else None}
            for u in district.units
        ],
        "kinds": sorted({str(k_.value) if hasattr(k_, "value") else str(k_) for k_ in district.policy.kinds}),
        "ack_timeout_s": {str(p): v for p, v in district.policy.ack_timeout_s.items()},
    }


def place_name(district: Any, graph: Any | None, lat: float, lon: float) -> str:
    """A place a person reads: the nearest named street and the community, e.g. 'Gongren Jie, Gongren Xincun'."""
    parts = []
    if graph is not None:
        best: tuple[float, str] | None = None
        k = math.cos(math.radians(lat))
        for line in graph.lines:
            if not line.name:
                continue
            for la, lo in line.points:
                d = math.hypot((la - lat) * _M_PER_DEG, (lo - lon) * _M_PER_DEG * k)
                if best is None or d < best[0]:
                    best = (d, line.name)
        if best is not None and best[0] < 150:
            parts.append(("near " if best[0] > 30 else "") + best[1])
    c = district.community_at(lat, lon)
    if c is not None:
        parts.append(c.name)
    return ", ".join(parts) or f"{lat:.5f}, {lon:.5f}"
