"""Street graph: access, one-way, barriers, lazy search, loading and its errors."""

import heapq
import json
import math
import random
from itertools import pairwise

import pytest

from dispatch.streets import (
    DEFAULT_SPEEDS_KMH,
    MODES,
    StreetGraph,
    StreetGraphError,
    haversine_m,
    synthetic_city,
)

BASE = (30.20, 114.90)
M_PER_DEG = 6_371_008.8 * math.pi / 180.0


def pt(x_m: float, y_m: float) -> tuple[float, float]:
    """(lat, lon) x metres east and y metres north of BASE."""
    return (BASE[0] + y_m / M_PER_DEG, BASE[1] + x_m / (M_PER_DEG * math.cos(math.radians(BASE[0]))))


def kmh(mode: str) -> float:
    return DEFAULT_SPEEDS_KMH[mode] / 3.6


def seconds_along(coords, path, mps):
    return sum(haversine_m(*coords[a], *coords[b]) for a, b in pairwise(path)) / mps


def square_with_one_way_side():
    # A(0) -> B(1) is one-way; B-C-D-A is the two-way way round.
    coords = [pt(0, 0), pt(100, 0), pt(100, 100), pt(0, 100)]
    ways = [([0, 1], "primary", "yes"), ([1, 2, 3, 0], "primary", "no")]
    return coords, StreetGraph.from_edges(coords, ways)


def textbook_dijkstra(n, edges, source):
    """Forward Dijkstra over (u, v, seconds) edges, independent of the module's code."""
    adj = [[] for _ in range(n)]
    for u, v, w in edges:
        adj[u].append((v, w))
    dist = [math.inf] * n
    dist[source] = 0.0
    heap = [(0.0, source)]
    while heap:
        d, u = heapq.heappop(heap)
        if d > dist[u]:
            continue
        for v, w in adj[u]:
            if d + w < dist[v]:
                dist[v] = d + w
                heapq.heappush(heap, (d + w, v))
    return dist


def test_one_way_street_is_not_driven_against_but_walked():
    coords, g = square_with_one_way_side()
    car = kmh("car")
    assert g.shortest_time("car", 0, 1) == pytest.approx(seconds_along(coords, [0, 1], car))
    # Against the one-way the car goes round the other three sides.
    assert g.shortest_time("car", 1, 0) == pytest.approx(seconds_along(coords, [1, 2, 3, 0], car))
    assert g.search("car", 0).path_from(1) == [1, 2, 3, 0]
    walk = seconds_along(coords, [0, 1], kmh("foot"))
    assert g.shortest_time("foot", 1, 0) == pytest.approx(walk)
    assert g.shortest_time("foot", 0, 1) == pytest.approx(walk)
    assert g.mode_edge_count("car") == 7 and g.mode_edge_count("foot") == 8


def test_oneway_minus_one_runs_against_the_drawing_direction():
    coords = [pt(0, 0), pt(100, 0)]
    g = StreetGraph.from_edges(coords, [([0, 1], "residential", "-1")])
    assert g.shortest_time("car", 0, 1) is None
    assert g.shortest_time("car", 1, 0) is not None
    assert g.shortest_time("motorbike", 0, 1) is None
    assert g.shortest_time("bicycle", 0, 1) is None
    assert g.shortest_time("foot", 0, 1) is not None


def test_footway_is_walked_but_never_driven():
    # 0 - 1 footway straight across; 0 - 2 - 1 a longer residential street.
    coords = [pt(0, 0), pt(100, 0), pt(50, 80)]
    g = StreetGraph.from_edges(coords, [([0, 1], "footway", "no"), ([0, 2, 1], "residential", "no")])
    assert g.search("car", 1).path_from(0) == [0, 2, 1]
    assert g.search("foot", 1).path_from(0) == [0, 1]
    # Cyclists push their bikes on footways: walking speed there.
    bike_footway = seconds_along(coords, [0, 1], kmh("foot"))
    bike_street = seconds_along(coords, [0, 2, 1], kmh("bicycle"))
    assert g.shortest_time("bicycle", 0, 1) == pytest.approx(min(bike_footway, bike_street))

    only_footway = StreetGraph.from_edges(
        [pt(0, 0), pt(100, 0), pt(0, 300), pt(100, 300)],
        [([0, 1], "footway", "no"), ([2, 3], "residential", "no")],
    )
    # Standing on the footway, a car unit snaps to the street, a walker to the footway.
    assert only_footway.nearest_node(*pt(5, 0), "car")[0] == 2
    assert only_footway.nearest_node(*pt(5, 0), "foot")[0] == 0
    assert not only_footway.is_usable(0, "car") and only_footway.is_usable(0, "foot")


def test_railway_with_one_crossing_makes_the_straight_line_nearer_point_slower():
    # Streets run along both sides of a railway at y=0; the only crossing is at x=1000.
    south = [pt(x, -20) for x in range(0, 1001, 100)]
    north = [pt(x, 20) for x in range(0, 1001, 100)]
    coords = south + north
    k = len(south)
    g = StreetGraph.from_edges(
        coords,
        [
            (list(range(k)), "residential", "no"),
            (list(range(k, 2 * k)), "residential", "no"),
            ([k - 1, 2 * k - 1], "residential", "no"),  # the level crossing
        ],
        barriers=[("railway=rail", [pt(-50, 0), pt(1050, 0)])],
    )
    incident, _ = g.nearest_node(*pt(0, -20), "car")
    across, d_across = g.nearest_node(*pt(0, 20), "car")  # 40 m away, other side of the tracks
    along, d_along = g.nearest_node(*pt(300, -20), "car")  # 300 m away, same side
    assert (incident, across, along) == (0, k, 3)
    assert d_across < 1 and d_along < 1
    straight_across = haversine_m(*g.coords(incident), *g.coords(across))
    straight_along = haversine_m(*g.coords(incident), *g.coords(along))
    assert straight_across < straight_along
    search = g.search("car", incident)
    assert search.time_from(across) > 5 * search.time_from(along)
    assert g.barriers == [("railway=rail", [pt(-50, 0), pt(1050, 0)])]


def test_lazy_search_gives_the_same_times_as_a_fresh_full_search():
    g = synthetic_city(900, seed=3)
    rng = random.Random(5)
    for mode in MODES:
        edges = list(g.edges(mode))
        for _ in range(3):
            target = rng.randrange(g.node_count)
            lazy = g.search(mode, target)
            # Reversed edges: times from every node to target by a plain full Dijkstra.
            full = textbook_dijkstra(g.node_count, [(v, u, w) for u, v, w in edges], target)
            nodes = rng.sample(range(g.node_count), 60)
            for i, node in enumerate(nodes):
                bound = math.inf if i % 3 else rng.uniform(0, 600)  # interleave bounded questions
                got = lazy.time_from(node, bound)
                want = full[node]
                if want == math.inf or want > bound:
                    assert got is None
                else:
                    assert got == pytest.approx(want, abs=1e-6)
                fresh = g.search(mode, target).time_from(node)
                assert (fresh is None) == (want == math.inf)
                if fresh is not None:
                    assert fresh == pytest.approx(want, abs=1e-6)


def test_time_beyond_the_bound_is_none_and_a_wider_question_still_answers():
    g = synthetic_city(2500, seed=1)
    target = g.nearest_node(*g.coords(g.node_count // 2), "car")[0]
    rng = random.Random(2)
    far = max(rng.sample(range(g.node_count), 50), key=lambda v: haversine_m(*g.coords(v), *g.coords(target)))
    true = g.shortest_time("car", far, target)
    assert true is not None and true > 60
    search = g.search("car", target)
    assert search.time_from(far, bound_s=true / 2) is None
    explored = search.settled_count
    assert 0 < explored < g.node_count // 2  # stopped at the bound, not the whole city
    assert search.time_from(far, bound_s=true / 2) is None  # asking again is no different
    assert search.time_from(far) == pytest.approx(true)
    assert search.time_from(far, bound_s=true) == pytest.approx(true)
    assert search.time_from(far, bound_s=true * 0.999) is None
    assert search.time_from(target) == 0.0
    assert search.time_from(target, bound_s=-1) is None


def test_unreachable_node_gives_none_everywhere():
    coords = [pt(0, 0), pt(100, 0), pt(0, 500), pt(100, 500)]
    g = StreetGraph.from_edges(coords, [([0, 1], "residential", "no"), ([2, 3], "residential", "no")])
    search = g.search("car", 0)
    assert search.time_from(2) is None
    assert search.path_from(3) is None
    assert g.route("car", 3, 0) is None
    assert g.shortest_time("foot", 2, 1) is None
    assert search.time_from(1) is not None  # an exhausted search still answers what it found


def test_route_coordinates_start_at_the_source_and_end_at_the_target():
    g = synthetic_city(1600, seed=4)
    rng = random.Random(9)
    checked = 0
    while checked < 20:
        source, target = rng.randrange(g.node_count), rng.randrange(g.node_count)
        points = g.route("car", source, target)
        if points is None:
            continue
        checked += 1
        assert points[0] == g.coords(source)
        assert points[-1] == g.coords(target)
        path = g.search("car", target).path_from(source)
        assert [g.coords(v) for v in path] == points
        # Each step is a car edge, and the steps add up to the travel time.
        cost = {}
        for u, v, w in g.edges("car"):
            cost[(u, v)] = min(w, cost.get((u, v), math.inf))
        assert sum(cost[(a, b)] for a, b in pairwise(path)) == pytest.approx(
            g.shortest_time("car", source, target)
        )
    assert g.route("car", 5, 5) == [g.coords(5)]


def test_straight_distance_over_max_speed_never_exceeds_the_travel_time():
    g = synthetic_city(1600, seed=6)
    rng = random.Random(3)
    for mode in MODES:
        vmax = g.max_speed_mps(mode)
        assert 0 < vmax <= DEFAULT_SPEEDS_KMH[mode] / 3.6 + 1e-9
        target = rng.randrange(g.node_count)
        search = g.search(mode, target)
        for node in rng.sample(range(g.node_count), 100):
            t = search.time_from(node)
            if t is not None:
                assert haversine_m(*g.coords(node), *g.coords(target)) / vmax <= t + 1e-9


def test_car_speed_is_capped_by_street_class_and_maxspeed_but_walking_is_not():
    coords = [pt(0, 0), pt(1000, 0)]
    length = haversine_m(*coords[0], *coords[1])

    def car_and_foot(highway, tags=None, speeds=None):
        way = ([0, 1], highway, "no") if tags is None else ([0, 1], highway, "no", tags)
        g = StreetGraph.from_edges(coords, [way], speeds)
        return g.shortest_time("car", 0, 1), g.shortest_time("foot", 0, 1)

    walk = length / kmh("foot")
    assert car_and_foot("primary") == pytest.approx((length / (40 / 3.6), walk))
    assert car_and_foot("residential") == pytest.approx((length / (30 / 3.6), walk))
    assert car_and_foot("living_street") == pytest.approx((length / (20 / 3.6), walk))
    assert car_and_foot("primary", {"maxspeed": "25"}) == pytest.approx((length / (25 / 3.6), walk))
    assert car_and_foot("primary", {"maxspeed": "MX:urban"}) == pytest.approx((length / (40 / 3.6), walk))
    assert car_and_foot("primary", speeds={"car": 20, "foot": 4})[0] == pytest.approx(length / (20 / 3.6))
    assert car_and_foot("primary", speeds={"car": 20, "foot": 4})[1] == pytest.approx(length / (4 / 3.6))
    g = StreetGraph.from_edges(coords, [([0, 1], "residential", "no")], {"car": 60})
    assert g.max_speed_mps("car") == pytest.approx(30 / 3.6)  # the fastest edge, not the mode speed


@pytest.mark.parametrize(
    ("highway", "tags", "allowed"),
    [
        ("residential", {"access": "no", "foot": "yes"}, {"foot"}),
        ("residential", {"motor_vehicle": "no"}, {"foot", "bicycle"}),
        ("residential", {"access": "private"}, set()),
        ("residential", {"vehicle": "no"}, {"foot"}),
        ("residential", {"motorcar": "no"}, {"foot", "bicycle", "motorbike"}),
        ("trunk", {}, {"bicycle", "motorbike", "car"}),
        ("trunk", {"foot": "yes"}, set(MODES)),
        ("motorway", {}, {"motorbike", "car"}),
        ("steps", {}, {"foot"}),
        ("pedestrian", {}, {"foot", "bicycle"}),
        ("pedestrian", {"access": "yes"}, {"foot", "bicycle"}),  # access=yes does not open it to cars
        ("pedestrian", {"motor_vehicle": "destination"}, set(MODES)),
        ("path", {"bicycle": "no"}, {"foot"}),
        ("cycleway", {}, {"foot", "bicycle"}),
    ],
)
def test_access_tags_open_and_close_streets_per_mode(highway, tags, allowed):
    g = StreetGraph.from_edges([pt(0, 0), pt(100, 0)], [([0, 1], highway, "no", tags)])
    got = {m for m in MODES if g.shortest_time(m, 0, 1) is not None}
    assert got == allowed


def test_bicycles_follow_one_way_unless_exempted_and_push_when_told_to_dismount():
    coords = [pt(0, 0), pt(100, 0)]

    def bike_back(tags):
        return StreetGraph.from_edges(coords, [([0, 1], "residential", "yes", tags)]).shortest_time(
            "bicycle", 1, 0
        )

    assert bike_back({}) is None
    assert bike_back({"oneway:bicycle": "no"}) is not None
    assert bike_back({"cycleway": "opposite_lane"}) is not None
    g = StreetGraph.from_edges(coords, [([0, 1], "residential", "no", {"bicycle": "dismount"})])
    assert g.shortest_time("bicycle", 0, 1) == pytest.approx(seconds_along(coords, [0, 1], kmh("foot")))
    g = StreetGraph.from_edges(coords, [([0, 1], "footway", "no", {"bicycle": "designated"})])
    assert g.shortest_time("bicycle", 0, 1) == pytest.approx(seconds_along(coords, [0, 1], kmh("bicycle")))


@pytest.mark.parametrize(
    ("coords", "ways", "speeds", "message"),
    [
        ([pt(0, 0), pt(1, 0)], [([0], "residential", "no")], None, "ways[0]: a way needs at least 2 nodes"),
        ([pt(0, 0), pt(1, 0)], [([0, 2], "residential", "no")], None, "ways[0]: node index 2 out of range"),
        ([pt(0, 0), pt(1, 0)], [([0, 1], "residental", "no")], None, "unknown highway class 'residental'"),
        ([pt(0, 0), pt(1, 0)], [([0, 1], "residential", "maybe")], None, "ways[0]: oneway must be"),
        ([(91.0, 0.0), pt(1, 0)], [([0, 1], "residential", "no")], None, "coords[0]: lat/lon out of range"),
        ([(math.nan, 0.0), pt(1, 0)], [([0, 1], "residential", "no")], None, "coords[0]: coordinate must be"),
        ([pt(0, 0), pt(1, 0)], [([0, 1], "residential", "no")], {"truck": 50}, "unknown mode 'truck'"),
        ([pt(0, 0), pt(1, 0)], [([0, 1], "residential", "no")], {"car": 0}, "car speed must be a positive"),
        ([pt(0, 0), pt(1, 0)], [], None, "no streets"),
    ],
)
def test_bad_input_raises_street_graph_error_naming_the_problem(coords, ways, speeds, message):
    with pytest.raises(StreetGraphError, match=message.replace("[", r"\[").replace("]", r"\]")):
        StreetGraph.from_edges(coords, ways, speeds)


def feature(coordinates, geometry="LineString", **props):
    return {"type": "Feature", "properties": props, "geometry": {"type": geometry, "coordinates": coordinates}}


def lonlat(x_m, y_m):
    lat, lon = pt(x_m, y_m)
    return [lon, lat]


def write_geojson(path, features):
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    return path


def test_geojson_street_file_loads_lines_joined_at_shared_points_and_keeps_barriers(tmp_path):
    a, b, c, d = lonlat(0, 0), lonlat(200, 0), lonlat(200, 200), lonlat(400, 200)
    b_again = [b[0] + 2e-9, b[1] - 2e-9]  # same point after rounding to 7 decimals
    path = write_geojson(
        tmp_path / "tieshan-streets.geojson",
        [
            feature([a, b], highway="primary", oneway="no", name="Tieshan Road", maxspeed=20),
            feature([[b_again, c], [c, d]], "MultiLineString", highway="residential", oneway=True),
            feature([[lonlat(100, -50), lonlat(100, 300)]], "MultiLineString", railway="rail"),
            feature([[lonlat(0, 300), lonlat(400, 300), lonlat(400, 350), lonlat(0, 300)]], "Polygon", natural="water"),
            feature(lonlat(0, 0), "Point", highway="traffic_signals"),
            feature([lonlat(0, 0), lonlat(0, 50)], highway="construction"),
        ],
    )
    g = StreetGraph.from_file(path)
    assert g.node_count == 4  # a, b, c, d: b written twice, the construction way left out
    assert sorted(kind for kind, _ in g.barriers) == ["natural=water", "railway=rail"]
    assert len(g.lines) == 3 and g.lines[0].name == "Tieshan Road"
    na = g.nearest_node(a[1], a[0])[0]
    nd = g.nearest_node(d[1], d[0])[0]
    nb = g.nearest_node(b[1], b[0])[0]
    assert g.coords(na) == pytest.approx((a[1], a[0]))
    # maxspeed 20 km/h on the primary part, residential cap 30 km/h on the rest; one-way d <- a only.
    length_ab = haversine_m(a[1], a[0], b[1], b[0])
    assert g.shortest_time("car", na, nb) == pytest.approx(length_ab / (20 / 3.6))
    assert g.shortest_time("car", na, nd) > 0
    assert g.shortest_time("car", nd, na) is None
    assert g.shortest_time("foot", nd, na) is not None
    min_lat, min_lon, max_lat, max_lon = g.bounds
    assert min_lat <= a[1] <= max_lat and min_lon <= a[0] <= max_lon


def test_geojson_roundabout_without_oneway_property_is_one_way(tmp_path):
    ring = [lonlat(0, 0), lonlat(30, 30), lonlat(0, 60), lonlat(-30, 30), lonlat(0, 0)]
    g = StreetGraph.from_geojson(
        write_geojson(tmp_path / "ring.geojson", [feature(ring, highway="primary", junction="roundabout")])
    )
    first = g.nearest_node(*pt(0, 0))[0]
    second = g.nearest_node(*pt(30, 30))[0]
    quarter = g.shortest_time("car", first, second)
    assert g.shortest_time("car", second, first) == pytest.approx(3 * quarter, rel=0.01)
    assert g.shortest_time("foot", second, first) == pytest.approx(g.shortest_time("foot", first, second))


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ([feature([lonlat(0, 0), lonlat(1, 0)], highway="residential"), feature([lonlat(0, 0)], highway="primary")],
         "streets.geojson: feature 1: LineString needs at least 2 points"),
        ([feature([lonlat(0, 0), lonlat(9, 0)], highway="residential", name="Hill St", oneway="sometimes")],
         "streets.geojson: feature 0 (Hill St): oneway must be"),
        ([feature([lonlat(0, 0), [200.0, 30.0]], highway="residential")],
         "streets.geojson: feature 0: lat/lon out of range"),
        ([feature([lonlat(0, 0), ["114.9", 30.2]], highway="residential")],
         "streets.geojson: feature 0: coordinate must be a finite number"),
        ([feature([lonlat(0, 0), lonlat(9, 0)], highway="residential", maxspeed="fast")],
         "streets.geojson: feature 0: maxspeed must be a positive km/h number"),
        ([feature([[lonlat(0, 0), lonlat(9, 0)]], "GeometryCollection", highway="residential")],
         "streets.geojson: feature 0: geometry must be LineString or MultiLineString"),
        ([{"type": "Feature", "properties": {"highway": "primary"}}], "streets.geojson: feature 0: missing geometry"),
        ([feature([lonlat(0, 0), lonlat(9, 0)], railway="rail")], "streets.geojson: no streets"),
    ],
)
def test_malformed_geojson_names_the_file_and_the_feature(tmp_path, features, message):
    path = write_geojson(tmp_path / "streets.geojson", features)
    with pytest.raises(StreetGraphError) as caught:
        StreetGraph.from_file(path)
    assert str(caught.value).startswith(message)


def test_unreadable_street_files_name_the_file(tmp_path):
    bad_json = tmp_path / "broken.geojson"
    bad_json.write_text("{not json", encoding="utf-8")
    with pytest.raises(StreetGraphError, match="broken.geojson: not valid JSON"):
        StreetGraph.from_file(bad_json)
    not_fc = tmp_path / "list.json"
    not_fc.write_text("[]", encoding="utf-8")
    with pytest.raises(StreetGraphError, match="list.json: expected a GeoJSON FeatureCollection"):
        StreetGraph.from_file(not_fc)
    with pytest.raises(StreetGraphError, match="absent.geojson: file not found"):
        StreetGraph.from_file(tmp_path / "absent.geojson")
    with pytest.raises(StreetGraphError, match="streets.shp: unknown street file type"):
        StreetGraph.from_file(tmp_path / "streets.shp")


def test_nearest_node_matches_a_brute_force_scan_inside_and_outside_the_city():
    g = synthetic_city(2000, seed=8)
    rng = random.Random(4)
    min_lat, min_lon, max_lat, max_lon = g.bounds
    pad_lat, pad_lon = (max_lat - min_lat), (max_lon - min_lon)
    for i in range(300):
        lat = rng.uniform(min_lat - pad_lat * (i % 2), max_lat + pad_lat * (i % 2))
        lon = rng.uniform(min_lon - pad_lon * (i % 2), max_lon + pad_lon * (i % 2))
        mode = (None, *MODES)[i % 5]
        node, dist = g.nearest_node(lat, lon, mode)
        best = min(
            haversine_m(lat, lon, *g.coords(v)) for v in range(g.node_count) if g.is_usable(v, mode)
        )
        assert g.is_usable(node, mode)
        assert dist == pytest.approx(best, rel=1e-6, abs=1e-6)
    with pytest.raises(ValueError, match="unknown mode"):
        g.nearest_node(30.2, 114.9, "tram")


def test_synthetic_city_builds_and_most_random_pairs_are_reachable_by_car():
    g = synthetic_city(2000)
    assert 1900 <= g.node_count <= 2100
    assert g.mode_edge_count("car") < g.mode_edge_count("foot") <= g.edge_count
    assert [kind for kind, _ in g.barriers] == ["waterway=river"]
    rng = random.Random(11)
    pairs = [(rng.randrange(g.node_count), rng.randrange(g.node_count)) for _ in range(200)]
    reachable = sum(g.shortest_time("car", s, t) is not None for s, t in pairs)
    assert reachable >= 0.95 * len(pairs)
    # Same seed, same city: benchmarks can be compared run to run.
    again = synthetic_city(2000)
    assert [again.coords(v) for v in range(0, 2000, 97)] == [g.coords(v) for v in range(0, 2000, 97)]


# ---------------------------------------------------------------------- the compiled search loop


def test_the_install_builds_the_compiled_search_loop():
    """`pip install -e .` (make test, make run) compiles dispatch/_search.c; without it the road search
    runs in Python, a few times slower (bench.engine's choose figure would not hold)."""
    import importlib

    try:
        importlib.import_module("dispatch._search")
    except ImportError as e:  # pragma: no cover - a machine without gcc or Python's headers
        pytest.fail(f"dispatch._search is not built ({e}): install gcc and python3-dev, then `pip install -e .` again")


def test_the_compiled_heap_pops_in_the_order_python_orders_the_tuples():
    search = pytest.importorskip("dispatch._search")
    rng = random.Random(4)
    items = [(float(rng.randrange(20)), rng.randrange(50)) for _ in range(500)]  # many equal seconds
    h = search.Heap()
    assert len(h) == 0 and h.min() == math.inf
    for d, u in items:
        h.push(d, u)
    assert len(h) == 500 and h.min() == min(items)[0]
    assert [h.pop() for _ in range(500)] == sorted(items)
    with pytest.raises(IndexError):
        h.pop()
    with pytest.raises(TypeError):
        search.expand([], {}, {}, {}, None, None, None, 0, 1.0)  # a list is not the search's heap


def test_the_compiled_loops_refuse_arguments_of_the_wrong_kind_with_a_python_error():
    search = pytest.importorskip("dispatch._search")
    from array import array

    with pytest.raises(TypeError):
        search.Heap().push("soon", 1)
    with pytest.raises(TypeError):
        search.Heap().push(1.0, "node")
    xs = array("d", [0.0, 1.0])
    grid = (xs, xs, array("l", [0, 2]), array("l", [0, 1]), bytearray(b"\x01\x01"))
    assert search.nearest(*grid, 0.2, 0.2, 0.0, 0.0, 10.0, 1, 1) == 0
    with pytest.raises(TypeError, match="real number"):
        search.nearest(*grid, "x", 0.2, 0.0, 0.0, 10.0, 1, 1)
    with pytest.raises(TypeError, match="format 'l'"):
        search.nearest(xs, xs, array("i", [0, 2]), array("l", [0, 1]), bytearray(b"\x01\x01"), 0.2, 0.2, 0.0, 0.0, 10.0, 1, 1)
    with pytest.raises(ValueError, match="do not match the grid"):
        search.nearest(*grid, 0.2, 0.2, 0.0, 0.0, 10.0, 2, 1)  # two cells, one start array entry short


@pytest.mark.parametrize("mode", ["car", "foot"])
def test_the_compiled_search_settles_the_same_nodes_with_the_same_times_and_hops_as_python(mode, monkeypatch):
    """The same questions (growing and shrinking bounds, unreachable and far nodes) asked of a search
    run in C and of one run by the Python loop: the same answers, the same settled times, tentative
    times and next hops, the same frontier after every question."""
    import dispatch.streets as streets

    pytest.importorskip("dispatch._search")
    graph = synthetic_city(3000, seed=5)
    rng = random.Random(9)
    for _ in range(6):
        target = rng.randrange(graph.node_count)
        fast = graph.search(mode, target)
        with monkeypatch.context() as m:
            m.setattr(streets, "_Heap", None)
            slow = graph.search(mode, target)
        assert isinstance(slow._heap, list) and not isinstance(fast._heap, list)
        for _ in range(60):
            node, bound = rng.randrange(graph.node_count), rng.choice([math.inf, rng.uniform(0, 900)])
            expect = slow._done.get(node)
            if expect is not None:
                expect = expect if expect <= bound else None
            else:
                expect = slow._expand(node, bound)
            assert fast.time_from(node, bound) == expect
            assert fast._done == slow._done and fast._best == slow._best and fast._next == slow._next
            assert fast.frontier_s == (slow._heap[0][0] if slow._heap else math.inf)
        far = max(fast._done, key=fast._done.get)
        assert fast.path_from(far)[-1] == target


def test_the_compiled_nearest_node_query_picks_the_same_node_as_python_ties_and_far_points_included():
    """Equally near nodes (a street grid drawn twice over, nodes on a lattice) must go to the same one,
    as must points far outside the grid and modes that may use only some nodes."""
    pytest.importorskip("dispatch._search")
    coords = [pt(x * 50.0, y * 50.0) for x in range(30) for y in range(20)]
    coords += coords[:200]  # the same places again: every one of them is a tie
    ways = [([i, i + 1], "residential", "no") for i in range(0, len(coords) - 1) if (i + 1) % 20]
    ways += [([i, i + 20], "footway", "no") for i in range(0, 560)]
    g = StreetGraph.from_edges(coords, ways)
    grid = g._grid
    rng = random.Random(12)
    lat0, lon0 = pt(0, 0)
    lat1, lon1 = pt(1450, 950)
    for i in range(2000):
        far = 3.0 if i % 4 == 0 else 0.0
        lat = rng.uniform(lat0 - far * (lat1 - lat0), lat1 + far * (lat1 - lat0))
        lon = rng.uniform(lon0 - far * (lon1 - lon0), lon1 + far * (lon1 - lon0))
        if i % 3 == 0:  # exactly on a lattice point, or half-way between two
            lat, lon = pt(rng.randrange(30) * 50.0 + 25.0 * (i % 2), rng.randrange(20) * 50.0)
        usable = g._usable[(None, *MODES)[i % 5]]
        x, y = (lon - grid.lon0) * grid.kx, (lat - grid.lat0) * grid.ky
        assert grid.nearest(lat, lon, usable) == grid._nearest(x, y, usable)
    # so far away that the cell numbers do not fit the compiled loop's integers: Python answers
    for lat, lon in ((1e15, 1e15), (-1e17, 3.0), (2.0, -1e30)):
        x, y = (lon - grid.lon0) * grid.kx, (lat - grid.lat0) * grid.ky
        assert grid.nearest(lat, lon, g._usable[None]) == grid._nearest(x, y, g._usable[None]) is not None
