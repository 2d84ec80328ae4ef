"""A small district with a river and one bridge, for engine tests, and a camera config for the camera
adapter's tests (imported as `district_fixtures`)."""

from __future__ import annotations


RIVER_LATS = (30.2012, 30.1988)  # a north and a south street, a river between them
RIVER_LONS = [114.880 + 0.002 * i for i in range(21)]  # 114.880 .. 114.920
BRIDGE_LON = RIVER_LONS[-1]  # the only crossing, at the east end


def make_river_graph():
    """Two parallel streets 270 m apart with the only bridge 2 km east: straight-line
    neighbours across the river are far apart by road."""
    from dispatch.streets import StreetGraph

    coords = [(lat, lon) for lat in RIVER_LATS for lon in RIVER_LONS]
    n = len(RIVER_LONS)
    north = list(range(n))
    south = list(range(n, 2 * n))
    ways = [(north, "residential", "no"), (south, "residential", "no"), ([n - 1, 2 * n - 1], "secondary", "no")]
    return StreetGraph.from_edges(coords, ways)


def make_district(units=None, policy=None, cameras=None):
    """A one-community district around the river streets; units are dicts merged over defaults."""
    from dispatch.district import District

    units = units if units is not None else [
        {"id": "a1", "kind": "police", "mode": "car"},
        {"id": "b1", "kind": "police", "mode": "car"},
    ]
    full_units = [
        {"callsign": u["id"].upper(), "beat": "c1", "talkgroup": "police", **u} for u in units
    ]
    return District.model_validate(
        {
            "name": "Rivertown",
            "timezone": "Asia/Shanghai",
            "center": {"lat": 30.2, "lon": 114.9},
            "communities": [
                {"id": "c1", "name": "Riverside", "boundary": [[30.195, 114.875], [30.205, 114.875], [30.205, 114.925], [30.195, 114.925]]}
            ],
            "cameras": cameras if cameras is not None else [
                {"id": "cam1", "name": "North gate", "community": "c1", "position": {"lat": 30.2012, "lon": 114.900},
                 "stream": "rtsp://127.0.0.1:8554/cam1", "zones": [{"name": "gate", "polygon": [[0, 0], [1, 0], [1, 1]]}]},
                {"id": "cam2", "name": "South gate", "community": "c1", "position": {"lat": 30.1988, "lon": 114.884},
                 "stream": "rtsp://127.0.0.1:8554/cam2"},
            ],
            "units": full_units,
            "policy": policy or {},
        }
    )


def make_camera(zones, rules, **fields):
    """One camera of a district file for the camera adapter's tests: its `zones` and `rules` as there,
    placeholders for the rest (`fields` override them)."""
    from dispatch.district import Camera

    base = {"id": "cam01", "name": "gate", "community": "x", "position": {"lat": 30.2, "lon": 114.9}, "stream": "clip.mp4"}
    return Camera.model_validate({**base, **fields, "zones": zones, "rules": rules})
