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


@pytest.mark.timeout(120)
async def test_drill_live_runs_on_a_running_engine_and_a_trainer_injects_into_it(tieshan_engine, nats_server, fresh_prefix):
    district, rt = tieshan_engine
    proc = await asyncio.create_subprocess_exec(
        *PATROLLINK, "drill", "live", "--nats", nats_server.url, "--prefix", fresh_prefix, "--cameras", "0",
        "--every", "3600", cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        banner = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert "live drill `live`" in banner and f"{len(district.units)} simulated units" in banner
        res = await run_cli("drill", "inject", "--nats", nats_server.url, "--prefix", fresh_prefix,
                            "--at", "30.2019437,114.901259", "--kind", "theft")
        assert res.returncode == 0, res.stderr
        assert "drill live: incident #1 (theft" in res.stdout and "reported by an operator" in res.stdout
        state = rt.need_shell().state
        for _ in range(100):
            served = [i for i in state.incidents.values() if i.exercise == "live" and i.unit is not None]
            if served:
                break
            await asyncio.sleep(0.2)
        # the engine sent one of the drill's simulated units: the drill's units answer for the district's
        assert served and served[0].kind.value == "theft"
        assert state.units[served[0].unit].exercise == "live"
        bad = await run_cli("drill", "inject", "--nats", nats_server.url, "--prefix", fresh_prefix, "--at", "10,10", "--kind", "theft")
        assert bad.returncode == 1 and "outside district" in bad.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


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
@pytest.mark.timeout(180)
def test_run_is_a_live_drill_a_trainer_injects_into_and_ctrl_c_stops_cleanly(tmp_path):
    env = {**os.environ, "PATROLLINK_STATE": str(tmp_path / "state")}
    env.pop("PATROLLINK_NATS", None)
    proc = subprocess.Popen(
        [*PATROLLINK, "run", "--cameras", "2", "--alert-every", "3600", "--state-dir", str(tmp_path / "state"),
         "--console-port", "0"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,  # Ctrl-C at a terminal signals the whole process group: so does this test
    )
    try:
        banner = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            banner.append(line)
            if line.startswith("Ctrl-C stops everything") or not line:
                break
        text = "".join(banner)
        assert "nats-server (embedded, JetStream) at nats://127.0.0.1:" in text
        assert "PatrolLink is running on district Tieshan, as a live drill" in text and "patrollink tail" in text
        assert "2 synthetic cameras watched by the camera adapter" in text
        assert "console:    http://127.0.0.1:" in text and "/terminal" in text
        assert "patrollink drill inject --camera cam01 --kind intrusion" in text

        # the trainer plays an intruder in cam01's video, and reports a theft somewhere in the streets
        intruder = subprocess.run([*PATROLLINK, "drill", "inject", "--camera", "cam01", "--kind", "intrusion"],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
        assert intruder.returncode == 0, intruder.stderr
        assert "(intrusion" in intruder.stdout and "in camera cam01's video" in intruder.stdout
        wrong = subprocess.run([*PATROLLINK, "drill", "inject", "--camera", "cam16", "--kind", "fight"],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
        assert wrong.returncode == 1 and "cam16" in wrong.stderr and "not in this drill" in wrong.stderr
        theft = subprocess.run([*PATROLLINK, "drill", "inject", "--at", "30.2019437,114.901259", "--kind", "theft"],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
        assert theft.returncode == 0 and "reported by an operator" in theft.stdout, theft.stderr

        dispatched = ("assigned", "acknowledged", "en_route", "on_scene", "resolved")
        rows: list[str] = []
        while time.monotonic() < deadline:
            res = subprocess.run([*PATROLLINK, "incidents", "--all"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
            rows = [r for r in res.stdout.splitlines() if any(f" {st} " in r for st in dispatched)]
            # the camera adapter saw the intruder in the video, the engine sent a simulated unit
            if any(" intrusion " in r and "entrance" in r and r.rstrip().endswith("live") for r in rows) and \
                    any(" theft " in r for r in rows):
                break
            time.sleep(1)
        assert any(" intrusion " in r and "entrance" in r for r in rows), rows
        assert any(" theft " in r for r in rows), rows
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 0
    assert not (tmp_path / "state" / "nats.url").exists()  # the embedded server went away with it
