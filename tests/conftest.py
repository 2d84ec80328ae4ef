"""Fixtures shared by every test folder.

* ``nats_server`` (session): ONE embedded nats-server with JetStream for the
  whole run; tests use ``nats_server.url``. Tests that use it (directly or via
  ``nc``) are marked ``integration`` automatically.
* ``nc`` (function, async): a nats-py client connected to it, closed after.
* ``fresh_prefix``: a short unique string per test; name streams, KV buckets
  and subjects with it so tests never see each other's data on the shared
  server.
* ``shared_data``: the project's shared data folder (``../shared/data`` next
  to the checkout); the test is skipped when it is absent.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from dispatch.natsserver import EmbeddedNats

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory):
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"), name="patrollink-test")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def nc(nats_server: EmbeddedNats):
    import nats

    client = await nats.connect(nats_server.url, connect_timeout=5, name="patrollink-test")
    try:
        yield client
    finally:
        if not client.is_closed:
            await client.close()


@pytest.fixture
def fresh_prefix() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def shared_data() -> Path:
    path = REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent")
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "nats_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


# --------------------------------------------------------------------------- a small district with a river


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


@pytest.fixture
def river_graph():
    return make_river_graph()
