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


from district_fixtures import make_river_graph  # noqa: E402  (tests/ is on sys.path via this conftest)


@pytest.fixture
def river_graph():
    return make_river_graph()
