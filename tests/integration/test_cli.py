"""The `patrollink` commands, run as a user runs them, against a real nats-server and engine."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dispatch.events import UnitPosition, encode
from dispatch.subjects import Subjects

REPO = Path(__file__).resolve().parents[2]
TIESHAN = REPO / "config" / "districts" / "tieshan.yaml"
PATROLLINK = [sys.executable, "-m", "dispatch.cli"]


async def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(
        *PATROLLINK, *args, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())


@pytest.fixture
async def tieshan_engine(nats_server, nc, fresh_prefix):
    from dispatch.app import build_app
    from dispatch.district import load_district

    district = load_district(TIESHAN)
    app, rt = build_app(district, [nats_server.url], prefix=fresh_prefix)
    await app.start()
    s = Subjects(fresh_prefix)
    state = rt.need_shell().state
    # every unit on duty at home; positions are core NATS (fire and forget, like a radio's), so a
    # report sent while the engine's subscription is still settling is sent again, as a radio would
    for _ in range(50):
        # rev > 0: the engine has also written the unit to its bucket, which `patrollink units` reads
        missing = [u for u in district.units if state.units[u.id].fix_time is None or state.units[u.id].rev == 0]
        if not missing:
            break
        for u in missing:
            await nc.publish(s.unit_position(u.id), encode(UnitPosition(unit=u.id, lat=u.home.lat, lon=u.home.lon)))
        await nc.flush()
        await asyncio.sleep(0.2)
    assert all(state.units[u.id].fix_time is not None and state.units[u.id].rev > 0 for u in district.units)
    try:
        yield district, rt
    finally:
        await app.stop()


async def test_alert_command_raises_an_operator_alert_and_prints_the_decision(tieshan_engine, nats_server, fresh_prefix):
    district, rt = tieshan_engine
    cam = district.cameras[0]
    res = await run_cli("alert", "--nats", nats_server.url, "--prefix", fresh_prefix, "--camera", cam.id, "--kind", "fight", "--priority", "1")
    assert res.returncode == 0, res.stderr
    assert "opened" in res.stdout and "assigned" in res.stdout
    [inc] = rt.need_shell().state.incidents.values()
    assert inc.camera == cam.id and inc.unit is not None

    units = await run_cli("units", "--nats", nats_server.url, "--prefix", fresh_prefix)
    assert units.returncode == 0
    assert f"{len(district.units)} units" in units.stdout
    assert inc.unit in units.stdout and "assigned" in units.stdout

    incidents = await run_cli("incidents", "--nats", nats_server.url, "--prefix", fresh_prefix)
    assert incidents.returncode == 0
    assert inc.id[:12] in incidents.stdout and "fight" in incidents.stdout and "P1" in incidents.stdout


async def test_alert_command_at_a_position_outside_the_district_reports_no_incident(tieshan_engine, nats_server, fresh_prefix):
    res = await run_cli("alert", "--nats", nats_server.url, "--prefix", fresh_prefix, "--at", "10.0,10.0", "--kind", "theft", "--wait", "2")
    assert res.returncode == 1
    assert "no incident event" in res.stderr
    assert tieshan_engine[1].need_shell().deadletters == 1


async def test_tail_follows_incident_events_in_readable_lines(tieshan_engine, nats_server, fresh_prefix):
    district, _ = tieshan_engine
    proc = await asyncio.create_subprocess_exec(
        *PATROLLINK, "tail", "--nats", nats_server.url, "--prefix", fresh_prefix,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert "following incident events" in (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
        res = await run_cli("alert", "--nats", nats_server.url, "--prefix", fresh_prefix, "--camera", district.cameras[1].id, "--kind", "intrusion")
        assert res.returncode == 0
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 10)).decode() for _ in range(2)]
        assert "intrusion" in lines[0] and "opened" in lines[0]
        assert "assigned" in lines[1] and "unit=" in lines[1] and "eta=" in lines[1]
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_client_commands_without_a_server_say_how_to_get_one(tmp_path):
    env = {**os.environ, "PATROLLINK_STATE": str(tmp_path), "PATROLLINK_NATS": ""}
    res = subprocess.run([*PATROLLINK, "units"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    assert "patrollink run" in res.stderr and "--nats" in res.stderr


def test_check_config_names_file_line_field_and_reason_and_exits_non_zero(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = TIESHAN.read_text().replace("kind: volunteer, mode: foot", "kind: volunteer, mode: car", 1)
    assert text != TIESHAN.read_text()
    bad.write_text(text)
    (tmp_path / "tieshan-streets.geojson").symlink_to(TIESHAN.parent / "tieshan-streets.geojson")
    res = subprocess.run([*PATROLLINK, "check-config", str(bad)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "bad.yaml:" in res.stderr and "units[" in res.stderr and "mode" in res.stderr and "volunteer" in res.stderr
    good = subprocess.run([*PATROLLINK, "check-config", str(TIESHAN)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert good.returncode == 0 and "ok" in good.stdout


@pytest.mark.slow
def test_run_starts_everything_dispatches_simulated_alerts_and_stops_cleanly_on_ctrl_c(tmp_path):
    env = {**os.environ, "PATROLLINK_STATE": str(tmp_path / "state")}
    env.pop("PATROLLINK_NATS", None)
    proc = subprocess.Popen(
        [*PATROLLINK, "run", "--alert-every", "1", "--state-dir", str(tmp_path / "state"), "--console-port", "0"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        banner = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            banner.append(line)
            if line.startswith("Ctrl-C stops everything"):
                break
        text = "".join(banner)
        assert "nats-server (embedded, JetStream) at nats://127.0.0.1:" in text
        assert "PatrolLink is running on district Tieshan" in text and "patrollink tail" in text
        assert "console:    http://127.0.0.1:" in text and "/terminal" in text
        seen = ""
        while time.monotonic() < deadline:
            res = subprocess.run([*PATROLLINK, "incidents", "--all"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
            seen = res.stdout
            if any(state in seen for state in ("assigned", "en_route", "on_scene", "resolved", "acknowledged")):
                break
            time.sleep(1)
        assert any(state in seen for state in ("assigned", "en_route", "on_scene", "resolved", "acknowledged")), seen
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert code == 0
    assert not (tmp_path / "state" / "nats.url").exists()  # the embedded server went away with it
