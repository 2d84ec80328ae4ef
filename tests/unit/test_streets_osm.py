"""Street graph from OSM XML: a tiny hand-written file, and a real extract of central Aguascalientes."""

import bz2
import heapq
import math
import random
import xml.etree.ElementTree as ET
from itertools import pairwise
from pathlib import Path

import pytest

from dispatch.streets import MODES, StreetGraph, StreetGraphError, haversine_m

# Read in place (bz2 stream); never copied into the project.  See the README next to it.
EXTRACT = Path("/work/shared/data/osm/aguascalientes.osm.bz2")
MOTOR_CLASSES = {"primary", "secondary", "tertiary", "residential", "unclassified", "living_street", "service"}

TINY_OSM = """<?xml version='1.0' encoding='UTF-8'?>
<osm version="0.6">
  <bounds minlat="21.86" minlon="-102.28" maxlat="21.87" maxlon="-102.27"/>
  <node id="1" lat="21.8600" lon="-102.2800"/>
  <node id="2" lat="21.8600" lon="-102.2790"/>
  <node id="3" lat="21.8610" lon="-102.2790"/>
  <node id="4" lat="21.8610" lon="-102.2800"/>
  <node id="5" lat="21.8620" lon="-102.2800"/>
  <node id="6" lat="21.8605" lon="-102.2810"/>
  <node id="7" lat="21.8605" lon="-102.2780"/>
  <node id="8" lat="21.8630" lon="-102.2800"/>
  <way id="10"><nd ref="1"/><nd ref="2"/><tag k="highway" v="residential"/><tag k="oneway" v="yes"/></way>
  <way id="11"><nd ref="2"/><nd ref="3"/><nd ref="4"/><nd ref="1"/><tag k="highway" v="residential"/></way>
  <way id="12"><nd ref="4"/><nd ref="5"/><tag k="highway" v="footway"/></way>
  <way id="13"><nd ref="6"/><nd ref="7"/><tag k="railway" v="rail"/></way>
  <way id="14"><nd ref="5"/><nd ref="999"/><nd ref="8"/><tag k="highway" v="service"/></way>
  <way id="15"><nd ref="5"/><nd ref="8"/><tag k="highway" v="construction"/></way>
  <way id="16"><nd ref="3"/><nd ref="5"/><tag k="highway" v="pedestrian"/><tag k="area" v="yes"/></way>
  <relation id="20"><member type="way" ref="10" role=""/><tag k="type" v="route"/></relation>
</osm>
"""


def test_tiny_osm_file_builds_streets_from_highway_ways_only(tmp_path):
    plain = tmp_path / "tiny.osm"
    plain.write_text(TINY_OSM, encoding="utf-8")
    packed = tmp_path / "tiny.osm.bz2"
    packed.write_bytes(bz2.compress(TINY_OSM.encode()))
    for path in (plain, packed):
        g = StreetGraph.from_file(path)
        # Nodes 1-5 are on streets; 6-7 only on the railway; way 14 lost its middle node
        # and keeps no segment; construction and area ways are left out.
        assert sorted(g.osm_ids) == [1, 2, 3, 4, 5]
        assert g.barriers == [("railway=rail", [(21.8605, -102.2810), (21.8605, -102.2780)])]
        n = g.node_for_osm_id
        assert g.shortest_time("car", n(1), n(2)) is not None
        assert g.search("car", n(1)).path_from(n(2)) == [n(2), n(3), n(4), n(1)]  # round the one-way
        assert g.search("foot", n(1)).path_from(n(2)) == [n(2), n(1)]
        assert g.shortest_time("car", n(5), n(4)) is None  # footway
        assert g.shortest_time("foot", n(5), n(4)) is not None
        assert n(8) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<osm><node id='1' lat='x' lon='0'/></osm>", "bad.osm: node 1: missing or bad id/lat/lon"),
        ("<osm><node id='1' lat='95' lon='0'/></osm>", "bad.osm: node 1: lat/lon out of range"),
        ("<osm><node id='1' lat='1' lon='0'>", "bad.osm: bad XML"),
        ("<gpx></gpx>", "bad.osm: not an OSM XML file"),
        ("<osm><node id='1' lat='1' lon='0'/></osm>", "bad.osm: no streets"),
    ],
)
def test_malformed_osm_file_names_the_file_and_the_element(tmp_path, text, message):
    path = tmp_path / "bad.osm"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(StreetGraphError) as caught:
        StreetGraph.from_osm(path)
    assert str(caught.value).startswith(message)


def test_corrupt_bz2_file_is_a_street_graph_error(tmp_path):
    path = tmp_path / "bad.osm.bz2"
    path.write_bytes(b"not bzip2 at all")
    with pytest.raises(StreetGraphError, match="bad.osm.bz2: cannot read"):
        StreetGraph.from_file(path)


# ---------------------------------------------------------------------- the real extract
@pytest.fixture(scope="module")
def extract() -> Path:
    if not EXTRACT.exists():
        pytest.skip(f"OSM extract {EXTRACT} is not on this machine (shared test data, not in the repo)")
    return EXTRACT


@pytest.fixture(scope="module")
def graph(extract) -> StreetGraph:
    return StreetGraph.from_file(extract)


@pytest.fixture(scope="module")
def osm_ways(extract) -> list[tuple[int, dict[str, str], list[int]]]:
    ways = []
    with bz2.open(extract) as fh:
        for _, el in ET.iterparse(fh):
            if el.tag == "way":
                tags = {t.get("k"): t.get("v") for t in el.iter("tag")}
                ways.append((int(el.get("id")), tags, [int(nd.get("ref")) for nd in el.iter("nd")]))
    return ways


def test_extract_loads_with_plausible_node_and_edge_counts(graph, osm_ways):
    # README: 3,083 nodes and 733 ways in the file; street nodes are a subset.
    street_ways = [w for w in osm_ways if "highway" in w[1]]
    assert 1500 <= graph.node_count <= 3083
    assert len(graph.osm_ids) == graph.node_count
    assert 600 <= len(graph.lines) <= len(street_ways)
    counts = {m: graph.mode_edge_count(m) for m in MODES}
    assert counts["car"] == counts["motorbike"] < counts["bicycle"] < counts["foot"] <= graph.edge_count
    assert 2 * graph.node_count <= counts["foot"] <= 4 * graph.node_count
    assert any(kind == "railway=rail" for kind, _ in graph.barriers)
    min_lat, min_lon, max_lat, max_lon = graph.bounds
    assert 21.85 < min_lat < max_lat < 21.89 and -102.30 < min_lon < max_lon < -102.25


def test_one_way_ways_are_driven_only_along_their_direction_but_walked_both_ways(graph, osm_ways):
    car = {(u, v) for u, v, _ in graph.edges("car")}
    foot = {(u, v) for u, v, _ in graph.edges("foot")}
    checked = longer_back = 0
    for _, tags, refs in osm_ways:
        if tags.get("oneway") != "yes" or "junction" in tags or "access" in tags:
            continue
        if tags.get("highway") not in MOTOR_CLASSES:
            continue
        nodes = [graph.node_for_osm_id(r) for r in refs]
        if None in nodes:
            continue  # cut by the extract's border
        for a, b in pairwise(nodes):
            assert (a, b) in car and (b, a) not in car
            assert (a, b) in foot and (b, a) in foot
        start, end = nodes[0], nodes[-1]
        along = graph.shortest_time("car", start, end)
        against = graph.shortest_time("car", end, start)
        assert along is not None
        # Back against it means a detour; only rarely (a slow one-way service lane
        # beside a fast street) is the detour the quicker way.
        longer_back += against is None or against > along
        walk = graph.shortest_time("foot", start, end)
        assert graph.shortest_time("foot", end, start) == pytest.approx(walk)
        checked += 1
    assert checked >= 100
    assert longer_back >= 0.9 * checked


def _local_xy(lat, lon, lat0=21.868):
    k = 6_371_008.8 * math.pi / 180.0
    return lon * k * math.cos(math.radians(lat0)), lat * k


def _crosses(p, q, a, b):
    def side(o, s, t):
        return (s[0] - o[0]) * (t[1] - o[1]) - (s[1] - o[1]) * (t[0] - o[0])

    return side(p, q, a) * side(p, q, b) < 0 and side(a, b, p) * side(a, b, q) < 0


def test_railway_has_few_crossings_so_close_points_across_it_are_far_by_road(graph, osm_ways):
    rail_nodes = {r for _, tags, refs in osm_ways if tags.get("railway") == "rail" for r in refs}
    street_nodes = {r for _, tags, refs in osm_ways if "highway" in tags for r in refs}
    level_crossings = rail_nodes & street_nodes
    assert 1 <= len(level_crossings) <= 10

    rails = [[_local_xy(*p) for p in line] for kind, line in graph.barriers if kind == "railway=rail"]
    segments = [(a, b) for line in rails for a, b in pairwise(line)]
    xy = {v: _local_xy(*graph.coords(v)) for v in range(graph.node_count) if graph.is_usable(v, "foot")}

    def near_rail(p):
        return any(min(math.dist(p, a), math.dist(p, b)) < 150 for a, b in segments)

    close = [v for v, p in xy.items() if near_rail(p)]
    speed = graph.speeds_kmh["foot"] / 3.6
    detours = []
    for i, u in enumerate(close):
        search = graph.search("foot", u)
        for v in close[i + 1:]:
            straight = haversine_m(*graph.coords(u), *graph.coords(v))
            if straight > 80 or not any(_crosses(xy[u], xy[v], a, b) for a, b in segments):
                continue
            t = search.time_from(v)
            if t is not None:
                detours.append((t * speed / straight, u, v))
    assert len(detours) >= 10  # plenty of close pairs on opposite sides
    much_longer = [d for d in detours if d[0] > 5]
    assert len(much_longer) >= 5, sorted(detours)[-5:]


def _textbook_dijkstra(n, adjacency, source):
    dist = [math.inf] * n
    dist[source] = 0.0
    heap = [(0.0, source)]
    while heap:
        d, u = heapq.heappop(heap)
        if d > dist[u]:
            continue
        for v, w in adjacency[u]:
            if d + w < dist[v]:
                dist[v] = d + w
                heapq.heappush(heap, (d + w, v))
    return dist


@pytest.mark.parametrize("mode", MODES)
def test_travel_times_agree_with_a_textbook_dijkstra_over_the_same_edges(graph, mode):
    n = graph.node_count
    adjacency = [[] for _ in range(n)]
    for u, v, w in graph.edges(mode):
        adjacency[u].append((v, w))
    usable = [v for v in range(n) if graph.is_usable(v, mode)]
    rng = random.Random(f"aguascalientes-{mode}")
    reachable = 0
    # 10 targets x 5 sources: also exercises one lazy search answering several questions.
    for _ in range(10):
        target = rng.choice(usable)
        lazy = graph.search(mode, target)
        for _ in range(5):
            source = rng.choice(usable)
            want = _textbook_dijkstra(n, adjacency, source)[target]
            for got in (lazy.time_from(source), graph.shortest_time(mode, source, target)):
                if want == math.inf:
                    assert got is None
                else:
                    assert got == pytest.approx(want, abs=1e-6)
            reachable += want < math.inf
    assert reachable >= 30
