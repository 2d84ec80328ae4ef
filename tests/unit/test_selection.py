"""Choosing a unit: the ring search with refined lower bounds finds exactly what a plain computation finds."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from dispatch.core.records import UnitRec, UnitState
from dispatch.core.selection import ModeGrids, Router, UnitGrid, choose, straight_m
from dispatch.events import TravelMode, UnitKind
from dispatch.streets import synthetic_city

SPEEDS = {"foot": 5.0, "bicycle": 15.0, "motorbike": 35.0, "car": 40.0}
MODES = ("car", "motorbike", "bicycle", "foot")
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _world(
    n_nodes: int, n_units: int, seed: int, per_mode: bool = False
) -> tuple[object, dict[str, UnitRec], UnitGrid | ModeGrids, random.Random]:
    rng = random.Random(seed)
    graph = synthetic_city(n_nodes, seed=seed)
    units: dict[str, UnitRec] = {}
    grid: UnitGrid | ModeGrids = ModeGrids(cell_m=300.0, ref_lat=30.2) if per_mode else UnitGrid(cell_m=300.0, ref_lat=30.2)
    for i in range(n_units):
        lat, lon = graph.coords(rng.randrange(graph.node_count))
        u = UnitRec(
            id=f"u{i:04d}", kind=UnitKind.police, mode=TravelMode(MODES[i % 4]), talkgroup="police",
            lat=lat + rng.uniform(-0.0002, 0.0002), lon=lon + rng.uniform(-0.0002, 0.0002), fix_time=NOW,
            state=UnitState.available if i % 5 else UnitState.busy,
        )
        units[u.id] = u
        if isinstance(grid, ModeGrids):
            grid.move(u.id, u.lat, u.lon, str(u.mode))  # type: ignore[arg-type]
        else:
            grid.move(u.id, u.lat, u.lon)  # type: ignore[arg-type]
    return graph, units, grid, rng


def _brute_force(graph: object, units: dict[str, UnitRec], lat: float, lon: float, why_not: object) -> list[tuple[float, str]]:
    """Travel time of every acceptable unit from one full backward search per mode (no bounds, no pruning)."""
    out = []
    searches: dict[str, tuple[object, float]] = {}
    for u in units.values():
        if why_not(u) is not None:  # type: ignore[operator]
            continue
        mode = str(u.mode)
        speed = SPEEDS[mode] / 3.6
        if mode not in searches:
            tnode, tsnap = graph.nearest_node(lat, lon, mode)  # type: ignore[attr-defined]
            searches[mode] = (graph.search(mode, tnode), tsnap)  # type: ignore[attr-defined]
        search, tsnap = searches[mode]
        unode, usnap = graph.nearest_node(u.lat, u.lon, mode)  # type: ignore[attr-defined]
        road = search.time_from(unode)  # type: ignore[attr-defined]
        if road is not None:
            out.append((road + (usnap + tsnap) / speed, u.id))
    return sorted(out)


def _available(u: UnitRec) -> str | None:
    return None if u.state is UnitState.available else u.state.value


@pytest.mark.parametrize("seed,per_mode", [(1, False), (2, False), (1, True), (3, True)])
def test_the_chosen_candidates_are_exactly_the_fastest_by_road_as_a_plain_shortest_path_computation_finds(seed, per_mode):
    graph, units, grid, rng = _world(4000, 300, seed, per_mode)
    router = Router(graph, SPEEDS)
    for _ in range(25):
        lat, lon = graph.coords(rng.randrange(graph.node_count))  # type: ignore[attr-defined]
        want = rng.choice((1, 3, 6))
        c = choose(grid, units, router, lat, lon, _available, want=want)
        expected = _brute_force(graph, units, lat, lon, _available)[:want]
        assert [x.unit for x in c.candidates] == [uid for _, uid in expected]
        for cand, (eta, _) in zip(c.candidates, expected):
            assert cand.eta_s == pytest.approx(eta, abs=1e-6) and cand.method == "road"
        assert c.chosen == c.candidates[0]
        assert c.examined < len(units)  # the rings stop long before every unit is looked at


def test_units_ruled_out_are_named_with_their_reason_and_never_chosen():
    graph, units, grid, rng = _world(2000, 120, 5)
    router = Router(graph, SPEEDS)
    lat, lon = graph.coords(17)  # type: ignore[attr-defined]
    c = choose(grid, units, router, lat, lon, _available, want=4, skipped_limit=3)
    assert all(units[x.unit].state is UnitState.available for x in c.candidates)
    assert len(c.skipped) <= 3 and all(reason == "busy" for _, reason in c.skipped)


@pytest.mark.parametrize("per_mode", [False, True])
def test_without_a_street_graph_the_straight_line_at_the_modes_speed_decides(per_mode):
    _, units, grid, rng = _world(500, 60, 7, per_mode)
    router = Router(None, SPEEDS)
    lat, lon = 30.2, 114.9
    c = choose(grid, units, router, lat, lon, _available, want=5)
    expected = sorted(
        (straight_m(lat, lon, u.lat, u.lon) / (SPEEDS[str(u.mode)] / 3.6), u.id)  # type: ignore[arg-type]
        for u in units.values() if _available(u) is None
    )[:5]
    assert [x.unit for x in c.candidates] == [uid for _, uid in expected]
    assert all(x.method == "straight" for x in c.candidates)
    assert [x.eta_s for x in c.candidates] == pytest.approx([eta for eta, _ in expected])


def test_no_acceptable_unit_means_no_choice_and_an_empty_grid_too():
    graph, units, grid, _ = _world(500, 20, 9)
    router = Router(graph, SPEEDS)
    c = choose(grid, units, router, 30.2, 114.9, lambda u: "nobody", want=3)
    assert c.chosen is None and c.candidates == [] and c.examined == 20
    empty = choose(UnitGrid(), {}, router, 30.2, 114.9, _available, want=3)
    assert empty.chosen is None and empty.examined == 0
    assert choose(ModeGrids(), {}, router, 30.2, 114.9, _available, want=3).chosen is None


def test_grid_cells_shrink_in_a_dense_district_and_keep_their_usual_size_in_a_sparse_one():
    from district_fixtures import make_district

    from dispatch.core.decide import EngineState, grid_cell_m

    sparse = make_district()  # two units on about 5 km2
    dense = make_district(units=[{"id": f"d{i}", "kind": "police", "mode": "car"} for i in range(400)])
    assert grid_cell_m(sparse) == 300.0
    assert 100.0 <= grid_cell_m(dense) < 200.0
    assert EngineState(dense).free.cell_m == EngineState(dense).grid.cell_m == grid_cell_m(dense)


def test_choices_do_not_depend_on_which_road_searches_are_kept(monkeypatch):
    """Searches kept from earlier choices (further along) and fresh ones give the same answers; the
    cache holds every (mode, target) pair of a small graph and sheds searches over its node budget."""
    import dispatch.core.selection as selection

    graph, units, grid, rng = _world(600, 120, 5, per_mode=True)
    kept = Router(graph, SPEEDS)
    pairs = 4 * graph.node_count  # type: ignore[attr-defined]
    assert kept._cache_size == (max(selection.SEARCH_CACHE_MIN, pairs) if pairs <= selection.SEARCH_CACHE_MAX else selection.SEARCH_CACHE_MIN)
    assert Router(synthetic_city(4000, seed=1), SPEEDS)._cache_size == selection.SEARCH_CACHE_MIN  # a big graph: as before
    places = [graph.coords(rng.randrange(graph.node_count)) for _ in range(300)]  # type: ignore[attr-defined]
    for lat, lon in places + places:  # the second round reuses the searches the first one began
        fresh = Router(graph, SPEEDS, cache_size=1)
        a = choose(grid, units, kept, lat, lon, _available)
        b = choose(grid, units, fresh, lat, lon, _available)
        assert (a.candidates, a.skipped, a.examined) == (b.candidates, b.skipped, b.examined)
    assert len(kept._searches) > selection.SEARCH_CACHE_MIN // 2
    monkeypatch.setattr(selection, "SEARCH_CACHE_NODES", 50)
    kept._trim()
    assert sum(s.settled_count for s in kept._searches.values()) <= 50 or len(kept._searches) == 1


def test_the_search_budget_is_kept_when_every_search_is_already_cached(monkeypatch):
    """Once every (mode, target) pair of a small graph is kept there are no new searches, but the kept
    ones still grow as choices ask them further: the budget is checked on every kind of call."""
    import dispatch.core.selection as selection

    graph, units, grid, rng = _world(600, 120, 5, per_mode=True)
    router = Router(graph, SPEEDS)
    places = [graph.coords(rng.randrange(graph.node_count)) for _ in range(8)]  # type: ignore[attr-defined]
    for lat, lon in places:
        choose(grid, units, router, lat, lon, _available)
    assert router._new_searches < selection.SEARCH_CACHE_CHECK_EVERY, "no check yet"
    monkeypatch.setattr(selection, "SEARCH_CACHE_NODES", 50)
    trimmed: list[int] = []
    trim = router._trim

    def counted() -> None:
        trim()
        kept = list(router._searches.values())
        trimmed.append(sum(s.settled_count for s in kept) if len(kept) > 1 else 0)  # (one search is always kept)

    router._trim = counted  # type: ignore[method-assign]
    for _ in range(40):  # the same places again: the searches they need are kept
        for lat, lon in places:
            choose(grid, units, router, lat, lon, _available)
    assert len(trimmed) >= 2 and all(n <= 50 for n in trimmed), trimmed
    # the running count the check keeps (only searches handed out since the last check are counted
    # again) is the plain sum over the kept searches
    router._trim = trim  # type: ignore[method-assign]
    trim()
    assert router._settled_total == sum(s.settled_count for s in router._searches.values())


@pytest.mark.parametrize("lat0, lon0", [(30.2, 114.9), (21.88, -102.29), (-33.9, -70.6), (-33.9, 151.2)])
def test_each_unit_comes_up_once_in_the_ring_of_its_grid_distance_on_any_side_of_the_equator_and_meridian(lat0, lon0):
    """The ring walk's cell keys are single integers: rings must still hold exactly the units at that
    Chebyshev distance in cells, west and south of zero too, in the order rows then columns."""
    rng = random.Random(7)
    grid = UnitGrid(cell_m=150.0, ref_lat=lat0)
    where = {}
    for i in range(300):
        lat, lon = lat0 + rng.uniform(-0.03, 0.03), lon0 + rng.uniform(-0.03, 0.03)
        grid.move(f"u{i}", lat, lon)
        where[f"u{i}"] = grid.cell(lat, lon)
    grid.move("u0", lat0 + 0.02, lon0 - 0.02)  # moved: found only where it is now
    where["u0"] = grid.cell(lat0 + 0.02, lon0 - 0.02)
    ci, cj = grid.cell(lat0, lon0)
    seen = []
    for n, (bound_m, units) in enumerate(grid.rings(lat0, lon0)):
        assert bound_m == n * 150.0
        assert all(max(abs(where[u][0] - ci), abs(where[u][1] - cj)) == n for u in units)
        # rows ci - n and ci + n alternately from cj - n up, then columns cj - n and cj + n from ci - n + 1 up
        order = [(ci, cj)] if n == 0 else (
            [c for dj in range(-n, n + 1) for c in ((ci - n, cj + dj), (ci + n, cj + dj))]
            + [c for di in range(-n + 1, n) for c in ((ci + di, cj - n), (ci + di, cj + n))]
        )
        assert [where[u] for u in units] == sorted((where[u] for u in units), key=order.index)
        seen.extend(units)
    assert sorted(seen) == sorted(where)
    assert grid.units_in_cell(lat0 + 0.02, lon0 - 0.02) >= {"u0"}
