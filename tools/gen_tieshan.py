#!/usr/bin/env python3
"""Generate the Tieshan sample district: config/districts/tieshan-streets.geojson and tieshan.yaml.

Modelled on the real case: a community police office in Tieshan District,
Huangshi, Hubei, China. The district centre (about 3.5 km x 2.5 km around
30.206 N, 114.905 E) sits between a hill and a lake and is cut by a railway:

* a main east-west avenue (Tieshan Lu), two secondary north-south roads, a
  jittered grid of residential streets with dead ends, cul-de-sacs, curving
  lanes, a few one-way streets, pedestrian lanes and a market street;
* the railway crosses the whole district and is crossed only three times:
  a level crossing (Kuangshan Lu), a road underpass (Gongren Lu) and a
  pedestrian underpass; streets on either side share no node anywhere else;
* a lake (natural=water) with a ring road and a shore path, and a hill
  (natural=hill) with a road round its foot and a trail over it;
* 14 communities tiling the district, 16 cameras at the entrances of two of
  them, 16 police officers, 28 auxiliaries and 14 volunteer teams.

Deterministic: the same seed gives byte-identical files. Needs only the
standard library and numpy to generate; afterwards it loads the street file
with dispatch.streets.StreetGraph and measures how often the straight-line
nearest unit is not the one nearest by road (`--no-check` skips that).

    .venv/bin/python tools/gen_tieshan.py            # write both files, print the barrier figures
    .venv/bin/python tools/gen_tieshan.py --out DIR  # write elsewhere
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict, deque
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEED = 20240605
LAT0, LON0 = 30.206, 114.905
KY = 6_371_008.8 * math.pi / 180.0  # metres per degree of latitude (the street graph's earth)
KX = KY * math.cos(math.radians(LAT0))
HALF_W, HALF_H = 1750.0, 1250.0  # the district: x (east) and y (north) in metres from the centre

# grid of residential streets
COL_X = [-1700.0 + 170.0 * i for i in range(21)]
ROW_Y = [-1200.0 + 150.0 * j for j in range(17)]
JITTER = 22.0
AVENUE_ROW = 10
KUANGSHAN_COL, GONGREN_COL, UNDERPASS_COL, XINGFU_COL = 5, 11, 17, 15
MARKET_ROW, MARKET_COLS = 8, (7, 10)  # pedestrian market street: row 8 between these columns
RAIL_CLEAR_M = 40.0  # no street node closer to the railway than this, except at crossings

ROW_NAMES = [
    "Nanhuan Lu", "Changjiang Jie", "Yanghe Jie", "Hongqi Jie", "Chaoyang Jie", "Dongfeng Jie",
    "Jianshe Jie", "Heping Jie", "Gongren Jie", "Wenhua Jie", "Tieshan Lu", "Minzhu Jie",
    "Tuanjie Jie", "Youyi Jie", "Qingnian Jie", "Xinhua Jie", "Beihuan Lu",
]
COL_NAMES = [
    "Xihuan Lu", "Taoyuan Lu", "Liyuan Lu", "Songbai Lu", "Yejin Lu", "Kuangshan Lu", "Meigang Lu",
    "Tiekuang Lu", "Dazhi Lu", "Luojia Lu", "Zhongxin Lu", "Gongren Lu", "Baota Lu", "Jinshan Lu",
    "Yinshan Lu", "Xingfu Lu", "Guanghua Lu", "Huayuan Lu", "Zhenxing Lu", "Shengli Lu", "Donghuan Lu",
]

# communities: three bands (south of the railway; railway to just south of Tieshan Lu; north of that),
# split by north-south lines half-way between grid columns
BANDS = {
    "south": ([-1105.0, -425.0, 255.0, 1275.0], ["Nanyuan", "Chenjiawan", "Lukou", "Hubin", "Lijiawan"]),
    "middle": ([-765.0, 85.0, 935.0], ["Tiexi", "Gongren Xincun", "Zhanqian", "Tiedong"]),
    "north": ([-1105.0, -425.0, 255.0, 935.0], ["Kuangshan", "Shanjiao", "Wenhua", "Xingfu", "Dongfang"]),
}
CAMERA_COMMUNITIES = ("Gongren Xincun", "Chenjiawan")  # the two high-crime neighbourhoods

CAR_CLASSES = {"primary", "secondary", "tertiary", "residential", "service", "living_street"}


def rail_y(x: float) -> float:
    return -150.0 + 0.12 * x + 60.0 * math.sin(x / 900.0)


def avenue_y(x: float) -> float:
    return 330.0 + 40.0 * math.sin(x / 700.0)


def midline_y(x: float) -> float:
    """Boundary between the middle and north bands: half a block south of Tieshan Lu."""
    return avenue_y(x) - 80.0


def latlon(x: float, y: float) -> tuple[float, float]:
    return round(LAT0 + y / KY, 7), round(LON0 + x / KX, 7)


def xy(lat: float, lon: float) -> tuple[float, float]:
    return (lon - LON0) * KX, (lat - LAT0) * KY


def side(x: float, y: float) -> int:
    """+1 north of the railway, -1 south."""
    return 1 if y > rail_y(x) else -1


# --------------------------------------------------------------------------- obstacles


class Obstacle:
    """A lake or hill: a jittered ellipse; streets keep clear of it."""

    def __init__(self, name: str, tag: tuple[str, str], cx: float, cy: float, a: float, b: float, rng: np.random.Generator):
        self.name, self.tag, self.cx, self.cy, self.a, self.b = name, tag, cx, cy, a, b
        self.phase = [float(p) for p in rng.uniform(0, 2 * math.pi, 3)]

    def radius(self, theta: float) -> float:
        a, b = self.a, self.b
        r = a * b / math.hypot(b * math.cos(theta), a * math.sin(theta))
        p = self.phase
        return r * (1.0 + 0.05 * math.sin(3 * theta + p[0]) + 0.03 * math.sin(5 * theta + p[1]) + 0.02 * math.sin(7 * theta + p[2]))

    def point(self, theta: float, pad: float = 0.0) -> tuple[float, float]:
        r = self.radius(theta) + pad
        return self.cx + r * math.cos(theta), self.cy + r * math.sin(theta)

    def within(self, x: float, y: float, pad: float) -> bool:
        dx, dy = x - self.cx, y - self.cy
        return math.hypot(dx, dy) < self.radius(math.atan2(dy, dx)) + pad

    def outline(self, n: int = 48) -> list[tuple[float, float]]:
        return [self.point(2 * math.pi * k / n) for k in range(n)]


# --------------------------------------------------------------------------- street network


class Net:
    """Nodes (x, y) and street edges, grouped into named lines for the GeoJSON."""

    def __init__(self) -> None:
        self.nodes: dict[int, tuple[float, float]] = {}
        self.edges: list[dict] = []
        self._next = 0

    def node(self, x: float, y: float) -> int:
        n = self._next
        self._next += 1
        self.nodes[n] = (x, y)
        return n

    def edge(self, u: int, v: int, line: str, seq: float, highway: str, name: str | None, via=(), **tags) -> dict:
        e = {"u": u, "v": v, "line": line, "seq": seq, "highway": highway, "name": name, "via": list(via), "oneway": False, "tags": dict(tags)}
        self.edges.append(e)
        return e

    def points(self, e: dict) -> list[tuple[float, float]]:
        return [self.nodes[e["u"]], *e["via"], self.nodes[e["v"]]]


def seg_samples(p: tuple[float, float], q: tuple[float, float], n: int = 8):
    for k in range(n + 1):
        t = k / n
        yield p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t


def build_streets(rng: np.random.Generator):
    net = Net()
    lake = Obstacle("Qingshan Hu", ("natural", "water"), 760.0, -860.0, 420.0, 230.0, rng)
    hill = Obstacle("Tie Shan", ("natural", "hill"), -1150.0, 800.0, 360.0, 240.0, rng)
    obstacles = (lake, hill)

    def blocked_node(x: float, y: float) -> bool:
        return any(o.within(x, y, 75.0) for o in obstacles) or abs(y - rail_y(x)) < RAIL_CLEAR_M

    def blocked_segment(pts: list[tuple[float, float]], crossing: bool = False, pad: float = 50.0) -> bool:
        for a, b in zip(pts, pts[1:]):
            for x, y in seg_samples(a, b):
                if any(o.within(x, y, pad) for o in obstacles):
                    return True
        if not crossing:
            sides = {side(x, y) for a, b in zip(pts, pts[1:]) for x, y in seg_samples(a, b)}
            if len(sides) > 1:
                return True
        return False

    # -- grid nodes
    grid: dict[tuple[int, int], int] = {}
    for i, x0 in enumerate(COL_X):
        for j, y0 in enumerate(ROW_Y):
            jx, jy = (float(v) for v in rng.uniform(-JITTER, JITTER, 2))
            x = x0 if i in (KUANGSHAN_COL, GONGREN_COL) else x0 + jx
            y = avenue_y(x) if j == AVENUE_ROW else y0 + jy
            if not blocked_node(x, y):
                grid[i, j] = net.node(x, y)

    def row_class(j: int, i: int) -> str:
        if j == AVENUE_ROW:
            return "primary"
        if j == MARKET_ROW and MARKET_COLS[0] <= i < MARKET_COLS[1]:
            return "pedestrian"
        return "residential"

    def col_class(i: int, j: int) -> str:
        if i in (KUANGSHAN_COL, GONGREN_COL):
            return "secondary"
        if i == XINGFU_COL and ROW_Y[j] > rail_y(COL_X[i]):
            return "tertiary"
        return "residential"

    def bow(p, q) -> list[tuple[float, float]]:
        """Intermediate points that make a straight segment a gently curving lane."""
        amp = float(rng.uniform(8.0, 18.0)) * (1 if rng.random() < 0.5 else -1)
        dx, dy = q[0] - p[0], q[1] - p[1]
        length = math.hypot(dx, dy)
        nx, ny = -dy / length, dx / length
        return [(p[0] + dx * t + nx * amp * math.sin(math.pi * t), p[1] + dy * t + ny * amp * math.sin(math.pi * t)) for t in (0.25, 0.5, 0.75)]

    def grid_edge(a: tuple[int, int], b: tuple[int, int], line: str, seq: float, highway: str, name: str, keep: float) -> None:
        if a not in grid or b not in grid:
            return
        u, v = grid[a], grid[b]
        p, q = net.nodes[u], net.nodes[v]
        if blocked_segment([p, q]):
            return
        if rng.random() > keep:
            return
        via = bow(p, q) if highway == "residential" and rng.random() < 0.2 else []
        if via and blocked_segment([p, *via, q]):
            via = []
        net.edge(u, v, line, seq, highway, name, via)

    for j in range(len(ROW_Y)):
        for i in range(len(COL_X) - 1):
            hw = row_class(j, i)
            grid_edge((i, j), (i + 1, j), f"row{j}", i, hw, ROW_NAMES[j], 1.0 if hw != "residential" else 0.9)
    for i in range(len(COL_X)):
        for j in range(len(ROW_Y) - 1):
            hw = col_class(i, j)
            grid_edge((i, j), (i, j + 1), f"col{i}", j, hw, COL_NAMES[i], 1.0 if hw != "residential" else 0.85)

    # -- the three railway crossings
    crossings = []
    for col, kind in ((KUANGSHAN_COL, "level_crossing"), (GONGREN_COL, "road_underpass"), (UNDERPASS_COL, "foot_underpass")):
        x = COL_X[col]
        south = max((j for j in range(len(ROW_Y)) if (col, j) in grid and side(*net.nodes[grid[col, j]]) < 0), default=None)
        north = min((j for j in range(len(ROW_Y)) if (col, j) in grid and side(*net.nodes[grid[col, j]]) > 0), default=None)
        assert south is not None and north is not None, f"no nodes either side of the railway on column {col}"
        s, n = grid[col, south], grid[col, north]
        name = COL_NAMES[col]
        if kind == "level_crossing":
            cx = x
            c = net.node(cx, rail_y(cx))
            net.edge(s, c, f"col{col}", south + 0.5, "secondary", name, crossing=kind, railway_crossing=True)
            net.edge(c, n, f"col{col}", south + 0.6, "secondary", name, crossing=kind, railway_crossing=True)
            crossings.append({"kind": kind, "x": cx, "node": c, "street": name})
        elif kind == "road_underpass":
            net.edge(s, n, f"col{col}", south + 0.5, "secondary", name, crossing=kind, railway_crossing=True, tunnel="yes", layer="-1")
            crossings.append({"kind": kind, "x": x, "node": None, "street": name})
        else:
            p, q = net.nodes[s], net.nodes[n]
            net.edge(s, n, "underpass", 0, "footway", "Tiedao Xiadao", crossing=kind, railway_crossing=True, tunnel="yes", layer="-1")
            crossings.append({"kind": kind, "x": (p[0] + q[0]) / 2, "node": None, "street": "Tiedao Xiadao"})
        # the grid edges of these columns that spanned the railway were dropped by blocked_segment

    # -- ring road and shore path round the lake, road round the foot of the hill, trail over it
    def ring(ob: Obstacle, pad: float, t0: float, t1: float, n: int) -> list[int]:
        return [net.node(*ob.point(t0 + (t1 - t0) * k / n, pad)) for k in range(n + 1)]

    lake_ring = ring(lake, 45.0, 0.0, 2 * math.pi * 47 / 48, 47)
    lake_ring.append(lake_ring[0])  # closed
    for k, (a, b) in enumerate(zip(lake_ring, lake_ring[1:])):
        net.edge(a, b, "lakering", k, "residential", "Hubin Lu")
    shore = ring(lake, 14.0, math.radians(35), math.radians(150), 14)
    for k, (a, b) in enumerate(zip(shore, shore[1:])):
        net.edge(a, b, "shore", k, "footway", "Hubin Buxingdao")
    for k in (0, 7, 14):  # short paths from the ring road down to the shore path
        theta = math.radians(35) + (math.radians(150) - math.radians(35)) * k / 14
        best = min(lake_ring[:-1], key=lambda r: math.dist(net.nodes[r], lake.point(theta, 45.0)))
        net.edge(best, shore[k], f"shorelink{k}", 0, "footway", None)

    hill_ring = ring(hill, 45.0, math.radians(185), math.radians(355), 20)
    for k, (a, b) in enumerate(zip(hill_ring, hill_ring[1:])):
        net.edge(a, b, "hillring", k, "residential", "Shanjiao Lu")

    # spokes: grid nodes cut off by an obstacle join the nearest ring node
    def spokes(ob: Obstacle, ring_nodes: list[int], line: str) -> None:
        used: set[int] = set()
        def lost(i: int, j: int) -> bool:  # a grid neighbour was removed for the obstacle
            return (0 <= i < len(COL_X) and 0 <= j < len(ROW_Y) and (i, j) not in grid
                    and ob.within(COL_X[i], ROW_Y[j], 120.0))

        cut = [n for (i, j), n in grid.items() if any(lost(i + di, j + dj) for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)))]
        cut.sort(key=lambda n: math.dist(net.nodes[n], (ob.cx, ob.cy)))
        for n in cut:
            p = net.nodes[n]
            options = sorted((r for r in set(ring_nodes) if r not in used), key=lambda r: math.dist(p, net.nodes[r]))
            for r in options[:2]:
                q = net.nodes[r]
                if math.dist(p, q) > 150.0:
                    break
                if blocked_segment([p, q], pad=38.0):  # the ring road itself runs at 45 m
                    continue
                net.edge(n, r, f"{line}{n}", 0, "residential", None)
                used.add(r)
                break

    spokes(lake, lake_ring, "lakespoke")
    spokes(hill, hill_ring, "hillspoke")

    # hill trail: from the road at the foot of the hill over the top to the streets north of it
    foot = hill_ring[len(hill_ring) // 2]
    top_candidates = [n for n in grid.values() if net.nodes[n][1] > hill.cy + 150 and abs(net.nodes[n][0] - hill.cx) < 200]
    summit_end = min(top_candidates, key=lambda n: math.dist(net.nodes[n], hill.point(math.pi / 2, 75.0)))
    p, q = net.nodes[foot], net.nodes[summit_end]
    trail_via = [(p[0] + (q[0] - p[0]) * t + 35.0 * math.sin(3 * math.pi * t), p[1] + (q[1] - p[1]) * t) for t in np.linspace(0.1, 0.9, 9)]
    net.edge(foot, summit_end, "trail", 0, "path", "Tieshan Dengshan Dao", [(float(a), float(b)) for a, b in trail_via], bicycle="no")

    # -- pedestrian lanes diagonally through blocks, and cul-de-sacs into blocks
    used_blocks: set[tuple[int, int]] = set()
    blocks = [(i, j) for i in range(20) for j in range(16)]
    order = rng.permutation(len(blocks))
    foot_lanes = cul_de_sacs = 0
    for k in order:
        i, j = blocks[int(k)]
        if (i, j) in used_blocks:
            continue
        if foot_lanes < 30 and (i, j) in grid and (i + 1, j + 1) in grid:
            u, v = grid[i, j], grid[i + 1, j + 1]
            p, q = net.nodes[u], net.nodes[v]
            mid = ((p[0] + q[0]) / 2 + float(rng.uniform(-15, 15)), (p[1] + q[1]) / 2 + float(rng.uniform(-15, 15)))
            if not blocked_segment([p, mid, q]):
                net.edge(u, v, f"lane{i}_{j}", 0, "footway", None, [mid])
                used_blocks.add((i, j))
                foot_lanes += 1
                continue
        if cul_de_sacs < 45:
            corner = [(i, j), (i + 1, j), (i, j + 1), (i + 1, j + 1)][int(rng.integers(4))]
            if corner not in grid:
                continue
            u = grid[corner]
            p = net.nodes[u]
            cxb, cyb = (COL_X[i] + COL_X[i + 1]) / 2, (ROW_Y[j] + ROW_Y[j + 1]) / 2
            d = math.dist(p, (cxb, cyb))
            length = float(rng.uniform(50, 70))
            q = (p[0] + (cxb - p[0]) / d * length, p[1] + (cyb - p[1]) / d * length)
            if blocked_node(*q) or blocked_segment([p, q]):
                continue
            v = net.node(*q)
            net.edge(u, v, f"cds{i}_{j}", 0, "service", f"{ROW_NAMES[j if corner[1] == j else j + 1].split()[0]} Xiang")
            used_blocks.add((i, j))
            cul_de_sacs += 1

    return net, grid, lake, hill, crossings


# --------------------------------------------------------------------------- connectivity


def adjacency(net: Net, mode: str) -> dict[int, list[int]]:
    adj: dict[int, list[int]] = defaultdict(list)
    for e in net.edges:
        hw = e["highway"]
        if mode == "car" and hw not in CAR_CLASSES:
            continue
        adj[e["u"]].append(e["v"])
        if not (mode == "car" and e["oneway"]):
            adj[e["v"]].append(e["u"])
    return adj


def reach(adj: dict[int, list[int]], start: int) -> set[int]:
    seen = {start}
    todo = deque([start])
    while todo:
        u = todo.popleft()
        for v in adj.get(u, ()):
            if v not in seen:
                seen.add(v)
                todo.append(v)
    return seen


def reverse(adj: dict[int, list[int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for u, vs in adj.items():
        for v in vs:
            out[v].append(u)
    return out


def car_core(net: Net, root: int) -> set[int]:
    adj = adjacency(net, "car")
    return reach(adj, root) & reach(reverse(adj), root)


def tidy(net: Net, root: int, rng: np.random.Generator) -> dict:
    """Keep the connected network, add one-way streets that keep it strongly connected for cars."""
    # 1. keep the component of the root (any mode)
    keep = reach(adjacency(net, "foot"), root)
    dropped = len(net.nodes) - len(keep)
    net.edges = [e for e in net.edges if e["u"] in keep]
    net.nodes = {n: p for n, p in net.nodes.items() if n in keep}

    # 2. car streets that cars cannot reach both ways become lanes closed to cars
    core = car_core(net, root)
    closed = 0
    for e in net.edges:
        if e["highway"] in CAR_CLASSES and not (e["u"] in core and e["v"] in core):
            if e["highway"] == "service" and (e["u"] in core or e["v"] in core):
                continue  # a cul-de-sac off a car street is fine (reachable both ways)
            e["highway"] = "footway"
            closed += 1

    # 3. one-way streets: runs of 3-4 residential edges in a few rows and columns, alternating direction
    runs = []
    candidates = [f"row{j}" for j in (1, 3, 6, 12, 15)] + [f"col{i}" for i in (3, 8, 13, 19)]
    for n_run, line in enumerate(candidates):
        edges = sorted((e for e in net.edges if e["line"] == line and e["highway"] == "residential"), key=lambda e: e["seq"])
        if len(edges) < 4:
            continue
        start = int(rng.integers(0, len(edges) - 3))
        run = [edges[start]]
        for e in edges[start + 1:]:
            if e["u"] == run[-1]["v"] and len(run) < 4:
                run.append(e)
            else:
                break
        if len(run) < 3:
            continue
        for e in run:
            e["oneway"] = True
            if n_run % 2:
                e["u"], e["v"], e["via"] = e["v"], e["u"], e["via"][::-1]
                e["reversed"] = True
        before = len(core)
        if len(car_core(net, root)) < before:  # this run would strand somebody: undo it
            for e in run:
                e["oneway"] = False
                if e.pop("reversed", False):
                    e["u"], e["v"], e["via"] = e["v"], e["u"], e["via"][::-1]
            continue
        runs.append((line, len(run)))
    return {"dropped_nodes": dropped, "closed_to_cars": closed, "oneway_runs": runs}


# --------------------------------------------------------------------------- communities


def communities() -> list[dict]:
    """14 polygons tiling the district: three bands split by north-south lines."""
    xs = set(float(x) for x in np.arange(-HALF_W, HALF_W + 1, 50.0))
    for splits, _ in BANDS.values():
        xs.update(splits)
    xs = sorted(xs)
    curves = {
        "south": (lambda x: -HALF_H, rail_y),
        "middle": (rail_y, midline_y),
        "north": (midline_y, lambda x: HALF_H),
    }
    out = []
    for band, (splits, names) in BANDS.items():
        lo, hi = curves[band]
        edges = [-HALF_W, *splits, HALF_W]
        for name, xa, xb in zip(names, edges, edges[1:]):
            span = [x for x in xs if xa <= x <= xb]
            if band == "south":  # the bottom edge is straight: two corners are enough
                lower = [(xa, lo(xa)), (xb, lo(xb))]
            else:
                lower = [(x, lo(x)) for x in span]
            upper = [(xb, hi(xb)), (xa, hi(xa))] if band == "north" else [(x, hi(x)) for x in reversed(span)]
            out.append({"id": slug(name), "name": name, "band": band, "poly": lower + upper})
    return out


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def inside(x: float, y: float, poly: list[tuple[float, float]]) -> bool:
    c = False
    j = len(poly) - 1
    for i in range(len(poly)):
        xi, yi = poly[i]
        xj, yj = poly[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            c = not c
        j = i
    return c


def seg_intersect(p1, p2, q1, q2):
    """Parameter t along p1->p2 where it crosses q1->q2, or None."""
    d = (p2[0] - p1[0]) * (q2[1] - q1[1]) - (p2[1] - p1[1]) * (q2[0] - q1[0])
    if abs(d) < 1e-12:
        return None
    t = ((q1[0] - p1[0]) * (q2[1] - q1[1]) - (q1[1] - p1[1]) * (q2[0] - q1[0])) / d
    s = ((q1[0] - p1[0]) * (p2[1] - p1[1]) - (q1[1] - p1[1]) * (p2[0] - p1[0])) / d
    return t if 0 <= t <= 1 and 0 <= s <= 1 else None


# --------------------------------------------------------------------------- cameras and units


def entrances(net: Net, comm: dict) -> list[dict]:
    """Where streets cross into the community: (camera position 15 m inside, street, class)."""
    poly = comm["poly"]
    out = []
    for e in net.edges:
        pts = net.points(e)
        for a, b in zip(pts, pts[1:]):
            ia, ib = inside(*a, poly), inside(*b, poly)
            if ia == ib:
                continue
            outside_pt, inside_pt = (a, b) if ib else (b, a)
            for q1, q2 in zip(poly, poly[1:] + poly[:1]):
                t = seg_intersect(outside_pt, inside_pt, q1, q2)
                if t is None:
                    continue
                cross = (outside_pt[0] + (inside_pt[0] - outside_pt[0]) * t, outside_pt[1] + (inside_pt[1] - outside_pt[1]) * t)
                length = math.dist(cross, inside_pt)
                k = min(15.0, length * 0.5) / length if length > 0 else 0
                pos = (cross[0] + (inside_pt[0] - cross[0]) * k, cross[1] + (inside_pt[1] - cross[1]) * k)
                heading = math.degrees(math.atan2(outside_pt[0] - inside_pt[0], outside_pt[1] - inside_pt[1])) % 360
                out.append({"pos": pos, "street": e["name"], "highway": e["highway"], "heading": heading})
                break
    return out


RANK = {"primary": 0, "secondary": 1, "tertiary": 2, "residential": 3, "pedestrian": 4, "service": 5, "footway": 6, "path": 7}


def pick_entrances(cands: list[dict], n: int) -> list[dict]:
    """n entrances: the biggest streets first, then spread out (farthest-point)."""
    cands = sorted(cands, key=lambda c: (RANK.get(c["highway"], 9), c["pos"]))
    chosen = [cands[0]]
    while len(chosen) < n:
        def score(c):
            d = min(math.dist(c["pos"], o["pos"]) for o in chosen)
            return d - 60.0 * RANK.get(c["highway"], 9) + (0 if c["street"] and all(c["street"] != o["street"] for o in chosen) else -150.0)
        rest = [c for c in cands if c not in chosen]
        chosen.append(max(rest, key=score))
    return chosen


def compass(heading: float) -> str:
    return ["north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west"][int((heading + 22.5) // 45) % 8]


def nodes_in(net: Net, poly, allowed: set[int]) -> list[int]:
    return sorted(n for n in allowed if inside(*net.nodes[n], poly))


# --------------------------------------------------------------------------- writers


def street_features(net: Net) -> list[dict]:
    """One LineString per run of consecutive edges of one line with the same tags."""
    by_line: dict[str, list[dict]] = defaultdict(list)
    for e in net.edges:
        by_line[e["line"]].append(e)
    feats = []
    for line in sorted(by_line, key=_natural):
        edges = sorted(by_line[line], key=lambda e: e["seq"])
        runs: list[list[dict]] = []
        for e in edges:
            key = _key(e)
            if runs and _key(runs[-1][-1]) == key and runs[-1][-1]["v"] == e["u"]:
                runs[-1].append(e)
            elif runs and _key(runs[-1][-1]) == key and e.get("reversed") and runs[-1][-1]["u"] == e["v"]:
                runs[-1].append(e)
            else:
                runs.append([e])
        for run in runs:
            if run[0].get("reversed"):
                run = run[::-1]  # a reversed one-way run is stored last edge first
            coords = []
            for e in run:
                pts = net.points(e)
                if coords:
                    pts = pts[1:]
                coords.extend(pts)
            props = {"highway": run[0]["highway"]}
            if run[0]["name"]:
                props["name"] = run[0]["name"]
            if run[0]["oneway"]:
                props["oneway"] = "yes"
            for k, v in sorted(run[0]["tags"].items()):
                if k == "railway_crossing":
                    continue
                props[k] = v
            feats.append(_line_feature(coords, props))
    return feats


def _key(e: dict):
    return (e["highway"], e["name"], e["oneway"], tuple(sorted((k, str(v)) for k, v in e["tags"].items())))


def _natural(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _line_feature(coords, props) -> dict:
    return {
        "type": "Feature",
        "properties": props,
        "geometry": {"type": "LineString", "coordinates": [[ll[1], ll[0]] for ll in (latlon(x, y) for x, y in coords)]},
    }


def geojson(net: Net, lake: Obstacle, hill: Obstacle, crossings: list[dict]) -> dict:
    xs = set(float(x) for x in np.arange(-HALF_W - 150, HALF_W + 151, 50.0))
    for splits, _ in BANDS.values():
        xs.update(splits)
    for c in crossings:
        if c["node"] is not None:
            xs.add(net.nodes[c["node"]][0])
    rail = [(x, rail_y(x)) for x in sorted(xs)]
    feats = [_line_feature(rail, {"railway": "rail", "name": "Wuhan-Jiujiang Railway", "usage": "main"})]
    for c in crossings:
        if c["node"] is not None:
            lat, lon = latlon(*net.nodes[c["node"]])
            feats.append({"type": "Feature", "properties": {"railway": "level_crossing", "name": c["street"]},
                          "geometry": {"type": "Point", "coordinates": [lon, lat]}})
    for ob in (lake, hill):
        ring = ob.outline()
        ring.append(ring[0])
        feats.append({
            "type": "Feature",
            "properties": {ob.tag[0]: ob.tag[1], "name": ob.name},
            "geometry": {"type": "Polygon", "coordinates": [[[ll[1], ll[0]] for ll in (latlon(x, y) for x, y in ring)]]},
        })
    feats.extend(street_features(net))
    return {
        "type": "FeatureCollection",
        "name": "tieshan-streets",
        "description": "Synthetic street network of the Tieshan district centre, generated by tools/gen_tieshan.py",
        "features": feats,
    }


_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9 _\-()']*$")
_YAML_WORDS = {"yes", "no", "on", "off", "true", "false", "null", "y", "n"}


def q(s: str) -> str:
    """A YAML scalar: plain when safe, else a JSON (double-quoted) string."""
    if _PLAIN.match(s) and s.lower() not in _YAML_WORDS and not s.endswith(" "):
        return s
    return json.dumps(s, ensure_ascii=False)


def fnum(v: float, nd: int = 7) -> str:
    return f"{v:.{nd}f}".rstrip("0").rstrip(".")


def point(x: float, y: float) -> str:
    lat, lon = latlon(x, y)
    return f"{{lat: {fnum(lat)}, lon: {fnum(lon)}}}"


POLICY_YAML = """\
policy:
  # seconds a unit has to acknowledge an order, per priority (1 = life at risk now)
  ack_timeout_s: {1: 20, 2: 30, 3: 45}
  correlation_window_s: 120     # alerts of one kind and place within this window join one incident
  correlation_radius_m: 150     # ... and within this distance
  max_attempts: 4               # orders timed out or declined before the incident escalates
  stale_position_s: 120         # units whose last position is older are not chosen
  preemption: true              # a priority-1 incident may take a unit from a lower-priority one
  preemptable_priorities: [3]   # ... from incidents of these priorities
  preempt_margin_s: 60          # ... when that unit would arrive at least this much sooner than a free one
  escalation_talkgroup: supervisors
  max_candidates: 6             # candidates listed in a decision's explanation
  district_margin_m: 500        # how far beyond the communities still counts as the district
  # who may take what; a kind or field left out keeps its default (docs/district-config.md)
  kinds:
    assault:        {violent: true,  category: Security,  default_priority: 1, unit_kinds: [police, auxiliary]}
    robbery:        {violent: true,  category: Security,  default_priority: 1, unit_kinds: [police, auxiliary]}
    fight:          {violent: true,  category: Security,  default_priority: 1, unit_kinds: [police, auxiliary]}
    weapon:         {violent: true,  category: Security,  default_priority: 1, unit_kinds: [police]}
    intrusion:      {violent: false, category: Security,  default_priority: 2, unit_kinds: [police, auxiliary]}
    theft:          {violent: false, category: Security,  default_priority: 2, unit_kinds: [police, auxiliary]}
    vandalism:      {violent: false, category: Security,  default_priority: 3, unit_kinds: [police, auxiliary]}
    loitering:      {violent: false, category: Security,  default_priority: 3, unit_kinds: [police, auxiliary, volunteer]}
    crowd:          {violent: false, category: Safety,    default_priority: 2, unit_kinds: [police, auxiliary, volunteer]}
    suspicious:     {violent: false, category: Security,  default_priority: 3, unit_kinds: [police, auxiliary, volunteer]}
    traffic:        {violent: false, category: Transport, default_priority: 2, unit_kinds: [police, auxiliary]}
    medical:        {violent: false, category: Health,    default_priority: 1, unit_kinds: [police, auxiliary, volunteer]}
    fire:           {violent: false, category: Fire,      default_priority: 1, unit_kinds: [police, auxiliary]}
    camera_tamper:  {violent: false, category: Security,  default_priority: 3, unit_kinds: [auxiliary, police, volunteer]}
    camera_offline: {violent: false, category: Infra,     default_priority: 3, unit_kinds: [auxiliary, police, volunteer]}
    other:          {violent: false, category: Other,     default_priority: 2, unit_kinds: [police, auxiliary]}
"""

ZONES = [
    ("gate", [(0.3, 0.45), (0.7, 0.45), (0.82, 1.0), (0.18, 1.0)], True),
    ("street", [(0.0, 0.3), (1.0, 0.3), (1.0, 1.0), (0.0, 1.0)], False),
]


def district_yaml(comms, cameras, units, figures: str | None, seed: int = SEED) -> str:
    out = [
        "# Tieshan district centre, Huangshi, Hubei: the PatrolLink sample district.",
        "#",
        f"# Generated by tools/gen_tieshan.py (seed {seed}) together with tieshan-streets.geojson.",
        "# It may be hand-edited; re-running the generator overwrites it.",
        "# The format, field by field: docs/district-config.md",
        "# Check it: patrollink check-config config/districts/tieshan.yaml",
    ]
    if figures:
        out += ["#"] + [f"# {line}" for line in figures.splitlines()]
    out += [
        "",
        "name: Tieshan",
        "timezone: Asia/Shanghai",
        f"center: {{lat: {LAT0}, lon: {LON0}}}",
        "",
        "streets:",
        "  file: tieshan-streets.geojson   # relative to this file",
        "  speeds_kmh: {foot: 5, bicycle: 15, motorbike: 35, car: 40}",
        "",
        "# 14 communities (社区) tiling the district; boundary corners are [lat, lon]",
        "communities:",
    ]
    for c in comms:
        pts = [latlon(x, y) for x, y in c["poly"]]
        out += [f"  - id: {c['id']}", f"    name: {q(c['name'])}", "    boundary: ["]
        for k in range(0, len(pts), 3):
            chunk = ", ".join(f"[{fnum(a, 6)}, {fnum(b, 6)}]" for a, b in pts[k:k + 3])
            out.append(f"      {chunk}{',' if k + 3 < len(pts) else ''}")
        out.append("    ]")
    out += ["", "# 16 cameras at the entrances of the two high-crime neighbourhoods", "cameras:"]
    for cam in cameras:
        out += [
            f"  - id: {cam['id']}",
            f"    name: {q(cam['name'])}",
            f"    community: {cam['community']}",
            f"    position: {point(*cam['pos'])}",
            f"    stream: {cam['stream']}",
            "    zones:",
        ]
        for name, poly, restricted in cam["zones"]:
            out.append(f"      - name: {name}")
            out.append("        polygon: [" + ", ".join(f"[{fnum(x, 3)}, {fnum(y, 3)}]" for x, y in poly) + "]")
            if restricted:
                out.append("        restricted: true")
    out += [
        "",
        "# units: 16 community police officers, 28 auxiliaries, 14 volunteer patrol teams;",
        "# home = where the unit starts and patrols from (a street node of its beat)",
        "units:",
    ]
    for u in units:
        out.append(
            f"  - {{id: {u['id']}, callsign: {q(u['callsign'])}, kind: {u['kind']}, mode: {u['mode']}, "
            f"beat: {u['beat']}, talkgroup: {u['talkgroup']}, home: {point(*u['pos'])}}}"
        )
    out += ["", "# engine rules; every value below is the default, spelled out"]
    text = "\n".join(out) + "\n" + POLICY_YAML
    return text


# --------------------------------------------------------------------------- main


def generate(rng: np.random.Generator):
    net, grid, lake, hill, crossings = build_streets(rng)
    root = grid[GONGREN_COL, AVENUE_ROW]
    stats = tidy(net, root, rng)
    comms = communities()

    # sanity: no street joins the two sides of the railway except at the crossings
    for e in net.edges:
        pts = net.points(e)
        sides = {side(x, y) for x, y in pts if abs(y - rail_y(x)) > 1.0}
        if len(sides) > 1:
            assert e["tags"].get("railway_crossing"), f"street {e['name']} crosses the railway outside a crossing"

    by_name = {c["name"]: c for c in comms}
    cameras = []
    for cname in CAMERA_COMMUNITIES:
        comm = by_name[cname]
        for ent in pick_entrances(entrances(net, comm), 8):
            n = len(cameras) + 1
            where = compass(ent["heading"])
            street = f" ({ent['street']})" if ent["street"] else ""
            cameras.append({
                "id": f"cam{n:02d}",
                "name": f"{cname} {where} entrance{street}",
                "community": comm["id"],
                "pos": ent["pos"],
                "stream": f"rtsp://127.0.0.1:8554/cam{n:02d}",
                "zones": ZONES if n % 2 else ZONES[:1],
            })

    car_nodes = car_core(net, root)
    road_nodes = {n for e in net.edges if e["highway"] in CAR_CLASSES | {"pedestrian"} for n in (e["u"], e["v"])} & set(net.nodes)
    walk_nodes = set(net.nodes)
    taken: set[int] = set()

    def home(comm: dict, pool: set[int]) -> tuple[float, float]:
        options = [n for n in nodes_in(net, comm["poly"], pool) if n not in taken]
        if not options:
            options = nodes_in(net, comm["poly"], pool)
        n = options[int(rng.integers(len(options)))]
        taken.add(n)
        return net.nodes[n]

    units = []
    beats = [c for c in comms] + [by_name[n] for n in CAMERA_COMMUNITIES]  # two extra officers for the hot spots
    for k, comm in enumerate(beats, start=1):
        mode = "car" if k % 2 else "motorbike"
        units.append({"id": f"p{k:02d}", "callsign": f"Tieshan {k:02d}", "kind": "police", "mode": mode,
                      "beat": comm["id"], "talkgroup": "police", "pos": home(comm, car_nodes)})
    aux_modes = ["foot", "bicycle", "motorbike", "foot", "bicycle", "motorbike", "foot"]
    k = 0
    for rnd in range(2):
        for comm in comms:
            k += 1
            mode = aux_modes[(k - 1) % len(aux_modes)]
            pool = car_nodes if mode == "motorbike" else (road_nodes & car_nodes if mode == "bicycle" else walk_nodes)
            units.append({"id": f"a{k:02d}", "callsign": f"Aux {k:02d}", "kind": "auxiliary", "mode": mode,
                          "beat": comm["id"], "talkgroup": "auxiliary", "pos": home(comm, pool)})
    for comm in comms:
        units.append({"id": f"v-{comm['id']}", "callsign": f"Volunteer {comm['name']}", "kind": "volunteer", "mode": "foot",
                      "beat": comm["id"], "talkgroup": "volunteers", "pos": home(comm, walk_nodes)})
    return net, lake, hill, crossings, comms, cameras, units, stats


def barrier_check(streets_path: Path, units: list[dict], lake: Obstacle, hill: Obstacle, n_points: int, seed: int) -> dict:
    """How often is the straight-line nearest unit not the one nearest by road?"""
    sys.path.insert(0, str(ROOT))
    from dispatch.streets import StreetGraph, haversine_m

    g = StreetGraph.from_file(streets_path)
    rng = np.random.default_rng(seed)
    speeds = {m: v / 3.6 for m, v in g.speeds_kmh.items()}

    def sample(pred) -> tuple[float, float]:
        while True:
            x = float(rng.uniform(-HALF_W + 50, HALF_W - 50))
            y = float(rng.uniform(-HALF_H + 50, HALF_H - 50))
            if not lake.within(x, y, 0) and not hill.within(x, y, 0) and pred(x, y):
                return x, y

    # 1. pairs of points on opposite sides of the railway vs the same side: walking detour
    def walk_ratio(pred_a, pred_b, n):
        ratios = []
        for _ in range(n):
            a, b = sample(pred_a), sample(pred_b)
            la, lb = latlon(*a), latlon(*b)
            na, da = g.nearest_node(*la, "foot")
            nb, db = g.nearest_node(*lb, "foot")
            t = g.shortest_time("foot", na, nb)
            straight = haversine_m(*la, *lb)
            if t is None or straight < 300:
                continue
            ratios.append((t * speeds["foot"] + da + db) / straight)
        return float(np.median(ratios)), float(np.percentile(ratios, 90))

    north = lambda x, y: side(x, y) > 0 and abs(y - rail_y(x)) > 60  # noqa: E731
    south = lambda x, y: side(x, y) < 0 and abs(y - rail_y(x)) > 60  # noqa: E731
    opposite = walk_ratio(north, south, 150)
    same = walk_ratio(north, north, 75)

    # 2. random incident points: straight-line nearest unit vs road-nearest
    unit_nodes = {}
    for u in units:
        lat, lon = latlon(*u["pos"])
        unit_nodes[u["id"]] = (lat, lon, {m: g.nearest_node(lat, lon, m)[0] for m in ("foot", u["mode"])})
    counts = {"dist_all": 0, "eta_all": 0, "eta_police": 0, "cross_rail": 0, "cross_rail_differs": 0}
    n = 0
    for _ in range(n_points):
        x, y = sample(lambda x, y: True)
        lat, lon = latlon(x, y)
        straight = {uid: haversine_m(lat, lon, ul, uo) for uid, (ul, uo, _) in unit_nodes.items()}
        searches = {}
        snap = {}
        for m in ("foot", "bicycle", "motorbike", "car"):
            node, d = g.nearest_node(lat, lon, m)
            searches[m] = g.search(m, node)
            snap[m] = d
        walk, eta = {}, {}
        for u in units:
            uid, mode = u["id"], u["mode"]
            nodes = unit_nodes[uid][2]
            tw = searches["foot"].time_from(nodes["foot"])
            te = searches[mode].time_from(nodes[mode])
            if tw is not None:
                walk[uid] = tw * speeds["foot"] + snap["foot"]
            if te is not None:
                eta[uid] = te + snap[mode] / speeds["foot"]
        n += 1
        s_all = min(straight, key=straight.get)
        if min(walk, key=walk.get) != s_all:
            counts["dist_all"] += 1
        if min(eta, key=eta.get) != s_all:
            counts["eta_all"] += 1
        police = [u["id"] for u in units if u["kind"] == "police"]
        s_pol = min(police, key=straight.get)
        r_pol = min((p for p in police if p in eta), key=eta.get)
        if r_pol != s_pol:
            counts["eta_police"] += 1
        # the barrier itself: straight-nearest is across the railway from the incident
        if side(*xy(*unit_nodes[s_all][:2])) != side(x, y):
            counts["cross_rail"] += 1
            if min(walk, key=walk.get) != s_all:
                counts["cross_rail_differs"] += 1
    return {
        "graph": f"{g.node_count} street nodes",
        "cross_rail_differs_share": counts["cross_rail_differs"] / max(counts["cross_rail"], 1),
        "points": n,
        "opposite_median": opposite[0], "opposite_p90": opposite[1],
        "same_median": same[0], "same_p90": same[1],
        **{k: v / n for k, v in counts.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "config" / "districts", help="folder for the two files")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--points", type=int, default=1000, help="random incident points for the barrier check")
    ap.add_argument("--no-check", action="store_true", help="skip the street-graph barrier check")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    net, lake, hill, crossings, comms, cameras, units, stats = generate(rng)
    args.out.mkdir(parents=True, exist_ok=True)
    streets_path = args.out / "tieshan-streets.geojson"
    gj = geojson(net, lake, hill, crossings)
    streets_path.write_text(json.dumps(gj, separators=(",", ":"), ensure_ascii=False).replace('{"type":"Feature"', '\n{"type":"Feature"') + "\n", encoding="utf-8")

    n_streets = sum(1 for f in gj["features"] if "highway" in f["properties"])
    kinds = defaultdict(int)
    for f in gj["features"]:
        if "highway" in f["properties"]:
            kinds[f["properties"]["highway"]] += 1
    degree = defaultdict(int)
    for e in net.edges:
        degree[e["u"]] += 1
        degree[e["v"]] += 1
    dead_ends = sum(1 for d in degree.values() if d == 1)
    print(f"streets: {len(net.nodes)} nodes, {len(net.edges)} segments, {n_streets} street features "
          f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); {dead_ends} dead ends; "
          f"one-way runs {stats['oneway_runs']}; {stats['dropped_nodes']} stray nodes dropped; "
          f"{stats['closed_to_cars']} segments closed to cars")
    print(f"railway crossings: {', '.join(c['kind'] + ' (' + c['street'] + ')' for c in crossings)}")
    print(f"communities {len(comms)}, cameras {len(cameras)}, units {len(units)} "
          f"(police {sum(u['kind'] == 'police' for u in units)}, auxiliary {sum(u['kind'] == 'auxiliary' for u in units)}, "
          f"volunteer {sum(u['kind'] == 'volunteer' for u in units)})")

    figures = None
    if not args.no_check:
        r = barrier_check(streets_path, units, lake, hill, args.points, args.seed + 1)
        figures = (
            f"Barrier check ({r['points']} random incident points, units at their homes, {r['graph']}):\n"
            f"  straight-line nearest unit is not the nearest by walking distance: {r['dist_all']:.1%}\n"
            f"  straight-line nearest unit is not the fastest by road (each unit's own mode): {r['eta_all']:.1%}\n"
            f"  straight-line nearest police officer is not the fastest officer by road: {r['eta_police']:.1%}\n"
            f"  straight-line nearest unit is across the railway: {r['cross_rail']:.1%} of points; of those, "
            f"{r['cross_rail_differs_share']:.0%} have another unit nearer by walking distance\n"
            f"  walking detour, points on opposite sides of the railway: median x{r['opposite_median']:.2f} (90th pct x{r['opposite_p90']:.2f});\n"
            f"  same side: median x{r['same_median']:.2f} (90th pct x{r['same_p90']:.2f})"
        )
        print(figures)
    yaml_path = args.out / "tieshan.yaml"
    yaml_path.write_text(district_yaml(comms, cameras, units, figures, args.seed), encoding="utf-8")
    print(f"wrote {streets_path} and {yaml_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
